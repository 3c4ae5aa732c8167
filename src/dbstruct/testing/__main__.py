"""``python -m dbstruct.testing [options]``: the same as ``dbstruct emulator [options]``."""

from __future__ import annotations

import sys

from dbstruct.testing._command import main

if __name__ == "__main__":
    sys.exit(main())
