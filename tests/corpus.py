"""Response models that data teams write, shared by the schema and Spark mapping tests.

``CORPUS`` holds models every part of dbstruct must accept; ``RECURSIVE`` and
``UNMAPPABLE`` hold models that must be refused with a clear error.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AnyUrl, BaseModel, ConfigDict, EmailStr, Field, HttpUrl

try:  # EmailStr needs the optional email-validator package
    import email_validator  # noqa: F401

    HAS_EMAIL = True
except ImportError:
    HAS_EMAIL = False


class UserExtract(BaseModel):
    name: str
    age: int


class Sentiment(str, enum.Enum):
    positive = "positive"
    neutral = "neutral"
    negative = "negative"


class Priority(int, enum.Enum):
    low = 1
    medium = 2
    high = 3


class Review(BaseModel):
    """A product review."""

    sentiment: Sentiment
    stars: int = Field(ge=1, le=5, description="Star rating, 1 to 5")
    summary: str = Field(max_length=200)


class Address(BaseModel):
    street: str
    city: str
    postcode: str | None = None
    country: str = "NL"


class Customer(BaseModel):
    name: str
    email: str | None = Field(None, description="Email if mentioned")
    address: Address


class LineItem(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{4}$")
    quantity: int = Field(gt=0)
    unit_price: Decimal = Field(max_digits=10, decimal_places=2)


class Order(BaseModel):
    order_id: uuid.UUID
    placed_on: dt.date
    shipped_at: dt.datetime | None = None
    items: list[LineItem]
    customer: Customer


class Ticket(BaseModel):
    """A support ticket, triaged."""

    category: Literal["billing", "bug", "feature", "account", "other"]
    priority: Priority
    product: str | None = None
    needs_human: bool
    tags: list[str] = Field(default_factory=list, max_length=5)


class Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    full_name: str = Field(alias="fullName")
    birth_date: dt.date | None = Field(None, alias="birthDate")


class Scores(BaseModel):
    per_aspect: dict[str, float]
    counts: dict[str, int] = Field(default_factory=dict)


class Nested3(BaseModel):
    value: int


class Nested2(BaseModel):
    inner: Nested3
    inners: list[Nested3]


class Nested1(BaseModel):
    middle: Nested2
    by_key: dict[str, Nested2]


class OptionalEverything(BaseModel):
    a: int | None = None
    b: float | None = None
    c: bool | None = None
    d: list[str] | None = None
    e: Address | None = None
    f: int | None = None


class Constrained(BaseModel):
    code: str = Field(min_length=2, max_length=8, pattern=r"^[a-z]+$")
    ratio: float = Field(ge=0.0, le=1.0)
    count: int = Field(multiple_of=5)
    items: list[int] = Field(min_length=1, max_length=3)


class WithAnnotated(BaseModel):
    score: Annotated[float, Field(ge=0, le=10, description="Score out of ten")]
    label: Annotated[str, Field(description="Short label")]


class Timestamps(BaseModel):
    created: dt.datetime
    due: dt.date
    duration: float | None = Field(None, description="Hours spent")


class Money(BaseModel):
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    currency: Literal["EUR", "USD", "GBP"]


class Invoice(BaseModel):
    invoice_number: str
    total: Money
    lines: list[Money]
    paid: bool = False


class Entity(BaseModel):
    text: str
    kind: Literal["person", "org", "place"]
    start: int
    end: int


class Entities(BaseModel):
    entities: list[Entity]


class Contract(BaseModel):
    """Key terms of a contract."""

    parties: list[str] = Field(description="Legal names of all parties")
    effective_date: dt.date | None = None
    termination_notice_days: int | None = Field(None, ge=0)
    governing_law: str | None = None
    auto_renews: bool


class Links(BaseModel):
    homepage: HttpUrl
    docs: AnyUrl | None = None
    ids: list[uuid.UUID] = Field(default_factory=list)


class Sets(BaseModel):
    labels: set[str]
    pair: tuple[int, int]
    many: tuple[str, ...]


class Defaults(BaseModel):
    language: str = "en"
    confidence: float = 0.5
    flags: list[bool] = Field(default_factory=list)


class DeepList(BaseModel):
    matrix: list[list[int]]
    groups: list[list[Entity]]


class Documented(BaseModel):
    """Fields that explain themselves."""

    title: str = Field(description="The title, as written", examples=["Broken login"])
    body_language: str = Field(description="ISO 639-1 code", title="Body language")


class AwkwardNames(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    first_name: str = Field(alias="first name")
    dotted: str = Field(alias="a.b")
    select: int = Field(alias="select")
    from_: str | None = Field(None, alias="from")


class LiteralMixed(BaseModel):
    level: Literal[1, 2, 3]
    flag: Literal[True]
    kind: Literal["a"] = "a"


class EnumList(BaseModel):
    sentiments: list[Sentiment]
    priorities: dict[str, Priority]


class Product(BaseModel):
    id: uuid.UUID
    name: str
    price: Decimal = Field(max_digits=8, decimal_places=2)
    in_stock: bool
    released: dt.date | None = None


class Catalog(BaseModel):
    products: list[Product]
    by_category: dict[str, list[Product]]


if HAS_EMAIL:

    class Contact(BaseModel):
        email: EmailStr
        name: str
else:  # pragma: no cover - depends on an optional package

    class Contact(BaseModel):  # type: ignore[no-redef]
        email: str
        name: str


CORPUS: list[type[BaseModel]] = [
    UserExtract,
    Review,
    Address,
    Customer,
    LineItem,
    Order,
    Ticket,
    Aliased,
    Scores,
    Nested1,
    OptionalEverything,
    Constrained,
    WithAnnotated,
    Timestamps,
    Money,
    Invoice,
    Entities,
    Contract,
    Links,
    Sets,
    Defaults,
    DeepList,
    Documented,
    AwkwardNames,
    LiteralMixed,
    EnumList,
    Catalog,
    Contact,
]


class TreeNode(BaseModel):
    label: str
    children: list[TreeNode] = Field(default_factory=list)


class Person(BaseModel):
    name: str
    manager: Person | None = None


RECURSIVE: list[type[BaseModel]] = [TreeNode, Person]


class AnyField(BaseModel):
    payload: Any


class MixedUnion(BaseModel):
    value: int | str


# Accepted by the client (JSON Schema can describe them) but with no single Spark type.
UNMAPPABLE: list[type[BaseModel]] = [AnyField, MixedUnion]
