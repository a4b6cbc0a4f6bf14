"""Train the two scorers with torch, evaluate on held-out time, export to ONNX.

    metrics = train("rees46", Path(".stocktake/models"))   # or "olist", or "store" (+ store=Store(...))

Models (both torch MLPs, F -> 64 -> 32 -> 1, preprocessing and sigmoid inside):
- ``user_propensity``: will this user purchase within the next 30 minutes of event time?
  One example per behaviour/transaction event of the user, features as of that event.
- ``product_demand``: will this product be purchased within the next hour? One example
  per behaviour/transaction event naming the product.

Features come from `processors.features.FeatureState` fed the history in event-time
order (exactly what the worker keeps in-stream); product text embeddings come from
the ONNX text encoder when it is available. A purchase is a behaviour ``purchase`` or
a ``created``/``paid`` transaction; the two records of one act (REES46 sends both)
count once, keyed by (user, product, ts).

Split: by time. Examples before the split time S (70 % of the examples by default)
train, the rest validate. Training labels only look up to S (purged: nothing after
S informs training); validation labels look up to the end of the data. Labels near
an edge are right-censored; the baseline and the model are scored on the same
labels, so the comparison is fair.

Baselines: users, "has a cart in this session" (1/0); products, "was carted or bought
in the last hour" (1/0). Both reported with ROC-AUC and PR-AUC next to the model's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stocktake.models.dataset import (
    HORIZON_S,
    PRODUCT_MODEL,
    USER_MODEL,
    Dataset,
    build_datasets,
    history,
)
from stocktake.models.encoder import TextEncoder, export_text_encoder
from stocktake.models.metrics import brier, calibration_error, pr_auc, reliability, roc_auc
from stocktake.models.network import HIDDEN, build_module
from stocktake.models.versions import VersionStore
from stocktake.processors.contract import Event
from stocktake.processors.features import LOG_SCALED, PRODUCT_FEATURES, USER_FEATURES

__all__ = ["HORIZON_S", "PRODUCT_MODEL", "USER_MODEL", "Dataset", "build_datasets", "evaluate",
           "fit", "history", "train"]

log = logging.getLogger("stocktake.models.train")

FEATURES = {USER_MODEL: USER_FEATURES, PRODUCT_MODEL: PRODUCT_FEATURES}
MIN_POSITIVES = 5  # per split; below this a model is not trained (and says why)


# ------------------------------------------------------------------ fitting


def emb_columns(features: Sequence[str]) -> list[int]:
    """The features made from text embeddings (named ``*_emb_*``)."""
    return [i for i, f in enumerate(features) if "_emb_" in f]


def _preprocess_stats(X: np.ndarray, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = np.array([f in LOG_SCALED for f in features])
    Z = np.where(mask, np.log1p(np.clip(X, 0, None)), X).astype(np.float64)
    mean = Z.mean(axis=0) if len(Z) else np.zeros(X.shape[1])
    std = Z.std(axis=0) if len(Z) else np.ones(X.shape[1])
    std = np.where(std < 1e-6, 1.0, std)
    return mask, mean.astype(np.float32), std.astype(np.float32)


def fit(X: np.ndarray, y: np.ndarray, features: Sequence[str], *, epochs: int = 30, seed: int = 0,
        lr: float = 1e-3, batch: int = 512, weight_decay: float = 1e-2,
        early: tuple[np.ndarray, np.ndarray] | None = None, patience: int = 4,
        dropout_cols: Sequence[int] = (), dropout_p: float = 0.25) -> Any:
    """Train the MLP (class-balanced BCE, Adam), deterministic for a seed. With
    ``early`` = (X, y) of a later time slice, stop when its PR-AUC has not improved for
    ``patience`` epochs and keep the best epoch's weights (``module.best_epochs``).
    ``dropout_cols`` are zeroed in a random ``dropout_p`` of the training rows each
    epoch (the embedding features: the model must also work before a product's
    embedding arrives, or with the encoder off)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mask, mean, std = _preprocess_stats(X, features)
    module = build_module(X.shape[1], mask, mean, std)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    pos = float(y.sum())
    neg = float(len(y) - pos)
    pos_weight = torch.tensor(min(50.0, neg / max(pos, 1.0)))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    X0 = np.ascontiguousarray(X, np.float32)
    Xt = torch.from_numpy(X0)
    yt = torch.from_numpy(np.ascontiguousarray(y, np.float32))
    cols = list(dropout_cols)
    best: tuple[float, int, dict[str, Any]] | None = None
    for epoch in range(1, epochs + 1):
        module.train()
        if cols:
            Xe = X0.copy()
            rows = rng.random(len(y)) < dropout_p
            Xe[np.ix_(np.flatnonzero(rows), np.asarray(cols, np.intp))] = 0.0
            Xt = torch.from_numpy(Xe)
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            loss = loss_fn(module.logits(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        if early is not None:
            module.eval()
            ap = pr_auc(early[1], predict(module, early[0]))
            if best is None or ap > best[0]:
                best = (ap, epoch, {k: v.clone() for k, v in module.state_dict().items()})
            elif epoch - best[1] >= patience:
                break
    if best is not None:
        module.load_state_dict(best[2])
    # The class-balanced loss learns the odds times pos_weight: its logit less log(pos_weight)
    # is the probability's (the prior correction), so a published score reads as a probability.
    module.calibration = torch.tensor([1.0, -math.log(float(pos_weight))])
    module.best_epochs = best[1] if best is not None else epochs
    module.eval()
    return module


def predict(module: Any, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(X, np.float32))).numpy()


# ------------------------------------------------------------------ evaluation


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _scores(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    return {"roc_auc": round(roc_auc(y, s), 4), "pr_auc": round(pr_auc(y, s), 4)}


def _calibration(y: np.ndarray, p: np.ndarray, train_rate: float) -> dict[str, Any]:
    """How far the scores can be read as probabilities, on the validation rows: the model's
    Brier score, that of always predicting the training rows' positive rate (the reference a
    model must beat to add anything as a probability), the reliability bins and their
    expected calibration error."""
    points = reliability(y, p)
    return {"brier": round(brier(y, p), 5), "brier_base_rate": round(brier(y, np.full(len(y), train_rate)), 5),
            "ece": round(calibration_error(points), 4), "bins": points}


def split_time(ds: Dataset, fraction: float) -> int:
    """The event time before which ``fraction`` of the examples lie."""
    if len(ds.ts) == 0:
        return 0
    return int(np.sort(ds.ts)[min(len(ds.ts) - 1, int(len(ds.ts) * fraction))])


def evaluate(ds: Dataset, *, split: float = 0.7, purge: bool = True, epochs: int = 40,
             seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Train on the examples before the split time, score the rest. Returns (module or
    None, report)."""
    S = split_time(ds, split)
    end = int(ds.ts.max()) if len(ds.ts) else 0
    tr = ds.ts < S
    va = ~tr
    y_tr = ds.labels(S if purge else end)[tr]
    y_va = ds.labels(end)[va]
    report: dict[str, Any] = {
        "model": ds.name, "horizon_s": HORIZON_S[ds.name], "examples": len(ds.ts),
        "train": {"rows": int(tr.sum()), "positives": int(y_tr.sum()),
                  "from": _iso(int(ds.ts[tr].min())) if tr.any() else None, "to": _iso(S)},
        "validation": {"rows": int(va.sum()), "positives": int(y_va.sum()),
                       "from": _iso(S), "to": _iso(end)},
        "baseline": BASELINE_TEXT[ds.name],
    }
    if y_tr.sum() < MIN_POSITIVES or y_va.sum() < MIN_POSITIVES or (len(y_va) - y_va.sum()) < MIN_POSITIVES:
        report["skipped"] = (f"too few positives to train and evaluate (train {int(y_tr.sum())}, "
                             f"validation {int(y_va.sum())}; need {MIN_POSITIVES} each)")
        return None, report
    emb = emb_columns(ds.features)
    # Epochs are chosen on the last 20 % (by time) of the training rows, never on validation.
    S_in = split_time(Dataset(ds.name, ds.features, ds.X[tr], ds.ts[tr], ds.seq[tr], [], ds.baseline[tr],
                              ds.future[tr]), 0.8)
    inner = ds.ts[tr] < S_in
    y_in = ds.labels(S_in if purge else end)[tr]
    if y_in[inner].sum() >= MIN_POSITIVES and y_tr[~inner].sum() >= MIN_POSITIVES:
        probe = fit(ds.X[tr][inner], y_in[inner], ds.features, epochs=epochs, seed=seed,
                    early=(ds.X[tr][~inner], y_tr[~inner]), dropout_cols=emb)
        best_epochs = int(probe.best_epochs)
    else:
        best_epochs = epochs
    module = fit(ds.X[tr], y_tr, ds.features, epochs=best_epochs, seed=seed, dropout_cols=emb)
    module.best_epochs = best_epochs
    report["epochs"] = best_epochs
    s_va = predict(module, ds.X[va])
    if emb and ds.X[va][:, emb].any():
        blind = ds.X[va].copy()
        blind[:, emb] = 0.0
        report["model_metrics_no_embeddings"] = _scores(y_va, predict(module, blind))
    report["model_metrics"] = _scores(y_va, s_va)
    report["baseline_metrics"] = _scores(y_va, ds.baseline[va])
    report["calibration"] = _calibration(y_va, s_va, float(y_tr.mean()))
    report["beats_baseline"] = bool(
        report["model_metrics"]["roc_auc"] > report["baseline_metrics"]["roc_auc"]
        and report["model_metrics"]["pr_auc"] > report["baseline_metrics"]["pr_auc"])
    return module, report


BASELINE_TEXT = {
    USER_MODEL: "has a cart in this session (u_session_carts > 0)",
    PRODUCT_MODEL: "carted or bought in the last hour (decayed 1h carts+purchases+orders > 0.05)",
}


# ------------------------------------------------------------------ entry point


def train(source: str = "rees46", out_dir: Path | str = Path(".stocktake/models"), *,
          data_dir: Path | None = None, store: Any = None, topic_prefix: str | None = None,
          embeddings: bool | Path = True, encoder_dir: Path | None = None, epochs: int = 40, seed: int = 0,
          split: float = 0.7, refit_full: bool = True, version: str | None = None,
          items: list[tuple[str, Event]] | None = None) -> dict[str, Any]:
    """Build datasets from ``source``, evaluate both models on held-out time against
    the baselines, then (``refit_full``) refit on all the history and register both as
    a new version in the registry at ``out_dir``. Returns the metrics report.

    ``embeddings``: True uses the ONNX text encoder (exported under
    ``encoder_dir``, default ``out_dir/encoder``, on first use), False leaves the
    embedding features at zero."""

    threads = torch.get_num_threads()
    # Tiny MLPs: one thread is ~40x faster per step than two on a shared 2-core machine.
    torch.set_num_threads(1)
    try:
        return _train(source, out_dir, data_dir=data_dir, store=store, topic_prefix=topic_prefix,
                      embeddings=embeddings, encoder_dir=encoder_dir, epochs=epochs, seed=seed, split=split,
                      refit_full=refit_full, version=version, items=items)
    finally:
        torch.set_num_threads(threads)


def _train(source: str, out_dir: Path | str, *, data_dir: Path | None, store: Any, topic_prefix: str | None,
           embeddings: bool | Path, encoder_dir: Path | None, epochs: int, seed: int, split: float,
           refit_full: bool, version: str | None, items: list[tuple[str, Event]] | None) -> dict[str, Any]:
    started = time.monotonic()
    out = Path(out_dir)
    registry = VersionStore(out)
    if items is None:
        items = history(source, data_dir=data_dir, store=store, topic_prefix=topic_prefix)
    if not items:
        raise ValueError(f"no events in {source!r}")
    embed = None
    if embeddings:
        enc_path = embeddings if isinstance(embeddings, Path) else export_text_encoder(
            encoder_dir or registry.encoder_dir())
        encoder = TextEncoder(enc_path, device="auto")
        embed = encoder.encode
    users, products = build_datasets(items, embed)
    report: dict[str, Any] = {"source": source, "events": len(items),
                              "history": {"from": _iso(items[0][1].ts_ms), "to": _iso(items[-1][1].ts_ms)},
                              "embeddings": bool(embed), "models": {}}
    for ds in (users, products):
        module, rep = evaluate(ds, split=split, epochs=epochs, seed=seed)
        report["models"][ds.name] = rep
        if module is None:
            continue
        if refit_full:
            end = int(ds.ts.max())
            module = fit(ds.X, ds.labels(end), ds.features, epochs=rep["epochs"], seed=seed,
                         dropout_cols=emb_columns(ds.features))
            window = {"from": _iso(int(ds.ts.min())), "to": _iso(end)}
        else:
            window = {"from": rep["train"]["from"], "to": rep["train"]["to"]}
        meta = {
            "model_name": ds.name, "feature_names": list(ds.features), "training_window": window,
            "metrics": {"train": rep["train"], "validation": rep["validation"], "model": rep["model_metrics"],
                        "baseline": rep["baseline_metrics"], "baseline_rule": rep["baseline"],
                        "calibration": rep["calibration"]},
            "source": source, "horizon_s": HORIZON_S[ds.name], "hidden": list(HIDDEN), "epochs": rep["epochs"],
            "embeddings": bool(embed),
        }
        mv = registry.publish(ds.name, module, meta, version=version)
        rep["version"] = mv.version
        rep["path"] = str(mv.path)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"source {report['source']}: {report['events']} events, "
             f"{report['history']['from']} .. {report['history']['to']}"
             f"{' (with text embeddings)' if report.get('embeddings') else ''}"]
    for name, rep in report["models"].items():
        lines.append(f"{name} (purchase within {rep['horizon_s'] // 60} min): "
                     f"train {rep['train']['rows']} rows / {rep['train']['positives']} pos, "
                     f"validation {rep['validation']['rows']} rows / {rep['validation']['positives']} pos "
                     f"from {rep['validation']['from']}")
        if "skipped" in rep:
            lines.append(f"  not trained: {rep['skipped']}")
            continue
        m, b = rep["model_metrics"], rep["baseline_metrics"]
        lines.append(f"  model     ROC-AUC {m['roc_auc']:.4f}  PR-AUC {m['pr_auc']:.4f}")
        if "model_metrics_no_embeddings" in rep:
            n = rep["model_metrics_no_embeddings"]
            lines.append(f"  model, embedding features zeroed  ROC-AUC {n['roc_auc']:.4f}  PR-AUC {n['pr_auc']:.4f}")
        lines.append(f"  baseline  ROC-AUC {b['roc_auc']:.4f}  PR-AUC {b['pr_auc']:.4f}  ({rep['baseline']})")
        c = rep["calibration"]
        lines.append(f"  calibration  Brier {c['brier']:.5f} (base rate alone {c['brier_base_rate']:.5f})  "
                     f"ECE {c['ece']:.4f}")
        if "version" in rep:
            lines.append(f"  registered version {rep['version']} at {rep['path']}")
    return "\n".join(lines)

