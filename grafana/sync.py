"""``stocktake grafana sync``: create or update the folder, data source, dashboards, contact
point and alert rules on an existing Grafana (11 or later), through grafana-client.

Idempotent: every object is read first and written only when it is missing or differs from
what the code builds, so a second run makes no change (and says so). Alert rules go through
the alerting provisioning API as one rule group (``X-Disable-Provenance``, so they stay
editable in the UI); the notification policy tree is never touched (the rules route to the
contact point themselves).

Environment (read here, in the style of stocktake/settings.py):

    STOCKTAKE_GRAFANA_URL          e.g. http://127.0.0.1:3000 (required)
    STOCKTAKE_GRAFANA_TOKEN        a service-account token, or
    STOCKTAKE_GRAFANA_USER / STOCKTAKE_GRAFANA_PASSWORD   basic auth
    STOCKTAKE_GRAFANA_TIMEOUT      seconds per request (default 10)
    STOCKTAKE_GRAFANA_CH_HOST / _PORT / _PROTOCOL / _SECURE / _USER / _PASSWORD / _DATABASE
                                   how Grafana reaches ClickHouse (the read-only user)
    STOCKTAKE_GRAFANA_WEBHOOK_URL    the contact point's webhook (a placeholder by default)
    STOCKTAKE_TOPIC_PREFIX         the deployment's topics (the ingest-stalled rule)
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from stocktake.grafana import alerts as A
from stocktake.grafana import dashboards as D
from stocktake.grafana.build import open_alerts_panel_id
from stocktake.grafana.clickhouse import DATASOURCE_UID, datasource


class SyncError(RuntimeError):
    """One line for the user: bad settings, Grafana unreachable or refusing."""


@dataclass(frozen=True)
class GrafanaTarget:
    url: str
    credential: str | tuple[str, str]
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GrafanaTarget:
        env = os.environ if env is None else env
        url = env.get("STOCKTAKE_GRAFANA_URL", "").strip().rstrip("/")
        if not url:
            raise SyncError("set STOCKTAKE_GRAFANA_URL (e.g. http://127.0.0.1:3000)")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SyncError(f"STOCKTAKE_GRAFANA_URL must be http(s)://host[:port], got {url!r}")
        token = env.get("STOCKTAKE_GRAFANA_TOKEN", "").strip()
        user, password = env.get("STOCKTAKE_GRAFANA_USER", ""), env.get("STOCKTAKE_GRAFANA_PASSWORD", "")
        if token and (user or password):
            raise SyncError("set either STOCKTAKE_GRAFANA_TOKEN or STOCKTAKE_GRAFANA_USER/_PASSWORD, not both")
        if not token and not (user and password):
            raise SyncError("set STOCKTAKE_GRAFANA_TOKEN, or STOCKTAKE_GRAFANA_USER and STOCKTAKE_GRAFANA_PASSWORD")
        try:
            timeout = float(env.get("STOCKTAKE_GRAFANA_TIMEOUT", "10"))
        except ValueError:
            raise SyncError("STOCKTAKE_GRAFANA_TIMEOUT must be a number of seconds") from None
        return cls(url, token or (user, password), timeout)


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def lines(self) -> list[str]:
        return ([f"created   {x}" for x in self.created] + [f"updated   {x}" for x in self.updated]
                + [f"unchanged {x}" for x in self.unchanged])


def _subset(ours: Any, theirs: Any) -> bool:
    """Every value we set is what Grafana has (Grafana adds fields of its own)."""
    if isinstance(ours, dict):
        return isinstance(theirs, dict) and all(k in theirs and _subset(v, theirs[k]) for k, v in ours.items())
    if isinstance(ours, list):
        return (isinstance(theirs, list) and len(ours) == len(theirs)
                and all(_subset(a, b) for a, b in zip(ours, theirs, strict=True)))
    if isinstance(ours, float | int) and isinstance(theirs, float | int) and not isinstance(ours, bool):
        return float(ours) == float(theirs)
    return bool(ours == theirs)


_DASHBOARD_VOLATILE = ("id", "version")


class Syncer:
    def __init__(self, api: Any, *, prefix: str, env: Mapping[str, str] | None = None, dry_run: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.api = api
        self.prefix = prefix
        self.env = os.environ if env is None else env
        self.dry_run = dry_run
        self.log = log or (lambda _line: None)
        self.report = Report()

    # -- helpers ---------------------------------------------------------------------------

    def _get(self, call: Callable[[], Any]) -> Any | None:
        """The object, or None when Grafana answers 404."""
        from grafana_client.client import GrafanaClientError
        try:
            return call()
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise

    def _write(self, what: str, existing: Any, call: Callable[[], Any]) -> None:
        (self.report.updated if existing is not None else self.report.created).append(what)
        self.log(f"{'would ' if self.dry_run else ''}{'update' if existing is not None else 'create'} {what}")
        if not self.dry_run:
            call()

    def _same(self, what: str) -> None:
        self.report.unchanged.append(what)

    # -- objects ---------------------------------------------------------------------------

    def folder(self) -> None:
        what = f"folder {A.FOLDER_UID}"
        have = self._get(lambda: self.api.folder.get_folder(A.FOLDER_UID))
        if have is None:
            self._write(what, None, lambda: self.api.folder.create_folder(A.FOLDER_TITLE, uid=A.FOLDER_UID))
        elif have.get("title") != A.FOLDER_TITLE:
            self._write(what, have, lambda: self.api.folder.update_folder(A.FOLDER_UID, title=A.FOLDER_TITLE,
                                                                          overwrite=True))
        else:
            self._same(what)

    def datasource(self) -> None:
        want = datasource(self.env)
        what = f"datasource {DATASOURCE_UID}"
        have = self._get(lambda: self.api.datasource.get_datasource_by_uid(DATASOURCE_UID))
        if have is None:
            self._write(what, None, lambda: self.api.datasource.create_datasource(want))
            return
        plain = {k: v for k, v in want.items() if k != "secureJsonData"}
        # Grafana never returns secrets: an unchanged password cannot be detected, a missing one can.
        has_password = bool((have.get("secureJsonFields") or {}).get("password"))
        wants_password = bool(want["secureJsonData"].get("password"))
        if _subset(plain, have) and (has_password or not wants_password):
            self._same(what)
        else:
            self._write(what, have, lambda: self.api.datasource.update_datasource_by_uid(DATASOURCE_UID, want))

    def dashboards(self) -> dict[str, dict[str, Any]]:
        built = D.build_all()
        for d in built.values():
            uid = d["uid"]
            what = f"dashboard {uid}"
            have = self._get(functools.partial(self.api.dashboard.get_dashboard, uid))
            if have is not None:
                stored = {k: v for k, v in (have.get("dashboard") or {}).items() if k not in _DASHBOARD_VOLATILE}
                same_folder = (have.get("meta") or {}).get("folderUid") == A.FOLDER_UID
                if same_folder and stored == d:
                    self._same(what)
                    continue
            body = {"dashboard": {**d, "id": None}, "folderUid": A.FOLDER_UID, "overwrite": True,
                    "message": "stocktake grafana sync"}
            self._write(what, have, functools.partial(self.api.dashboard.update_dashboard, body))
        return built

    def contact_point(self) -> None:
        url = self.env.get("STOCKTAKE_GRAFANA_WEBHOOK_URL", "").strip() or A.WEBHOOK_PLACEHOLDER
        want = A.contact_point(url)
        what = f"contact point {A.CONTACT_POINT}"
        found = self.api.alertingprovisioning.get_contactpoints(name=A.CONTACT_POINT) or []
        have = next((c for c in found if c.get("uid") == A.CONTACT_POINT or c.get("name") == A.CONTACT_POINT), None)
        if have is None:
            self._write(what, None, lambda: self.api.alertingprovisioning.create_contactpoint(
                want, disable_provenance=True))
        elif _subset({k: want[k] for k in ("name", "type", "settings")}, have):
            self._same(what)
        else:
            uid = have.get("uid") or A.CONTACT_POINT
            self._write(what, have, lambda: self.api.alertingprovisioning.update_contactpoint(
                uid, {**want, "uid": uid}, disable_provenance=True))

    def rule_group(self, built: dict[str, dict[str, Any]]) -> None:
        want = A.api_rule_group(self.prefix, open_alerts_panel_id(built))
        what = f"alert rule group {A.FOLDER_UID}/{A.GROUP} ({len(want['rules'])} rules)"
        have = self._get(lambda: self.api.alertingprovisioning.get_rule_group(A.FOLDER_UID, A.GROUP))
        if have is not None and _subset(want, have):
            self._same(what)
            return
        self._write(what, have, lambda: self.api.alertingprovisioning.update_rule_group(
            A.FOLDER_UID, A.GROUP, want, disable_provenance=True))

    def run(self) -> Report:
        self.folder()
        self.datasource()
        built = self.dashboards()
        self.contact_point()
        self.rule_group(built)
        return self.report


def connect(target: GrafanaTarget) -> Any:
    from grafana_client import GrafanaApi
    return GrafanaApi.from_url(target.url, credential=target.credential, timeout=target.timeout)


def sync(target: GrafanaTarget, *, prefix: str, env: Mapping[str, str] | None = None, dry_run: bool = False,
         log: Callable[[str], None] | None = None) -> Report:
    """Sync everything; Grafana's refusals and connection problems become one-line SyncErrors."""
    from grafana_client.client import (
        GrafanaBadInputError,
        GrafanaClientError,
        GrafanaException,
        GrafanaServerError,
        GrafanaTimeoutError,
        GrafanaUnauthorizedError,
    )
    from niquests.exceptions import RequestException
    try:
        return Syncer(connect(target), prefix=prefix, env=env, dry_run=dry_run, log=log).run()
    except RequestException as exc:   # connection refused, DNS, TLS: not wrapped by grafana-client
        raise SyncError(f"cannot reach Grafana at {target.url}: {_reason(exc)}") from None
    except GrafanaUnauthorizedError:
        raise SyncError(f"Grafana at {target.url} refused the credentials (401): check "
                        "STOCKTAKE_GRAFANA_TOKEN or STOCKTAKE_GRAFANA_USER/_PASSWORD") from None
    except GrafanaTimeoutError:
        raise SyncError(f"Grafana at {target.url} did not answer within {target.timeout:g}s") from None
    except (GrafanaBadInputError, GrafanaClientError, GrafanaServerError) as exc:
        raise SyncError(f"Grafana at {target.url} refused a change: {_first_line(exc)}") from None
    except GrafanaException as exc:
        raise SyncError(f"cannot reach Grafana at {target.url}: {_first_line(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return errno.group(0) if errno else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
