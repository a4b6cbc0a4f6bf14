"""`stocktake up`, `worker` and `replay`: run the pipeline, feed it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from stocktake.cli.common import POSITIVE_FLOAT, POSITIVE_INT, CliError, Port, Speed, data_dir_option, pass_settings

if TYPE_CHECKING:
    from stocktake.settings import Settings


@click.command(help="embedded demo: Tansu + worker + chDB, replaying real data")
@data_dir_option
@click.option("--kafka-port", type=Port(), default=None, help="Tansu port (default: a free one)")
@click.option("--replay", "source", default="rees46", help="rees46 | olist | none | PATH (CSV/JSONL in the contract)")
@click.option("--speed", type=Speed(), default="60", help="N× event time, or max (default 60)")
@click.option("--duration", type=POSITIVE_FLOAT, default=None, help="stop after SECONDS")
@click.option("--inject", default="", help="faults, e.g. duplicates=0.03,malformed=0.01")
@click.option("--envelope", type=POSITIVE_INT, default=1, help="events per Kafka message")
@click.option("--partitions", type=POSITIVE_INT, default=None)
@click.option("--original-time", is_flag=True,
              help="keep the data's own event times (judged as history) instead of replaying it as live")
@pass_settings
def up(settings: Settings, kafka_port: int | None, source: str, speed: float | None, duration: float | None,
       inject: str, envelope: int, original_time: bool) -> int:
    from stocktake import sources
    from stocktake.cli.foreground import serve
    from stocktake.tools import replay
    events = [] if source == "none" else replay.key_by_contract(sources.load_events(source), settings)
    faults = replay.parse_faults(inject) if inject else None
    return serve(settings, kafka_port, duration, events=events,
                 replay_opts={"faults": faults, "speed": speed, "envelope": envelope, "live": not original_time})


@click.command(help="run a worker (STOCKTAKE_KAFKA/STOCKTAKE_CLICKHOUSE, or embedded)")
@data_dir_option
@click.option("--kafka-port", type=Port(), default=None)
@click.option("--duration", type=POSITIVE_FLOAT, default=None)
@pass_settings
def worker(settings: Settings, kafka_port: int | None, duration: float | None) -> int:
    from stocktake.cli.foreground import serve
    return serve(settings, kafka_port, duration, events=None, replay_opts={})


@click.command(short_help="produce replay data into a running Kafka",
               help="produce replay data into a running Kafka, on the STOCKTAKE_TOPIC_PREFIX topics"
                    "\n\nSOURCE: rees46 | olist | PATH")
@click.argument("source")
@click.option("--kafka", default=None, help="bootstrap servers (default STOCKTAKE_KAFKA)")
@click.option("--speed", type=Speed(), default=None, help="N× event time, or max (default)")
@click.option("--inject", default="")
@click.option("--envelope", type=POSITIVE_INT, default=1)
@click.option("--original-time", is_flag=True, help="keep the data's own event times instead of replaying it as live")
@pass_settings
def replay(settings: Settings, source: str, kafka: str | None, speed: float | None, inject: str, envelope: int,
           original_time: bool) -> int:
    from stocktake import sources
    from stocktake.tools import replay as replay_tool
    bootstrap = kafka or settings.kafka
    if not bootstrap:
        raise CliError("no Kafka: pass --kafka HOST:PORT or set STOCKTAKE_KAFKA")
    events = replay_tool.key_by_contract(sources.load_events(source), settings)
    faults = replay_tool.parse_faults(inject) if inject else None
    counts = replay_tool.play(bootstrap, events, topics=replay_tool.stream_topics(settings), speed=speed,
                              live=not original_time, envelope=envelope, faults=faults)
    print(json.dumps(counts))
    return 0
