"""The `stocktake` command as a user runs it: one-line errors, `up` with the
embedded broker and store, inventory/query while it runs and after it stops."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from stocktake import sources
from stocktake.tools import replay
from tests.pipeline_helpers import assert_one_line_error, spawn_up, stocktake


@pytest.mark.parametrize(("args", "needle"), [
    (["up", "--speed", "fast"], "--speed"),
    (["up", "--kafka-port", "99999"], "port out of range"),
    (["up", "--duration", "-1"], "must be > 0"),
    (["up", "--replay", "no-such-source"], "no-such-source"),
    (["up", "--inject", "duplicates=2"], "duplicates"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_flags_give_one_clear_line(args: list[str], needle: str, tmp_path: Path) -> None:
    assert_one_line_error(stocktake(*args, "--data-dir", str(tmp_path)) if args[0] == "up"
                          else stocktake(*args), needle)


def test_bad_environment_gives_one_clear_line() -> None:
    assert_one_line_error(stocktake("inventory", env={"STOCKTAKE_PARTITIONS": "many"}),
                          "STOCKTAKE_PARTITIONS")
    assert_one_line_error(stocktake("inventory", env={"STOCKTAKE_CLICKHOUSE": "mysql://x"}),
                          "STOCKTAKE_CLICKHOUSE")


def test_unreachable_clickhouse_gives_one_clear_line_without_the_password() -> None:
    result = stocktake("inventory", env={"STOCKTAKE_CLICKHOUSE": "http://writer:s3cret@127.0.0.1:1/db"})
    assert_one_line_error(result, "cannot open ClickHouse", "writer:***@127.0.0.1:1", "Connection refused")
    assert "s3cret" not in result.stderr


def test_inventory_without_a_store_says_so(tmp_path: Path) -> None:
    assert_one_line_error(stocktake("inventory", "--data-dir", str(tmp_path / "none")), "no store")


@pytest.mark.integration
def test_unreachable_kafka_gives_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = stocktake("worker", "--data-dir", str(tmp_path),
                       env={"STOCKTAKE_KAFKA": f"127.0.0.1:{port}", "STOCKTAKE_CONNECT_TIMEOUT": "0"},
                       timeout=60)
    assert_one_line_error(result, "cannot reach Kafka", f"127.0.0.1:{port}")


@pytest.mark.integration
def test_port_in_use_gives_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert_one_line_error(stocktake("up", "--data-dir", str(tmp_path), "--kafka-port", str(port)),
                              "already in use")


@pytest.mark.integration
def test_up_replays_rees46_and_inventory_answers_during_and_after(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    proc = spawn_up(data_dir, 25)
    messages = list(replay.to_messages(sources.load_events("rees46"),
                                       faults={"duplicates": 0.02, "malformed": 0.01}))
    valid = {s: sum(m.events for m in messages if m.kind in ("event", "envelope") and
                    m.topic == f"stocktake.{s}") for s in ("behaviour", "product", "transaction")}
    try:
        # While it runs: the store is locked by the worker, so inventory asks it over HTTP.
        deadline = time.monotonic() + 60
        during: dict[str, int] = {}
        while time.monotonic() < deadline:
            result = stocktake("inventory", "--json", "--data-dir", str(data_dir))
            if result.returncode == 0:
                during = {a["asset"]: a["valid"] for a in json.loads(result.stdout)["assets"]}
                if during.get("behaviour") == valid["behaviour"]:
                    break
            time.sleep(0.5)
        assert during.get("behaviour") == valid["behaviour"]
        second = stocktake("up", "--data-dir", str(data_dir), "--replay", "none")
        assert_one_line_error(second, "in use by stocktake pid")
        query = stocktake("query", "SELECT count() AS n FROM ingest_log WHERE status = 'invalid'",
                          "--json", "--data-dir", str(data_dir))
        assert query.returncode == 0, query.stderr
        assert json.loads(query.stdout)["rows"][0][0] == sum(m.kind == "malformed" for m in messages)
    finally:
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    assert "stopped after" in stderr
    # After it stopped: inventory opens the store itself.
    after = stocktake("inventory", "--json", "--data-dir", str(data_dir))
    assert after.returncode == 0, after.stderr
    assets = {a["asset"]: a for a in json.loads(after.stdout)["assets"]}
    for stream, n in valid.items():
        assert assets[stream]["valid"] == n
        assert assets[stream]["last_event_ts"].endswith("Z")
    assert assets["behaviour/event_type=purchase"]["valid"] > 0
    assert assets["behaviour/source=rees46-web"]["valid"] == valid["behaviour"]
    assert sum(assets[s]["duplicates"] for s in valid) == sum(
        m.events for m in messages if m.kind == "duplicate")


def test_alerts_table_shows_which_incident_an_inhibited_alert_is_part_of(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from stocktake import cli
    from stocktake.cli import worker_or_store
    alerts = [{"state": "firing", "severity": "critical", "asset": "behaviour", "kind": "silence",
               "subject": "event", "opened_at": "t", "resolved_at": None, "reason": "quiet", "details": {}},
              {"state": "firing", "severity": "warning", "asset": "behaviour/source=web", "kind": "silence",
               "subject": "event", "opened_at": "t", "resolved_at": None, "reason": "quiet",
               "details": {"inhibited_by": "0123456789abcdef"}}]
    monkeypatch.setattr(worker_or_store, "from_worker_or_store", lambda *_a: {"alerts": alerts})
    monkeypatch.setenv("COLUMNS", "250")
    assert cli.main(["alerts"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "behaviour" in line]
    assert len(rows) == 2
    assert "0123456789abcdef" in next(r for r in rows if "source=web" in r)
    assert "0123456789abcdef" not in next(r for r in rows if "source=web" not in r)


def test_missing_or_unknown_subcommand_is_one_line() -> None:
    assert_one_line_error(stocktake(), "Missing command")
    assert_one_line_error(stocktake("grafana"), "Missing command")
    assert_one_line_error(stocktake("grafana", "bogus"), "invalid choice")


def test_help_lists_every_command_in_order() -> None:
    result = stocktake("--help")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == ["up", "worker", "replay", "inventory", "alerts", "query", "status", "report", "reconcile",
                      "contract", "grafana", "train", "export-encoder", "eval-fields", "eval-gaps", "backtest", "bench"]


# A fake worker (worker.json naming this process and a local HTTP API), then the command
# in the same child process: what it printed and which heavy libraries it imported.
_ASK_FAKE_WORKER = """
import http.server, json, os, sys, threading
data_dir, answer_port = sys.argv[1], sys.argv[2]
class API(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, doc = (200, {"columns": ["sql"], "rows": [[body["sql"]]]}) if "bad" not in body["sql"] else (
            400, {"error": "Syntax error near bad"})
        if self.headers.get("Authorization") != "Bearer t0ken":  # the CLI sends worker.json's token
            status, doc = 401, {"error": "missing or wrong token"}
        data = json.dumps(doc).encode()
        self.send_response(status); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), API)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1] if answer_port == "live" else int(answer_port)
