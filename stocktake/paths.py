"""Where stocktake keeps its state, without importing the settings machinery.

Commands a running worker answers (`query`, `inventory`, `alerts`) need only the data dir to
find it; building the full Settings (pydantic) would cost them half their start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_PREFIX = "STOCKTAKE_"
DEFAULT_DATA_DIR = Path(".stocktake")


def data_dir(flag: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """--data-dir, else STOCKTAKE_DATA_DIR (empty means unset, as for every setting), else ./.stocktake."""
    if flag is not None:
        return flag
    return Path(environ.get(ENV_PREFIX + "DATA_DIR") or DEFAULT_DATA_DIR)
