"""Replay real e-commerce data into Kafka as contract v1 events.

    events = sources.load_events("rees46")               # or "olist", or a contract file
    topics = stream_topics(settings)                     # {"behaviour": "<prefix>.behaviour", ...}
    msgs = to_messages(events, topics=topics, envelope=100, faults=parse_faults("duplicates=0.03"))
    produce("127.0.0.1:9092", msgs, speed=60.0)          # 60x event time
    play("127.0.0.1:9092", events, topics=topics, speed=60.0)  # as live: what `stocktake up` does

Source mappings and `load_events` live in `stocktake.sources`; this module turns events into
Kafka messages (single events or batch envelopes, with optional injected faults)
and produces them. Topic names come from the settings (``stream_topics``: STOCKTAKE_TOPIC_PREFIX
+ "." + stream); ``TOPICS`` are those of the default settings, what a caller that passes no
``topics`` gets.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from stocktake.broker import KAFKA_LOG
from stocktake.processors.contract_spec import ContractBook
from stocktake.settings import Settings
from stocktake.sources import KEY_FIELD, STREAMS, ReplayEvent, ts_seconds

__all__ = [
    "FAULTS",
    "TOPICS",
    "Message",
    "parse_faults",
    "play",
    "produce",
    "rebase_live",
    "stream_topics",
    "to_messages",
]


class StreamTopics(dict[str, str]):
    """stream -> the topic it is replayed into: the shipped streams' listed, any other stream
    a file names is ``settings.topic(stream)`` too (the worker discovers it)."""

    def __init__(self, settings: Settings):
        super().__init__({stream: settings.topic(stream) for stream in STREAMS})
        self._settings = settings

    def __missing__(self, stream: str) -> str:
        return self._settings.topic(stream)   # not kept: TOPICS is shared by every caller

    def __contains__(self, stream: object) -> bool:
        return isinstance(stream, str)


def stream_topics(settings: Settings) -> dict[str, str]:
    """stream -> the topic it is replayed into in this deployment (``settings.topic``)."""
    return StreamTopics(settings)


def key_by_contract(events: list[ReplayEvent], settings: Settings) -> list[ReplayEvent]:
    """Key the events of streams outside the shipped ones by their contract's ``key`` (the
    shipped sources key their own); a stream without a contract stays unkeyed."""
    book = ContractBook(settings.contracts_dir)
    out = []
    for ev in events:
        if ev.key is None and ev.stream not in KEY_FIELD:
            field = book.get(ev.stream).key
            value = ev.event.get(field) if field else None
            ev = ev._replace(key=None if value is None else str(value))
        out.append(ev)
    return out


TOPICS = stream_topics(Settings())  # the default settings' topics: stocktake.behaviour, ...
FAULTS = ("duplicates", "malformed")
MAX_SLEEP_S = 5.0  # longest single pause when replaying at event-time speed
LIVE_WINDOW_S = 10.0  # seconds of a live replay over which its busiest stretch is found
PROGRESS_EVERY = 1000


class Message(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    events: int  # valid events inside (0 for a malformed message)
    kind: str  # "event" | "envelope" | "duplicate" | "malformed"


# ------------------------------------------------------------------ live time


def _shifted(events: list[ReplayEvent], times: list[float | None],
             shift: Callable[[float], float]) -> list[ReplayEvent]:
    """``events`` with each known time t replaced by shift(t): millisecond ISO-8601 UTC."""
    out = []
    for event, t in zip(events, times, strict=True):
        if t is None:
            out.append(event)
            continue
        stamp = datetime.fromtimestamp(shift(t), UTC).isoformat(timespec="milliseconds")
        out.append(event._replace(event={**event.event, "ts": stamp.replace("+00:00", "Z")}))
    return out


def rebase_time(events: list[ReplayEvent], now_s: float, speed: float | None) -> list[ReplayEvent]:
    """Shift event times so a replay looks live: with ``speed`` N the first event is at
    ``now_s`` and event-time gaps shrink N-fold, so events paced at N× arrive when they
    say they happened; with ``speed`` None (as fast as possible) the last event is at
    ``now_s``, a history that just happened. Millisecond ISO-8601 UTC timestamps."""
    times = [ts_seconds(e.event.get("ts")) for e in events]
    known = [t for t in times if t is not None]
    if not known:
        return list(events)
    first, last = min(known), max(known)
    if speed:
        return _shifted(events, times, lambda t: now_s + (t - first) / speed)
    return _shifted(events, times, lambda t: now_s - (last - t))


def live_start(times: list[float], speed: float) -> float:
    """The event time a live replay at ``speed`` starts from: the first moment from which the
    next LIVE_WINDOW_S of replay hold at least half as many events as its busiest such
    stretch. A sample's quiet lead-in (REES46's first two hours) would otherwise fill the
    first minutes of a demo with next to nothing."""
    ordered = sorted(times)
    window = LIVE_WINDOW_S * speed  # in event seconds
    ahead, end = [], 0
    for t in ordered:  # ahead[i]: events in [ordered[i], ordered[i] + window)
        while end < len(ordered) and ordered[end] < t + window:
            end += 1
        ahead.append(end)
    counts = [end - i for i, end in enumerate(ahead)]
    busiest = max(counts)
    return next(t for t, n in zip(ordered, counts, strict=True) if 2 * n >= busiest)


def rebase_live(events: list[ReplayEvent], now_s: float, speed: float | None) -> list[ReplayEvent]:
    """Event times for a live replay: like ``rebase_time``, but with ``speed`` N it is
    ``live_start`` that lands on ``now_s``; the quiet lead-in before it lands in the last
    minutes before ``now_s`` (same N-fold compression), a backfill that ``play`` sends at
    once. Data that is busy from its first event is rebased exactly as ``rebase_time`` does."""
    if not speed:
        return rebase_time(events, now_s, None)
    times = [ts_seconds(e.event.get("ts")) for e in events]
    known = [t for t in times if t is not None]
    if not known:
        return list(events)
    start = live_start(known, speed)
    return _shifted(events, times, lambda t: now_s + (t - start) / speed)


# -------------------------------------------------------------------- faults


def parse_faults(spec: str) -> dict[str, float]:
    """"duplicates=0.03,malformed=0.01" -> {"duplicates": 0.03, "malformed": 0.01}."""
    faults: dict[str, float] = {}
    if not spec.strip():
        return faults
    allowed = ", ".join(FAULTS)
    for part in spec.split(","):
        name, sep, text = (s.strip() for s in part.partition("="))
        if not sep or not name:
            raise ValueError(f"bad fault {part.strip()!r}: expected NAME=PROBABILITY, "
                             f"e.g. duplicates=0.03 (NAME one of {allowed})")
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} in {part.strip()!r}: allowed are {allowed}")
        if name in faults:
            raise ValueError(f"fault {name!r} given twice in {spec!r}")
        try:
            p = float(text)
        except ValueError:
            raise ValueError(f"bad probability {text!r} for {name}: expected a number "
                             "between 0 and 1") from None
        if not 0.0 <= p <= 1.0:  # also rejects nan
            raise ValueError(f"probability for {name} must be between 0 and 1, got {text}")
        faults[name] = p
    return faults


def _check_faults(faults: dict[str, float] | None) -> dict[str, float]:
    faults = dict(faults or {})
    for name, p in faults.items():
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}: allowed are {', '.join(FAULTS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability for {name} must be between 0 and 1, got {p}")
    return faults


# Malformed variants, cycled in this order. Each is one item that contract v1 rejects; a stream
# of another contract (or none) gets the ones every contract rejects.
MALFORMED_VARIANTS = ("truncated_json", "not_an_object", "missing_key", "bad_ts", "invalid_utf8")
UNREADABLE_VARIANTS = ("truncated_json", "not_an_object", "invalid_utf8")


def _malformed(n: int, topic: str, stream: str, template: dict[str, Any], key: bytes | None) -> Message:
    variants = MALFORMED_VARIANTS if stream in KEY_FIELD else UNREADABLE_VARIANTS
    variant = variants[n % len(variants)]
    event_id = f"malformed-{n}"  # unique within a replay, so dedupe never hides one
    if variant == "truncated_json":
        value = b'{"event_id": "' + event_id.encode()  # cut inside a string
    elif variant == "not_an_object":
        value = b'"just a string"'  # not an array: arrays are envelopes
    elif variant == "missing_key":
        # A real-looking event without the stream's required key field.
        bad = {k: v for k, v in template.items() if k != KEY_FIELD[stream]}
        value = orjson.dumps({**bad, "event_id": event_id})
    elif variant == "bad_ts":
        value = orjson.dumps({**template, "event_id": event_id, "ts": "not-a-time"})
    else:
        value = b"\xff\xfe"
    return Message(topic, key, value, 0, "malformed")


# ------------------------------------------------------------------ messages


def _batches(events: Iterable[ReplayEvent], size: int) -> Iterator[list[ReplayEvent]]:
    """Groups of up to `size` consecutive events of one stream.

    One buffer per stream, as a collector batches per topic: interleaved streams
    still fill whole envelopes. A batch leaves when full; the rest at the end,
    oldest first."""
    if size == 1:
        for ev in events:
            yield [ev]
        return
    buffers: dict[str, list[ReplayEvent]] = {}
    for ev in events:
        buf = buffers.setdefault(ev.stream, [])
        buf.append(ev)
        if len(buf) >= size:
            yield buffers.pop(ev.stream)
    yield from buffers.values()  # dict order = order the open buffers were started


def to_messages(
    events: Iterable[ReplayEvent],
    *,
    topics: Mapping[str, str] | None = None,
    envelope: int = 1,
    faults: dict[str, float] | None = None,
    seed: int = 0,
) -> Iterator[Message]:
    """Kafka messages for `events`: one event per message (envelope=1) or JSON arrays of
    up to `envelope` events of one stream, plus injected faults drawn from Random(seed).
    ``topics``: stream -> topic, ``stream_topics(settings)`` (default: ``TOPICS``)."""
    if isinstance(envelope, bool) or not isinstance(envelope, int) or envelope < 1:
        raise ValueError(f"envelope must be an integer >= 1, got {envelope!r}")
    topics = TOPICS if topics is None else topics
    checked = _check_faults(faults)
    p_dup, p_bad = checked.get("duplicates", 0.0), checked.get("malformed", 0.0)
    rng = random.Random(seed)
    n_bad = 0
    for batch in _batches(events, envelope):
        stream = batch[0].stream
        if stream not in topics:
            raise ValueError(f"unknown stream {stream!r} (expected one of {', '.join(topics)})")
        # Keyed by the first event that has a key: an envelope must not go unkeyed.
        key = next((ev.key for ev in batch if ev.key is not None), None)
        key_bytes = None if key is None else key.encode()
        if envelope == 1:
            msg = Message(topics[stream], key_bytes, orjson.dumps(batch[0].event), 1, "event")
        else:
            value = orjson.dumps([ev.event for ev in batch])
            msg = Message(topics[stream], key_bytes, value, len(batch), "envelope")
        yield msg
        # Both draws every time: each fault's pattern is independent of the other's rate.
        dup_draw, bad_draw = rng.random(), rng.random()
        if dup_draw < p_dup:
            yield msg._replace(kind="duplicate")  # same key, same bytes: a producer retry
        if bad_draw < p_bad:
            yield _malformed(n_bad, topics[stream], stream, batch[-1].event, key_bytes)
            n_bad += 1


# ------------------------------------------------------------------- produce


def message_time(msg: Message) -> float | None:
    """Event time (epoch s) a message stands for: its event's ts, or an envelope's last
    (a collector sends when the batch is full). None for malformed messages."""
    if msg.kind == "malformed":
        return None
    try:
        obj = orjson.loads(msg.value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, list):
        obj = obj[-1] if obj else None
    return ts_seconds(obj.get("ts")) if isinstance(obj, dict) else None


class Pacer:
    """Sleeps so that messages go out at `speed` x event time, at most MAX_SLEEP_S at once.

    Paces against a schedule anchored at the first message (not per-gap sleeps), so
    time spent producing is not added on top; a capped gap shifts the schedule."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = time.sleep, max_sleep: float | None = MAX_SLEEP_S,
                 start: float | None = None) -> None:
        """``max_sleep`` None: never skip ahead (a live replay must keep to its event times).
        ``start``: the event time due at the first message (default: that message's own);
        a live replay passes its now, so the backfill before it goes out at once."""
        self.speed, self.clock, self.sleep, self.max_sleep = speed, clock, sleep, max_sleep
        self.start = start
        self._anchor: tuple[float, float] | None = None  # (wall, event time)

    def wait_for(self, event_time: float | None) -> float:
        """Wait until `event_time` is due; returns the seconds waited (for tests)."""
        if event_time is None:
            return 0.0
        now = self.clock()
        if self._anchor is None:
            self._anchor = (now, event_time if self.start is None else self.start)
        wall0, t0 = self._anchor
        due = wall0 + (event_time - t0) / self.speed
        if self.max_sleep is not None and due - now > self.max_sleep:
            shift = due - now - self.max_sleep
            self._anchor = (wall0 - shift, t0)
            due -= shift
        if due <= now:
            return 0.0
        # The sleep may return early (producer.poll returns once it served a callback):
        # keep waiting until the message is due, or it goes out before its time.
        while (remaining := due - self.clock()) > 0:
            self.sleep(remaining)
        return due - now


