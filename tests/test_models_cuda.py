"""CUDA parity: ONNX Runtime on CUDA (Scorer with and without IO binding, the text
encoder fp32 and fp16) and torch eager on CUDA, each against the torch CPU fp32
reference. Skips where ONNX Runtime has no usable CUDA provider.

PARITY_DEVICE=cpu runs the same checks on the CPU provider (a rehearsal of the code
path on a machine without a GPU). PARITY_JSON=path writes the max abs diffs there."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")

from stocktake.models.dataset import history  # noqa: E402
from stocktake.models.encoder import (  # noqa: E402
    MAX_TOKENS,
    TextEncoder,
    export_text_encoder,
    load_tokenizer,
    load_torch_encoder,
    product_text,
)
from stocktake.models.onnx_utils import cuda_available  # noqa: E402
from stocktake.models.registry import MODEL_NAMES, ModelRegistry, Scorer  # noqa: E402
from stocktake.processors.features import FeatureState, replay_into  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEVICE = os.environ.get("PARITY_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not cuda_available(),
                                reason="ONNX Runtime has no usable CUDA provider here")
TORCH_DEV = "cuda" if DEVICE == "cuda" and torch.cuda.is_available() else None
DIFFS: dict[str, Any] = {"device": DEVICE, "torch_device": TORCH_DEV}


@pytest.fixture(scope="module", autouse=True)
def _dump() -> Any:
    yield
    if os.environ.get("PARITY_JSON"):
        Path(os.environ["PARITY_JSON"]).write_text(json.dumps(DIFFS, indent=2, sort_keys=True) + "\n")


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if a.size else 0.0


@pytest.fixture(scope="module")
def items() -> Any:
    return history("rees46")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scorer_parity(tmp_path: Path, items: Any, name: str) -> None:
    reg = ModelRegistry(tmp_path / "models")
    reg.ensure_defaults()
    mv = reg.latest(name)
    assert mv is not None
    module = mv.load_torch()
    state = replay_into(FeatureState(), items)
    now = state.watermark_ms
    real = state.user_matrix(list(state.users), now) if name == "user_propensity" else \
        state.product_matrix(list(state.products), now)
    noise = np.abs(np.random.default_rng(0).normal(scale=50, size=(257, real.shape[1]))).astype(np.float32)
    tiled = np.ascontiguousarray(np.resize(real, (20_000, real.shape[1])), np.float32)  # > max_batch
    xs = {"real[:1]": real[:1], "real[:7]": real[:7], f"real[{len(real)}]": real, "noise[257]": noise,
          "tiled[20000]": tiled}
    bound = Scorer(reg, name, device=DEVICE, io_binding=True)
    plain = Scorer(reg, name, device=DEVICE, io_binding=False)
    assert bound.device == DEVICE and plain.device == DEVICE
    providers = bound._state.session.get_providers()
    DIFFS.setdefault("providers", {})[name] = providers
    if DEVICE == "cuda":
        assert bound.io_binding is True and providers[0] == "CUDAExecutionProvider"
    tmod = module.to(TORCH_DEV) if TORCH_DEV else None
    ref_mod = mv.load_torch()
    rec: dict[str, dict[str, float]] = {}
    for label, x in xs.items():
        with torch.no_grad():
            want = ref_mod(torch.from_numpy(x)).numpy()
        row: dict[str, float] = {}
        for path, scorer in (("ort_iobinding", bound), ("ort_plain", plain)):
            got = scorer.score(x)
            assert got.shape == (len(x),) and got.dtype == np.float32
            assert ((got >= 0) & (got <= 1)).all()
            row[path] = _maxdiff(got, want)
        if tmod is not None:
            with torch.no_grad():
                got_t = tmod(torch.from_numpy(x).to(TORCH_DEV)).cpu().numpy()
            row["torch_cuda"] = _maxdiff(got_t, want)
        rec[label] = row
    DIFFS.setdefault("scorer", {})[name] = rec
    print(name, json.dumps(rec))
    worst = max(v for row in rec.values() for v in row.values())
    assert worst <= 1e-5, rec


@pytest.fixture(scope="module")
def encoder_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("encoder")
    return export_text_encoder(d), export_text_encoder(d, fp16=True)


def test_encoder_parity(encoder_paths: tuple[Path, Path], items: Any) -> None:
    fp32, fp16 = encoder_paths
    texts = sorted({product_text(ev.fields) for s, ev in items if s == "product"} - {""})[:200]
    texts += ["samsung smartphone electronics", "x", "a much longer product title with many words " * 8]
    tok = load_tokenizer()
    batch = tok(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    ref_mod = load_torch_encoder()
    with torch.no_grad():
        want = ref_mod(batch["input_ids"], batch["attention_mask"]).numpy()
    feeds = {"input_ids": batch["input_ids"].numpy().astype(np.int64),
             "attention_mask": batch["attention_mask"].numpy().astype(np.int64)}
    rec: dict[str, Any] = {"texts": len(texts), "seq": int(feeds["input_ids"].shape[1])}
    e32 = TextEncoder(fp32, device=DEVICE)
    e16 = TextEncoder(fp16, device=DEVICE)
    rec["providers_fp32"] = e32.session.get_providers()
    rec["providers_fp16"] = e16.session.get_providers()
    if DEVICE == "cuda":
        assert rec["providers_fp32"][0] == "CUDAExecutionProvider"
        assert rec["providers_fp16"][0] == "CUDAExecutionProvider"
    g32 = e32.session.run(["embedding"], feeds)[0]
    g16 = e16.session.run(["embedding"], feeds)[0]
    rec["ort_fp32_maxabs"] = _maxdiff(g32, want)
    rec["ort_fp16_maxabs"] = _maxdiff(g16, want)
    rec["ort_fp16_min_cosine"] = float(np.min(np.sum(g16 * want, axis=1)))
    enc_api = e32.encode(texts, batch_size=64)  # length-sorted micro-batches (less padding)
    rec["ort_fp32_encode_api_maxabs"] = _maxdiff(enc_api, want)
    if TORCH_DEV:
        m32 = load_torch_encoder().to(TORCH_DEV)
        m16 = load_torch_encoder().half().to(TORCH_DEV)
        ids, mask = batch["input_ids"].to(TORCH_DEV), batch["attention_mask"].to(TORCH_DEV)
        with torch.no_grad():
            t32 = m32(ids, mask).float().cpu().numpy()
            t16 = m16(ids, mask).float().cpu().numpy()
        rec["torch_cuda_fp32_maxabs"] = _maxdiff(t32, want)
        rec["torch_cuda_fp16_maxabs"] = _maxdiff(t16, want)
        rec["torch_cuda_fp16_min_cosine"] = float(np.min(np.sum(t16 * want, axis=1)))
    DIFFS["encoder"] = rec
    print(json.dumps(rec))
    assert np.isfinite(g32).all() and np.isfinite(g16).all()
    assert rec["ort_fp32_maxabs"] <= 1e-4, rec
    assert rec["ort_fp32_encode_api_maxabs"] <= 1e-4, rec
    assert rec["ort_fp16_min_cosine"] >= 0.999, rec
    assert rec["ort_fp16_maxabs"] <= 1e-2, rec
