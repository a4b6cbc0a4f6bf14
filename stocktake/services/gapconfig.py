"""Per-asset gap-detection settings from a TOML file (STOCKTAKE_GAPS_CONFIG).

    [default]                      # every asset
    silence_factor = 2.5
    [assets."behaviour/source=partner-feed"]
    mute = true
    [assets."transaction"]
    drop_min = 0.7

Keys are the fields of processors.gaps.GapConfig; unknown keys are an error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from stocktake.processors.gaps import GapConfig, GapMonitor
from stocktake.settings import SettingsError


def load_monitor(path: str) -> GapMonitor:
    if not path:
        return GapMonitor()
    try:
        data: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"STOCKTAKE_GAPS_CONFIG: no such file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"STOCKTAKE_GAPS_CONFIG {path}: {exc}") from None
    unknown = set(data) - {"default", "assets"}
    if unknown:
        raise SettingsError(f"STOCKTAKE_GAPS_CONFIG {path}: unknown sections {sorted(unknown)}")
    try:
        default = GapConfig().with_overrides(data.get("default", {}))
        per_asset = data.get("assets", {})
        for overrides in per_asset.values():
            default.with_overrides(overrides)  # validate now, not on the asset's first event
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"STOCKTAKE_GAPS_CONFIG {path}: {exc}") from None
    return GapMonitor(default, per_asset)
