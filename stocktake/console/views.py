"""Terminal renderings of the inventory document."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def print_inventory(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    assets = Table(title="assets", title_justify="left")
    for name, justify in (("asset", "left"), ("valid", "right"), ("duplicates", "right"),
                          ("invalid", "right"), ("warnings", "right"), ("contract", "left"),
                          ("last event", "left"), ("quality", "right")):
        assets.add_column(name, justify=justify, no_wrap=name == "asset")  # type: ignore[arg-type]
    for a in doc["assets"]:
        score = a.get("quality", {}).get("score")
        assets.add_row(a["asset"], f"{a['valid']:,}", f"{a['duplicates']:,}", f"{a['invalid']:,}",
                       f"{a.get('warnings', 0):,}", a.get("contract_version") or "—",
                       str(a.get("last_event_ts") or "—"), "—" if score is None else f"{score:.1f}")
    console.print(assets)
    breaches = Table(title="contract breaches (by version)", title_justify="left")
    for name in ("asset", "version", "severity", "rule", "events"):
        breaches.add_column(name, justify="right" if name == "events" else "left")
    for a in doc["assets"]:
        for b in a.get("breaches", []):
            rule = b["rule"] + (f" ({b['rule_name']})" if b["rule_name"] else "")
            breaches.add_row(a["asset"], b["version"] or "(before versions)", b["severity"], rule, f"{b['events']:,}")
    if breaches.row_count:
        console.print(breaches)
    fields = Table(title="fields", title_justify="left")
    for name in ("stream", "field", "types", "completeness", "validity", "distinct≈", "sensitive"):
        fields.add_column(name)
    for f in doc.get("fields", []):
        types = ", ".join(f"{t} {n:,}" for t, n in f["types"].items())
        fields.add_row(f["stream"], f["field"] + ("" if f["contract"] else " (extra)"), types,
                       _pct(f["completeness"]), _pct(f["validity"]), f"{f['distinct_approx']:,}",
                       f["sensitive"] or "")
    console.print(fields)
    entities = Table(title="entities", title_justify="left")
    entities.add_column("entity")
    entities.add_column("facts")
    for e in doc.get("entities", []):
        facts = ", ".join(f"{k}={v}" for k, v in e.items()
                          if k != "entity" and not isinstance(v, list | dict))
        entities.add_row(e["entity"], facts)
    console.print(entities)
    for d in doc.get("drift", []):
        console.print(f"[yellow]drift[/] {d['at']} {d['stream']}.{d['field']} {d['kind']}: {d['details']}")
