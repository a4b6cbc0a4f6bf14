"""`stocktake grafana build|sync|preview`: dashboards as code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from stocktake.cli.common import PATH, CliError, CommandGroup, data_dir_option, pass_settings

if TYPE_CHECKING:
    from stocktake.settings import Settings

_EXTRA_MODULES = ("grafana_foundation_sdk", "grafana_client", "yaml", "niquests")


def _needs_grafana_extra(command: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in _EXTRA_MODULES:
                raise CliError(f"`stocktake grafana` needs the grafana extra ({exc.name} is missing): "
                               "pip install -e '.[grafana]'") from None
            raise
    return run


@click.group(cls=CommandGroup, help="dashboards as code: build the JSON, preview it, sync it to a Grafana")
def grafana() -> None:
    pass


@grafana.command(help="regenerate grafana/dashboards/*.json and grafana/provisioning/ from code")
@click.option("--out", type=PATH, default=None, help="directory to write to (default: the grafana/ package)")
@click.option("--check", is_flag=True, help="write nothing; exit 1 if the files are not up to date")
@pass_settings
@_needs_grafana_extra
def build(settings: Settings, out: Path | None, check: bool) -> int:
    from stocktake.grafana import build as dashboards
    root = out.expanduser() if out else dashboards.ROOT
    if check:
        stale = dashboards.stale(root)
        for rel in stale:
            print(f"out of date: grafana/{rel}", file=sys.stderr)
        if stale:
            print("run `stocktake grafana build` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    try:
        for path in dashboards.write(root):
            print(path)
    except OSError as exc:
        raise CliError(f"cannot write under {root}: {exc.strerror or exc}") from None
    return 0


@grafana.command(help="create/update folder, data source, dashboards and alert rules on a running Grafana "
                      "(STOCKTAKE_GRAFANA_URL + _TOKEN or _USER/_PASSWORD)")
@click.option("--dry-run", is_flag=True, help="only say what would change")
@pass_settings
@_needs_grafana_extra
def sync(settings: Settings, dry_run: bool) -> int:
    from stocktake.grafana import sync as grafana_sync
    try:
        target = grafana_sync.GrafanaTarget.from_env()
        report = grafana_sync.sync(target, prefix=settings.topic_dot_prefix, dry_run=dry_run)
    except grafana_sync.SyncError as exc:
        raise CliError(str(exc)) from None
    for line in report.lines():
        print(("(dry run) " if dry_run and not line.startswith("unchanged") else "") + line)
    if not report.changed:
        print(f"{target.url}: already up to date")
    return 0


@grafana.command(help="render every dashboard from the store to HTML (and PNG)")
@data_dir_option
@click.option("--out", type=PATH, default=Path("stocktake-preview"),
              help="directory for the pages (default ./stocktake-preview)")
@click.option("--png", is_flag=True, help="also screenshot each page (needs Chromium)")
@pass_settings
@_needs_grafana_extra
def preview(settings: Settings, out: Path, png: bool) -> int:
    from stocktake.cli.worker_or_store import open_store
    from stocktake.grafana import preview as pages
    store = open_store(settings)
    try:
        written = pages.write(store, out.expanduser(), prefix=settings.topic_dot_prefix, png=png)
    except pages.PreviewError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    for page in written:
        print(page.resolve())
        if png and page.name != "index.html":
            print(page.with_suffix(".png").resolve())
    return 0
