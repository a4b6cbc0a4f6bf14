"""Source mappings for the replay tool: real data files -> contract v1 events.

`stocktake.replay` re-exports what callers need; this module holds the
per-source details (REES46, Olist, and files already in the contract) so the
replay module itself stays about messages and producing.

Every mapping is deterministic: the same input files give the same events,
with the same event_ids, in the same order.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson

# The streams of the shipped contracts, which the REES46 and olist conversions produce, and the
# field each is keyed (and partitioned) by: the contracts' `key` (tests/test_contract.py checks
# they agree; this layer cannot read processors/). A file may name any other stream.
STREAMS = ("behaviour", "product", "transaction")
KEY_FIELD = {"behaviour": "user_id", "product": "product_id", "transaction": "order_id"}
# A stream's name: what follows the deployment's prefix in a topic name.
STREAM_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")

REES46_FILE = "rees46/2019-Oct-sample.csv"
OLIST_FILES = {
    "orders": "olist/olist_orders_dataset.csv",
    "items": "olist/olist_order_items_dataset.csv",
    "products": "olist/olist_products_dataset.csv",
    "categories": "olist/product_category_name_translation.csv",
}
OLIST_TZ = ZoneInfo("America/Sao_Paulo")

# Olist's final order_status -> contract status. None: no second event (the
# order never moved past "created", or a status we do not know).
OLIST_FINAL_STATUS: dict[str, str | None] = {
    "delivered": "delivered",
    "shipped": "shipped",
    "canceled": "canceled",
    "unavailable": "canceled",
    "invoiced": "paid",
    "processing": "paid",
    "approved": "paid",
    "created": None,
}


DATA_DIR = Path(__file__).resolve().parent / "data"

class ReplayEvent(NamedTuple):
    stream: str  # behaviour | product | transaction | any other stream a file names
    key: str | None  # user_id / product_id / order_id (other streams: see tools/replay.py), as a string
    event: dict[str, Any]  # the contract event (JSON-serialisable)


def make_event(stream: str, event: dict[str, Any]) -> ReplayEvent:
    """Wrap an event with its stream and message key (None when the key field is missing, or
    the stream is not one of STREAMS)."""
    key_field = KEY_FIELD.get(stream)
    value = event.get(key_field) if key_field else None
    return ReplayEvent(stream, None if value is None else str(value), event)


# ---------------------------------------------------------------- timestamps


def iso_z(dt: datetime) -> str:
    """An aware datetime as ISO-8601 UTC with a Z, to the second (the sources' resolution)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_seconds(value: Any) -> float | None:
    """Epoch seconds of a contract `ts` (ISO with/without zone, epoch s or ms); None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # Epoch millis are ~1.5e12 today; seconds stay below 1e11 until the year 5138.
        return float(value) / 1000.0 if abs(value) >= 1e11 else float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is None:  # the contract: no zone means UTC
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return None


def sort_by_time(events: list[ReplayEvent]) -> list[ReplayEvent]:
    """Stable sort by event time. An event whose ts cannot be read keeps the time of the
    event before it in the input, so it stays next to its neighbours instead of jumping."""
    keys: list[float] = []
    last = float("-inf")
    for ev in events:
        t = ts_seconds(ev.event.get("ts"))
        last = last if t is None else t
        keys.append(last)
    order = sorted(range(len(events)), key=keys.__getitem__)
    return [events[i] for i in order]


# ------------------------------------------------------------------- files


def open_text(path: Path) -> IO[str]:
    """A text file, gunzipped when it ends in .gz. utf-8-sig: the Olist translation
    file starts with a BOM."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


@contextmanager
def open_csv(data_dir: Path, name: str) -> Iterator[csv.DictReader[str]]:
    """Rows of `name` under data_dir, read from `name.gz` (as shipped) or plain `name`.
    The csv module copes with the inconsistent quoting of the Olist ids."""
    path = data_dir / f"{name}.gz"
    if not path.exists():
        path = data_dir / name
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {data_dir / name}[.gz]")
    with open_text(path) as fh:
        yield csv.DictReader(fh)


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _int(text: str | None) -> int | None:
    if text in (None, ""):
        return None
    try:
        return int(text)  # type: ignore[arg-type]
    except ValueError:
        return int(float(text))  # type: ignore[arg-type]  # e.g. "1.0"


# ------------------------------------------------------------------ REES46


def rees46_events(data_dir: Path) -> list[ReplayEvent]:
    """REES46 rows -> behaviour (every row), product (first sighting and price changes)
    and transaction (purchase rows) events, in file order (already time-ordered).

    Within one row the product upsert comes first, so a consumer sees the catalog
    announce a product before behaviour names it (no spurious orphans)."""
    out: list[ReplayEvent] = []
    last_price: dict[str, float | None] = {}
    with open_csv(data_dir, REES46_FILE) as rows:
        for i, row in enumerate(rows):
            raw_ts = row["event_time"]  # "2019-10-01 00:00:00 UTC"
            ts = iso_z(datetime.fromisoformat(raw_ts.removesuffix(" UTC")).replace(tzinfo=UTC))
            product_id = row["product_id"]
            # Blank category_code/brand are real completeness gaps: keep the key, value null.
            category = row.get("category_code") or None
            brand = row.get("brand") or None
            price = _float(row.get("price"))
            session = row.get("user_session") or None  # the slice's last line is cut short

            if product_id not in last_price or last_price[product_id] != price:
                last_price[product_id] = price
                leaf = category.rsplit(".", 1)[-1] if category else None
                title = " ".join(p for p in (brand, leaf, product_id) if p)
                out.append(make_event("product", {
                    "event_id": f"r46-p-{i}", "product_id": product_id, "op": "upsert",
                    "title": title, "category": category, "brand": brand, "price": price,
                    "currency": "USD", "ts": ts, "source": "rees46-catalog",
                    "category_id": row.get("category_id") or None,
                }))
            out.append(make_event("behaviour", {
                "event_id": f"r46-b-{i}", "event_type": row["event_type"],
                "user_id": row["user_id"], "product_id": product_id, "session_id": session,
                "ts": ts, "source": "rees46-web",
                "category_id": row.get("category_id") or None, "category_code": category,
                "brand": brand, "price": price,
            }))
            if row["event_type"] == "purchase":
                # REES46 has no orders: one order per (session, product), stable across runs.
                digest = hashlib.sha1(f"{session or ''}:{product_id}".encode()).hexdigest()[:16]
                out.append(make_event("transaction", {
                    "event_id": f"r46-t-{i}", "order_id": f"r46-o-{digest}",
                    "user_id": row["user_id"], "product_id": product_id, "quantity": 1,
                    "amount": price, "currency": "USD", "status": "paid", "ts": ts,
                    "source": "rees46-checkout",
                }))
    return out


# ------------------------------------------------------------------- Olist


def olist_local_to_utc(text: str | None) -> datetime | None:
    """Olist's zone-less local time (America/Sao_Paulo, with its 2016-2018 DST) -> aware UTC.
    Times repeated at the end of DST resolve to the first (DST) occurrence (fold=0)."""
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=OLIST_TZ).astimezone(UTC)


