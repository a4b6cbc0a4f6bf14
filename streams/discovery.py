"""How other commands find the worker that owns a data dir: DATA_DIR/worker.json.

Kept apart from the runtime so that `stocktake query`/`inventory` can ask a running
worker without importing Faust, chDB or pyarrow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def worker_file(data_dir: Path) -> Path:
    return data_dir / "worker.json"


def running_worker(data_dir: Path) -> dict[str, Any] | None:
    """The worker.json of a live worker owning data_dir, if any."""
    try:
        info = json.loads(worker_file(data_dir).read_text())
        os.kill(int(info["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, PermissionError):
        return None
    return info if isinstance(info, dict) else None
