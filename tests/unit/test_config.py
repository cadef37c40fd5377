"""Config loading: defaults, every error naming its key and file, the API key's handling."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest

from syncd import checks
from syncd import config as cfg
from syncd.apikey import ApiKey
from syncd.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
MINIMAL = '[[folders]]\npath = "hot"\n'


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return cfg.load(write(tmp_path / "config.toml", text), env=env or {})


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    return info.value


# --- defaults and the example -----------------------------------------------------------


def test_defaults_match_the_spec(tmp_path: Path) -> None:
    """A config naming only a folder path gets every default the spec gives."""
    config = load_text(tmp_path, MINIMAL)
    assert config.api.base_url == "https://api.productai.photo"
    assert config.api.timeout_seconds == 30.0
    assert config.api.concurrency == 4
    assert config.api.identity_tag is True
    assert config.api.api_key is None
    assert (config.log.level, config.log.format) == ("info", "auto")
    assert config.daemon.rescan_interval_seconds == 3600.0
    (folder,) = config.folders
    assert folder.path == (tmp_path / "hot").resolve()
    assert folder.tags == ()
    assert folder.mirror_deletes is True
    assert folder.settle_seconds == 2.0
    assert folder.max_deletes == 50
    assert folder.delete_grace_seconds == 30.0
    assert folder.include == ("*.jpg", "*.jpeg", "*.png", "*.webp")
    assert folder.exclude == ()
    assert folder.polling == "auto"
    assert folder.poll_interval_seconds == 5.0
    assert (folder.oversize, folder.convert) == ("fail", ())
    assert config.source == tmp_path / "config.toml"


def test_example_config_loads_and_shows_the_defaults() -> None:
    """config.example.toml loads, and the values it shows are the defaults it documents."""
    config = cfg.load(EXAMPLE, env={})
    (folder,) = config.folders
    defaults = cfg.FolderConfig(path=folder.path, tags=folder.tags)
    assert folder == defaults
    assert dataclasses.replace(config.api, api_key=None, api_key_file=None) == cfg.ApiConfig()
    assert config.log == cfg.LogConfig()
    assert config.daemon == cfg.DaemonConfig()
    # The service gets its key from LoadCredential=, so the example names no key file.
    assert config.api.api_key is None


def test_example_config_documents_every_key() -> None:
    """Every key the loader accepts appears in config.example.toml."""
    text = EXAMPLE.read_text()
    sections = [cfg.ApiConfig, cfg.StateConfig, cfg.LogConfig, cfg.DaemonConfig, cfg.FolderConfig]
    for section in sections:
        for f in dataclasses.fields(section):
            assert f"{f.name} =" in text, f"{section.__name__}.{f.name} is not documented"


def test_state_path_defaults_to_systemd_state_directory(tmp_path: Path) -> None:
    """Under systemd the state database goes to $STATE_DIRECTORY/state.db."""
    config = load_text(tmp_path, MINIMAL, env={"STATE_DIRECTORY": str(tmp_path / "st")})
    assert config.state.path == tmp_path / "st" / "state.db"


def test_state_path_defaults_to_user_data_dir(tmp_path: Path) -> None:
    """Without systemd the state database goes to the user data dir."""
    config = load_text(tmp_path, MINIMAL)
    assert config.state.path.name == "state.db"
    assert config.state.path.parent.name == "syncd"


def test_relative_paths_resolve_against_the_config_dir(tmp_path: Path) -> None:
    """Relative folder, state and key-file paths are taken from the config's directory."""
    text = '[api]\napi_key_file = "k"\n[state]\npath = "s/state.db"\n' + MINIMAL
    config = load_text(tmp_path, text)
    assert config.state.path == (tmp_path / "s" / "state.db").resolve()
    assert config.api.api_key_file == tmp_path / "k"
    assert config.folders[0].path == (tmp_path / "hot").resolve()


