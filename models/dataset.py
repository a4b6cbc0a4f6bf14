"""Training data from an event history: (stream, Event) pairs in event-time order, the
feature snapshots the worker would compute, and purchase labels. No torch here.

A purchase is a behaviour ``purchase`` or a ``created``/``paid`` transaction; the two
records of one act (REES46 sends both) count once, keyed by (user, product, ts).
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stocktake.models.encoder import product_text
from stocktake.processors.contract import Event, normalize
from stocktake.processors.contract_spec import shipped
from stocktake.processors.event_order import STREAM_RANK
from stocktake.processors.features import NEW_ORDER, PRODUCT_FEATURES, USER_FEATURES, FeatureState
from stocktake.sources import load_events

log = logging.getLogger("stocktake.models.train")

USER_MODEL = "user_propensity"
PRODUCT_MODEL = "product_demand"
HORIZON_S = {USER_MODEL: 30 * 60, PRODUCT_MODEL: 60 * 60}
# The features are those of contract v1's streams: their events are judged under the shipped
# contracts (read once); events of other streams (schemaless, or a file's own) are left out.
CONTRACTS = shipped()


# ------------------------------------------------------------------ history


def history(source: str, *, data_dir: Path | None = None, store: Any = None,
            topic_prefix: str | None = None) -> list[tuple[str, Event]]:
    """(stream, Event) pairs in event-time order (stable) from "rees46", "olist", a
    contract file, or "store": the valid events stored in ClickHouse (ingest_log), those of
    ``topic_prefix`` (``Settings.topic_dot_prefix``; a prefix without its dot gets one) if given.
    Only the streams of the shipped contracts (behaviour, product, transaction), judged under them."""
    items: list[tuple[str, Event]] = []
    if source == "store":
        if store is None:
            raise ValueError("source 'store' needs a store")
        where = "status = 'valid' AND stream IN {streams:Array(String)}"
        params: dict[str, Any] = {"streams": sorted(CONTRACTS)}
        if topic_prefix:
            where += " AND startsWith(topic, {p:String})"
            params["p"] = topic_prefix.rstrip(".") + "."
        rows = store.rows(
            # at equal times: catalog, then behaviour, then transactions (the replay's convention:
            # a product is announced before it is viewed, viewed before it is sold); the scorer
            # folds in the same order (processors/event_order.STREAM_RANK)
            f"SELECT stream, payload FROM ingest_log WHERE {where} ORDER BY ts, "
            "transform(stream, {ranked:Array(String)}, {ranks:Array(UInt8)}, 3), partition, offset, idx",
            {**params, "ranked": list(STREAM_RANK), "ranks": list(STREAM_RANK.values())})
        for stream, payload in rows:
            stored = stored_event(stream, payload)
            if stored is not None:
                items.append((stream, stored))
    else:
        for rev in load_events(source, data_dir):
            contract = CONTRACTS.get(rev.stream)
            if contract is None:
                continue
            ev = normalize(contract, rev.event)
            if isinstance(ev, Event):
                items.append((rev.stream, ev))
    items.sort(key=lambda it: it[1].ts_ms)  # stable
    return items


def stored_event(stream: str, payload: str | bytes, ts_ms: int = -1) -> Event | None:
    """A valid event as stored in ``ingest_log`` (its payload), judged again under contract v1
    as training sees it; None for a stream without features or a payload it refuses.
    ``ts_ms``: the stored event time, for an event whose payload names none."""
    contract = CONTRACTS.get(stream)
    if contract is None:
        return None
    try:
        obj = orjson.loads(payload)
    except (TypeError, ValueError):
        return None
    ev = normalize(contract, obj)
    if not isinstance(ev, Event):
        return None
    return ev._replace(ts_ms=ts_ms) if ev.ts_ms < 0 <= ts_ms else ev


# ------------------------------------------------------------------ datasets


@dataclass
class Dataset:
    name: str
    features: tuple[str, ...]
    X: np.ndarray  # float32 [n, F]
    ts: np.ndarray  # int64 [n] event time of each example
    seq: np.ndarray  # int64 [n] position of the example's event in the history
    key: list[str]  # user or product id
    baseline: np.ndarray  # float32 [n]
    future: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ts of the next purchase act, -1

    def labels(self, censor_ms: int | np.ndarray) -> np.ndarray:
        """1 when the next purchase act is within the horizon and not after censor_ms."""
        horizon = HORIZON_S[self.name] * 1000
        nxt = self.future
        return ((nxt >= 0) & (nxt <= self.ts + horizon) & (nxt <= censor_ms)).astype(np.float32)


def _purchase_acts(items: Sequence[tuple[str, Event]]) -> tuple[dict[str, list[tuple[int, int]]],
                                                                   dict[str, list[tuple[int, int]]]]:
    """Per user and per product: (first position, ts) of each purchase act, in order."""
    first: dict[tuple[str, str, int], int] = {}
    for i, (stream, ev) in enumerate(items):
        if (stream == "behaviour" and ev.kind == "purchase") or (stream == "transaction" and ev.kind in NEW_ORDER):
            first.setdefault((ev.user_id, ev.product_id, ev.ts_ms), i)
    by_user: dict[str, list[tuple[int, int]]] = {}
    by_product: dict[str, list[tuple[int, int]]] = {}
    for (uid, pid, ts), i in sorted(first.items(), key=lambda kv: kv[1]):
        by_user.setdefault(uid, []).append((i, ts))
        by_product.setdefault(pid, []).append((i, ts))
    return by_user, by_product


def _next_after(acts: list[tuple[int, int]] | None, i: int) -> int:
    if not acts:
        return -1
    k = bisect.bisect_right(acts, (i, math.inf))
    return acts[k][1] if k < len(acts) else -1


def build_datasets(items: Sequence[tuple[str, Event]],
                   embed: Callable[[list[str]], np.ndarray] | None = None,
                   state: FeatureState | None = None) -> tuple[Dataset, Dataset]:
    """Replay the history through a FeatureState and snapshot features after every
    behaviour/transaction event, for its user and its product. ``embed`` maps product
    texts to vectors (set after each catalog upsert, as the worker does)."""
    state = state or FeatureState()
    by_user, by_product = _purchase_acts(items)
    vectors: dict[str, np.ndarray] = {}
    if embed is not None:
        texts = sorted({product_text(ev.fields) for s, ev in items if s == "product" and ev.kind == "upsert"})
        if texts:
            started = time.monotonic()
            vecs = embed(texts)
            vectors = dict(zip(texts, vecs, strict=True))
            log.info("embedded %d product texts in %.1fs", len(texts), time.monotonic() - started)
    u_rows: list[np.ndarray] = []
    p_rows: list[np.ndarray] = []
    u_meta: list[tuple[int, int, str, int]] = []
    p_meta: list[tuple[int, int, str, int]] = []
    ucart = USER_FEATURES.index("u_session_carts")
    pc = PRODUCT_FEATURES.index("p_carts_1h")
    pb = PRODUCT_FEATURES.index("p_purchases_1h")
    po = PRODUCT_FEATURES.index("p_orders_1h")
    for i, (stream, ev) in enumerate(items):
        state.update(stream, [ev])
        if stream == "product":
            if vectors and ev.kind == "upsert":
                v = vectors.get(product_text(ev.fields))
                if v is not None:
                    state.set_embedding(ev.product_id, v)
            continue
        if ev.user_id:
            u_rows.append(state.user_matrix([ev.user_id], ev.ts_ms)[0])
            u_meta.append((ev.ts_ms, i, ev.user_id, _next_after(by_user.get(ev.user_id), i)))
        if ev.product_id:
            p_rows.append(state.product_matrix([ev.product_id], ev.ts_ms)[0])
            p_meta.append((ev.ts_ms, i, ev.product_id, _next_after(by_product.get(ev.product_id), i)))

    def make(name: str, rows: list[np.ndarray], meta: list[tuple[int, int, str, int]],
             feats: tuple[str, ...]) -> Dataset:
        X = np.stack(rows).astype(np.float32) if rows else np.zeros((0, len(feats)), np.float32)
        if name == USER_MODEL:
            base = (X[:, ucart] > 0).astype(np.float32)
        else:
            base = ((X[:, pc] + X[:, pb] + X[:, po]) > 0.05).astype(np.float32)
        return Dataset(name, feats, X, np.array([m[0] for m in meta], np.int64),
                       np.array([m[1] for m in meta], np.int64), [m[2] for m in meta], base,
                       np.array([m[3] for m in meta], np.int64))

    return make(USER_MODEL, u_rows, u_meta, USER_FEATURES), make(PRODUCT_MODEL, p_rows, p_meta, PRODUCT_FEATURES)


