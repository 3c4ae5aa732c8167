"""A job file's ``evaluate:`` section: labels ``dbstruct run`` scores the target's answers
against after each run (:func:`dbstruct.jobs.evaluate.evaluate_target`).

    evaluate:
      labels: sample:tickets      # as dbstruct evaluate --labels
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EvaluateConfig"]


class EvaluateConfig(BaseModel):
    """Labels ``dbstruct run`` scores the target's answers against after each run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: as ``dbstruct evaluate --labels``: a file, a table, or ``sample:tickets``
    labels: str = Field(min_length=1)
    #: ``str`` fields scored as free text (``--free-text``); None: the rule by name
    free_text: list[str] | None = None
