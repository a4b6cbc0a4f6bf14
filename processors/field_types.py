"""Semantic field types from a field's name and a sample of its values (issue #15 item 3).

Pure rules; the text model's part (models/field_types.py) hands in per-type similarities of the
field's name with PROTOTYPES (processors/field_vocab.py). Without the model, `lexical_similarity`
compares words instead.

Taxonomy (TYPES):
  identifier      an id or sequence number of anything but a user, product, order or session
  user_id         an id of a person who buys or browses (customer, visitor, reviewer, account)
  product_id      an id of a sellable item (product, SKU, ASIN, GTIN, variant)
  order_id        an id or number of an order, transaction or invoice
  session_id      an id of a visit / browser session
  price_amount    a money amount (price, freight, total, payment; also integer minor units)
  currency        a currency code or symbol (ISO 4217)
  quantity        a count or a physical measurement (items, installments, weight, dimensions, days)
  rating          a score on a small bounded scale given by a person (1-5 stars)
  timestamp       a date or date-time: ISO-like string or epoch number (s, ms, us)
  product_title   a product's name as shown to shoppers
  category        a category name or path ("electronics.smartphone", "Home > Kitchen")
  brand           a maker's or vendor's name
  free_text       text written by people: comments, review titles and bodies, notes, descriptions
  url             a web address
  email           an e-mail address
  phone           a phone number
  person_name     a person's first, last or full name
  address         a street line of a postal address
  city            a city or town
  region          a state, province or region (name or code)
  zip_code        a postal code or a prefix of one
  country         a country code (ISO 3166) or name
  ip_address      an IPv4 or IPv6 address
  boolean_flag    true/false (also 0/1, yes/no)
  enum_status     a code from a small closed set: status, event type, payment type, device class
  geo_coordinate  a latitude or longitude
  unknown         no type is likely enough: the top type's confidence is below MIN_CONFIDENCE

How a field is decided (`decide`):
1. Value evidence (processors/field_values.py `profile_values`), per type 0..1: 0 vetoes the type (a field
   of floats is not an email), 0.2-0.6 means compatible, 1 means the values show it (e-mails, URLs,
   IPs, timestamps, currency/country codes, UUID/hex ids, zip patterns, street lines, category paths).
   E-mails, phones and personal names come from processors.sensitive.classify_value.
2. Name rules (`name_support`): processors.sensitive.hint_from_name, is/has words (is_active,
   customer_is_guest), *_id, *_count / *_qty and *_at / *_date / *_time suffixes.
3. Name semantics: per-type similarity of the name (and name + values) with PROTOTYPES.
score = W_SIM*similarity + W_VALUE*value + W_NAME*name over the types not vetoed; the softmax of
score / TEMPERATURE is the confidence; below MIN_CONFIDENCE the type is "unknown". The weights and
per-value scores were set before the first run on the evaluation fixture (tests/data/field_types.json);
TEMPERATURE was then fitted on it (temperature scaling: it changes the confidence, never the top type).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from stocktake.processors.field_values import NEUTRAL, ValueProfile, is_hex_id, profile_values
from stocktake.processors.field_vocab import ID_TYPES, PROTOTYPES, TYPES
from stocktake.processors.sensitive import hint_from_name, snake_case

__all__ = ["ID_TYPES", "NEUTRAL", "TYPES", "UNKNOWN", "FieldType", "ValueProfile", "decide", "field_text",
           "lexical_similarity", "name_support", "name_text", "probabilities", "profile_values"]

UNKNOWN = "unknown"  # the abstention; TYPES are the scored types
W_SIM, W_VALUE, W_NAME = 1.0, 0.5, 0.2
TEMPERATURE = 0.07  # fitted: the lowest NLL of the fixture labels over a grid 0.03-0.2 (temperature scaling)
MIN_CONFIDENCE = 0.5  # abstain unless the top type is more likely than not
VETO = 0.1  # value support below this rules a type out

_FLAG_PREFIX = frozenset({"is", "has", "can", "should", "was", "accepts", "allow", "allows"})
_ID_SUFFIX = frozenset({"id", "uuid", "guid", "key", "ref", "pk"})
_COUNT_SUFFIX = frozenset({"count", "qty", "quantity", "cnt"})
_TIME_SUFFIX = frozenset({"at", "date", "time", "timestamp", "ts", "datetime"})


class FieldType(NamedTuple):
    semantic_type: str  # one of TYPES or "unknown"
    confidence: float  # softmax probability of the top type, in [0, 1]
    evidence: str  # short human-readable reason
    top: str = UNKNOWN  # the top type even when it was not confident enough


def name_tokens(name: str) -> list[str]:
    return [t for t in snake_case(name).split("_") if t]


def name_text(name: str) -> str:
    """The field name as words: "customerZipCode" / "customer_zip_code" -> "customer zip code"."""
    return " ".join(name_tokens(name)) or name


def field_text(name: str, values: Sequence[Any], *, limit: int = 3, width: int = 32) -> str:
    """What the text model reads for a field: "customer city: sao paulo, curitiba" (the name as
    words, then up to `limit` distinct non-null values cut to `width` characters; UUID/hex ids are
    left out: they mean nothing to the model and cost the most tokens)."""
    seen: list[str] = []
    for v in values:
        text = ("true" if v else "false") if isinstance(v, bool) else "" if v is None else str(v).strip()[:width]
        if text and text not in seen and not is_hex_id(text):
            seen.append(text)
            if len(seen) == limit:
                break
    return f"{name_text(name)}: {', '.join(seen)}" if seen else name_text(name)


def name_support(name: str) -> dict[str, float]:
    """Structural name evidence, per type 0..1: sensitive hints, flag prefixes, id/time suffixes."""
    out: dict[str, float] = {}
    hint = hint_from_name(name)
    if hint in ("email", "phone"):
        out[hint] = 1.0
    elif hint == "name":
        out["person_name"] = 1.0
    tokens = name_tokens(name)
    if _FLAG_PREFIX.intersection(tokens[:-1]):  # is_active, customer_is_guest
        out["boolean_flag"] = 1.0
    if tokens and (tokens[-1] in _COUNT_SUFFIX or tokens[0] in ("num", "n")):  # orders_count, num_items
        out["quantity"] = 1.0
    if tokens and tokens[-1] in _ID_SUFFIX:
        out.update(dict.fromkeys(ID_TYPES, 1.0))
    if tokens and (tokens[-1] in _TIME_SUFFIX or "timestamp" in tokens[-1]):
        out["timestamp"] = 1.0
    return out


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


_PROTO_WORDS = {t: [frozenset(_stem(w) for w in p.split()) for p in phrases] for t, phrases in PROTOTYPES.items()}


def lexical_similarity(name: str) -> dict[str, float]:
    """Without the text model: per type, the best word overlap (cosine of word sets) of the name
    with one of the type's prototype phrases."""
    words = frozenset(_stem(w) for w in name_tokens(name))
    if not words:
        return dict.fromkeys(TYPES, 0.0)
    return {t: max(len(words & p) / math.sqrt(len(words) * len(p)) for p in protos)
            for t, protos in _PROTO_WORDS.items()}


