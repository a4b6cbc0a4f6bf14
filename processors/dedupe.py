"""Source-side duplicate removal within an event-time window, with bounded state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class DedupeWindow:
    """Remembers event_ids for ``window_ms`` of event time behind the low watermark.

    The low watermark is the minimum, over partitions, of each partition's newest
    event time. Partitions progress unevenly (after a rebalance one may be far
    behind another): measuring against the fastest one would forget ids that a
    lagging partition's duplicates still need. Insertion-ordered dict: expiry pops
    from the front (amortised O(1)); ``max_keys`` bounds memory whatever the
    watermark does (an idle partition holds it back). State is rebuildable:
    ``load`` takes (event_id, ts_ms) pairs and per-partition progress read back
    from the store.
    """

    __slots__ = ("_progress", "_seen", "max_keys", "window_ms")

    def __init__(self, window_ms: int, max_keys: int):
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._progress: dict[int, int] = {}
        self._seen: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    @property
    def newest_ms(self) -> int:
        """The low watermark: the slowest partition's newest event time (0 when none)."""
        return min(self._progress.values(), default=0)

    def is_duplicate(self, event_id: str, ts_ms: int, partition: int = 0) -> bool:
        """True if event_id was seen within the window; otherwise remember it."""
        if ts_ms > self._progress.get(partition, -1):
            self._progress[partition] = ts_ms
        seen = self._seen
        if event_id in seen:
            return True
        seen[event_id] = ts_ms
        if len(seen) > self.max_keys:
            del seen[next(iter(seen))]
        return False

    def expire(self) -> int:
        """Forget ids older than the window behind the low watermark; returns how many."""
        cutoff = self.newest_ms - self.window_ms
        seen = self._seen
        dropped = 0
        while seen:
            first = next(iter(seen))
            if seen[first] >= cutoff:
                break
            del seen[first]
            dropped += 1
        return dropped

    def load(self, pairs: Iterable[tuple[str, int]], progress: Mapping[int, int] | None = None) -> None:
        """Merge ids read back from the store (any order). ``progress``: partition ->
        newest stored event time; without it the ids count as one partition's."""
        ordered = sorted(pairs, key=lambda p: p[1])
        if progress is not None:
            for partition, ts_ms in progress.items():
                if ts_ms > self._progress.get(partition, -1):
                    self._progress[partition] = ts_ms
        elif ordered and ordered[-1][1] > self._progress.get(0, -1):
            self._progress[0] = ordered[-1][1]
        seen = self._seen
        for event_id, ts_ms in ordered:
            if event_id not in seen:
                seen[event_id] = ts_ms
                if len(seen) > self.max_keys:
                    del seen[next(iter(seen))]
        self.expire()
