"""`stocktake bench` and `stocktake eval-gaps`: measurements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stocktake.cli.common import (
    PATH,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    CliError,
    json_option,
    pass_settings,
    print_json,
)

if TYPE_CHECKING:
    from stocktake.settings import Settings


@click.command(help="end-to-end throughput benchmark; --inventory: what reading the inventory costs")
@click.option("--events", type=POSITIVE_INT, default=None,
              help="events per run (default 100,000; with --inventory 1,000,000)")
@click.option("--envelope", type=POSITIVE_INT, default=100)
@click.option("--scoring", type=click.Choice(("off", "on", "both")), default="both",
              help="run the worker with in-stream scoring off, on, or both (default); "
                   "with --inventory off or on (default: STOCKTAKE_SCORING)")
@click.option("--inventory", is_flag=True,
              help="ingest the REES46 replay multiplied to --events (three streams, envelopes) through one "
                   "worker, then time inventory, report, every Grafana panel's and gap detector's SQL, store "
                   "size, and ingest with vs without a client reading the inventory every second")
@click.option("--looks", is_flag=True,
              help="write a synthetic history straight into a fresh embedded store, growing to each --history "
                   "size, and time the alerting worker's look at each")
@click.option("--history", type=str, default="1000000,10000000", show_default=True,
              help="with --looks: stored events to time the look at, comma-separated")
@click.option("--scorer", is_flag=True,
              help="store the REES46 replay multiplied to --events (default 200,000) as valid in a fresh embedded "
                   "store, then time the one scorer folding it in, its snapshot and a new scorer loading that")
@click.option("--latency", is_flag=True,
              help="offer events at each --rates from a producer process, single events and envelopes of "
                   "--envelope, and report produced -> counted in the inventory p50/p95/p99 and peak RSS")
@click.option("--rates", type=str, default="1000,10000,40000", show_default=True,
              help="with --latency: offered events/s, comma-separated")
@click.option("--seconds", type=POSITIVE_FLOAT, default=20.0, show_default=True,
              help="with --latency: how long each rate is offered")
@click.option("--json-out", type=PATH, default=None, help="also write the report as JSON to this file")
@json_option
@pass_settings
def bench(settings: Settings, events: int | None, envelope: int, scoring: str, inventory: bool, looks: bool,
          history: str, scorer: bool, latency: bool, rates: str, seconds: float, json_out: Path | None,
          as_json: bool) -> int:
    from stocktake.tools import bench as benchmark
    from stocktake.tools import bench_inventory, bench_latency, bench_looks, bench_scorer
    progress = None if as_json else lambda text: click.echo(f"bench: {text}", err=True)
    if scorer:
        report = bench_scorer.run_scorer(events or 200_000, progress=progress)
    elif looks:
        report = bench_looks.run_looks(_counts("--history", history), progress=progress)
    elif latency:
        report = bench_latency.run_latency(_counts("--rates", rates), seconds, (1, envelope), progress=progress)
    elif inventory:
        report = bench_inventory.run_inventory(
            events=events or 1_000_000, envelope=envelope,
            scoring=None if scoring == "both" else scoring == "on", progress=progress)
    else:
        report = benchmark.run(events=events or 100_000, envelope=envelope, scoring=scoring)
    if json_out is not None:
        json_out = json_out.expanduser()
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {json_out}: {exc.strerror or exc}") from None
    if as_json:
        print_json(report)
    elif scorer:
        bench_scorer.print_scorer_report(report)
    elif looks:
        bench_looks.print_looks_report(report)
    elif latency:
        bench_latency.print_latency_report(report)
    elif inventory:
        bench_inventory.print_inventory_report(report)
    else:
        benchmark.print_report(report)
    return 0


def _counts(flag: str, text: str) -> list[int]:
    """Positive counts given as ``1000,10000`` (or ``1_000``)."""
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"{flag}: expected counts separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise CliError(f"{flag}: expected positive counts, got {text!r}")
    return counts


@click.command("eval-gaps", help="replay the shared data with injected gaps: gap detection precision, recall, "
                                 "time to detect, false alarms")
@click.option("--runs", type=POSITIVE_INT, default=None,
              help="injected runs per gap kind (default 144; with --weeks, 8-20 per kind)")
@click.option("--seed", type=int, default=7)
@click.option("--days", type=POSITIVE_INT, default=1, help="length of the tiled clean days")
@click.option("--weeks", type=POSITIVE_INT, default=None,
              help="instead, N weeks of shaped REES46 (daily/weekly curve, holidays, low-volume assets) with "
                   "multi-day, hour, funnel, new-error-type and cold-start injections at every scale")
@click.option("--check-every", type=POSITIVE_FLOAT, default=None,
              help="seconds of event time between silence checks (default: the worker's STOCKTAKE_GAP_INTERVAL, 2)")
@json_option
@pass_settings
def eval_gaps(settings: Settings, runs: int | None, seed: int, days: int, weeks: int | None,
              check_every: float | None, as_json: bool) -> int:
    if weeks is not None:
        from stocktake.tools import evalweeks
        return evalweeks.main(weeks=weeks, runs=runs, seed=seed, as_json=as_json,
                              check_s=check_every or settings.gap_interval_s)
    from stocktake.tools import evalgaps
    return evalgaps.main(runs=runs or 144, seed=seed, as_json=as_json, days=days,
                         check_s=check_every or settings.gap_interval_s)