def _softmax(profile: ValueProfile, by_name: Mapping[str, float], sims: Mapping[str, float],
             temperature: float) -> dict[str, float]:
    scores = {t: W_SIM * sims.get(t, 0.0) + W_VALUE * profile.support[t] + W_NAME * by_name.get(t, 0.0)
              for t in TYPES if profile.support[t] >= VETO}
    if not scores:
        return {}
    peak = max(scores.values())
    weights = {t: math.exp((scores[t] - peak) / temperature) for t in scores}
    total = sum(weights.values())
    return {t: weights[t] / total for t in sorted(weights, key=lambda t: (-weights[t], TYPES.index(t)))}


_NO_VALUES = ValueProfile(0, dict.fromkeys(TYPES, NEUTRAL), 0.0, "not used")


def probabilities(name: str, values: Sequence[Any], similarity: Mapping[str, float] | None = None, *,
                  rules: bool = True, temperature: float = TEMPERATURE) -> dict[str, float]:
    """Softmax over the types the values do not rule out, most likely first (empty: all ruled out).
    ``rules=False`` leaves out the value evidence and the name rules (an ablation)."""
    profile, by_name = (profile_values(values), name_support(name)) if rules else (_NO_VALUES, {})
    return _softmax(profile, by_name, similarity or {}, temperature)


def decide(name: str, values: Sequence[Any], similarity: Mapping[str, float] | None = None, *,
           rules: bool = True, min_confidence: float = MIN_CONFIDENCE) -> FieldType:
    """A field's semantic type from its name, sampled values and per-type name similarities
    (`similarity`: cosine from the text model, `lexical_similarity`, or None for none)."""
    sims = similarity or {}
    profile, by_name = (profile_values(values), name_support(name)) if rules else (_NO_VALUES, {})
    probs = _softmax(profile, by_name, sims, TEMPERATURE)
    if not probs:
        return FieldType(UNKNOWN, 0.0, f"values rule out every type ({profile.note})")
    ranked = list(probs)
    top, conf = ranked[0], probs[ranked[0]]
    second = f"; next {ranked[1]} {probs[ranked[1]]:.2f}" if len(ranked) > 1 else ""
    evidence = (f"{top}: values {profile.support[top]:.2f} ({profile.note}), name rule {by_name.get(top, 0.0):.0f}, "
                f"similarity {sims.get(top, 0.0):.2f}{second}")
    return FieldType(top if conf >= min_confidence else UNKNOWN, round(conf, 4), evidence, top)
