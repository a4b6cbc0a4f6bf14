"""processors/announced.py: the catalog's products as hashes, across merges into the array."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stocktake.processors import announced
from stocktake.processors.announced import AnnouncedProducts

hashes = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(hashes, max_size=40), max_size=8), asked=st.lists(hashes, max_size=60))
def test_announced_tells_the_hashes_added(batches: list[list[int]], asked: list[int]) -> None:
    announced.MERGE_AT, merge_at = 16, announced.MERGE_AT   # small, so batches merge into the array
    try:
        products = AnnouncedProducts()
        added: set[int] = set()
        for batch in batches:
            products.add(batch)
            added.update(batch)
            known = sorted(added)[: len(added) // 2]
            probe = asked + known   # some surely announced, repeats counted
            assert products.announced(probe).tolist() == [h in added for h in probe]
        assert len(products) == len(added)
    finally:
        announced.MERGE_AT = merge_at


def test_a_million_products_hold_in_eight_megabytes() -> None:
    products = AnnouncedProducts()
    products.add(range(0, 2_000_000, 2))
    assert products.announced([0, 1, 2, 1_999_998, 2_000_000]).tolist() == [True, False, True, True, False]
    assert products._sorted.nbytes == 8_000_000 and not products._recent