os.makedirs(data_dir, exist_ok=True)
with open(os.path.join(data_dir, "worker.json"), "w") as f:
    json.dump({"pid": os.getpid(), "http": f"http://127.0.0.1:{port}", "token": "t0ken"}, f)
from stocktake.cli import main
code = main(sys.argv[3:])
heavy = sorted({"faust", "chdb", "clickhouse_connect", "pyarrow", "numpy", "torch", "onnxruntime"} & set(sys.modules))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _ask(tmp_path: Path, port: str, *args: str) -> tuple[str, str, dict[str, object]]:
    """(stdout, stderr, {"code", "heavy"}) of the command asking a fake worker on ``port`` (or "live")."""
    import sys
    result = subprocess.run([sys.executable, "-c", _ASK_FAKE_WORKER, str(tmp_path), port, *args],
                            capture_output=True, text=True, timeout=60)
    *lines, last = result.stderr.strip().splitlines()
    return result.stdout, "\n".join(lines), json.loads(last)


def test_query_asks_the_running_worker_without_heavy_imports(tmp_path: Path) -> None:
    out, err, outcome = _ask(tmp_path, "live", "query", "SELECT 1", "--json", "--data-dir", str(tmp_path))
    assert outcome == {"code": 0, "heavy": []}, err
    assert json.loads(out) == {"columns": ["sql"], "rows": [["SELECT 1"]]}


def test_worker_errors_and_silence_are_one_line(tmp_path: Path) -> None:
    _, err, outcome = _ask(tmp_path, "live", "query", "bad sql", "--data-dir", str(tmp_path))
    assert outcome["code"] == 2
    assert err == "stocktake: error: Syntax error near bad"
    with socket.socket() as s:  # the worker.json names a port nobody answers on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    _, err, outcome = _ask(tmp_path, str(dead), "query", "SELECT 1", "--data-dir", str(tmp_path))
    assert outcome["code"] == 2
    assert re.fullmatch(r"stocktake: error: worker pid \d+ at http://127.0.0.1:\d+ did not answer: "
                        r"\[Errno 111\] Connection refused", err), err


def test_help_imports_nothing_heavy() -> None:
    import sys
    code = ("import sys\nfrom stocktake.cli import main\ntry:\n    main(['--help'])\nfinally:\n"
            "    print(sorted({'faust', 'chdb', 'clickhouse_connect', 'pyarrow', 'numpy', 'pydantic', 'rich'}"
            " & set(sys.modules)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip() == "[]", result.stderr
