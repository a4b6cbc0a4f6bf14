"""Every dashboard panel's SQL, with Grafana's variables and the ClickHouse plugin's macros
expanded, runs on chDB against tables the real pipeline filled from the shared data, and
returns the columns the panel expects. The dashboards' numbers agree with the inventory.

One pipeline run per module: REES46 (all of it) + the olist slice (orphans, transactions)
compressed into the same hours, with injected duplicates and malformed events, a field that
appears late (drift), all ending three days ago (a window no other test writes into). Alerts,
baselines and scores are written here as their workers would.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from markupsafe import escape as html_escape  # the preview's templates escape with it

from stocktake import sources
from stocktake.broker import EmbeddedBroker
from stocktake.clickhouse.store import Store
from stocktake.grafana import dashboards as D
from stocktake.grafana import macros as M
from stocktake.grafana import sql as S
from stocktake.services import inventory
from stocktake.settings import Settings
from stocktake.sources import ReplayEvent, sort_by_time, ts_seconds
from stocktake.tools import replay
from tests.pipeline_helpers import retopic, run_pipeline

pytestmark = pytest.mark.integration

END = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)


def fixture_events(end_s: float) -> list[ReplayEvent]:
    """REES46 + olist squeezed into REES46's hours, a late new field, ending at ``end_s``."""
    rees = sources.load_events("rees46")
    olist = sources.load_events("olist")
    r_times = [t for t in (ts_seconds(e.event.get("ts")) for e in rees) if t is not None]
    o_times = [t for t in (ts_seconds(e.event.get("ts")) for e in olist) if t is not None]
    speed = (max(o_times) - min(o_times)) / (max(r_times) - min(r_times))
    olist = replay.rebase_time(olist, min(r_times), speed)
    events = sort_by_time(rees + olist)
    cut = int(len(events) * 0.8)
    for i, e in enumerate(events):
        if i >= cut and e.stream == "behaviour" and i % 5 == 0:      # drift: a field that appears late
            events[i] = e._replace(event={**e.event, "coupon": f"C{i % 7}"})
        elif e.stream == "product" and i % 701 == 0:                  # rejected values, with their time
            events[i] = e._replace(event={**e.event, "price": -5 if i % 2 else "n/a"})
    return replay.rebase_time(events, end_s, None)


def fixture_messages(prefix: str, end_s: float) -> list[replay.Message]:
    faults = {"duplicates": 0.02, "malformed": 0.02}
    return retopic(list(replay.to_messages(fixture_events(end_s), envelope=50, faults=faults)), prefix)


def _t(minutes_before_end: float) -> dt.datetime:
    return END - dt.timedelta(minutes=minutes_before_end)


