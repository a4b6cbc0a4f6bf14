"""In-stream features of users and products, from contract v1 events (pure; numpy only).

    state = FeatureState()
    users, products = state.update("behaviour", events)      # ids whose features changed
    X = state.user_matrix(sorted(users), now_ms)               # float32 [n, len(USER_FEATURES)]
    state.set_embedding(product_id, vector)                    # from models.encoder.TextEncoder

Windowed counts are exponentially decayed counts with time constant = the window
(``u_views_1h`` = sum over views of exp(-age / 1 h)): O(1) memory per entity, exact
under any interleaving (a sum does not care about order), and a smooth stand-in for
"how many in the last hour". Recencies are seconds, capped at ``CAP_S`` (never seen =
the cap). Everything is in event time: ``now_ms`` is the feature time asked for,
never the wall clock.

Bounded: at most ``max_users`` / ``max_products`` entities (least recently touched
evicted first), entities idle for ``ttl_s`` of event time expire (the watermark is
the newest event time seen), and every per-entity set is capped. Rebuildable: the
state is a function of the event sequence only, so replaying stored events (in ts
order) through ``update()`` reproduces it, however the sequence is cut into calls.
The expiry sweep runs when the watermark crosses a multiple of ``ttl_s / 16``, a
point of the sequence, not of the call boundaries, for the same reason.

Product text embeddings (384-d, L2-normalised, kept as float16) enter the product
features as cosine similarities to store-wide decayed centroids (1 h) of the
embeddings of viewed, carted and purchased products ("is this product like what
sells right now"), plus a presence flag.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from stocktake.processors.contract import Event

DEFAULT_WINDOWS: tuple[int, ...] = (300, 3600, 86400)
CAP_S = 7 * 86400.0  # recency features saturate here (also "never")
SESSION_GAP_S = 1800  # without a session_id, a gap this long starts a new session
SET_CAP = 256  # distinct products/categories/users remembered per entity
OPEN_CART_CAP = 64
ORDER_CAP = 64
EMBED_DIM = 384
NEW_ORDER = frozenset({"created", "paid"})  # transaction statuses that mean "bought"
# The streams whose events make features: contract v1's. Events of any other stream (judged
# schemaless, or under a file's own contract) have none to make; update() refuses them.
STREAMS = frozenset({"behaviour", "product", "transaction"})


def _label(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400 * 24}h" if seconds > 86400 else "24h"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def user_feature_names(windows: Sequence[int] = DEFAULT_WINDOWS) -> tuple[str, ...]:
    names: list[str] = []
    for w in windows:
        lab = _label(w)
        names += [f"u_events_{lab}", f"u_views_{lab}", f"u_carts_{lab}", f"u_purchases_{lab}"]
    return (*names,
            "u_recency_s", "u_since_cart_s", "u_since_purchase_s", "u_age_s",
            "u_session_events", "u_session_views", "u_session_carts", "u_session_purchases",
            "u_session_duration_s", "u_session_products",
            "u_session_cart_rate", "u_emb_session_coherence", "u_emb_view_sim_session",
            "u_open_carts", "u_open_cart_value",
            "u_distinct_products", "u_distinct_categories",
            "u_price_mean", "u_price_max",
            "u_orders", "u_order_amount", "u_known")


def product_feature_names(windows: Sequence[int] = DEFAULT_WINDOWS) -> tuple[str, ...]:
    names: list[str] = []
    for w in windows:
        lab = _label(w)
        names += [f"p_views_{lab}", f"p_carts_{lab}", f"p_purchases_{lab}", f"p_orders_{lab}"]
    return (*names,
            "p_conversion", "p_cart_rate",
            "p_recency_s", "p_since_purchase_s", "p_age_s", "p_distinct_users",
            "p_price", "p_has_price", "p_price_change", "p_price_changes", "p_price_rel_category",
            "p_stock", "p_has_stock", "p_in_stock",
            "p_completeness", "p_in_catalog", "p_deleted",
            "p_emb_present", "p_emb_sim_viewed", "p_emb_sim_carted", "p_emb_sim_purchased", "p_known")


USER_FEATURES: tuple[str, ...] = user_feature_names()
PRODUCT_FEATURES: tuple[str, ...] = product_feature_names()

# Features a model should see on a log scale (counts, seconds, money); the rest are
# rates, flags or similarities already in a small range. Used by models.train.
LOG_SCALED: frozenset[str] = frozenset(
    n for n in (*USER_FEATURES, *PRODUCT_FEATURES)
    if "_emb_" not in n and not n.startswith((
        "p_has_", "p_in_", "p_conversion", "p_cart_rate", "p_completeness", "p_deleted", "p_known", "u_known",
        "p_price_change", "p_price_rel", "u_session_cart_rate"))
)
_COMPLETENESS_FIELDS = ("title", "category", "brand", "price", "currency", "stock")


def _num(v: Any) -> float | None:
    if type(v) in (int, float) and math.isfinite(v):
        return float(v)
    return None


def _cap(s: float) -> float:
    return s if s < CAP_S else CAP_S


class _Decay:
    """Decayed counters: ``c[k]`` holds sum(exp(-(ref - t) / tau)) at time ``ref``."""

    __slots__ = ("c", "ref")

    def __init__(self, n: int):
        self.c = [0.0] * n
        self.ref = 0

    def add(self, ts: int, idx: Sequence[int], taus: Sequence[float], per: int) -> None:
        """Count one event at ``ts`` in counters idx (one block of ``per`` per tau)."""
        c = self.c
        if ts >= self.ref:
            if self.ref and ts > self.ref:
                dt = ts - self.ref
                for w, tau in enumerate(taus):
                    f = math.exp(-dt / tau)
                    base = w * per
                    for k in range(base, base + per):
                        c[k] *= f
            self.ref = ts
            for w in range(len(taus)):
                for i in idx:
                    c[w * per + i] += 1.0
        else:  # late event: weight it as of the reference time
            dt = self.ref - ts
            for w, tau in enumerate(taus):
                f = math.exp(-dt / tau)
                for i in idx:
                    c[w * per + i] += f

    def read(self, now_ms: int, taus: Sequence[float], per: int) -> list[float]:
        dt = max(0, now_ms - self.ref)
        out = list(self.c)
        if dt:
            for w, tau in enumerate(taus):
                f = math.exp(-dt / tau)
                for k in range(w * per, w * per + per):
                    out[k] *= f
        return out


class _User:
    __slots__ = ("cart_ms", "cats", "counts", "first_ms", "last_ms", "open_carts", "order_amount",
                 "orders", "price_max", "price_n", "price_sum", "products", "purchase_ms",
                 "s_carts", "s_events", "s_id", "s_last_ms", "s_nvec", "s_products", "s_purchases", "s_sim",
                 "s_start_ms", "s_vec", "s_views")

    def __init__(self, ts: int, nw: int):
        self.counts = _Decay(4 * nw)
        self.first_ms = self.last_ms = ts
        self.cart_ms = self.purchase_ms = -1
        self.s_id: str | None = None
        self.s_start_ms = self.s_last_ms = ts
        self.s_events = self.s_views = self.s_carts = self.s_purchases = 0
        self.s_products: set[str] = set()
        # the session's viewed products' text: the sum of their embeddings, how many, and how
        # like the earlier ones the latest view was (0 when the latest event is not a view)
        self.s_vec: np.ndarray | None = None
        self.s_nvec = 0
        self.s_sim = 0.0
        self.open_carts: dict[str, float] = {}
        self.products: set[str] = set()
        self.cats: set[str] = set()
        self.price_sum = 0.0
        self.price_n = 0
        self.price_max = 0.0
        self.orders: dict[str, None] = {}
        self.order_amount = 0.0


class _Product:
    __slots__ = ("cat", "complete", "counts", "deleted", "emb", "emb_sims", "first_ms", "in_catalog", "last_ms",
                 "orders", "pcat", "price", "price_change", "price_changes", "purchase_ms", "rel_cat", "seen_ms",
                 "stock", "users")

    def __init__(self, ts: int, nw: int):
        self.counts = _Decay(4 * nw)
        self.first_ms = self.last_ms = ts
        self.seen_ms = -1  # last behaviour event naming it
        self.purchase_ms = -1
        self.users: set[str] = set()
        self.price: float | None = None
        self.price_change = 0.0
        self.price_changes = 0
        self.stock: float | None = None
        self.complete = 0.0
        self.in_catalog = False
        self.deleted = False
        self.cat: str | None = None
        self.pcat: str | None = None  # the category its price is counted under (category means)
        self.orders: dict[str, None] = {}
        self.emb: np.ndarray | None = None
        # Store-wide comparisons, as of the product's last event (see FeatureState._capture)
        self.rel_cat = 0.0
        self.emb_sims: tuple[float, ...] = (0.0, 0.0, 0.0)


_B_VIEW, _B_CART, _B_PURCHASE = 1, 2, 3  # counter slots: 0 = any event


class FeatureState:
    """Bounded, rebuildable per-user and per-product feature state (see module doc)."""

    def __init__(self, *, max_users: int = 200_000, max_products: int = 200_000,
                 windows_s: Sequence[int] = DEFAULT_WINDOWS, ttl_s: float | None = None):
        if not windows_s or any(w <= 0 for w in windows_s):
            raise ValueError("windows_s must be positive seconds")
        if max_users < 1 or max_products < 1:
            raise ValueError("max_users and max_products must be >= 1")
        self.windows_s = tuple(int(w) for w in windows_s)
        self.user_features = user_feature_names(self.windows_s)
        self.product_features = product_feature_names(self.windows_s)
        self.max_users = max_users
        self.max_products = max_products
        self.ttl_ms = int((ttl_s if ttl_s is not None else 2 * max(self.windows_s)) * 1000)
        self._sweep_ms = max(1, self.ttl_ms // 16)
        self._sweep_bucket = 0
        self._taus = tuple(w * 1000.0 for w in self.windows_s)
        self._nw = len(self.windows_s)
        # the "1h"-like window drives the embedding centroids: the middle one
        self._centroid_tau = self._taus[len(self._taus) // 2]
        self.users: OrderedDict[str, _User] = OrderedDict()
        self.products: OrderedDict[str, _Product] = OrderedDict()
        self.watermark_ms = 0
        self._cat_sum: dict[str, float] = {}  # category -> sum/count of its products' current prices
        self._cat_n: dict[str, int] = {}
        self._centroid = np.zeros((3, EMBED_DIM), np.float64)  # viewed, carted, purchased
        self._centroid_ref = 0

    # ------------------------------------------------------------------ bookkeeping

    def __len__(self) -> int:
        return len(self.users) + len(self.products)

    def _advance(self, ts: int) -> None:
        if ts > self.watermark_ms:
            self.watermark_ms = ts
            bucket = ts // self._sweep_ms
            if bucket != self._sweep_bucket:
                self._sweep_bucket = bucket
                self._sweep()

    def _sweep(self) -> None:
        """Drop entities idle for ttl. Touch order ~ event time, so stop at the first
        fresh one (an out-of-order straggler may survive until it reaches the front)."""
        limit = self.watermark_ms - self.ttl_ms
        while self.users and next(iter(self.users.values())).last_ms < limit:
            self.users.popitem(last=False)
        while self.products:
            p = next(iter(self.products.values()))
            if p.last_ms >= limit:
                break
            self.products.popitem(last=False)
            self._forget_price(p)

    def _user(self, uid: str, ts: int) -> _User:
        u = self.users.get(uid)
        if u is not None and u.last_ms < self.watermark_ms - self.ttl_ms:
            del self.users[uid]  # expired: starts afresh, as if the sweep had taken it
            u = None
        if u is None:
            if len(self.users) >= self.max_users:
                self.users.popitem(last=False)
            u = self.users[uid] = _User(ts, self._nw)
        else:
            self.users.move_to_end(uid)
        return u

    def _product(self, pid: str, ts: int) -> _Product:
        p = self.products.get(pid)
        if p is not None and p.last_ms < self.watermark_ms - self.ttl_ms:
            self._forget_price(p)
            del self.products[pid]
            p = None
        if p is None:
            if len(self.products) >= self.max_products:
                _, old = self.products.popitem(last=False)
                self._forget_price(old)
            p = self.products[pid] = _Product(ts, self._nw)
        else:
            self.products.move_to_end(pid)
        return p

    def _forget_price(self, p: _Product) -> None:
        cat = p.pcat
        if cat is not None and p.price is not None:
            self._cat_sum[cat] -= p.price
            self._cat_n[cat] -= 1
            if self._cat_n[cat] <= 0:
                del self._cat_n[cat], self._cat_sum[cat]
        p.pcat = None

    def _remember_price(self, p: _Product) -> None:
        cat = p.cat
        if p.price is not None and cat is not None:
            if cat not in self._cat_n and len(self._cat_n) >= self.max_products:
                return
            self._cat_sum[cat] = self._cat_sum.get(cat, 0.0) + p.price
            self._cat_n[cat] = self._cat_n.get(cat, 0) + 1
            p.pcat = cat

    def _centroid_add(self, row: int, emb: np.ndarray | None, ts: int) -> None:
        if emb is None:
            return
        if ts >= self._centroid_ref:
            if self._centroid_ref and ts > self._centroid_ref:
                self._centroid *= math.exp(-(ts - self._centroid_ref) / self._centroid_tau)
            self._centroid_ref = ts
            self._centroid[row] += emb
        else:
            self._centroid[row] += emb * math.exp(-(self._centroid_ref - ts) / self._centroid_tau)

    # ------------------------------------------------------------------ updates

    def update(self, stream: str, events: Iterable[Event]) -> tuple[set[str], set[str]]:
        """Apply valid events of one stream, in order. Returns (user ids, product ids)
        whose features changed."""
        fn = {"behaviour": self._behaviour, "product": self._catalog,
              "transaction": self._transaction}.get(stream)
        if fn is None:
            raise ValueError(f"unknown stream {stream!r}")
        users: set[str] = set()
        products: set[str] = set()
        for ev in events:
            self._advance(ev.ts_ms)
            fn(ev, users, products)
        return users, products

    def _behaviour(self, ev: Event, users: set[str], products: set[str]) -> None:
        ts, kind, pid = ev.ts_ms, ev.kind, ev.product_id
        slot = _B_VIEW if kind in ("view", "click") else _B_CART if kind == "cart" else \
            _B_PURCHASE if kind == "purchase" else 0
        f = ev.fields
        u = self._user(ev.user_id, ts)
        users.add(ev.user_id)
        u.counts.add(ts, (0, slot) if slot else (0,), self._taus, 4)
        sid = f.get("session_id")
        if (sid is not None and sid != u.s_id) or (sid is None and ts - u.s_last_ms > SESSION_GAP_S * 1000) \
                or u.s_events == 0:
            u.s_id = sid
            u.s_start_ms = u.s_last_ms = ts
            u.s_events = u.s_views = u.s_carts = u.s_purchases = 0
            u.s_products = set()
            u.s_vec, u.s_nvec = None, 0
        u.s_sim = 0.0
        u.s_events += 1
        u.s_last_ms = max(u.s_last_ms, ts)
        u.last_ms = max(u.last_ms, ts)
        p: _Product | None = None
        price: float | None = None
        cat: str | None = None
        if pid:
            p = self._product(pid, ts)
            products.add(pid)
            price = p.price if p.price is not None else _num(f.get("price"))
            cat = p.cat or f.get("category_code") or f.get("category_id") or None
            if p.cat is None and cat is not None and not p.in_catalog:
                p.cat = str(cat)
            if len(u.s_products) < SET_CAP:
                u.s_products.add(pid)
            if len(u.products) < SET_CAP:
                u.products.add(pid)
            if cat is not None and len(u.cats) < SET_CAP:
                u.cats.add(str(cat))
            if price is not None:
                u.price_sum += price
                u.price_n += 1
                u.price_max = max(u.price_max, price)
            if len(p.users) < SET_CAP * 4:
                p.users.add(ev.user_id)
            p.last_ms = max(p.last_ms, ts)
            p.seen_ms = max(p.seen_ms, ts)
            if slot:
                p.counts.add(ts, (slot - 1,), self._taus, 4)
                self._centroid_add(slot - 1, p.emb, ts)
        if slot == _B_VIEW:
            u.s_views += 1
            if p is not None and p.emb is not None:
                self._session_view(u, p.emb)
        elif slot == _B_CART:
            u.s_carts += 1
            u.cart_ms = max(u.cart_ms, ts)
            if pid and (pid in u.open_carts or len(u.open_carts) < OPEN_CART_CAP):
                u.open_carts[pid] = price or 0.0
        elif slot == _B_PURCHASE:
            u.s_purchases += 1
            u.purchase_ms = max(u.purchase_ms, ts)
            u.open_carts.pop(pid, None)
            if p is not None:
                p.purchase_ms = max(p.purchase_ms, ts)
        elif kind == "remove_from_cart" and pid:
            u.open_carts.pop(pid, None)
        if p is not None:
            self._capture(p)

    @staticmethod
    def _session_view(u: _User, emb: np.ndarray) -> None:
        v = emb.astype(np.float32)
        if u.s_vec is None:
            u.s_vec = v.copy()
        else:
            n = float(np.linalg.norm(u.s_vec))
            u.s_sim = float(u.s_vec @ v) / n if n > 0 else 0.0
            u.s_vec += v
        u.s_nvec += 1

    def _catalog(self, ev: Event, users: set[str], products: set[str]) -> None:
        p = self._product(ev.product_id, ev.ts_ms)
        products.add(ev.product_id)
        p.last_ms = max(p.last_ms, ev.ts_ms)
        if ev.kind == "delete":
            self._forget_price(p)  # out of its category's mean price
            p.deleted = True
            p.in_catalog = False
            self._capture(p)
            return
        f = ev.fields
        self._forget_price(p)
        p.deleted = False
        p.in_catalog = True
        cat = f.get("category")
        if isinstance(cat, str) and cat:
            p.cat = cat
        price = _num(f.get("price"))
        if price is not None:
            if p.price is not None and price != p.price:
                p.price_change = (price - p.price) / p.price if p.price else 1.0
                p.price_changes += 1
            p.price = price
        stock = _num(f.get("stock"))
        if stock is not None:
            p.stock = stock
        p.complete = sum(f.get(k) not in (None, "") for k in _COMPLETENESS_FIELDS) / len(_COMPLETENESS_FIELDS)
        self._remember_price(p)
        self._capture(p)

    def _transaction(self, ev: Event, users: set[str], products: set[str]) -> None:
        ts = ev.ts_ms
        u = self._user(ev.user_id, ts)
        p = self._product(ev.product_id, ts)
        users.add(ev.user_id)
        products.add(ev.product_id)
        u.last_ms = max(u.last_ms, ts)
        u.s_sim = 0.0   # the latest event is not a view
        p.last_ms = max(p.last_ms, ts)
        if ev.kind not in NEW_ORDER:
            self._capture(p)
            return
        key = ev.order_id
        if key not in u.orders:
            if len(u.orders) >= ORDER_CAP:
                del u.orders[next(iter(u.orders))]
            u.orders[key] = None
            amount = _num(ev.fields.get("amount"))
            u.order_amount += amount or 0.0
            u.purchase_ms = max(u.purchase_ms, ts)
            u.open_carts.pop(ev.product_id, None)
        if key not in p.orders:
            if len(p.orders) >= ORDER_CAP:
                del p.orders[next(iter(p.orders))]
            p.orders[key] = None
            p.purchase_ms = max(p.purchase_ms, ts)
            p.counts.add(ts, (3,), self._taus, 4)
        self._capture(p)

    def _capture(self, p: _Product) -> None:
        """The product's store-wide comparisons, as of now (its latest event): its price against
        its category's mean, its text against what sells. Read with the rest of its features, so
        a score depends on the events up to the product's own last one, not on what came after
        it in the same scoring batch (and training, which reads right after each event, sees
        the same values)."""
        cat = p.cat
        n = self._cat_n.get(cat, 0) if cat is not None else 0
        mean = self._cat_sum[cat] / n if n else 0.0   # type: ignore[index]
        p.rel_cat = p.price / mean if (p.price is not None and mean > 0) else 0.0
        self._capture_text(p)

    def _capture_text(self, p: _Product) -> None:
        if p.emb is not None:
            c = self._centroid
            norms = np.sqrt((c * c).sum(axis=1))
            dots = c @ p.emb.astype(np.float64)
            p.emb_sims = tuple(float(d / m) if m > 0 else 0.0 for d, m in zip(dots, norms, strict=True))

    def set_embedding(self, product_id: str, vector: np.ndarray) -> None:
        """Attach a product's text embedding (normalised here; stored as float16). A
        product the state does not hold (never seen, or evicted) is left alone: an
        embedding never creates an entity, so it cannot evict one either."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != EMBED_DIM:
            raise ValueError(f"embedding must have {EMBED_DIM} dims, got {v.shape[0]}")
        n = float(np.linalg.norm(v))
        if not math.isfinite(n) or n == 0.0:
            raise ValueError("embedding must be finite and non-zero")
        p = self.products.get(product_id)
        if p is not None:
            p.emb = (v / n).astype(np.float16)
            self._capture_text(p)   # the text part only: the rest stays as of the product's last event

    def has_embedding(self, product_id: str) -> bool:
        p = self.products.get(product_id)
        return p is not None and p.emb is not None

    # ------------------------------------------------------------------ reads

    def _live(self, ent: Any) -> bool:
        return ent is not None and ent.last_ms >= self.watermark_ms - self.ttl_ms

    def feature_times(self, entity: str, ids: Sequence[str], default_ms: int) -> list[int]:
        """Each entity's newest event time (``default_ms`` for one the state does not hold):
        the time a score describes when each entity is read as of its own last event."""
        held = self.users if entity == "user" else self.products
        out = []
        for id_ in ids:
            ent = held.get(id_)
            out.append(ent.last_ms if ent is not None else default_ms)
        return out

    def user_matrix(self, user_ids: Sequence[str], now_ms: int | Sequence[int]) -> np.ndarray:
        """float32 [n, len(user_features)] at event time ``now_ms`` (one for all rows, or one
        a row); unknown users get the row of a user never seen (zeros; recencies at the cap;
        u_age_s, u_known 0)."""
        nw, taus = self._nw, self._taus
        width = len(self.user_features)
        out = np.zeros((len(user_ids), width), np.float32)
        blank = [0.0] * (4 * nw) + [CAP_S] * 3 + [0.0] * (width - 4 * nw - 3)
        times = [now_ms] * len(user_ids) if isinstance(now_ms, int) else now_ms
        for r, uid in enumerate(user_ids):
            u = self.users.get(uid)
            if not self._live(u):
                out[r] = blank
                continue
            assert u is not None
            now = times[r]
            row = u.counts.read(now, taus, 4)
            s_live = now - u.s_last_ms <= SESSION_GAP_S * 1000  # the session is still open
            row += [
                _cap(max(0, now - u.last_ms) / 1000),
                _cap(max(0, now - u.cart_ms) / 1000) if u.cart_ms >= 0 else CAP_S,
                _cap(max(0, now - u.purchase_ms) / 1000) if u.purchase_ms >= 0 else CAP_S,
                _cap(max(0, now - u.first_ms) / 1000),
                u.s_events if s_live else 0, u.s_views if s_live else 0,
                u.s_carts if s_live else 0, u.s_purchases if s_live else 0,
                (u.s_last_ms - u.s_start_ms) / 1000 if s_live else 0.0,
                len(u.s_products) if s_live else 0,
                u.s_carts / (u.s_views + 1.0) if s_live else 0.0,
                float(np.linalg.norm(u.s_vec)) / u.s_nvec if (s_live and u.s_vec is not None) else 0.0,
                u.s_sim if s_live else 0.0,
                len(u.open_carts), sum(u.open_carts.values()),
                len(u.products), len(u.cats),
                u.price_sum / u.price_n if u.price_n else 0.0, u.price_max,
                len(u.orders), u.order_amount, 1.0,
            ]
            out[r] = row
        return out

    def product_matrix(self, product_ids: Sequence[str], now_ms: int | Sequence[int]) -> np.ndarray:
        """float32 [n, len(product_features)] at event time ``now_ms`` (one for all rows, or
        one a row); unknown products get the row of a product never seen. The comparisons
        with the rest of the store (price against the category, text against what sells)
        are as of the product's last event."""
        nw, taus = self._nw, self._taus
        width = len(self.product_features)
        out = np.zeros((len(product_ids), width), np.float32)
        base = 4 * nw
        blank = [0.0] * width
        blank[base + 2] = blank[base + 3] = CAP_S
        last = len(taus) - 1
        times = [now_ms] * len(product_ids) if isinstance(now_ms, int) else now_ms
        for r, pid in enumerate(product_ids):
            p = self.products.get(pid)
            if not self._live(p):
                out[r] = blank
                continue
            assert p is not None
            now = times[r]
            row = p.counts.read(now, taus, 4)
            views, carts, buys = row[4 * last], row[4 * last + 1], row[4 * last + 2] + row[4 * last + 3]
            embedded = p.emb is not None
            row += [
                buys / (views + 1.0), carts / (views + 1.0),
                _cap(max(0, now - p.seen_ms) / 1000) if p.seen_ms >= 0 else CAP_S,
                _cap(max(0, now - p.purchase_ms) / 1000) if p.purchase_ms >= 0 else CAP_S,
                _cap(max(0, now - p.first_ms) / 1000),
                len(p.users),
                p.price or 0.0, 1.0 if p.price is not None else 0.0, p.price_change, p.price_changes,
                p.rel_cat,
                p.stock or 0.0, 1.0 if p.stock is not None else 0.0,
                1.0 if (p.stock or 0) > 0 else 0.0,
                p.complete, 1.0 if p.in_catalog else 0.0, 1.0 if p.deleted else 0.0,
                1.0 if embedded else 0.0, *(p.emb_sims if embedded else (0.0, 0.0, 0.0)), 1.0,
            ]
            out[r] = row
        return out


def replay_into(state: FeatureState, items: Iterable[tuple[str, Event]]) -> FeatureState:
    """Rebuild: feed (stream, event) pairs, in order, grouping runs of one stream."""
    run: list[Event] = []
    run_stream = ""
    for stream, ev in items:
        if stream != run_stream and run:
            state.update(run_stream, run)
            run = []
        run_stream = stream
        run.append(ev)
    if run:
        state.update(run_stream, run)
    return state
