"""One frozen settings object, read from ``STOCKTAKE_*`` environment variables.

Every field names its environment variable (``STOCKTAKE_`` + the field name, or the alias
given beside it); command-line flags override the environment; secrets in URLs are masked
when printed. ``Settings()`` is the defaults (dashboards are built from them);
``Settings.from_env()`` reads the environment.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from stocktake.paths import DEFAULT_DATA_DIR, ENV_PREFIX


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


# " On " in an environment file means on; pydantic's bool parser does not strip.
Switch = Annotated[bool, BeforeValidator(_stripped)]
# NonNegative and other judgement bounds: finite, never negative (NaN and inf are refused).
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Similarity = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]   # a cosine


def _env(name: str) -> Any:
    """A field whose variable is not STOCKTAKE_<field name> (the _s suffix is left out)."""
    return Field(validation_alias=ENV_PREFIX + name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", env_ignore_empty=True,
        validate_by_name=True, coerce_numbers_to_str=True,
    )

    # Where things are. Empty kafka/clickhouse means "embedded": Tansu child
    # process and chDB under data_dir.
    kafka: str = ""
    clickhouse: str = ""
    # A cluster of ClickHouse servers (remote_servers) to run the store's DDL on, replicated
    # (clickhouse/cluster.py); empty: one server, or the embedded chDB.
    clickhouse_cluster: str = ""
    data_dir: Path = DEFAULT_DATA_DIR
    topic_prefix: str = "stocktake"
    # Topic discovery: the worker consumes every topic under the prefix (PREFIX.NAME is the
    # stream NAME) but stocktake's own outputs (own_topics), plus every topic one of these
    # comma-separated regexes matches whole (one outside the prefix is the stream named by the
    # whole topic name). Topics created later are found within discovery_interval_s (+ a rejoin).
    topics: str = ""
    discovery_interval_s: Annotated[Positive, _env("DISCOVERY_INTERVAL")] = 5.0
    # Dead letters (PREFIX.deadletter) carry at most this many bytes of the failing event; a
    # longer one is cut and names the whole (stocktake.truncated/original_bytes/sha256 headers).
    # The producer refuses requests over 1,000,000 bytes: the bound leaves room for key/headers.
    deadletter_max_bytes: int = Field(default=512 * 1024, ge=1024, le=960_000)
    partitions: int = Field(default=4, ge=1)
    group_id: str = "stocktake"
    # Sink batching: an insert when a partition holds batch_rows events, when a buffer's oldest
    # event has waited flush_interval_s, or when no insert is in flight and the buffers hold
    # flush_idle_rows events in all (0: off). An insert's views cost 50-115 ms whatever its
    # rows: below flush_idle_rows a flush waits for the interval, so a trickle pays that cost
    # twice a second at most.
    batch_rows: int = Field(default=20_000, ge=1)
    flush_interval_s: Annotated[Positive, _env("FLUSH_INTERVAL")] = 0.5
    flush_idle_rows: int = Field(default=4_000, ge=0)
    # Source-side duplicate window (event time) and its hard size bound.
    dedupe_window_s: Annotated[NonNegative, _env("DEDUPE_WINDOW")] = 3600.0
    dedupe_max_keys: int = 2_000_000
    # A directory of data contracts (TOML, one per stream) added to or replacing the shipped
    # ones; re-read when a file in it changes.
    contracts: str = ""
    # Inventory judgement (event time): lateness bound for "late" events, the
    # freshness a stream should keep, drift grace and vanish spans, and the
    # relative tolerance of amount vs quantity × catalog price.
    lateness_s: Annotated[NonNegative, _env("LATENESS")] = 300.0
    freshness_target_s: Annotated[NonNegative, _env("FRESHNESS_TARGET")] = 300.0
    drift_grace_s: Annotated[NonNegative, _env("DRIFT_GRACE")] = 300.0
    field_vanish_after_s: Annotated[NonNegative, _env("FIELD_VANISH_AFTER")] = 3600.0
    amount_tolerance: NonNegative = 0.01
    # How long ingest_log keeps raw events (ingest time; 0 = forever). The inventory keeps its
    # whole history in the rollups; raw events serve drill-downs and `stocktake reconcile`.
    raw_retention_s: Annotated[NonNegative, _env("RAW_RETENTION")] = 7 * 86400.0
    # Data-gap alerting: how often the detectors look, how long a minute of event
    # time stays open for stragglers, per-asset detector settings (TOML), webhook.
    gap_interval_s: Annotated[Positive, _env("GAP_INTERVAL")] = 2.0
    minute_close_delay_s: Annotated[NonNegative, _env("MINUTE_CLOSE_DELAY")] = 30.0
    # A partition that ingested nothing for this long no longer holds back the event-time
    # watermark (Flink's idleness): the low watermark is the minimum over the others.
    watermark_idle_s: Annotated[Positive, _env("WATERMARK_IDLE")] = 30.0
    gaps_config: str = ""
    alert_webhook: str = ""
    # Pages go through an outbox (services/outbox.py): each POST waits at most the timeout and
    # is retried with backoff until delivered, refused (4xx), max attempts or max age; beyond
    # max pending the oldest are dropped. The secret signs each POST (HMAC-SHA256, README).
    alert_webhook_secret: SecretStr = SecretStr("")
    alert_webhook_timeout_s: Annotated[Positive, _env("ALERT_WEBHOOK_TIMEOUT")] = 5.0
    alert_page_max_attempts: int = Field(default=100, ge=1)
    alert_page_max_age_s: Annotated[Positive, _env("ALERT_PAGE_MAX_AGE")] = 6 * 3600.0
    alert_outbox_max_pending: int = Field(default=1000, ge=1)
    # In-stream scoring: on/off, ONNX Runtime device, where model versions live.
    scoring: Switch = True
    # With scoring: product text encoded in the worker (all-MiniLM-L6-v2), off the ingest path.
    text_encoder: Switch = True
    device: Literal["auto", "cuda", "cpu"] = "auto"
    models_dir: str = ""
    score_interval_s: Annotated[Positive, _env("SCORE_INTERVAL")] = 0.5
    # With the text encoder: catalog findings from its vectors (services/catalog.py). Different
    # products whose texts are at least this similar (cosine) are likely duplicates; a text with
    # at least NEIGHBOURS other texts within INDISTINCT_SIMILARITY is indistinct; a product whose
    # text is less similar than MISMATCH_SIMILARITY to its category's centroid (categories of at
    # least MIN_CATEGORY products) is a category mismatch. At most MAX_PRODUCTS are held (the
    # least recently added go first).
    catalog_duplicate_similarity: Similarity = 0.97
    catalog_indistinct_similarity: Similarity = 0.90
    catalog_indistinct_neighbours: int = Field(default=5, ge=1)
    catalog_mismatch_similarity: Similarity = 0.5
    catalog_min_category: int = Field(default=20, ge=2)
    catalog_max_products: int = Field(default=1_000_000, ge=1)
    # The scorer folds stored events in event-time order: a partition silent this long stops
    # holding that order back. Its features are snapshotted into the store this often.
    score_idle_s: Annotated[Positive, _env("SCORE_IDLE")] = 5.0
    score_snapshot_interval_s: Annotated[Positive, _env("SCORE_SNAPSHOT_INTERVAL")] = 60.0
    # The worker's HTTP API (inventory/query while it runs).
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    # `stocktake query` and POST /api/query: read-only, and bounded in time and result size.
    query_timeout_s: Annotated[Positive, _env("QUERY_TIMEOUT")] = 30.0
    query_max_rows: int = Field(default=100_000, ge=1)
    query_max_bytes: int = Field(default=64 * 2**20, ge=1)
    # GET /api/health calls the worker stalled when events wait on its partitions and nothing
    # has been stored for this long.
    stall_after_s: Annotated[Positive, _env("STALL_AFTER")] = 60.0
    log_level: str = "WARNING"
    # How long start-up retries an unreachable Kafka/ClickHouse before giving up.
    connect_timeout_s: Annotated[NonNegative, _env("CONNECT_TIMEOUT")] = 30.0
    # Off only to test recovery: every stored record is then redelivered after a
    # crash and must be skipped by the ClickHouse watermark.
    commit_offsets: Switch = True

    @field_validator("alert_webhook")
    @classmethod
    def _webhook_is_http(cls, value: str) -> str:
        if value and not re.match(r"^https?://", value):
            raise ValueError("must be an http(s):// URL")
        return value

    @field_validator("topics")
    @classmethod
    def _topics_are_regexes(cls, value: str) -> str:
        for pattern in split_patterns(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        try:
            re.compile(_subscription_regex("p.", (), split_patterns(value), ()))
        except re.error as exc:  # e.g. a group name used twice: the patterns are joined in one
            raise ValueError(f"the patterns cannot be combined in one regular expression ({exc})") from None
        return value

    @field_validator("clickhouse_cluster")
    @classmethod
    def _cluster_is_a_name(cls, value: str) -> str:
        if value and not re.match(r"^[A-Za-z_][\w-]*$", value):
            raise ValueError("must be a cluster name of the servers' remote_servers (letters, digits, _ and -)")
        return value

    @field_validator("clickhouse")
    @classmethod
    def _clickhouse_is_a_dsn(cls, value: str) -> str:
        if value and not re.match(r"^(chdb|https?|clickhouse)://", value):
            raise ValueError("must be a chdb:///path or http(s)://user:pass@host:8123/db URL")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the constructor is given: from_env reads the environment it is handed,
        # and Settings() stays the documented defaults whatever the process environment says.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults < environment < explicit overrides (flags). None overrides are ignored."""
        for name in overrides:
            if name not in cls.model_fields:
                raise TypeError(f"unknown setting {name!r}")
        flags = {name: value for name, value in overrides.items() if value is not None}
        field_by_env = {cls.env_name(name): name for name in cls.model_fields}
        from_environ = {field_by_env.get(key, key): value for key, value in
                        _EnvironSource(cls, os.environ if environ is None else environ)().items()}
        try:
            return cls(**{**from_environ, **flags})
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, flags)) from None

    @classmethod
    def env_name(cls, field: str) -> str:
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka

    @property
    def clickhouse_dsn(self) -> str:
        """The DSN given, or chDB under data_dir (absolute, as chDB requires)."""
        if self.clickhouse:
            return self.clickhouse
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def model_registry(self) -> Path:
        """Where model versions live: STOCKTAKE_MODELS_DIR, or models/ under data_dir."""
        return Path(self.models_dir) if self.models_dir else self.data_dir / "models"

    @property
    def topic_dot_prefix(self) -> str:
        """What every topic of this deployment starts with, e.g. ``stocktake.``."""
        return self.topic_prefix + "."

    def topic(self, stream: str) -> str:
        return self.topic_dot_prefix + stream

    @property
    def deadletter_topic(self) -> str:
        return self.topic("deadletter")

    @property
    def alerts_topic(self) -> str:
        return self.topic("alerts")

    @property
    def score_topics(self) -> tuple[str, str]:
        return self.topic("scores.users"), self.topic("scores.products")

    @property
    def contracts_dir(self) -> Path | None:
        """STOCKTAKE_CONTRACTS as a directory (None: the shipped contracts alone)."""
        return Path(self.contracts) if self.contracts else None

    @property
    def own_topics(self) -> frozenset[str]:
        """The topics stocktake itself produces: never consumed as streams."""
        return frozenset((self.deadletter_topic, self.alerts_topic, *self.score_topics))

    @property
    def topic_patterns(self) -> tuple[re.Pattern[str], ...]:
        """STOCKTAKE_TOPICS, compiled: each must match a topic's whole name."""
        return _compiled(self.topics)

    def stream_of(self, topic: str) -> str | None:
        """The stream a topic carries, or None when the worker does not consume it. THE rule
        (use it wherever a topic is mapped to a stream): ``PREFIX.NAME`` is the stream ``NAME``,
        except stocktake's own outputs (own_topics); a topic outside the prefix that a
        STOCKTAKE_TOPICS pattern matches whole is the stream named by the whole topic name
        (Kafka's internal ``__*`` topics never are)."""
        if topic in self.own_topics:
            return None
        prefix = self.topic_dot_prefix
        if topic.startswith(prefix):
            return topic[len(prefix):] or None
        if topic.startswith("__"):
            return None
        return topic if any(p.fullmatch(topic) for p in self.topic_patterns) else None

    def subscription_pattern(self, also: Iterable[str] = ()) -> str:
        """One regex (the consumer subscribes by pattern) matching exactly the topics
        stream_of names, and the topics ``also`` (Faust's own, by name)."""
        return _subscription_regex(self.topic_dot_prefix, sorted(self.own_topics), split_patterns(self.topics),
                                   sorted(also))

    def masked(self) -> dict[str, str]:
        """Printable view, keyed by environment variable: passwords in URLs replaced by ***."""
        return {self.env_name(name): mask_url(str(getattr(self, name))) for name in type(self).model_fields}