def olist_events(data_dir: Path) -> list[ReplayEvent]:
    """Olist orders/items/products -> transaction and product events, not yet time-sorted.

    Transactions: per order item whose order is in the orders file, a "created" event
    at the purchase time, then one with the mapped final status at the best time known.
    Items of orders missing from the slice are skipped (no customer, time or status).
    Products: one upsert per row of the products file, at the first time it is ordered
    (else the start of the slice). Items naming products absent from the products file
    are kept: those orphans are a real catalog gap for stocktake to find."""
    with open_csv(data_dir, OLIST_FILES["categories"]) as rows:
        english = {r["product_category_name"]: r["product_category_name_english"] for r in rows}
    with open_csv(data_dir, OLIST_FILES["orders"]) as rows:
        orders = {r["order_id"]: r for r in rows}
    purchased = {
        oid: olist_local_to_utc(o["order_purchase_timestamp"]) for oid, o in orders.items()
    }
    known_times = [t for t in purchased.values() if t is not None]
    slice_start = min(known_times) if known_times else datetime(1970, 1, 1, tzinfo=UTC)

    transactions: list[ReplayEvent] = []
    first_order: dict[str, tuple[datetime, float | None]] = {}  # product -> earliest (time, price)
    first_price: dict[str, float | None] = {}  # product -> first price in file order
    with open_csv(data_dir, OLIST_FILES["items"]) as rows:
        for item in rows:
            product_id, price = item["product_id"], _float(item["price"])
            first_price.setdefault(product_id, price)
            order = orders.get(item["order_id"])
            bought = purchased.get(item["order_id"])
            if order is None or bought is None:
                continue
            if product_id not in first_order or bought < first_order[product_id][0]:
                first_order[product_id] = (bought, price)
            base = {
                "order_id": item["order_id"], "user_id": order["customer_id"],
                "product_id": product_id, "quantity": 1, "amount": price, "currency": "BRL",
                "source": "olist", "order_item_id": _int(item["order_item_id"]),
                "seller_id": item["seller_id"] or None,
                "freight_value": _float(item["freight_value"]),
            }
            eid = f"oli-t-{item['order_id']}-{item['order_item_id']}"
            transactions.append(make_event("transaction", {
                "event_id": f"{eid}-created", **base, "status": "created", "ts": iso_z(bought),
            }))
            final = OLIST_FINAL_STATUS.get(order["order_status"])
            if final is None:
                continue
            when = next(
                (t for t in (
                    olist_local_to_utc(order[c]) for c in (
                        "order_delivered_customer_date", "order_delivered_carrier_date",
                        "order_approved_at")
                ) if t is not None),
                bought,
            )
            transactions.append(make_event("transaction", {
                "event_id": f"{eid}-{final}", **base, "status": final, "ts": iso_z(when),
            }))

    products: list[ReplayEvent] = []
    with open_csv(data_dir, OLIST_FILES["products"]) as rows:
        for p in rows:
            pid = p["product_id"]
            when, price = first_order.get(pid, (slice_start, first_price.get(pid)))
            event: dict[str, Any] = {
                "event_id": f"oli-p-{pid}", "product_id": pid, "op": "upsert",
                "category": english.get(p["product_category_name"]) or None,
                "currency": "BRL", "ts": iso_z(when), "source": "olist-catalog",
                "weight_g": _int(p["product_weight_g"]),
                "photos_qty": _int(p["product_photos_qty"]),
            }
            if price is not None:
                event["price"] = price
            products.append(make_event("product", event))
    # Products first: at equal times the catalog announces a product before it is sold.
    return products + transactions


