"""What tokens cost: a job file's ``pricing:``, else a built-in table of Databricks'
pay-per-token list prices; an endpoint with neither has no price (never a guessed one).

    >>> pricing = price_for("databricks/databricks-meta-llama-3-3-70b-instruct", None)
    >>> pricing.cost_usd(prompt_tokens=2_000_000, completion_tokens=100_000)
    1.150023
    >>> price_for("my-endpoint", None) is None
    True

A job file gives its price per million tokens in US dollars, or in DBUs with a dollar price
per DBU (the built-in $0.07 when left out), or only ``usd_per_dbu`` to keep the built-in DBU
rates of a known endpoint at the DBU price of its own account::

    pricing: {input_usd_per_million: 0.5, output_usd_per_million: 1.5}
    pricing: {input_dbu_per_million: 7.143, output_dbu_per_million: 21.429, usd_per_dbu: 0.07}
    pricing: {usd_per_dbu: 0.091}

The built-in table is second-hand. Databricks publishes its pay-per-token rates as DBUs per
million tokens on https://www.databricks.com/product/pricing/foundation-model-serving (open
models) and https://www.databricks.com/product/pricing/proprietary-foundation-model-serving
(Claude); no copy of those pages could be read here. The rates below were copied on
2026-12-07 from LiteLLM's price map (PyPI ``litellm`` 1.110.2,
``litellm/model_prices_and_context_window_backup.json``), which names those two pages as the
source of every row and keeps the DBU rates in ``*_dbu_cost_per_token``. Two third-party pages
agree on the rows they list (https://usagepricing.com/blueprint/mosaic-ai, "List prices as of
June 2026"; https://www.databrickspricing.com/ai-pricing, "Updated April 2026").

Dollars per DBU depend on the cloud, region, tier and contract. :data:`USD_PER_DBU` ($0.07)
is the list price LiteLLM converts with ("Costs per token are the published Global DBU rates
times $0.070 per DBU") and the one both third-party pages give, for AWS US East serving; no
price for another cloud was found. Prices change: the date is part of every description.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dbstruct.errors import ConfigurationError

__all__ = [
    "BUILTIN_DBU_RATES",
    "PRICES_COPIED_ON",
    "USD_PER_DBU",
    "Pricing",
    "builtin_pricing",
    "cost_usd",
    "endpoint_name",
    "price_for",
]

#: when the built-in rates were copied (see the module docstring for the source)
PRICES_COPIED_ON = "2026-12-07"
#: US dollars per DBU: the list price for AWS US East (see the module docstring)
USD_PER_DBU = 0.07

_OPEN = "https://www.databricks.com/product/pricing/foundation-model-serving"
_PROPRIETARY = "https://www.databricks.com/product/pricing/proprietary-foundation-model-serving"

#: endpoint -> (DBUs per million input tokens, DBUs per million output tokens, source page).
#: Chat endpoints only (dbstruct sends chat requests; embedding models are left out). Left out
#: on purpose: databricks-meta-llama-3-1-405b-instruct and databricks-claude-3-7-sonnet (in an
#: older LiteLLM map only; the zh-CN copy of Azure Databricks' function-calling page says
#: Llama 3.1 405B is not available to pay-per-token workloads from 2026-02-15), and
#: databricks-claude-sonnet-4 (deprecation date 2026-10-09 in LiteLLM's map).
BUILTIN_DBU_RATES: dict[str, tuple[float, float, str]] = {
    "databricks-meta-llama-3-3-70b-instruct": (7.143, 21.429, _OPEN),
    "databricks-meta-llama-3-1-8b-instruct": (2.143, 6.429, _OPEN),
    "databricks-llama-4-maverick": (7.143, 21.429, _OPEN),
    "databricks-gpt-oss-120b": (2.143, 8.571, _OPEN),
    "databricks-gpt-oss-20b": (1.0, 4.286, _OPEN),
    "databricks-gemma-3-12b": (2.143, 7.143, _OPEN),
    "databricks-qwen3-next-80b-a3b-instruct": (2.143, 17.143, _OPEN),
    "databricks-qwen35-122b-a10b": (3.143, 31.429, _OPEN),
    "databricks-claude-sonnet-4-5": (42.857, 214.29, _PROPRIETARY),
    "databricks-claude-sonnet-4-6": (42.857, 214.29, _PROPRIETARY),
    "databricks-claude-haiku-4-5": (14.286, 71.429, _PROPRIETARY),
    "databricks-claude-opus-4": (214.29, 1071.4, _PROPRIETARY),
    "databricks-claude-opus-4-1": (214.29, 1071.4, _PROPRIETARY),
    "databricks-claude-opus-4-5": (71.429, 357.14, _PROPRIETARY),
    "databricks-claude-opus-4-6": (71.429, 357.14, _PROPRIETARY),
    "databricks-claude-opus-4-7": (71.429, 357.14, _PROPRIETARY),
}

_USD_KEYS = ("input_usd_per_million", "output_usd_per_million")
_DBU_KEYS = ("input_dbu_per_million", "output_dbu_per_million")
_KEYS = (*_USD_KEYS, *_DBU_KEYS, "usd_per_dbu")


@dataclass(frozen=True)
class Pricing:
    """A price per million input and output tokens, and where it comes from.

    ``input_dbu_per_million`` and the other DBU fields are set when the price was given in
    DBUs (the built-in table always is); the dollar prices are then derived from them.
    """

    input_usd_per_million: float
    output_usd_per_million: float
    #: "built-in" or "conf"
    origin: str
    input_dbu_per_million: float | None = None
    output_dbu_per_million: float | None = None
    usd_per_dbu: float | None = None
    #: the endpoint a built-in price is for, and its source page
    endpoint: str | None = None
    source_page: str | None = None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The dollars ``prompt_tokens`` in and ``completion_tokens`` out cost, rounded to
        a millionth of a dollar."""
        return cost_usd(self, prompt_tokens, completion_tokens)

    def dbus(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The DBUs those tokens cost, or None when the price was given in dollars."""
        if self.input_dbu_per_million is None or self.output_dbu_per_million is None:
            return None
        return (
            prompt_tokens * self.input_dbu_per_million
            + completion_tokens * self.output_dbu_per_million
        ) / 1e6

    def describe(self) -> str:
        """Where the price comes from, for ``dbstruct plan``'s output."""
        usd = (
            f"${self.input_usd_per_million:.4g} / ${self.output_usd_per_million:.4g} "
            "per 1M input / output tokens"
        )
        if self.input_dbu_per_million is not None and self.output_dbu_per_million is not None:
            dbu = (
                f"{_num(self.input_dbu_per_million)} / {_num(self.output_dbu_per_million)} "
                f"DBU per 1M input / output tokens at ${_num(self.usd_per_dbu or 0)}/DBU"
            )
            usd = f"{dbu} = {usd}"
        if self.origin == "conf":
            return f"conf: pricing ({usd})"
        dbu_price = (
            "$0.07/DBU, the AWS US East list price"
            if self.usd_per_dbu == USD_PER_DBU
            else "the conf's pricing.usd_per_dbu"
        )
        return (
            f"built-in: Databricks pay-per-token list price for {self.endpoint} as copied on "
            f"{PRICES_COPIED_ON} from LiteLLM's copy of {self.source_page} ({usd}; "
            f"{dbu_price})"
        )


def _num(value: float) -> str:
    return f"{value:g}"


def endpoint_name(endpoint: str) -> str:
    """The serving endpoint's name: ``"databricks/x"`` and ``"x"`` are both ``"x"``."""
    return endpoint.split("/", 1)[1] if endpoint.startswith("databricks/") else endpoint


def builtin_pricing(endpoint: str, *, usd_per_dbu: float = USD_PER_DBU) -> Pricing | None:
    """The built-in list price of ``endpoint`` (``"databricks/x"`` or ``"x"``), or None
    when the table has none."""
    name = endpoint_name(endpoint)
    rates = BUILTIN_DBU_RATES.get(name)
    if rates is None:
        return None
    dbu_in, dbu_out, page = rates
    return Pricing(
        input_usd_per_million=dbu_in * usd_per_dbu,
        output_usd_per_million=dbu_out * usd_per_dbu,
        origin="built-in",
        input_dbu_per_million=dbu_in,
        output_dbu_per_million=dbu_out,
        usd_per_dbu=usd_per_dbu,
        endpoint=name,
        source_page=page,
    )


def price_for(endpoint: str, configured: Mapping[str, Any] | Pricing | None) -> Pricing | None:
    """The price of ``endpoint``'s tokens: ``configured`` (a job file's ``pricing:``
    mapping, or a :class:`Pricing`), else the built-in one, else None.

    Raises :class:`~dbstruct.errors.ConfigurationError` naming the ``pricing.<key>`` at fault.
    """
    if isinstance(configured, Pricing):
        return configured
    if configured is None:
        return builtin_pricing(endpoint)
    if not isinstance(configured, Mapping):
        raise ConfigurationError(
            f"pricing: expected a mapping such as {{input_usd_per_million: 0.5, "
            f"output_usd_per_million: 1.5}}, got {type(configured).__name__}"
        )
    values = _read(configured)
    if not values:
        raise ConfigurationError(
            "pricing: is empty; give input_usd_per_million and output_usd_per_million, or "
            "input_dbu_per_million and output_dbu_per_million (with usd_per_dbu)"
        )
    if set(values) == {"usd_per_dbu"}:
        found = builtin_pricing(endpoint, usd_per_dbu=values["usd_per_dbu"])
        if found is None:
            raise ConfigurationError(
                f"pricing.usd_per_dbu: there is no built-in DBU rate for "
                f"{endpoint_name(endpoint)!r}; give input_dbu_per_million and "
                "output_dbu_per_million too"
            )
        return found
    usd = [k for k in _USD_KEYS if k in values]
    dbu = [k for k in (*_DBU_KEYS, "usd_per_dbu") if k in values]
    if usd and dbu:
        raise ConfigurationError(
            f"pricing: give the price in dollars ({', '.join(_USD_KEYS)}) or in DBUs "
            f"({', '.join(_DBU_KEYS)}, usd_per_dbu), not both: {', '.join(usd + dbu)}"
        )
    keys = _USD_KEYS if usd else _DBU_KEYS
    missing = [k for k in keys if k not in values]
    if missing:
        given = ", ".join(k for k in keys if k in values)
        raise ConfigurationError(f"pricing.{missing[0]}: missing (pricing has {given})")
    if usd:
        return Pricing(values[_USD_KEYS[0]], values[_USD_KEYS[1]], origin="conf")
    per_dbu = values.get("usd_per_dbu", USD_PER_DBU)
    dbu_in, dbu_out = values[_DBU_KEYS[0]], values[_DBU_KEYS[1]]
    return Pricing(
        dbu_in * per_dbu,
        dbu_out * per_dbu,
        origin="conf",
        input_dbu_per_million=dbu_in,
        output_dbu_per_million=dbu_out,
        usd_per_dbu=per_dbu,
    )


def _read(configured: Mapping[str, Any]) -> dict[str, float]:
    """The mapping's values as numbers, each key checked."""
    values: dict[str, float] = {}
    for key, value in configured.items():
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean 'pricing.{close[0]}'?" if close else ""
            raise ConfigurationError(
                f"pricing.{key}: unknown key{hint} (known: {', '.join(_KEYS)})"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(
                f"pricing.{key}: expected a number, got {type(value).__name__} {value!r}"
            )
        if not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"pricing.{key}: expected a finite number >= 0, got {value!r}")
        values[key] = float(value)
    return values


def cost_usd(pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> float:
    """The dollars the tokens cost at ``pricing``, rounded to a millionth of a dollar.

    >>> cost_usd(Pricing(0.5, 1.5, origin="conf"), 1_000_000, 200_000)
    0.8
    """
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {prompt_tokens}, {completion_tokens}")
    total = (
        prompt_tokens * pricing.input_usd_per_million
        + completion_tokens * pricing.output_usd_per_million
    ) / 1e6
    return round(total, 6)
