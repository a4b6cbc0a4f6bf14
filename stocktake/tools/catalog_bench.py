"""Products/s through the catalog findings index, and its memory (README: Catalog findings).

    python -m stocktake.tools.catalog_bench --products 200000            # synthetic 384-d vectors
    python -m stocktake.tools.catalog_bench --rees46 /path/encoder.onnx  # the REES46 sample's texts

Synthetic catalog: ``--categories`` random unit centres; a product is its category's centre plus
noise (cosine ~0.5 between two products of a category, ~0.7 with the centroid). Of every 100
products 4 repeat an earlier product's text (same hash), 4 are near-duplicates of an earlier one
(cosine ~0.98), 1 sits in the wrong category. Vectors are made in chunks (never 1 M x 384 floats
at once); the clock runs over ``add`` only. Memory: the process's resident set before and after
(the chunks freed), and the index's own estimate.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stocktake.processors.catalog import CatalogIndex

DIM = 384


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def synthetic(n: int, categories: int, seed: int = 7, chunk: int = 10_000
              ) -> Iterator[tuple[str, int, str, str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((categories, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    recent: list[tuple[int, np.ndarray]] = []      # a few earlier products to repeat
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        cats = rng.integers(0, categories, m)
        noise = rng.standard_normal((m, DIM)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        vectors = centres[cats] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        kinds = rng.integers(0, 100, m)
        for j in range(m):
            i = start + j
            h, v, cat = i, vectors[j], int(cats[j])
            if recent and kinds[j] < 4:                       # the same text as an earlier product
                h, v = recent[int(rng.integers(len(recent)))]
            elif recent and kinds[j] < 8:                     # near-identical text
                _, base = recent[int(rng.integers(len(recent)))]
                v = base + 0.2 * noise[(j + 1) % m]
                v = v / np.linalg.norm(v)
            elif kinds[j] == 8:                               # in the wrong category
                cat = (cat + 1) % categories
            if len(recent) < 1000:
                recent.append((h, v))
            elif kinds[j] == 99:
                recent[int(rng.integers(len(recent)))] = (h, v)
            yield f"p{i}", h, f"text {h}", f"cat{cat}", v


def run(products: Any, index: CatalogIndex, report_every: int = 0, trace: bool = False) -> dict[str, Any]:
    """``trace``: count the index's bytes with tracemalloc (every allocation, numpy's too; about
    2x slower, so its rate is not the one to quote)."""
    if trace:
        tracemalloc.start()
    rss0 = _rss_mb()
    spent, n, marks = 0.0, 0, []
    for pid, h, text, cat, v in products:
        t = time.perf_counter()
        index.add(pid, h, text, cat, v)
        spent += time.perf_counter() - t
        n += 1
        if report_every and n % report_every == 0:
            marks.append({"products": n, "per_s": round(n / spent)})
    del products
    traced = tracemalloc.get_traced_memory()[0] / 2**20 if trace else None
    tracemalloc.stop()
    t = time.perf_counter()
    found = index.findings()
    findings_s = time.perf_counter() - t
    return {"products_added": n, "seconds": round(spent, 2), "products_per_s": round(n / spent) if spent else None,
            "marks": marks, "held": index.products, "texts": index.texts,
            "findings_s": round(findings_s, 3), "rss_growth_mb": round(_rss_mb() - rss0, 1),
            "traced_mb": None if traced is None else round(traced, 1),
            "estimate_mb": round(index.memory_bytes() / 2**20, 1),
            "cosines_per_new_text": round(index.stats["candidates"] / max(1, index.stats["texts_inserted"]), 1),
            "counts": {k: {kk: vv for kk, vv in found[k].items() if kk != "examples"}
                       for k in ("likely_duplicates", "indistinct_text", "category_mismatch")}}


def rees46(encoder_path: Path) -> list[tuple[str, int, str, str, np.ndarray]]:
    from stocktake import sources
    from stocktake.models.encoder import TextEncoder, product_text
    from stocktake.services.embedding import text_hash

    last: dict[str, dict[str, Any]] = {}
    for e in sources.load_events("rees46"):
        if e.stream == "product":
            last[str(e.event.get("product_id"))] = e.event
    texts = {pid: product_text(f) for pid, f in last.items()}
    distinct = sorted({t for t in texts.values() if t})
    vectors = dict(zip(distinct, TextEncoder(encoder_path, "cpu", threads=1).encode(distinct), strict=True))
    return [(pid, text_hash(t), t, str(last[pid].get("category") or ""), vectors[t])
            for pid, t in texts.items() if t]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=200_000)
    ap.add_argument("--categories", type=int, default=2_000)
    ap.add_argument("--max-products", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=14)
    ap.add_argument("--tables", type=int, default=16)
    ap.add_argument("--rees46", type=Path, help="an exported text_encoder.onnx: the REES46 sample's products")
    ap.add_argument("--trace", action="store_true", help="measure the index's memory with tracemalloc")
    ap.add_argument("--every", type=int, default=0, help="print the rate every N products")
    args = ap.parse_args(argv)
    index = CatalogIndex(max_products=args.max_products, bits=args.bits, tables=args.tables)
    if args.rees46:
        rows = rees46(args.rees46)
        out = run(iter(rows), index)
        out["findings"] = index.findings(examples=3)
    else:
        out = run(synthetic(args.products, args.categories), index, args.every, args.trace)
    print(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
