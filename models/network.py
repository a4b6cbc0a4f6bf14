"""The scorers' torch network and its ONNX export: what training builds, the registry
publishes, and a version's ``model.pt`` loads back into.

    module = build_module(n, log_mask, mean, std)       # preprocessing + MLP + sigmoid in one module
    export_onnx(module, n, path, metadata)              # input features [batch, F] -> score [batch]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stocktake.models.onnx_utils import set_metadata

HIDDEN = (64, 32)
OPSET = 17
NO_CALIBRATION = (1.0, 0.0)  # (scale, bias) of the logit: the raw sigmoid


class ScorerNet(nn.Module):
    """x (raw features) -> where(mask, log1p(max(x, 0)), x) -> standardise -> MLP -> logit ->
    sigmoid(scale * logit + bias) -> [n]. ``calibration`` holds (scale, bias): training sets
    them so that the score reads as a probability (models/train.py fit); (1, 0) is the raw
    sigmoid, which is what versions trained before them load with."""

    log_mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    calibration: torch.Tensor

    def __init__(self, n_features: int, log_mask: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 hidden: Sequence[int] = HIDDEN):
        super().__init__()
        self.register_buffer("log_mask", torch.tensor(log_mask, dtype=torch.bool))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.register_buffer("calibration", torch.tensor(NO_CALIBRATION, dtype=torch.float32))
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.best_epochs = 0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(self.log_mask, torch.log1p(torch.clamp(x, min=0.0)), x)
        x = (x - self.mean) / self.std
        out: torch.Tensor = self.mlp(x).squeeze(-1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x) * self.calibration[0] + self.calibration[1])


def build_module(n_features: int, log_mask: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 hidden: Sequence[int] = HIDDEN) -> ScorerNet:
    return ScorerNet(n_features, log_mask, mean, std, hidden)


def export_onnx(module: Any, n_features: int, path: Path, metadata: dict[str, Any]) -> Path:
    """ONNX (opset 17): input ``features`` float32 [batch, F], output ``score`` float32 [batch]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, n_features),), str(path), input_names=["features"],
                          output_names=["score"], dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    set_metadata(path, metadata)
    return path
