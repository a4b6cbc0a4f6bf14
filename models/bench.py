"""Scoring and text-encoder benchmark: rows/s and p50/p99 latency per batch.

    python -m stocktake.models.bench            # full: scorer batches 1..16384, encoder batches 1..1024
    python -m stocktake.models.bench --quick    # fewer batch sizes, shorter timing
    python -m stocktake.models.bench --json-out bench.json

Paths (each skipped with a reason where it cannot run here):
- scorer (the user_propensity MLP): ONNX Runtime CUDA with and without IO binding,
  torch CUDA eager, ONNX Runtime CPU, torch CPU eager;
- text encoder (all-MiniLM-L6-v2, pre-tokenised product texts): ONNX Runtime fp32 and
  fp16 on CUDA, torch eager fp32/fp16 on CUDA, ONNX Runtime fp32 on CPU.

Latency is per call (one batch), host numpy in and out, so the CUDA numbers include
the copies both ways (torch: tensor from numpy, .cuda(), forward, .cpu(), synchronised).
Rows are real feature rows from the REES46 replay, tiled to the batch size.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stocktake.models.dataset import history
from stocktake.models.encoder import TextEncoder, export_text_encoder, load_torch_encoder, product_text
from stocktake.models.onnx_utils import cuda_available
from stocktake.models.registry import ModelRegistry, Scorer
from stocktake.processors.features import FeatureState, replay_into
from stocktake.sources import load_events

SCORER_BATCHES = (1, 4, 16, 64, 256, 1024, 4096, 16384)
SCORER_BATCHES_QUICK = (1, 64, 1024, 16384)
ENCODER_BATCHES = (1, 8, 32, 128, 256, 1024)
ENCODER_BATCHES_QUICK = (1, 32, 256)


def _time(fn: Callable[[], Any], *, budget_s: float, max_iters: int = 2000, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    lat: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(lat) < max_iters and (len(lat) < 3 or time.perf_counter() < deadline):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    return lat


def _row(path: str, batch: int, lat: list[float]) -> dict[str, Any]:
    arr = np.array(lat)
    return {"path": path, "batch": batch, "calls": len(lat),
            "rows_per_s": round(batch * len(lat) / float(arr.sum()), 1),
            "p50_ms": round(float(np.percentile(arr, 50)) * 1000, 4),
            "p99_ms": round(float(np.percentile(arr, 99)) * 1000, 4)}


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def feature_rows() -> np.ndarray:

    items = history("rees46")
    state = replay_into(FeatureState(), items)
    now = items[-1][1].ts_ms
    return state.user_matrix(list(state.users), now)


def bench_scorer(registry_root: Path, batches: tuple[int, ...], budget_s: float,
                 skipped: list[str]) -> list[dict[str, Any]]:

    registry = ModelRegistry(registry_root)
    registry.ensure_defaults()
    base = feature_rows()
    inputs = {b: np.ascontiguousarray(np.resize(base, (b, base.shape[1])), np.float32) for b in batches}
    rows: list[dict[str, Any]] = []
    paths: list[tuple[str, Callable[[np.ndarray], Any]]] = []
    if cuda_available():
        cuda_plain = Scorer(registry, "user_propensity", device="cuda", io_binding=False)
        cuda_bound = Scorer(registry, "user_propensity", device="cuda", io_binding=True)
        paths += [("scorer ort-cuda iobinding", cuda_bound.score), ("scorer ort-cuda", cuda_plain.score)]
    else:
        skipped.append("scorer ort-cuda (with/without IO binding): no usable CUDA provider in ONNX Runtime here")
    torch_cuda = _torch_cuda()
    mv = registry.latest("user_propensity")
    assert mv is not None
    if torch_cuda is not None:
        module = mv.load_torch().cuda()

        def torch_gpu(x: np.ndarray) -> Any:
            with torch_cuda.no_grad():
                out = module(torch_cuda.from_numpy(x).cuda()).cpu()
            torch_cuda.cuda.synchronize()
            return out

        paths.append(("scorer torch-cuda eager", torch_gpu))
    else:
        skipped.append("scorer torch-cuda eager: torch has no CUDA here (CPU wheel or no GPU)")
    cpu = Scorer(registry, "user_propensity", device="cpu")
    paths.append(("scorer ort-cpu", cpu.score))
    try:
        import torch

        cpu_module = mv.load_torch()
        torch.set_num_threads(1)  # a tiny MLP: OpenMP threads only spin against each other on a busy host

        def torch_cpu(x: np.ndarray) -> Any:
            with torch.no_grad():
                return cpu_module(torch.from_numpy(x))

        paths.append(("scorer torch-cpu eager (1 thread)", torch_cpu))
    except ImportError:
        skipped.append("scorer torch-cpu eager: torch not installed")
    for name, fn in paths:
        for b in batches:
            x = inputs[b]
            rows.append(_row(name, b, _time(functools.partial(fn, x), budget_s=budget_s)))
    return rows


def bench_encoder(encoder_dir: Path, batches: tuple[int, ...], budget_s: float,
                  skipped: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:

    texts = sorted({product_text(e.event) for e in load_events("rees46") if e.stream == "product"} - {""})
    np.random.default_rng(0).shuffle(texts)  # batches of mixed lengths, as a catalog stream has
    fp32 = export_text_encoder(encoder_dir)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"texts": len(texts)}
    cpu = TextEncoder(fp32, device="cpu")
    tok_lat = _time(functools.partial(cpu.tokenize, texts[:256]), budget_s=budget_s, warmup=1)
    info["tokenizer_texts_per_s"] = round(256 * len(tok_lat) / sum(tok_lat), 1)
    feeds = {b: cpu.tokenize([texts[i % len(texts)] for i in range(b)]) for b in batches}
    info["seq_len"] = {str(b): int(f["input_ids"].shape[1]) for b, f in feeds.items()}
    sessions: list[tuple[str, Callable[[dict[str, np.ndarray]], Any]]] = []
    if cuda_available():
        fp16 = export_text_encoder(encoder_dir, fp16=True)
        g32 = TextEncoder(fp32, device="cuda")
        g16 = TextEncoder(fp16, device="cuda")
        sessions += [("encoder ort-cuda fp32", functools.partial(_ort_run, g32.session)),
                     ("encoder ort-cuda fp16", functools.partial(_ort_run, g16.session))]
    else:
        skipped.append("encoder ort-cuda fp32/fp16: no usable CUDA provider in ONNX Runtime here")
    torch_cuda = _torch_cuda()
    if torch_cuda is not None:
        m32 = load_torch_encoder().cuda()
        m16 = load_torch_encoder().half().cuda()
        for label, m in (("fp32", m32), ("fp16", m16)):
            def run(f: dict[str, np.ndarray], m: Any = m) -> Any:
                with torch_cuda.no_grad():
                    out = m(torch_cuda.from_numpy(f["input_ids"]).cuda(),
                            torch_cuda.from_numpy(f["attention_mask"]).cuda()).float().cpu()
                torch_cuda.cuda.synchronize()
                return out
            sessions.append((f"encoder torch-cuda eager {label}", run))
    else:
        skipped.append("encoder torch-cuda eager fp32/fp16: torch has no CUDA here (CPU wheel or no GPU)")
    sessions.append(("encoder ort-cpu fp32", functools.partial(_ort_run, cpu.session)))
    skipped.append("encoder ort-cpu fp16: not measured (the fp16 model targets CUDA; the CPU provider "
                   "runs it through fp32 casts)")
    for name, fn in sessions:
        for b in batches:
            f = feeds[b]
            rows.append(_row(name, b, _time(functools.partial(fn, f), budget_s=budget_s, max_iters=500,
                                            warmup=1)))
    return rows, info


def _ort_run(session: Any, feeds: dict[str, np.ndarray]) -> Any:
    return session.run(["embedding"], feeds)


def environment() -> dict[str, Any]:
    import onnxruntime as ort


    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                           "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
                           "ort_cuda_usable": cuda_available()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        env["torch"] = None
    return env


def print_table(rows: list[dict[str, Any]], out: Any = sys.stdout) -> None:
    print(f"{'path':<34} {'batch':>6} {'rows/s':>14} {'p50 ms':>10} {'p99 ms':>10} {'calls':>6}", file=out)
    for r in rows:
        print(f"{r['path']:<34} {r['batch']:>6} {r['rows_per_s']:>14,.0f} {r['p50_ms']:>10.3f} "
              f"{r['p99_ms']:>10.3f} {r['calls']:>6}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stocktake.models.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes, shorter timing")
    parser.add_argument("--registry", type=Path, default=None,
                        help="model registry (default: a temporary one with the shipped models)")
    parser.add_argument("--encoder-dir", type=Path, default=None,
                        help="where the exported encoder lives (default STOCKTAKE_DATA_DIR/models/encoder)")
    parser.add_argument("--no-encoder", action="store_true", help="scorer only")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    budget = 0.2 if args.quick else 1.0
    skipped: list[str] = []
    report: dict[str, Any] = {"environment": environment(), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        registry = args.registry or Path(tmp) / "models"
        report["scorer"] = bench_scorer(registry, SCORER_BATCHES_QUICK if args.quick else SCORER_BATCHES,
                                        budget, skipped)
    print_table(report["scorer"])
    if not args.no_encoder:
        data_dir = Path(os.environ.get("STOCKTAKE_DATA_DIR") or ".stocktake")
        enc_dir = args.encoder_dir or data_dir / "models" / "encoder"
        rows, info = bench_encoder(enc_dir, ENCODER_BATCHES_QUICK if args.quick else ENCODER_BATCHES,
                                   budget, skipped)
        report["encoder"] = rows
        report["encoder_info"] = info
        print()
        print_table(rows)
        print(f"(tokenizer alone: {info['tokenizer_texts_per_s']:,.0f} texts/s on CPU; "
              f"padded lengths per batch: {info['seq_len']})")
    report["skipped"] = skipped
    for s in skipped:
        print(f"skipped: {s}")
    text = json.dumps(report, indent=None, sort_keys=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
