"""`stocktake grafana sync` against a local HTTP server on 127.0.0.1 that records requests and
keeps what it is sent, answering like Grafana's HTTP API (404 for what does not exist yet).
grafana-client speaks niquests, which the `responses` mocking library cannot intercept."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from stocktake.cli import main
from stocktake.grafana import alerts as A
from stocktake.grafana import dashboards as D
from stocktake.grafana import sync as S
from stocktake.grafana.clickhouse import DATASOURCE_UID


class FakeGrafana:
    """Just enough of Grafana 11's API for sync, with its answers' shapes."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.contact_points: dict[str, dict[str, Any]] = {}
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.auth: str | None = None      # the Authorization header Grafana accepts
        self.lock = threading.Lock()

    def handle(self, method: str, url: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        path, query = urlparse(url).path, parse_qs(urlparse(url).query)
        self.requests.append({"method": method, "path": path, "query": query, "headers": headers, "body": body})
        if self.auth is not None and headers.get("authorization") != self.auth:
            return 401, {"message": "invalid API key"}
        m = re.fullmatch(r"/api/folders/([^/]+)", path)
        if path == "/api/folders" and method == "POST":
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(self.folders) + 1}
            return 200, self.folders[body["uid"]]
        if m and method == "GET":
            return (200, self.folders[m[1]]) if m[1] in self.folders else (404, {"message": "folder not found"})
        if m and method == "PUT":
            self.folders[m[1]]["title"] = body["title"]
            return 200, self.folders[m[1]]
        m = re.fullmatch(r"/api/datasources/uid/([^/]+)", path)
        if path == "/api/datasources" and method == "POST":
            return 200, self._store_datasource(body)
        if m and method == "GET":
            if m[1] not in self.datasources:
                return 404, {"message": "Data source not found"}
            return 200, self.datasources[m[1]]
        if m and method == "PUT":
            return 200, self._store_datasource(body)
        m = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
        if m and method == "GET":
            if m[1] not in self.dashboards:
                return 404, {"message": "Dashboard not found"}
            return 200, self.dashboards[m[1]]
        if path == "/api/dashboards/db" and method == "POST":
            d = dict(body["dashboard"])
            old = self.dashboards.get(d["uid"])
            d["id"] = old["dashboard"]["id"] if old else len(self.dashboards) + 1
            d["version"] = old["dashboard"]["version"] + 1 if old else 1
            self.dashboards[d["uid"]] = {"dashboard": d, "meta": {"folderUid": body.get("folderUid", "")}}
            return 200, {"status": "success", "uid": d["uid"], "version": d["version"]}
        if path == "/api/v1/provisioning/contact-points" and method == "GET":
            names = query.get("name") or []
            return 200, [c for c in self.contact_points.values() if not names or c["name"] in names]
        if path == "/api/v1/provisioning/contact-points" and method == "POST":
            self.contact_points[body["uid"]] = body
            return 202, body
        m = re.fullmatch(r"/api/v1/provisioning/contact-points/([^/]+)", path)
        if m and method == "PUT":
            self.contact_points[m[1]] = body
            return 202, {"message": "contactpoint updated"}
        m = re.fullmatch(r"/api/v1/provisioning/folder/([^/]+)/rule-groups/([^/]+)", path)
        if m and method == "GET":
            if (m[1], m[2]) not in self.groups:
                return 404, {"message": "rule group does not exist"}
            return 200, self.groups[(m[1], m[2])]
        if m and method == "PUT":
            if m[1] not in self.folders:
                return 400, {"message": "folder does not exist"}
            # Grafana adds fields of its own to what it stores.
            rules = [{**r, "id": i + 1, "orgID": 1, "updated": "2025-01-01T00:00:00Z", "provenance": ""}
                     for i, r in enumerate(body["rules"])]
            self.groups[(m[1], m[2])] = {**body, "rules": rules}
            return 200, self.groups[(m[1], m[2])]
        return 404, {"message": f"no route {method} {path}"}

    def _store_datasource(self, body: dict[str, Any]) -> dict[str, Any]:
        stored = {k: v for k, v in body.items() if k != "secureJsonData"}
        stored.update(id=1, orgId=1, readOnly=False,
                      secureJsonFields={k: True for k, v in (body.get("secureJsonData") or {}).items() if v})
        self.datasources[body["uid"]] = stored
        return {"datasource": stored, "id": 1, "message": "Datasource added"}

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] != "GET"]


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            with fake.lock:
                status, answer = fake.handle(self.command, self.path,
                                             {k.lower(): v for k, v in self.headers.items()}, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _env(url: str, **extra: str) -> dict[str, str]:
    return {"STOCKTAKE_GRAFANA_URL": url, "STOCKTAKE_GRAFANA_TOKEN": "glsa_test", "STOCKTAKE_GRAFANA_CH_PASSWORD": "ro",
            "STOCKTAKE_GRAFANA_WEBHOOK_URL": "http://127.0.0.1:9/hook", **extra}


def test_sync_creates_everything_then_changes_nothing(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    fake.auth = "Bearer glsa_test"
    env = _env(url)
    report = S.sync(S.GrafanaTarget.from_env(env), prefix="shop.", env=env)
    assert report.updated == [] and report.unchanged == []
    assert len(report.created) == 4 + len(D.DASHBOARDS)  # folder, datasource, contact point, rules

    assert fake.folders[A.FOLDER_UID]["title"] == A.FOLDER_TITLE
    ds = fake.datasources[DATASOURCE_UID]
    assert ds["type"] == "grafana-clickhouse-datasource" and ds["jsonData"]["username"] == "grafana"
    assert ds["secureJsonFields"] == {"password": True}
    built = D.build_all()
    for d in built.values():
        stored = fake.dashboards[d["uid"]]
        assert stored["meta"]["folderUid"] == A.FOLDER_UID
        assert {k: v for k, v in stored["dashboard"].items() if k not in ("id", "version")} == d
    assert fake.contact_points[A.CONTACT_POINT]["settings"]["url"] == "http://127.0.0.1:9/hook"
    group = fake.groups[(A.FOLDER_UID, A.GROUP)]
    assert group["interval"] == 60 and len(group["rules"]) == 4
    stalled = next(r for r in group["rules"] if r["uid"] == "stocktake-ingest-stalled")
    assert "startsWith(topic, 'shop.')" in stalled["data"][0]["model"]["rawSql"]
    # alert rules and the contact point stay editable in the UI
    provisioning = [r for r in fake.writes() if r["path"].startswith("/api/v1/provisioning")]
    assert provisioning and all(r["headers"].get("x-disable-provenance") == "true" for r in provisioning)
    # the rules' folder exists before the rule group is written
    paths = [r["path"] for r in fake.writes()]
    assert paths.index("/api/folders") < next(i for i, p in enumerate(paths) if "rule-groups" in p)

    before = len(fake.requests)
    again = S.sync(S.GrafanaTarget.from_env(env), prefix="shop.", env=env)
    assert not again.changed and len(again.unchanged) == len(report.created)
    assert all(r["method"] == "GET" for r in fake.requests[before:]), "a second sync must write nothing"


def test_sync_updates_only_what_drifted(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    env = _env(url)
    S.sync(S.GrafanaTarget.from_env(env), prefix="stocktake.", env=env)
    fake.dashboards["stocktake-gaps"]["dashboard"]["title"] = "edited in the UI"
    fake.groups[(A.FOLDER_UID, A.GROUP)]["rules"][0]["for"] = "10m"
    before = len(fake.requests)
    report = S.sync(S.GrafanaTarget.from_env(env), prefix="stocktake.", env=env)
    assert sorted(report.updated) == ["alert rule group stocktake/stocktake (4 rules)", "dashboard stocktake-gaps"]
    writes = [r for r in fake.requests[before:] if r["method"] != "GET"]
    assert [(r["method"], r["path"]) for r in writes] == [
        ("POST", "/api/dashboards/db"), ("PUT", "/api/v1/provisioning/folder/stocktake/rule-groups/stocktake")]
    assert fake.dashboards["stocktake-gaps"]["dashboard"]["title"] == D.GAPS.title
    assert writes[0]["body"]["overwrite"] is True


def test_sync_dry_run_writes_nothing(grafana: tuple[FakeGrafana, str]) -> None:
    fake, url = grafana
    env = _env(url)
    lines: list[str] = []
    report = S.sync(S.GrafanaTarget.from_env(env), prefix="stocktake.", env=env, dry_run=True, log=lines.append)
    assert report.created and fake.writes() == []
    assert lines[0] == "would create folder stocktake"


def test_basic_auth_and_cli(grafana: tuple[FakeGrafana, str], monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = grafana
    fake.auth = "Basic " + base64.b64encode(b"admin:secret").decode()
    for k, v in {"STOCKTAKE_GRAFANA_URL": url, "STOCKTAKE_GRAFANA_USER": "admin",
                 "STOCKTAKE_GRAFANA_PASSWORD": "secret", "STOCKTAKE_TOPIC_PREFIX": "shop"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("STOCKTAKE_GRAFANA_TOKEN", raising=False)
    assert main(["grafana", "sync"]) == 0
    assert "created   dashboard stocktake-inventory" in capsys.readouterr().out
    stalled = next(r for r in fake.groups[(A.FOLDER_UID, A.GROUP)]["rules"] if r["uid"] == "stocktake-ingest-stalled")
    assert "startsWith(topic, 'shop.')" in stalled["data"][0]["model"]["rawSql"]
    assert main(["grafana", "sync"]) == 0
    assert capsys.readouterr().out.endswith(f"{url}: already up to date\n")

    monkeypatch.setenv("STOCKTAKE_GRAFANA_PASSWORD", "wrong")
    assert main(["grafana", "sync"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused the credentials (401)" in err


@pytest.mark.parametrize(("env", "message"), [
    ({}, "set STOCKTAKE_GRAFANA_URL"),
    ({"STOCKTAKE_GRAFANA_URL": "grafana:3000", "STOCKTAKE_GRAFANA_TOKEN": "t"}, "must be http(s)://"),
    ({"STOCKTAKE_GRAFANA_URL": "http://127.0.0.1:3000"}, "set STOCKTAKE_GRAFANA_TOKEN, or"),
    ({"STOCKTAKE_GRAFANA_URL": "http://127.0.0.1:3000", "STOCKTAKE_GRAFANA_TOKEN": "t",
      "STOCKTAKE_GRAFANA_USER": "u"}, "not both"),
])
def test_settings_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(S.SyncError, match=re.escape(message)):
        S.GrafanaTarget.from_env(env)


def test_unreachable_grafana_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    with socket.socket() as s:        # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STOCKTAKE_GRAFANA_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("STOCKTAKE_GRAFANA_TOKEN", "t")
    monkeypatch.setenv("STOCKTAKE_GRAFANA_TIMEOUT", "2")
    assert main(["grafana", "sync"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stocktake: error: cannot reach Grafana at http://127.0.0.1:") and err.count("\n") == 1
