"""The distribution installs one import root, `stocktake` (generic names like `models` or
`clickhouse` collide in users' environments), with its data files inside."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_one_top_level_package_with_its_data(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("stocktake-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert zf.read(top_level).decode().split() == ["stocktake"]
    code = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert code == {"stocktake"}
    for package in ("streams", "processors", "models", "clickhouse", "grafana", "services", "cli"):
        assert f"stocktake/{package}/__init__.py" in names
    for data in ("stocktake/clickhouse/migrations/001_ingest_log.sql",
                 "stocktake/models/artifacts/user_propensity/1/model.onnx",
                 "stocktake/grafana/dashboards/stocktake-inventory.json",
                 "stocktake/report/templates/report.html",
                 "stocktake/processors/contracts/behaviour.toml",
                 "stocktake/data/rees46/2019-Oct-sample.csv.gz"):
        assert data in names
