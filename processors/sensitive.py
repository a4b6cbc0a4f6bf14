"""Sensitive-field detection (email, phone, card, personal name) and masking.

Pure logic for the field inventory: a field is flagged by its name or by what most of its
values look like, and sampled values are masked before they are shown or stored. Precision
matters more than recall: e-commerce streams are full of long numeric ids, prices, dates and
category paths that naive detectors take for phones, cards or names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

KINDS = ("email", "phone", "card", "name")

_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"  # dot-atom local part
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"  # host labels + alphabetic TLD
)
_PHONE_CHARS = re.compile(r"\+?[0-9(][0-9 ().-]*[0-9]")
_PHONE_BAD = re.compile(r"[ .-]{2}|[-.]\s|\s[-.]")  # doubled separators
# Dates and IPv4 addresses have 8-15 digits and separators too.
_NOT_PHONE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{4}|\d{1,3}(?:\.\d{1,3}){3}")
_SEP = re.compile(r"[ ().-]")
_CARD = re.compile(r"[0-9]{4,6}(?:[ -]?[0-9]{2,7}){1,4}")

# (first digits low, high, how many digits, allowed lengths): issuer ranges of the big networks.
# A bare 13-19 digit id passes Luhn one time in ten; requiring a real issuer prefix and length
# drops most of those (rees46 category_id 2103807459595387724 passes Luhn, but no network issues 21...).
_IIN: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa
    (51, 55, 2, frozenset({16})), (2221, 2720, 4, frozenset({16})),  # Mastercard
    (34, 34, 2, frozenset({15})), (37, 37, 2, frozenset({15})),  # Amex
    (2200, 2204, 4, frozenset(range(16, 20))),  # Mir
    (300, 305, 3, frozenset(range(14, 20))), (36, 36, 2, frozenset(range(14, 20))),  # Diners
    (38, 39, 2, frozenset(range(16, 20))),
    (3528, 3589, 4, frozenset(range(16, 20))),  # JCB
    (50, 50, 2, frozenset(range(13, 20))), (56, 58, 2, frozenset(range(13, 20))),  # Maestro, Elo
    (60, 69, 2, frozenset(range(13, 20))),  # Discover, UnionPay, Maestro, Hipercard
)

# Capitalized words that make a phrase a product, brand, colour, place or stock phrase rather
# than a person: a short, documented stoplist (lowercase), not a dictionary.
_NOT_NAME_WORDS = """
    samsung apple xiaomi huawei lenovo sony lg asus acer hp dell bosch philips nokia motorola oppo
    honor canon nikon nike adidas puma lego intel amd nvidia microsoft google amazon
    phone smartphone iphone ipad galaxy watch tv laptop notebook tablet camera case cover cable
    charger headphones speaker printer monitor keyboard mouse kitchen home garden sport sports kids
    baby toys shoes apparel electronics appliances computers furniture beauty health auto
    black white red blue green gold silver grey gray pink yellow orange purple brown rose
    pro max mini plus ultra lite edition series set pack new free sale order product test item
    the and for with of by from to in on at or
    unknown none null true false yes no not
    rio sao são santa santo san los las porto belo
    muito bom boa otimo ótimo excelente produto entrega recomendo super
