"""``python -m dbstruct.jobs run CONF [--set key=value]...``"""

from __future__ import annotations

from dbstruct.jobs._main import entry

entry()
