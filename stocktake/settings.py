"""One frozen settings object, read from ``STOCKTAKE_*`` environment variables.

Every field names its environment variable; command-line flags override the
environment; secrets in URLs are masked when printed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _env(name: str) -> dict[str, Any]:
    return {"env": name}


@dataclass(frozen=True)
class Settings:
    # Where things are. Empty kafka/clickhouse means "embedded": Tansu child
    # process and chDB under data_dir.
    kafka: str = field(default="", metadata=_env("STOCKTAKE_KAFKA"))
    clickhouse: str = field(default="", metadata=_env("STOCKTAKE_CLICKHOUSE"))
    data_dir: Path = field(default=Path(".stocktake"), metadata=_env("STOCKTAKE_DATA_DIR"))
    topic_prefix: str = field(default="stocktake", metadata=_env("STOCKTAKE_TOPIC_PREFIX"))
    partitions: int = field(default=4, metadata=_env("STOCKTAKE_PARTITIONS"))
    group_id: str = field(default="stocktake", metadata=_env("STOCKTAKE_GROUP_ID"))
    # Sink batching: one insert per partition when either bound is reached.
    batch_rows: int = field(default=20_000, metadata=_env("STOCKTAKE_BATCH_ROWS"))
    flush_interval_s: float = field(default=0.5, metadata=_env("STOCKTAKE_FLUSH_INTERVAL"))
    # Source-side duplicate window (event time) and its hard size bound.
    dedupe_window_s: float = field(default=3600.0, metadata=_env("STOCKTAKE_DEDUPE_WINDOW"))
    dedupe_max_keys: int = field(default=2_000_000, metadata=_env("STOCKTAKE_DEDUPE_MAX_KEYS"))
    # Inventory judgement (event time): lateness bound for "late" events, the
    # freshness a stream should keep, drift grace and vanish spans, and the
    # relative tolerance of amount vs quantity × catalog price.
    lateness_s: float = field(default=300.0, metadata=_env("STOCKTAKE_LATENESS"))
    freshness_target_s: float = field(default=300.0, metadata=_env("STOCKTAKE_FRESHNESS_TARGET"))
    drift_grace_s: float = field(default=300.0, metadata=_env("STOCKTAKE_DRIFT_GRACE"))
    field_vanish_after_s: float = field(default=3600.0, metadata=_env("STOCKTAKE_FIELD_VANISH_AFTER"))
    amount_tolerance: float = field(default=0.01, metadata=_env("STOCKTAKE_AMOUNT_TOLERANCE"))
    # Data-gap alerting: how often the detectors look, how long a minute of event
    # time stays open for stragglers, per-asset detector settings (TOML), webhook.
    gap_interval_s: float = field(default=2.0, metadata=_env("STOCKTAKE_GAP_INTERVAL"))
    minute_close_delay_s: float = field(default=30.0, metadata=_env("STOCKTAKE_MINUTE_CLOSE_DELAY"))
    gaps_config: str = field(default="", metadata=_env("STOCKTAKE_GAPS_CONFIG"))
    alert_webhook: str = field(default="", metadata=_env("STOCKTAKE_ALERT_WEBHOOK"))
    # In-stream scoring: on/off, ONNX Runtime device, where model versions live.
    scoring: bool = field(default=True, metadata=_env("STOCKTAKE_SCORING"))
    device: str = field(default="auto", metadata=_env("STOCKTAKE_DEVICE"))
    models_dir: str = field(default="", metadata=_env("STOCKTAKE_MODELS_DIR"))
    score_interval_s: float = field(default=0.5, metadata=_env("STOCKTAKE_SCORE_INTERVAL"))
    # The worker's HTTP API (inventory/query while it runs).
    http_host: str = field(default="127.0.0.1", metadata=_env("STOCKTAKE_HTTP_HOST"))
    http_port: int = field(default=0, metadata=_env("STOCKTAKE_HTTP_PORT"))
    log_level: str = field(default="WARNING", metadata=_env("STOCKTAKE_LOG_LEVEL"))
    # How long start-up retries an unreachable Kafka/ClickHouse before giving up.
    connect_timeout_s: float = field(default=30.0, metadata=_env("STOCKTAKE_CONNECT_TIMEOUT"))
    # Off only to test recovery: every stored record is then redelivered after a
    # crash and must be skipped by the ClickHouse watermark.
    commit_offsets: bool = field(default=True, metadata=_env("STOCKTAKE_COMMIT_OFFSETS"))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Defaults < environment < explicit overrides (flags). None overrides are ignored."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env_name = f.metadata["env"]
            if env_name in environ and environ[env_name] != "":
                values[f.name] = _coerce(f, environ[env_name], env_name)
        for name, value in overrides.items():
            if value is not None:
                values[name] = _coerce(_field(cls, name), value, f"--{name.replace('_', '-')}")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.partitions < 1:
            raise SettingsError(f"STOCKTAKE_PARTITIONS must be >= 1, got {self.partitions}")
        if self.batch_rows < 1:
            raise SettingsError(f"STOCKTAKE_BATCH_ROWS must be >= 1, got {self.batch_rows}")
        # `not x > 0` rather than `x <= 0`: NaN compares False both ways.
        if not 0 < self.flush_interval_s < math.inf:
            raise SettingsError("STOCKTAKE_FLUSH_INTERVAL must be a finite number > 0 (seconds)")
        if not 0 <= self.dedupe_window_s < math.inf:
            raise SettingsError("STOCKTAKE_DEDUPE_WINDOW must be a finite number >= 0 (seconds)")
        if self.device not in ("auto", "cuda", "cpu"):
            raise SettingsError(f"STOCKTAKE_DEVICE must be auto, cuda or cpu, got {self.device!r}")
        if not 0 < self.score_interval_s < math.inf:
            raise SettingsError("STOCKTAKE_SCORE_INTERVAL must be a finite number > 0 (seconds)")
        if not 0 < self.gap_interval_s < math.inf:
            raise SettingsError("STOCKTAKE_GAP_INTERVAL must be a finite number > 0 (seconds)")
        if self.alert_webhook and not re.match(r"^https?://", self.alert_webhook):
            raise SettingsError("STOCKTAKE_ALERT_WEBHOOK must be an http(s):// URL")
        for env_name, value in (("STOCKTAKE_LATENESS", self.lateness_s),
                                ("STOCKTAKE_MINUTE_CLOSE_DELAY", self.minute_close_delay_s),
                                ("STOCKTAKE_FRESHNESS_TARGET", self.freshness_target_s),
                                ("STOCKTAKE_DRIFT_GRACE", self.drift_grace_s),
                                ("STOCKTAKE_FIELD_VANISH_AFTER", self.field_vanish_after_s),
                                ("STOCKTAKE_AMOUNT_TOLERANCE", self.amount_tolerance)):
            if not 0 <= value < math.inf:
                raise SettingsError(f"{env_name} must be a finite number >= 0")
        if not 0 <= self.connect_timeout_s < math.inf:
            raise SettingsError("STOCKTAKE_CONNECT_TIMEOUT must be a finite number >= 0 (seconds)")
        if not 0 <= self.http_port <= 65535:
            raise SettingsError(f"STOCKTAKE_HTTP_PORT out of range: {self.http_port}")
        if self.clickhouse and not re.match(r"^(chdb|https?|clickhouse)://", self.clickhouse):
            raise SettingsError(
                "STOCKTAKE_CLICKHOUSE must be a chdb:///path or http(s)://user:pass@host:8123/db URL"
            )

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka

    @property
    def clickhouse_dsn(self) -> str:
        """The DSN given, or chDB under data_dir (absolute, as chDB requires)."""
        if self.clickhouse:
            return self.clickhouse
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    def topic(self, stream: str) -> str:
        return f"{self.topic_prefix}.{stream}"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter"

    @property
    def alerts_topic(self) -> str:
        return f"{self.topic_prefix}.alerts"

    @property
    def score_topics(self) -> tuple[str, str]:
        return f"{self.topic_prefix}.scores.users", f"{self.topic_prefix}.scores.products"

    def masked(self) -> dict[str, str]:
        """Printable view: passwords in URLs replaced by ***."""
        out = {}
        for f in dataclasses.fields(self):
            value = str(getattr(self, f.name))
            out[f.metadata["env"]] = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", value)
        return out


def _field(cls: type, name: str) -> dataclasses.Field[Any]:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise TypeError(f"unknown setting {name!r}")


def _coerce(f: dataclasses.Field[Any], value: Any, origin: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return text in {"1", "true", "yes", "on"}
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "Path":
            return Path(value)
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{origin}: expected {kind}, got {value!r}") from None
