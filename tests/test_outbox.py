"""No page is lost: the webhook's outbox against real HTTP receivers on 127.0.0.1.

The outbox's clock is injected, so a minute of receiver downtime passes in a few delivery
rounds: each round jumps the clock to the next page due and POSTs for real (urllib3, sockets).
Every test has its own topic prefix in the session store (make_settings).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stocktake.processors import pages as P
from stocktake.processors.alerts import Alert
from stocktake.processors.gaps import GapMonitor
from stocktake.services import outbox as ob
from stocktake.services.alerting import AlertRunner
from stocktake.services.alerts import list_alerts
from stocktake.services.outbox import Outbox

Answer = tuple[int | None, dict[str, str]]   # status (None: hang up without answering), headers


class Clock:
    """Epoch milliseconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.ms


class Receiver:
    """A webhook receiver: keeps every request; ``answer`` decides the response."""

    def __init__(self, port: int = 0, answer: Callable[[dict[str, Any]], Answer] | None = None):
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answer = answer or (lambda _page: (204, {}))
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status, headers = receiver.answer(json.loads(body))
                if status is None:
                    return  # the connection closes unanswered: the sender cannot know it arrived
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def keys(self) -> Counter[str]:
        """Requests per idempotency key (what a receiver dedupes by)."""
        return Counter(headers["Idempotency-Key"] for headers, _ in self.requests)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Hanging:
    """Accepts connections and reads the request, never answers until closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.arrived = threading.Event()
        self.closed = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)
            conn.recv(65536)
            self.arrived.set()

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        for conn in self.conns:
            conn.close()
        self.sock.close()


def free_port() -> int:
    """A port nothing listens on (yet): POSTs to it are refused, like a receiver that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(alert_id: str, asset: str = "behaviour", **details: Any) -> Alert:
    t = 1_767_225_600_000
    return Alert(alert_id, asset, "silence", "event", "critical", "firing", "wall", t, None,
                 "no events for 120 s", 2.0, 120.0, t, t, details, 1)


async def publish(messages: list[dict[str, Any]]) -> None:
    pass


async def deliver_until(outbox: Outbox, clock: Clock, until_ms: int | None = None, rounds: int = 300) -> int:
    """Delivery rounds, the clock jumping to the next page due before each (nothing waits for
    real); up to ``until_ms`` if given, else until nothing is pending. Returns the rounds run."""
    for n in range(rounds):
        due = outbox.next_due_ms
        if due is None or (until_ms is not None and due > until_ms):
            if until_ms is not None:
                clock.ms = max(clock.ms, until_ms)
            return n
        clock.ms = max(clock.ms, due)
        await outbox.deliver_due()
    raise AssertionError(f"pages still pending after {rounds} rounds")


def stored(store: Any, settings: Any) -> dict[str, P.Page]:
    return {p.key: p for p in (ob.read_page(r) for r in store.rows(
        f"SELECT {ob.PAGE_FIELDS} FROM page_outbox FINAL WHERE topic_prefix = {{p:String}}",
        {"p": settings.topic_dot_prefix}))}


# -- against real receivers ----------------------------------------------------------------

