"""Live progress of `stocktake up`: a table refreshing in place (a line every
5 s when stderr is not a terminal)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from stocktake.processors.contract_spec import shipped


def _table(sink: Any, replay_state: dict[str, Any], elapsed: float, rate: float) -> Table:
    stats = sink.stats
    table = Table(title=f"stocktake · {elapsed:,.0f}s · {rate:,.0f} events/s", title_justify="left")
    for column in ("stream", "valid", "duplicates", "invalid"):
        table.add_column(column, justify="right" if column != "stream" else "left")
    # The shipped streams first (the demo's), then every other stream seen, as they come.
    for stream in dict.fromkeys([*shipped(), *stats.per_stream]):
        counts = stats.per_stream.get(stream, {})
        table.add_row(stream, f"{counts.get('valid', 0):,}", f"{counts.get('duplicate', 0):,}",
                      f"{counts.get('invalid', 0):,}")
    replay = "done" if replay_state.get("done") else "running"
    table.caption = (f"replay {replay}: {replay_state.get('produced', 0):,} messages produced · "
                     f"{stats.inserts:,} inserts · Ctrl-C stops")
    return table


async def live(console: Console, sink: Any, replay_state: dict[str, Any], stop: asyncio.Event,
               duration: float | None, started: float) -> None:
    last_rows, last_t = 0, time.monotonic()
    rate = 0.0
    tty = console.is_terminal
    ctx: Any = Live(console=console, refresh_per_second=4, transient=False) if tty \
        else contextlib.nullcontext()
    last_line = 0.0
    with ctx as view:
        while not stop.is_set():
            now = time.monotonic()
            elapsed = now - started
            if duration is not None and elapsed >= duration:
                break
            if replay_state.get("error") or sink.failure is not None:
                break
            rows = sink.stats.rows_inserted
            if now - last_t >= 1.0:
                rate = (rows - last_rows) / (now - last_t)
                last_rows, last_t = rows, now
            if tty:
                view.update(_table(sink, replay_state, elapsed, rate))
            elif now - last_line >= 5.0:
                last_line = now
                s = sink.stats
                console.print(f"{elapsed:6.0f}s valid={s.valid} duplicates={s.duplicate} "
                              f"invalid={s.invalid} rate={rate:,.0f}/s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


def summary(sink: Any, elapsed: float) -> str:
    s = sink.stats
    return (f"stopped after {elapsed:,.1f}s: {s.valid:,} valid, {s.duplicate:,} duplicates, "
            f"{s.invalid:,} invalid stored in {s.inserts:,} inserts")
