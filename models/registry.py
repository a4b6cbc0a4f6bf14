"""The model registry the worker scores with, and the ONNX Runtime scorer that hot-reloads
its latest versions. The layout on disk is in ``models/versions.py``.

`ensure_defaults()` copies the small models shipped in models/artifacts/ (trained on the
REES46 sample) into an empty registry, so a fresh machine scores without a training step.

    registry = ModelRegistry(settings.data_dir / "models"); registry.ensure_defaults()
    scorer = Scorer(registry, "user_propensity")          # STOCKTAKE_DEVICE auto|cuda|cpu
    scores = scorer.score(state.user_matrix(ids, now_ms))  # float32 [n] in [0, 1]
    scorer.maybe_reload()                                  # cheap; swaps when a newer version lands
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stocktake.models.encoder import ENCODER_FILE, export_text_encoder
from stocktake.models.onnx_utils import make_session, read_metadata, resolve_device
from stocktake.models.versions import ModelVersion, VersionStore, version_numbers
from stocktake.processors.features import PRODUCT_FEATURES, USER_FEATURES

log = logging.getLogger("stocktake.models.registry")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
MODEL_NAMES = ("user_propensity", "product_demand")
EXPECTED_FEATURES: dict[str, tuple[str, ...]] = {
    "user_propensity": USER_FEATURES, "product_demand": PRODUCT_FEATURES,
}
FULL_CHECK_S = 10.0


class ModelRegistry(VersionStore):
    """The model versions the worker scores with, seeded from the shipped artifacts."""

    def ensure_defaults(self, *, encoder: bool = False) -> None:
        """Give every model a version: copy the shipped artifacts (models/artifacts/
        <name>/<version>/) for models that have none; without shipped artifacts, train
        on the REES46 sample (~10 s, needs torch). ``encoder``: also export the text
        encoder if missing (~6 s, needs torch+transformers; returns quickly after)."""
        missing = [n for n in MODEL_NAMES if self.latest(n) is None]
        for name in MODEL_NAMES:
            shipped = version_numbers(ARTIFACTS / name)
            latest = self.latest(name)
            if latest is not None and tuple(latest.feature_names) == EXPECTED_FEATURES[name]:
                continue
            # none yet, or the newest was made for other features (an older stocktake): the
            # shipped one goes in as the next version, so scoring never meets a width it cannot feed
            if shipped and tuple(ModelVersion(name, str(shipped[-1]), ARTIFACTS / name / str(shipped[-1]))
                                 .feature_names) != EXPECTED_FEATURES[name]:
                log.error("the shipped %s does not fit this stocktake's features: not installed", name)
            elif shipped:
                mv = self.import_version(ARTIFACTS / name / str(shipped[-1]), name,
                                         version=None if latest is not None else str(shipped[-1]))
                log.info("installed shipped model %s version %s", name, mv.version)
                if name in missing:
                    missing.remove(name)
            elif latest is not None:
                missing.append(name)
        if missing:
            from stocktake.models.train import train  # torch: only when the shipped models are missing

            log.warning("no shipped model for %s: training on the REES46 sample", ", ".join(missing))
            train("rees46", self.root, embeddings=False)
        if encoder:
            self.ensure_encoder()

    def ensure_encoder(self, *, fp16: bool = False) -> Path:
        path = self.encoder_dir() / ENCODER_FILE
        if path.exists() and not fp16:
            return path
        return export_text_encoder(self.encoder_dir(), fp16=fp16)


class _Loaded(NamedTuple):
    mv: ModelVersion
    session: Any
    meta: dict[str, str]
    features: tuple[str, ...]


class Scorer:
    """A micro-batched ONNX Runtime session on the registry's latest version of a
    model. ``score`` runs at most ``max_batch`` rows per ONNX call; on CUDA it uses IO
    binding (input copied in by ORT, output bound on the device, one copy back).
    ``maybe_reload`` swaps to a newer version atomically: a ``score`` call in flight
    keeps the session it started with."""

    def __init__(self, registry: ModelRegistry, model_name: str, device: str = "auto", *,
                 max_batch: int = 16384, threads: int | None = None, io_binding: bool = True,
                 expected_features: Sequence[str] | None = None):
        self.registry = registry
        self.model_name = model_name
        self._device = resolve_device(device)
        self.max_batch = max_batch
        self.threads = threads
        self.io_binding = io_binding and self._device == "cuda"
        self.expected = tuple(expected_features) if expected_features is not None \
            else EXPECTED_FEATURES.get(model_name)
        self._dir_mtime = self._mtime()
        self._listed_at = time.monotonic()
        self._rejected: set[str] = set()
        mv = registry.latest(model_name)
        if mv is None:
            raise FileNotFoundError(f"no version of model {model_name!r} under {registry.root} "
                                    "(run `stocktake train`, or ModelRegistry.ensure_defaults())")
        self._state = self._load(mv)
        self.loaded_at = time.time()

    # -- properties
    @property
    def name(self) -> str:
        return self.model_name

    @property
    def version(self) -> str:
        return self._state.mv.version

    @property
    def device(self) -> str:
        return self._device

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._state.features

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._state.meta)

    # -- loading
    def _mtime(self) -> int:
        try:
            return os.stat(self.registry.model_dir(self.model_name)).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _load(self, mv: ModelVersion) -> _Loaded:
        session = make_session(mv.onnx_path, self._device, threads=self.threads)
        meta = read_metadata(session)
        features = tuple(json.loads(meta.get("feature_names", "[]")))
        width = session.get_inputs()[0].shape[1]
        if isinstance(width, int) and width != len(features):
            raise ValueError(f"{mv.onnx_path}: input width {width} != {len(features)} feature names")
        if self.expected is not None and features != self.expected:
            raise ValueError(f"{mv.onnx_path}: its feature names differ from processors.features "
                             f"({len(features)} vs {len(self.expected)} features)")
        return _Loaded(mv, session, meta, features)

    def maybe_reload(self) -> bool:
        """Cheap when nothing changed (one stat of the model directory; a listing every
        10 s). Loads the
        latest version if it is newer than the current one and swaps it in; a version
        that fails to load is logged once and skipped."""
        mtime = self._mtime()
        now = time.monotonic()
        # The directory's mtime changes when a version is renamed in. A full listing every
        # FULL_CHECK_S as well covers filesystems with coarse mtimes.
        if mtime == self._dir_mtime and now - self._listed_at < FULL_CHECK_S:
            return False
        self._dir_mtime = mtime
        self._listed_at = now
        mv = self.registry.latest(self.model_name)
        if mv is None or int(mv.version) <= int(self.version) or mv.version in self._rejected:
            return False
        try:
            new = self._load(mv)
        except Exception as exc:
            self._rejected.add(mv.version)
            log.warning("not reloading %s version %s: %s", self.model_name, mv.version, exc)
            return False
        old = self.version
        self._state = new  # one reference swap: atomic for concurrent score() calls
        self.loaded_at = time.time()
        log.info("reloaded %s: version %s -> %s", self.model_name, old, mv.version)
        return True

    # -- scoring
    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 [n] in [0, 1] for raw feature rows float32 [n, F]."""
        st = self._state
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(st.features):
            raise ValueError(f"expected features of shape [n, {len(st.features)}], got {list(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return np.zeros(0, np.float32)
        if n <= self.max_batch:
            return self._run(st, x)
        out = np.empty(n, np.float32)
        for start in range(0, n, self.max_batch):
            out[start:start + self.max_batch] = self._run(st, x[start:start + self.max_batch])
        return out

    def _run(self, st: _Loaded, x: np.ndarray) -> np.ndarray:
        if self.io_binding:
            binding = st.session.io_binding()
            binding.bind_cpu_input("features", x)
            binding.bind_output("score", self._device)  # stays on the GPU until the one copy back
            st.session.run_with_iobinding(binding)
            result: np.ndarray = binding.copy_outputs_to_cpu()[0]
            return result.astype(np.float32, copy=False)
        out: np.ndarray = st.session.run(["score"], {"features": x})[0]
        return out.astype(np.float32, copy=False)