def test_values_are_converted(tmp_path: Path) -> None:
    """Integers are accepted for seconds; lists become tuples without duplicates."""
    text = (
        '[log]\nlevel = "DEBUG"\n[[folders]]\npath = "a"\nsettle_seconds = 3\n'
        'tags = ["x", "y", "x"]\nconvert = ["heic", "tiff"]\noversize = "downscale"\n'
    )
    config = load_text(tmp_path, text)
    folder = config.folders[0]
    assert folder.settle_seconds == 3.0
    assert isinstance(folder.settle_seconds, float)
    assert folder.tags == ("x", "y")
    assert folder.convert == ("heic", "tiff")
    assert folder.oversize == "downscale"
    assert config.log.level == "debug"


def test_parse_without_a_file_uses_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse() works on text alone; relative paths then start at the working directory."""
    monkeypatch.chdir(tmp_path)
    config = cfg.parse(MINIMAL, source=None, env={})
    assert config.folders[0].path == (tmp_path / "hot").resolve()
    assert config.source is None


# --- errors name the key and the file -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("colour = 1\n" + MINIMAL, "colour", "unknown key"),
        ("[api]\nbase = 1\n" + MINIMAL, "api.base", "unknown key"),
        (
            MINIMAL + '[[folders]]\npath = "b"\nmirror_delete = false\n',
            "folders[1].mirror_delete",
            "did you mean mirror_deletes",
        ),
        ('[api]\nconcurrency = "4"\n' + MINIMAL, "api.concurrency", 'expected an integer, got "4"'),
        ("[api]\nconcurrency = true\n" + MINIMAL, "api.concurrency", "expected an integer"),
        ("[api]\nconcurrency = 0\n" + MINIMAL, "api.concurrency", "between 1 and 64"),
        ("[api]\nconcurrency = 500\n" + MINIMAL, "api.concurrency", "between 1 and 64"),
        ("[api]\ntimeout_seconds = 0\n" + MINIMAL, "api.timeout_seconds", "greater than 0"),
        ("[api]\ntimeout_seconds = inf\n" + MINIMAL, "api.timeout_seconds", "finite"),
        ('[api]\nbase_url = "ftp://x"\n' + MINIMAL, "api.base_url", "http(s) URL"),
        ('[api]\nidentity_tag = "yes"\n' + MINIMAL, "api.identity_tag", "true or false"),
        ('[log]\nlevel = "loud"\n' + MINIMAL, "log.level", "must be one of"),
        ('[log]\nformat = "xml"\n' + MINIMAL, "log.format", "must be one of"),
        (
            "[daemon]\nrescan_interval_seconds = -1\n" + MINIMAL,
            "daemon.rescan_interval_seconds",
            "greater than 0",
        ),
        ("api = 3\n" + MINIMAL, "api", "expected a table"),
        (MINIMAL + "settle_seconds = -0.5\n", "folders[0].settle_seconds", "0 or more"),
        (MINIMAL + "max_deletes = -1\n", "folders[0].max_deletes", "at least 0"),
        (MINIMAL + "max_deletes = 2.5\n", "folders[0].max_deletes", "expected an integer"),
        (MINIMAL + "delete_grace_seconds = -1\n", "folders[0].delete_grace_seconds", "0 or more"),
        (MINIMAL + "poll_interval_seconds = 0\n", "folders[0].poll_interval_seconds", "greater"),
        (MINIMAL + 'oversize = "shrink"\n', "folders[0].oversize", "must be one of"),
        (MINIMAL + 'convert = ["gif"]\n', "folders[0].convert[0]", "must be one of"),
        (MINIMAL + 'tags = ["a", 5]\n', "folders[0].tags[1]", "expected a string, got 5"),
        (MINIMAL + 'tags = "a"\n', "folders[0].tags", "expected an array"),
        (MINIMAL + "include = []\n", "folders[0].include", "at least 1"),
        ('[[folders]]\ntags = ["a"]\n', "folders[0].path", "needs a path"),
        ('[[folders]]\npath = ""\n', "folders[0].path", "must not be empty"),
        ("[log]\n", "folders", "no folder configured"),
        ("folders = []\n", "folders", "no folder configured"),
        ('folders = ["a"]\n', "folders", "[[folders]]"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, key: str, words: str) -> None:
    """Every wrong key, type or value is reported with its dotted key and the file."""
    err = error_of(tmp_path, text)
    assert err.key == key
    assert err.file == str(tmp_path / "config.toml")
    assert str(err).startswith(f"{key}: ")
    assert words in str(err)
    assert str(tmp_path / "config.toml") in str(err)


def test_bad_toml_names_the_file_and_position(tmp_path: Path) -> None:
    """Invalid TOML is reported with the file and tomllib's line and column."""
    err = error_of(tmp_path, "[api]\nconcurrency = = 4\n")
    assert "invalid TOML" in str(err)
    assert "line 2" in str(err)
    assert str(tmp_path / "config.toml") in str(err)


