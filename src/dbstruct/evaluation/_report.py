"""An evaluated run (a job file's scores, tokens and cost) as text, JSON, and a report.

print(format_runs([run]))                     # the table `dbstruct evaluate` prints
write_report("report/", [run_a, run_b])       # report.md and PNG charts (matplotlib)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbstruct.errors import ConfigurationError
from dbstruct.evaluation._evidence import EvidenceRate
from dbstruct.evaluation._scores import FAILED, NULL, Evaluation, FieldScore, _jsonable

__all__ = [
    "REPORT_HINT",
    "EvaluatedRun",
    "format_runs",
    "headline",
    "require_matplotlib",
    "runs_to_dict",
    "write_report",
]

REPORT_HINT = 'pip install "dbstruct[report]"'


@dataclass(frozen=True)
class EvaluatedRun:
    """One job file's evaluation: ``how`` says where the answers came from."""

    name: str
    evaluation: Evaluation
    how: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    #: labelled ids not scored: the job's source (``label_scope`` ``target``: its target)
    #: does not hold them
    labels_not_in_source: int = 0
    #: per field, how often its quote was found in the text (runs with evidence on)
    evidence: dict[str, EvidenceRate] | None = None
    #: rows whose answer was read from the job's target (the rest were sent)
    read_from_target: int = 0
    #: where the labelled ids not scored are missing from: ``source`` or ``target``
    label_scope: str = "source"

    def per_row(self, total: float | None) -> float | None:
        rows = self.evaluation.rows
        return None if total is None or not rows else total / rows

    def to_dict(self, disagreements: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"conf": self.name, "extracted": self.how}
        out.update(self.evaluation.to_dict(disagreements))
        out[f"labels_not_in_{self.label_scope}"] = self.labels_not_in_source
        out.update(
            rows_read_from_target=self.read_from_target,
            tokens_per_row=self.per_row(self.prompt_tokens + self.completion_tokens),
            prompt_tokens_per_row=self.per_row(self.prompt_tokens),
            completion_tokens_per_row=self.per_row(self.completion_tokens),
            cost_per_row_usd=self.per_row(self.cost_usd),
        )
        if self.evidence is not None:
            out["evidence"] = {k: v.to_dict() for k, v in self.evidence.items()}
        return out


def runs_to_dict(runs: Sequence[EvaluatedRun], disagreements: int | None = None) -> Any:
    """One run's dict, or ``{"runs": [...]}`` for several (``dbstruct evaluate --json``)."""
    data = [_jsonable(r.to_dict(disagreements)) for r in runs]
    return data[0] if len(data) == 1 else {"runs": data}


def headline(scores: FieldScore) -> tuple[str, float | None]:
    """The metric a chart shows for a field: token F1 for free text, F1 for sets, else
    accuracy."""
    name = {"text": "token_f1", "set": "f1"}.get(scores.kind, "accuracy")
    value = scores.metrics.get(name)
    return name, None if value is None else float(value)


def _value(name: str, value: float | int | None) -> str:
    if value is None:
        return "n/a"
    if name == "mae_rows" or isinstance(value, bool):
        return str(value)
    return f"{value:.4g}" if name == "mae" else f"{value:.3f}"


def _field_lines(runs: Sequence[EvaluatedRun]) -> list[list[str]]:
    """Rows of the table: field, metric, then one value per run."""
    lines: list[list[str]] = []
    names = list(dict.fromkeys(f for r in runs for f in r.evaluation.fields))
    for name in names:
        first = next(r.evaluation.fields[name] for r in runs if name in r.evaluation.fields)
        for metric in first.metrics:
            values = [
                _value(metric, r.evaluation.fields[name].metrics.get(metric))
                if name in r.evaluation.fields
                else "-"
                for r in runs
            ]
            lines.append([name if metric == "accuracy" else "", metric, *values])
        if len(runs) > 1:
            missing = [
                str(r.evaluation.fields[name].missing_prediction)
                if name in r.evaluation.fields
                else "-"
                for r in runs
            ]
            lines.append(["", "missing", *missing])
    return lines


def _evidence_lines(runs: Sequence[EvaluatedRun]) -> list[list[str]]:
    """Rows of the table: each field's evidence found rate (runs with evidence on)."""
    names = list(dict.fromkeys(f for r in runs for f in (r.evidence or {})))
    lines = []
    for i, name in enumerate(names):
        values = [
            _value("found_rate", r.evidence[name].found_rate)
            if r.evidence is not None and name in r.evidence
            else "-"
            for r in runs
        ]
        lines.append(["evidence found" if i == 0 else "", name, *values])
    return lines


def _costs(runs: Sequence[EvaluatedRun]) -> list[list[str]]:
    def tokens(r: EvaluatedRun) -> str:
        total = r.per_row(r.prompt_tokens + r.completion_tokens)
        return "n/a" if total is None else f"{total:,.1f}"

    def cost(r: EvaluatedRun) -> str:
        value = r.per_row(r.cost_usd)
        return "unknown (no price)" if value is None else f"${value:.6f}"

    return [
        ["tokens per row", "", *(tokens(r) for r in runs)],
        ["cost per row", "", *(cost(r) for r in runs)],
    ]


