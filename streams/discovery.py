"""How other commands find the worker that owns a data dir: DATA_DIR/worker.json.

Kept apart from the runtime so that `stocktake query`/`inventory` can ask a running
worker without importing Faust, chDB or pyarrow.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def worker_file(data_dir: Path) -> Path:
    return data_dir / "worker.json"


def write_worker_file(data_dir: Path, info: dict[str, Any]) -> None:
    """worker.json holds the API token: created 0600 (never readable by others, not even for
    a moment), written whole under a temporary name, then renamed into place."""
    path = worker_file(data_dir)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(temporary, path)


def auth_headers(info: dict[str, Any]) -> dict[str, str]:
    """What a client of the worker's API sends, given its worker.json (or {"token": ...})."""
    return {"Authorization": f"Bearer {info.get('token', '')}"}


def running_worker(data_dir: Path) -> dict[str, Any] | None:
    """The worker.json of a live worker owning data_dir, if any."""
    try:
        info = json.loads(worker_file(data_dir).read_text())
        os.kill(int(info["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, PermissionError):
        return None
    return info if isinstance(info, dict) else None
