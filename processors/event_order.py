"""Event-time order over many partitions (#15): the scorer's input, merged so that what it
computes is a function of the stored events alone, not of when or by which worker each was
stored (pure; no I/O).

Rows come in per partition, in offset order, in batches of any size, at any time, from any
number of partitions. ``EventTimeMerger`` keeps, per partition, the position read up to and
the newest event time read; it releases a row once every *active* partition has been read
past the row's event time (the watermark), and releases rows in one total order:

    (ts, stream rank, topic, partition, offset, idx)

the order `models.dataset.history` replays a history in for training (a product is announced
before it is viewed, viewed before it is sold). However the input is cut into calls, the
released sequence is the same, given two assumptions Kafka producers normally meet: each
partition's event times do not go backwards by more than the rows still unread, and no
partition stays silent for ``idle_s`` while others run ahead of it.

- A partition that has sent nothing for ``idle_s`` (wall clock) stops holding the watermark
  back; when all are idle, everything read is released. Partitions named by ``expect`` hold
  it back from the start, before their first row, and so do partitions named by ``touch``
  (the caller saw their Kafka log grow: rows are on their way to the store). The first ``idle_s`` after a start
  release nothing, so that every partition with stored rows has been read once.
- A row whose event time is already below the watermark when it is read (late) goes out
  with the next release, in the same order among that release: the one case where the
  result depends on timing. ``stats["late"]`` counts them.
- Bounded: at most ``max_pending`` rows wait; past that the oldest are released early
  (``stats["forced"]``), which moves the watermark up to them.

``export()`` / ``restore()`` carry the positions, newest times, watermark and waiting rows
through a snapshot; nothing else is needed to continue exactly where it stopped.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

# A stored row as the merger sorts it:
# (ts_ms, stream rank, topic, partition, offset, idx, stream, payload)
Row = tuple[int, int, str, int, int, int, str, str | bytes]
Partition = tuple[str, int]

STREAM_RANK = {"product": 0, "behaviour": 1, "transaction": 2}


def row(stream: str, topic: str, partition: int, offset: int, idx: int, ts_ms: int, payload: str | bytes) -> Row:
    return (ts_ms, STREAM_RANK.get(stream, 3), topic, partition, offset, idx, stream, payload)


class EventTimeMerger:
    def __init__(self, *, idle_s: float = 5.0, max_pending: int = 500_000, now: float = 0.0):
        if idle_s <= 0 or max_pending < 1:
            raise ValueError("idle_s must be > 0 and max_pending >= 1")
        self.idle_s = idle_s
        self.max_pending = max_pending
        self.started = now
        self.positions: dict[Partition, tuple[int, int]] = {}   # read up to (offset, idx)
        self.newest: dict[Partition, int] = {}                 # newest event time read
        self.grew: dict[Partition, float] = {}                 # when rows last came (wall clock)
        self.pending: list[Row] = []                           # a heap, in release order
        self.watermark = -1                                    # rows with ts < watermark are ready
        self.stats = {"read": 0, "released": 0, "late": 0, "forced": 0}
        self.last_late: tuple[str, int, int] | None = None      # (topic, partition, ts) of the newest late row

    def expect(self, partitions: Iterable[Partition], now: float) -> None:
        """Partitions known to exist before any of their rows is read (the topics' partitions):
        each holds the watermark back until it sends rows or has been silent for ``idle_s``."""
        for key in partitions:
            if key not in self.newest:
                self.newest[key] = -1
                self.grew[key] = now

    def touch(self, partitions: Iterable[Partition], now: float) -> None:
        """Partitions known to have new rows on their way (their Kafka log grew) though none is
        stored yet: they count as active, so the watermark waits for those rows instead of
        passing them while a worker stores them."""
        for key in partitions:
            self.newest.setdefault(key, -1)
            self.grew[key] = now

    def idle(self, now: float, after: float) -> list[Partition]:
        """The partitions that have sent nothing for ``after`` seconds."""
        return [key for key in self.newest if now - self.grew.get(key, now) >= after]

    def add(self, rows: Iterable[Row], now: float) -> int:
        """Rows read from the store, each partition's in offset order after its position."""
        n = 0
        for r in rows:
            key = (r[2], r[3])
            position = self.positions.get(key)
            if position is not None and (r[4], r[5]) <= position:
                continue   # read twice (a retried read): already here
            self.positions[key] = (r[4], r[5])
            if r[0] > self.newest.get(key, -1):
                self.newest[key] = r[0]
            self.grew[key] = now
            if r[0] < self.watermark:
                self.stats["late"] += 1
                self.last_late = (r[2], r[3], r[0])
            heapq.heappush(self.pending, r)
            n += 1
        self.stats["read"] += n
        return n

    def advance(self, now: float) -> int:
        """Move the watermark as far as the partitions allow; returns it."""
        if now - self.started < self.idle_s or not self.newest:
            return self.watermark
        active = [ts for key, ts in self.newest.items() if now - self.grew.get(key, now) < self.idle_s]
        bound = min(active) if active else max(self.newest.values()) + 1
        if bound < 0:
            return self.watermark
        if bound > self.watermark:
            self.watermark = bound
        return self.watermark

    def release(self, now: float, limit: int) -> list[Row]:
        """Up to ``limit`` ready rows, in order (late rows first among them: they sort low)."""
        self.advance(now)
        out: list[Row] = []
        pending = self.pending
        while len(pending) > self.max_pending and len(out) < limit:
            r = heapq.heappop(pending)
            self.watermark = max(self.watermark, r[0])
            self.stats["forced"] += 1
            out.append(r)
        while pending and len(out) < limit and pending[0][0] < self.watermark:
            out.append(heapq.heappop(pending))
        self.stats["released"] += len(out)
        return out

    @property
    def waiting(self) -> int:
        return len(self.pending)

    def beyond(self) -> Sequence[tuple[str, int, int, int]]:
        """(topic, partition, offset, idx) read up to, per partition: where the next read starts."""
        return [(t, p, o, i) for (t, p), (o, i) in sorted(self.positions.items())]

    def export(self) -> dict[str, Any]:
        return {"positions": dict(self.positions), "newest": dict(self.newest), "pending": list(self.pending),
                "watermark": self.watermark, "stats": dict(self.stats)}

    @classmethod
    def restore(cls, saved: dict[str, Any], *, idle_s: float, max_pending: int, now: float) -> EventTimeMerger:
        """Continue from ``export()``: every partition known then counts as active again for
        ``idle_s``, so a restarted scorer waits for them as the first one did."""
        merger = cls(idle_s=idle_s, max_pending=max_pending, now=now)
        merger.positions = dict(saved["positions"])
        merger.newest = dict(saved["newest"])
        merger.grew = {key: now for key in merger.newest}
        merger.pending = list(saved["pending"])
        heapq.heapify(merger.pending)
        merger.watermark = int(saved["watermark"])
        merger.stats.update(saved.get("stats", {}))
        return merger
