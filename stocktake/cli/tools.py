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
@click.option("--json-out", type=PATH, default=None, help="also write the report as JSON to this file")
@json_option
@pass_settings
def bench(settings: Settings, events: int | None, envelope: int, scoring: str, inventory: bool, looks: bool,
          history: str, json_out: Path | None, as_json: bool) -> int:
    from stocktake.tools import bench as benchmark
    from stocktake.tools import bench_inventory, bench_looks
    if looks:
        try:
            sizes = [int(size.replace("_", "")) for size in history.split(",") if size.strip()]
        except ValueError:
            raise CliError(f"--history: expected event counts separated by commas, got {history!r}") from None
        if not sizes or min(sizes) < 1:
            raise CliError(f"--history: expected positive event counts, got {history!r}")
        report = bench_looks.run_looks(sizes, progress=None if as_json else lambda text: click.echo(
            f"bench: {text}", err=True))
    elif inventory:
        report = bench_inventory.run_inventory(
            events=events or 1_000_000, envelope=envelope,
            scoring=None if scoring == "both" else scoring == "on",
            progress=None if as_json else lambda text: click.echo(f"bench: {text}", err=True))
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
    elif looks:
        bench_looks.print_looks_report(report)
    elif inventory:
        bench_inventory.print_inventory_report(report)
    else:
        benchmark.print_report(report)
    return 0


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
