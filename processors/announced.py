"""The products a catalog has announced, for telling orphan references apart. Pure.

Products are held as 64-bit hashes of their ids (the store's cityHash64, computed by the
queries that read them), so the alerting worker never holds the ids themselves: 8 bytes a
product in one sorted array, 8 MB at a million products, plus the products added since the
last merge in a set. Two ids share a hash with a chance of about n·m / 2⁶⁴ among n products
and m references (1e-7 for a million of each): an orphan taken for an announced product that
rarely is harmless to a share judged against a baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

MERGE_AT = 4096   # recent products held in the set before they join the sorted array


class AnnouncedProducts:
    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()

    def __len__(self) -> int:
        self._merge()
        return len(self._sorted)

    def add(self, hashes: Iterable[int]) -> None:
        self._recent.update(hashes)
        # Merged when the set holds a sixteenth of the array: the copy costs O(n) about
        # every n/16 new products, and the set stays small.
        if len(self._recent) > max(MERGE_AT, len(self._sorted) // 16):
            self._merge()

    def _merge(self) -> None:
        if self._recent:
            recent = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            self._sorted = np.union1d(self._sorted, recent)
            self._recent.clear()

    def announced(self, hashes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per hash, whether it names an announced product."""
        wanted = np.asarray(hashes, dtype=np.uint64)
        at = np.searchsorted(self._sorted, wanted)
        found = at < len(self._sorted)
        found[found] = self._sorted[at[found]] == wanted[found]
        if self._recent:
            for i in np.flatnonzero(~found).tolist():
                found[i] = int(wanted[i]) in self._recent
        return found
