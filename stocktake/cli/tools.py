"""`stocktake bench` and `stocktake eval-gaps`: measurements."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from stocktake.cli.common import POSITIVE_FLOAT, POSITIVE_INT, json_option, pass_settings, print_json

if TYPE_CHECKING:
    from stocktake.settings import Settings


@click.command(help="end-to-end throughput benchmark")
@click.option("--events", type=POSITIVE_INT, default=100_000)
@click.option("--envelope", type=POSITIVE_INT, default=100)
@click.option("--scoring", type=click.Choice(("off", "on", "both")), default="both",
              help="run the worker with in-stream scoring off, on, or both (default)")
@json_option
@pass_settings
def bench(settings: Settings, events: int, envelope: int, scoring: str, as_json: bool) -> int:
    from stocktake.tools import bench as benchmark
    report = benchmark.run(events=events, envelope=envelope, scoring=scoring)
    if as_json:
        print_json(report)
    else:
        benchmark.print_report(report)
    return 0


@click.command("eval-gaps", help="replay the shared data with injected gaps: gap detection precision, recall, "
                                 "time to detect, false alarms")
@click.option("--runs", type=POSITIVE_INT, default=144, help="injected runs per gap kind (default 144)")
@click.option("--seed", type=int, default=7)
@click.option("--days", type=POSITIVE_INT, default=1, help="length of the tiled clean days")
@click.option("--check-every", type=POSITIVE_FLOAT, default=None,
              help="seconds of event time between silence checks (default: the worker's STOCKTAKE_GAP_INTERVAL, 2)")
@json_option
@pass_settings
def eval_gaps(settings: Settings, runs: int, seed: int, days: int, check_every: float | None, as_json: bool) -> int:
    from stocktake.tools import evalgaps
    return evalgaps.main(runs=runs, seed=seed, as_json=as_json, days=days,
                         check_s=check_every or settings.gap_interval_s)
