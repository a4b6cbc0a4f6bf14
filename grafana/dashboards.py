"""The four stocktake dashboards, as code (grafana-foundation-sdk, schemaVersion 41).

Each panel is a PanelSpec: its SQL (grafana/sql.py), its visualisation, and the columns the
SQL must return. ``build_all()`` turns them into dashboard JSON through the SDK's builders;
``stocktake grafana build`` writes that JSON under grafana/dashboards/, and the tests check
the committed files are what the code builds, that they validate against Grafana's dashboard
schema, and that every panel's SQL runs and returns its columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import bargauge, common, dashboard, histogram, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from stocktake.grafana import sql as S
from stocktake.grafana.clickhouse import DATASOURCE_UID, PLUGIN, SQL, ref
from stocktake.grafana.macros import ALL_VALUE
from stocktake.settings import Settings

Viz = Literal["stat", "timeseries", "table", "bargauge", "histogram"]
RATE = "suffix: ev/min"

GREEN, YELLOW, ORANGE, RED, BLUE = "green", "yellow", "orange", "red", "blue"


@dataclass(frozen=True)
class PanelSpec:
    title: str
    sql: str
    viz: Viz
    columns: tuple[str, ...]              # what the SQL returns, in order
    w: int = 12
    h: int = 8
    description: str = ""
    unit: str | None = None
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    thresholds: tuple[tuple[float | None, str], ...] = ()
    columns_units: tuple[tuple[str, str], ...] = ()       # per-column unit overrides
    gauges: tuple[str, ...] = ()                           # table columns drawn as gauges (0..1)
    scores: tuple[str, ...] = ()                           # table columns holding a 0-100 quality score
    columns_colors: tuple[tuple[str, str], ...] = ()       # per-column fixed colours (stat values)
    stack: bool = False
    bars: bool = False
    dashed: tuple[str, ...] = ()                           # series regexps drawn dashed
    may_be_empty: bool = False                             # e.g. scores before the scorer runs
    min_interval: str = "1m"


@dataclass(frozen=True)
class Row:
    title: str


@dataclass(frozen=True)
class DashSpec:
    uid: str
    title: str
    description: str
    variables: tuple[str, ...]
    items: tuple[PanelSpec | Row, ...]
    time_from: str = "now-6h"
    refresh: str = "30s"
    tags: tuple[str, ...] = ("stocktake",)

    @property
    def panels(self) -> Iterator[PanelSpec]:
        return (p for p in self.items if isinstance(p, PanelSpec))

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"


# -- variables ------------------------------------------------------------------------------------

_DEFAULTS = Settings()
CONSTANTS = {
    # The judgement settings of stocktake/settings.py, with their defaults: adjust here when a
    # deployment changes STOCKTAKE_LATENESS etc. (hidden on the dashboards).
    "lateness_s": _DEFAULTS.lateness_s,
    "freshness_target_s": _DEFAULTS.freshness_target_s,
    "amount_tolerance": _DEFAULTS.amount_tolerance,
    "drift_grace_s": _DEFAULTS.drift_grace_s,
    "field_vanish_after_s": _DEFAULTS.field_vanish_after_s,
}


def _all() -> dm.VariableOption:
    return dm.VariableOption(selected=True, text="All", value="$__all")


def _query_var(name: str, label: str, sql: str, description: str) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(label).description(description)
            .datasource(ref()).query(sql).refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True).all_value(ALL_VALUE)
            .current(_all()))


def _variable(name: str) -> Any:
    if name == "datasource":
        return (dashboard.DatasourceVariable("datasource").label("ClickHouse").type(PLUGIN)
                .current(dm.VariableOption(selected=True, text="stocktake ClickHouse", value=DATASOURCE_UID)))
    if name == "prefix":
        return (dashboard.TextBoxVariable("prefix").label("Topic prefix")
                .description("The deployment's topic prefix with its dot (STOCKTAKE_TOPIC_PREFIX + '.')")
                .default_value(_DEFAULTS.topic_dot_prefix)
                .current(dm.VariableOption(selected=True, text=_DEFAULTS.topic_dot_prefix,
                                           value=_DEFAULTS.topic_dot_prefix)))
    if name == "stream":
        return _query_var("stream", "Stream", S.VAR_STREAM, "behaviour, product, transaction")
    if name == "asset":
        return _query_var("asset", "Asset", S.VAR_ASSET,
                          "streams and sub-assets (behaviour/event_type=view, .../source=...)")
    if name == "source":
        return _query_var("source", "Source", S.VAR_SOURCE, "the events' source field")
    if name == "model":
        return _query_var("model", "Model", S.VAR_MODEL, "scoring model")
    if name == "entity":
        return (dashboard.CustomVariable("entity").label("Entity").values("user,product").multi(True)
                .include_all(True).all_value(ALL_VALUE).current(_all()))
    if name in CONSTANTS:
        return dashboard.ConstantVariable(name).value(f"{CONSTANTS[name]:g}")
    raise KeyError(name)


EVENT_VARS = ("datasource", "prefix", "stream", "asset", "source")

# -- panels ----------------------------------------------------------------------------------


def _thresholds(steps: tuple[tuple[float | None, str], ...]) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in steps]))


def _override(name: str, props: dict[str, Any]) -> tuple[str, list[dm.DynamicConfigValue]]:
    return name, [dm.DynamicConfigValue(id_val=k, value=v) for k, v in props.items()]


def _panel(spec: PanelSpec) -> Any:
    kind: Literal["table", "timeseries"] = "timeseries" if spec.viz == "timeseries" else "table"
    p: Any
    if spec.viz == "timeseries":
        p = (timeseries.Panel().line_width(1).fill_opacity(10 if not spec.stack else 60)
             .legend(common.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
             .span_nulls(False).show_points(cm.VisibilityMode.NEVER))
        if spec.stack:
            p = p.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        if spec.bars:
            p = p.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    elif spec.viz == "stat":
        p = (stat.Panel().graph_mode(cm.BigValueGraphMode.NONE).color_mode(cm.BigValueColorMode.VALUE)
             .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("")))
    elif spec.viz == "bargauge":
        p = (bargauge.Panel().display_mode(cm.BarGaugeDisplayMode.GRADIENT).orientation(cm.VizOrientation.HORIZONTAL)
             .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(True).limit(50)))
    elif spec.viz == "histogram":
        p = histogram.Panel().fill_opacity(60).legend(
            common.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
    else:
        p = table.Panel().cell_height(cm.TableCellHeight.SM).show_header(True).filterable(True)
    p = (p.title(spec.title).datasource(ref()).span(spec.w).height(spec.h)
         .with_target(SQL(spec.sql, kind)))
    if spec.description:
        p = p.description(spec.description)
    if spec.viz == "timeseries":
        p = p.interval(spec.min_interval)
    if spec.unit:
        p = p.unit(spec.unit)
    if spec.decimals is not None:
        p = p.decimals(spec.decimals)
    if spec.min is not None:
        p = p.min(spec.min)
    if spec.max is not None:
        p = p.max(spec.max)
    # Without thresholds Grafana colours values from 80 up red: give every panel its own.
    steps = spec.thresholds or ((None, BLUE),)
    p = p.thresholds(_thresholds(steps))
    if spec.thresholds or spec.viz in ("stat", "bargauge"):
        p = p.color_scheme(dashboard.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
    for column, unit in spec.columns_units:
        p = p.override_by_name(*_override(column, {"unit": unit}))
    for column in spec.gauges:
        p = p.override_by_name(*_override(column, {
            "unit": "percentunit", "min": 0, "max": 1, "decimals": 1,
            "custom.cellOptions": {"type": "gauge", "mode": "basic", "valueDisplayMode": "text"},
            "thresholds": {"mode": "absolute", "steps": [{"color": RED, "value": None},
                                                         {"color": YELLOW, "value": 0.9},
                                                         {"color": GREEN, "value": 0.99}]},
            "color": {"mode": "thresholds"}}))
    for column in spec.scores:
        p = p.override_by_name(*_override(column, {
            "decimals": 1, "min": 0, "max": 100,
            "custom.cellOptions": {"type": "color-text"},
            "thresholds": {"mode": "absolute",
                           "steps": [{"color": c, "value": v} for v, c in QUALITY_THRESHOLDS]},
            "color": {"mode": "thresholds"}}))
    for column, color in spec.columns_colors:
        p = p.override_by_name(*_override(column, {"color": {"mode": "fixed", "fixedColor": color}}))
    for pattern in spec.dashed:
        p = p.override_by_regexp(*_override(pattern, {
            "custom.lineStyle": {"fill": "dash", "dash": [10, 10]}, "custom.fillOpacity": 0}))
    return p


# -- the dashboards --------------------------------------------------------------------------

QUALITY_THRESHOLDS = ((None, RED), (70.0, ORANGE), (90.0, YELLOW), (97.0, GREEN))
FRESHNESS_THRESHOLDS = ((None, GREEN), (300.0, YELLOW), (3600.0, RED))

INVENTORY = DashSpec(
    uid="stocktake-inventory",
    title="stocktake · Live inventory",
    description="Every asset with its rate, totals, freshness and quality score; events per minute; "
                "entities and orphans. Read from the rollups ClickHouse keeps as events are stored: "
                "counts are exact, the time range is event time in whole minutes, distinct ids are "
                "approximate.",
    variables=(*EVENT_VARS, "lateness_s", "freshness_target_s", "amount_tolerance"),
    items=(
        PanelSpec("Events in range", S.TOTALS, "stat", ("events", "valid", "duplicates", "invalid"), w=10, h=4,
                  unit="short",
                  description="Judged events in the time range (whole minutes of event time), by verdict"),
        PanelSpec("Now", S.RATE_AND_FRESHNESS, "stat", ("rate_5m", "assets", "freshness_s"), w=7, h=4,
                  columns_units=(("rate_5m", RATE), ("assets", "short"), ("freshness_s", "s")),
                  description="Events per minute over the 5 whole minutes before the range's end minute "
                              "(rows of the picked assets), assets seen, and the age of the newest valid "
                              "event (now − newest event time)"),
        PanelSpec("Entities", S.ENTITIES, "stat", ("users", "catalog", "active_products", "orders", "orphans"),
                  w=7, h=4, unit="short",
                  description="Distinct users, products referenced by behaviour/transactions and orders "
                              "in the range (approximate: HyperLogLog, ~0.3%); products in the catalog "
                              "(latest op upsert, over all history, not as of the range's end); orphans: "
                              "products the catalog never announced, referenced in the range"),
        Row("Assets"),
        PanelSpec("Assets", S.ASSETS_TABLE, "table",
                  ("asset", "rate_5m", "avg_rate", "events", "valid", "duplicates", "invalid", "last_event",
                   "freshness_s", "lag_p95_ms", "quality"), w=24, h=14, scores=("quality",),
                  columns_units=(("rate_5m", RATE), ("avg_rate", RATE), ("freshness_s", "s"),
                                 ("lag_p95_ms", "ms"), ("last_event", "dateTimeAsIso")),
                  description="Quality: 0–100, the inventory's score (completeness, validity, uniqueness, "
                              "timeliness, consistency; see the Data quality dashboard). Rates: the range, "
                              "and the 5 whole minutes before its end minute; lag p95: a t-digest "
                              "estimate; late: lag over the lateness in whole seconds"),
        PanelSpec("Events per minute by asset", S.EVENTS_PER_ASSET, "timeseries",
                  ("time", "asset", "events_per_min"), w=16, h=9, unit=RATE),
        PanelSpec("Events per minute by verdict", S.EVENTS_BY_STATUS, "timeseries",
                  ("time", "valid", "duplicates", "invalid"), w=8, h=9, unit=RATE, stack=True),
        Row("Entities and orphans"),
        PanelSpec("Active entities per interval", S.ACTIVE_ENTITIES, "timeseries",
                  ("time", "users", "products", "orders"), w=12, h=8, unit="short",
                  description="Distinct ids of valid events per interval (approximate: HyperLogLog, ~0.3%)"),
        PanelSpec("Orphan references per minute", S.ORPHAN_REFS_PER_MIN, "timeseries",
                  ("time", "stream", "orphan_refs_per_min"), w=12, h=8, unit=RATE, bars=True,
                  description="Valid behaviour/transaction events naming a product the catalog never "
                              "announced, per stream: the gap detectors' orphan share per minute "
                              "(baselines, metric 'orphans') times the minute's product references. "
                              "Minutes the detectors did not judge are empty; the source filter does not "
                              "apply"),
        PanelSpec("Orphan products", S.ORPHANS, "table", ("product_id", "refs", "streams", "first_ref", "last_ref"),
                  w=24, h=8,
                  description="Products the catalog never announced, referenced in the range (by the picked "
                              "streams and sources); their references, streams and first/last reference "
                              "over all history. Top 50 by references"),
        Row("Catalog findings (product text)"),
        PanelSpec("Catalog findings", S.CATALOG_COUNTS, "stat",
                  ("catalog_products", "duplicate_groups", "duplicate_products", "indistinct_texts",
                   "category_mismatches"), w=24, h=4, unit="short", may_be_empty=True,
                  columns_colors=(("catalog_products", BLUE), ("duplicate_groups", ORANGE),
                                  ("duplicate_products", ORANGE), ("indistinct_texts", YELLOW),
                                  ("category_mismatches", RED)),
                  description="From the product text model, as the worker keeps them (the catalog now, "
                              "whatever the range and filters): products in the index; groups of different "
                              "products with identical or near-identical text (cosine >= "
                              "STOCKTAKE_CATALOG_DUPLICATE_SIMILARITY) and their products; texts with many "
                              "near neighbours (STOCKTAKE_CATALOG_INDISTINCT_*); products far from their "
                              "category's centroid (STOCKTAKE_CATALOG_MISMATCH_SIMILARITY). All 0 while the "
                              "text encoder is off or has encoded nothing"),
        PanelSpec("Catalog findings: examples", S.CATALOG_EXAMPLES, "table",
                  ("finding", "example", "similarity", "example_products", "ids", "example_texts",
                   "category_or_nearest"), w=24, h=10, may_be_empty=True,
                  description="Up to 10 examples a finding: the largest duplicate groups (similarity: the "
                              "weakest link; 1 for identical text; up to 5 of their ids), the most crowded "
                              "texts (similarity of the k-th nearest; their nearest texts), the products "
                              "least similar to their category's centroid (and the category)"),
    ),
)

QUALITY = DashSpec(
    uid="stocktake-quality",
    title="stocktake · Data quality",
    description="Completeness and validity per field over time, the quality score's components, "
                "schema drift and dead letters by reason.",
    variables=(*EVENT_VARS, "lateness_s", "freshness_target_s", "amount_tolerance", "drift_grace_s",
               "field_vanish_after_s"),
    items=(
        PanelSpec("Quality score by asset", S.QUALITY_TABLE, "table",
                  ("asset", "score", "completeness", "validity", "uniqueness", "timeliness", "consistency"),
                  w=24, h=14, gauges=("completeness", "validity", "uniqueness", "timeliness", "consistency"),
                  scores=("score",),
                  description="Score = 100 · Σ weight·component / Σ weight over components with data "
                              "(weights: completeness .25, validity .30, uniqueness .15, timeliness .15, "
                              "consistency .15). Empty: no data for that component. Consistency counts the "
                              "references to orphans over all history of the orphans referenced in the "
                              "range (at most the range's references)."),
        PanelSpec("Quality components per stream", S.QUALITY_OVER_TIME, "timeseries",
                  ("time", "stream", "completeness", "validity", "uniqueness", "on_time"), w=24, h=9,
                  unit="percentunit", max=1.0),
        Row("Fields"),
        PanelSpec("Field completeness (fields with gaps)", S.FIELD_COMPLETENESS, "timeseries",
                  ("time", "field", "completeness"), w=12, h=9, unit="percentunit", min=0.0, max=1.0,
                  description="Share of events carrying the field with a non-null value, for fields that "
                              "were incomplete somewhere in the range"),
        PanelSpec("Field validity (fields with rejected values)", S.FIELD_VALIDITY, "timeseries",
                  ("time", "field", "validity"), w=12, h=9, unit="percentunit", max=1.0,
                  description="1 − rejected/present, for fields a rejection blamed in the range "
                              "(invalid_type, invalid_value, invalid_ts)"),
        PanelSpec("Fields", S.FIELDS_TABLE, "table",
                  ("stream", "field", "in_contract", "types", "completeness", "validity", "distinct_approx",
                   "first_ts", "last_ts"),
                  w=24, h=10, gauges=("completeness", "validity"),
                  description="Over the range (whole minutes), but distinct_approx: approximate distinct "
                              "values over all history, whatever the range and source; in_contract: the "
                              "stream's contract in force names the field (1)"),
        Row("Drift and dead letters"),
        PanelSpec("Schema drift (from the data)", S.DRIFT, "table",
                  ("at", "stream", "field", "kind", "type", "details"), w=12, h=8, may_be_empty=True,
                  description="New fields, type changes and vanished fields in the range, judged in event "
                              "time as processors.drift does"),
        PanelSpec("Drift alerts", S.DRIFT_ALERTS, "table",
                  ("opened_at", "asset", "severity", "state", "reason", "details"), w=12, h=8,
                  description="schema_drift alerts from the stocktake.alerts topic"),
        PanelSpec("Dead letters per minute by reason", S.DEAD_LETTERS_PER_MIN, "timeseries",
                  ("time", "reason", "dead_letters"), w=14, h=9, unit=RATE, bars=True, stack=True),
        PanelSpec("Dead letters by reason", S.DEAD_LETTERS_BY_REASON, "table",
                  ("stream", "reason", "dead_letters", "share", "last_seen"), w=10, h=9,
                  columns_units=(("share", "percentunit"),)),
        PanelSpec("Contract breaches by version", S.CONTRACT_BREACHES, "table",
                  ("asset", "version", "severity", "breach", "events", "first_ts", "last_ts"), w=24, h=8,
                  may_be_empty=True,
                  description="Per asset and contract version: rejections (severity reject, the dead letter's "
                              "reason) and warnings (severity warn: the event stayed valid; a conditional "
                              "rule's name in brackets), over all history of the checks breached in the range"),
    ),
)

GAPS = DashSpec(
    uid="stocktake-gaps",
    title="stocktake · Data gaps",
    description="Open and recent alerts (the stocktake.alerts topic is the source of truth; the "
                "alerts table is its copy), silence and volume against the learned baselines.",
    variables=EVENT_VARS,
    items=(
        PanelSpec("Alerts", S.ALERT_COUNTS, "stat", ("critical", "warning", "info", "resolved_in_range"),
                  w=24, h=4, unit="short", description="Firing now, and resolved in the range",
                  columns_colors=(("critical", RED), ("warning", ORANGE), ("info", BLUE),
                                  ("resolved_in_range", GREEN))),
        PanelSpec("Open alerts", S.OPEN_ALERTS, "table",
                  ("alert_id", "asset", "kind", "severity", "opened_at", "open_for_s", "clock", "reason",
                   "expected", "observed"), w=24, h=8, columns_units=(("open_for_s", "s"),)),
        PanelSpec("Recent alerts", S.RECENT_ALERTS, "table",
                  ("alert_id", "asset", "kind", "severity", "state", "opened_at", "resolved_at", "duration_s",
                   "reason"), w=24, h=8, columns_units=(("duration_s", "s"),),
                  description="Opened or resolved in the range"),
        Row("Silence and volume"),
        PanelSpec("Silence: time since the last valid event", S.SILENCE, "bargauge",
                  ("asset", "last_event", "silent_s"), w=8, h=12, unit="s", min=0.0, max=1800.0,
                  thresholds=((None, GREEN), (300.0, YELLOW), (900.0, RED)),
                  description="As of the end of the range (whole minutes): the newest valid event up to "
                              "its end minute. Empty for an asset silent all the week before a range "
                              "that ends before its newest event"),
        PanelSpec("Events per minute vs baseline", S.VOLUME_BASELINE, "timeseries",
                  ("time", "series", "observed", "expected", "lower", "upper"), w=16, h=12, unit=RATE,
                  dashed=("^(expected|lower|upper).*",),
                  description="observed vs the detectors' expected value and band (baselines table); "
                              "streams only unless assets are picked"),
        PanelSpec("Completeness vs baseline", S.COMPLETENESS_BASELINE, "timeseries",
                  ("time", "series", "observed", "expected", "lower", "upper"), w=12, h=9,
                  unit="percentunit", dashed=("^(expected|lower|upper).*",)),
        PanelSpec("Orphan references vs baseline", S.ORPHAN_BASELINE, "timeseries",
                  ("time", "series", "observed", "expected", "lower", "upper"), w=12, h=9, unit="short",
                  dashed=("^(expected|lower|upper).*",)),
    ),
)

SCORES = DashSpec(
    uid="stocktake-scores",
    title="stocktake · Scores",
    description="In-stream model scores (stocktake.scores.users / .products): distributions, top "
                "users and products, the scorer's lag, scoring latency and model versions.",
    variables=("datasource", "prefix", "entity", "model"),
    time_from="now-3h",
    refresh="1m",
    items=(
        PanelSpec("Scoring", S.SCORE_TOTALS, "stat", ("scored", "users", "products", "rate_5m", "latency_p95_ms"),
                  w=24, h=4, unit="short", may_be_empty=True,
                  columns_units=(("rate_5m", "suffix: scores/min"), ("latency_p95_ms", "ms"))),
        PanelSpec("Score distribution", S.SCORE_HISTOGRAM, "histogram", ("user_score", "product_score"),
                  w=12, h=9, may_be_empty=True),
        PanelSpec("Score quantiles", S.SCORE_QUANTILES, "timeseries", ("time", "entity", "p10", "p50", "p90"),
                  w=12, h=9, unit="short", may_be_empty=True),
        PanelSpec("Top users", S.top_scores("user"), "table", ("id", "score", "model_version", "last_scored"),
                  w=12, h=9, may_be_empty=True),
        PanelSpec("Top products", S.top_scores("product"), "table", ("id", "score", "model_version", "last_scored"),
                  w=12, h=9, may_be_empty=True),
        PanelSpec("Scoring latency (per row's batch)", S.SCORING_LATENCY, "timeseries",
                  ("time", "device", "p50", "p95", "p99"), w=12, h=8, unit="ms", may_be_empty=True),
        PanelSpec("Scorer lag (events stored, not yet in the features)", S.SCORING_LAG, "timeseries",
                  ("time", "lag_events", "lag_s"), w=24, h=7, unit="short", may_be_empty=True,
                  columns_units=(("lag_s", "s"),)),
        PanelSpec("Scores per minute by model version", S.SCORES_PER_VERSION, "timeseries",
                  ("time", "version", "scores_per_min"), w=12, h=8, unit="suffix: scores/min", may_be_empty=True),
        PanelSpec("Model versions", S.MODEL_VERSIONS, "table",
                  ("model", "model_version", "entity", "device", "scored", "first_scored", "last_scored",
                   "mean_score", "latency_p95_ms"), w=24, h=7, may_be_empty=True,
                  columns_units=(("latency_p95_ms", "ms"),)),
    ),
)

DASHBOARDS: tuple[DashSpec, ...] = (INVENTORY, QUALITY, GAPS, SCORES)


def _builtin_annotation() -> Any:
    # Grafana's own "Annotations & Alerts": shows the state changes of the alert rules linked to
    # this dashboard's panels (grafana/alerts.py links them). A ClickHouse annotation query
    # cannot be expressed in the dashboard schema (its annotation target is not a data query).
    return (dashboard.AnnotationQuery().name("Annotations & Alerts").built_in(1).type("dashboard")
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --")).enable(True).hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .target(dashboard.AnnotationTarget().limit(100).match_any(False).tags([]).type("dashboard")))


def build(spec: DashSpec) -> dict[str, Any]:
    """The dashboard JSON of one spec."""
    d = (dashboard.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(list(spec.tags))
         .time(spec.time_from, "now").refresh(spec.refresh).timezone("browser").editable()
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .timepicker(dashboard.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m", "15m", "1h"]))
         .link(dashboard.DashboardLink("stocktake").type(dm.DashboardLinkType.DASHBOARDS).tags(["stocktake"])
               .as_dropdown(False).include_vars(True).keep_time(True)))
    for name in spec.variables:
        d = d.with_variable(_variable(name))
    d = d.annotation(_builtin_annotation())
    row: Any = None
    for item in spec.items:
        if isinstance(item, Row):
            if row is not None:
                d = d.with_row(row)
            row = dashboard.Row(item.title)
            continue
        if row is None:
            d = d.with_panel(_panel(item))
        else:
            row = row.with_panel(_panel(item))
    if row is not None:
        d = d.with_row(row)
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder, sort_keys=True))
    # Expanded rows, as Grafana saves them: the row is empty and its panels follow it (only a
    # collapsed row holds its panels).
    flat: list[dict[str, Any]] = []
    for p in out.get("panels", []):
        if p.get("type") == "row":
            inner, p["panels"], p["collapsed"] = p.get("panels", []), [], False
            flat += [p, *inner]
        else:
            flat.append(p)
    out["panels"] = flat
    _number_panels(out)
    for var in out.get("templating", {}).get("list", []):
        if var["type"] != "interval":  # the SDK writes interval-only fields on every variable
            for key in ("auto", "auto_count", "auto_min"):
                var.pop(key, None)
    return out


def _number_panels(d: dict[str, Any]) -> None:
    next_id = 1
    for p in d.get("panels", []):
        p["id"] = next_id
        next_id += 1
        for inner in p.get("panels", []):
            inner["id"] = next_id
            next_id += 1


def build_all() -> dict[str, dict[str, Any]]:
    """filename -> dashboard JSON, for every dashboard."""
    return {spec.filename: build(spec) for spec in DASHBOARDS}


def dump(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def all_panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard JSON, rows' panels included (rows themselves excluded)."""
    for p in d.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def spec_by_uid(uid: str) -> DashSpec:
    return next(s for s in DASHBOARDS if s.uid == uid)


__all__ = ["DASHBOARDS", "DashSpec", "PanelSpec", "Row", "all_panels", "build", "build_all",
           "dump", "spec_by_uid"]
