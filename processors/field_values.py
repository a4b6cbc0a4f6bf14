"""Value evidence for semantic field types (processors/field_types.py): how plausible each type is
given a field's sampled values, as they arrive in JSON events (strings, numbers, booleans, null).

Each non-null value gets a per-type plausibility (`_number_scores`, `_string_scores`); a field's
support for a type is their mean, with field-level adjustments (both 0 and 1 seen: a flag; small
coarse numbers: a rating; repeated short tokens: an enum). 0 rules a type out, about 0.5 means
compatible, 1 means the values show it. E-mails, phones and personal names come from
processors.sensitive.classify_value (precision first); the rest are regexes and the ISO lists of
processors/field_vocab.py.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from stocktake.processors.field_vocab import (
    COUNTRY_ALPHA2,
    COUNTRY_ALPHA3,
    COUNTRY_NAMES,
    CURRENCY_CODES,
    CURRENCY_SYMBOLS,
    ID_TYPES,
    STREET_WORDS,
    TYPES,
)
from stocktake.processors.sensitive import classify_value

NEUTRAL = 0.5  # support of every type when no value is known
MAX_CHARS = 256  # of a string value that are read

_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)
_HEX = re.compile(r"(?=.*[0-9])(?=.*[a-f])[0-9a-f]{12,64}", re.I)
_CODE = re.compile(r"#?[A-Za-z0-9_\-.:/]*[0-9][A-Za-z0-9_\-.:/]*")  # one token holding a digit: SKU_1, T-12
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+\.\S+", re.I)
_TS = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:\s*(?:Z|UTC|[+-]\d{2}:?\d{2}))?"
                 r"|\d{1,2}/\d{1,2}/\d{4}(?: \d{1,2}:\d{2}(?::\d{2})?)?", re.I)
_ZIP = re.compile(r"\d{4,6}(?:-\d{3,4})?|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d", re.I)
_NUMSTR = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
_MONEY = re.compile(r"(?:[A-Z]{0,3}\$|€|£|¥)\s?\d[\d,.]*|\d[\d,.]*\s?(?:€|zł|kr|[A-Z]{3})", re.I)
_DOTTED = re.compile(r"[a-z_]+(?:\.[a-z_]+)+")
_ALPHA = re.compile(r"[^\W\d_]+(?:[ '.\-]+[^\W\d_]+)*\.?|\([^\W\d_ ]+(?: [^\W\d_]+)*\)", re.UNICODE)
_SNAKE = re.compile(r"[a-z]+(?:_[a-z]+)*|[A-Z]+(?:_[A-Z]+)*")
_BOOL_WORDS = frozenset({"true", "false", "yes", "no", "y", "n", "t", "f"})
_EPOCH = ((9e8, 2.2e9), (9e11, 2.2e12), (9e14, 2.2e15))  # s, ms, us (ns does not fit a JSON double)


class ValueProfile(NamedTuple):
    n: int  # non-null values
    support: dict[str, float]  # type -> mean per-value plausibility
    distinct: float  # distinct / n
    note: str  # the most telling value evidence, for FieldType.evidence


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond a double
        return False


def is_hex_id(text: str) -> bool:
    """A UUID or a hex digest (12-64 hex digits with a digit and a letter)."""
    return bool(_UUID.fullmatch(text) or _HEX.fullmatch(text))


def _is_epoch(x: float) -> bool:
    return any(lo <= x <= hi for lo, hi in _EPOCH)


def _decimals(x: float) -> int:
    text = repr(x)
    return 0 if "e" in text or "." not in text else len(text.split(".")[1].rstrip("0"))


def _number_scores(x: float) -> dict[str, float]:
    integral = float(x).is_integer()
    dec = _decimals(x)
    s: dict[str, float] = {}
    big = abs(x) >= 1e7  # ids and epochs, hardly an amount or a count
    s["price_amount"] = (0.6 if integral else 1.0 if dec <= 2 else 0.3) * (0.5 if x < 0 else 1.0) * (0.3 if big else 1)
    s["quantity"] = (0.8 if integral else 0.4) * (0.3 if x < 0 or big else 1.0)
    if integral and x >= 0:
        s.update(dict.fromkeys(ID_TYPES, 0.7 if x >= 1e5 else 0.5))
        s["zip_code"] = 0.4 if 100 <= x < 1_000_000 else 0.0
        s["enum_status"] = 0.2 if x <= 20 else 0.0
        s["phone"] = 0.2 if 1e7 <= x < 1e13 else 0.0
    if x in (0, 1):
        s["boolean_flag"] = 0.6
    if _is_epoch(x):
        s["timestamp"] = 1.0
    if not integral and dec >= 4 and -180 <= x <= 180:
        s["geo_coordinate"] = 1.0
    return s


def _string_scores(v: str) -> tuple[dict[str, float], str]:
    """Per-type plausibility of one string value and a tag naming what it looks like. Only the
    first MAX_CHARS characters are read: longer values are prose anyway, and it bounds the regexes."""
    s = v.strip()[:MAX_CHARS]
    low = s.lower()
    if not s:
        return {}, "empty"
    if s[0] in "{[" and s[-1] in "}]":
        return {}, "json"  # a serialized object fits no type of the taxonomy
    if low in _BOOL_WORDS:
        return {"boolean_flag": 0.9, "enum_status": 0.3}, "bool"
    kind = classify_value(s)
    if kind == "email":
        return {"email": 1.0}, "email"
    if _URL.fullmatch(s):
        return {"url": 1.0}, "url"
    try:
        ipaddress.ip_address(s)
        return {"ip_address": 1.0}, "ip"
    except ValueError:
        pass
    if _TS.fullmatch(s):
        return {"timestamp": 1.0}, "timestamp"
    if low in CURRENCY_CODES or low in CURRENCY_SYMBOLS:
        return {"currency": 1.0, "enum_status": 0.3, "region": 0.2}, "currency"
    if kind == "phone":  # sensitive.py takes a ZIP+4 or a Brazilian CEP (01305-100) for a phone
        return ({"zip_code": 1.0, "phone": 0.5}, "zip") if _ZIP.fullmatch(s) else ({"phone": 1.0}, "phone")
    if is_hex_id(s):
        return dict.fromkeys(ID_TYPES, 1.0), "hex id"
    words = s.split()
    out: dict[str, float] = {}
    tag = "text"
    if _NUMSTR.fullmatch(s):
        x = float(s.replace(",", "."))
        out = {k: 0.8 * val for k, val in _number_scores(x).items() if k not in ("timestamp", "geo_coordinate")}
        out.update(dict.fromkeys(ID_TYPES, 0.6))
        out["zip_code"] = 1.0 if _ZIP.fullmatch(s) else 0.0
        return out, "numeric string"
    if _MONEY.fullmatch(s):
        return {"price_amount": 1.0}, "money"
    if low in COUNTRY_ALPHA2 or low in COUNTRY_ALPHA3 or low in COUNTRY_NAMES:
        out["country"] = 1.0
        tag = "country"
    has_digit = any(c.isdigit() for c in s)
    if has_digit and _ZIP.fullmatch(s):
        return {"zip_code": 1.0, "address": 0.3}, "zip"
    if len(words) == 1 and has_digit and _CODE.fullmatch(s):
        return {**dict.fromkeys(ID_TYPES, 0.8), "enum_status": 0.1, "brand": 0.1, "phone": 0.3}, "code"
    if has_digit and len(words) >= 2:
        street = bool(STREET_WORDS & {w.lower().strip(",") for w in words}) or bool(re.match(r"\d+[A-Za-z]?\s", s))
        out["address"] = 1.0 if street else 0.3
        tag = "street" if street else tag
        if sum(c.isdigit() for c in s) >= 7 and re.fullmatch(r"[\d\s()+\-.extEXT]+", s):
            out["phone"] = 0.5
    if " > " in s or " / " in s or "|" in s or _DOTTED.fullmatch(s):
        out["category"] = 1.0
        tag = "category path"
    alpha = bool(_ALPHA.fullmatch(s))
    n_words = len(words)
    if kind == "name":
        out["person_name"] = 1.0
        tag = "person name"
    elif alpha and n_words <= 4:
        out["person_name"] = 0.5 if s[0].isupper() else 0.3
    if alpha and n_words <= 4:
        out.setdefault("country", 0.3)
        code = s.isupper() and len(s) <= 3
        out["city"] = 0.2 if code else 0.5
        out["region"] = 0.6 if code else 0.5
    sentence = n_words >= 6 or (n_words >= 3 and s[-1] in ".!?")
    token = "_" in s and n_words == 1  # a machine token such as add_to_cart: not prose
    out["free_text"] = 0.1 if token else 1.0 if sentence else 0.6 if n_words >= 3 else 0.4
    out["product_title"] = 0.1 if token else 0.8 if n_words >= 3 else 0.6 if n_words == 2 else 0.3
    out.setdefault("category", 0.5 if n_words <= 4 else 0.2)
    if n_words <= 3 and len(s) <= 30:
        out["brand"] = 0.5
    if _SNAKE.fullmatch(s) or (n_words <= 2 and not has_digit and len(s) <= 30):
        out["enum_status"] = 0.5
    if sentence:
        tag = "sentence"
    return out, tag


def profile_values(values: Sequence[Any]) -> ValueProfile:
    """Per-type plausibility of a field's sampled values: the mean over non-null values of each
    value's score, with field-level adjustments (0/1 flags, rating ranges, repeats for enums)."""
    present = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
    n = len(present)
    if n == 0:
        return ValueProfile(0, dict.fromkeys(TYPES, NEUTRAL), 0.0, "no values")
    totals = dict.fromkeys(TYPES, 0.0)
    tags: dict[str, int] = {}
    numbers: list[float] = []
    for v in present:
        if isinstance(v, bool):
            scores, tag = {"boolean_flag": 1.0, "enum_status": 0.2}, "bool"
        elif isinstance(v, int | float) and _finite(v):
            scores, tag = _number_scores(float(v)), "number"
            numbers.append(float(v))
        elif isinstance(v, str):
            scores, tag = _string_scores(v)
        else:
            scores, tag = {}, type(v).__name__
        tags[tag] = tags.get(tag, 0) + 1
        for k, val in scores.items():
            totals[k] += val
    support = {k: val / n for k, val in totals.items()}
    distinct = len({repr(v) for v in present}) / n
    if len(numbers) == n:
        lo, hi = min(numbers), max(numbers)
        coarse = all(_decimals(x) <= 1 for x in numbers)
        support["rating"] = 0.0 if not coarse or lo < 0 else 0.9 if hi <= 5 else 0.5 if hi <= 10 else 0.0
        if set(numbers) == {0.0, 1.0}:  # both seen, nothing else: a flag far more often than a rating
            support["boolean_flag"], support["rating"] = 0.9, 0.3
    if n >= 4 and support["enum_status"] >= 0.2:
        support["enum_status"] = min(1.0, support["enum_status"] + (0.3 if distinct <= 0.6 else 0.0))
    tag, count = max(tags.items(), key=lambda kv: kv[1])
    return ValueProfile(n, support, distinct, f"{count}/{n} {tag}")
