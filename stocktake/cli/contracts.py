"""`stocktake contract check|infer|show`: data contracts as files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from stocktake.cli.common import (
    PATH,
    CliError,
    CommandGroup,
    Invocation,
    data_dir_option,
    pass_invocation,
    pass_settings,
)

if TYPE_CHECKING:
    from stocktake.settings import Settings


@click.group(cls=CommandGroup, help="data contracts: check a file, infer one from a stream, show those in force")
def contract() -> None:
    pass


@contract.command(help="validate contract files: one line per mistake on stderr (exit 2), or what each holds")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(files: tuple[Path, ...]) -> int:
    from stocktake.processors.contract_spec import ContractError, read_contract
    errors: list[str] = []
    for path in files:
        try:
            c = read_contract(path)
        except ContractError as exc:
            errors += exc.errors
            continue
        print(f"{path}: ok: stream {c.stream}, version {c.version}, {len(c.fields)} fields "
              f"({len(c.required)} required), {len(c.rules)} rules")
    for line in errors:  # as a linter reports: file: where: what, one line each
        click.echo(line, err=True)
    return 2 if errors else 0


@contract.command(help="write a starting contract for STREAM from what the store has seen of it")
@click.argument("stream")
@data_dir_option
@click.option("--version", "version", default="1", show_default=True, help="the version to give it")
@click.option("--output", "-o", type=PATH, default=None, help="write it to this file (default: stdout)")
@pass_invocation
def infer(invocation: Invocation, stream: str, version: str, output: Path | None) -> int:
    from stocktake.processors.contract_spec import to_toml
    from stocktake.services.contracts import infer as infer_contract
    c = _with_query(invocation, lambda query, settings: infer_contract(query, settings, stream, version))
    text = f"# Inferred by `stocktake contract infer {stream}`: review before use.\n" + to_toml(c)
    if output is None:
        print(text, end="")
    else:
        output.write_text(text, encoding="utf-8")
        print(f"{output}: {len(c.fields)} fields ({len(c.required)} required) of stream {stream}")
    return 0


@contract.command(help="the contracts in force (shipped and STOCKTAKE_CONTRACTS), as TOML")
@click.argument("streams", nargs=-1)
@data_dir_option
@pass_settings
def show(settings: Settings, streams: tuple[str, ...]) -> int:
    from stocktake.processors.contract_spec import load, to_toml
    contracts = load(settings.contracts_dir)
    unknown = [s for s in streams if s not in contracts]
    if unknown:
        raise CliError(f"no contract for {', '.join(unknown)} (streams without one are judged schemaless); "
                       f"contracts: {', '.join(sorted(contracts))}")
    for i, name in enumerate(streams or sorted(contracts)):
        c = contracts[name]
        print(("\n" if i else "") + f"# {c.origin}\n" + to_toml(c), end="")
    return 0


def _with_query(invocation: Invocation, compute: Any) -> Any:
    """compute(query, settings), with query running read-only SQL on the running worker (its
    /api/query) or, when none runs, on the store opened here."""
    from stocktake.cli import worker_or_store
    from stocktake.streams.discovery import running_worker
    settings = invocation.settings
    if running_worker(invocation.data_dir) is not None:
        def ask(sql: str) -> tuple[Sequence[str], Sequence[Sequence[Any]]]:
            answer = worker_or_store.ask_worker(invocation.data_dir, "/api/query", {"sql": sql})
            if answer is None:
                raise CliError("the worker stopped while it was asked")
            return answer["columns"], answer["rows"]
        return compute(ask, settings)
    store = worker_or_store.open_store(settings)
    try:
        def run(sql: str) -> tuple[Sequence[str], Sequence[Sequence[Any]]]:
            return store.read_only_query(sql, timeout_s=settings.query_timeout_s, max_rows=settings.query_max_rows,
                                         max_bytes=settings.query_max_bytes)
        return compute(run, settings)
    finally:
        store.close()
