"""The rollups of migration 008: which views fill them from ingest_log, how to run a view's
SELECT over a chosen slice of ingest_log (backfill, reconciliation), and the backfill itself.

A view's SELECT is taken from the migration text, so the rule that fills a rollup is
written once: the view runs it on every insert, the backfill and `stocktake reconcile`
run the same text over a slice of the stored events.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from stocktake.clickhouse.store import Store, migrations

log = logging.getLogger("stocktake.rollups")

ROLLUP_MIGRATION = 8
CONTRACTS_MIGRATION = 12  # 008 gained kind_key, contract versions and breach_rollup (#13)
_VIEW = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\s+(.*)", re.S)
_FROM_LOG = re.compile(r"\bFROM ingest_log\b")


@dataclass(frozen=True)
class View:
    name: str
    target: str
    select: str

    def over(self, where: str) -> str:
        """The view's SELECT over the ingest_log rows matching ``where`` (SQL)."""
        sliced, n = _FROM_LOG.subn(f"FROM (SELECT * FROM ingest_log WHERE {where})", self.select)
        if n != 1:
            raise ValueError(f"{self.name} does not read ingest_log once")
        return sliced


@cache
def views() -> tuple[View, ...]:
    """Every materialized view of the rollup migration, in creation order."""
    found = []
    for version, _name, statements in migrations():
        if version != ROLLUP_MIGRATION:
            continue
        for statement in statements:
            text = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--"))
            m = _VIEW.search(text)
            if m:
                found.append(View(m.group(1), m.group(2), m.group(3).strip()))
    return tuple(found)


def log_views() -> tuple[View, ...]:
    """The views that read ingest_log (the others read their Null *_facts tables)."""
    return tuple(v for v in views() if _FROM_LOG.search(v.select))


def targets() -> tuple[str, ...]:
    """The tables the views fill and keep: not the *_facts tables other views read (Null
    tables: they hand a block on and keep nothing)."""
    read = {name for v in views() for name in re.findall(r"\bFROM (\w+)", v.select)}
    return tuple(dict.fromkeys(v.target for v in views() if v.target not in read))


def rebuild(store: Store, *, chunk_rows: int = 500_000,
            progress: Callable[[int, int], None] | None = None) -> int:
    """Empty the rollups and fill them again from every event in ingest_log, a chunk at a
    time (per topic and partition, ~``chunk_rows`` rows), calling ``progress(done, total)``
    after each. Only while nothing inserts: the migration that creates the views runs it at
    start, before the worker consumes (a crash in it starts it over at the next start)."""
    for table in targets():
        store.command(f"TRUNCATE TABLE {table}")
    total = int(store.rows("SELECT count() FROM ingest_log")[0][0])
    done = 0
    spans = store.rows("SELECT topic, partition, min(offset), max(offset), count() FROM ingest_log "
                       "GROUP BY topic, partition ORDER BY topic, partition")
    for topic, partition, first, last, rows in spans:
        step = max(1, int(chunk_rows * (int(last) - int(first) + 1) / max(int(rows), 1)))
        for start in range(int(first), int(last) + 1, step):
            where = (f"topic = {{topic:String}} AND partition = {int(partition)} "
                     f"AND offset BETWEEN {start} AND {start + step - 1}")
            for view in log_views():
                store.command(f"INSERT INTO {view.target} {view.over(where)}", {"topic": topic})
            (n,), = store.rows(f"SELECT count() FROM ingest_log WHERE {where}", {"topic": topic})
            done += int(n)
            if progress:
                progress(done, total)
    return done


def log_progress(done: int, total: int) -> None:
    log.warning("upgrading the store: rollups filled from %s of %s stored events (%.0f%%)",
                f"{done:,}", f"{total:,}", 100 * done / total if total else 100)


def upgrade_views(store: Store) -> None:
    """Bring a store made before migration 008 gained its contract columns to 008's current
    text: the columns and tables it adds, every view re-created (they now name sub-assets by
    kind_key), and breach_rollup filled from the retained events. Only while nothing inserts
    (migrations run at start, before the worker consumes); idempotent."""
    for view in views():
        store.command(f"DROP VIEW IF EXISTS {view.name}")
    for version, _name, statements in migrations():
        if version == ROLLUP_MIGRATION:
            for statement in statements:
                store.command(statement)
    breach = next(v for v in views() if v.target == "breach_rollup")
    store.command("TRUNCATE TABLE breach_rollup")
    store.command(f"INSERT INTO breach_rollup {breach.over('1')}")


def prepare(store: Store, *, raw_retention_s: float,
            progress: Callable[[int, int], None] | None = log_progress) -> list[int]:
    """Bring a store up to date at start: pending migrations (the rollups backfilled from the
    events already stored, with progress), then the raw events' retention."""
    def backfill(s: Store) -> None:
        rebuild(s, progress=progress)

    applied = store.migrate({ROLLUP_MIGRATION: backfill, CONTRACTS_MIGRATION: upgrade_views})
    store.set_raw_retention(int(raw_retention_s))
    return applied
