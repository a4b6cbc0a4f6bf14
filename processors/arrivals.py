"""The arrivals of closed minutes, from their events: what the alerting worker judges beside
the counts. Pure (numpy).

The store hands over the valid events of the minutes closing, grouped by stream, kind and
source, each group in event-time order: its times and the products its references name (as
64-bit hashes, 0 for none). Here they become, per asset (the names of ``prefixed_assets``;
processors/assets.py) and minute: its events and product references (what the minute rollup
counts of it), first and newest event time, the gaps between consecutive events of the asset
that ended in the minute counted per LagHistogram bucket, the longest of them, and the
references naming no product the catalog announced (the orphans).

processors/gapfeed.window_arrivals is the same for one asset in plain Python (the evaluation's
and the backtest's; a test holds the two to the same answer). Vectorised here because the
worker's minutes may hold many thousands of events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from stocktake.processors.announced import AnnouncedProducts
from stocktake.processors.assets import event_assets
from stocktake.processors.baseline import MINUTE_MS
from stocktake.processors.gapfeed import MinuteArrivals, MinuteCounts
from stocktake.processors.quality import EDGES

_EDGES = np.asarray(EDGES, dtype=np.float64)




class EventGroup(NamedTuple):
    """One (stream, kind, source) of the window's valid events, in event-time order."""
    stream: str
    kind_key: str
    kind: str
    source: str
    times: Sequence[int]          # event time (ms)
    refs: Sequence[int]           # per event: the named product's hash, 0 when it names none


def minute_arrivals(times: np.ndarray) -> list[tuple[int, int, int, MinuteArrivals]]:
    """One asset's event times, sorted -> per minute: (minute, first index, end index, arrivals)."""
    minutes = times - times % MINUTE_MS
    gaps = np.diff(times)
    buckets = np.searchsorted(_EDGES, gaps, side="right")
    buckets[gaps < 1] = 0
    bounds = np.flatnonzero(np.diff(minutes)) + 1
    out = []
    for start, end in zip([0, *bounds.tolist()], [*bounds.tolist(), len(times)], strict=True):
        # the gaps that ended in the minute: from the one ending at its first event (the gap
        # from the minute before) to the one ending at its last
        lo, hi = max(start - 1, 0), end - 1
        cadence: tuple[tuple[int, int], ...] = ()
        longest = None
        if hi > lo:
            at = lo + int(np.argmax(gaps[lo:hi]))          # the first of equal longest gaps
            longest = (int(times[at]), int(times[at + 1]))
            keys, counts = np.unique(buckets[lo:hi], return_counts=True)
            cadence = tuple(zip(keys.tolist(), counts.tolist(), strict=True))
        out.append((int(minutes[start]), start, end, (int(times[start]), int(times[end - 1]), cadence, longest)))
    return out


def closed_minutes(groups: Iterable[EventGroup], catalog: AnnouncedProducts) -> dict[tuple[str, int], MinuteCounts]:
    """(asset, minute) -> what its events say, as the feed takes it."""
    by_asset: dict[str, list[EventGroup]] = {}
    for group in groups:
        for asset in event_assets(group.stream, group.kind_key, group.kind, group.source):
            by_asset.setdefault(asset, []).append(group)
    out: dict[tuple[str, int], MinuteCounts] = {}
    for asset, parts in by_asset.items():
        times = np.concatenate([np.asarray(p.times, dtype=np.int64) for p in parts])
        refs = np.concatenate([np.asarray(p.refs, dtype=np.uint64) for p in parts])
        if len(parts) > 1:
            order = np.argsort(times, kind="stable")
            times, refs = times[order], refs[order]
        named = refs != 0
        orphan = named.copy()
        if orphan.any():
            orphan[orphan] = ~catalog.announced(refs[orphan])
        for minute, start, end, arrivals in minute_arrivals(times):
            out[asset, minute] = MinuteCounts(end - start, int(np.count_nonzero(named[start:end])),
                                              int(np.count_nonzero(orphan[start:end])), *arrivals)
    return out
