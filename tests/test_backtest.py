"""`stocktake backtest PATH`: a history through the worker's gap detectors, as a user runs it.

The history: a behaviour stream at a steady cadence (one event every 10 s, view and cart
in turn, source web) from 2024-03-01 00:00 to 04:00 UTC, with a 40-minute hole
(02:00-02:40), one invalid event and one duplicate."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_helpers import assert_one_line_error, stocktake

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
HOLE = (START + dt.timedelta(hours=2), START + dt.timedelta(hours=2, minutes=40))
END = START + dt.timedelta(hours=4)
GAP_KINDS = ("silence", "volume_drop")


def _iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def write_history(path: Path, *, hole: bool = True) -> Path:
    lines, n, t = [], 0, START
    while t < END:
        if not (hole and HOLE[0] <= t < HOLE[1]):
            lines.append({"event_id": f"e{n}", "event_type": ("view", "cart")[n % 2], "user_id": f"u{n % 17}",
                          "product_id": f"p{n % 5}", "ts": _iso(t), "source": "web"})
        n, t = n + 1, t + dt.timedelta(seconds=10)
    lines.append({"event_id": "no-user", "event_type": "view", "ts": _iso(START + dt.timedelta(hours=1)),
                  "source": "web"})                       # invalid: user_id is required
    lines.append({**lines[5]})                            # a duplicate event_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return write_history(tmp_path / "history" / "behaviour.jsonl")


def backtest_json(*args: str) -> dict[str, Any]:
    result = stocktake("backtest", *args, "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def covering_the_hole(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Silence or volume-drop alerts on the stream that opened during the hole and stayed
    open until it ended."""
    return [a for a in alerts if a["asset"] == "behaviour" and a["kind"] in GAP_KINDS
            and HOLE[0] <= _t(a["opened_at"]) < HOLE[1]
            and (a["resolved_at"] is None or _t(a["resolved_at"]) >= HOLE[1])]


def test_backtest_prints_the_alert_the_hole_raises(history: Path) -> None:
    result = stocktake("backtest", str(history))
    assert result.returncode == 0, result.stderr
    summary, *table = result.stdout.splitlines()
    assert "1,202 events read, 1,200 valid (1 invalid, 1 duplicates)" in summary, summary
    assert "2024-03-01 00:00:00 → 2024-03-01 03:59:50 UTC" in summary, summary
    assert "4 assets" in summary, summary      # behaviour, its two event types, its source
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table if line.startswith("│")]
    hits = [r for r in rows if r[2] == "behaviour" and r[3] in GAP_KINDS and r[0].startswith("2024-03-01 02:")]
    assert hits, result.stdout
    assert all(int(r[0][11:13]) * 60 + int(r[0][14:16]) < 2 * 60 + 40 for r in hits), hits   # opened in the hole
    # Sub-assets breaching with their stream are marked as part of its alert.
    assert any(r[2] == "behaviour/source=web" and r[-2] == "by behaviour" for r in rows), result.stdout


def test_backtest_json_holds_the_alert_and_nothing_before_the_hole(history: Path) -> None:
    doc = backtest_json(str(history))
    assert doc["events"] | {"invalid_by_reason": None} == {
        "read": 1202, "valid": 1200, "invalid": 1, "duplicates": 1, "no_time": 0, "outside_window": 0,
        "invalid_by_reason": None}
    assert doc["events"]["invalid_by_reason"] == {"missing_field:user_id": 1}
    assert doc["streams"] == {"behaviour": 1200}
    assert doc["assets"] == ["behaviour", "behaviour/event_type=cart", "behaviour/event_type=view",
                             "behaviour/source=web"]
    assert doc["span"] == {"from": "2024-03-01T00:00:00Z", "to": "2024-03-01T03:59:50Z"}
    hits = covering_the_hole(doc["alerts"])
    assert hits, doc["alerts"]
    for a in doc["alerts"]:
        assert {"opened_at", "resolved_at", "asset", "kind", "subject", "severity", "scale", "expected", "observed",
                "reason", "inhibited_by"} <= set(a)
        assert _t(a["opened_at"]).tzinfo is not None
        assert a["state"] == ("open" if a["resolved_at"] is None else "resolved")
    # A steady stream raises nothing of the kind before the hole ...
    assert not [a for a in doc["alerts"] if a["kind"] in GAP_KINDS and _t(a["opened_at"]) < HOLE[0]], doc["alerts"]
    # ... and the same history without the hole raises no such alert at all.
    clean = backtest_json(str(write_history(history.parent.parent / "clean" / "behaviour.jsonl", hole=False)))
    assert clean["events"]["valid"] == 1440
    assert not [a for a in clean["alerts"] if a["kind"] in GAP_KINDS], clean["alerts"]


