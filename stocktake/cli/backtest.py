"""`stocktake backtest PATH`: replay a history through the gap detectors, offline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import click

from stocktake.cli.common import PATH, POSITIVE_FLOAT, CliError, EventTime, json_option, pass_settings

if TYPE_CHECKING:
    from stocktake.settings import Settings


@click.command(short_help="which alerts a history of events would have raised",
               help="which alerts a history of events would have raised: each event judged by its stream's "
                    "contract, then fed in event-time order to the gap detectors the worker runs, with the "
                    "worker's gap settings (STOCKTAKE_GAPS_CONFIG, STOCKTAKE_GAP_INTERVAL, "
                    "STOCKTAKE_MINUTE_CLOSE_DELAY). No broker, no store."
                    "\n\nPATH: rees46 | olist | a .jsonl/.ndjson/.csv file (optionally .gz) of events, as "
                    "`stocktake replay` reads it | a directory of such files")
@click.argument("path")
@json_option
@click.option("--report", type=PATH, default=None, metavar="FILE.html",
              help="also write an HTML page: the alert timeline and the volume per asset and hour")
@click.option("--from", "start", type=EventTime(), default=None,
              help="replay only events from this event time (ISO-8601; naive is UTC)")
@click.option("--to", "end", type=EventTime(), default=None, help="...and before this one")
@click.option("--gaps-config", type=PATH, default=None, metavar="FILE.toml",
              help="per-asset detector settings (default: STOCKTAKE_GAPS_CONFIG)")
@click.option("--check-every", type=POSITIVE_FLOAT, default=None,
              help="seconds of event time between looks (default: STOCKTAKE_GAP_INTERVAL, 2)")
@pass_settings
def backtest(settings: Settings, path: str, as_json: bool, report: Path | None, start: dt.datetime | None,
             end: dt.datetime | None, gaps_config: Path | None, check_every: float | None) -> int:
    from stocktake.tools import backtest as tool
    if start and end and start >= end:
        raise CliError("--from must be before --to")
    if check_every is not None:
        settings = settings.model_copy(update={"gap_interval_s": check_every})
    return tool.main(path, settings, as_json=as_json, report=report,
                     start_ms=None if start is None else int(start.timestamp() * 1000),
                     end_ms=None if end is None else int(end.timestamp() * 1000),
                     gaps_config=None if gaps_config is None else str(gaps_config.expanduser()))
