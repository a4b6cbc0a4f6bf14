"""`stocktake train` and `stocktake export-encoder`: parsers and handlers, wired into
stocktake/cli.py with two lines so the ML commands live beside the models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("train", "export-encoder")


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None], parser_class: type) -> None:
    train = sub.add_parser("train", help="train the user/product scorers (torch), evaluate on held-out "
                           "time, export ONNX into the model registry")
    common(train)
    train.add_argument("--source", default="rees46",
                       help="rees46 | olist | store (the valid events in ClickHouse) | PATH (contract CSV/JSONL)")
    train.add_argument("--out", type=Path, default=None,
                       help="model registry directory (default DATA_DIR/models)")
    train.add_argument("--epochs", type=int, default=40, help="most epochs (early stopping picks fewer)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-embeddings", action="store_true",
                       help="leave the text-embedding features at zero (skips the text encoder)")
    train.add_argument("--json", action="store_true", help="print the metrics report as JSON")

    export = sub.add_parser("export-encoder", help="export the all-MiniLM-L6-v2 text encoder to ONNX (offline)")
    common(export)
    export.add_argument("--out", type=Path, default=None,
                        help="directory (default DATA_DIR/models/encoder)")
    export.add_argument("--fp16", action="store_true", help="also write the fp16 variant (for CUDA)")


def run(args: argparse.Namespace, settings: Any, open_store: Callable[[Any], Any] | None = None) -> int:
    try:
        return _run(args, settings, open_store)
    except ImportError as exc:  # torch/transformers/onnx come with the `ml` extra
        raise ValueError(f"{args.command} needs the ml extra (pip install -e '.[ml]'): {exc}") from None


def _run(args: argparse.Namespace, settings: Any, open_store: Callable[[Any], Any] | None) -> int:
    if args.command == "export-encoder":
        from stocktake.models.encoder import export_text_encoder
        from stocktake.models.registry import ModelRegistry

        out = args.out or ModelRegistry(settings.data_dir / "models").encoder_dir()
        path = export_text_encoder(out, fp16=args.fp16)
        print(path)
        return 0
    if args.command == "train":
        from stocktake.models.train import format_report, train

        out = args.out or settings.data_dir / "models"
        store = None
        if args.source == "store":
            if open_store is None:
                from stocktake.clickhouse.store import Store

                store = Store(settings.clickhouse_dsn)
            else:
                store = open_store(settings)
        try:
            report = train(args.source, out, store=store, embeddings=not args.no_embeddings,
                           epochs=args.epochs, seed=args.seed,
                           topic_prefix=settings.topic_prefix if args.source == "store" else None)
        finally:
            if store is not None:
                store.close()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(format_report(report))
        trained = [r for r in report["models"].values() if "version" in r]
        if not trained:
            print("stocktake: no model trained (too little data)", file=sys.stderr)
            return 1
        return 0
    raise ValueError(f"unknown command {args.command!r}")
