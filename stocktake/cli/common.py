"""What every `stocktake` command shares: flag types, the --data-dir/--json flags, settings
built from flags and environment, and the one-line error.

Imports stay light here: `stocktake --help` and `stocktake query` must start fast, so heavy
libraries (Faust, chDB, pyarrow, rich, torch) are imported inside the commands that use them.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from stocktake.settings import Settings


class CliError(click.ClickException):
    """A user-facing failure: printed as one line, exit code 2."""

    exit_code = 2


class CommandGroup(click.Group):
    """Listed in the order they are added; an unknown or missing command is a one-line usage error."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["no_args_is_help"] = False
        super().__init__(*args, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        if args and self.get_command(ctx, args[0]) is None and not args[0].startswith("-"):
            raise click.UsageError(f"invalid choice: {args[0]!r} (choose from {', '.join(self.commands)})", ctx)
        return super().resolve_command(ctx, args)


class Positive(click.ParamType):
    """An int or float > 0."""

    def __init__(self, kind: type[int] | type[float]):
        self.kind = kind
        self.name = kind.__name__

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"expected a {self.name}, got {value!r}", param, ctx)
        if number <= 0:
            self.fail(f"must be > 0, got {value!r}", param, ctx)
        return number


class Port(click.ParamType):
    name = "port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            port = int(value)
        except (TypeError, ValueError):
            self.fail(f"expected a port number, got {value!r}", param, ctx)
        if not 1 <= port <= 65535:
            self.fail(f"port out of range: {port}", param, ctx)
        return port


class Speed(click.ParamType):
    """N× event time, or `max` (None: as fast as the broker takes it)."""

    name = "speed"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or value == "max":
            return None
        try:
            speed = float(value)
        except (TypeError, ValueError):
            self.fail(f"--speed must be a number or 'max', got {value!r}", param, ctx)
        if speed <= 0:
            self.fail("--speed must be > 0", param, ctx)
        return speed


POSITIVE_INT = Positive(int)
POSITIVE_FLOAT = Positive(float)
PATH = click.Path(path_type=Path)

data_dir_option = click.option("--data-dir", type=PATH, default=None,
                               help="state directory; chDB lives in DATA_DIR/chdb (default ./.stocktake)")
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


class Invocation:
    """What a command knows before any heavy import: the data dir, which is all it takes to
    find a running worker, and the validated Settings, built on first use. A command the
    worker answers then never imports pydantic (about half of `stocktake query`'s start)."""

    def __init__(self, data_dir: Path | None, **flags: Any):
        self._data_dir, self._flags = data_dir, flags

    @property
    def data_dir(self) -> Path:
        from stocktake import paths
        return self.settings.data_dir if "settings" in self.__dict__ else paths.data_dir(self._data_dir)

    @functools.cached_property
    def settings(self) -> Settings:
        from stocktake.settings import Settings
        settings = Settings.from_env(data_dir=self._data_dir, **self._flags)
        configure_logging(settings.log_level)
        return settings


def _invocation(data_dir: Path | None, **flags: Any) -> Invocation:
    """Flags override the environment: --data-dir, the command's own, and the root's --log-level."""
    log_level = click.get_current_context().find_root().params.get("log_level")
    return Invocation(data_dir, log_level=log_level, **flags)


def pass_invocation(command: Callable[..., int]) -> Callable[..., int]:
    """Hand the command an Invocation: Settings are built only if it asks for them."""
    @functools.wraps(command)
    def run(*args: Any, data_dir: Path | None = None, **kwargs: Any) -> int:
        return command(_invocation(data_dir), *args, **kwargs)
    return run


def pass_settings(command: Callable[..., int]) -> Callable[..., int]:
    """Hand the command its Settings: environment < --data-dir/--partitions/--log-level."""
    @functools.wraps(command)
    def run(*args: Any, data_dir: Path | None = None, partitions: int | None = None, **kwargs: Any) -> int:
        return command(_invocation(data_dir, partitions=partitions).settings, *args, **kwargs)
    return run


class RepeatsQuieted(logging.Filter):
    """One line per kind of message per ``every_s``: a Kafka client that lost its broker logs
    the same connection error every 100 ms (2,600 lines in 35 s, seen). The next line of a
    kind says how many were left out."""

    def __init__(self, every_s: float = 60.0):
        super().__init__()
        self.every_s = every_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        import time
        if record.levelno >= logging.CRITICAL or not record.name.startswith(("aiokafka", "faust", "mode")):
            return True
        kind = (record.name, re.sub(r"\d+", "N", str(record.msg)))
        now = time.monotonic()
        last, quieted = self._seen.get(kind, (-self.every_s, 0))
        if now - last < self.every_s:
            self._seen[kind] = (last, quieted + 1)
            return False
        if quieted:
            record.msg = f"{record.msg} ({quieted} more like it in the last {now - last:.0f}s)"
        self._seen[kind] = (now, 0)
        return True


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatsQuieted) for f in handler.filters):
            handler.addFilter(RepeatsQuieted())
    if level.upper() != "DEBUG":
        # Faust/mode/aiokafka are chatty at INFO and warn about things we handle.
        for name in ("faust", "mode", "aiokafka", "stocktake.streams.app"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for name in ("clickhouse_connect", "urllib3", "urllib3.connectionpool", "stocktake.kafka"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def print_json(document: Any) -> None:
    import json
    print(json.dumps(document, indent=2))


class EventTime(click.ParamType):
    """ISO-8601 (a date or a time; naive means UTC), `now`, or a span back from now: `-90m`,
    `2h`, `7d ago` (s, m/min, h, d, w)."""

    name = "time"
    _relative = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)(?:\s+ago)?$")
    _unit_s = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        now = dt.datetime.now(dt.UTC)
        relative = self._relative.match(text)
        if text == "now" or relative:
            span = float(relative.group(1)) * self._unit_s[relative.group(2)] if relative else 0.0
            return now - dt.timedelta(seconds=span)
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"expected ISO-8601 (2019-10-01T12:00Z) or a span back from now (-2h, 7d ago), got {value!r}",
                      param, ctx)
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