def test_nested_folders_are_refused(tmp_path: Path) -> None:
    """Two folders where one lies inside the other are an error naming both."""
    err = error_of(tmp_path, '[[folders]]\npath = "a"\n[[folders]]\npath = "a/b"\n')
    assert err.key == "folders[1].path"
    assert "folders[0].path" in str(err)


def test_the_same_folder_twice_is_refused(tmp_path: Path) -> None:
    """The same root written two ways (relative and absolute) is still the same folder."""
    text = f'[[folders]]\npath = "a"\n[[folders]]\npath = "{tmp_path}/x/../a"\n'
    assert error_of(tmp_path, text).key == "folders[1].path"


def test_state_database_inside_a_folder_is_refused(tmp_path: Path) -> None:
    """A state database inside a watched folder is an error naming state.path."""
    err = error_of(tmp_path, '[state]\npath = "hot/sub/state.db"\n' + MINIMAL)
    assert err.key == "state.path"
    assert "folders[0].path" in str(err)


def test_missing_folder_is_not_an_error_at_load(tmp_path: Path) -> None:
    """A folder root that does not exist yet loads (it is waited for) but check reports it."""
    (tmp_path / "here").mkdir()
    (tmp_path / "file").write_text("x")
    text = '[[folders]]\npath = "gone"\n[[folders]]\npath = "here"\n[[folders]]\npath = "file"\n'
    problems = checks.check_folders(load_text(tmp_path, text))
    assert len(problems) == 2
    assert problems[0].startswith("folders[0].path:")
    assert "does not exist" in problems[0]
    assert problems[1].startswith("folders[2].path:")
    assert "not a directory" in problems[1]


def test_unreadable_config_is_an_error(tmp_path: Path) -> None:
    """A config that cannot be read is reported with its file."""
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.load(tmp_path / "nope.toml", env={})


# --- finding the config -----------------------------------------------------------------


def test_find_config_prefers_explicit_then_env_then_search(tmp_path: Path) -> None:
    """-c beats $SYNCD_CONFIG, which beats the search list, in that order."""
    a, b, c = (write(tmp_path / n, MINIMAL) for n in ("a.toml", "b.toml", "c.toml"))
    env = {"SYNCD_CONFIG": str(b)}
    assert cfg.find_config_path(a, env=env, search=[c]) == a
    assert cfg.find_config_path(None, env=env, search=[c]) == b
    assert cfg.find_config_path(None, env={}, search=[tmp_path / "none", c]) == c


def test_find_config_fails_naming_what_was_tried(tmp_path: Path) -> None:
    """When no config exists the error lists every place looked at."""
    with pytest.raises(ConfigError) as info:
        cfg.find_config_path(None, env={}, search=[tmp_path / "x.toml", tmp_path / "y.toml"])
    assert str(tmp_path / "x.toml") in str(info.value)
    assert str(tmp_path / "y.toml") in str(info.value)
    assert "SYNCD_CONFIG" in str(info.value)


def test_named_config_that_is_missing_does_not_fall_back(tmp_path: Path) -> None:
    """A -c or $SYNCD_CONFIG file that is missing is an error, not a silent fallback."""
    other = write(tmp_path / "other.toml", MINIMAL)
    with pytest.raises(ConfigError, match=r"from -c"):
        cfg.find_config_path(tmp_path / "missing.toml", env={}, search=[other])
    env = {"SYNCD_CONFIG": str(tmp_path / "missing.toml")}
    with pytest.raises(ConfigError, match=r"SYNCD_CONFIG"):
        cfg.find_config_path(None, env=env, search=[other])


