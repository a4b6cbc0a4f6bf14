"""The worker in the foreground (`stocktake up` / `worker`): live progress on stderr, the
optional replay in a thread, a clean stop on Ctrl-C, SIGTERM or --duration."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from stocktake.cli.common import CliError
from stocktake.settings import mask_url

if TYPE_CHECKING:
    from stocktake.settings import Settings
    from stocktake.streams.runtime import Runtime


class WorkerFailed(CliError):
    """The sink stopped for good: exit 1 so compose/systemd/Kubernetes restart the worker."""

    exit_code = 1


def serve(settings: Settings, kafka_port: int | None, duration: float | None,
           events: list[Any] | None, replay_opts: dict[str, Any]) -> int:
    from stocktake.streams.discovery import running_worker
    from stocktake.streams.runtime import Runtime

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


async def _serve_async(runtime: Runtime, duration: float | None, events: list[Any] | None,
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
        f"[cyan]{mask_url(settings.clickhouse_dsn)}[/] · API [cyan]{runtime.http_url}[/]"
    )
    replay_state: dict[str, Any] = {"produced": 0, "done": events is None or not events, "error": None}
    if events:
        from stocktake.tools import replay
        await wait_until_assigned([sink], settings.partitions)
        opts = {**replay_opts, "topics": replay.stream_topics(settings)}  # the topics this worker reads
        threading.Thread(target=_replay_thread, args=(runtime.bootstrap, events, opts,
                         replay_state), daemon=True).start()
    started = time.monotonic()
    watchdog = asyncio.create_task(_keep_broker(runtime, stop))
    try:
        await progress.live(console, sink, replay_state, stop, duration, started)
    finally:
        watchdog.cancel()
        await runtime.stop_all()
    if runtime.broker_failure:
        raise WorkerFailed(f"the embedded Kafka died and could not be restarted: {runtime.broker_failure}")
    if sink.failure is not None:
        raise WorkerFailed(f"the worker stopped: {sink.failure} (exit 1 so that a supervisor restarts it; "
                           "the next start resumes from what is stored, nothing is lost)")
    if replay_state["error"]:
        raise CliError(f"replay failed: {replay_state['error']}")
    console.print(progress.summary(sink, time.monotonic() - started))
    return 0


async def _keep_broker(runtime: Runtime, stop: asyncio.Event) -> None:
    """Heal where we can: an embedded broker that died is started again (Runtime.heal_broker)."""
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if runtime.broker is not None and not runtime.broker.alive():
            try:
                runtime.heal_broker()
            except Exception as exc:  # it would not start: stop, exit non-zero, one line
                runtime.broker_failure = str(exc)
                stop.set()


def _replay_thread(bootstrap: str, events: list[Any], opts: dict[str, Any], state: dict[str, Any]) -> None:
    from stocktake.tools import replay
    try:
        counts = replay.play(bootstrap, events, topics=opts["topics"], speed=opts["speed"],
                             live=bool(opts.get("live")), envelope=opts["envelope"], faults=opts["faults"],
                             progress=lambda n: state.__setitem__("produced", n))
        state["counts"] = counts
        state["produced"] = counts["messages"]
    except Exception as exc:  # reported by the main thread as one line
        state["error"] = str(exc)
    finally:
        state["done"] = True
