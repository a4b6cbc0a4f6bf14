"""Model versions on disk: what training publishes and the registry scores with.

    <root>/<model_name>/<version>/model.onnx    # opset 17, input features [batch, F], output score [batch]
    <root>/<model_name>/<version>/meta.json     # the same metadata as the ONNX metadata_props, parsed
    <root>/<model_name>/<version>/model.pt      # torch state_dict (parity tests, torch benchmarks)
    <root>/encoder/text_encoder.onnx            # the text encoder, exported on first use

Versions are positive integers; "latest" is the highest. A version directory is
complete when it appears: it is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MODEL_FILE, META_FILE, TORCH_FILE = "model.onnx", "meta.json", "model.pt"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path  # the version directory

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((self.path / META_FILE).read_text())
        return meta

    @property
    def feature_names(self) -> list[str]:
        return list(self.meta["feature_names"])

    def load_torch(self) -> Any:
        """The torch module of this version (needs torch and model.pt)."""
        import torch  # torch (and models.network) only here and in publish: the worker scores without it

        from stocktake.models.network import NO_CALIBRATION, build_module

        meta = self.meta
        state = torch.load(self.path / TORCH_FILE, map_location="cpu", weights_only=True)
        n = len(meta["feature_names"])
        module = build_module(n, state["log_mask"].numpy(), state["mean"].numpy(), state["std"].numpy(),
                              hidden=meta.get("hidden", (64, 32)))
        state.setdefault("calibration", torch.tensor(NO_CALIBRATION))  # a version from before calibration
        module.load_state_dict(state)
        return module.eval()


def version_numbers(model_dir: Path) -> list[int]:
    """The complete versions in ``model_dir`` (model and metadata present), ascending."""
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.isdigit() and (model_dir / name / MODEL_FILE).is_file() and (model_dir / name / META_FILE).is_file():
            out.append(int(name))
    return sorted(out)


class VersionStore:
    """Versions of named models under ``root``; see the module doc."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def model_dir(self, model_name: str) -> Path:
        if not model_name or "/" in model_name or model_name.startswith("."):
            raise ValueError(f"bad model name {model_name!r}")
        return self.root / model_name

    def versions(self, model_name: str) -> list[ModelVersion]:
        d = self.model_dir(model_name)
        return [ModelVersion(model_name, str(v), d / str(v)) for v in version_numbers(d)]

    def latest(self, model_name: str) -> ModelVersion | None:
        vs = version_numbers(self.model_dir(model_name))
        if not vs:
            return None
        return ModelVersion(model_name, str(vs[-1]), self.model_dir(model_name) / str(vs[-1]))

    def _install(self, model_name: str, fill: Any, version: str | None) -> ModelVersion:
        """Write a version with ``fill(tmp_dir, version)`` and rename it into place."""
        d = self.model_dir(model_name)
        d.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            taken = [int(n) for n in os.listdir(d) if n.isdigit()]  # broken versions too
            v = version or str(max(taken, default=0) + 1)
            if not v.isdigit() or int(v) < 1:
                raise ValueError(f"a version is a positive integer, got {v!r}")
            tmp = d / f".tmp-{v}-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                fill(tmp, v)
                os.rename(tmp, d / v)  # atomic; fails if that version exists (a concurrent publisher)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if version is None and (d / v).exists():
                    continue  # lost the race for this number: take the next one
                raise
            return ModelVersion(model_name, v, d / v)
        raise RuntimeError(f"could not allocate a version for {model_name}")

    def publish(self, model_name: str, module: Any, meta: dict[str, Any], *,
                version: str | None = None) -> ModelVersion:
        """Export a torch scorer module as a new version (model.onnx with metadata,
        meta.json, model.pt)."""
        import torch

        from stocktake.models.network import export_onnx

        def fill(tmp: Path, v: str) -> None:
            full = dict(meta, model_name=model_name, version=v,
                        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
            export_onnx(module, len(full["feature_names"]), tmp / MODEL_FILE, full)
            torch.save(module.state_dict(), tmp / TORCH_FILE)
            (tmp / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")

        return self._install(model_name, fill, version)

    def import_version(self, src: Path, model_name: str, version: str | None = None) -> ModelVersion:
        """Copy a version directory (e.g. a shipped artifact) in as a new version."""
        def fill(tmp: Path, v: str) -> None:
            for f in (MODEL_FILE, META_FILE, TORCH_FILE):
                if (src / f).exists():
                    shutil.copy2(src / f, tmp / f)

        return self._install(model_name, fill, version)

    def encoder_dir(self) -> Path:
        return self.root / "encoder"
