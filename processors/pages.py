"""Pages: the webhook's copy of an alert transition, and what a delivery attempt makes of one.

Pure: the outbox (services/outbox.py) stores pages and POSTs them; the decisions live here
as functions of (page, outcome, now): the idempotency key, the signature, the backoff and
the state after an attempt. Times are epoch milliseconds.

Signature (when a secret is set), as Stripe and GitHub do it: the receiver recomputes
``sha256=`` + hex HMAC-SHA256(secret, ``X-Stocktake-Timestamp`` + ``"."`` + raw body),
compares it in constant time with ``X-Stocktake-Signature``, and refuses timestamps far
from its clock (a replayed request). ``verify`` is that check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Literal

PENDING, DELIVERED, DEAD, DROPPED = "pending", "delivered", "dead", "dropped"
STATES = (PENDING, DELIVERED, DEAD, DROPPED)
# A final state is never undone and delivered beats the others (the receiver has it): the
# store keeps the row with the highest rank, then the most attempts.
_RANK = {PENDING: 0, DROPPED: 1, DEAD: 2, DELIVERED: 3}
# Worth another try: the receiver is busy, restarting or rate limiting. Any other 4xx (and a
# redirect) is a request it will refuse again.
RETRY_STATUSES = frozenset({408, 425, 429})

Outcome = Literal["delivered", "retry", "dead"]


@dataclasses.dataclass(frozen=True)
class Page:
    key: str                 # idempotency key: alert_id:version, one per transition
    alert_id: str
    payload: str             # the JSON body
    state: str = PENDING
    attempts: int = 0
    next_attempt_ms: int = 0
    last_error: str = ""
    created_ms: int = 0
    delivered_ms: int | None = None

    @property
    def version(self) -> int:
        return _RANK[self.state] << 32 | min(self.attempts, 2**32 - 1)


@dataclasses.dataclass(frozen=True)
class Policy:
    max_attempts: int
    max_age_ms: int
    backoff_ms: int          # before the first retry; doubles with every failed attempt...
    backoff_max_ms: int      # ...up to this


def page_key(alert_id: str, version: int) -> str:
    return f"{alert_id}:{version}"


def new_page(message: Mapping[str, Any], now_ms: int) -> Page:
    """A transition's message (the alerts topic's JSON) as a page: the key goes in the body too."""
    key = page_key(message["alert_id"], message["version"])
    return Page(key, message["alert_id"], json.dumps({**message, "idempotency_key": key}),
                next_attempt_ms=now_ms, created_ms=now_ms)


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp_s).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, signed: str, body: bytes, now_s: float, tolerance_s: float = 300) -> bool:
    """What a receiver checks: the signature over this body and timestamp, and a fresh timestamp."""
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), signed)


def outcome(status: int | None) -> Outcome:
    """None: no answer (refused, reset, timed out), worth another try like a 5xx."""
    if status is None or status >= 500 or status in RETRY_STATUSES:
        return "retry"
    return "delivered" if 200 <= status < 300 else "dead"


def backoff_ms(attempts: int, policy: Policy, rand: float) -> int:
    """The wait after ``attempts`` failed attempts: doubling, capped, with equal jitter (half
    fixed, half random in [0, 1)) so pages that failed together do not retry together."""
    ceiling = min(policy.backoff_max_ms, policy.backoff_ms * 2 ** min(attempts - 1, 40))
    return int(ceiling / 2 + ceiling / 2 * rand)


def after_attempt(page: Page, status: int | None, error: str, now_ms: int, policy: Policy, rand: float,
                  retry_after_ms: int | None = None) -> Page:
    """The page after one POST: delivered, dead, or pending with its next attempt scheduled
    (never sooner than the receiver's Retry-After, within the backoff cap)."""
    attempts = page.attempts + 1
    result = outcome(status)
    if result == "delivered":
        return dataclasses.replace(page, state=DELIVERED, attempts=attempts, delivered_ms=now_ms, last_error="")
    if result == "dead":
        return dataclasses.replace(page, state=DEAD, attempts=attempts, last_error=error)
    if attempts >= policy.max_attempts:
        return dataclasses.replace(page, state=DEAD, attempts=attempts,
                                   last_error=f"gave up after {attempts} attempts: {error}")
    wait = backoff_ms(attempts, policy, rand)
    if retry_after_ms is not None:
        wait = max(wait, min(retry_after_ms, policy.backoff_max_ms))
    return dataclasses.replace(page, attempts=attempts, next_attempt_ms=now_ms + wait, last_error=error)


def expired(page: Page, now_ms: int, policy: Policy) -> Page | None:
    """The page given up (dead) if it is older than the policy allows, else None."""
    if now_ms - page.created_ms <= policy.max_age_ms:
        return None
    why = f"gave up: older than {policy.max_age_ms // 1000} s"
    return dataclasses.replace(page, state=DEAD, last_error=f"{why} ({page.last_error})" if page.last_error else why)


def dropped(page: Page, reason: str) -> Page:
    return dataclasses.replace(page, state=DROPPED, last_error=reason)