def produce(
    bootstrap: str,
    messages: Iterable[Message],
    *,
    speed: float | None = None,
    progress: Callable[[int], None] | None = None,
    max_sleep: float | None = MAX_SLEEP_S,
    start_s: float | None = None,
) -> dict[str, int]:
    """Produce `messages` (idempotent producer); speed=None: as fast as possible, speed=N:
    N x event time (a quiet gap is cut to ``max_sleep`` seconds; None keeps every gap, as
    a live replay must; ``start_s``: the event time due at once, see Pacer). Raises
    RuntimeError on any delivery error. Returns message counts."""
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise ValueError("bootstrap must be a host:port[,host:port...] string")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, int | float)
                              or not math.isfinite(speed) or speed <= 0):
        raise ValueError(f"speed must be a positive number (x event time) or None, got {speed!r}")

    from confluent_kafka import Producer  # here, so loading/mapping works without librdkafka

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "logger": KAFKA_LOG,
        "linger.ms": 5,
        "enable.idempotence": True,  # retries must not add duplicates we did not inject
        "acks": "all",
        "message.timeout.ms": 30_000,  # a dead broker fails the replay, not hangs it
    })
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    def check() -> None:
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise RuntimeError(f"delivery to {bootstrap} failed: {errors[0]}{more}")

    # While pacing, wait inside poll() so delivery reports keep being served.
    pacer = Pacer(speed, sleep=producer.poll, max_sleep=max_sleep, start=start_s) if speed is not None else None
    counts = {"messages": 0, "events": 0, "duplicates": 0, "malformed": 0}
    for msg in messages:
        if pacer is not None and msg.kind != "duplicate":
            pacer.wait_for(message_time(msg))
        while True:
            try:
                producer.produce(msg.topic, msg.value, msg.key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
                check()
        producer.poll(0)
        check()
        counts["messages"] += 1
        counts["events"] += msg.events
        counts["duplicates"] += msg.kind == "duplicate"
        counts["malformed"] += msg.kind == "malformed"
        if progress is not None and counts["messages"] % PROGRESS_EVERY == 0:
            progress(counts["messages"])
    remaining = producer.flush(60.0)
    check()
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered to {bootstrap} within 60 s")
    if progress is not None and counts["messages"] % PROGRESS_EVERY:
        progress(counts["messages"])
    return counts


def play(
    bootstrap: str,
    events: list[ReplayEvent],
    *,
    speed: float | None,
    topics: Mapping[str, str] | None = None,
    live: bool = True,
    envelope: int = 1,
    faults: dict[str, float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Produce ``events`` as `stocktake up` and `stocktake replay` do, into ``topics``
    (``stream_topics(settings)``; default ``TOPICS``). ``live``: times rebased
    to now by ``rebase_live`` and every message sent when its time comes (the backfill at
    once, then every gap kept), so events arrive when they say they happened; otherwise the
    data's own times at ``speed``× with quiet gaps cut to MAX_SLEEP_S. ``speed`` None: as
    fast as possible. Returns message counts, as ``produce``."""
    if not live:
        return produce(bootstrap, to_messages(events, topics=topics, envelope=envelope, faults=faults),
                       speed=speed, progress=progress)
    now_s = time.time()
    events = rebase_live(events, now_s, speed)
    # Rebased times are wall-clock times: pace at 1x from now, no cap on quiet gaps.
    return produce(bootstrap, to_messages(events, topics=topics, envelope=envelope, faults=faults),
                   speed=1.0 if speed else None, progress=progress, max_sleep=None, start_s=now_s)
