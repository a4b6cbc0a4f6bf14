"""The webhook's outbox: pages are stored first and POSTed by a deliverer of their own.

The alerting step only writes pages (``Outbox.enqueue``); the worker's delivery timer calls
``Outbox.deliver_due``, which POSTs the due pending pages, a few at a time in threads, each
with ``STOCKTAKE_ALERT_WEBHOOK_TIMEOUT``, and stores what became of them (processors/pages.py
decides). Every state change is a row of ``page_outbox`` (migration 009), so the backoff and
the pending pages survive a restart: the next owner of alerting delivers them.

Bounded: at most ``STOCKTAKE_ALERT_OUTBOX_MAX_PENDING`` pending pages; beyond it the oldest
are dropped (state ``dropped``, counted and logged). A receiver sees a page more than once
only when an answer was lost; the ``Idempotency-Key`` header (and ``idempotency_key`` in the
body) lets it drop the repeat.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import urllib3

from stocktake.clickhouse.store import Store
from stocktake.clickhouse.values import iso_ms
from stocktake.processors import pages as P
from stocktake.processors.pages import Page
from stocktake.settings import Settings, mask_url

log = logging.getLogger("stocktake.outbox")

POLL_S = 0.5             # the delivery timer; it reads the store only when a page is due
CONCURRENCY = 4          # POSTs in flight at once: a receiver that hangs holds at most this many threads
BATCH = 50               # due pages one delivery round takes (a round lasts a timeout per CONCURRENCY pages)
BACKOFF_S = 1.0          # the first retry's wait, doubling per failed attempt...
BACKOFF_MAX_S = 300.0    # ...up to 5 minutes
RELOOK_MS = 60_000       # look at the table at least this often, whatever this process expects to be due
NEVER = 2**62

_COLUMNS = ["topic_prefix", "idempotency_key", "alert_id", "payload", "state", "attempts", "next_attempt_at",
            "last_error", "created_at", "delivered_at", "updated_at", "version"]
PAGE_FIELDS = """idempotency_key, alert_id, payload, toString(state), attempts,
toUnixTimestamp64Milli(next_attempt_at), last_error, toUnixTimestamp64Milli(created_at),
toUnixTimestamp64Milli(delivered_at)"""
_OURS = "topic_prefix = {prefix:String}"

DUE_SQL = f"""
SELECT {PAGE_FIELDS} FROM page_outbox FINAL
WHERE {_OURS} AND state = 'pending' AND next_attempt_at <= {{now:DateTime64(3, 'UTC')}}
ORDER BY next_attempt_at, created_at LIMIT {{limit:UInt32}}
"""
OLDEST_PENDING_SQL = f"""
SELECT {PAGE_FIELDS} FROM page_outbox FINAL
WHERE {_OURS} AND state = 'pending' ORDER BY created_at, idempotency_key LIMIT {{limit:UInt32}}
"""
PENDING_SQL = f"""
SELECT count(), toUnixTimestamp64Milli(min(next_attempt_at)) FROM page_outbox FINAL
WHERE {_OURS} AND state = 'pending'
"""
SUMMARY_SQL = f"SELECT toString(state), count() FROM page_outbox FINAL WHERE {_OURS} GROUP BY state"
ALERT_PAGES_SQL = f"""
SELECT {PAGE_FIELDS} FROM page_outbox FINAL
WHERE {_OURS} AND idempotency_key IN {{keys:Array(String)}}
"""


def wall_ms() -> int:
    return int(time.time() * 1000)


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def read_page(row: tuple[Any, ...]) -> Page:
    key, alert_id, payload, state, attempts, next_ms, error, created_ms, delivered_ms = row
    return Page(key, alert_id, payload, state, int(attempts), int(next_ms), error, int(created_ms),
                None if delivered_ms is None else int(delivered_ms))


def _reason(exc: Exception, timeout_s: float) -> str:
    """One short line: urllib3 wraps the socket error in the connection's repr (and a refused
    connection is a subclass of its connect timeout: the errno first)."""
    errno = re.search(r"\[Errno -?\d+\] [^\"')]+", str(exc))
    if errno:
        return errno.group(0)
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _retry_after_ms(value: str | None) -> int | None:
    """Retry-After in seconds (the HTTP-date form is rare for webhooks: the backoff applies)."""
    return int(value) * 1000 if value and value.strip().isdigit() else None


class Outbox:
    """One deployment's pages in the store. ``clock`` and the backoff are injectable so a test
    can pass a minute of receiver downtime without waiting it out."""

    def __init__(self, settings: Settings, store: Store, *, clock: Callable[[], int] = wall_ms,
                 rand: Callable[[], float] = random.random, backoff_s: float = BACKOFF_S,
                 backoff_max_s: float = BACKOFF_MAX_S):
        self.settings = settings
        self.store = store
        self.prefix = settings.topic_dot_prefix
        self.clock = clock
        self.rand = rand
        self.policy = P.Policy(max_attempts=settings.alert_page_max_attempts,
                               max_age_ms=int(settings.alert_page_max_age_s * 1000),
                               backoff_ms=max(1, int(backoff_s * 1000)), backoff_max_ms=int(backoff_max_s * 1000))
        self.timeout_s = settings.alert_webhook_timeout_s
        self._http = urllib3.PoolManager(maxsize=CONCURRENCY, retries=False,
                                         timeout=urllib3.Timeout(total=self.timeout_s))
        self._round = asyncio.Lock()         # one delivery round at a time (the timer, the last one at stop)
        # When the next pending page is due, as far as this process knows: the timer skips the
        # store until then. 0: unknown, look.
        self._due = threading.Lock()
        self._next_due_ms = 0
        self._looked_ms = 0
        self.dropped = 0                     # pages this process dropped because the outbox was full

    # -- the alerting step's side: store and return ---------------------------------------

    def enqueue(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Store the transitions' pages as pending (a page already stored keeps its state: its
        rows outrank a new pending one). Returns how many pending pages were dropped to make room."""
        now = self.clock()
        pages = [P.new_page(m, now) for m in messages]
        if not pages:
            return 0
        self._write(pages)
        with self._due:
            self._next_due_ms = min(self._next_due_ms, now)
        return self._bound()

    def _bound(self) -> int:
        (pending, _), = self._q(PENDING_SQL)
        excess = int(pending) - self.settings.alert_outbox_max_pending
        if excess <= 0:
            return 0
        oldest = [read_page(r) for r in self._q(OLDEST_PENDING_SQL, limit=excess)]
        reason = f"outbox full: over {self.settings.alert_outbox_max_pending} pending pages"
        self._write([P.dropped(p, reason) for p in oldest])
        self.dropped += len(oldest)
        log.error("page outbox full (max %d pending): dropped the %d oldest pending pages, %d since start",
                  self.settings.alert_outbox_max_pending, len(oldest), self.dropped)
        return len(oldest)

    # -- the deliverer ---------------------------------------------------------------------

    @property
    def next_due_ms(self) -> int | None:
        """When this process expects the next pending page to be due (None: none pending)."""
        return None if self._next_due_ms >= NEVER else self._next_due_ms

    async def deliver_due(self, limit: int = BATCH) -> list[Page]:
        """One round: POST up to ``limit`` due pages, CONCURRENCY at a time; returns them as
        stored after the attempt (delivered, dead, or pending with the next attempt set)."""
        if not self.settings.alert_webhook:
            return []
        now = self.clock()
        if now < self._next_due_ms and now - self._looked_ms < RELOOK_MS:
            return []
        async with self._round:
            with self._due:
                self._next_due_ms = NEVER   # an enqueue during the round lowers it again
            try:
                due = [read_page(r) for r in await asyncio.to_thread(self._q, DUE_SQL, now=_dt(now), limit=limit)]
                slots = asyncio.Semaphore(CONCURRENCY)
                done = list(await asyncio.gather(*(self._attempt(p, now, slots) for p in due)))
                await asyncio.to_thread(self._write, done)
                (pending, first), = await asyncio.to_thread(self._q, PENDING_SQL)
            except BaseException:
                with self._due:
                    self._next_due_ms = 0
                raise
            with self._due:
                self._looked_ms = now
                self._next_due_ms = min(self._next_due_ms, int(first) if int(pending) else NEVER)
        self._log(done)
        return done

    async def _attempt(self, page: Page, now_ms: int, slots: asyncio.Semaphore) -> Page:
        gone = P.expired(page, now_ms, self.policy)
        if gone is not None:
            return gone
        async with slots:
            status, error, retry_after = await asyncio.to_thread(self._post, page)
        return P.after_attempt(page, status, error, self.clock(), self.policy, self.rand(), retry_after)

    def _post(self, page: Page) -> tuple[int | None, str, int | None]:
        """(status or None for no answer, the error, Retry-After ms): never raises."""
        body = page.payload.encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": page.key}
        secret = self.settings.alert_webhook_secret.get_secret_value()
        if secret:
            timestamp = self.clock() // 1000
            headers["X-Stocktake-Timestamp"] = str(timestamp)
            headers["X-Stocktake-Signature"] = P.signature(secret, timestamp, body)
        try:
            response = self._http.request("POST", self.settings.alert_webhook, body=body, headers=headers,
                                          redirect=False)
        except Exception as exc:  # refused, reset, timed out, a bad URL: this page's attempt failed, no more
            return None, _reason(exc, self.timeout_s), None
        text = response.data[:120].decode(errors="replace").strip()
        error = f"HTTP {response.status}" + (f": {text}" if text and response.status >= 300 else "")
        return response.status, error, _retry_after_ms(response.headers.get("Retry-After"))

    def _log(self, done: list[Page]) -> None:
        states = Counter(p.state for p in done)
        url = mask_url(self.settings.alert_webhook)
        for p in done:
            if p.state == P.DEAD:
                log.error("page %s to %s is dead: %s", p.key, url, p.last_error)
        if states[P.PENDING]:
            last = next(p for p in reversed(done) if p.state == P.PENDING)
            log.warning("alert webhook %s: %d pages not delivered (%s); next attempt in %.0f s",
                        url, states[P.PENDING], last.last_error, max(0, last.next_attempt_ms - self.clock()) / 1000)
        if states[P.DELIVERED]:
            log.info("alert webhook %s: %d pages delivered", url, states[P.DELIVERED])

    # -- the store -------------------------------------------------------------------------

    def _q(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.store.rows(sql, {"prefix": self.prefix, **params})

    def _write(self, pages: list[Page]) -> None:
        if not pages:
            return
        now = _dt(self.clock())
        self.store.insert_rows("page_outbox", [
            [self.prefix, p.key, p.alert_id, p.payload, p.state, p.attempts, _dt(p.next_attempt_ms), p.last_error,
             _dt(p.created_ms), None if p.delivered_ms is None else _dt(p.delivered_ms), now, p.version]
            for p in pages], _COLUMNS)


# -- reading back (`stocktake alerts`, the worker API) ---------------------------------------

def summary(store: Store, settings: Settings) -> dict[str, int]:
    """Pages per state: pending, delivered, dead, dropped."""
    return summary_of(store.rows(SUMMARY_SQL, {"prefix": settings.topic_dot_prefix}))


def summary_of(rows: Iterable[Iterable[Any]]) -> dict[str, int]:
    """SUMMARY_SQL's (state, count) rows as a count for every state."""
    counts = dict.fromkeys(P.STATES, 0)
    counts.update({str(state): int(n) for state, n in rows})
    return counts


def summary_sql(settings: Settings) -> str:
    """SUMMARY_SQL with the prefix written in, for the worker's plain SQL endpoint."""
    quoted = settings.topic_dot_prefix.replace("\\", "\\\\").replace("'", "\\'")
    return SUMMARY_SQL.replace("{prefix:String}", f"'{quoted}'")


def alert_pages(store: Store, settings: Settings, alerts: Iterable[tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """The page of each (alert_id, version) that has one, by alert_id: its delivery state."""
    keys = [P.page_key(alert_id, version) for alert_id, version in alerts]
    if not keys:
        return {}
    out = {}
    for row in store.rows(ALERT_PAGES_SQL, {"prefix": settings.topic_dot_prefix, "keys": keys}):
        p = read_page(row)
        out[p.alert_id] = {
            "state": p.state, "attempts": p.attempts, "last_error": p.last_error, "idempotency_key": p.key,
            "next_attempt_at": iso_ms(p.next_attempt_ms) if p.state == P.PENDING else None,
            "delivered_at": None if p.delivered_ms is None else iso_ms(p.delivered_ms),
        }
    return out


def describe(page: Mapping[str, Any] | None) -> str:
    """A page's delivery state in a few words, for a table cell."""
    if not page:
        return ""
    state = page["state"]
    if state == P.PENDING:
        tried = f"{page['attempts']} attempt{'s' if page['attempts'] != 1 else ''}"
        return f"pending ({tried}: {page['last_error']})" if page["attempts"] else "pending"
    if state == P.DEAD:
        return f"dead: {page['last_error']}"
    return str(state)