def test_default_search_is_user_dir_then_etc() -> None:
    """Without -c or $SYNCD_CONFIG, the user config dir is tried before /etc/syncd."""
    user, system = cfg.default_config_paths()
    assert user.parts[-2:] == ("syncd", "config.toml")
    assert system == Path("/etc/syncd/config.toml")


# --- the API key -------------------------------------------------------------------------


@pytest.fixture
def key_sources(tmp_path: Path) -> dict[str, Path]:
    """A key file, a systemd credentials dir and their contents, all different keys."""
    creds = tmp_path / "creds"
    creds.mkdir()
    write(creds / "api_key", "from-credentials\n", mode=0o400)
    return {"file": write(tmp_path / "api_key", "from-file\n"), "creds": creds}


def key_config(tmp_path: Path, file: Path | None, inline: str | None) -> str:
    lines = ["[api]"]
    if file:
        lines.append(f'api_key_file = "{file}"')
    if inline:
        lines.append(f'api_key = "{inline}"')
    return "\n".join(lines) + "\n" + MINIMAL


def test_api_key_resolution_order(tmp_path: Path, key_sources: dict[str, Path]) -> None:
    """$SYNCD_API_KEY beats the key file, which beats the credential, which beats inline."""
    creds = {"CREDENTIALS_DIRECTORY": str(key_sources["creds"])}
    cases = [
        (key_sources["file"], "from-inline", {"SYNCD_API_KEY": "from-env", **creds}, "from-env"),
        (key_sources["file"], "from-inline", creds, "from-file"),
        (None, "from-inline", creds, "from-credentials"),
        (None, "from-inline", {}, "from-inline"),
    ]
    for file, inline, env, expected in cases:
        config = load_text(tmp_path, key_config(tmp_path, file, inline), env)
        assert cfg.require_api_key(config).reveal() == expected


def test_no_api_key_is_an_error_only_when_one_is_needed(tmp_path: Path) -> None:
    """Without any key the config loads, and require_api_key says how to provide one."""
    config = load_text(tmp_path, MINIMAL)
    assert config.api.api_key is None
    with pytest.raises(ConfigError, match="no API key: set SYNCD_API_KEY"):
        cfg.require_api_key(config)


def test_open_key_file_is_refused(tmp_path: Path) -> None:
    """A key file readable by group or others is refused with the chmod that fixes it."""
    key_file = write(tmp_path / "api_key", KEY, mode=0o644)
    config = load_text(tmp_path, key_config(tmp_path, key_file, None))
    with pytest.raises(ConfigError) as info:
        cfg.require_api_key(config)
    assert f"chmod 600 {key_file}" in str(info.value)
    assert KEY not in str(info.value)
    key_file.chmod(0o600)
    assert cfg.require_api_key(config).reveal() == KEY


