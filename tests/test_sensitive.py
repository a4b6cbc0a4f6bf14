"""Sensitive-field detection favours precision: real rees46/olist values are never flagged."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stocktake.processors.sensitive import classify_field, classify_value, hint_from_name, luhn_ok, mask

POSITIVES = {
    "email": ["john.doe@example.com", "a.b+tag@mail.co.uk", "ana_souza@empresa.com.br", " x1@y.io "],
    "phone": ["+49 151 23456712", "+4915123456712", "(555) 123-4567", "555-123-4567", "+1 (555) 123-4567",
              "030 1234 5678", "+55 11 91234-5678", "030.123.4567"],
    "card": ["4111 1111 1111 1111", "4111111111111111", "5500-0000-0000-0004", "3782 822463 10005",
             "6011111111111117", "3530111333300000"],
    "name": ["John Smith", "Ana Maria Souza", "José Álvarez", "Zoë Müller"],
}
NEGATIVES = [
    # rees46
    "1004767", "541312140", "2053013552326770905", "2103807459595387724", "electronics.smartphone",
    "appliances.environment.water_heater", "samsung", "35.79", "33.20", "72d76fde-8bb3-4e00-8c23-a032dfed738c",
    "2019-10-01 00:00:00 UTC", "2019-10-01T00:00:00Z", "2019-10-01", "view", "purchase",
    # olist
    "06b8999e2fba1a1fbc88172c00ba8bc7", "14409", "franca", "SP", "credit_card", "cama_mesa_banho",
    # near misses
    "12345678", "+0123456789", "1234567.89", "192.168.100.200", "john@", "@example.com", "a@b", "john@example",
    "4111111111111112", "Samsung Galaxy", "Black Phone", "São Paulo", "JOHN SMITH", "john smith", "J Smith",
    "Mary Ann Lee Jones", "Apple Watch Ultra", "Dr. Smith", 4111111111111111, 35.79, None, True,
]


@pytest.mark.parametrize(("kind", "value"), [(k, v) for k, vs in POSITIVES.items() for v in vs])
def test_positives(kind: str, value: str) -> None:
    assert classify_value(value) == kind


@pytest.mark.parametrize("value", NEGATIVES)
def test_negatives(value: object) -> None:
    assert classify_value(value) is None


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


def test_classify_field_by_name_and_by_values() -> None:
    assert classify_field("customerEmail", []) == "email"
    assert classify_field("billing_phone", [1, 2]) == "phone"
    assert classify_field("cc_number", []) == "card"
    assert classify_field("last_name", []) == "name"
    assert classify_field("is_mobile", [True]) is None and hint_from_name("name") is None
    assert classify_field("product_name", ["Samsung Galaxy", "Apple Watch"]) is None
    assert classify_field("contact", ["a@b.com", "c@d.org", None, "n/a"]) == "email"  # 2 of 3 strings
    assert classify_field("contact", ["a@b.com", "x", "y"]) is None
    assert classify_field("contact", ["a@b.com", "x", "y"], min_share=0.3) == "email"
    assert classify_field("user_id", ["541312140", "4111111111111111", "1004767", "2053013552326770905"]) is None
    assert classify_field("price", [35.79, 33.2]) is None


def test_masks() -> None:
    assert mask("john.doe@example.com", "email") == "j***@e***.com"
    assert mask("+49 151 2345 6712", "phone") == "+** *** **** **12"
    assert mask("4111 1111 1111 1234", "card") == "**** **** **** 1234"
    assert mask("John Doe", "name") == "J*** D***"
    assert mask("1004767", None) == "1004767" and mask(None, "email") is None
    with pytest.raises(ValueError):
        mask("x", "ssn")


local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]", fullmatch=True).filter(lambda s: ".." not in s)
domains = st.from_regex(r"[a-z][a-z0-9-]{1,15}[a-z0-9]\.(com|org|com\.br|io)", fullmatch=True)


@given(local_parts, domains)
def test_email_mask_hides_local_part(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert classify_value(value) == "email"
    masked = mask(value, "email")
    assert local not in masked.split("@")[0] and masked.startswith(local[0] + "***@")


def _with_luhn(prefix_and_body: str) -> str:
    for d in "0123456789":
        if luhn_ok(prefix_and_body + d):
            return prefix_and_body + d
    raise AssertionError


@given(st.sampled_from(["4", "51", "55", "34", "6011"]), st.data(), st.sampled_from(["", " ", "-"]))
def test_card_mask_keeps_at_most_last_4(prefix: str, data: st.DataObject, sep: str) -> None:
    length = 15 if prefix == "34" else 16
    body = data.draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    digits = _with_luhn(prefix + body)
    value = sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))
    assert classify_value(value) == "card"
    masked = mask(value, "card")
    assert re.sub(r"\D", "", masked) == digits[-4:]


@given(st.from_regex(r"\+[1-9][0-9]{1,2} [0-9]{3} [0-9]{4,8}", fullmatch=True))
def test_phone_mask_keeps_last_2(value: str) -> None:
    assert classify_value(value) == "phone"
    masked = mask(value, "phone")
    assert re.sub(r"\D", "", masked) == re.sub(r"\D", "", value)[-2:] and len(masked) == len(value)