"""
_NOT_NAME = frozenset(_NOT_NAME_WORDS.split())
_HINTS = {
    "email": {"email", "e_mail", "mail", "email_address"},
    "phone": {"phone", "mobile", "tel", "telephone", "msisdn", "phone_number", "mobile_number", "cellphone"},
    "card": {"card", "pan", "cc_number", "card_number", "credit_card", "credit_card_number", "ccnum"},
    "name": {"first_name", "last_name", "full_name", "customer_name", "given_name", "family_name", "surname",
             "middle_name", "contact_name", "cardholder_name", "billing_name", "shipping_name", "recipient_name"},
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(s: str) -> bool:
    if not _CARD.fullmatch(s):
        return False
    digits = re.sub(r"[ -]", "", s)
    n = len(digits)
    if not 13 <= n <= 19 or not luhn_ok(digits):
        return False
    return any(lo <= int(digits[:k]) <= hi and n in lengths for lo, hi, k, lengths in _IIN)


def _is_phone(s: str) -> bool:
    if len(s) > 25 or not _PHONE_CHARS.fullmatch(s) or _PHONE_BAD.search(s) or _NOT_PHONE.fullmatch(s):
        return False
    if not 8 <= sum(c.isdigit() for c in s) <= 15 or s.count("(") != s.count(")") or s.count("(") > 1:
        return False
    if s.startswith("+"):
        return s[1] != "0"  # E.164 country codes never start with 0
    # Without "+" a bare digit string (ids!) or a decimal ("1234567.89") is not a phone.
    seps = _SEP.findall(s)
    return bool(seps) and seps != ["."]


def _is_name(s: str) -> bool:
    words = s.split(" ")
    return 2 <= len(words) <= 3 and all(
        2 <= len(w) <= 20 and w.isalpha() and w[0].isupper() and w[1:].islower() and w.lower() not in _NOT_NAME
        for w in words
    )


def classify_value(value: Any) -> str | None:
    """"email" | "phone" | "card" | "name" | None. Only strings are classified: ids, prices and
    timestamps arriving as JSON numbers are never personal data here (a card or phone sent as a
    number is missed - precision first).

    email: dot-atom local part @ host labels . alphabetic TLD (2-63), at most 254 chars.
    card:  13-19 digits, optionally grouped by spaces/dashes, Luhn-valid, with a major network's
           issuer prefix and length (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, Mir).
    phone: 8-15 digits with + ( ) space dash dot; "+" then a non-zero digit (E.164), or national
           formats that contain a separator; bare digit strings, decimals and dates are not phones.
    name:  2-3 words split by single spaces, each 2-20 unicode letters, capitalized ("Ana Souza"),
           none in a stoplist of product/brand/colour/place/stock words ("Samsung", "Black", "New").
    """
    if not isinstance(value, str):
        return None
    s = value.strip()
    if not 5 <= len(s) <= 254:
        return None
    if "@" in s:
        return "email" if _EMAIL.fullmatch(s) else None
    if _is_card(s):
        return "card"
    if _is_phone(s):
        return "phone"
    return "name" if _is_name(s) else None


def snake_case(name: str) -> str:
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)  # camelCase -> camel_Case
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def hint_from_name(name: str) -> str | None:
    """Kind suggested by a field name alone: exact names (after snake_casing) or a known suffix
    ("customer_email", "billing_phone"); "name" alone is not a hint (product names)."""
    n = snake_case(name)
    if n.startswith(("is_", "has_")):  # flags such as is_mobile
        return None
    for kind, names in _HINTS.items():
        if n in names or any(n.endswith("_" + h) for h in names if kind != "name" and h != "pan"):
            return kind
    return None


def classify_field(name: str, values: Iterable[Any], *, min_share: float = 0.5) -> str | None:
    """A field's kind: its name's hint, else the kind shared by >= min_share of its non-null
    string values (the most common kind; None when no string values)."""
    hint = hint_from_name(name)
    if hint is not None:
        return hint
    kinds: Counter[str | None] = Counter()
    total = 0
    for v in values:
        if isinstance(v, str):
            total += 1
            kinds[classify_value(v)] += 1
    kinds.pop(None, None)
    if not total or not kinds:
        return None
    kind, n = kinds.most_common(1)[0]
    return kind if n / total >= min_share else None


def mask(value: Any, kind: str | None) -> Any:
    """Mask a value of a kind; None kind returns it unchanged, None value stays None.

    email "john.doe@example.com" -> "j***@e***.com" (first letters and TLD kept);
    phone "+49 151 2345 6712" -> "+** *** **** **12" (layout and last 2 digits kept);
    card -> "**** **** **** 4242" (last 4 digits kept); name "Ana Souza" -> "A*** S***".
    Masks have a fixed width per part, so they leak neither lengths nor more than those characters.
    """
    if kind is None or value is None:
        return value
    s = str(value).strip()
    if kind == "email":
        local, _, domain = s.rpartition("@")
        host, _, tld = domain.rpartition(".")
        if not local or not host:
            return s[:1] + "***"
        return f"{local[0]}***@{host[0]}***.{tld}"
    if kind == "phone":
        pos = [i for i, c in enumerate(s) if c.isdigit()]
        cut = pos[-2] if len(pos) > 2 else len(s)
        return re.sub(r"\d", "*", s[:cut]) + s[cut:]
    if kind == "card":
        digits = re.sub(r"\D", "", s)
        return "**** **** **** " + digits[-4:] if len(digits) >= 12 else "****"
    if kind == "name":
        return " ".join(w[0] + "***" for w in s.split()) or "***"
    raise ValueError(f"unknown sensitive kind {kind!r}")