def test_receiver_down_a_minute_then_up_gets_every_page_exactly_once(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = make_settings(alert_webhook=f"http://127.0.0.1:{port}/hook")
    clock = Clock()
    outbox = Outbox(settings, store, clock=clock)
    runner = AlertRunner(settings, store, GapMonitor(), publish, outbox=outbox)
    stream, other = alert("s-1"), alert("o-1", asset="product")
    part = alert("p-1", asset="behaviour/source=web", inhibited_by="s-1")   # part of s-1's incident: no page
    down_from = clock.ms

    async def run() -> tuple[Counter[str], list[tuple[dict[str, str], bytes]]]:
        await runner._emit([stream, other, part])
        clock.ms += 20_000
        await runner._emit([stream.resolved(clock.ms, "resolved: events again", 5.0)])
        rounds = await deliver_until(outbox, clock, until_ms=down_from + 60_000)
        assert {p.state for p in stored(store, settings).values()} == {P.PENDING}
        with Receiver(port) as receiver:
            rounds += await deliver_until(outbox, clock)
        assert rounds < 100   # backoff: a few attempts per page over the minute, not one per round
        return receiver.keys(), receiver.requests

    keys, requests = asyncio.run(run())
    assert keys == {"s-1:1": 1, "o-1:1": 1, "s-1:2": 1}
    for headers, body in requests:
        sent = json.loads(body)
        assert sent["idempotency_key"] == headers["Idempotency-Key"]
        assert headers["Content-Type"] == "application/json" and "X-Stocktake-Signature" not in headers
    assert {json.loads(b)["state"] for _, b in requests} == {"firing", "resolved"}
    pages = stored(store, settings)
    assert {p.state for p in pages.values()} == {P.DELIVERED}
    assert all(p.attempts > 2 and p.last_error == "" and p.delivered_ms for p in pages.values())
    assert ob.summary(store, settings) == {"pending": 0, "delivered": 3, "dead": 0, "dropped": 0}
    listed = {a["alert_id"]: a["page"] for a in list_alerts(store, settings)}
    assert listed["s-1"]["state"] == "delivered" and listed["s-1"]["idempotency_key"] == "s-1:2"
    assert listed["o-1"]["state"] == "delivered" and listed["o-1"]["delivered_at"].endswith("Z")
    assert listed["p-1"] is None


def test_emit_does_not_wait_for_a_receiver_that_never_answers(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    hanging = Hanging()
    settings = make_settings(alert_webhook=hanging.url, alert_webhook_timeout_s=120)
    outbox = Outbox(settings, store)
    runner = AlertRunner(settings, store, GapMonitor(), publish, outbox=outbox)

    async def run() -> None:
        try:
            await runner._emit([alert("a-1")])
            delivering = asyncio.create_task(outbox.deliver_due())
            assert await asyncio.to_thread(hanging.arrived.wait, 60), "the POST never arrived"
            # The receiver holds the POST of a-1: alerting goes on all the same.
            await runner._emit([alert("a-2")])
            assert not delivering.done()
            assert {k: p.state for k, p in stored(store, settings).items()} == {"a-1:1": P.PENDING,
                                                                                "a-2:1": P.PENDING}
        finally:
            hanging.close()   # the held connection closes unanswered
        done = await delivering
        assert [(p.key, p.state, p.attempts) for p in done] == [("a-1:1", P.PENDING, 1)]
        assert done[0].next_attempt_ms > outbox.clock()

    asyncio.run(run())


def test_a_new_outbox_over_the_store_delivers_what_the_old_one_left(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = make_settings(alert_webhook=f"http://127.0.0.1:{port}/hook")
    clock = Clock()

    async def run() -> None:
        before = Outbox(settings, store, clock=clock)
        await asyncio.to_thread(before.enqueue, [{"alert_id": f"r-{i}", "version": 1} for i in range(3)])
        tried = await before.deliver_due()      # refused: the backoff is stored with the page
        assert {p.attempts for p in tried} == {1} and {p.state for p in tried} == {P.PENDING}
        assert all("Connection refused" in p.last_error for p in tried), tried
        # The worker restarts: a new outbox (another runner) over the same store.
        after = Outbox(settings, store, clock=clock)
        with Receiver(port) as receiver:
            assert await after.deliver_due() == []          # not due yet: the backoff survived
            await deliver_until(after, clock)
        assert receiver.keys() == {"r-0:1": 1, "r-1:1": 1, "r-2:1": 1}

    asyncio.run(run())
    assert {(p.state, p.attempts) for p in stored(store, settings).values()} == {(P.DELIVERED, 2)}


def test_a_lost_answer_repeats_the_page_under_the_same_key(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    seen: set[str] = set()

    def answer(page: dict[str, Any]) -> Answer:
        first = page["idempotency_key"] not in seen
        seen.add(page["idempotency_key"])
        return (None, {}) if first else (200, {})   # processed, then the answer is lost once

    with Receiver(answer=answer) as receiver:
        settings = make_settings(alert_webhook=receiver.url)
        outbox = Outbox(settings, store, clock=clock)
        outbox.enqueue([{"alert_id": "l-1", "version": 3}])
        asyncio.run(deliver_until(outbox, clock))
    assert receiver.keys() == {"l-1:3": 2} and seen == {"l-1:3"}   # the receiver drops the repeat by key
    (page,) = stored(store, settings).values()
    assert (page.state, page.attempts) == (P.DELIVERED, 2)


def test_a_full_outbox_drops_the_oldest_pending_and_counts_them(store, make_settings,  # type: ignore[no-untyped-def]
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(alert_webhook=f"http://127.0.0.1:{free_port()}/hook", alert_outbox_max_pending=3)
    clock = Clock()
    outbox = Outbox(settings, store, clock=clock)
    assert outbox.enqueue([{"alert_id": "f-1", "version": 1}, {"alert_id": "f-2", "version": 1}]) == 0
    clock.ms += 1000
    with caplog.at_level(logging.ERROR, "stocktake.outbox"):
        assert outbox.enqueue([{"alert_id": f"f-{i}", "version": 1} for i in (3, 4, 5)]) == 2
    assert outbox.dropped == 2 and "dropped the 2 oldest pending pages" in caplog.text
    states = {k: (p.state, p.last_error) for k, p in stored(store, settings).items()}
    assert {k for k, (s, _) in states.items() if s == P.DROPPED} == {"f-1:1", "f-2:1"}
    assert "outbox full" in states["f-1:1"][1]
    assert ob.summary(store, settings) == {"pending": 3, "delivered": 0, "dead": 0, "dropped": 2}
    # A dropped page stays dropped: enqueuing it again does not bring it back.
    outbox.enqueue([{"alert_id": "f-1", "version": 1}])
    assert stored(store, settings)["f-1:1"].state == P.DROPPED


def test_signature_verifies_with_the_secret(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    with Receiver() as receiver:
        settings = make_settings(alert_webhook=receiver.url, alert_webhook_secret="whsec-test")
        assert "whsec-test" not in str(settings.masked())
        outbox = Outbox(settings, store, clock=clock)
        outbox.enqueue([{"alert_id": "g-1", "version": 1, "state": "firing"}])
        asyncio.run(deliver_until(outbox, clock))
    ((headers, body),) = receiver.requests
    timestamp, signed = headers["X-Stocktake-Timestamp"], headers["X-Stocktake-Signature"]
    assert signed.startswith("sha256=") and len(signed) == 7 + 64
    now_s = clock.ms / 1000
    assert P.verify("whsec-test", timestamp, signed, body, now_s)
    assert not P.verify("another-secret", timestamp, signed, body, now_s)
    assert not P.verify("whsec-test", timestamp, signed, body.replace(b"firing", b"resolved"), now_s)
    assert not P.verify("whsec-test", timestamp, signed, body, now_s + 3600)   # a replay an hour later


def test_refused_pages_are_dead_busy_receivers_are_retried(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    answers: dict[str, Answer] = {"bad": (400, {}), "gone": (404, {}), "busy": (429, {"Retry-After": "30"}),
                                  "down": (503, {})}
    clock = Clock()
    with Receiver(answer=lambda page: answers[page["alert_id"]]) as receiver:
        settings = make_settings(alert_webhook=receiver.url)
        outbox = Outbox(settings, store, clock=clock)
        outbox.enqueue([{"alert_id": name, "version": 1} for name in answers])
        now = clock.ms
        done = {p.alert_id: p for p in asyncio.run(outbox.deliver_due())}
    assert (done["bad"].state, done["bad"].last_error) == (P.DEAD, "HTTP 400")
    assert (done["gone"].state, done["gone"].attempts) == (P.DEAD, 1)
    assert (done["busy"].state, done["down"].state) == (P.PENDING, P.PENDING)
    assert done["busy"].next_attempt_ms >= now + 30_000     # its Retry-After, over the backoff
    assert done["down"].last_error == "HTTP 503"
    assert ob.describe({"state": "pending", "attempts": 1, "last_error": "HTTP 503"}) == \
        "pending (1 attempt: HTTP 503)"
    assert ob.describe({"state": "dead", "attempts": 1, "last_error": "HTTP 400"}) == "dead: HTTP 400"


def test_pages_give_up_after_max_attempts_or_max_age(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    down = f"http://127.0.0.1:{free_port()}/hook"
    clock = Clock()
    settings = make_settings(alert_webhook=down, alert_page_max_attempts=3)
    outbox = Outbox(settings, store, clock=clock)
    outbox.enqueue([{"alert_id": "m-1", "version": 1}])
    asyncio.run(deliver_until(outbox, clock))
    (page,) = stored(store, settings).values()
    assert (page.state, page.attempts) == (P.DEAD, 3) and page.last_error.startswith("gave up after 3 attempts")

    settings = make_settings(alert_webhook=down, alert_page_max_age_s=10)
    outbox = Outbox(settings, store, clock=clock)
    outbox.enqueue([{"alert_id": "m-2", "version": 1}])
    asyncio.run(deliver_until(outbox, clock))
    (page,) = stored(store, settings).values()
    assert page.state == P.DEAD and "older than 10 s" in page.last_error


def test_alerts_command_shows_each_page_and_the_outbox(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from stocktake import cli
    from stocktake.cli import worker_or_store
    row = {"state": "firing", "severity": "critical", "asset": "behaviour", "kind": "silence", "subject": "event",
           "opened_at": "t", "resolved_at": None, "reason": "quiet", "details": {},
           "page": {"state": "pending", "attempts": 2, "last_error": "HTTP 503"}}
    result = {"alerts": [row], "outbox": {"pending": 1, "delivered": 7, "dead": 0, "dropped": 0}}
    monkeypatch.setattr(worker_or_store, "from_worker_or_store", lambda *_a: dict(result))
    monkeypatch.setenv("COLUMNS", "250")
    assert cli.main(["alerts"]) == 0
    out = capsys.readouterr().out
    assert "pending (2 attempts: HTTP 503)" in out
    assert "pages: 1 pending, 7 delivered, 0 dead, 0 dropped" in out
    assert cli.main(["alerts", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["alerts"][0]["page"]["state"] == "pending" and listed["outbox"]["delivered"] == 7


# -- the decisions, offline ----------------------------------------------------------------

POLICY = P.Policy(max_attempts=5, max_age_ms=3_600_000, backoff_ms=1000, backoff_max_ms=60_000)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for attempts, ceiling in [(1, 1000), (2, 2000), (3, 4000), (7, 60_000), (60, 60_000)]:
        assert P.backoff_ms(attempts, POLICY, 0.0) == ceiling // 2
        assert P.backoff_ms(attempts, POLICY, 0.999) < ceiling
        assert P.backoff_ms(attempts, POLICY, 0.999) >= ceiling * 0.99


@pytest.mark.parametrize(("status", "result"), [
    (200, "delivered"), (204, "delivered"), (None, "retry"), (500, "retry"), (503, "retry"), (429, "retry"),
    (408, "retry"), (400, "dead"), (401, "dead"), (404, "dead"), (410, "dead"), (301, "dead")])
def test_outcome_of_an_answer(status: int | None, result: str) -> None:
    assert P.outcome(status) == result


def test_a_final_state_outranks_any_later_retry() -> None:
    page = P.new_page({"alert_id": "v", "version": 2}, 0)
    retried = P.after_attempt(page, 503, "HTTP 503", 10, POLICY, 0.5)
    retried_again = P.after_attempt(retried, None, "refused", 20, POLICY, 0.5)
    assert retried.version < retried_again.version
    final = [P.dropped(page, "full"), P.after_attempt(page, 400, "HTTP 400", 10, POLICY, 0.5),
             P.after_attempt(retried, 200, "", 20, POLICY, 0.5)]
    assert [p.state for p in final] == [P.DROPPED, P.DEAD, P.DELIVERED]
    assert final[0].version < final[1].version < final[2].version
    assert all(p.version > retried_again.version for p in final)
    assert json.loads(page.payload) == {"alert_id": "v", "version": 2, "idempotency_key": "v:2"}
