"""The `stocktake grafana build|sync|preview` handlers (stocktake/cli.py only wires them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class GrafanaCommandError(Exception):
    """Printed by the CLI as one line, exit code 2."""


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None], parser_class: type) -> None:
    grafana = sub.add_parser("grafana", help="dashboards as code: build the JSON, preview it, sync it to a Grafana")
    gsub = grafana.add_subparsers(dest="grafana_command", required=True, parser_class=parser_class)
    build = gsub.add_parser("build", help="regenerate grafana/dashboards/*.json and grafana/provisioning/ from code")
    build.add_argument("--out", type=Path, default=None, help="directory to write to (default: the grafana/ package)")
    build.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are not up to date")
    sync = gsub.add_parser("sync", help="create/update folder, data source, dashboards and alert rules on a "
                                        "running Grafana (STOCKTAKE_GRAFANA_URL + _TOKEN or _USER/_PASSWORD)")
    sync.add_argument("--dry-run", action="store_true", help="only say what would change")
    preview = gsub.add_parser("preview", help="render every dashboard from the store to HTML (and PNG)")
    common(preview)
    preview.add_argument("--out", type=Path, default=Path("stocktake-preview"),
                         help="directory for the pages (default ./stocktake-preview)")
    preview.add_argument("--png", action="store_true", help="also screenshot each page (needs Chromium)")


def run(args: argparse.Namespace, settings: Any, open_store: Callable[[Any], Any]) -> int:
    try:
        if args.grafana_command == "build":
            return _build(args)
        if args.grafana_command == "sync":
            return _sync(args, settings)
        return _preview(args, settings, open_store)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("grafana_foundation_sdk", "grafana_client", "yaml", "niquests"):
            raise GrafanaCommandError(f"`stocktake grafana` needs the grafana extra ({exc.name} is missing): "
                                      "pip install -e '.[grafana]'") from None
        raise


def _build(args: argparse.Namespace) -> int:
    from stocktake.grafana import build
    root = args.out.expanduser() if args.out else build.ROOT
    if args.check:
        stale = build.stale(root)
        for rel in stale:
            print(f"out of date: grafana/{rel}", file=sys.stderr)
        if stale:
            print("run `stocktake grafana build` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    try:
        for path in build.write(root):
            print(path)
    except OSError as exc:
        raise GrafanaCommandError(f"cannot write under {root}: {exc.strerror or exc}") from None
    return 0


def _sync(args: argparse.Namespace, settings: Any) -> int:
    from stocktake.grafana import sync
    try:
        target = sync.GrafanaTarget.from_env()
        report = sync.sync(target, prefix=settings.topic_prefix + ".", dry_run=args.dry_run)
    except sync.SyncError as exc:
        raise GrafanaCommandError(str(exc)) from None
    for line in report.lines():
        print(("(dry run) " if args.dry_run and not line.startswith("unchanged") else "") + line)
    if not report.changed:
        print(f"{target.url}: already up to date")
    return 0


def _preview(args: argparse.Namespace, settings: Any, open_store: Callable[[Any], Any]) -> int:
    from stocktake.grafana import preview
    store = open_store(settings)
    try:
        pages = preview.write(store, args.out.expanduser(), prefix=settings.topic_prefix + ".", png=args.png)
    except preview.PreviewError as exc:
        raise GrafanaCommandError(str(exc)) from None
    finally:
        store.close()
    for page in pages:
        print(page.resolve())
        if args.png and page.name != "index.html":
            print(page.with_suffix(".png").resolve())
    return 0
