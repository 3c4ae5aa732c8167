"""Response models used by the demo job, the notebooks and the docs.

    from dbstruct.examples import TicketTriage
    from dbstruct.spark import structured_udf

    triage = structured_udf(TicketTriage, "databricks/<endpoint>", prompt=TRIAGE_PROMPT)

Every field is a closed choice (``Literal``), a bool, a plain string or a nullable number:
constraints that Databricks' schema subset cannot express (bounds, patterns) would be moved
into descriptions and only enforced by validation, which the serving emulator's synthesised
answers are not guaranteed to pass. ``TicketTriage`` has 11 keys counting the nested ones,
under the limit of a tool schema on Databricks
(https://docs.databricks.com/aws/en/machine-learning/model-serving/function-calling#json-schema:
"The maximum number of keys specified in the JSON schema is 16.").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["TRIAGE_PROMPT", "OrderRef", "TicketTriage"]

Category = Literal[
    "billing", "bug", "outage", "account_access", "how_to", "feature_request", "data_export",
    "other",
]  # fmt: skip
Priority = Literal["low", "medium", "high", "urgent"]
Product = Literal["Ledger", "Pulse", "Relay", "Vault", "mobile_app", "api", "other"]
Sentiment = Literal["positive", "neutral", "frustrated", "angry"]
Language = Literal["en", "de", "fr", "es", "nl", "pt", "other"]


class OrderRef(BaseModel):
    """An order or invoice the customer refers to."""

    reference: str = Field(description="The order or invoice number as written, e.g. INV-20431")
    amount: float | None = Field(
        default=None, description="The amount in dispute, if the customer states one"
    )


class TicketTriage(BaseModel):
    """How support should route and prioritise one customer ticket."""

    category: Category = Field(description="The main reason the customer wrote")
    priority: Priority = Field(
        description="urgent: production down or data loss; high: blocked with no workaround; "
        "medium: impaired; low: questions and wishes"
    )
    product: Product = Field(description="The product the ticket is about")
    sentiment: Sentiment = Field(description="The customer's tone")
    language: Language = Field(description="The language the ticket is written in")
    needs_human: bool = Field(
        description="True when an agent must reply (refunds, legal threats, outages, anger)"
    )
    refund_requested: bool = Field(description="True when the customer asks for money back")
    order: OrderRef | None = Field(
        default=None, description="The order or invoice mentioned, if any"
    )
    summary: str = Field(description="One sentence in English: what the customer needs")


TRIAGE_PROMPT = (
    "You triage customer support tickets for a software company (products: Ledger, "
    "Pulse, Relay, Vault, the mobile app and the public API).\n\n"
    "Subject: {subject}\n\n{body}"
)
