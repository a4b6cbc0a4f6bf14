"""`stocktake` command line. Errors are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from stocktake.clickhouse.values import jsonable
from stocktake.console.tables import print_table
from stocktake.settings import Settings, SettingsError


class CliError(Exception):
    """A user-facing failure: printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a number or 'max', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--speed must be > 0")
    return value


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value
    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stocktake", description="Live data-asset inventory for e-commerce streams.")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default), ERROR")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, default=None,
                       help="state directory; chDB lives in DATA_DIR/chdb (default ./.stocktake)")

    up = sub.add_parser("up", help="embedded demo: Tansu + worker + chDB, replaying real data")
    common(up)
    up.add_argument("--kafka-port", type=_port, default=None, help="Tansu port (default: a free one)")
    up.add_argument("--replay", default="rees46", help="rees46 | olist | none | PATH (CSV/JSONL in the contract)")
    up.add_argument("--speed", type=_speed, default=60.0, help="N× event time, or max (default 60)")
    up.add_argument("--duration", type=_positive(float), default=None, help="stop after SECONDS")
    up.add_argument("--inject", default="", help="faults, e.g. duplicates=0.03,malformed=0.01")
    up.add_argument("--envelope", type=_positive(int), default=1, help="events per Kafka message")
    up.add_argument("--partitions", type=_positive(int), default=None)
    up.add_argument("--original-time", action="store_true",
                    help="keep the data's own event times (judged as history) instead of replaying it as live")

    worker = sub.add_parser("worker", help="run a worker (STOCKTAKE_KAFKA/STOCKTAKE_CLICKHOUSE, or embedded)")
    common(worker)
    worker.add_argument("--kafka-port", type=_port, default=None)
    worker.add_argument("--duration", type=_positive(float), default=None)

    replay = sub.add_parser("replay", help="produce replay data into a running Kafka")
    replay.add_argument("source", help="rees46 | olist | PATH")
    replay.add_argument("--kafka", default=None, help="bootstrap servers (default STOCKTAKE_KAFKA)")
    replay.add_argument("--speed", type=_speed, default=None, help="N× event time, or max (default)")
    replay.add_argument("--inject", default="")
    replay.add_argument("--envelope", type=_positive(int), default=1)
    replay.add_argument("--original-time", action="store_true",
                        help="keep the data's own event times instead of replaying it as live")

    inventory = sub.add_parser("inventory", help="assets with counts (asks the worker if one runs)")
    common(inventory)
    inventory.add_argument("--json", action="store_true")

    alerts = sub.add_parser("alerts", help="data-gap alerts, newest first (asks the worker if one runs)")
    common(alerts)
    alerts.add_argument("--open", action="store_true", help="only alerts still firing")
    alerts.add_argument("--json", action="store_true")

    query = sub.add_parser("query", help="run SQL on the store (asks the worker if one runs)")
    common(query)
    query.add_argument("sql")
    query.add_argument("--json", action="store_true")

    status = sub.add_parser("status", help="live view: rates, counts, quality, top issues (--once: one snapshot)")
    common(status)
    status.add_argument("--interval", type=_positive(float), default=2.0, help="seconds between refreshes")
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")

    report = sub.add_parser("report", help="write a self-contained HTML report")
    common(report)
    report.add_argument("--out", type=Path, default=Path("stocktake-report.html"),
                        help="HTML file to write (default ./stocktake-report.html)")

    from stocktake.grafana.commands import add_parser as add_grafana_parser
    add_grafana_parser(sub, common, _Parser)

    from stocktake.models.commands import add_parsers as add_model_parsers  # train, export-encoder
    add_model_parsers(sub, common, _Parser)

    eval_gaps = sub.add_parser("eval-gaps", help="replay the shared data with injected gaps: gap detection "
                               "precision, recall, time to detect, false alarms")
    eval_gaps.add_argument("--runs", type=_positive(int), default=144, help="injected runs per gap kind (default 144)")
    eval_gaps.add_argument("--seed", type=int, default=7)
    eval_gaps.add_argument("--days", type=_positive(int), default=1, help="length of the tiled clean days")
    eval_gaps.add_argument("--check-every", type=_positive(float), default=None,
                           help="seconds of event time between silence checks (default: the worker's "
                                "STOCKTAKE_GAP_INTERVAL, 2)")
    eval_gaps.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="end-to-end throughput benchmark")
    bench.add_argument("--events", type=_positive(int), default=100_000)
    bench.add_argument("--envelope", type=_positive(int), default=100)
    bench.add_argument("--scoring", choices=("off", "on", "both"), default="both",
                       help="run the worker with in-stream scoring off, on, or both (default)")
    bench.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(
            data_dir=getattr(args, "data_dir", None),
            partitions=getattr(args, "partitions", None),
            log_level=args.log_level,
        )
        _configure_logging(settings.log_level)
        handler = {
            "eval-gaps": cmd_eval_gaps,
            "up": cmd_up, "worker": cmd_worker, "replay": cmd_replay, "inventory": cmd_inventory,
            "alerts": cmd_alerts,
            "query": cmd_query, "status": cmd_status, "report": cmd_report, "bench": cmd_bench,
            "grafana": cmd_grafana,
            "train": cmd_models, "export-encoder": cmd_models,
        }[args.command]
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except (CliError, SettingsError) as exc:
        print(f"stocktake: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from stocktake.broker import BrokerError
        from stocktake.clickhouse.store import StoreError
        if isinstance(exc, StoreError | BrokerError | ValueError | FileNotFoundError):
            print(f"stocktake: error: {exc}", file=sys.stderr)
            return 2
        raise


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level.upper() != "DEBUG":
        # Faust/mode/aiokafka are chatty at INFO and warn about things we handle.
        for name in ("faust", "mode", "aiokafka", "stocktake.streams.app"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for name in ("clickhouse_connect", "urllib3", "urllib3.connectionpool", "stocktake.kafka"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


# -- up / worker ------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake import sources
    from stocktake.tools import replay
    source = args.replay
    events = [] if source == "none" else sources.load_events(source)
    faults = replay.parse_faults(args.inject) if args.inject else None
    return _serve(settings, args.kafka_port, args.duration, events=events,
                  replay_opts={"faults": faults, "speed": args.speed, "envelope": args.envelope,
                               "live": not args.original_time})


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    return _serve(settings, args.kafka_port, args.duration, events=None, replay_opts={})


def _serve(settings: Settings, kafka_port: int | None, duration: float | None,
           events: list[Any] | None, replay_opts: dict[str, Any]) -> int:
    from stocktake.streams.runtime import Runtime, running_worker

    other = running_worker(settings.data_dir)
    if other is not None and settings.embedded_kafka:
        raise CliError(f"{settings.data_dir} is in use by stocktake pid {other['pid']} ({other['http']})")
    runtime = Runtime(settings, kafka_port=kafka_port)
    try:
        runtime.open()
        _use_uvloop()
        return asyncio.run(_serve_async(runtime, duration, events, replay_opts))
    finally:
        runtime.close()


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve_async(runtime: Any, duration: float | None, events: list[Any] | None,
                       replay_opts: dict[str, Any]) -> int:
    from rich.console import Console

    from stocktake.console import progress
    from stocktake.streams.runtime import wait_until_assigned

    console = Console(stderr=True)
    settings = runtime.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _app, sink = await runtime.start_worker(web=True)
    console.print(
        f"[bold]stocktake[/] Kafka [cyan]{runtime.bootstrap}[/] · ClickHouse "
        f"[cyan]{settings.clickhouse_dsn}[/] · API [cyan]{runtime.http_url}[/]"
    )
    replay_state: dict[str, Any] = {"produced": 0, "done": events is None or not events, "error": None}
    if events:
        await wait_until_assigned([sink], settings.partitions)
        threading.Thread(target=_replay_thread, args=(runtime.bootstrap, events, replay_opts,
                         replay_state), daemon=True).start()
    started = time.monotonic()
    try:
        await progress.live(console, sink, replay_state, stop, duration, started)
    finally:
        await runtime.stop_all()
    if replay_state["error"]:
        raise CliError(f"replay failed: {replay_state['error']}")
    console.print(progress.summary(sink, time.monotonic() - started))
    return 0


def _replay_thread(bootstrap: str, events: list[Any], opts: dict[str, Any], state: dict[str, Any]) -> None:
    from stocktake.tools import replay
    try:
        speed = opts["speed"]
        live = bool(opts.get("live"))
        if live:
            # Event times shifted to now and compressed by the speed: pace at 1x, gaps kept,
            # so events arrive when they say they happened.
            events = replay.rebase_time(events, time.time(), speed)
            speed = 1.0 if speed else None
        messages = replay.to_messages(events, envelope=opts["envelope"], faults=opts["faults"])
        counts = replay.produce(bootstrap, messages, speed=speed,
                                progress=lambda n: state.__setitem__("produced", n),
                                max_sleep=None if live else replay.MAX_SLEEP_S)
        state["counts"] = counts
        state["produced"] = counts["messages"]
    except Exception as exc:  # reported by the main thread as one line
        state["error"] = str(exc)
    finally:
        state["done"] = True


# -- replay -------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake import sources
    from stocktake.tools import replay
    bootstrap = args.kafka or settings.kafka
    if not bootstrap:
        raise CliError("no Kafka: pass --kafka HOST:PORT or set STOCKTAKE_KAFKA")
    events = sources.load_events(args.source)
    faults = replay.parse_faults(args.inject) if args.inject else None
    speed = args.speed
    if not args.original_time:
        events = replay.rebase_time(events, time.time(), speed)
        speed = 1.0 if speed else None
    counts = replay.produce(bootstrap, replay.to_messages(events, envelope=args.envelope,
                                                         faults=faults), speed=speed,
                            max_sleep=replay.MAX_SLEEP_S if args.original_time else None)
    print(json.dumps(counts))
    return 0


# -- inventory / query: ask the worker, else open the store ------------------------------------


def _ask_worker(settings: Settings, path: str, body: dict[str, Any] | None = None) -> Any | None:
    from stocktake.streams.runtime import running_worker
    info = running_worker(settings.data_dir)
    if info is None or not info.get("http"):
        return None
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(info["http"] + path, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        payload = orjson.loads(exc.read() or b"{}")
        raise CliError(payload.get("error") or f"worker answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise CliError(f"worker pid {info['pid']} at {info['http']} did not answer: {exc}") from None


def _open_store(settings: Settings) -> Any:
    from stocktake.clickhouse.store import Store
    if not settings.clickhouse and not (settings.data_dir / "chdb").exists():
        raise CliError(f"no store in {settings.data_dir} (run `stocktake up` first or pass --data-dir)")
    store = Store(settings.clickhouse_dsn)
    store.migrate()
    return store


def _from_worker_or_store(settings: Settings, path: str, compute: Callable[[Any], Any],
                          body: dict[str, Any] | None = None) -> dict[str, Any]:
    """chDB allows one process per store: while a worker owns it, ask the worker's API;
    otherwise open the store here and compute the same answer."""
    result = _ask_worker(settings, path, body)
    if result is None:
        store = _open_store(settings)
        try:
            result = jsonable(compute(store))
        finally:
            store.close()
    return dict(result)


def load_inventory(settings: Settings) -> dict[str, Any]:
    """The inventory document: from the running worker, else from the store."""
    from stocktake.services import inventory
    return _from_worker_or_store(settings, "/api/inventory", lambda store: inventory.build(store, settings))


def cmd_inventory(args: argparse.Namespace, settings: Settings) -> int:
    result = load_inventory(settings)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from stocktake.console.views import print_inventory
        print_inventory(result)
    return 0


def run_sql(settings: Settings, sql: str) -> dict[str, Any]:
    """{"columns", "rows"} of any SQL: from the running worker, else from the store."""
    def compute(store: Any) -> dict[str, Any]:
        columns, rows = store.query(sql)
        return {"columns": columns, "rows": rows}
    return _from_worker_or_store(settings, "/api/query", compute, {"sql": sql})


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake.services.alerts import list_alerts
    result = _from_worker_or_store(settings, "/api/alerts" + ("?open=1" if args.open else ""),
                                   lambda store: {"alerts": list_alerts(store, settings, open_only=args.open)})
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        columns = ["state", "severity", "asset", "kind", "subject", "opened_at", "resolved_at", "reason"]
        # part_of: the stream alert that inhibits this one (same incident, not paged)
        print_table([*columns, "part_of"],
                    [[a.get(c) for c in columns] + [(a.get("details") or {}).get("inhibited_by", "")]
                     for a in result["alerts"]],
                    title="stocktake alerts" + (" (open)" if args.open else ""))
    return 0


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    result = run_sql(settings, args.sql)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result["columns"], result["rows"])
    return 0


def _store_locked(settings: Settings) -> bool:
    """Whether another process holds the chDB store, probed without opening it: after a failed
    open chDB cannot open any store in this process again (a worker starting up holds it)."""
    import fcntl
    dsn = settings.clickhouse_dsn
    lock = Path(dsn.removeprefix("chdb://")) / "status"
    if not dsn.startswith("chdb://") or not lock.exists():
        return False
    with lock.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake.console import status
    from stocktake.streams.runtime import running_worker
    source = status.Source(load=lambda: load_inventory(settings), query=lambda sql: run_sql(settings, sql),
                           live=lambda: running_worker(settings.data_dir) is not None,
                           prefix=settings.topic_prefix + ".", busy=lambda: _store_locked(settings))
    if args.once:
        status.once(source)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        status.watch(source, args.interval)
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake import report
    data = _from_worker_or_store(settings, "/api/report-data", lambda store: report.report_data(store, settings))
    out = args.out.expanduser()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.render(data), encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(out.resolve())
    return 0


def cmd_grafana(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake.grafana.commands import GrafanaCommandError, run
    try:
        return run(args, settings, _open_store)
    except GrafanaCommandError as exc:
        raise CliError(str(exc)) from None


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake.models.commands import run
    return run(args, settings, _open_store)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake.tools import bench
    report = bench.run(events=args.events, envelope=args.envelope, scoring=args.scoring)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        bench.print_report(report)
    return 0


def cmd_eval_gaps(args: argparse.Namespace, settings: Settings) -> int:
    from stocktake.tools import evalgaps
    return evalgaps.main(runs=args.runs, seed=args.seed, as_json=args.json, days=args.days,
                         check_s=args.check_every or settings.gap_interval_s)

if __name__ == "__main__":
    raise SystemExit(main())
