"""ONNX Runtime sessions with the provider picked by STOCKTAKE_DEVICE (auto|cuda|cpu),
and ONNX metadata helpers. Imports onnxruntime lazily: processors/ never needs it.

auto: CUDA when ONNX Runtime can really run a session on it (the CUDA provider is
compiled into onnxruntime-gpu even where no GPU or CUDA library is present, so a
listed provider proves nothing: a probe session on a one-node model tells), else
CPU. The choice is logged once per process.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("stocktake.models.onnx_utils")

DEVICES = ("auto", "cuda", "cpu")
_cuda_ok: bool | None = None
_logged_auto = False
_lock = threading.Lock()


class DeviceError(RuntimeError):
    """STOCKTAKE_DEVICE=cuda but ONNX Runtime cannot use CUDA here."""


# A one-node ONNX model (Identity, float [1], opset 17, IR 8), serialized: the CUDA probe
# needs no onnx package (the worker runs on numpy + onnxruntime alone).
_PROBE_MODEL = base64.b64decode(
    "CAg6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAR")


def cuda_available() -> bool:
    """True when an ONNX Runtime session really gets the CUDA provider (cached)."""
    global _cuda_ok
    with _lock:
        if _cuda_ok is None:
            _cuda_ok = False
            try:
                import onnxruntime as ort

                if "CUDAExecutionProvider" in ort.get_available_providers():
                    so = ort.SessionOptions()
                    so.log_severity_level = 4
                    # onnxruntime-gpu on a host without CUDA logs a failed library load at
                    # ERROR through the default logger: expected here, so silenced for the probe.
                    ort.set_default_logger_severity(4)
                    try:
                        sess = ort.InferenceSession(_PROBE_MODEL, so,
                                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
                        _cuda_ok = "CUDAExecutionProvider" in sess.get_providers()
                    finally:
                        ort.set_default_logger_severity(3)
            except Exception as exc:  # no onnx/onnxruntime, or a broken CUDA install
                log.debug("CUDA probe failed: %s", exc)
                _cuda_ok = False
        return _cuda_ok


def resolve_device(device: str | None = None) -> str:
    """auto|cuda|cpu (None: STOCKTAKE_DEVICE, default auto) -> cuda|cpu. auto logs its
    choice once per process; cuda without a usable GPU raises DeviceError."""
    global _logged_auto
    want = (device or os.environ.get("STOCKTAKE_DEVICE") or "auto").strip().lower()
    if want not in DEVICES:
        raise ValueError(f"STOCKTAKE_DEVICE must be one of {', '.join(DEVICES)}, got {want!r}")
    if want == "cpu":
        return "cpu"
    ok = cuda_available()
    if want == "cuda":
        if not ok:
            raise DeviceError("STOCKTAKE_DEVICE=cuda but ONNX Runtime has no usable CUDA provider here "
                              "(needs onnxruntime-gpu, an NVIDIA GPU and CUDA 13 libraries)")
        return "cuda"
    chosen = "cuda" if ok else "cpu"
    with _lock:
        if not _logged_auto:
            _logged_auto = True
            log.info("STOCKTAKE_DEVICE=auto: ONNX Runtime on %s", "CUDA" if ok else "CPU (no usable CUDA provider)")
    return chosen


def providers_for(device: str) -> list[Any]:
    if device == "cuda":
        # TF32 off: with it on, scores drifted up to 4e-3 from torch on the H100 (parity needs
        # 1e-5); the scorer lost nothing measurable, and the encoder runs fp16 on CUDA anyway.
        return [("CUDAExecutionProvider", {"device_id": 0, "use_tf32": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model: Path | bytes, device: str, *, threads: int | None = None) -> Any:
    """An InferenceSession on a resolved device (cuda|cpu)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, so, providers=providers_for(device))


def set_metadata(path: Path, props: dict[str, Any]) -> None:
    """Write metadata_props into an ONNX file (values that are not strings become JSON)."""
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if key in existing:
            existing[key].value = text
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, text
    onnx.save(model, str(path))


def read_metadata(path_or_session: Path | Any) -> dict[str, str]:
    """metadata_props of an ONNX file or of a live session."""
    if isinstance(path_or_session, Path | str):
        import onnx

        model = onnx.load(str(path_or_session), load_external_data=False)
        return {p.key: p.value for p in model.metadata_props}
    return dict(path_or_session.get_modelmeta().custom_metadata_map)
