"""Static checks of the full stack (docker-compose.yml, the ClickHouse users, .env.example):
no Docker engine runs here, so what can be checked without one is checked here."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
ENV_EXAMPLE = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))


def _interpolate(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?error} with .env.example as the environment."""
    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        value = ENV_EXAMPLE.get(name, "")
        return value if value or op != ":-" else arg
    return re.sub(r"\$\{(\w+)(:[-?])?([^}]*)\}", sub, text)


def test_ports_are_bound_to_localhost_by_default() -> None:
    published = [(name, p) for name, s in SERVICES.items() for p in s.get("ports", [])]
    assert {name for name, _ in published} == {"kafka", "clickhouse", "grafana"}
    for _, port in published:
        assert _interpolate(port).startswith("127.0.0.1:"), port


def test_services_wait_for_what_they_need() -> None:
    for name in ("kafka", "clickhouse", "grafana", "worker"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert SERVICES["worker"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert SERVICES["grafana"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert SERVICES["topics"]["restart"] == "no"
    # --scale worker=N: no fixed container name, no published port
    assert "container_name" not in SERVICES["worker"] and "ports" not in SERVICES["worker"]
    assert SERVICES["worker"]["build"]["dockerfile"] == "Dockerfile"
    assert SERVICES["worker-gpu"]["build"]["dockerfile"] == "Dockerfile.gpu"
    assert SERVICES["worker-gpu"]["profiles"] == ["gpu"] and SERVICES["replay"]["profiles"] == ["replay"]
    assert (ROOT / "Dockerfile.gpu").exists()


def test_grafana_gets_the_plugin_the_files_and_their_variables() -> None:
    g = SERVICES["grafana"]
    assert "grafana-clickhouse-datasource" in _interpolate(g["environment"]["GF_INSTALL_PLUGINS"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"] if v.startswith("./")}
    assert (ROOT / mounts["/etc/grafana/provisioning"]).is_dir()
    assert (ROOT / mounts["/var/lib/grafana/dashboards/stocktake"] / "stocktake-inventory.json").exists()
    wanted = set()
    for path in (ROOT / "grafana" / "provisioning").rglob("*.yaml"):
        wanted |= set(re.findall(r"\$\{(\w+)\}", path.read_text().replace("$$", "")))
    assert wanted <= set(g["environment"]), wanted - set(g["environment"])
    # Grafana reads ClickHouse as the read-only user, the workers write as the writer
    assert g["environment"]["CLICKHOUSE_GRAFANA_USER"] == "grafana"
    assert "//stocktake:" in COMPOSE["x-stocktake-env"]["STOCKTAKE_CLICKHOUSE"]


def test_clickhouse_users_are_least_privilege() -> None:
    mount = next(v for v in SERVICES["clickhouse"]["volumes"] if v.startswith("./"))
    path = ROOT / mount.split(":")[0]
    users = ET.parse(path).getroot().find("users")
    assert users is not None
    grants = {u.tag: [q.text for q in u.iter("query")] for u in users}
    assert grants["grafana"] == ["GRANT SELECT ON stocktake.*"]
    assert all(g and g.endswith(" ON stocktake.*") for g in grants["stocktake"])
    writer = grants["stocktake"][0] or ""
    assert "ALL" not in writer and "*.*" not in writer
    for user in users:
        assert user.find("password").get("from_env"), user.tag   # type: ignore[union-attr]
        assert user.find("access_management") is None, user.tag
    profiles = ET.parse(path).getroot().find("profiles")
    assert profiles is not None and profiles.findtext("grafana_readonly/readonly") == "1"
    env = SERVICES["clickhouse"]["environment"]
    assert {"CLICKHOUSE_WRITER_PASSWORD", "CLICKHOUSE_GRAFANA_PASSWORD"} <= set(env)
    assert "CLICKHOUSE_USER" not in env   # the image would create an unrestricted user


def test_env_example_sets_every_required_variable() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required <= {k for k, v in ENV_EXAMPLE.items() if v}, required
