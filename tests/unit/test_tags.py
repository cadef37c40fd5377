"""Tags, names and ignore rules: pure functions of a relpath."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.tags import Rules, asset_name, folder_tags, is_storable, printable

NFC_CAFE = unicodedata.normalize("NFC", "café")
NFD_CAFE = unicodedata.normalize("NFD", "café")


@pytest.mark.parametrize(
    ("relpath", "configured", "expected"),
    [
        ("a/b/c.jpg", ["studio-a"], ("studio-a", "a", "b")),
        ("a/b/c.jpg", [], ("a", "b")),
        ("c.jpg", ["studio-a"], ("studio-a",)),
        ("c.jpg", [], ()),
        ("shoes/shoes/x.png", ["shoes"], ("shoes",)),
        ("a/studio-a/b/x.png", ["studio-a"], ("studio-a", "a", "b")),
        ("b/a/x.png", ["a", "b"], ("a", "b")),
        ("a/x.png", ["", "a"], ("a",)),
        (f"{NFD_CAFE}/x.jpg", [NFC_CAFE], (NFC_CAFE,)),
        ("Shoes/shoes/x.jpg", [], ("Shoes", "shoes")),
    ],
)
def test_folder_tags(relpath: str, configured: list[str], expected: tuple[str, ...]) -> None:
    """Configured tags come first, then folders in order, each once, NFC-normalised."""
    assert folder_tags(relpath, configured) == expected


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("a/b/c.jpg", "c"),
        ("c.jpg", "c"),
        ("archive.tar.jpg", "archive.tar"),
        ("dir.v2/noext", "noext"),
        ("x/.hidden", ".hidden"),
        (f"a/{NFD_CAFE}.png", NFC_CAFE),
    ],
)
def test_asset_name(relpath: str, expected: str) -> None:
    """The asset name is the file name without its last extension."""
    assert asset_name(relpath) == expected


DEFAULT = Rules()


@pytest.mark.parametrize(
    ("relpath", "ignored"),
    [
        ("a.jpg", False),
        ("a.JPG", False),
        ("a.jpeg", False),
        ("a/b/c.png", False),
        ("a.webp", False),
        ("a.WebP", False),
        ("a.gif", True),
        ("a.tif", True),
        ("a", True),
        ("a.jpg.tmp", True),
        ("a.jpg.part", True),
        ("a.jpg.crdownload", True),
        ("~a.jpg", True),
        (".~lock.a.jpg#", True),
        ("a.jpg.swp", True),
        ("a.tmp", True),
        ("Thumbs.db", True),
        ("thumbs.db", True),
        (".DS_Store", True),
        ("a.xmp", True),
        ("a.jpg.xmp", True),
        (".a.jpg", True),
        (".hidden/a.jpg", True),
        ("a/.hidden/b/a.jpg", True),
        ("@eaDir/a.jpg", True),
        ("x/@eaDir/a.jpg/SYNOFILE_THUMB_M.jpg", True),
        ("CaptureOne/Cache/a.jpg", True),
        ("session/captureone/a.jpg", True),
        ("#recycle/a.jpg", True),
        ("$RECYCLE.BIN/a.jpg", True),
        (".Trash-1000/files/a.jpg", True),
        ("lost+found/a.jpg", True),
        ("eaDir/a.jpg", False),
        ("Capture/a.jpg", False),
        ("a~.jpg", False),
        ("tmp/a.jpg", False),
        (f"{NFD_CAFE}/{NFD_CAFE}.jpg", False),
    ],
)
def test_default_rules_for_files(relpath: str, ignored: bool) -> None:
    """Built-in ignores and the default JPEG/PNG/WebP include, case-insensitive, at any depth."""
    assert DEFAULT.ignores_file(relpath) is ignored


@pytest.mark.parametrize(
    ("relpath", "ignored"),
    [
        ("", False),
        ("a", False),
        ("a/b", False),
        (".git", True),
        ("a/.cache", True),
        ("a/.cache/b", True),
        ("@eaDir", True),
        ("a/@EADIR/b", True),
        ("CaptureOne", True),
        ("#recycle", True),
        ("#snapshot", True),
        ("$RECYCLE.BIN", True),
        ("System Volume Information", True),
        ("a.jpg", False),
        ("tmp", False),
        ("x.tmp", False),
    ],
)
def test_default_rules_for_dirs(relpath: str, ignored: bool) -> None:
    """Hidden and NAS/studio debris folders are ignored, and everything below them."""
    assert DEFAULT.ignores_dir(relpath) is ignored


CUSTOM = Rules(include=["*.jpg", "*.TIF", "catalog/*.png"], exclude=["raw/", "*_old.jpg", "proofs"])


@pytest.mark.parametrize(
    ("relpath", "ignored"),
    [
        ("a.jpg", False),
        ("A.TIF", False),
        ("a.tif", False),
        ("a.png", True),
        ("catalog/a.png", False),
        ("catalog/sub/a.png", False),
        ("other/catalog/a.png", True),
        ("raw/a.jpg", True),
        ("x/raw/a.jpg", True),
        ("raw", True),
        ("raw.jpg", False),
        ("a_old.jpg", True),
        ("sub/A_OLD.JPG", True),
        ("proofs/a.jpg", True),
        ("proofs", True),
    ],
)
def test_custom_rules_for_files(relpath: str, ignored: bool) -> None:
    """Include and exclude globs: names at any depth, relpaths when they hold a slash."""
    assert CUSTOM.ignores_file(relpath) is ignored


@pytest.mark.parametrize(
    ("rules", "relpath", "ignored"),
    [
        (CUSTOM, "raw", True),
        (CUSTOM, "a/raw", True),
        (CUSTOM, "Raw", True),
        (CUSTOM, "proofs", True),
        (CUSTOM, "a_old.jpg", True),
        (CUSTOM, "catalog", False),
        (Rules(exclude=["clients/old/"]), "clients/old", True),
        (Rules(exclude=["clients/old/"]), "clients/old/x", True),
        (Rules(exclude=["clients/old/"]), "x/clients/old", False),
        (Rules(exclude=["/top"]), "top", True),
        (Rules(exclude=["/top"]), "a/top", False),
        (Rules(exclude=[f"{NFC_CAFE}/"]), NFD_CAFE, True),
        (Rules(exclude=[f"{NFD_CAFE}/"]), f"x/{NFC_CAFE}", True),
        (Rules(exclude=["", "  ", "/"]), "a", False),
    ],
)
def test_exclude_applies_to_dirs(rules: Rules, relpath: str, ignored: bool) -> None:
    """Excludes reach folders (a trailing slash: folders only), NFC/NFD alike."""
    assert rules.ignores_dir(relpath) is ignored


def test_trailing_slash_exclude_spares_files() -> None:
    """`raw/` excludes a folder named raw but not a file of that name."""
    rules = Rules(include=[], exclude=["raw/"])
    assert rules.ignores_file("raw") is False
    assert rules.ignores_file("raw/x") is True


def test_empty_include_lets_every_file_through() -> None:
    """An empty include filters nothing; built-in ignores still apply."""
    rules = Rules(include=[], exclude=[])
    assert rules.ignores_file("notes.txt") is False
    assert rules.ignores_file("x.tmp") is True


def test_nfd_names_match_nfc_globs() -> None:
    """A name written in NFD (as a Mac client does) matches an NFC glob and vice versa."""
    assert Rules(include=[f"{NFC_CAFE}*.jpg"]).ignores_file(f"{NFD_CAFE}-1.jpg") is False
    assert Rules(include=[f"{NFD_CAFE}*.jpg"]).ignores_file(f"{NFC_CAFE}-1.jpg") is False
    assert Rules(exclude=[f"{NFC_CAFE}*"]).ignores_file(f"{NFD_CAFE}.jpg") is True


def test_parents_checked_looks_at_the_last_component_only() -> None:
    """A top-down walker that already refused parents pays for the last name only."""
    assert DEFAULT.ignores_file(".hidden/a.jpg", parents_checked=True) is False
    assert DEFAULT.ignores_dir(".hidden/sub", parents_checked=True) is False
    assert DEFAULT.ignores_dir("sub/.hidden", parents_checked=True) is True


def test_rules_are_values() -> None:
    """Rules compare and hash by their globs, whatever sequence type came in."""
    assert Rules(include=["*.jpg"], exclude=["x"]) == Rules(include=("*.jpg",), exclude=("x",))
    assert hash(Rules(include=["*.jpg"])) == hash(Rules(include=("*.jpg",)))
    assert Rules().include == ("*.jpg", "*.jpeg", "*.png", "*.webp")


def test_undecodable_names() -> None:
    """Names with undecodable bytes are not storable and print with escapes."""
    name = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")
    assert is_storable(name) is False
    assert is_storable(NFD_CAFE) is True
    assert printable(name) == "caf\\xe9.jpg"
    assert printable("a/b.jpg") == "a/b.jpg"


segment = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=8,
)


@given(st.lists(segment, max_size=5), segment, st.lists(segment, max_size=3))
def test_folder_tags_properties(dirs: list[str], name: str, configured: list[str]) -> None:
    """Tags never repeat, keep configured ones first, and never include the file name."""
    relpath = "/".join([*dirs, name])
    tags = folder_tags(relpath, configured)
    assert len(tags) == len(set(tags))
    expected_first = tuple(dict.fromkeys(unicodedata.normalize("NFC", c) for c in configured))
    assert tags[: len(expected_first)] == expected_first
    assert set(tags) == {unicodedata.normalize("NFC", t) for t in [*configured, *dirs]}


@given(st.lists(segment, min_size=1, max_size=4))
def test_ignored_dir_hides_everything_below(dirs: list[str]) -> None:
    """A file below an ignored folder is ignored, whatever its name."""
    relpath = "/".join([*dirs, "x.jpg"])
    dir_ignored = DEFAULT.ignores_dir("/".join(dirs))
    if dir_ignored:
        assert DEFAULT.ignores_file(relpath)
    assert DEFAULT.ignores_dir("/".join([*dirs, ".hidden"]))


_NAME_PARTS = st.sampled_from(
    ["a", "B", ".", "~", "j", "p", "g", "x", "é", "É", "e\u0301", "_", "[", "thumbs.db", ".jpg",
     ".JPG", ".tmp", ".part", "raw"]
)  # fmt: skip
_RULES = [
    Rules(),
    Rules(include=[]),
    Rules(include=["*.jpg", "a?b*", "[ab]*.png", "é*"], exclude=["*.jpg~", "x*", "Thumbs.db"]),
    Rules(exclude=["x*", "*.tmp", "exact.jpg", "É*", "raw/"]),
    Rules(include=["*"], exclude=["*.p?g"]),
]


@given(st.lists(_NAME_PARTS, min_size=1, max_size=5).map("".join))
def test_the_name_test_says_what_ignores_file_says(name: str) -> None:
    """The rescan's one-call name test keeps exactly the files ignores_file does not ignore."""
    for rules in _RULES:
        keeps = rules.name_test()
        assert keeps is not None
        assert keeps(name) == (not rules.ignores_file(f"d/{name}", parents_checked=True))


def test_a_glob_of_the_whole_path_has_no_name_test() -> None:
    """A glob with a '/' looks at the relpath: the scanner asks ignores_file instead."""
    assert Rules(exclude=["clients/old/*"]).name_test() is None
    assert Rules(include=["shoes/*.jpg"]).name_test() is None