def test_credentials_file_skips_the_mode_check(tmp_path: Path) -> None:
    """A systemd credential is trusted whatever its mode: systemd sets it up."""
    creds = tmp_path / "creds"
    creds.mkdir()
    write(creds / "api_key", KEY, mode=0o644)
    config = load_text(tmp_path, MINIMAL, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.require_api_key(config).reveal() == KEY


def test_empty_key_file_is_an_error(tmp_path: Path) -> None:
    """A key file holding only whitespace is an error, not an empty key."""
    key_file = write(tmp_path / "api_key", " \n")
    with pytest.raises(ConfigError, match="is empty"):
        cfg.require_api_key(load_text(tmp_path, key_config(tmp_path, key_file, None)))


def test_missing_key_file_is_reported(tmp_path: Path) -> None:
    """A configured key file that does not exist is reported when the key is needed."""
    config = load_text(tmp_path, key_config(tmp_path, tmp_path / "nope", None))
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        cfg.require_api_key(config)


def test_rotated_key_file_is_picked_up(tmp_path: Path) -> None:
    """reveal() returns the new key once the file is replaced, with no reload."""
    key_file = write(tmp_path / "api_key", "old-key-000\n")
    key = ApiKey(origin="api.api_key_file", file=key_file)
    assert key.reveal() == "old-key-000"
    replacement = write(tmp_path / "api_key.new", "new-key-1111\n")
    replacement.replace(key_file)
    assert key.reveal() == "new-key-1111"


def test_rotation_in_progress_keeps_the_last_key(tmp_path: Path) -> None:
    """A key file briefly missing or empty during a rotation keeps the last good key."""
    key_file = write(tmp_path / "api_key", "old-key-000\n")
    key = ApiKey(origin="api.api_key_file", file=key_file)
    assert key.reveal() == "old-key-000"
    key_file.unlink()
    assert key.reveal() == "old-key-000"
    write(key_file, "")
    assert key.reveal() == "old-key-000"
    write(key_file, "new-key-1111")
    assert key.reveal() == "new-key-1111"


def test_key_never_appears_in_reprs_or_errors(tmp_path: Path) -> None:
    """The key is absent from repr/str of ApiKey, ApiConfig, Config and from errors."""
    inline = load_text(tmp_path, key_config(tmp_path, None, KEY))
    from_env = load_text(tmp_path, MINIMAL, env={"SYNCD_API_KEY": KEY})
    key_file = write(tmp_path / "api_key", KEY)
    from_file = load_text(tmp_path, key_config(tmp_path, key_file, None))
    for config in (inline, from_env, from_file):
        key = cfg.require_api_key(config)
        assert key.reveal() == KEY
        for shown in (repr(key), str(key), repr(config.api), str(config), repr(config)):
            assert KEY not in shown
        assert KEY not in repr(copy.deepcopy(config))
        assert KEY not in str(dataclasses.asdict(config))
    assert str(key_file) in repr(from_file.api.api_key)


def test_key_never_appears_in_config_errors(tmp_path: Path) -> None:
    """A wrong inline key, or an open key file, is reported without its value."""
    err = error_of(tmp_path, f'[api]\napi_key = ["{KEY}"]\n' + MINIMAL)
    assert err.key == "api.api_key"
    assert KEY not in str(err)
    key_file = write(tmp_path / "api_key", KEY, mode=0o640)
    with pytest.raises(ConfigError) as info:
        cfg.require_api_key(load_text(tmp_path, key_config(tmp_path, key_file, None)))
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


def test_api_key_is_not_pickled() -> None:
    """Pickling would write the key out, so it is refused."""
    with pytest.raises(TypeError):
        pickle.dumps(ApiKey(origin="x", value=KEY))


def test_inline_key_in_an_open_config_is_refused(tmp_path: Path) -> None:
    """A config holding the key and readable by group or others does not load (like a key file)."""
    path = write(tmp_path / "config.toml", key_config(tmp_path, None, KEY), mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        cfg.load(path, env={})
    assert KEY not in str(info.value) and info.value.key == "api.api_key"
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="open to group or others"):
        cfg.load(path, env={})
    path.chmod(0o600)
    assert cfg.load(path, env={}).api.api_key is not None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://api.example.com", False),
        ("http://10.0.0.5:8765", False),
        ("http://127.0.0.1:8765", True),
        ("http://127.8.9.10", True),
        ("http://localhost:9", True),
        ("http://[::1]:9", True),
        ("https://api.example.com", True),
    ],
)
def test_plain_http_only_to_this_machine(tmp_path: Path, url: str, ok: bool) -> None:
    """http:// to a non-loopback host is refused at load, unless allow_insecure_http opts in."""
    text = f'[api]\nbase_url = "{url}"\n\n[[folders]]\npath = "{tmp_path}"\n'
    if ok:
        assert cfg.parse(text, env={}).api.base_url == url
    else:
        with pytest.raises(ConfigError, match="unencrypted") as info:
            cfg.parse(text, env={})
        assert info.value.key == "api.base_url"
        opted = text.replace("[api]\n", "[api]\nallow_insecure_http = true\n")
        assert cfg.parse(opted, env={}).api.allow_insecure_http is True
