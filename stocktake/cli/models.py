"""`stocktake train`, `stocktake export-encoder` and `stocktake eval-fields`: the ML commands (the `ml`
extra)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from stocktake.cli.common import PATH, CliError, data_dir_option, json_option, pass_settings, print_json

if TYPE_CHECKING:
    from stocktake.settings import Settings


def _needs_ml_extra(command: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except ImportError as exc:  # torch/transformers/onnx come with the `ml` extra
            name = click.get_current_context().info_name
            raise CliError(f"{name} needs the ml extra (pip install -e '.[ml]'): {exc}") from None
    return run


@click.command(help="train the user/product scorers (torch), evaluate on held-out time, export ONNX into the "
                    "model registry")
@data_dir_option
@click.option("--source", default="rees46",
              help="rees46 | olist | store (the valid events in ClickHouse) | PATH (contract CSV/JSONL)")
@click.option("--out", type=PATH, default=None,
              help="model registry directory (default STOCKTAKE_MODELS_DIR, else DATA_DIR/models)")
@click.option("--epochs", type=int, default=40, help="most epochs (early stopping picks fewer)")
@click.option("--seed", type=int, default=0)
@click.option("--no-embeddings", is_flag=True,
              help="leave the text-embedding features at zero (skips the text encoder)")
@json_option
@pass_settings
@_needs_ml_extra
def train(settings: Settings, source: str, out: Path | None, epochs: int, seed: int, no_embeddings: bool,
          as_json: bool) -> int:
    from stocktake.models.train import format_report
    from stocktake.models.train import train as train_models

    store = None
    if source == "store":
        from stocktake.cli.worker_or_store import open_store
        store = open_store(settings)
    try:
        report = train_models(source, out or settings.model_registry, store=store,
                              embeddings=not no_embeddings, epochs=epochs, seed=seed,
                              topic_prefix=settings.topic_dot_prefix if source == "store" else None)
    finally:
        if store is not None:
            store.close()
    if as_json:
        print_json(report)
    else:
        print(format_report(report))
    if not any("version" in r for r in report["models"].values()):
        print("stocktake: no model trained (too little data)", file=sys.stderr)
        return 1
    return 0


@click.command("export-encoder", help="export the all-MiniLM-L6-v2 text encoder to ONNX (offline)")
@data_dir_option
@click.option("--out", type=PATH, default=None, help="directory (default DATA_DIR/models/encoder)")
@click.option("--fp16", is_flag=True, help="also write the fp16 variant (for CUDA)")
@pass_settings
@_needs_ml_extra
def export_encoder(settings: Settings, out: Path | None, fp16: bool) -> int:
    from stocktake.models.encoder import export_text_encoder
    from stocktake.models.registry import ModelRegistry

    print(export_text_encoder(out or ModelRegistry(settings.data_dir / "models").encoder_dir(), fp16=fp16))
    return 0


@click.command("eval-fields", help="semantic field types on the hand-labelled fixture: accuracy per type with "
                                   "and without the text model, confidence, throughput")
@data_dir_option
@click.option("--fixture", type=PATH, default=None, help="default: tests/data/field_types.json")
@click.option("--mistakes", "show_mistakes", is_flag=True, help="also list the text model's wrong answers")
@json_option
@pass_settings
@_needs_ml_extra
def eval_fields(settings: Settings, fixture: Path | None, show_mistakes: bool, as_json: bool) -> int:
    from stocktake.models.registry import ModelRegistry
    from stocktake.tools import evalfields

    report = evalfields.run(fixture or evalfields.FIXTURE, ModelRegistry(settings.model_registry).encoder_dir(),
                            settings.device, progress=None if as_json else lambda m: print(m, file=sys.stderr))
    if as_json:
        print_json(report)
        return 0
    print(evalfields.markdown(report))
    if show_mistakes:
        print()
        print(evalfields.mistakes(report))
    return 0
