"""`stocktake` command line. Errors are one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from typing import Any

import click

from stocktake.cli import backtest, contracts, grafana, inspect, models, serve, tools
from stocktake.cli.common import CliError, CommandGroup


@click.group(cls=CommandGroup, context_settings={"max_content_width": 120},
             help="Live data-asset inventory for e-commerce streams.")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (default), ERROR")
def cli(log_level: str | None) -> None:
    """The settings are built per command (pass_settings): its flags override the environment."""


for command in (serve.up, serve.worker, serve.replay, inspect.inventory, inspect.alerts, inspect.query,
                inspect.status, inspect.report, inspect.reconcile, contracts.contract, grafana.grafana, models.train,
                models.export_encoder, models.eval_fields, tools.eval_gaps, backtest.backtest, tools.bench):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    try:
        result: Any = cli.main(args=argv, prog_name="stocktake", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "stocktake"
        print(f"{where}: error: {exc.format_message()} (see --help)", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        print(f"stocktake: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except click.Abort:  # Ctrl-C
        return 130
    except Exception as exc:
        if isinstance(exc, _one_line_errors()):
            print(f"stocktake: error: {exc}", file=sys.stderr)
            return 2
        raise
    return int(result or 0)


def _one_line_errors() -> tuple[type[Exception], ...]:
    """Failures whose message says it all (bad settings, unreachable services, missing files)."""
    from stocktake.broker import BrokerError
    from stocktake.clickhouse.store import StoreError
    return StoreError, BrokerError, ValueError, FileNotFoundError


__all__ = ["CliError", "cli", "main"]