def test_backtest_window_and_directory(history: Path) -> None:
    # Another stream in the same directory: no contract, judged schemaless, named by its file.
    other = history.parent / "impressions.jsonl"
    other.write_text("".join(json.dumps({"id": n, "ts": _iso(START + dt.timedelta(minutes=n))}) + "\n"
                             for n in range(240)), encoding="utf-8")
    (history.parent / "notes.txt").write_text("not events\n", encoding="utf-8")
    doc = backtest_json(str(history.parent), "--from", "2024-03-01T01:00:00Z", "--to", "2024-03-01T03:30")
    assert doc["streams"] == {"behaviour": 360 + 300, "impressions": 150}
    assert doc["span"] == {"from": "2024-03-01T01:00:00Z", "to": "2024-03-01T03:29:50Z"}
    assert doc["window"] == {"from": "2024-03-01T01:00:00Z", "to": "2024-03-01T03:30:00Z"}
    assert "impressions" in doc["assets"]
    assert covering_the_hole(doc["alerts"]), doc["alerts"]


def test_backtest_report_draws_the_alert_timeline(history: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "backtest.html"
    result = stocktake("backtest", str(history), "--report", str(out))
    assert result.returncode == 0, result.stderr
    assert str(out.resolve()) in result.stderr
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    timeline = re.search(r'<svg [^>]*aria-label="alerts over event time".*?</svg>', page, re.S)
    assert timeline, "no alert timeline"
    lanes = re.findall(r"<text[^>]*>([^<]*)</text>", timeline[0])
    assert "behaviour" in [s.strip() for s in lanes], lanes
    # each bar carries its alert as a tooltip: the hole's alert is one of them
    tips = re.findall(r"<title>([^<]*)</title>", timeline[0])
    assert any(t.startswith("behaviour · ") and any(k in t for k in GAP_KINDS) and "2024-03-01 02:" in t
               for t in tips), tips
    assert re.search(r'<svg [^>]*aria-label="behaviour events per hour"', page), "no volume chart"
    assert "volume_drop" in page or "silence" in page


@pytest.mark.parametrize(("args", "needle"), [
    (["/no/such/history.jsonl"], "no such file or directory"),
    (["/no/such/dir"], "no such file or directory"),
    (["HISTORY", "--from", "yesterday-ish"], "--from"),
    (["HISTORY", "--from", "2024-03-02", "--to", "2024-03-01"], "--from must be before --to"),
    (["HISTORY", "--gaps-config", "/no/such/gaps.toml"], "no such file"),
])
def test_backtest_bad_input_is_one_line(history: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(stocktake("backtest", *(str(history) if a == "HISTORY" else a for a in args)), needle)


def test_backtest_bad_lines_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "behaviour.jsonl"
    bad.write_text('{"event_id": "e1"\n', encoding="utf-8")
    assert_one_line_error(stocktake("backtest", str(bad)), "not JSON")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(stocktake("backtest", str(empty)), "no .jsonl")


def test_backtest_names_sub_assets_by_the_deployments_contract(tmp_path: Path) -> None:
    """A stream with a contract of the user's (STOCKTAKE_CONTRACTS) is sliced by its own kind
    field, as the inventory names it."""
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "impressions.toml").write_text(
        'stream = "impressions"\nversion = "1"\n'
        '[fields.id]\ntype = "id"\nrequired = true\nrole = "event_id"\n'
        '[fields.placement]\ntype = "string"\nrequired = true\nrole = "kind"\n'
        '[fields.ts]\ntype = "timestamp"\nrequired = true\nrole = "time"\n', encoding="utf-8")
    events = tmp_path / "impressions.jsonl"
    events.write_text("".join(json.dumps({"id": n, "placement": ("top", "side")[n % 2],
                                          "ts": _iso(START + dt.timedelta(seconds=10 * n))}) + "\n"
                              for n in range(600)) + json.dumps({"id": "x", "ts": _iso(START)}) + "\n",
                      encoding="utf-8")
    result = stocktake("backtest", str(events), "--json", env={"STOCKTAKE_CONTRACTS": str(contracts)})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["assets"] == ["impressions", "impressions/placement=side", "impressions/placement=top"]
    assert doc["events"]["invalid_by_reason"] == {"missing_field:placement": 1}
