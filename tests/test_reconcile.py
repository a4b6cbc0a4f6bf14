"""`stocktake reconcile` on the REES46 sample through the real pipeline (Tansu, the worker,
chDB): the rollups equal a recount of the raw events and Kafka's offsets equal the stored
coordinates; each tampering (a stray rollup row, a coordinate stored twice) is reported as
exactly that difference, where it is, with a non-zero exit through the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest

from stocktake import sources
from stocktake.clickhouse.store import Store
from stocktake.services import reconcile
from stocktake.settings import Settings
from stocktake.streams.runtime import Runtime, wait_until_assigned
from stocktake.tools import replay
from tests.pipeline_helpers import expected_counts, retopic, run_pipeline, wait_rows

MINUTE_MS = 60_000

# The command as a user runs it, in a child process.
_CLI = "import sys\nfrom stocktake.cli import main\nsys.exit(main(sys.argv[1:]))"


def reconcile_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, "reconcile", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, timeout=120)


def rees46_messages(prefix: str) -> list[replay.Message]:
    return retopic(list(replay.to_messages(sources.load_events("rees46"), envelope=50,
                                           faults={"duplicates": 0.02, "malformed": 0.01})), prefix)


def events_of(messages: list[replay.Message], stream: str) -> list[tuple[dict[str, Any], str]]:
    """(event, message kind) of every well-formed message of ``stream``, duplicates included."""
    out: list[tuple[dict[str, Any], str]] = []
    for m in messages:
        if m.kind != "malformed" and m.topic.endswith("." + stream):
            decoded = orjson.loads(m.value)
            out.extend((e, m.kind) for e in (decoded if isinstance(decoded, list) else [decoded]))
    return out


def minute_ms(event: dict[str, Any]) -> int:
    ts = sources.ts_seconds(event["ts"])
    assert ts is not None
    return int(ts * 1000) // MINUTE_MS * MINUTE_MS


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def where(difference: dict[str, Any]) -> tuple[Any, ...]:
    if difference["check"] == "partition":
        return ("partition", difference["topic"], difference["partition"], difference["what"])
    return (difference["check"], difference["asset"], difference["minute"], difference["what"])


def check(doc: dict[str, Any], rollup: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["rollup"] == rollup)


def per_asset(doc: dict[str, Any], rollup: str) -> dict[str, dict[str, Any]]:
    return {a["asset"]: a for a in check(doc, rollup)["assets"]}


# ------------------------------------------------------------------ one stored sample


@pytest.fixture(scope="module")
def stored(broker, store: Store, store_dsn: str, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Settings, list[replay.Message]]:  # type: ignore[no-untyped-def]
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env({}, data_dir=tmp_path_factory.mktemp("reconcile"), topic_prefix=prefix,
                                 group_id=prefix, partitions=3, flush_interval_s=0.2, clickhouse=store_dsn,
                                 scoring=False, raw_retention_s=0)  # no TTL on the shared store
    messages = rees46_messages(prefix)
    run_pipeline(broker, store, settings, messages)
    return settings, messages


@pytest.mark.integration
def test_the_stored_rees46_sample_reconciles_with_the_rollups_and_kafka(broker, store, stored):  # type: ignore[no-untyped-def]
    settings, messages = stored
    doc = reconcile.reconcile_sync(store, settings, bootstrap=broker.bootstrap)
    assert doc["differences"] == [] and doc["ok"] is True
    assert doc["kafka"]["error"] is None
    # Every stored event was recounted from the raw log, per stream, nothing skipped.
    want = Counter[str]()
    for (stream, _status), n in expected_counts(messages).items():
        want[stream] += n
    assets = per_asset(doc, "asset_minute_rollup")
    assert {s: assets[s]["recounted"] for s in want} == dict(want)
    for name in ("asset_minute_rollup", "field_minute_rollup"):
        assert check(doc, name)["minutes_checked"] > 0 and check(doc, name)["minutes_skipped"] == 0
    assert {c["rollup"] for c in doc["checks"]} >= {"asset_rollup", "field_rollup"}  # the all-time ones too
    # Per partition: one stored message per Kafka offset, all committed, nothing pending.
    messages_by_topic = Counter(m.topic for m in messages)
    stored_by_topic: Counter[str] = Counter()
    for p in doc["partitions"]:
        assert p["state"] == "ok", p
        if p["stored"] is None:
            assert p["kafka"]["log_end"] == p["kafka"]["log_start"] == 0
            continue
        span = p["stored"]["offset_max"] - p["stored"]["offset_min"] + 1
        assert p["stored"]["messages"] == span == p["kafka"]["log_end"] == p["kafka"]["committed"]
        assert p["retained"]["coordinates"] == p["retained"]["rows"] == p["stored"]["rows"]
        stored_by_topic[p["topic"]] += p["stored"]["messages"]
    assert stored_by_topic == messages_by_topic


@pytest.mark.integration
def test_a_window_recounts_only_its_minutes(store, stored):  # type: ignore[no-untyped-def]
    settings, messages = stored
    behaviour = events_of(messages, "behaviour")
    first = min(minute_ms(e) for e, _ in behaviour)
    start, end = first + 10 * MINUTE_MS, first + 20 * MINUTE_MS
    inside = [e for e, _ in behaviour if start <= minute_ms(e) < end]
    assert inside and len(inside) < len(behaviour)
    doc = reconcile.reconcile_sync(store, settings, reconcile.window(iso(start), iso(end - 30_000)))
    assert doc["ok"] and doc["window"] == {"from": iso(start), "to": iso(end)}
    assets = per_asset(doc, "asset_minute_rollup")
    assert assets["behaviour"]["minutes_checked"] == len({minute_ms(e) for e in inside})
    assert assets["behaviour"]["recounted"] == len(inside)
    assert {c["rollup"] for c in doc["checks"]} == {"asset_minute_rollup", "field_minute_rollup"}


@pytest.mark.integration
def test_minutes_whose_raw_events_may_have_expired_are_skipped_not_different(store, stored):  # type: ignore[no-untyped-def]
    settings, _ = stored
    now = reconcile.reconcile_sync(store, settings)
    kept_a_week = settings.model_copy(update={"raw_retention_s": 7 * 86_400.0})
    later = reconcile.reconcile_sync(store, kept_a_week, now_ms=int(time.time() * 1000) + 30 * 86_400_000)
    assert later["raw_retention_s"] > 0 and later["ok"] and later["differences"] == []
    minutes = check(now, "asset_minute_rollup")
    assert check(later, "asset_minute_rollup")["minutes_checked"] == 0
    assert check(later, "asset_minute_rollup")["minutes_skipped"] == minutes["minutes_checked"] > 0
    assert all("not recounted" in " ".join(p["notes"]) for p in later["partitions"] if p["stored"])


@pytest.mark.integration
def test_unreachable_kafka_is_one_line_and_the_store_is_still_checked(store, stored):  # type: ignore[no-untyped-def]
    settings, _ = stored
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    doc = reconcile.reconcile_sync(store, settings, bootstrap=f"127.0.0.1:{port}")
    error = doc["kafka"]["error"]
    assert error.startswith(f"cannot read offsets from Kafka at 127.0.0.1:{port}: ") and "\n" not in error
    assert doc["ok"] and check(doc, "asset_minute_rollup")["minutes_checked"] > 0
    assert doc["partitions"] and all(p["kafka"] is None for p in doc["partitions"])


# ------------------------------------------------------------------ tampering, through the CLI


def _stray_rollup_row(store: Store, topic: str) -> tuple[int, int, str]:
    """One more event in a minute of behaviour/event_type=view, in the minute rollup only:
    (minute ms, events the rollup had, the key's source)."""
    (minute, n, source), = store.rows(
        "SELECT toUnixTimestamp(minute) * 1000, sum(n), source FROM asset_minute_rollup "
        "WHERE topic = {t:String} AND asset = 'behaviour/event_type=view' AND status = 'valid' "
        "GROUP BY minute, source ORDER BY minute LIMIT 1", {"t": topic})
    store.command(
        "INSERT INTO asset_minute_rollup (topic, stream, asset, minute, source, status, reason, n, ts_min, ts_max, "
        "ingest_min, ingest_max) SELECT topic, stream, asset, minute, source, status, reason, 1, min(ts_min), "
        "max(ts_max), min(ingest_min), max(ingest_max) FROM asset_minute_rollup WHERE topic = {t:String} "
        "AND asset = 'behaviour/event_type=view' AND status = 'valid' AND minute = toDateTime({m:UInt32}, 'UTC') "
        "GROUP BY topic, stream, asset, minute, source, status, reason",
        {"t": topic, "m": int(minute) // 1000})
    return int(minute), int(n), str(source)


def _coordinate_stored_twice(store: Store, topic: str) -> tuple[int, int, int]:
    """A second copy of one row of an envelope: (partition, offset, idx)."""
    (partition, offset), = store.rows("SELECT partition, min(offset) FROM ingest_log WHERE topic = {t:String} "
                                      "AND idx = 3 GROUP BY partition ORDER BY partition LIMIT 1", {"t": topic})
    store.command("INSERT INTO ingest_log SELECT * FROM ingest_log WHERE topic = {t:String} "
                  "AND partition = {p:UInt32} AND offset = {o:UInt64} AND idx = 3",
                  {"t": topic, "p": int(partition), "o": int(offset)})
    return int(partition), int(offset), 3


def _tamper_and_reconcile(store: Store, settings: Settings, messages: list[replay.Message]) -> None:
    data_dir = str(settings.data_dir)
    clean = reconcile_cli("--json", "--data-dir", data_dir)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["differences"] == []

    topic = settings.topic("behaviour")
    minute, n, source = _stray_rollup_row(store, topic)
    views = [e for e, kind in events_of(messages, "behaviour")
             if kind != "duplicate" and e["event_type"] == "view" and minute_ms(e) == minute]
    assert len(views) == n  # the rollup was right before
    minute_diff = ("asset minutes", "behaviour/event_type=view", iso(minute), f"n: rollup {n + 1:,}, raw events {n:,}")
    (total,), = store.rows("SELECT sum(n) FROM asset_rollup WHERE topic = {t:String} AND "
                           "asset = 'behaviour/event_type=view' AND status = 'valid'", {"t": topic})
    all_time_diff = ("assets all time", "behaviour/event_type=view", None,
                     f"n: rollup {int(total):,}, asset_minute_rollup {int(total) + 1:,}")
    one = reconcile_cli("--json", "--data-dir", data_dir)
    assert one.returncode == 1, one.stderr
    assert sorted(map(where, json.loads(one.stdout)["differences"])) == sorted([minute_diff, all_time_diff])
    # Within a window the all-time rollups are not compared: the minute alone.
    windowed = reconcile_cli("--json", "--data-dir", data_dir, "--from", iso(minute), "--to", iso(minute + 1000))
    assert windowed.returncode == 1, windowed.stderr
    assert [where(d) for d in json.loads(windowed.stdout)["differences"]] == [minute_diff]

    # A product row: the behaviour rollups, tampered above, stay as they are.
    product = settings.topic("product")
    partition, offset, idx = _coordinate_stored_twice(store, product)
    twice = ("partition", product, partition, f"counted twice: 1 rows repeat a stored coordinate "
                                            f"(offset {offset} idx {idx} ×2)")
    two = reconcile_cli("--json", "--data-dir", data_dir)
    assert two.returncode == 1, two.stderr
    assert sorted(map(where, json.loads(two.stdout)["differences"]), key=str) == sorted(
        [minute_diff, all_time_diff, twice], key=str)

    text = reconcile_cli("--data-dir", data_dir)
    assert text.returncode == 1, text.stderr
    lines = text.stdout.splitlines()
    assert f"✗ asset minutes · behaviour/event_type=view · {iso(minute)} · source={source} status=valid: " \
           f"n: rollup {n + 1:,}, raw events {n:,}" in lines
    assert f"✗ partition · {product}[{partition}]: {twice[3]}" in lines
    assert lines[-1].startswith("3 differences")


@pytest.mark.integration
def test_each_tampering_is_named_where_it_is_and_exits_non_zero(broker, store, make_settings):  # type: ignore[no-untyped-def]
    """The worker runs (its store is held), so the command asks it: /api/reconcile."""
    settings = make_settings()
    messages = rees46_messages(settings.topic_prefix)

    async def scenario() -> None:
        runtime = Runtime(settings, store=store, bootstrap=broker.bootstrap).open()
        _app, sink = await runtime.start_worker(web=True)
        try:
            await wait_until_assigned([sink], settings.partitions)
            await asyncio.to_thread(replay.produce, broker.bootstrap, messages)
            want = sum(max(m.events, 1) for m in messages)
            assert await wait_rows(store, settings.topic_prefix, want) == want
            await asyncio.to_thread(_tamper_and_reconcile, store, settings, messages)
        finally:
            await runtime.stop_all()
            runtime.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------ the command's own errors


def test_without_a_store_or_with_a_bad_time_it_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = reconcile_cli("--data-dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no store" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = reconcile_cli("--data-dir", str(tmp_path), "--from", "yesterdayish")
    assert bad.returncode == 2 and "--from" in bad.stderr and "yesterdayish" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    backwards = reconcile_cli("--data-dir", str(tmp_path), "--from", "-1h", "--to", "-2h")
    assert backwards.returncode == 2 and "--from must be before --to" in backwards.stderr