def split_patterns(text: str) -> list[str]:
    """Comma-separated regexes -> the regexes. A comma inside brackets, braces or parentheses
    or after a backslash belongs to its regex (``a{1,3}`` stays one); blanks are dropped."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    escaped = in_class = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "({":
            depth += 1
        elif char in ")}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


@functools.lru_cache(maxsize=64)
def _compiled(text: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in split_patterns(text))


def _subscription_regex(prefix: str, own: Iterable[str], patterns: Iterable[str], also: Iterable[str]) -> str:
    """stream_of as one regex: (Faust's topics) or (not an own topic and (under the prefix with
    a name, or not ``__*`` and matched whole by a pattern))."""
    ours = [re.escape(prefix) + ".+"]
    extra = [f"(?:{p})" for p in patterns]
    if extra:
        ours.append("(?!__)(?:" + "|".join(extra) + ")")
    own_names = "|".join(re.escape(t) for t in own)
    regex = ("(?!(?:" + own_names + ")$)" if own_names else "") + "(?:" + "|".join(ours) + ")"
    names = [re.escape(t) for t in also]
    return "^(?:" + "|".join([*names, regex]) + ")$"


def mask_url(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", text)


class _EnvironSource(EnvSettingsSource):
    """The STOCKTAKE_* variables of a given mapping: os.environ, or a test's own dict.
    pydantic-settings reads os.environ only; its .env source overrides the same hook."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _one_line(exc: ValidationError, flags: Mapping[str, Any]) -> str:
    """The first problem, named as the user wrote it: --flag-name or STOCKTAKE_VARIABLE."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    origin = f"--{field.replace('_', '-')}" if field in flags else Settings.env_name(field)
    message = error["msg"].removeprefix("Value error, ")
    return f"{origin}: {message[:1].lower()}{message[1:]}, got {mask_url(str(error['input']))!r}"
