"""What an inventory document says, in short: entities, consistency issues, the
biggest quality losses, ages. Shared by the terminal status and the HTML report."""

from __future__ import annotations

import math
from typing import Any


def human_age(seconds: float | None) -> str:
    """12 s, 7 min, 3 h, 2609 d (rounded down); a future time counts as 0 s."""
    if seconds is None or math.isnan(seconds):
        return "—"
    s = max(0.0, seconds)
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (2 * 86400, "h", 3600)):
        if s < limit:
            return f"{int(s // size)} {unit}"
    return f"{int(s // 86400)} d"


def top_losses(doc: dict[str, Any], n: int = 5) -> list[tuple[float, str, str]]:
    """(points lost, to 0.1 as explain shows them; stream asset; what cost them): the n biggest
    quality losses over stream assets."""
    found = [(round(loss["points"], 1), a["asset"], loss["text"])
             for a in doc.get("assets", []) if a.get("kind") == "stream"
             for loss in (a.get("quality") or {}).get("losses", [])]
    return sorted((f for f in found if f[0] > 0), key=lambda f: (-f[0], f[1]))[:n]


def entity(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next((e for e in doc.get("entities", []) if e.get("entity") == name), {})


def consistency_issues(doc: dict[str, Any]) -> list[str]:
    """Drift events, orphans and amount mismatches as one line each (none: empty)."""
    out = []
    drift = doc.get("drift", [])
    if drift:
        shown = ", ".join(f"{d['stream']}.{d['field']} {d['kind']}" for d in drift[-3:])
        out.append(f"drift: {len(drift)} event{'s' * (len(drift) != 1)} ({shown})")
    products, orders = entity(doc, "products"), entity(doc, "orders")
    if products.get("orphans"):
        refs = sum(products.get("orphan_events", {}).values())
        out.append(f"orphans: {products['orphans']:,} products referenced but never in the catalog "
                   f"({refs:,} events)")
    if orders.get("amount_mismatch"):
        out.append(f"amount mismatches: {orders['amount_mismatch']:,} of {orders.get('amount_checked', 0):,} "
                   "checked transactions")
    return out


def entity_line(doc: dict[str, Any]) -> str:
    users, products, orders = entity(doc, "users"), entity(doc, "products"), entity(doc, "orders")
    return (f"users {users.get('distinct', 0):,} · products {products.get('distinct', 0):,} seen, "
            f"{products.get('catalog', 0):,} in catalog · orders {orders.get('distinct', 0):,}")