def insert_alerts_baselines_scores(store: Store, tag: str, model: str) -> None:
    """Rows as the detectors and the scorer write them, for the deployment ``tag`` + '.', with
    what the real pipeline run does not produce on this data: every alert kind and state,
    completeness and orphan baselines, two model versions on two devices."""
    now = dt.datetime.now(dt.UTC)
    alerts = [  # (alert_id, asset, kind, severity, state, opened, resolved, version)
        (f"{tag}-silence", "behaviour/source=rees46-web", "silence", "critical", "firing", _t(20), None, 1),
        (f"{tag}-volume", "behaviour", "volume_drop", "warning", "firing", _t(60), None, 1),
        (f"{tag}-volume", "behaviour", "volume_drop", "warning", "resolved", _t(60), _t(40), 2),
        (f"{tag}-compl", "product", "completeness_drop", "warning", "firing", _t(30), None, 1),
        (f"{tag}-drift", "behaviour", "schema_drift", "info", "firing", _t(35), None, 1),
    ]
    ts = pa.timestamp("ms", tz="UTC")
    store.insert_arrow("alerts", pa.table({
        "topic_prefix": [f"{tag}."] * len(alerts),
        "alert_id": [a[0] for a in alerts], "asset": [a[1] for a in alerts], "kind": [a[2] for a in alerts],
        "severity": [a[3] for a in alerts], "state": [a[4] for a in alerts],
        "clock": ["event"] * len(alerts),
        "opened_at": pa.array([a[5] for a in alerts], ts), "resolved_at": pa.array([a[6] for a in alerts], ts),
        "reason": [f"{a[2]} on {a[1]}: expected 40/min, observed 2/min" for a in alerts],
        "expected": [40.0] * len(alerts), "observed": [2.0] * len(alerts),
        "evidence_from": pa.array([a[5] for a in alerts], ts), "evidence_to": pa.array([a[5] for a in alerts], ts),
        "details": ['{"coupon": "new_field"}'] * len(alerts), "updated_at": pa.array([now] * len(alerts), ts),
        "version": pa.array([a[7] for a in alerts], pa.uint64()),
    }))
    minutes = [_t(m).replace(second=0) for m in range(90, 0, -1)]
    rows = []
    for metric, asset, level in (("events", "behaviour", 100.0), ("events", "product", 40.0),
                                 ("completeness:brand", "behaviour", 0.85), ("orphans", "transaction", 3.0)):
        for i, m in enumerate(minutes):
            observed = level * (1 + 0.2 * math.sin(i / 5)) * (0.2 if 50 < i < 60 else 1)
            rows.append((asset, metric, m, observed, level, level * 0.7, level * 1.3))
    store.insert_arrow("baselines", pa.table({
        "topic_prefix": [f"{tag}."] * len(rows),
        "asset": [r[0] for r in rows], "metric": [r[1] for r in rows], "minute": pa.array([r[2] for r in rows], ts),
        "observed": [r[3] for r in rows], "expected": [r[4] for r in rows], "lower": [r[5] for r in rows],
        "upper": [r[6] for r in rows], "model": ["robust_rolling"] * len(rows),
        "updated_at": pa.array([now] * len(rows), ts),
    }))
    store.insert_arrow("catalog_findings", catalog_snapshot(tag))
    n = 400
    store.insert_arrow("scores", pa.table({
        "topic_prefix": [f"{tag}."] * n,
        "entity": ["user" if i % 3 else "product" for i in range(n)], "id": [f"id{i % 150}" for i in range(n)],
        "score": pa.array([((i * 37) % 100) / 100 for i in range(n)], pa.float32()),
        "model": [model] * n, "model_version": ["1" if i < 250 else "2" for i in range(n)],
        "features_ts": pa.array([_t(90 - i * 90 / n) for i in range(n)], ts),
        "scored_at": pa.array([_t(90 - i * 90 / n) for i in range(n)], ts),
        "latency_ms": pa.array([1.5 + (i % 10) / 10 for i in range(n)], pa.float32()),
        "device": ["cuda" if i % 2 else "cpu" for i in range(n)],
    }))
    store.insert_arrow("scoring_lag", pa.table({   # the scorer falling behind, then catching up
        "topic_prefix": [f"{tag}."] * 12, "at": pa.array([_t(60 - 5 * i) for i in range(12)], ts),
        "watermark": pa.array([_t(61 - 5 * i) for i in range(12)], ts),
        "lag_events": pa.array([max(0, 6 - abs(6 - i)) * 1000 for i in range(12)], pa.uint64()),
        "lag_s": [max(0, 6 - abs(6 - i)) * 2.5 for i in range(12)],
    }))


def catalog_snapshot(tag: str) -> pa.Table:
    """A snapshot of catalog findings as the worker writes it: two duplicate groups, a crowded text
    and a product far from its category."""
    from stocktake.processors.catalog import CatalogIndex
    from stocktake.services.catalog import snapshot_table

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 384)).astype(np.float32)
    ix = CatalogIndex(min_category=5, indistinct_neighbours=3)
    for i in range(8):   # a crowd of near texts in one category
        ix.add(f"c{i}", i, f"kettle {i}", "kitchen", centres[0] + 0.15 * rng.standard_normal(384).astype(np.float32))
    ix.add("c8", 0, "kettle 0", "kitchen", centres[0])                      # kettle 0 again: identical text
    ix.add("odd", 99, "garden hose", "kitchen", centres[1])                 # far from kitchen
    doc = {**ix.findings(), "evicted": 0, "max_products": ix.max_products}
    return snapshot_table(f"{tag}.", doc, dt.datetime.now(dt.UTC))


