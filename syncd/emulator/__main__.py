"""``python -m syncd.emulator``."""

from syncd.emulator import main

raise SystemExit(main())
