"""Write src/dbstruct/data/tickets.jsonl, the bundled sample of support tickets, and
src/dbstruct/data/tickets_labels.jsonl, the truth the generator knows about each of them.

    python scripts/make_sample.py            # (re)write both files
    python scripts/make_sample.py --check    # exit 1 if either differs from what this makes

Deterministic: a seeded ``random.Random`` and no clock, so the same script writes the same
bytes. The tickets are made up for a fictional software company (products Ledger, Pulse,
Relay, Vault, a mobile app and a public API): support requests of every kind, in several
tones and lengths, mostly in English with some German, French, Spanish, Dutch and
Portuguese. Every row is unique, so no two rows share one model request.

The labels (``dbstruct evaluate --labels sample:tickets``) hold only what the generator
decided: the ``category`` and ``language`` of every ticket; the ``product`` when the ticket's
template put it in the text (its name, the feature the ticket is about, or its how-to
question); the ``order.reference`` when the text quotes the invoice number. Priority,
sentiment, refunds and summaries are not decided by the generator, so they are not labelled.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "dbstruct" / "data" / "tickets.jsonl"
LABELS_OUT = OUT.with_name("tickets_labels.jsonl")
N_TICKETS = 1200
SEED = 20240611
START = dt.datetime(2025, 1, 6, 7, 0, tzinfo=dt.timezone.utc)

PRODUCTS = {
    "Ledger": ["invoice", "VAT report", "bank sync", "payment reminder", "credit note"],
    "Pulse": ["dashboard", "chart", "scheduled report", "data refresh", "KPI widget"],
    "Relay": ["webhook", "SMS delivery", "email template", "notification rule", "retry queue"],
    "Vault": ["shared folder", "file upload", "version history", "retention policy", "share link"],
    "the mobile app": ["login screen", "push notifications", "offline mode", "photo upload"],
    "the API": ["/v2/invoices endpoint", "OAuth token", "rate limit", "Python SDK", "pagination"],
}
FIRST = "Anna Ben Chloé David Elif Farah Greta Hugo Ines Jonas Kenji Lena Marco Nora".split()
FIRST += "Omar Priya Rafael Sofia Tom Yusuf".split()
LAST = "Meyer Okafor Dubois Kowalski Silva Janssen Novak Haddad Lindqvist Rossi Tanaka".split()
LAST += "Brennan García Weber Ahmed Costa".split()
COMPANIES = ["Brightline Logistics", "Kestrel Foods", "Nordhaven Dental", "Orbit Print Co",
             "Pinewood Legal", "Quarry Lane Bakery", "Riverbend Clinics", "Saltmarsh Studio",
             "Tidewater Freight", "Umber & Sons", "Vantage Realty", "Willow Tech GmbH"]  # fmt: skip
PLANS = ["free", "team", "business", "enterprise"]
CHANNELS = ["email", "web_form", "chat", "phone_transcript"]
DEVICES = ["iPhone 13", "iPhone 15 Pro", "Pixel 7", "Galaxy S23", "iPad Air", "Moto G54"]
BROWSERS = ["Chrome 124", "Firefox 126", "Safari 17", "Edge 125"]
ERRORS = ["ERR_SYNC_409", "E1042", "TimeoutError", "HTTP 500", "HTTP 502", "NullReference"]

# (category, subject templates, core sentences); {thing} is a feature of the ticket's product
ENGLISH = {
    "billing": (
        [
            "Charged twice for {inv}",
            "Wrong amount on invoice {inv}",
            "Refund for {inv}?",
            "Question about my bill",
        ],
        [
            "I was charged {amt} twice this month for the same subscription (invoice {inv}).",
            "Invoice {inv} shows {amt} but our plan is {plan}, which should be cheaper.",
            "We downgraded to {plan} on {date} but were still billed {amt}. Please refund the "
            "difference.",
            "Can you explain the extra line of {amt} on invoice {inv}? Nobody here ordered it.",
        ],
    ),
    "bug": (
        [
            "{Thing} broken after update",
            "Bug: {thing} shows wrong data",
            "{err} when using {thing}",
            "Something is off with {thing}",
        ],
        [
            "Since yesterday's update the {thing} in {product} fails with {err}.",
            "The {thing} shows yesterday's numbers even after a refresh; {browser} on Windows.",
            "Every time I open the {thing} on my {device} the app closes. Reinstalling did not "
            "help.",
            "When I save the {thing} it says saved, but after reload my changes are gone.",
        ],
    ),
    "outage": (
        [
            "{Product} is down",
            "URGENT: {product} not loading",
            "Is there an outage?",
            "Production impact: {thing} failing",
        ],
        [
            "{Product} has not loaded for any of our {users} users since {time} - just a spinner, "
            "then {err}.",
            "All calls to the {thing} return {err} since {time}. Our checkout is blocked.",
            "Nothing works: {product} gives a blank page for the whole office since {time}.",
        ],
    ),
    "account_access": (
        [
            "Can't log in",
            "Locked out of my account",
            "2FA codes not accepted",
            "Password reset email never arrives",
        ],
        [
            "I reset my password three times but the reset email never arrives.",
            "My two-factor codes are rejected on {device}; the clock on the phone is correct.",
            "Our admin left the company and nobody can manage users anymore. How do we regain "
            "access?",
            "After SSO was enabled I get 'user not provisioned' although I am in the right group.",
        ],
    ),
    "how_to": (
        [
            "How do I set up {thing}?",
            "Question: {thing}",
            "Where are the {thing} settings?",
            "Help with {thing}",
        ],
        ["{howto}", "{howto} I could not find it in the documentation.", "Quick question: {howto}"],
    ),
    "feature_request": (
        [
            "Feature request: {thing}",
            "Suggestion for {product}",
            "Would love dark mode",
            "Missing: bulk edit for {thing}",
        ],
        [
            "It would save us hours if we could bulk edit the {thing} settings.",
            "Please add dark mode to {product}; half of our team works night shifts.",
            "Could {product} export to Excel directly instead of CSV?",
            "We'd like an audit log of every change made in {product}.",
            "Any plans to support single sign-on with Okta for {product}?",
        ],
    ),
    "data_export": (
        [
            "Export all our data",
            "GDPR data request",
            "CSV export incomplete",
            "Need a full backup before we leave",
        ],
        [
            "We need a full export of all our {product} data, including attachments, before "
            "{date}.",
            "Under GDPR I request a copy of all personal data you hold about me.",
            "The CSV export of the {thing} stops at 10,000 rows; we have about {rows}.",
            "Our contract ends on {date}. How do we download everything from {product}?",
        ],
    ),
    "other": (
        [
            "Partnership inquiry",
            "Thank you!",
            "Invoice address change",
            "Question about your security certifications",
        ],
        [
            "Do you have a SOC 2 Type II report we can share with our auditors?",
            "Just wanted to say the new {thing} is great - the team loves it.",
            "Please change our company address on future invoices to {address}.",
            "We are a reseller in {city} and would like to discuss a partnership.",
        ],
    ),
}
# Extra sentences for medium and long tickets, by kind of ticket
DETAILS = {
    "problem": [
        "This happens for every user on our {plan} plan.", "We are on {browser}.",
        "Ticket {prev} was closed without a fix.", "I attached a screenshot.",
        "It started around {time}.", "Tried on {device} too, same result.",
        "Steps: open {product}, go to the {thing}, click save.", "The error code was {err}.",
        "We have {users} users who depend on this.", "Cleared cache and cookies, no change.",
    ],
    "account": [
        "Our account id is ACC-{acc}.", "Ticket {prev} was about the same thing.",
        "We are on the {plan} plan.", "I attached the invoice as a PDF.",
        "Our finance team needs this before the end of the month.",
    ],
    "question": [
        "Our account id is ACC-{acc}.", "We are on the {plan} plan.",
        "We have {users} users.", "A link to the right help page would be enough.",
    ],
}  # fmt: skip
KIND = {"billing": "account", "bug": "problem", "outage": "problem", "account_access": "problem",
        "how_to": "question", "feature_request": "question", "data_export": "account",
        "other": "question"}  # fmt: skip
HOWTO = {
    "Ledger": ["How do I add a second VAT rate to an invoice?",
               "Can payment reminders go out automatically after 14 days?"],
    "Pulse": ["Can a scheduled report be emailed every Monday at 8:00?",
              "How do I share a dashboard with an external accountant without a paid seat?"],
    "Relay": ["How do I verify the signature of a webhook?",
              "Can a notification rule send SMS only during office hours?"],
    "Vault": ["How do I set a retention policy of 7 years on one folder?",
              "Can a share link expire after 48 hours?"],
    "the mobile app": ["How do I turn off push notifications for comments only?",
                       "Does offline mode keep photos until the phone is online again?"],
    "the API": ["How do I paginate through more than 10,000 invoices?",
                "Which OAuth scopes does the Python SDK need for read-only access?"],
}  # fmt: skip
OPEN = {
    "polite": ["Hi team,", "Hello,", "Good morning,", "Hi there,", "Dear support,"],
    "neutral": ["", "Hi,", "Hello support,"],
    "frustrated": ["Hi, again.", "Hello,", "This is the second time I'm writing about this."],
    "angry": ["This is unacceptable.", "THIRD time I'm writing!!", "Seriously?"],
    "positive": ["Hi team, first of all thanks for the great product!", "Hello!"],
}
# Tones that fit each kind of ticket (nobody writes an angry partnership inquiry)
TONES = {
    "problem": ["polite"] * 3 + ["neutral"] * 2 + ["frustrated"] * 3 + ["angry"] * 2,
    "account": ["polite"] * 4 + ["neutral"] * 3 + ["frustrated"] * 2 + ["angry"],
    "question": ["polite"] * 4 + ["neutral"] * 3 + ["positive"] * 2,
}
CLOSE = {
    "polite": ["Thanks a lot,\n{name}", "Kind regards,\n{name}\n{company}", "Thank you!"],
    "neutral": ["{name}", "Regards,\n{name}", ""],
    "frustrated": ["Please look into this soon.\n{name}", "We need a fix this week."],
    "angry": ["Fix this NOW or we cancel.", "I expect a refund and a call today. {name}",
              "If this isn't solved by Friday our lawyer will contact you."],
    "positive": ["Keep up the good work!\n{name}", "Cheers,\n{name}"],
}  # fmt: skip

# A few tickets in other languages: (language, category, subject, body)
FOREIGN = [
    (
        "de",
        "billing",
        "Doppelte Abbuchung {inv}",
        "Hallo, uns wurden für Rechnung {inv} zweimal {amt} abgebucht. Bitte erstatten Sie den "
        "Betrag.\nMit freundlichen Grüßen\n{name}",
    ),
    (
        "de",
        "account_access",
        "Kein Login möglich",
        "Seit heute Morgen kann sich niemand bei {product} anmelden, Fehler {err}. Bitte dringend "
        "prüfen!",
    ),
    (
        "de",
        "feature_request",
        "Wunsch: Export nach DATEV",
        "Wäre es möglich, den {thing} direkt nach DATEV zu exportieren? Das würde uns viel "
        "Arbeit sparen.",
    ),
    (
        "fr",
        "bug",
        "Le {thing} ne fonctionne plus",
        "Bonjour, depuis la mise à jour le {thing} affiche {err} sur mon {device}. Merci "
        "d'avance,\n{name}",
    ),
    (
        "fr",
        "billing",
        "Remboursement facture {inv}",
        "Bonjour, nous avons résilié le {date} mais avons été débités de {amt}. Merci de "
        "rembourser.",
    ),
    (
        "es",
        "outage",
        "{Product} caído",
        "Hola, {product} no carga para ninguno de nuestros {users} usuarios desde las {time}. "
        "¡Es urgente!",
    ),
    (
        "es",
        "how_to",
        "¿Cómo configuro el {thing}?",
        "Buenas, ¿cómo puedo configurar el {thing} para que solo avise al equipo de finanzas? "
        "Gracias.",
    ),
    (
        "nl",
        "data_export",
        "Al onze gegevens exporteren",
        "Hallo, ons contract loopt af op {date}. Hoe kunnen we alle gegevens uit {product} "
        "downloaden?\nGroet, {name}",
    ),
    (
        "nl",
        "bug",
        "Fout bij opslaan",
        "Als ik de {thing} opsla krijg ik {err}. Dit gebeurt sinds gisteren.",
    ),
    (
        "pt",
        "billing",
        "Cobrança duplicada",
        "Olá, fui cobrado duas vezes ({amt}) pela fatura {inv}. Podem estornar? Obrigado, {name}",
    ),
    (
        "pt",
        "account_access",
        "Não consigo entrar",
        "O código de verificação em duas etapas não funciona no meu {device}. Podem ajudar?",
    ),
]


def _slots(rng: random.Random, product: str, when: dt.datetime) -> dict[str, str]:
    thing = rng.choice(PRODUCTS[product])
    cur = rng.choice(["EUR", "USD", "GBP", "CHF"])
    amount = rng.choice([19, 29, 49, 99, 149, 249, 499, 1200]) + rng.choice([0, 0.5, 0.99])
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    due = when + dt.timedelta(days=rng.randint(3, 60))
    return {
        "product": product, "Product": product[0].upper() + product[1:],
        "thing": thing, "Thing": thing[0].upper() + thing[1:],
        "inv": f"INV-{rng.randint(20000, 99999)}", "amt": f"{amount:,.2f} {cur}", "cur": cur,
        "plan": rng.choice(PLANS), "date": due.strftime("%Y-%m-%d"),
        "time": f"{rng.randint(6, 22):02d}:{rng.choice([0, 15, 30, 45]):02d}",
        "err": rng.choice(ERRORS), "device": rng.choice(DEVICES), "browser": rng.choice(BROWSERS),
        "users": str(rng.choice([4, 12, 35, 80, 240, 1100])), "rows": f"{rng.randint(12, 900)},000",
        "prev": f"#{rng.randint(10000, 99999)}", "acc": str(rng.randint(100000, 999999)),
        "name": name, "company": rng.choice(COMPANIES),
        "address": f"{rng.randint(1, 220)} Harbour Street, {rng.choice(['Leeds', 'Utrecht'])}",
        "city": rng.choice(["Lisbon", "Toronto", "Singapore", "Kraków", "Austin"]),
        "howto": rng.choice(HOWTO[product]),
    }  # fmt: skip


def _english(rng: random.Random, slots: dict[str, str]) -> tuple[str, str, str, str, str]:
    """Language, category, subject, body, and the templates they were filled from."""
    category = rng.choices(list(ENGLISH), weights=[16, 20, 6, 12, 16, 10, 8, 6])[0]
    subjects, cores = ENGLISH[category]
    kind = KIND[category]
    tone = rng.choice(TONES[kind])
    length = rng.choices(["short", "medium", "long"], weights=[3, 5, 2])[0]
    parts = [rng.choice(OPEN[tone]), rng.choice(cores)]
    if length != "short":
        parts += rng.sample(DETAILS[kind], k=1 if length == "medium" else 3)
    if length == "long" and kind == "problem":
        parts.append(f"Environment: {slots['browser']} / {slots['device']}, plan {slots['plan']}.")
    if length == "long" and tone in ("frustrated", "angry"):
        parts.append(f"> On {slots['prev']} you wrote: we are looking into it. Nothing happened.")
    parts.append(rng.choice(CLOSE[tone]))
    template = "\n\n".join(p for p in parts if p)
    body = template.format(**slots)
    if tone == "angry" and rng.random() < 0.4:
        body = body.replace(".", "!", 1)
    subject_template = rng.choice(subjects) if rng.random() > 0.03 else ""
    subject = subject_template.format(**slots)
    return "en", category, subject, body, f"{subject_template}\n{template}"


#: the sample's product -> TicketTriage's product value (dbstruct.examples)
PRODUCT_VALUES = {"the mobile app": "mobile_app", "the API": "api"}


#: placeholders that put the ticket's product, its feature or its how-to question in the text
PRODUCT_SLOTS = ("{product}", "{Product}", "{thing}", "{Thing}", "{howto}")


def _truth(
    ticket: dict[str, str], category: str, slots: dict[str, str], template: str
) -> dict[str, object]:
    """What the generator knows about ``ticket``, as TicketTriage's fields (see the module
    docstring); ``template`` is the text the ticket was filled from."""
    text = f"{ticket['subject']}\n{ticket['body']}"
    label: dict[str, object] = {
        "ticket_id": ticket["ticket_id"],
        "category": category,
        "language": ticket["language"],
    }
    if any(slot in template for slot in PRODUCT_SLOTS):
        label["product"] = PRODUCT_VALUES.get(slots["product"], slots["product"])
    if slots["inv"] in text:
        label["order"] = {"reference": slots["inv"]}
    return label


def make_tickets(n: int = N_TICKETS, seed: int = SEED) -> list[dict[str, str]]:
    """``n`` unique tickets, the same for the same seed."""
    return [ticket for ticket, _ in make_labelled(n, seed)]


def make_labels(n: int = N_TICKETS, seed: int = SEED) -> list[dict[str, object]]:
    """The truth about each of :func:`make_tickets`'s tickets (see the module docstring)."""
    return [label for _, label in make_labelled(n, seed)]