def _table(rows: list[list[str]], right: int) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            c.ljust(w) if i < right else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def format_runs(runs: Sequence[EvaluatedRun], disagreements: int = 10) -> str:
    """The text ``dbstruct evaluate`` prints: one table, a column per run."""
    parts = []
    for r in runs:
        e = r.evaluation
        line = f"{r.name}: {e.rows:,} labelled rows, {r.how}, {len(e.failed):,} failed"
        if r.labels_not_in_source:
            line += f" ({r.labels_not_in_source:,} labelled ids are not in the {r.label_scope})"
        parts.append(line)
    if len(runs) == 1:
        fields = runs[0].evaluation.fields
        rows = [["field", "metric", "value", "support", "missing", "unlabelled"]]
        for cells in _field_lines(runs):
            s = fields[cells[0]] if cells[0] else None
            counts = [str(s.support), str(s.missing_prediction), str(s.unlabelled)] if s else []
            rows.append([*cells, *(counts or ["", "", ""])])
        rows += [[*c, "", "", ""] for c in _evidence_lines(runs) + _costs(runs)]
    else:
        rows = [["field", "metric", *(f"[{i}]" for i in range(1, len(runs) + 1))]]
        rows += [["rows", "", *(str(r.evaluation.rows) for r in runs)]]
        rows += _field_lines(runs) + _evidence_lines(runs) + _costs(runs)
        parts = [f"[{i}] {p}" for i, p in enumerate(parts, start=1)]
    parts += ["", _table(rows, right=2)]
    for i, r in enumerate(runs, start=1):
        parts += _disagreements(r, disagreements, f"[{i}] " if len(runs) > 1 else "")
    return "\n".join(parts)


def _disagreements(run: EvaluatedRun, limit: int, tag: str) -> list[str]:
    found = run.evaluation.disagreements
    if limit <= 0 or not found:
        return []
    lines = [f"\n{tag}disagreeing rows ({min(limit, len(found))} of {len(found):,}):"]
    for d in found[:limit]:
        label, got = _jsonable(d.label), _jsonable(d.prediction)
        why = f" ({d.error[:120]})" if d.error else ""
        lines.append(f"  {d.id}  {d.field}: label {label!r}, prediction {got!r}{why}")
    return lines


# ---------------------------------------------------------------- the report


def require_matplotlib() -> None:
    """Raise ConfigurationError naming the extra when matplotlib is not installed."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise ConfigurationError(
            f"--report draws its charts with matplotlib, which is not installed: {REPORT_HINT}"
        ) from None


def write_report(directory: str | Path, runs: Sequence[EvaluatedRun]) -> list[Path]:
    """Write ``report.md``, ``scores.png`` and a ``confusion-<run>-<field>.png`` per category
    or boolean field into ``directory``; the files written."""
    require_matplotlib()
    importlib.import_module("matplotlib").use("Agg")  # files only, no display
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    charts = [_scores_chart(out / "scores.png", runs)]
    for i, run in enumerate(runs, start=1):
        for name, s in run.evaluation.fields.items():
            if s.confusion:
                path = out / f"confusion-{i}-{name.replace('.', '_')}.png"
                charts.append(_confusion_chart(path, s, f"{name} ({run.name})"))
    report = out / "report.md"
    report.write_text(_markdown(runs, charts), encoding="utf-8")
    return [report, *charts]


def _markdown(runs: Sequence[EvaluatedRun], charts: list[Path]) -> str:
    lines = ["# dbstruct evaluate", ""]
    for i, r in enumerate(runs, start=1):
        e = r.evaluation
        lines.append(f"- [{i}] `{r.name}`: {e.rows} labelled rows, {r.how}, {len(e.failed)} failed")
    header = ["field", "metric", *(f"[{i}]" for i in range(1, len(runs) + 1))]
    rows = _field_lines(runs) + _evidence_lines(runs) + _costs(runs)
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c or " " for c in row) + " |" for row in rows]
    lines += [""] + [f"![{c.stem}]({c.name})" for c in charts]
    for i, run in enumerate(runs, start=1):
        found = run.evaluation.disagreements
        lines += ["", f"## [{i}] disagreeing rows ({len(found)})", ""]
        lines += ["| id | field | label | prediction |", "|---|---|---|---|"]
        lines += [
            f"| {d.id} | {d.field} | {_jsonable(d.label)!r} | {_jsonable(d.prediction)!r} |"
            for d in found[:200]
        ]
    return "\n".join(lines) + "\n"


def _scores_chart(path: Path, runs: Sequence[EvaluatedRun]) -> Path:
    plt: Any = importlib.import_module("matplotlib.pyplot")

    names = list(dict.fromkeys(f for r in runs for f in r.evaluation.fields))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) * len(runs)), 4))
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        values = [
            headline(run.evaluation.fields[n])[1] or 0.0 if n in run.evaluation.fields else 0.0
            for n in names
        ]
        xs = [x + i * width for x in range(len(names))]
        ax.bar(xs, values, width, label=f"[{i + 1}] {run.name}")
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels(
        [f"{n}\n{headline(runs[0].evaluation.fields[n])[0]}" if n in runs[0].evaluation.fields
         else n for n in names], fontsize=8)  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _confusion_chart(path: Path, scores: FieldScore, title: str) -> Path:
    plt: Any = importlib.import_module("matplotlib.pyplot")

    matrix = scores.confusion or {}
    seen = set(matrix) | {p for row in matrix.values() for p in row}
    # both axes in the model's order, so that the diagonal holds the right answers
    order = [*scores.choices, NULL, FAILED, *sorted(seen - {*scores.choices, NULL, FAILED})]
    truth = [k for k in order if k in matrix]
    predicted = [k for k in order if k in seen]
    cells = [[matrix[t].get(p, 0) for p in predicted] for t in truth]
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(predicted), 1 + 0.6 * len(truth)))
    ax.imshow(cells, cmap="Blues")
    for y, row in enumerate(cells):
        for x, count in enumerate(row):
            ax.text(x, y, str(count), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(predicted)), predicted, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(truth)), truth, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
