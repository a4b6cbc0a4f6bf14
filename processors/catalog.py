"""Catalog findings from the product text model (#15), kept incrementally as products stream in.

``CatalogIndex.add(product_id, text_hash, text, category, vector)`` folds one product into the
index; ``findings()`` summarises what it holds. Pure and bounded: numpy and the standard library
only, no I/O, no clock.

Three findings:

- **likely_duplicates**: different product ids with identical text (the same text hash: no vector
  work at all) or near-identical text (cosine >= ``duplicate_similarity`` between their texts'
  vectors). Groups are the connected components of those links.
- **indistinct_text**: a text with at least ``indistinct_neighbours`` other *distinct* texts within
  ``indistinct_similarity``: nothing in it tells its products apart from many others. (Products that
  share one text exactly are likely duplicates, not counted here.)
- **category_mismatch**: a product whose text is far from its category's centroid: cosine with the
  normalised sum of the category's other products below ``mismatch_similarity``, judged only once
  the category holds ``min_category`` products.

How it stays incremental and bounded:

- One entry per distinct text (a text hash), however many products carry it. Its vector is kept as
  int8 with a per-vector scale (384 B at 384 dimensions) and the norm of the int8 vector. The cosine
  of two entries is ``qa . qb / (|qa| |qb|)``: the dot product of two int8 vectors sums at most
  384 * 127^2 < 2^24, so float32 computes it exactly and the similarity of a pair is the same
  number whichever of the two asks. Against float32 vectors it is off by ~1e-3.
- Near neighbours by random-hyperplane LSH (seeded, deterministic): ``tables`` tables of ``bits``
  sign bits each, computed from the int8 vector (so they can be recomputed). A new text's
  candidates are the texts in its buckets; those whose 224 signs (kept packed, 32 bytes a text)
  differ in more places than a pair at the lower threshold would, by 4 standard deviations, are
  dropped (a pair at the threshold is lost so with probability ~3e-5); the rest are verified by
  the exact cosine above. The probability that a pair at cosine s shares a bucket in one table is
  (1 - arccos(s)/pi)^bits; with the defaults (14 bits, 16 tables) a pair is found with probability
  0.998 at s = 0.97 and 0.86 at s = 0.90. The counts are kept exactly for the pairs the index finds.
- The degree of a text (its neighbours above each threshold) is kept as it changes: a new text adds
  one to each neighbour it finds; a text that leaves (its last product went, was replaced or
  evicted) asks its buckets again and subtracts the same pairs (bucket sharing and the exact cosine
  are symmetric, so exactly the pairs once counted).
- Per category a running float64 sum of its products' unit vectors and a count; a product is judged
  against ``sum - itself``. Judged when it arrives, all of a category's products when the category
  reaches ``min_category``, and ``sweep`` products per add in a round robin, so a centroid's drift
  reaches every product within ``products / sweep`` adds.
- At most ``max_products`` products: beyond, the least recently added or touched go (in batches of
  0.1%), and with them any text no other product carries. At most ``max_categories`` categories
  (the products of others are not judged, counted in ``stats``).

``findings()`` does no vector work but for its few examples: counts are vectorised reductions over
the per-entry arrays; the duplicate groups are connected components over the stored near-duplicate
links (``adjacency`` per text, beyond which a link is counted but not stored for grouping).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

FINDINGS = ("likely_duplicates", "indistinct_text", "category_mismatch")
K = TypeVar("K", str, int)   # product ids, or text slots
_FREE = np.iinfo(np.int64).max   # the touch stamp of a free product slot: never the oldest


def connected_groups(pairs: Iterable[tuple[K, K, Any]], nodes: Iterable[K] = ()) -> list[list[K]]:
    """Connected groups of the pairs (union-find), with every one of ``nodes`` in no pair a group of
    its own; largest first, ids sorted in a group. (models.encoder.duplicate_groups is this.)"""
    parent: dict[K, K] = {x: x for x in nodes}

    def find(x: K) -> K:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[K, list[K]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def lsh_recall(similarity: float, bits: int, tables: int) -> float:
    """Probability that random-hyperplane LSH puts a pair at ``similarity`` in a shared bucket."""
    p = 1.0 - math.acos(max(-1.0, min(1.0, similarity))) / math.pi
    return 1.0 - (1.0 - p ** bits) ** tables


class CatalogIndex:
    def __init__(self, *, dim: int = 384, duplicate_similarity: float = 0.97, indistinct_similarity: float = 0.90,
                 indistinct_neighbours: int = 5, mismatch_similarity: float = 0.5, min_category: int = 20,
                 max_products: int = 1_000_000, max_categories: int = 10_000, bits: int = 14, tables: int = 16,
                 seed: int = 15, examples: int = 10, sweep: int = 2, adjacency: int = 16):
        if not 1 <= bits <= 30 or tables < 1 or max_products < 1 or dim < 1:
            raise ValueError("bits 1..30, tables, max_products and dim >= 1")
        self.dim, self.bits, self.tables = dim, bits, tables
        self.duplicate_similarity, self.indistinct_similarity = duplicate_similarity, indistinct_similarity
        self.indistinct_neighbours, self.mismatch_similarity = indistinct_neighbours, mismatch_similarity
        self.min_category, self.max_products, self.max_categories = min_category, max_products, max_categories
        self.examples, self.sweep, self.adjacency = examples, sweep, adjacency
        rng = np.random.default_rng(seed)
        self._planes = rng.standard_normal((tables * bits, dim)).astype(np.float32)
        self._weights = (1 << np.arange(bits, dtype=np.int64))
        n_signs = tables * bits
        lowest = math.acos(max(-1.0, min(1.0, min(duplicate_similarity, indistinct_similarity)))) / math.pi
        self._max_differ = math.ceil(n_signs * lowest + 4 * math.sqrt(n_signs * lowest * (1 - lowest)))
        self._buckets: list[list[array | None]] = [[None] * (1 << bits) for _ in range(tables)]
        # distinct texts, by slot
        self._tcap = 0
        self._q = np.zeros((0, dim), np.int8)
        self._words = (tables * bits + 63) // 64
        self._sig = np.zeros((0, self._words), np.uint64)     # all the text's hyperplane signs
        self._qn = np.zeros(0, np.float32)
        self._nprod = np.zeros(0, np.int32)
        self._deg_dup = np.zeros(0, np.int32)
        self._deg_ind = np.zeros(0, np.int32)
        self._text: list[str | None] = []
        self._hash: list[int] = []
        self._tfree: list[int] = []
        self._slot_of_hash: dict[int, int] = {}
        self._adj: dict[int, dict[int, float]] = {}     # near-duplicate links stored for grouping
        # products, by slot
        self._pcap = 0
        self._ptext = np.zeros(0, np.int32)
        self._pcat = np.zeros(0, np.int32)
        self._psim = np.zeros(0, np.float32)
        self._touch = np.zeros(0, np.int64)
        self._pid: list[str | None] = []
        self._pfree: list[int] = []
        self._slot_of_pid: dict[str, int] = {}
        self._clock = 0
        self._sweep_at = 0
        # categories
        self._cat_of: dict[str, int] = {}
        self._cat_name: list[str] = []
        self._csum = np.zeros((0, dim), np.float64)
        self._ccount = np.zeros(0, np.int32)
        self.version = 0          # grows with every change to what the index holds
        self.stats = {"added": 0, "replaced": 0, "unchanged": 0, "evicted": 0, "texts_inserted": 0,
                      "candidates": 0, "uncategorised": 0, "categories_over_cap": 0}

    # -- sizes -----------------------------------------------------------------------------------

    @property
    def products(self) -> int:
        return len(self._slot_of_pid)

    @property
    def texts(self) -> int:
        return len(self._slot_of_hash)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._slot_of_pid

    def text_of(self, product_id: str) -> str | None:
        p = self._slot_of_pid.get(product_id)
        return None if p is None else self._text[int(self._ptext[p])]

    def memory_bytes(self) -> int:
        """The numpy arrays' bytes plus an estimate of the Python objects (ids, texts, dicts, buckets)."""
        arrays = sum(a.nbytes for a in (self._q, self._sig, self._qn, self._nprod, self._deg_dup, self._deg_ind,
                                        self._ptext, self._pcat, self._psim, self._touch, self._csum, self._ccount,
                                        self._planes))
        buckets = sum(b.buffer_info()[1] * b.itemsize + 64 for t in self._buckets for b in t if b is not None)
        lists = 8 * (len(self._text) + len(self._hash) + len(self._pid) + self.tables * (1 << self.bits))
        strings = sum(49 + len(t) for t in self._text if t is not None) + sum(
            49 + len(p) for p in self._pid if p is not None)
        dicts = 104 * (len(self._slot_of_hash) + len(self._slot_of_pid)) + 32 * len(self._slot_of_hash)
        return int(arrays + buckets + lists + strings + dicts + 300 * len(self._adj))

    # -- adding ----------------------------------------------------------------------------------

    def add(self, product_id: str, text_hash: int, text: str, category: str | None, vector: np.ndarray) -> None:
        """One product with its text's vector (L2-normalised or not); again with another text
        replaces its entry. A zero vector is ignored."""
        self._clock += 1
        category = category or ""
        p = self._slot_of_pid.get(product_id)
        if p is not None:
            t = int(self._ptext[p])
            if self._hash[t] == text_hash:
                self._touch[p] = self._clock
                self.stats["unchanged"] += 1
                old = int(self._pcat[p])
                if (self._cat_name[old] if old >= 0 else "") != category:
                    self._leave_category(p)
                    if self._join_category(p, category):
                        self._judge(np.array([p]))
                    self.version += 1
                return
            self._remove_product(p)
            self.stats["replaced"] += 1
        if len(self._slot_of_pid) >= self.max_products:
            self._evict(max(1, self.max_products // 1000))
        t = self._slot_of_hash.get(text_hash, -1)
        if t < 0:                  # a text the index does not hold: the only vector work
            q, qn = _quantize(vector, self.dim)
            if qn == 0.0:
                return
            t = self._insert_text(text_hash, text, q, qn)
        self._nprod[t] += 1
        p = self._new_product(product_id, t)
        self._sweep(p if self._join_category(p, category) else -1)
        self.stats["added"] += 1
        self.version += 1

    def remove(self, product_id: str) -> bool:
        p = self._slot_of_pid.get(product_id)
        if p is None:
            return False
        self._remove_product(p)
        self.version += 1
        return True

    # -- texts -----------------------------------------------------------------------------------

    def _codes(self, qf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The text's bucket in each table (``bits`` hyperplane signs of the int8 vector each), and
        all its signs packed in 64-bit words: its signature."""
        signs = self._planes @ qf > 0
        codes: np.ndarray = signs.reshape(self.tables, self.bits) @ self._weights
        packed = np.zeros(self._words * 8, np.uint8)
        packed[: (signs.size + 7) // 8] = np.packbits(signs)
        return codes, packed.view(np.uint64)

    def _candidates(self, codes: np.ndarray, sig: np.ndarray) -> np.ndarray:
        """The texts in the buckets, but those whose signatures differ in more signs than a pair
        at the lower threshold could (4 sigma past the expected count): a symmetric, cheap filter
        (32 bytes a candidate read instead of 384) before the exact cosine."""
        found = [np.frombuffer(b, np.int32) for table, code in zip(self._buckets, codes.tolist(), strict=True)
                 if (b := table[code]) is not None and len(b)]
        if not found:
            return np.zeros(0, np.int32)
        cands = np.unique(np.concatenate(found))
        differ = np.bitwise_count(self._sig[cands] ^ sig).sum(axis=1)
        out: np.ndarray = cands[differ <= self._max_differ]
        return out

    def _similarities(self, cands: np.ndarray, qf: np.ndarray, qn: float) -> np.ndarray:
        sims: np.ndarray = (self._q[cands].astype(np.float32) @ qf) / (self._qn[cands] * np.float32(qn))
        return sims

    def _insert_text(self, text_hash: int, text: str, q: np.ndarray, qn: float) -> int:
        qf = q.astype(np.float32)
        codes, sig = self._codes(qf)
        cands = self._candidates(codes, sig)
        t = self._tfree.pop() if self._tfree else self._grow_texts()
        self._q[t], self._qn[t], self._sig[t] = q, qn, sig
        self._text[t], self._hash[t] = text, text_hash
        self._nprod[t], self._deg_dup[t], self._deg_ind[t] = 0, 0, 0
        self._slot_of_hash[text_hash] = t
        self.stats["texts_inserted"] += 1
        if cands.size:
            self.stats["candidates"] += int(cands.size)   # verified by the exact cosine
            sims = self._similarities(cands, qf, qn)
            near = cands[sims >= self.indistinct_similarity]
            self._deg_ind[near] += 1
            self._deg_ind[t] = near.size
            dup_mask = sims >= self.duplicate_similarity
            dups = cands[dup_mask]
            if dups.size:
                self._deg_dup[dups] += 1
                self._deg_dup[t] = dups.size
                mine = self._adj.setdefault(t, {})
                for u, s in sorted(zip(dups.tolist(), sims[dup_mask].tolist(), strict=True), key=lambda x: -x[1]):
                    theirs = self._adj.setdefault(u, {})
                    if len(mine) < self.adjacency and len(theirs) < self.adjacency:
                        mine[u] = theirs[t] = s
                if not mine:
                    del self._adj[t]
        for table, code in zip(self._buckets, codes.tolist(), strict=True):
            b = table[code]
            if b is None:
                table[code] = array("i", [t])
            else:
                b.append(t)
        return t

    def _remove_text(self, t: int) -> None:
        qf = self._q[t].astype(np.float32)
        codes, sig = self._codes(qf)
        for table, code in zip(self._buckets, codes.tolist(), strict=True):
            b = table[code]
            assert b is not None
            b.remove(t)
            if not b:
                table[code] = None
        cands = self._candidates(codes, sig)
        if cands.size:
            sims = self._similarities(cands, qf, float(self._qn[t]))
            self._deg_ind[cands[sims >= self.indistinct_similarity]] -= 1
            self._deg_dup[cands[sims >= self.duplicate_similarity]] -= 1
        for u in self._adj.pop(t, {}):
            theirs = self._adj[u]
            del theirs[t]
            if not theirs:
                del self._adj[u]
        del self._slot_of_hash[self._hash[t]]
        self._text[t] = None
        self._nprod[t] = self._deg_dup[t] = self._deg_ind[t] = 0
        self._tfree.append(t)

    def _grow_texts(self) -> int:
        t = len(self._text)
        if t == self._tcap:
            cap = max(1024, 2 * self._tcap)
            self._q, self._sig = _grown(self._q, cap), _grown(self._sig, cap)
            self._qn, self._nprod = _grown(self._qn, cap), _grown(self._nprod, cap)
            self._deg_dup, self._deg_ind = _grown(self._deg_dup, cap), _grown(self._deg_ind, cap)
            self._tcap = cap
        self._text.append(None)
        self._hash.append(0)
        return t

    # -- products --------------------------------------------------------------------------------

    def _new_product(self, product_id: str, t: int) -> int:
        if self._pfree:
            p = self._pfree.pop()
        else:
            p = len(self._pid)
            if p == self._pcap:
                cap = min(self.max_products, max(1024, 2 * self._pcap))
                self._ptext, self._pcat = _grown(self._ptext, cap), _grown(self._pcat, cap)
                self._psim = _grown(self._psim, cap)
                self._touch = _grown(self._touch, cap, fill=_FREE)
                self._pcap = cap
            self._pid.append(None)
        self._pid[p] = product_id
        self._slot_of_pid[product_id] = p
        self._ptext[p], self._pcat[p], self._psim[p], self._touch[p] = t, -1, np.nan, self._clock
        return p

    def _remove_product(self, p: int) -> None:
        self._leave_category(p)
        t = int(self._ptext[p])
        self._nprod[t] -= 1
        if self._nprod[t] == 0:
            self._remove_text(t)
        pid = self._pid[p]
        assert pid is not None
        del self._slot_of_pid[pid]
        self._pid[p] = None
        self._ptext[p], self._pcat[p], self._psim[p], self._touch[p] = -1, -1, np.nan, _FREE
        self._pfree.append(p)

    def _evict(self, k: int) -> None:
        """The ``k`` least recently added or touched products go."""
        n = len(self._pid)
        k = min(k, len(self._slot_of_pid))
        oldest = np.argpartition(self._touch[:n], k - 1)[:k] if k < n else np.arange(n)
        for p in oldest.tolist():
            if self._pid[p] is not None:
                self._remove_product(p)
                self.stats["evicted"] += 1

    # -- categories ------------------------------------------------------------------------------

    def _unit(self, texts: np.ndarray | int) -> np.ndarray:
        q = self._q[texts].astype(np.float64)
        out: np.ndarray = q / self._qn[texts][..., None] if q.ndim == 2 else q / float(self._qn[texts])
        return out

    def _join_category(self, p: int, category: str) -> bool:
        """Whether the product is to be judged (its category is big enough)."""
        if not category:
            self.stats["uncategorised"] += 1
            return False
        c = self._cat_of.get(category)
        if c is None:
            if len(self._cat_name) >= self.max_categories:
                self.stats["categories_over_cap"] += 1
                return False
            c = len(self._cat_name)
            self._cat_of[category] = c
            self._cat_name.append(category)
            if c == len(self._ccount):
                cap = max(64, 2 * c)
                self._csum, self._ccount = _grown(self._csum, cap), _grown(self._ccount, cap)
        self._pcat[p] = c
        self._csum[c] += self._unit(int(self._ptext[p]))
        self._ccount[c] += 1
        if self._ccount[c] == self.min_category:       # big enough: judge all of it
            n = len(self._pid)
            self._judge(np.flatnonzero(self._pcat[:n] == c))
            return False
        return bool(self._ccount[c] > self.min_category)

    def _leave_category(self, p: int) -> None:
        c = int(self._pcat[p])
        if c < 0:
            return
        self._csum[c] -= self._unit(int(self._ptext[p]))
        self._ccount[c] -= 1
        self._pcat[p], self._psim[p] = -1, np.nan
        if self._ccount[c] == 0:
            self._csum[c] = 0.0       # no float residue left behind

    def _judge(self, ps: np.ndarray) -> None:
        """Cosine of each product's text with its category's centroid without itself."""
        ps = ps[self._pcat[ps] >= 0]
        if not ps.size:
            return
        cats = self._pcat[ps]
        v = self._unit(self._ptext[ps])
        rest = self._csum[cats] - v
        norms = np.linalg.norm(rest, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sims = np.einsum("ij,ij->i", v, rest) / norms
        sims[(self._ccount[cats] < self.min_category) | (norms == 0)] = np.nan
        self._psim[ps] = sims

    def _sweep(self, p: int) -> None:
        """Judge ``sweep`` products in a round robin (a centroid's drift reaches them all), and
        ``p`` too when it is not -1."""
        n = len(self._pid)
        ps = np.zeros(0, np.int64)
        if self.sweep > 0 and n:
            start = self._sweep_at % n
            ps = (start + np.arange(min(self.sweep, n))) % n
            self._sweep_at = start + len(ps)
        if p >= 0:
            ps = np.append(ps, p)
        if ps.size:
            self._judge(ps)

    # -- findings --------------------------------------------------------------------------------

    def findings(self, examples: int | None = None) -> dict[str, Any]:
        """What the index holds now: counts, thresholds and a few examples of each finding."""
        k = self.examples if examples is None else examples
        nt, np_ = len(self._text), len(self._pid)
        live_t = self._nprod[:nt] > 0          # a text leaves with its last product
        return {
            "products": self.products, "texts": self.texts,
            "likely_duplicates": self._duplicates(live_t, k),
            "indistinct_text": self._indistinct(live_t, k),
            "category_mismatch": self._mismatch(np_, k),
        }

    def _products_of(self, texts: Sequence[int], each: int) -> dict[int, list[str]]:
        """Up to ``each`` product ids carrying each of the texts (one pass over the products)."""
        out: dict[int, list[str]] = {t: [] for t in texts}
        if not out:
            return out
        n = len(self._pid)
        for p in np.flatnonzero(np.isin(self._ptext[:n], np.fromiter(out, np.int32))).tolist():
            ids = out[int(self._ptext[p])]
            if len(ids) < each:
                pid = self._pid[p]
                assert pid is not None
                ids.append(pid)
        for ids in out.values():
            ids.sort()
        return out

    def _duplicates(self, live_t: np.ndarray, k: int) -> dict[str, Any]:
        n = len(live_t)
        nprod, deg = self._nprod[:n], self._deg_dup[:n]
        members = live_t & ((nprod >= 2) | (deg >= 1))
        # connected components: the stored near-duplicate links, plus every member text alone
        links = ((a, b, 0) for a, near in self._adj.items() for b in near if a < b)
        groups = connected_groups(links, np.flatnonzero(members).tolist())
        group_of = {t: i for i, ts in enumerate(groups) for t in ts}
        weakest: dict[int, float] = {}   # a group's weakest stored link (1.0: identical text only)
        for a, near in self._adj.items():
            i = group_of[a]
            weakest[i] = min(weakest.get(i, 1.0), min(near.values()))
        # largest first, then the most similar; ties by text, so that the order does not depend on slots
        ranked = sorted(enumerate(groups), key=lambda g: (-int(nprod[g[1]].sum()), -weakest.get(g[0], 1.0),
                                                          min(self._text[t] or "" for t in g[1])))[:k]
        shown = {root: sorted(ts, key=lambda t: (-int(nprod[t]), t))[:5] for root, ts in ranked}
        ids = self._products_of([t for ts in shown.values() for t in ts], 5)
        out = []
        for root, ts in ranked:
            listed = [{"id": pid, "text": self._text[t]} for t in shown[root] for pid in ids[t]][:5]
            out.append({"similarity": round(min(1.0, weakest.get(root, 1.0)), 4), "texts": len(ts),
                        "size": int(nprod[ts].sum()), "products": listed})
        return {"threshold": self.duplicate_similarity, "groups": len(groups), "texts": int(members.sum()),
                "products": int(nprod[members].sum()), "examples": out}

    def _indistinct(self, live_t: np.ndarray, k: int) -> dict[str, Any]:
        n = len(live_t)
        deg = np.where(live_t, self._deg_ind[:n], 0)
        flagged = deg >= max(1, self.indistinct_neighbours)
        crowded = np.flatnonzero(flagged)
        if crowded.size > k:   # the k most crowded, with every text tied with the k-th
            crowded = crowded[deg[crowded] >= -np.partition(-deg[crowded], k - 1)[k - 1]] if k else crowded[:0]
        top: list[int] = sorted(crowded.tolist(), key=lambda t: (-int(deg[t]), self._text[t] or ""))[:k]
        ids = self._products_of(top, 5)
        out = []
        for t in top:
            qf = self._q[t].astype(np.float32)
            cands = self._candidates(*self._codes(qf))
            cands = cands[cands != t]
            sims = self._similarities(cands, qf, float(self._qn[t]))
            order = np.argsort(-sims, kind="stable")
            near = [(float(sims[i]), int(cands[i])) for i in order[: max(3, self.indistinct_neighbours)]]
            kth = near[min(len(near), self.indistinct_neighbours) - 1][0] if near else 0.0
            out.append({"similarity": round(kth, 4), "neighbours": int(deg[t]), "text": self._text[t],
                        "like": [self._text[u] for _, u in near[:3]],
                        "size": int(self._nprod[t]),
                        "products": [{"id": pid, "text": self._text[t]} for pid in ids[t]]})
        return {"threshold": self.indistinct_similarity, "neighbours": self.indistinct_neighbours,
                "texts": int(flagged.sum()), "products": int(self._nprod[:n][flagged].sum()), "examples": out}

    def _mismatch(self, n: int, k: int) -> dict[str, Any]:
        sims = self._psim[:n]
        with np.errstate(invalid="ignore"):
            flagged = sims < self.mismatch_similarity      # NaN (not judged) is never flagged
        judged = np.isfinite(sims)
        found = np.flatnonzero(flagged)
        if found.size > k:   # the k least similar, with every product tied with the k-th
            found = found[sims[found] <= np.partition(sims[found], k - 1)[k - 1]] if k else found[:0]
        out = []
        for p in sorted(found.tolist(), key=lambda p: (float(sims[p]), self._pid[p] or ""))[:k]:
            t, c, pid = int(self._ptext[p]), int(self._pcat[p]), self._pid[p]
            out.append({"similarity": round(float(sims[p]), 4), "category": self._cat_name[c],
                        "products": [{"id": pid, "text": self._text[t]}]})
        return {"threshold": self.mismatch_similarity, "min_category": self.min_category,
                "categories": int((self._ccount >= self.min_category).sum()) if self.min_category > 0 else
                int((self._ccount > 0).sum()),
                "judged": int(judged.sum()), "products": int(flagged.sum()), "examples": out}


def _quantize(vector: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """int8 with a per-vector scale (the largest component at 127), and the int8 vector's norm."""
    v = np.asarray(vector, np.float32).reshape(-1)
    if v.shape[0] != dim:
        raise ValueError(f"a vector of {dim} dimensions was expected, not {v.shape[0]}")
    top = float(np.abs(v).max()) if v.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return np.zeros(dim, np.int8), 0.0
    q = np.rint(v * (127.0 / top)).astype(np.int8)
    return q, float(np.linalg.norm(q.astype(np.float32)))


def _grown(a: np.ndarray, cap: int, fill: Any = 0) -> np.ndarray:
    out = np.full((cap, *a.shape[1:]), fill, a.dtype)
    out[: len(a)] = a
    return out
