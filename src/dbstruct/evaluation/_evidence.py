"""How often a run's evidence holds: per field, the rows whose quote was found in their text.

A run with evidence on (``evidence: true``, :mod:`dbstruct.evidence`) gives each answered
row a quote per field and whether dbstruct found it in the row's text. Over the answered
rows of a run, per field: ``quoted`` rows had a quote, ``found`` rows had one found in the
text; ``found_rate`` is found / answered rows (how often a value comes with verified
support) and ``quote_found_rate`` found / quoted (how often a quote the model gave is real).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

__all__ = ["EvidenceRate", "evidence_rates"]


@dataclass(frozen=True)
class EvidenceRate:
    """One field's evidence over a run's answered rows."""

    rows: int
    quoted: int
    found: int

    @property
    def found_rate(self) -> float | None:
        return self.found / self.rows if self.rows else None

    @property
    def quote_found_rate(self) -> float | None:
        return self.found / self.quoted if self.quoted else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "quoted": self.quoted,
            "found": self.found,
            "found_rate": self.found_rate,
            "quote_found_rate": self.quote_found_rate,
        }


def evidence_rates(values: Mapping[str, Any]) -> dict[str, EvidenceRate] | None:
    """Per field, from each row's answer (a dict or model with an ``evidence`` entry; None
    for a failed row); None when no answer carries evidence (the run did not ask for it)."""
    rows = 0
    quoted: dict[str, int] = {}
    found: dict[str, int] = {}
    for value in values.values():
        evidence = _evidence_of(value)
        if evidence is None:
            continue
        rows += 1
        for name, entry in evidence.items():
            item = _plain(entry) or {}
            quoted[name] = quoted.get(name, 0) + (item.get("quote") is not None)
            found[name] = found.get(name, 0) + bool(item.get("found"))
    if not rows:
        return None
    return {name: EvidenceRate(rows, quoted[name], found[name]) for name in quoted}


def _evidence_of(value: Any) -> dict[str, Any] | None:
    plain = _plain(value)
    if plain is None:
        return None
    return _plain(plain.get("evidence"))


def _plain(value: Any) -> dict[str, Any] | None:
    if isinstance(value, BaseModel):
        return dict(value)
    if isinstance(value, Mapping):
        return dict(value)
    return None
