"""Terminal tables of query results."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from stocktake.clickhouse.values import jsonable


def print_table(columns: list[str], rows: list[Any], title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        values = row.values() if isinstance(row, dict) else row
        table.add_row(*("" if v is None else str(jsonable(v)) for v in values))
    Console().print(table)
