"""Prices: a job file's ``pricing:`` in both forms, the built-in table, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from dbstruct.errors import ConfigurationError
from dbstruct.pricing import (
    BUILTIN_DBU_RATES,
    PRICES_COPIED_ON,
    USD_PER_DBU,
    Pricing,
    builtin_pricing,
    cost_usd,
    price_for,
)

LLAMA = "databricks-meta-llama-3-3-70b-instruct"


def test_a_known_endpoint_gets_its_builtin_dbu_rate_at_the_list_dbu_price() -> None:
    for name in (LLAMA, f"databricks/{LLAMA}"):
        pricing = price_for(name, None)
        assert pricing is not None
        assert pricing.origin == "built-in"
        assert (pricing.input_dbu_per_million, pricing.output_dbu_per_million) == (7.143, 21.429)
        assert pricing.input_usd_per_million == pytest.approx(0.5, abs=1e-4)
        assert pricing.output_usd_per_million == pytest.approx(1.5, abs=1e-4)
        assert pricing.usd_per_dbu == USD_PER_DBU == 0.07


@pytest.mark.parametrize(
    "endpoint",
    ["my-finetuned-llama", "databricks/my-endpoint", f"{LLAMA}-v2", "databricks-claude-sonnet-4"],
)
def test_an_endpoint_without_a_known_price_gets_none_never_a_guess(endpoint: str) -> None:
    assert price_for(endpoint, None) is None
    assert builtin_pricing(endpoint) is None


def test_the_dollar_form() -> None:
    pricing = price_for("anything", {"input_usd_per_million": 0.5, "output_usd_per_million": 2})
    assert pricing == Pricing(0.5, 2.0, origin="conf")
    assert pricing.dbus(1_000_000, 1_000_000) is None
    assert pricing.describe() == "conf: pricing ($0.5 / $2 per 1M input / output tokens)"


def test_the_dbu_form_with_and_without_a_dbu_price() -> None:
    conf: dict[str, Any] = {"input_dbu_per_million": 10, "output_dbu_per_million": 30}
    listed = price_for("anything", conf)
    mine = price_for("anything", {**conf, "usd_per_dbu": 0.1})
    assert listed is not None and mine is not None
    assert (listed.input_usd_per_million, listed.output_usd_per_million) == pytest.approx(
        (0.7, 2.1)
    )
    assert (mine.input_usd_per_million, mine.output_usd_per_million) == pytest.approx((1.0, 3.0))
    assert mine.dbus(2_000_000, 100_000) == pytest.approx(23.0)
    assert mine.describe().startswith("conf: pricing (10 / 30 DBU per 1M input / output tokens")


def test_a_dbu_price_alone_keeps_the_builtin_rates_of_a_known_endpoint() -> None:
    pricing = price_for(f"databricks/{LLAMA}", {"usd_per_dbu": 0.1})
    assert pricing is not None
    assert pricing.input_usd_per_million == pytest.approx(0.7143)
    assert "the conf's pricing.usd_per_dbu" in pricing.describe()
    with pytest.raises(ConfigurationError, match=r"pricing.usd_per_dbu: there is no built-in"):
        price_for("my-endpoint", {"usd_per_dbu": 0.1})


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (
            {"input_usd_per_milion": 0.5, "output_usd_per_million": 1.5},
            r"pricing\.input_usd_per_milion: unknown key; "
            r"did you mean 'pricing\.input_usd_per_million'\?",
        ),
        ({"input_usd_per_million": 0.5}, r"pricing\.output_usd_per_million: missing"),
        ({"output_dbu_per_million": 3.0}, r"pricing\.input_dbu_per_million: missing"),
        (
            {"input_usd_per_million": 0.5, "output_usd_per_million": 1.5, "usd_per_dbu": 0.07},
            r"in dollars .* or in DBUs .*not both: .*usd_per_dbu",
        ),
        ({"input_usd_per_million": "0.5", "output_usd_per_million": 1.5}, r"expected a number"),
        ({"input_usd_per_million": True, "output_usd_per_million": 1.5}, r"expected a number"),
        ({"input_usd_per_million": -1, "output_usd_per_million": 1.5}, r">= 0, got -1"),
        ({"input_usd_per_million": float("nan"), "output_usd_per_million": 1.5}, r"finite"),
        ({}, r"pricing: is empty"),
    ],
)
def test_a_bad_pricing_names_its_key(conf: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        price_for(LLAMA, conf)


def test_a_pricing_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="pricing: expected a mapping"):
        price_for(LLAMA, 0.5)  # type: ignore[arg-type]


def test_cost_arithmetic() -> None:
    pricing = Pricing(0.5, 1.5, origin="conf")
    assert cost_usd(pricing, 1_000_000, 200_000) == 0.8
    assert pricing.cost_usd(0, 0) == 0.0
    assert pricing.cost_usd(3, 1) == pytest.approx(0.000003)  # 1.5e-6 + 1.5e-6
    builtin = price_for(LLAMA, None)
    assert builtin is not None
    assert builtin.cost_usd(2_000_000, 100_000) == 1.150023  # 2 x 0.50001 + 0.1 x 1.50003
    with pytest.raises(ValueError, match="must be >= 0"):
        cost_usd(pricing, -1, 0)


def test_the_builtin_description_names_its_source_date_and_dbu_price() -> None:
    pricing = price_for(LLAMA, None)
    assert pricing is not None
    text = pricing.describe()
    assert text.startswith("built-in: Databricks pay-per-token list price for " + LLAMA)
    assert PRICES_COPIED_ON in text
    assert "https://www.databricks.com/product/pricing/foundation-model-serving" in text
    assert "$0.07/DBU, the AWS US East list price" in text


def test_every_builtin_row_cites_one_of_the_two_databricks_pricing_pages() -> None:
    pages = {
        "https://www.databricks.com/product/pricing/foundation-model-serving",
        "https://www.databricks.com/product/pricing/proprietary-foundation-model-serving",
    }
    for name, (dbu_in, dbu_out, page) in BUILTIN_DBU_RATES.items():
        assert page in pages, name
        assert ("claude" in name) == page.endswith("proprietary-foundation-model-serving"), name
        assert 0 < dbu_in < dbu_out, name  # output costs more than input on every row
