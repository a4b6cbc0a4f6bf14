"""Source-side duplicate removal within an event-time window, with bounded state."""

from __future__ import annotations

from collections.abc import Iterable


class DedupeWindow:
    """Remembers event_ids seen within ``window_ms`` of the newest event time.

    Insertion-ordered dict: events arrive roughly in time order, so expiry pops
    from the front (amortised O(1)); ``max_keys`` bounds memory even when
    they don't. State is rebuildable: ``load`` takes (event_id, ts_ms) pairs
    read back from the store.
    """

    __slots__ = ("_seen", "max_keys", "newest_ms", "window_ms")

    def __init__(self, window_ms: int, max_keys: int):
        self.window_ms = window_ms
        self.max_keys = max_keys
        self.newest_ms = 0
        self._seen: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def is_duplicate(self, event_id: str, ts_ms: int) -> bool:
        """True if event_id was seen within the window; otherwise remember it."""
        seen = self._seen
        if event_id in seen:
            return True
        seen[event_id] = ts_ms
        if ts_ms > self.newest_ms:
            self.newest_ms = ts_ms
        if len(seen) > self.max_keys:
            del seen[next(iter(seen))]
        return False

    def expire(self) -> int:
        """Forget ids older than the window; returns how many were dropped."""
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

    def load(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Merge ids read back from the store (any order)."""
        for event_id, ts_ms in sorted(pairs, key=lambda p: p[1]):
            if event_id not in self._seen:
                self.is_duplicate(event_id, ts_ms)
        self.expire()
