"""The exactly-counted sink: judge, buffer per partition, insert, then commit.

Order per flush of one or more partitions (DESIGN.md "Correctness without Kafka transactions"):
  1. publish the batches' dead letters and wait for the broker (at-least-once),
  2. insert every judged event with its coordinates in ONE insert (atomic),
  3. raise the in-memory watermarks, then commit offset+1 to Kafka.
Every insert also runs the rollups' materialized views (migration 008), whose cost is mostly
per insert (50-115 ms of running the views, whatever the rows; README: Performance): a flush
takes every partition with buffered events, so one worker makes at most one insert per flush
interval, however many partitions it owns, unless flush_idle_rows events wait for an idle store.
A crash after 2 and before 3 redelivers records that step 2 stored; the
watermark read back from ClickHouse on assignment skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import tenacity

from stocktake.clickhouse.rows import ingest_log_table
from stocktake.clickhouse.store import Store, StoreError
from stocktake.processors.contract import Contract, Event
from stocktake.processors.contract_spec import CONTRACT_FIELD_COLUMNS, ContractBook, contract_rows
from stocktake.processors.dedupe import DedupeWindow
from stocktake.processors.judge import COLUMNS, DeadLetter, Judged, judge_batch, judge_each, skip_stored
from stocktake.settings import Settings
from stocktake.streams.transport import FetchBatch

log = logging.getLogger("stocktake.sink")


class SinkFailed(RuntimeError):
    """The sink stopped for good (see Sink.fail): the worker must exit and restart."""

Key = tuple[str, int]  # (topic, partition)
PublishFn = Callable[[list[DeadLetter]], Awaitable[None]]
PartitionsFn = Callable[[set[tuple[str, int]]], None]
LogBoundsFn = Callable[[list[tuple[str, int]]], Awaitable[Mapping[tuple[str, int], tuple[int, int]] | None]]
CommitFn = Callable[[dict[Key, int]], Awaitable[bool]]
ValidHook = Callable[[str, list[Event]], None]
StoredHook = Callable[[pa.Table], None]   # the rows of an insert, once it (and its rollups) is stored


@dataclass
class PartitionBuffer:
    stream: str
    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    dead_letters: list[DeadLetter] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1
    since: float = 0.0

    @property
    def rows(self) -> int:
        return len(self.columns["offset"])

    def add(self, judged: Judged) -> None:
        if self.last_offset < 0:
            self.since = time.monotonic()
        if self.first_offset < 0 and judged.columns["offset"]:
            self.first_offset = judged.columns["offset"][0]
        for name, values in judged.columns.items():
            self.columns[name].extend(values)
        self.dead_letters.extend(judged.dead_letters)
        self.last_offset = max(self.last_offset, judged.last_offset)


@dataclass
class SinkStats:
    valid: int = 0
    duplicate: int = 0
    invalid: int = 0
    skipped_stored: int = 0
    inserts: int = 0
    rows_inserted: int = 0
    insert_seconds: float = 0.0
    dropped_stale: int = 0
    log_resets: int = 0
    dead_letters_truncated: int = 0
    per_stream: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, stream: str, statuses: list[str]) -> None:
        counts = self.per_stream.setdefault(stream, {"valid": 0, "duplicate": 0, "invalid": 0})
        for status in counts:
            n = statuses.count(status)
            counts[status] += n
            setattr(self, status, getattr(self, status) + n)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "per_stream": {k: dict(v) for k, v in self.per_stream.items()}}


def batch_token(due: dict[Key, PartitionBuffer]) -> str:
    """The insert's name: the offset range of every partition in it. A retry of the same insert
    has the same name; another insert never does (offsets are stored once, per watermark)."""
    ranges = sorted(f"{t}/{p}/{b.first_offset}-{b.last_offset}" for (t, p), b in due.items() if b.rows)
    return hashlib.sha256(",".join(ranges).encode()).hexdigest()


class Sink:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        publish: PublishFn,
        commit: CommitFn,
        generation: Callable[[], int] = lambda: 0,
        name: str = "sink",
        pause: PartitionsFn = lambda _tps: None,
        resume: PartitionsFn = lambda _tps: None,
    ):
        self.settings = settings
        self.store = store
        # topic -> stream, as settings.stream_of says (the one rule), remembered per topic seen
        self._streams: dict[str, str | None] = {}
        self._publish = publish
        self._commit = commit
        self._generation = generation
        self._pause, self._resume = pause, resume
        self.paused: set[Key] = set()
        self.name = name
        self.watermarks: dict[Key, int] = {}
        self.assigned: set[Key] = set()
        self.dedupe: dict[str, DedupeWindow] = {}
        self.buffers: dict[Key, PartitionBuffer] = {}
        self.stats = SinkStats()
        # The contract each stream is judged under; the store learns each one before the first
        # insert judged under it (contract_fields: what the inventory and dashboards read).
        self.contracts = ContractBook(settings.contracts_dir)
        self._published: dict[str, Contract] = {}
        self._unpublished: dict[str, Contract] = {}
        self.valid_hooks: list[ValidHook] = []
        self.stored_hooks: list[StoredHook] = []
        self.closed = False
        # Health (GET /api/health): the failure that stopped the sink, when the last insert
        # succeeded, when progress was last made (an insert or an assignment), since when the
        # store has refused us, and the highest stored offset per partition.
        self.failure: BaseException | None = None
        self.last_insert_at: float | None = None
        self.progress_at = time.monotonic()
        self.store_down_since: float | None = None
        self.stored: dict[Key, int] = {}
        self.bases: dict[Key, int] = {}     # stored offset = Kafka offset + base (_rebase)
        # Set by a runtime whose embedded broker started empty: the highest stored offset per
        # partition when it did. A watermark still there was stored from a log that is gone.
        self.lost_logs: Mapping[Key, int] = {}
        self._lock = asyncio.Lock()
        self._in_flight: asyncio.Task[None] | None = None

    def stream_of(self, topic: str) -> str | None:
        """The stream ``topic`` carries (settings.stream_of), None: not one we consume."""
        try:
            return self._streams[topic]
        except KeyError:
            stream = self._streams[topic] = self.settings.stream_of(topic)
            return stream

    # -- rebalance ------------------------------------------------------------------

    async def on_assigned(self, tps: Iterable[Key], log_bounds: LogBoundsFn | None = None) -> None:
        """Read watermarks and rebuild dedupe state from ClickHouse for our partitions.
        ``log_bounds``: asks Kafka the (log start, log end) per partition, to see a log that lost
        what we stored from it (_rebase)."""
        tps = [tp for tp in tps if self.stream_of(tp[0]) is not None]
        # The lock first, before any await: a batch of a newly assigned partition fetched
        # meanwhile must wait for this, not be dropped as "not ours" (its records would be lost:
        # the consumer's position has moved past them).
        async with self._lock:
            logs = await log_bounds(tps) if log_bounds is not None and tps else None
            # stream -> its topics -> their partitions: a stream is usually one topic, but a
            # STOCKTAKE_TOPICS topic outside the prefix may carry the name of one inside it.
            by_stream: dict[str, dict[str, list[int]]] = {}
            for topic, partition in tps:
                stream = self.stream_of(topic)
                assert stream is not None
                by_stream.setdefault(stream, {}).setdefault(topic, []).append(partition)
            for stream, topics in by_stream.items():
                # Everything we judged before is flushed (revoke flushes all), so the
                # store is the whole truth: replace, don't merge.
                window = DedupeWindow(
                    int(self.settings.dedupe_window_s * 1000), self.settings.dedupe_max_keys
                )
                for topic, partitions in topics.items():
                    marks = await self._retry(self.store.watermarks, topic, partitions)
                    bases = await self._retry(self.store.log_bases, topic, partitions)
                    for p in partitions:
                        self.stored[(topic, p)] = marks.get(p, -1)
                        self.bases[(topic, p)] = bases.get(p, 0)
                        # Nothing stored since the embedded broker started empty: that log is gone.
                        lost = self.lost_logs.get((topic, p)) == self.stored[(topic, p)] >= 0
                        bounds = logs.get((topic, p)) if logs else None
                        if bounds is not None or lost:
                            await self._rebase((topic, p), *(bounds or (0, 0)), lost=lost)
                        if p in marks:
                            self.watermarks[(topic, p)] = marks[p]
                        else:
                            self.watermarks.pop((topic, p), None)
                    window.load(
                        await self._retry(self.store.recent_event_ids, topic, self.settings.dedupe_window_s,
                                          self.settings.dedupe_max_keys, partitions),
                        await self._retry(self.store.event_time_progress, topic, partitions),
                    )
                    log.info("%s assigned %s[%s] (stream %s): watermarks %s, dedupe ids loaded %d (newest ts %d)",
                             self.name, topic, partitions, stream, marks, len(window), window.newest_ms)
                self.dedupe[stream] = window
            self.assigned.update(tps)
            self.progress_at = time.monotonic()

    async def _rebase(self, tp: Key, start: int, end: int, *, lost: bool = False) -> None:
        """A log that lost what we stored from it: an embedded Tansu that started empty (its
        topics live in memory; ``lost``, known by the runtime that started it), or a log shorter
        than what we stored (a topic deleted and re-created; ``end`` is checked by a fetch, as
        Tansu's ListOffsets lists less than it holds). Its offsets would sit at or below the
        stored watermark and be skipped as stored: instead they are stored from the watermark on
        (stored offset = Kafka offset + base), recorded before anything of the new log is
        stored. A re-created topic that regrew past the watermark before we were assigned it
        cannot be told from the old log by offsets (README: How counts stay exact, 7)."""
        stored, base = self.stored[tp], self.bases[tp]
        if stored < 0 or (end + base > stored and not lost):
            return
        new_base = stored + 1 - start
        if new_base == base:   # already stored after (by an earlier worker of this runtime)
            return
        await self._retry(self.store.record_log_base, tp[0], tp[1], new_base, start, end, stored)
        self.bases[tp] = new_base
        self.stats.log_resets += 1
        log.warning("%s: Kafka's log for %s[%d] (%d..%d) lost the %d offsets stored from it (%s). Its offsets "
                    "are stored from %d on (offset + %d): nothing is skipped or counted twice",
                    self.name, tp[0], tp[1], start, end, stored - base + 1,
                    "the embedded broker started empty" if lost else "it is shorter", stored + 1, new_base)

    async def on_revoked(self, tps: Iterable[Key]) -> None:
        tps = [tp for tp in tps if self.stream_of(tp[0]) is not None]
        async with self._lock:
            log.info("%s revoked %s", self.name, sorted(tps))
            if not self.closed:
                with contextlib.suppress(SinkFailed):  # failed: nothing more is stored; we exit
                    await self._flush(tps, wait=True)
            self.assigned.difference_update(tps)
            for tp in tps:
                self.buffers.pop(tp, None)

    # -- the hot path ------------------------------------------------------------------

    async def close(self) -> None:
        """Flush everything, then accept no more work. Called before the app stops:
        Faust keeps agents and timers running while it leaves the group, and a
        flush after that could land after the partition's new owner read its
        watermark (Tansu accepts the old member's offset commit too)."""
        async with self._lock:
            if self.failure is None:
                await self._flush(list(self.buffers), wait=True)
            self.closed = True
            self.assigned.clear()

    def fail(self, exc: BaseException) -> None:
        """Stop for good after an error that retrying cannot fix. Nothing more is stored: a
        later flush would store offsets past the events the failure lost from memory, and the
        stored watermark would then skip them. The worker exits non-zero; its next start reads
        the watermarks back and the lost events are redelivered (DESIGN.md, exactness)."""
        if self.failure is None:
            self.failure = exc
            log.critical("%s stopped: %s: %s", self.name, type(exc).__name__, exc)
        self.closed = True

    async def add(self, batch: FetchBatch) -> None:
        tp = (batch.topic, batch.partition)
        async with self._lock:
            # Checked under the lock: a revoke/assign may have run while we waited.
            if self.closed or tp not in self.assigned or batch.generation_id != self._generation():
                # Fetched before a rebalance: re-read from the committed offset.
                self.stats.dropped_stale += len(batch.records)
                log.info("%s dropped %s offsets %d..%d (closed=%s assigned=%s gen %d/%d)", self.name, tp,
                         batch.records[0].offset, batch.records[-1].offset, self.closed,
                         tp in self.assigned, batch.generation_id, self._generation())
                return
            stream = self.stream_of(batch.topic)
            assert stream is not None  # assigned: on_assigned took only stream topics
            buffer = self.buffers.get(tp)
            floor = max(self.watermarks.get(tp, -1), buffer.last_offset if buffer else -1)
            base = self.bases.get(tp, 0)
            # From here on offsets are the stored ones: Kafka's + the log's base (_rebase).
            shifted = [r._replace(offset=r.offset + base) for r in batch.records] if base else batch.records
            records = skip_stored(shifted, floor if floor >= 0 else None)
            self.stats.skipped_stored += len(batch.records) - len(records)
            if not records:
                return
            contract = self.contracts.get(stream)
            if self._published.get(stream) is not contract:
                self._published[stream] = contract
                self._unpublished[stream] = contract
            args = (contract, batch.topic, batch.partition, records, self.dedupe[stream], int(time.time() * 1000))
            limit = self.settings.deadletter_max_bytes
            try:
                judged = judge_batch(*args, deadletter_max_bytes=limit)
            except Exception as exc:  # a bug, not the data's fault: no one event may stop the worker
                log.error("%s: judging %s offsets %d..%d raised %s: %s; judging them one by one", self.name, tp,
                          records[0].offset, records[-1].offset, type(exc).__name__, exc)
                judged = judge_each(*args, deadletter_max_bytes=limit)
            self.stats.dead_letters_truncated += judged.truncated
            for hook in self.valid_hooks:
                hook(stream, judged.valid)
            if buffer is None:
                buffer = self.buffers[tp] = PartitionBuffer(stream)
            buffer.add(judged)
            # While the store is away its partitions are paused: what was fetched before waits
            # here, and the lock stays free (the retrying store call is not awaited under it).
            if self.store_down_since is None:
                if self._idle_and_full():
                    await self._flush(list(self.buffers))
                elif buffer.rows >= self.settings.batch_rows:
                    await self._flush([tp])

    async def flush_due(self) -> None:
        """Timer: once a buffer is older than the flush interval, or enough events wait for an
        idle store (_idle_and_full), flush every buffer with events."""
        now = time.monotonic()
        async with self._lock:
            if self.closed or self.store_down_since is not None:
                return
            if self._idle_and_full() or any(b.last_offset >= 0 and now - b.since >= self.settings.flush_interval_s
                                            for b in self.buffers.values()):
                await self._flush(list(self.buffers))

    def _idle_and_full(self) -> bool:
        """No insert is in flight and enough events wait to be worth one (flush_idle_rows): under
        load, inserts then follow one another and an event waits about two inserts, not the
        flush interval plus one."""
        least = self.settings.flush_idle_rows
        return (least > 0 and (self._in_flight is None or self._in_flight.done())
                and sum(b.rows for b in self.buffers.values()) >= least)

    async def flush_all(self) -> None:
        async with self._lock:
            if self.closed:
                return
            await self._flush(list(self.buffers), wait=True)

    async def _flush(self, tps: Iterable[Key], *, wait: bool = False) -> None:
        """Hand the buffered events of ``tps`` to one store-and-commit task. It runs while the
        next batches are judged (the insert, with the rollups' views, runs in chDB/ClickHouse
        outside the GIL: the second core's work); one runs at a time, in order. ``wait``:
        return once it is done (revoke, close)."""
        await self._drain()   # first: a failed store raises here, before more is handed over
        due = {tp: b for tp in tps if (b := self.buffers.get(tp)) is not None and b.last_offset >= 0}
        for tp, b in due.items():
            # Accepted: redeliveries up to here are skipped from now on, stored or in flight.
            self.watermarks[tp] = b.last_offset
            self.buffers[tp] = PartitionBuffer(b.stream)
        if due:
            self._in_flight = asyncio.create_task(self._store_or_fail(due))
            if wait:
                await self._drain()

    async def _drain(self) -> None:
        """Wait for the store-and-commit task in flight (its failure is raised here)."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task
        if self.failure is not None:
            raise SinkFailed(str(self.failure))

    async def _store_or_fail(self, due: dict[Key, PartitionBuffer]) -> None:
        try:
            await self._store(due)
        except Exception as exc:  # recorded, not raised: a timer or revoke may be the one to see it
            self.fail(exc)

    async def _store(self, due: dict[Key, PartitionBuffer]) -> None:
        if self._unpublished:
            at = dt.datetime.now(dt.UTC)
            rows = [r for c in self._unpublished.values() for r in contract_rows(self.settings.topic_dot_prefix, c, at)]
            await self._retry(self.store.insert_rows, "contract_fields", rows, CONTRACT_FIELD_COLUMNS)
            self._unpublished.clear()
        dead = [d for b in due.values() for d in b.dead_letters]
        if dead:
            await self._publish(dead)
        filled = [b for b in due.values() if b.rows]
        if filled:
            table = pa.concat_tables([ingest_log_table(b.columns) for b in filled])
            started = time.perf_counter()
            await self._retry(self.store.insert_arrow, "ingest_log", table, batch_token(due))
            self.stats.insert_seconds += time.perf_counter() - started
            self.stats.inserts += 1
            self.stats.rows_inserted += table.num_rows
            for b in filled:
                self.stats.count(b.stream, b.columns["status"])
            for hook in self.stored_hooks:
                hook(table)
        now = time.monotonic()
        self.last_insert_at = self.progress_at = now
        for tp, b in due.items():
            self.stored[tp] = b.last_offset
            log.info("%s flushed %s up to offset %d (%d rows)", self.name, tp, b.last_offset, b.rows)
        if not self.settings.commit_offsets:
            return
        try:
            await self._commit({tp: b.last_offset + 1 - self.bases.get(tp, 0) for tp, b in due.items()})
        except Exception as exc:  # the watermarks keep us exact; a later commit catches up
            log.warning("offset commit for %s failed: %s", sorted(due), exc)

    async def _retry(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking store call in a thread; retry with backoff while ClickHouse is away."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(StoreError),
            wait=tenacity.wait_exponential(multiplier=0.5, max=30.0),
            before_sleep=self._store_down,
        )
        result: Any = await retrying(asyncio.to_thread, fn, *args)
        if self.store_down_since is not None:
            resumed, self.paused = self.paused & self.assigned, set()
            self._resume(resumed)
            log.warning("ClickHouse is back after %.0fs: %d partitions resumed",
                        time.monotonic() - self.store_down_since, len(resumed))
            self.store_down_since = None
        return result

    def _store_down(self, state: tenacity.RetryCallState) -> None:
        """ClickHouse refused a call: stop fetching (the group keeps us, heartbeats go on), so
        nothing piles up in memory, and retry with backoff; one line per attempt."""
        if self.store_down_since is None:
            self.store_down_since = time.monotonic()
            self.paused = set(self.assigned)
            self._pause(self.paused)
        log.error("ClickHouse unavailable (%s): %d partitions paused; retrying in %.1fs",
                  state.outcome.exception() if state.outcome else "?", len(self.paused), state.upcoming_sleep)