def make_labelled(
    n: int = N_TICKETS, seed: int = SEED
) -> list[tuple[dict[str, str], dict[str, object]]]:
    """``n`` unique tickets, each with its truth; the same for the same seed."""
    rng = random.Random(seed)
    tickets: list[tuple[dict[str, str], dict[str, object]]] = []
    seen: set[str] = set()
    when = START
    while len(tickets) < n:
        when += dt.timedelta(minutes=rng.randint(3, 95))
        product = rng.choice(list(PRODUCTS))
        slots = _slots(rng, product, when)
        if rng.random() < 0.12:
            language, category, subject, body = rng.choice(FOREIGN)
            template = f"{subject}\n{body}"
            subject, body = subject.format(**slots), body.format(**slots)
        else:
            language, category, subject, body, template = _english(rng, slots)
        if body in seen:
            continue
        seen.add(body)
        ticket = {
            "ticket_id": f"TCK-{100001 + len(tickets)}",
            "created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "channel": rng.choice(CHANNELS),
            "customer": slots["company"],
            "plan": slots["plan"],
            "language": language,
            "subject": subject,
            "body": body,
        }
        tickets.append((ticket, _truth(ticket, category, slots, template)))
    return tickets


def render(rows: list[dict[str, str]] | list[dict[str, object]]) -> str:
    return "".join(json.dumps(t, ensure_ascii=False, sort_keys=False) + "\n" for t in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    labelled = make_labelled()
    files = {
        OUT: render([ticket for ticket, _ in labelled]),
        LABELS_OUT: render([label for _, label in labelled]),
    }
    if args.check:
        status = 0
        for path, text in files.items():
            same = path.is_file() and path.read_text(encoding="utf-8") == text
            print(f"{path}: {'up to date' if same else 'differs from scripts/make_sample.py'}")
            status = status if same else 1
        return status
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {N_TICKETS} tickets to {OUT} and their labels to {LABELS_OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