# ------------------------------------------------- files already in contract

_SUFFIXES = (".jsonl", ".ndjson", ".csv")
# CSV cells are text; these contract fields are numbers (ids stay strings).
_CSV_INTS = {"quantity", "stock"}
_CSV_FLOATS = {"amount", "price"}


def is_contract_file(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(_SUFFIXES)


def _stream_from_name(path: Path) -> str | None:
    """The stream a file name names: one of STREAMS it contains (2019-Oct-behavior.csv), else
    its name up to the first dot (impressions.jsonl.gz -> impressions)."""
    name = path.name.lower().replace("behavior", "behaviour")
    found = [s for s in STREAMS if s in name]
    if found:
        return found[0] if len(found) == 1 else None
    stem = path.name.split(".", 1)[0]
    return stem if STREAM_NAME.fullmatch(stem) else None


def _resolve_stream(value: Any, default: str | None, where: str) -> str:
    stream = value if value not in (None, "") else default
    if stream == "behavior":
        stream = "behaviour"
    if stream is None:
        raise ValueError(f"{where}: no 'stream' field, and the file name names no stream")
    if not isinstance(stream, str) or not STREAM_NAME.fullmatch(stream):
        raise ValueError(f"{where}: {stream!r} is not a stream name (letters, digits, '.', '_', '-')")
    return stream


def _csv_cell(field: str, text: str) -> Any:
    if field in _CSV_INTS:
        return _int(text)
    if field in _CSV_FLOATS:
        return float(text)
    if field == "ts" and text.lstrip("-").isdigit():  # epoch seconds/millis
        return int(text)
    return text


def contract_file_events(path: Path) -> list[ReplayEvent]:
    """Events from a .jsonl/.ndjson (one object a line) or .csv (header = contract fields)
    file, optionally gzipped. The stream comes from a "stream" field/column (removed from
    the event: it is routing, not content) or else from the file name. In CSV an empty
    cell means "field absent" (CSV cannot tell empty from missing)."""
    default = _stream_from_name(path)
    out: list[ReplayEvent] = []
    with open_text(path) as fh:
        if path.name.lower().removesuffix(".gz").endswith(".csv"):
            for n, row in enumerate(csv.DictReader(fh), start=2):
                where = f"{path}:{n}"
                stream = _resolve_stream(row.pop("stream", None), default, where)
                try:
                    event = {
                        k: _csv_cell(k, v) for k, v in row.items() if k and v not in (None, "")
                    }
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
                out.append(make_event(stream, event))
        else:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{where}: not JSON ({exc})") from None
                if not isinstance(event, dict):
                    raise ValueError(f"{where}: a line must be one JSON object")
                stream = _resolve_stream(event.pop("stream", None), default, where)
                out.append(make_event(stream, event))
    return out

def load_events(source: str, data_dir: Path | None = None) -> list[ReplayEvent]:
    """Contract v1 events from "rees46", "olist" or a path to a .csv/.jsonl/.ndjson
    file (optionally .gz) already in the contract, sorted by event time (stable)."""
    base = DATA_DIR if data_dir is None else Path(data_dir)
    if source == "rees46":
        events = rees46_events(base)
    elif source == "olist":
        events = olist_events(base)
    else:
        path = Path(source)
        if not is_contract_file(path):
            raise ValueError(
                f"unknown replay source {source!r}: expected 'rees46', 'olist' or a path "
                "to a .csv, .jsonl or .ndjson file of contract v1 events"
            )
        if not path.is_file():
            raise ValueError(f"replay source file not found: {source}")
        events = contract_file_events(path)
    return sort_by_time(events)
