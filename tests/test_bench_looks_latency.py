"""`stocktake bench --looks` (the alerting look timed on a synthetic history written straight
into a fresh embedded store) and `--latency` (produced -> counted at an offered rate). Child
processes: chDB allows one store per process."""

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


def test_bench_latency_measures_produced_to_counted_at_an_offered_rate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "latency.json"
    result = stocktake("bench", "--latency", "--rates", "300", "--seconds", "5", "--envelope", "10",
                       "--json-out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [(r["envelope"], r["offered"], r["stored"]) for r in runs] == [(1, 1500, 1500), (10, 1500, 1500)]
    for run in runs:
        latency = run["latency_ms"]
        # every event after the warm-up, stored within the flush interval plus the insert
        assert run["kept_up"] and latency["n"] > 500
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"] < 5_000
        assert run["peak_rss_mib"] > 50
