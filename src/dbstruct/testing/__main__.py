"""``python -m dbstruct.testing [options]``: the same as ``dbstruct emulator [options]``."""

from __future__ import annotations

import sys

from dbstruct.cli import main

if __name__ == "__main__":
    sys.exit(main(["emulator", *sys.argv[1:]]))
