"""`stocktake bench --looks`: the alerting look timed on a synthetic history written straight
into a fresh embedded store (a child process: chDB allows one store per process)."""

from __future__ import annotations

import json

from tests.pipeline_helpers import assert_one_line_error, stocktake


def test_bench_looks_times_the_look_as_the_history_grows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "looks.json"
    result = stocktake("bench", "--looks", "--history", "40000,20000", "--json-out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [run["events"] for run in report["runs"]] == [20_000, 40_000]   # grown in order
    for run in report["runs"]:
        assert run["look_ms"] > 0 and run["closing_look_ms"] > 0
        # every asset's events judged in the closed minute: 9 assets of the synthetic streams
        assert run["expectations_per_minute"] >= 9
    assert "closing a minute" in result.stdout


def test_bench_looks_refuses_a_bad_history() -> None:
    assert_one_line_error(stocktake("bench", "--looks", "--history", "10k"), "--history")
