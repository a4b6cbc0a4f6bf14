"""The catalog findings index (processors/catalog.py): pure, on synthetic vectors."""

from __future__ import annotations

import numpy as np
import pytest

from stocktake.models.encoder import duplicate_groups, likely_duplicates
from stocktake.processors.catalog import CatalogIndex, lsh_recall

DIM = 384


def unit(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
    return out


def random_units(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit(rng.standard_normal((n, DIM)))


def at_similarity(rng: np.random.Generator, base: np.ndarray, s: float) -> np.ndarray:
    """A unit vector at cosine ``s`` from the unit vector ``base``."""
    g = rng.standard_normal(DIM)
    g -= (g @ base) * base
    return unit(s * base + np.sqrt(1 - s * s) * unit(g))


def index(**kw: object) -> CatalogIndex:
    return CatalogIndex(**{"min_category": 5, **kw})  # type: ignore[arg-type]


def test_identical_text_is_a_duplicate_without_any_vector_work() -> None:
    rng = np.random.default_rng(1)
    a, b = random_units(rng, 2)
    ix = index()
    ix.add("p1", 11, "red kettle", "kitchen", a)
    # the same text again under other ids: the vector is not even looked at
    ix.add("p2", 11, "red kettle", "kitchen", np.zeros(DIM, np.float32))
    ix.add("p3", 11, "red kettle", "kitchen", np.full(DIM, np.nan, np.float32))
    ix.add("p4", 12, "garden hose", "garden", b)
    assert (ix.products, ix.texts) == (4, 2)
    dup = ix.findings()["likely_duplicates"]
    assert (dup["groups"], dup["products"], dup["texts"]) == (1, 3, 1)
    (group,) = dup["examples"]
    assert group["similarity"] == 1.0 and group["size"] == 3
    assert group["products"] == [{"id": f"p{i}", "text": "red kettle"} for i in (1, 2, 3)]


def test_near_identical_vectors_are_duplicates_distinct_ones_are_not() -> None:
    rng = np.random.default_rng(2)
    base = random_units(rng, 1)[0]
    ix = index()
    ix.add("a", 1, "kettle steel 1.7l", "kitchen", base)
    ix.add("b", 2, "kettle steel 1.7 l", "kitchen", at_similarity(rng, base, 0.985))
    ix.add("c", 3, "kettle glass", "kitchen", at_similarity(rng, base, 0.90))     # similar, not a duplicate
    for i, v in enumerate(random_units(rng, 20)):                                   # unrelated
        ix.add(f"x{i}", 100 + i, f"thing {i}", "misc", v)
    dup = ix.findings()["likely_duplicates"]
    assert (dup["groups"], dup["products"]) == (1, 2)
    (group,) = dup["examples"]
    assert {p["id"] for p in group["products"]} == {"a", "b"}
    assert group["similarity"] == pytest.approx(0.985, abs=0.005)     # int8 vectors: ~1e-3 off


def test_a_product_with_new_text_replaces_its_entry() -> None:
    rng = np.random.default_rng(3)
    base, other = random_units(rng, 2)
    ix = index()
    ix.add("a", 1, "kettle", "kitchen", base)
    ix.add("b", 2, "kettle!", "kitchen", at_similarity(rng, base, 0.99))
    assert ix.findings()["likely_duplicates"]["groups"] == 1
    ix.add("b", 3, "garden hose", "garden", other)                      # b's text changed
    assert (ix.products, ix.texts) == (2, 2) and ix.text_of("b") == "garden hose"
    assert ix.findings()["likely_duplicates"]["groups"] == 0
    assert ix.stats["replaced"] == 1
    v = ix.version
    ix.add("b", 3, "garden hose", "garden", other)                      # unchanged: nothing to do
    assert ix.version == v and ix.stats["unchanged"] == 1
    assert ix.remove("a") and not ix.remove("a")
    assert (ix.products, ix.texts) == (1, 1)


def test_indistinct_text_needs_k_neighbours_above_the_similarity() -> None:
    rng = np.random.default_rng(4)
    centre, far = random_units(rng, 2)
    ix = index(indistinct_similarity=0.9, indistinct_neighbours=4)
    crowd = [at_similarity(rng, centre, 0.975) for _ in range(6)]          # pairwise ~0.95
    for i, v in enumerate(crowd):
        ix.add(f"c{i}", i, f"crowd {i}", "k", v)
    ix.add("alone", 99, "alone", "k", far)
    ix.add("alone2", 99, "alone", "k", far)                                # shares a text: a duplicate, not a neighbour
    found = ix.findings()["indistinct_text"]
    assert (found["texts"], found["products"]) == (6, 6)
    top = found["examples"][0]
    assert top["neighbours"] == 5 and top["similarity"] >= 0.9 and len(top["like"]) == 3
    assert top["text"].startswith("crowd") and all(t.startswith("crowd") for t in top["like"])
    # the degrees fall exactly as texts leave: 3 left, each with 2 neighbours
    for i in range(3):
        ix.remove(f"c{i}")
    assert ix.findings()["indistinct_text"]["texts"] == 0


def test_category_mismatch_is_judged_against_the_centroid_without_itself() -> None:
    rng = np.random.default_rng(5)
    phones, shoes = random_units(rng, 2)
    ix = index(min_category=10, mismatch_similarity=0.5, sweep=0)   # judged on arrival and when the category fills
    for i in range(3):
        ix.add(f"early{i}", 1000 + i, f"phone {i}", "phones", at_similarity(rng, phones, 0.8))
    ix.add("odd", 1, "leather boots", "phones", at_similarity(rng, shoes, 0.9))
    found = ix.findings()["category_mismatch"]
    assert (found["products"], found["judged"], found["categories"]) == (0, 0, 0)   # too small to judge
    for i in range(3, 12):
        ix.add(f"early{i}", 1000 + i, f"phone {i}", "phones", at_similarity(rng, phones, 0.8))
    for i in range(4):                                                    # a small category: never judged
        ix.add(f"s{i}", 2000 + i, f"shoe {i}", "shoes", at_similarity(rng, phones, 0.1))
    found = ix.findings()["category_mismatch"]
    assert (found["products"], found["judged"], found["categories"]) == (1, 13, 1)
    (x,) = found["examples"]
    assert x["products"] == [{"id": "odd", "text": "leather boots"}] and x["category"] == "phones"
    assert x["similarity"] < 0.3
    ix.remove("odd")
    assert ix.findings()["category_mismatch"]["products"] == 0


@pytest.mark.parametrize("sweep", [0, 2])
def test_the_sweep_follows_a_centroid_that_moves(sweep: int) -> None:
    rng = np.random.default_rng(9)
    old, new = random_units(rng, 2)
    ix = index(min_category=5, mismatch_similarity=0.5, sweep=sweep)
    for i in range(10):
        ix.add(f"a{i}", i, f"a{i}", "c", at_similarity(rng, old, 0.8))
    assert ix.findings()["category_mismatch"]["products"] == 0
    for i in range(200):                 # the category's products are now mostly elsewhere
        ix.add(f"b{i}", 100 + i, f"b{i}", "c", at_similarity(rng, new, 0.8))
    found = ix.findings(examples=300)["category_mismatch"]
    flagged = {x["products"][0]["id"] for x in found["examples"]}
    assert found["products"] == len(flagged)
    if sweep:     # the first ten are far from where the category is now; the rest are judged again
        assert flagged == {f"a{i}" for i in range(10)}
    else:         # without it every product keeps the verdict of its arrival: the first b's stay flagged
        assert flagged and all(f.startswith("b") for f in flagged)


def test_memory_is_bounded_by_max_products() -> None:
    rng = np.random.default_rng(6)
    ix = index(max_products=100)
    vectors = random_units(rng, 300)
    for i, v in enumerate(vectors):
        ix.add(f"p{i}", i, f"t{i}", f"c{i % 3}", v)
    assert ix.products == 100 and ix.texts == 100
    assert ix.stats["evicted"] == 200
    assert "p299" in ix and "p199" not in ix            # the least recently added went first
    assert len(ix._ptext) <= 100 and len(ix._pid) <= 100
    assert sum(len(b) for t in ix._buckets for b in t if b is not None) == 100 * ix.tables
    mem = ix.memory_bytes()
    for i, v in enumerate(random_units(rng, 300)):
        ix.add(f"q{i}", 10_000 + i, f"u{i}", f"c{i % 3}", v)
    assert ix.products == 100 and ix.memory_bytes() <= mem * 1.1


def test_incremental_state_equals_a_rebuild_after_churn() -> None:
    """Adds, replacements, removals and evictions in any order leave the same degrees and findings
    as adding the survivors afresh: the counts are exact for what the index holds."""
    rng = np.random.default_rng(7)
    centres = random_units(rng, 8)
    ix = index(max_products=150, indistinct_similarity=0.85, indistinct_neighbours=3, sweep=0)
    texts: dict[int, np.ndarray] = {}
    for _ in range(600):
        pid = f"p{rng.integers(200)}"
        if rng.random() < 0.1:
            ix.remove(pid)
            continue
        h = int(rng.integers(400))
        if h not in texts:
            texts[h] = at_similarity(rng, centres[h % 8], float(rng.uniform(0.9, 0.999)))
        ix.add(pid, h, f"text {h}", f"cat{h % 4}", texts[h])
    fresh = index(max_products=150, indistinct_similarity=0.85, indistinct_neighbours=3, sweep=0)
    held = sorted(ix._slot_of_pid.items(), key=lambda kv: ix._touch[kv[1]])
    for pid, p in held:
        t = int(ix._ptext[p])
        fresh.add(pid, ix._hash[t], ix._text[t] or "", ix._cat_name[int(ix._pcat[p])], texts[ix._hash[t]])

    def degrees(x: CatalogIndex) -> dict[int, tuple[int, int, int]]:
        return {h: (int(x._nprod[t]), int(x._deg_dup[t]), int(x._deg_ind[t])) for h, t in x._slot_of_hash.items()}

    assert ix.stats["evicted"] > 0 and ix.stats["replaced"] > 0
    assert degrees(ix) == degrees(fresh)
    a, b = ix.findings(), fresh.findings()
    for key in ("likely_duplicates", "indistinct_text"):
        assert {k: v for k, v in a[key].items() if k != "examples"} == {k: v for k, v in b[key].items()
                                                                        if k != "examples"}
    assert a["indistinct_text"]["texts"] > 0 and a["likely_duplicates"]["groups"] > 0


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_lsh_finds_the_pairs_brute_force_finds(seed: int) -> None:
    """On clustered data, the index's near-duplicate links against models.encoder.likely_duplicates
    (exact float32 cosine over all pairs) at the same threshold: recall >= 0.97 (LSH alone: 0.998
    at 0.97; int8 vectors move pairs within ~0.002 of the threshold), and every link it finds is a
    pair at least 0.965 similar."""
    rng = np.random.default_rng(seed)
    threshold = 0.97
    ids, vectors = [], []
    for c, centre in enumerate(random_units(rng, 150)):
        for j in range(int(rng.integers(2, 8))):
            ids.append(f"c{c}-{j}")
            vectors.append(at_similarity(rng, centre, float(rng.uniform(0.975, 0.999))))
    vectors_ = np.array(vectors)
    ix = index(duplicate_similarity=threshold, adjacency=1000)
    for i, (pid, v) in enumerate(zip(ids, vectors_, strict=True)):
        ix.add(pid, i, pid, "", v)
    brute = {(a, b) for a, b, _ in likely_duplicates(ids, vectors_, threshold, max_pairs=None)}
    found = {tuple(sorted((ix._text[a] or "", ix._text[b] or ""))) for a, links in ix._adj.items() for b in links}
    assert len(brute) > 500
    recall = len(brute & found) / len(brute)
    assert recall >= 0.97, recall
    sims = {(a, b): s for a, b, s in likely_duplicates(ids, vectors_, 0.965, max_pairs=None)}
    assert all(pair in sims for pair in found)
    # the counts agree with the links, and the groups with the brute-force groups
    assert int(ix._deg_dup.sum()) == 2 * len(found)
    groups = duplicate_groups([(a, b, 1.0) for a, b in found])
    assert ix.findings()["likely_duplicates"]["groups"] == len(groups)
    assert len(groups) >= 0.9 * len(duplicate_groups([(a, b, 1.0) for a, b in brute]))


def test_the_index_is_deterministic_and_its_recall_is_as_documented() -> None:
    rng = np.random.default_rng(8)
    vectors = random_units(rng, 50)
    a, b = index(), index()
    for ix in (a, b):
        for i, v in enumerate(vectors):
            ix.add(f"p{i}", i, f"t{i}", "c", v)
    assert a.findings() == b.findings()
    (codes_a, sig_a), (codes_b, sig_b) = (x._codes(x._q[0].astype(np.float32)) for x in (a, b))
    assert (codes_a == codes_b).all() and (sig_a == sig_b).all()
    assert lsh_recall(0.97, 14, 16) > 0.997 and 0.85 < lsh_recall(0.90, 14, 16) < 0.87
    with pytest.raises(ValueError, match="384 dimensions"):
        a.add("bad", 999, "x", "c", np.ones(10, np.float32))
