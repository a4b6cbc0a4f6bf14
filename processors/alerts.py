"""The alert value: one state of one data-gap alert, as the detectors emit it.

An alert is identified by ``alert_id`` and keyed, while open, by (asset, kind,
subject): ``subject`` tells apart the alerts of one kind on one asset (the
clock of a silence, the field of a completeness drop, ``field:drift`` of a
schema drift). Each transition (firing, resolved, or a new owner's takeover)
is a new value with ``version`` one higher; times are epoch milliseconds.
The topic's JSON and the table's row are built from it in services/alerting.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["firing", "resolved"]


@dataclass(frozen=True)
class Alert:
    alert_id: str
    asset: str
    kind: str              # silence | volume_drop | volume_spike | completeness_drop | orphan_spike | schema_drift
    subject: str
    severity: str          # info | warning | critical
    state: State
    clock: str             # event | wall: which clock judged it
    opened_at: int
    resolved_at: int | None
    reason: str
    expected: float | None
    observed: float | None
    evidence_from: int
    evidence_to: int
    details: Mapping[str, Any]   # the evidence: model, test, inhibited_by, ...
    version: int = 1

    @property
    def key(self) -> tuple[str, str, str]:
        """One open alert per key."""
        return self.asset, self.kind, self.subject

    @property
    def inhibited_by(self) -> str | None:
        """The alert id of its stream's open alert of the same kind: part of that incident, no page."""
        return self.details.get("inhibited_by") or None

    def resolved(self, at_ms: int, reason: str, observed: float | None) -> Alert:
        return dataclasses.replace(self, state="resolved", resolved_at=at_ms, reason=reason,
                                   observed=observed, version=self.version + 1)
