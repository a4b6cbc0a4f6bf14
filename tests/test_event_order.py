"""The scorer's input order (processors/event_order.py): however the stored rows are cut into
reads, and whether the scorer restarts from a snapshot in between, the rows leave in one
order, the one training replays a history in."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from stocktake.processors.event_order import EventTimeMerger, Row, row

IDLE = 10.0
STREAMS = ("behaviour", "product", "transaction")


def _partitions(draw: st.DrawFn) -> dict[tuple[str, int], list[Row]]:
    """Up to 5 partitions over the three streams, each in offset order with event times that
    never go back (what a keyed producer of a history sends); envelopes give several idx."""
    out: dict[tuple[str, int], list[Row]] = {}
    for _ in range(draw(st.integers(1, 5))):
        stream = draw(st.sampled_from(STREAMS))
        key = (f"t.{stream}", draw(st.integers(0, 2)))
        if key in out:
            continue
        rows: list[Row] = []
        ts = draw(st.integers(0, 50))
        for offset in range(draw(st.integers(0, 25))):
            for idx in range(draw(st.integers(1, 3))):
                ts += draw(st.integers(0, 20))
                rows.append(row(stream, key[0], key[1], offset, idx, ts, f"{key}{offset}/{idx}"))
        out[key] = rows
    return out


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict[tuple[str, int], list[Row]], list[tuple[tuple[str, int], int]], int]:
    parts = _partitions(draw)
    # reads: (partition, how many of its next rows), in any interleaving
    reads = draw(st.lists(st.tuples(st.sampled_from(sorted(parts)), st.integers(1, 12)), max_size=40))
    restart_at = draw(st.integers(-1, len(reads)))
    return parts, reads, restart_at


def _run(parts: dict[tuple[str, int], list[Row]], reads: list[tuple[tuple[str, int], int]],
         restart_at: int, limit: int) -> tuple[list[Row], EventTimeMerger]:
    now = 0.0
    merger = EventTimeMerger(idle_s=IDLE, now=now)
    merger.expect(parts, now)
    read = dict.fromkeys(parts, 0)
    out: list[Row] = []
    now = IDLE + 1   # past the start's grace; every partition still active (it was expected then)
    merger.grew = dict.fromkeys(parts, now)
    for step, (key, n) in enumerate(reads):
        if step == restart_at:   # a new scorer from the snapshot
            saved = pickle.loads(pickle.dumps(merger.export()))
            merger = EventTimeMerger.restore(saved, idle_s=IDLE, max_pending=merger.max_pending, now=now - IDLE - 1)
            merger.grew = dict.fromkeys(merger.newest, now)
        merger.add(parts[key][read[key]:read[key] + n], now)
        read[key] = min(len(parts[key]), read[key] + n)
        while batch := merger.release(now, limit):
            out += batch
    for key, rows in parts.items():   # the rest, then silence
        merger.add(rows[read[key]:], now)
    while batch := merger.release(now + 2 * IDLE, limit):
        out += batch
    return out, merger


@given(histories(), st.integers(1, 7))
@settings(max_examples=300, deadline=None)
def test_any_cut_of_the_reads_releases_the_training_order(history: tuple, limit: int) -> None:  # type: ignore[type-arg]
    parts, reads, restart_at = history
    out, merger = _run(parts, reads, restart_at, limit)
    everything = sorted(r for rows in parts.values() for r in rows)
    assert out == everything
    assert merger.stats["late"] == 0 and merger.stats["forced"] == 0 and merger.waiting == 0


def test_nothing_leaves_while_an_expected_partition_is_silent_then_it_stops_holding_back() -> None:
    merger = EventTimeMerger(idle_s=IDLE, now=0.0)
    merger.expect([("t.behaviour", 0), ("t.behaviour", 1)], IDLE)
    merger.add([row("behaviour", "t.behaviour", 0, 0, 0, 100, "a"), row("behaviour", "t.behaviour", 0, 1, 0, 200, "b")],
               IDLE + 1)
    assert merger.release(IDLE + 1, 10) == []           # start grace over, partition 1 still expected
    assert [r[7] for r in merger.release(2 * IDLE + 0.5, 10)] == ["a"]   # 1 silent: 0 alone sets the mark
    assert [r[7] for r in merger.release(2 * IDLE + 1.5, 10)] == ["b"]   # 0 silent too: all out
    # a row of partition 1 older than what left: late, released with the next batch and counted
    merger.add([row("behaviour", "t.behaviour", 1, 0, 0, 50, "late")], 2 * IDLE + 2)
    assert [r[7] for r in merger.release(2 * IDLE + 2, 10)] == ["late"]
    assert merger.stats["late"] == 1


def test_rows_read_twice_are_taken_once_and_the_waiting_rows_are_bounded() -> None:
    merger = EventTimeMerger(idle_s=IDLE, max_pending=3, now=0.0)
    rows = [row("behaviour", "t.behaviour", 0, o, 0, 10 * o, str(o)) for o in range(6)]
    merger.expect([("t.behaviour", 0), ("t.behaviour", 1)], IDLE + 1)   # 1 holds all back
    assert merger.add(rows[:4], IDLE + 1) == 4
    assert merger.add(rows[:5], IDLE + 1) == 1           # a retried read: only the new row counts
    out = merger.release(IDLE + 1, 10)
    assert [r[7] for r in out] == ["0", "1"] and merger.stats["forced"] == 2 and merger.waiting == 3
    assert merger.watermark == 10                         # moved up to what was forced out


def test_a_row_at_the_watermark_waits_for_its_equals_from_other_partitions() -> None:
    merger = EventTimeMerger(idle_s=IDLE, now=0.0)
    merger.expect([("t.product", 0), ("t.behaviour", 0)], IDLE)
    merger.add([row("behaviour", "t.behaviour", 0, 0, 0, 100, "view")], IDLE + 1)
    merger.add([row("product", "t.product", 0, 0, 0, 50, "p1")], IDLE + 1)
    assert merger.release(IDLE + 1, 10) == []            # nothing is below both partitions' newest
    merger.add([row("product", "t.product", 0, 1, 0, 100, "p2")], IDLE + 1)
    # p2 may still have equals at 100 in the product partition: the view at 100 waits
    assert [r[7] for r in merger.release(IDLE + 1, 10)] == ["p1"]
    assert [r[7] for r in merger.release(3 * IDLE, 10)] == ["p2", "view"]   # announced, then viewed