@pytest.fixture(scope="module")
def filled(broker: EmbeddedBroker, store: Store, store_dsn: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prefix = f"g{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env({}, data_dir=tmp_path_factory.mktemp("grafana"), topic_prefix=prefix,
                                 group_id=prefix, partitions=3, flush_interval_s=0.2, clickhouse=store_dsn)
    run_pipeline(broker, store, settings, fixture_messages(prefix, END.timestamp()))
    model = f"model-{prefix}"
    insert_alerts_baselines_scores(store, prefix, model)
    # Events whose time could not be read are stored at their ingest time (now): the range is
    # the replayed hours.
    (first, last), = store.rows("SELECT minIf(ts_min, status = 'valid'), maxIf(ts_max, status = 'valid') "
                                "FROM asset_rollup WHERE startsWith(topic, {p:String}) AND asset = stream",
                                {"p": prefix + "."})
    tr = M.TimeRange.around(first.replace(tzinfo=dt.UTC) - dt.timedelta(minutes=1),
                            last.replace(tzinfo=dt.UTC) + dt.timedelta(minutes=1))
    # Compared with the inventory (all time): a range that also holds the events stored at ingest time.
    everything = M.TimeRange.around(tr.start, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    yield {"settings": settings, "prefix": prefix + ".", "model": model, "tag": prefix, "range": tr,
           "everything": everything}


def run_panel(store: Store, d: dict[str, Any], sql: str, filled: dict[str, Any], time_range: str = "range",
              **overrides: M.VarValue) -> tuple[list[str], list[tuple[Any, ...]]]:
    variables = M.dashboard_variables(d, {"prefix": filled["prefix"], "model": [filled["model"]], **overrides})
    return store.query(M.render(sql, variables, filled[time_range]))


BUILT = D.build_all()


def _panels() -> Iterator[Any]:
    for spec in D.DASHBOARDS:
        for p in spec.panels:
            yield pytest.param(spec, p, id=f"{spec.uid}:{p.title}")


@pytest.mark.parametrize(("spec", "panel"), list(_panels()))
def test_panel_sql_runs_and_returns_its_columns(store, filled, spec, panel):  # type: ignore[no-untyped-def]
    d = BUILT[spec.filename]
    columns, rows = run_panel(store, d, panel.sql, filled)
    assert tuple(columns) == panel.columns
    assert rows, "no rows on the fixture data"
    if panel.viz == "timeseries":
        assert all(isinstance(r[0], dt.datetime) for r in rows)
        assert [r[0] for r in rows] == sorted(r[0] for r in rows), "long frames must be sorted by time"


def test_panels_in_json_are_the_specs(store, filled):  # type: ignore[no-untyped-def]
    """What Grafana gets (the committed JSON) is exactly the SQL tested above."""
    for spec in D.DASHBOARDS:
        targets = [t for p in D.all_panels(BUILT[spec.filename]) for t in p["targets"]]
        assert [t["rawSql"] for t in targets] == [p.sql.strip() for p in spec.panels]


def test_variable_queries_list_this_deployment(store, filled):  # type: ignore[no-untyped-def]
    d = BUILT["stocktake-inventory.json"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    _, streams = run_panel(store, d, variables["stream"]["query"], filled)
    assert [s for s, in streams] == ["behaviour", "product", "transaction"]
    _, assets = run_panel(store, d, variables["asset"]["query"], filled, stream=["product"])
    assert {a for a, in assets} >= {"product", "product/op=upsert", "product/source=olist-catalog"}
    assert all(a.startswith("product") for a, in assets)
    _, sources = run_panel(store, d, variables["source"]["query"], filled)
    assert {"olist-catalog", "rees46-catalog"} <= {s for s, in sources}


def test_filters_narrow_the_result(store, filled):  # type: ignore[no-untyped-def]
    d = BUILT["stocktake-inventory.json"]
    sql = D.INVENTORY.items[0].sql  # type: ignore[union-attr]
    (all_events, *_), = run_panel(store, d, sql, filled)[1]
    (product, *_), = run_panel(store, d, sql, filled, stream=["product"])[1]
    (olist_product, *_), = run_panel(store, d, sql, filled, stream=["product"], source=["olist-catalog"])[1]
    assert all_events > product > olist_product > 0


def test_orphans_follow_the_stream_and_source_filters(store, filled):  # type: ignore[no-untyped-def]
    d = BUILT["stocktake-inventory.json"]
    sql = next(p for p in D.INVENTORY.panels if p.title == "Orphan products").sql
    _, every = run_panel(store, d, sql, filled)
    _, transaction = run_panel(store, d, sql, filled, stream=["transaction"])
    assert transaction and {r[2] for r in transaction} == {"transaction"}
    refs = {r[0]: r[1] for r in every}
    assert all(n <= refs.get(p, n) for p, n, *_ in transaction)   # only the stream's references count
    _, sources = run_panel(store, d, S.VAR_SOURCE, filled, stream=["transaction"])
    source = sources[0][0]
    _, picked = run_panel(store, d, sql, filled, stream=["transaction"], source=[source])
    assert picked and {r[0] for r in picked} <= {r[0] for r in transaction}
    _, nobody = run_panel(store, d, sql, filled, source=["no-such-source"])
    assert nobody == []


def test_timeliness_matches_the_inventory(store, filled):  # type: ignore[no-untyped-def]
    """A lateness that splits the replayed events (ingested now, three days after their time):
    the panels count late events from the lag histogram in whole seconds, as the inventory does."""
    lateness = int((dt.datetime.now(dt.UTC) - (END - dt.timedelta(minutes=80))).total_seconds())
    settings = filled["settings"].model_copy(update={"lateness_s": lateness + 0.9, "freshness_target_s": 1e9})
    doc = inventory.build(store, settings)
    d = BUILT["stocktake-quality.json"]
    columns, rows = run_panel(store, d, D.QUALITY.items[0].sql, filled, "everything",  # type: ignore[union-attr]
                              lateness_s=f"{lateness + 0.9}", freshness_target_s="1e9")
    dash = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    inv = {a["asset"]: a["quality"]["components"]["timeliness"] for a in doc["assets"]}
    assert 0 < inv["behaviour"] < 1
    for asset, value in inv.items():
        assert dash[asset]["timeliness"] == pytest.approx(value, abs=1e-3), asset


def test_quality_and_entities_match_the_inventory(store, filled):  # type: ignore[no-untyped-def]
    doc = inventory.build(store, filled["settings"])
    d = BUILT["stocktake-quality.json"]
    columns, rows = run_panel(store, d, D.QUALITY.items[0].sql, filled, "everything")  # type: ignore[union-attr]
    dash = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    inv = {a["asset"]: a for a in doc["assets"]}
    assert set(dash) == set(inv)
    for asset, a in inv.items():
        q = a["quality"]
        assert dash[asset]["score"] == pytest.approx(q["score"], abs=0.11), asset
        for component, value in q["components"].items():
            if value is None:
                assert dash[asset][component] is None, (asset, component)
            else:
                assert dash[asset][component] == pytest.approx(value, abs=1e-3), (asset, component)
    assert any(inv[a]["quality"]["components"]["consistency"] not in (None, 1.0) for a in inv)  # orphans count

    columns, rows = run_panel(store, BUILT["stocktake-inventory.json"], D.INVENTORY.items[2].sql,  # type: ignore[union-attr]
                              filled, "everything")
    entities = dict(zip(columns, rows[0], strict=True))
    by = {e["entity"]: e for e in doc["entities"]}
    # distinct users and orders: uniqCombined states of the minute rollup (HyperLogLog past a
    # few thousand ids, ~0.3% standard error); the catalog and the orphans are counted exactly
    assert entities["users"] == pytest.approx(by["users"]["distinct"], rel=0.02)
    assert entities["orders"] == pytest.approx(by["orders"]["distinct"], rel=0.02)
    assert entities["catalog"] == by["products"]["catalog"]
    assert entities["orphans"] == by["products"]["orphans"] > 0


def test_fields_and_drift_match_the_inventory(store, filled):  # type: ignore[no-untyped-def]
    doc = inventory.build(store, filled["settings"])
    d = BUILT["stocktake-quality.json"]
    fields_panel = next(p for p in D.QUALITY.panels if p.title == "Fields")
    columns, rows = run_panel(store, d, fields_panel.sql, filled, "everything")
    dash = {(r[0], r[1]): dict(zip(columns, r, strict=True)) for r in rows}
    for f in doc["fields"]:
        got = dash[(f["stream"], f["field"])]
        assert round(got["completeness"], 4) == f["completeness"], f["field"]
        if f["validity"] is not None:
            assert round(got["validity"], 4) == f["validity"], f["field"]
    drift_panel = next(p for p in D.QUALITY.panels if p.title.startswith("Schema drift"))
    _, rows = run_panel(store, d, drift_panel.sql, filled, "everything")
    assert {(r[1], r[2], r[3]) for r in rows} == {(e["stream"], e["field"], e["kind"]) for e in doc["drift"]}
    assert ("behaviour", "coupon", "new_field") in {(r[1], r[2], r[3]) for r in rows}


def test_alert_panels_show_the_latest_state(store, filled):  # type: ignore[no-untyped-def]
    d = BUILT["stocktake-gaps.json"]
    tag = filled["tag"]
    panel = {p.title: p for p in D.GAPS.panels}
    _, rows = run_panel(store, d, panel["Open alerts"].sql, filled)
    # what the worker's detectors raised on this data, plus the rows written above
    mine = [r[0] for r in rows if r[0].startswith(tag)]
    assert set(mine) == {f"{tag}-silence", f"{tag}-compl", f"{tag}-drift"}  # volume_drop resolved (v2)
    assert mine[0] == f"{tag}-silence"  # critical first
    _, rows = run_panel(store, d, panel["Recent alerts"].sql, filled)
    states = {r[0]: r[4] for r in rows if r[0].startswith(tag)}
    assert states[f"{tag}-volume"] == "resolved"
    _, rows = run_panel(store, d, panel["Open alerts"].sql, filled, asset=["product"])
    assert {r[0] for r in rows} >= {f"{tag}-compl"} and all(r[1] == "product" for r in rows)
    # another deployment's alerts are not this one's
    _, rows = run_panel(store, d, panel["Open alerts"].sql, filled, prefix="other.")
    assert rows == []


def test_silence_as_of_a_range_ending_in_the_past(store, filled):  # type: ignore[no-untyped-def]
    d = BUILT["stocktake-gaps.json"]
    sql = next(p for p in D.GAPS.panels if p.title.startswith("Silence")).sql
    variables = M.dashboard_variables(d, {"prefix": filled["prefix"]})
    now, past = filled["range"], M.TimeRange(filled["range"].start, filled["range"].end - dt.timedelta(minutes=30))

    def last_behaviour(tr: M.TimeRange) -> dt.datetime:
        rows = store.query(M.render(sql, variables, tr))[1]
        last = next(r[1] for r in rows if r[0] == "behaviour")
        return last if last.tzinfo else last.replace(tzinfo=dt.UTC)

    # behaviour events come every second or so: the newest before the end's minute is in its last minutes
    assert past.end - dt.timedelta(minutes=2) <= last_behaviour(past) <= past.end + dt.timedelta(minutes=1)
    assert last_behaviour(now) > past.end + dt.timedelta(minutes=20)


def test_scores_panels_return_their_columns_on_no_rows(store, filled):  # type: ignore[no-untyped-def]
    """An empty scores table (no scorer yet) still gives every panel its columns, with types
    Grafana can draw (DESCRIBE: the client returns no column names for an empty result)."""
    d = BUILT["stocktake-scores.json"]
    variables = M.dashboard_variables(d, {"prefix": "no-such-deployment."})
    for p in D.SCORES.panels:
        sql = M.render(p.sql, variables, filled["range"])
        _, rows = store.query(sql)
        assert bool(rows) == (p.viz == "stat"), p.title   # aggregates without GROUP BY give one row
        described = store.rows(f"DESCRIBE TABLE ({sql})")
        assert tuple(r[0] for r in described) == p.columns, p.title
        if p.viz == "timeseries":
            assert described[0][1].startswith("DateTime"), p.title


def test_catalog_panels_match_the_inventory(store, filled):  # type: ignore[no-untyped-def]
    d = BUILT["stocktake-inventory.json"]
    panels = {p.title: p for p in D.INVENTORY.panels}
    doc = inventory.build(store, filled["settings"])["catalog"]
    columns, rows = run_panel(store, d, panels["Catalog findings"].sql, filled)
    counts = dict(zip(columns, rows[0], strict=True))
    assert doc["status"] == "ok" and doc["likely_duplicates"]["groups"] > 0
    assert doc["category_mismatch"]["products"] > 0 and doc["indistinct_text"]["texts"] > 0
    assert counts == {"catalog_products": doc["products"], "duplicate_groups": doc["likely_duplicates"]["groups"],
                      "duplicate_products": doc["likely_duplicates"]["products"],
                      "indistinct_texts": doc["indistinct_text"]["texts"],
                      "category_mismatches": doc["category_mismatch"]["products"]}
    _, rows = run_panel(store, d, panels["Catalog findings: examples"].sql, filled)
    shown = {(r[0], r[4]) for r in rows}
    for finding in ("likely_duplicates", "indistinct_text", "category_mismatch"):
        for x in doc[finding]["examples"]:
            assert (finding, ", ".join(p["id"] for p in x["products"])) in shown, finding
    assert len(rows) == sum(len(doc[f]["examples"]) for f in ("likely_duplicates", "indistinct_text",
                                                              "category_mismatch"))
    # another deployment (or one whose encoder wrote nothing): zeros, and no example rows
    _, rows = run_panel(store, d, panels["Catalog findings"].sql, filled, prefix="no-such-deployment.")
    assert rows == [(0, 0, 0, 0, 0)]
    assert run_panel(store, d, panels["Catalog findings: examples"].sql, filled, prefix="no-such-deployment.")[1] == []


def test_preview_renders_every_panel(store, filled, tmp_path: Path):  # type: ignore[no-untyped-def]
    from stocktake.grafana import preview

    t0 = time.monotonic()
    written = preview.write(store, tmp_path, prefix=filled["prefix"], time_range=filled["range"],
                            overrides={"model": [filled["model"]]})
    assert time.monotonic() - t0 < 30
    assert sorted(p.name for p in written) == sorted([s.uid + ".html" for s in D.DASHBOARDS] + ["index.html"])
    for spec in D.DASHBOARDS:
        html = (tmp_path / f"{spec.uid}.html").read_text(encoding="utf-8")
        assert html.count('class="panel ') == sum(1 for _ in spec.panels)
        assert 'class="panel-error"' not in html
        for p in spec.panels:
            assert html_escape(p.title) in html


def test_alert_rule_queries_run(store, filled):  # type: ignore[no-untyped-def]
    """The Grafana alert rules' SQL: one row (= one alert instance) per firing stocktake alert of
    the rule's kind, labelled by alert_id/asset/severity; and the ingest-stalled query."""
    from stocktake.grafana import alerts as A

    prefix = filled["prefix"]
    for kind in A.DETECTOR_RULES:
        sql = A.detector_sql(kind, prefix)
        rows = store.rows(sql)
        assert [c for c, *_ in store.rows(f"DESCRIBE TABLE ({sql})")] == ["alert_id", "asset", "severity", "firing"]
        expected = {"silence": {f"{filled['tag']}-silence"}, "completeness_drop": {f"{filled['tag']}-compl"},
                    "volume_drop": set()}[kind]      # the volume drop was resolved
        assert {r[0] for r in rows if r[0].startswith(filled["tag"])} == expected
        assert all(r[3] == 1.0 for r in rows)
    (seconds,), = store.rows(A.stall_sql(prefix))
    assert 0 <= seconds < 600          # the pipeline just wrote: not stalled
    (seconds,), = store.rows(A.stall_sql("nobody."))
    assert seconds > 600               # nothing ever written: stalled
