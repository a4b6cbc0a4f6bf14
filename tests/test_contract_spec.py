"""Data contracts as files (issue #13): processors/contract_spec.py reads TOML into a Contract
(one clear line per mistake), writes it back (to_toml), and ContractBook keeps each stream's
contract current as its file changes; processors/contract.py judges under it: `warn` checks
keep an event valid and record their code, `reject` ones dead-letter it, and a stream without
a contract is judged schemaless. Judging under the shipped contract v1 in detail:
tests/test_contract.py. Pure: no broker, no store.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stocktake.clickhouse.rows import ingest_log_table
from stocktake.processors.contract import (
    MAX_ID_CHARS,
    SCHEMALESS,
    TIME_FIELDS,
    Contract,
    Event,
    normalize,
    schemaless,
)
from stocktake.processors.contract_spec import (
    SHIPPED_DIR,
    ContractBook,
    ContractError,
    check_file,
    contract_rows,
    load,
    parse_contract,
    read_contract,
    shipped,
    to_toml,
)
from stocktake.processors.decode import Rejected
from stocktake.processors.dedupe import DedupeWindow
from stocktake.processors.judge import COLUMNS, Judged, Record, judge_batch

T0 = 1569888000000  # 2019-10-01T00:00:00Z
INGEST_MS = T0 + 3_600_000
KAFKA_MS = T0 + 60_000  # a record's Kafka timestamp
MAX_MS = 4_133_980_800_000  # event times are in 1970..2100
HEAD = 'stream = "clicks"\nversion = "1"\n'
NO_PRODUCT = "missing_field:product_id@product_events_name_the_product"
NO_QUERY = "missing_field:query@searches_carry_the_query"


def errors_of(text: str, origin: str = "my/clicks.toml") -> list[str]:
    with pytest.raises(ContractError) as exc:
        parse_contract(text, origin)
    errors = exc.value.errors
    assert errors and str(exc.value) == "; ".join(errors)
    return errors


def judged(contract: Contract, *records: Record, window: DedupeWindow | None = None) -> Judged:
    j = judge_batch(contract, f"stocktake.{contract.stream}", 0, list(records),
                    window if window is not None else DedupeWindow(3_600_000, 1000), INGEST_MS)
    ingest_log_table(j.columns)  # every row fits the store's columns
    return j


def rec(offset: int, *events: Any, ts: int | None = None) -> Record:
    value = orjson.dumps(events[0]) if len(events) == 1 else orjson.dumps(list(events))
    return Record(offset, None, value, ts)


# ------------------------------------------------------------------ (a) mistakes in a contract file

# Each kind of mistake: the file's text, the key the error must name, a word of its message.
MISTAKES: dict[str, tuple[str, str, str]] = {
    "unknown top-level key": (HEAD + "colour = 'red'\n", "colour", "unknown key"),
    "unknown field key": (HEAD + "[fields.a]\ncolour = 'red'\n", "fields.a", "unknown key 'colour'"),
    "bad type": (HEAD + '[fields.a]\ntype = "float"\n', "fields.a", "type 'float'"),
    "bad severity": (HEAD + '[fields.a]\nseverity = "loud"\n', "fields.a", "severity 'loud'"),
    "bad role": (HEAD + '[fields.a]\nrole = "boss"\n', "fields.a", "role 'boss'"),
    "role with the wrong type": (HEAD + '[fields.a]\ntype = "number"\nrole = "time"\n', "fields.a",
                                 "role 'time' needs type timestamp"),
    "duplicate role": (HEAD + '[fields.a]\ntype = "id"\nrole = "user_id"\n[fields.b]\ntype = "id"\n'
                              'role = "user_id"\n', "fields.b.role", "already the role of 'a'"),
    "role on a conditional field": (HEAD + '[fields.k]\n[fields.a]\ntype = "id"\nrole = "user_id"\n'
                                           'when = { k = ["x"] }\n', "fields.a", "cannot be conditional"),
    "enum on a non-string": (HEAD + '[fields.a]\ntype = "number"\nenum = ["1"]\n', "fields.a", "enum"),
    "enum of non-strings": (HEAD + '[fields.a]\ntype = "string"\nenum = [1, 2]\n', "fields.a", "enum"),
    "enum not as stored": (HEAD + '[fields.a]\ntype = "string"\ncase = "lower"\nenum = ["View"]\n', "fields.a",
                           "enum values"),
    "bad case": (HEAD + '[fields.a]\ntype = "string"\ncase = "upper"\n', "fields.a", "case"),
    "pattern that does not compile": (HEAD + '[fields.a]\ntype = "string"\npattern = "[a-"\n', "fields.a",
                                      "pattern does not compile"),
    "pattern on a number": (HEAD + '[fields.a]\ntype = "number"\npattern = "1"\n', "fields.a", "pattern"),
    "min above max": (HEAD + '[fields.a]\ntype = "number"\nmin = 5\nmax = 1\n', "fields.a", "min is above max"),
    "min not a number": (HEAD + '[fields.a]\ntype = "number"\nmin = "0"\n', "fields.a", "min must be a number"),
    "bound on a string": (HEAD + '[fields.a]\ntype = "string"\nmax = 3\n', "fields.a", "max applies to"),
    "required not a boolean": (HEAD + '[fields.a]\nrequired = "yes"\n', "fields.a", "required must be"),
    "bad max_length": (HEAD + '[fields.a]\ntype = "string"\nmax_length = 0\n', "fields.a", "max_length"),
    "field not a table": (HEAD + "[fields]\na = 3\n", "fields.a", "must be a table"),
    "fields not a table": (HEAD + "fields = 3\n", "fields", "must be a table"),
    "field when naming an unknown field": (HEAD + '[fields.a]\nwhen = { nope = ["x"] }\n', "fields.a.when",
                                           "'nope'"),
    "field when not a table of lists": (HEAD + '[fields.a]\nwhen = { a = "x" }\n', "fields.a.when",
                                        "must be a table"),
    "rule naming an unknown field": (HEAD + '[fields.a]\n[[rules]]\nname = "r"\nwhen = { a = ["x"] }\n'
                                            'require = ["nope"]\n', "rules[0].require", "'nope'"),
    "rule when naming an unknown field": (HEAD + '[fields.a]\n[[rules]]\nname = "r"\nwhen = { nope = ["x"] }\n'
                                                 'require = ["a"]\n', "rules[0].when", "'nope'"),
    "rule without when": (HEAD + '[fields.a]\n[[rules]]\nname = "r"\nrequire = ["a"]\n', "rules[0].when",
                          "must be a table"),
    "rule requiring nothing": (HEAD + '[fields.a]\n[[rules]]\nname = "r"\nwhen = { a = ["x"] }\nrequire = []\n',
                               "rules[0].require", "non-empty list"),
    "rule with a bad severity": (HEAD + '[fields.a]\n[[rules]]\nname = "r"\nwhen = { a = ["x"] }\n'
                                        'require = ["a"]\nseverity = "loud"\n', "rules[0].severity", "'loud'"),
    "rule without a name": (HEAD + '[fields.a]\n[[rules]]\nwhen = { a = ["x"] }\nrequire = ["a"]\n',
                            "rules[0].name", "required"),
    "rule with an unknown key": (HEAD + '[fields.a]\n[[rules]]\nname = "r"\nwhen = { a = ["x"] }\n'
                                        'require = ["a"]\nlevel = 1\n', "rules[0]", "unknown key 'level'"),
    "two rules of one name": (HEAD + '[fields.a]\n[[rules]]\nname = "r"\nwhen = { a = ["x"] }\nrequire = ["a"]\n'
                                     '[[rules]]\nname = "r"\nwhen = { a = ["y"] }\nrequire = ["a"]\n', "rules",
                              "unique"),
    "rules not an array": (HEAD + "rules = 3\n", "rules", "array"),
    "key naming no field": (HEAD + 'key = "nope"\n[fields.a]\n', "key", "must name a field"),
    "description not a string": (HEAD + "description = 3\n", "description", "must be a string"),
    "missing stream": ('version = "1"\n', "stream", "required"),
    "stream not a topic name": ('stream = "a b"\nversion = "1"\n', "stream", "required"),
    "missing version": ('stream = "clicks"\n', "version", "required"),
    "version not a string": ('stream = "clicks"\nversion = true\n', "version", "required"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_is_one_line_naming_the_file_and_the_key(mistake: str) -> None:
    text, key, words = MISTAKES[mistake]
    [error] = errors_of(text)
    assert "\n" not in error
    assert error.startswith(f"my/clicks.toml: {key}: "), error
    assert words in error, error


@pytest.mark.parametrize("text", ["stream = \n", "[fields.a\n", "stream = 'a'\nstream = 'b'\n", "\x00"])
def test_not_toml_at_all(text: str) -> None:
    [error] = errors_of(text)
    assert error.startswith("my/clicks.toml: not valid TOML: ") and "\n" not in error


def test_several_mistakes_in_one_file_are_all_reported() -> None:
    text = ('colour = 1\nkey = "nope"\n'
            '[fields.a]\ntype = "float"\n'
            '[fields.b]\nseverity = "loud"\nrole = "boss"\n'
            '[fields.c]\ntype = "number"\nmin = 2\nmax = 1\n'
            '[fields.d]\ntype = "string"\npattern = "("\n'
            '[[rules]]\nname = "r"\nwhen = { zz = ["x"] }\nrequire = ["yy"]\n')
    errors = errors_of(text)
    wanted = ["colour: unknown key", "stream: required", "version: required", "fields.a: type 'float'",
              "fields.b: severity 'loud'", "fields.b: role 'boss'", "fields.c: min is above max",
              "fields.d: pattern does not compile", "rules[0].when: names 'zz'", "rules[0].require: names 'yy'",
              "key: must name a field"]
    for want in wanted:
        assert sum(f"my/clicks.toml: {want}" in e for e in errors) == 1, (want, errors)
    assert len(errors) == len(wanted)
    assert all(e.startswith("my/clicks.toml: ") and "\n" not in e for e in errors)


def test_check_file_and_read_contract_name_the_path(tmp_path: Path) -> None:
    good, bad, binary = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "binary.toml"
    good.write_text(HEAD + '[fields.a]\ntype = "id"\n')
    bad.write_text(HEAD + '[fields.a]\ntype = "float"\n[fields.b]\nseverity = "x"\n')
    binary.write_bytes(b"\xff\xfe\x00")
    assert check_file(good) == [] and read_contract(good).origin == str(good)
    assert [e.split(": ")[:2] for e in check_file(bad)] == [[str(bad), "fields.a"], [str(bad), "fields.b"]]
    [unreadable] = check_file(binary)
    assert unreadable.startswith(f"{binary}: cannot be read")
    [missing] = check_file(tmp_path / "none.toml")
    assert missing.startswith(f"{tmp_path / 'none.toml'}: cannot be read")
    for path in sorted(SHIPPED_DIR.glob("*.toml")):
        assert check_file(path) == [], path


# ------------------------------------------------------------------ (b) to_toml

# Every attribute a field or rule may have, written back and read again.
EVERYTHING = HEAD + '''key = "user"
description = "Everything a contract can say."

[fields.id]
type = "id"
required = true
role = "event_id"
pattern = "[a-z0-9-]+"
description = "the event's id"

[fields.user]
type = "id"
role = "user_id"
severity = "warn"

[fields.kind]
type = "string"
required = true
role = "kind"
case = "lower"
enum = ["click", "hover"]

[fields.at]
type = "timestamp"
role = "time"

[fields.where]
type = "string"
role = "source"
max_length = 40

[fields.score]
type = "number"
min = -1.5
max = 1
exclusive_min = true
exclusive_max = true

[fields.count]
type = "integer"
min = 0
severity = "warn"
when = { kind = ["click"] }

[fields.tags]
type = "array"

[fields.meta]
type = "object"

[fields.flag]
type = "boolean"

[fields.anything]

[[rules]]
name = "clicks_count"
when = { kind = ["click"] }
require = ["count", "user"]
severity = "reject"
description = "a click says how many"

[[rules]]
name = "hover_where"
when = { kind = ["hover"], flag_text = ["on"] }
require = ["where"]

[fields.flag_text]
type = "string"
'''


def test_to_toml_round_trips_every_shipped_contract() -> None:
    contracts = shipped()
    assert set(contracts) == {"behaviour", "product", "transaction"}
    for c in contracts.values():
        text = to_toml(c)
        again = parse_contract(text, c.origin)
        assert again == c
        assert (again.fields, again.rules, again.key, again.description) == (c.fields, c.rules, c.key, c.description)
        assert to_toml(again) == text


def test_to_toml_round_trips_every_attribute() -> None:
    c = parse_contract(EVERYTHING, "everything.toml")
    assert len(c.fields) == 12 and len(c.rules) == 2 and c.key == "user"
    again = parse_contract(to_toml(c), "everything.toml")
    assert again == c and to_toml(again) == to_toml(c)
    assert again.by_name["score"].exclusive_max and again.by_name["count"].when == (("kind", frozenset({"click"})),)


def test_contract_rows_name_fields_and_rule_requirements() -> None:
    b = shipped()["behaviour"]
    rows = contract_rows("acme.", b, T0)
    assert [r[3] for r in rows if r[4] == ""] == [f.name for f in b.fields]
    assert {(r[3], r[4], r[7]) for r in rows if r[4]} == {
        ("product_id", "product_events_name_the_product", "warn"), ("query", "searches_carry_the_query", "warn")}
    assert all(r[0] == "acme." and r[1] == "behaviour" and r[2] == "1" for r in rows)
    [row] = contract_rows("acme.", schemaless("clicks"), T0)
    assert row[1:4] == ["clicks", SCHEMALESS, ""]


# ------------------------------------------------------------------ (c) severities


PRICED = HEAD + '''[fields.event_id]
type = "id"
required = true
role = "event_id"

[fields.kind]
type = "string"
role = "kind"

[fields.product_id]
type = "id"

[fields.price]
type = "number"
min = 0
severity = "{severity}"

[fields.user_id]
type = "id"
required = true
role = "user_id"
severity = "{severity}"

[[rules]]
name = "views_name_the_product"
when = {{ kind = ["view"] }}
require = ["product_id"]
severity = "{severity}"
'''


def priced(severity: str) -> Contract:
    return parse_contract(PRICED.format(severity=severity), f"{severity}.toml")


def test_warn_keeps_the_event_valid_and_records_the_codes() -> None:
    c = priced("warn")
    e = normalize(c, {"event_id": "e1", "kind": "view", "price": -1})
    assert isinstance(e, Event) and e.event_id == "e1" and e.user_id == ""
    assert e.warnings == ("invalid_value:price", "missing_field:user_id",
                          "missing_field:product_id@views_name_the_product")
    assert e.fields["price"] == -1  # kept as it came
    ok = normalize(c, {"event_id": "e2", "kind": "view", "price": "2.5", "user_id": 7, "product_id": 3})
    assert isinstance(ok, Event) and ok.warnings == () and ok.fields["price"] == 2.5
    j = judged(c, rec(0, {"event_id": "e1", "kind": "view", "price": -1}))
    assert j.columns["status"] == ["valid"] and j.dead_letters == []
    assert j.columns["warnings"] == [e.warnings]


def test_reject_dead_letters_the_event() -> None:
    c = priced("reject")
    assert normalize(c, {"event_id": "e1", "kind": "view", "price": -1, "user_id": 1, "product_id": 2}) == \
        Rejected("invalid_value:price", "field 'price': -1 is not a valid price")
    r = normalize(c, {"event_id": "e1", "kind": "view", "user_id": 1})
    # a conditional rule that rejects gives the reason code contract v1 had
    assert isinstance(r, Rejected) and r.reason == "missing_field:product_id"
    j = judged(c, rec(5, {"event_id": "e1", "kind": "view", "user_id": 1}),
               rec(6, {"event_id": "e2", "kind": "click", "user_id": 1}))
    assert list(zip(j.columns["status"], j.columns["reason"], strict=True)) == [
        ("invalid", "missing_field:product_id"), ("valid", "")]
    [dead] = j.dead_letters
    assert dict(dead.headers)["stocktake.reason"] == b"missing_field:product_id"
    assert dict(dead.headers)["stocktake.offset"] == b"5"


def test_the_old_strict_behaviour_contract_is_one_edit_away() -> None:
    """Contract v1 as it was hand-written rejected a view without product_id and a search
    without query; the shipped file warns. A user file with severity "reject" brings back
    the old reason codes."""
    text = (SHIPPED_DIR / "behaviour.toml").read_text()
    assert text.count('severity = "warn"') == 2
    strict = parse_contract(text.replace('severity = "warn"', 'severity = "reject"'), "strict.toml")
    view = {"event_id": "e", "event_type": "view", "user_id": 1, "ts": T0, "source": "web"}
    search = {**view, "event_type": "search"}
    assert normalize(strict, view) == Rejected("missing_field:product_id", "field 'product_id' is missing or empty")
    assert isinstance(r := normalize(strict, search), Rejected) and r.reason == "missing_field:query"
    shipped_b = shipped()["behaviour"]
    assert isinstance(e := normalize(shipped_b, view), Event) and e.warnings == (NO_PRODUCT,)
    assert isinstance(e := normalize(shipped_b, search), Event) and e.warnings == (NO_QUERY,)


# ------------------------------------------------------------------ (d) ContractBook


def write(path: Path, text: str) -> None:
    """Write and move the mtime on, so the change is seen whatever the file system's clock."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def clicks(version: str, extra: str = "") -> str:
    return f'stream = "clicks"\nversion = "{version}"\n[fields.user_id]\ntype = "id"\nrole = "user_id"\n{extra}'


def test_book_picks_up_an_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "clicks.toml"
    write(path, clicks("1"))
    book = ContractBook(tmp_path, check_every_s=0)
    assert book.get("clicks").version == "1" and book.get("clicks").origin == str(path)
    write(path, clicks("2"))  # same size: only the mtime tells
    assert book.get("clicks").version == "2"
    assert book.reload() == []  # nothing changed since
    write(path, clicks("3", '[fields.page]\ntype = "string"\nrequired = true\n'))
    c = book.get("clicks")
    assert c.version == "3" and c.required == ("page",)
    assert isinstance(r := normalize(c, {"user_id": 1}), Rejected) and r.reason == "missing_field:page"


def test_book_checks_the_directory_only_every_check_every_s(tmp_path: Path) -> None:
    path = tmp_path / "clicks.toml"
    write(path, clicks("1"))
    book = ContractBook(tmp_path, check_every_s=3600)
    write(path, clicks("2"))
    assert book.get("clicks").version == "1"  # not looked at yet
    assert book.reload() == ["clicks"]
    assert book.get("clicks").version == "2"


def test_book_keeps_the_last_good_contract_when_an_edit_is_broken(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clicks.toml"
    write(path, clicks("1"))
    book = ContractBook(tmp_path, check_every_s=0)
    good = book.get("clicks")
    write(path, clicks("2", '[fields.x]\ntype = "float"\n'))
    assert book.get("clicks") is good
    assert "fields.x" in caplog.text and "last good" in caplog.text
    write(path, "not = [toml")
    assert book.get("clicks") is good
    write(path, clicks("3"))  # fixed: taken
    assert book.get("clicks").version == "3"


def test_book_judges_unknown_streams_schemaless(tmp_path: Path) -> None:
    book = ContractBook(tmp_path, check_every_s=0)
    c = book.get("pageviews")
    assert c.schemaless and c.version == SCHEMALESS and c.stream == "pageviews" and c.fields == ()
    assert book.get("pageviews") is c  # one per stream, kept
    assert "pageviews" not in book.declared() and set(book.declared()) == {"behaviour", "product", "transaction"}
    write(tmp_path / "pv.toml", 'stream = "pageviews"\nversion = "1"\n[fields.url]\ntype = "string"\n'
                                'required = true\n')
    assert book.get("pageviews").version == "1" and "pageviews" in book.declared()
    (tmp_path / "pv.toml").unlink()  # its file gone: schemaless again
    assert book.get("pageviews").schemaless
    assert ContractBook(None).get("behaviour") == shipped()["behaviour"]
    assert ContractBook(None).get("anything").schemaless


def test_a_user_file_replaces_a_shipped_contract(tmp_path: Path) -> None:
    text = (SHIPPED_DIR / "behaviour.toml").read_text().replace('version = "1"', 'version = "2-strict"')
    write(tmp_path / "my-behaviour.toml", text.replace('severity = "warn"', 'severity = "reject"'))
    book = ContractBook(tmp_path, check_every_s=0)
    c = book.get("behaviour")
    assert c.version == "2-strict" and c.origin == str(tmp_path / "my-behaviour.toml")
    assert book.get("product") == shipped()["product"]
    assert shipped()["behaviour"].version == "1"  # the shipped ones stay as they are
    j = judged(c, rec(0, {"event_id": "e", "event_type": "view", "user_id": 1, "ts": T0, "source": "web"}))
    assert j.columns["reason"] == ["missing_field:product_id"] and j.columns["contract_version"] == ["2-strict"]
    (tmp_path / "my-behaviour.toml").unlink()
    assert book.get("behaviour") == shipped()["behaviour"]  # back to the shipped one


def test_two_files_for_one_stream_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", clicks("1"))
    write(tmp_path / "b.toml", clicks("2"))
    with pytest.raises(ContractError) as exc:
        load(tmp_path)
    [error] = exc.value.errors
    assert error.startswith(str(tmp_path / "b.toml")) and str(tmp_path / "a.toml") in error and "'clicks'" in error
    with pytest.raises(ContractError):
        ContractBook(tmp_path)  # the worker does not start on it


def test_two_files_for_one_stream_after_start_keep_the_last_good(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", clicks("1"))
    book = ContractBook(tmp_path, check_every_s=0)
    write(tmp_path / "b.toml", clicks("2"))
    assert book.get("clicks").version == "1"


def test_load_reports_every_file_and_needs_a_directory(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", clicks("1", '[fields.x]\ntype = "float"\n'))
    write(tmp_path / "b.toml", "version = 2\n")
    write(tmp_path / "notes.txt", "not a contract")
    with pytest.raises(ContractError) as exc:
        load(tmp_path)
    assert [e.split(": ")[0] for e in exc.value.errors] == [str(tmp_path / "a.toml"), str(tmp_path / "b.toml")]
    with pytest.raises(ContractError, match="names no directory"):
        load(tmp_path / "nowhere")
    assert load(None) == shipped()


# ------------------------------------------------------------------ (e) schemaless streams

CLICKS = schemaless("clicks")


@pytest.mark.parametrize("obj", [{}, {"a": [1, {"b": None}]}, {"event_id": {"x": 1}, "ts": "never"},
                                 {"user_id": True, "source": 5}, {"": None}])
def test_schemaless_any_object_is_valid(obj: dict[str, Any]) -> None:
    e = normalize(CLICKS, obj)
    assert isinstance(e, Event) and e.fields == obj and e.warnings == () and e.kind == ""


@pytest.mark.parametrize("obj", [[{"a": 1}], "x", 1, 1.5, None, True])
def test_schemaless_non_objects_are_rejected(obj: Any) -> None:
    r = normalize(CLICKS, obj)
    assert isinstance(r, Rejected) and r.reason == "not_an_object"


def test_schemaless_takes_usable_ids_and_source() -> None:
    e = normalize(CLICKS, {"event_id": 12, "user_id": " u1 ", "product_id": 7.0, "order_id": "o",
                           "source": " web "})
    assert isinstance(e, Event)
    assert (e.event_id, e.user_id, e.product_id, e.order_id, e.source) == ("12", "u1", "7", "o", "web")
    e = normalize(CLICKS, {"event_id": [1], "user_id": "x" * (MAX_ID_CHARS + 1), "product_id": 2**60 + 0.0,
                           "source": "s" * 300})
    assert isinstance(e, Event)
    assert (e.event_id, e.user_id, e.product_id, e.source) == ("", "", "", "")


@pytest.mark.parametrize(("obj", "want"), [
    ({"ts": "2019-10-01T00:00:00Z"}, T0),
    ({"timestamp": "2019-10-01T00:00:00Z"}, T0),
    ({"timestamp": 1569888000}, T0),  # epoch seconds
    ({"time": 1569888000123}, T0 + 123),  # epoch millis
    ({"event_time": "1569888000.5"}, T0 + 500),
    ({"eventTime": "2019-10-01 02:00:00+02:00"}, T0),
    ({"@timestamp": "2019-10-01T00:00:00.250Z"}, T0 + 250),
    ({"created_at": "2019-10-01 00:00:00 UTC"}, T0),
    ({"datetime": "2019-10-01"}, T0),
    ({"ts": "garbage", "timestamp": T0}, T0),  # the first that parses
    ({"ts": True, "time": [T0], "created_at": T0 + 1}, T0 + 1),
    ({"timestamp": T0, "ts": T0 + 5}, T0 + 5),  # TIME_FIELDS' order, not the event's
])
def test_schemaless_time_is_detected(obj: dict[str, Any], want: int) -> None:
    e = normalize(CLICKS, obj)
    assert isinstance(e, Event) and e.ts_ms == want
    assert e.fields == obj  # stored as it came (not normalized)


@pytest.mark.parametrize("obj", [{}, {"when": T0}, {"ts": "yesterday"}, {"timestamp": -5}, {"time": None},
                                 {"ts": "2101-01-01T00:00:00Z"}])
def test_schemaless_without_a_time_is_minus_one(obj: dict[str, Any]) -> None:
    e = normalize(CLICKS, obj)
    assert isinstance(e, Event) and e.ts_ms == -1
    assert "when" not in TIME_FIELDS


def test_schemaless_judge_batch_uses_the_record_timestamp_else_ingest_time() -> None:
    j = judged(CLICKS, rec(0, {"page": "/"}, ts=KAFKA_MS), rec(1, {"page": "/a"}),
               rec(2, {"page": "/b", "timestamp": T0}, ts=KAFKA_MS), Record(3, None, b"[1]", KAFKA_MS))
    assert j.columns["status"] == ["valid", "valid", "valid", "invalid"]
    assert j.columns["ts"] == [KAFKA_MS, INGEST_MS, T0, KAFKA_MS]
    assert [e.ts_ms for e in j.valid] == [KAFKA_MS, INGEST_MS, T0]
    assert j.columns["reason"][3] == "not_an_object"


def test_shipped_stream_invalid_rows_use_the_record_timestamp_too() -> None:
    b = shipped()["behaviour"]
    j = judged(b, Record(0, None, b'{"event_id": "e"}', KAFKA_MS), Record(1, None, b"{bad", None),
               Record(2, None, b'{"ts": "2019-10-01T00:00:00Z"}', KAFKA_MS))
    assert j.columns["status"] == ["invalid"] * 3
    assert j.columns["ts"] == [KAFKA_MS, INGEST_MS, T0]


def test_schemaless_dedupes_by_event_id_when_present_and_never_without() -> None:
    window = DedupeWindow(3_600_000, 1000)
    j = judged(CLICKS, rec(0, {"event_id": "a", "n": 1}, {"event_id": "a", "n": 2}, {"event_id": 7}, {"event_id": "7"},
                           {"n": 1}, {"n": 1}, {"event_id": ""}, {"event_id": ""}, {"event_id": [1]},
                           {"event_id": [1]}, ts=KAFKA_MS), window=window)
    assert j.columns["status"] == ["valid", "duplicate", "valid", "duplicate", "valid", "valid", "valid", "valid",
                                   "valid", "valid"]
    assert j.columns["event_id"] == ["a", "a", "7", "7", "", "", "", "", "", ""]
    again = judged(CLICKS, rec(1, {"event_id": "a"}, {"n": 1}, ts=KAFKA_MS), window=window)
    assert again.columns["status"] == ["duplicate", "valid"]
    assert "" not in window


# ------------------------------------------------------------------ (f) the columns of a judged batch


def test_judge_batch_columns_name_the_contract() -> None:
    b = shipped()["behaviour"]
    view = {"event_id": "e1", "event_type": "view", "user_id": 1, "product_id": 2, "ts": T0, "source": "web"}
    j = judged(b, rec(0, view, {**view, "event_id": "e2", "product_id": None},
                      {**view, "event_id": "e3", "event_type": "search"}, {**view, "user_id": None}))
    assert set(j.columns) == set(COLUMNS)
    assert j.columns["status"] == ["valid", "valid", "valid", "invalid"]
    assert j.columns["contract_version"] == ["1"] * 4
    assert j.columns["kind_key"] == ["event_type"] * 4
    assert j.columns["warnings"] == [(), (NO_PRODUCT,), (NO_QUERY,), ()]

    user = parse_contract(EVERYTHING.replace('version = "1"', 'version = "7b"'), "everything.toml")
    j = judged(user, rec(0, {"id": "a1", "kind": "Hover", "user": 3}, {"id": "a2", "kind": "click", "user": 3},
                         {"id": "a3", "kind": "click", "user": [1], "count": 4}))
    assert j.columns["status"] == ["valid", "invalid", "valid"]
    assert j.columns["reason"] == ["", "missing_field:count", ""]
    assert j.columns["contract_version"] == ["7b"] * 3 and j.columns["kind_key"] == ["kind"] * 3
    assert j.columns["kind"] == ["hover", "click", "click"] and j.columns["user_id"] == ["3", "", ""]
    assert j.columns["warnings"] == [(), (), ("invalid_type:user",)]

    j = judged(CLICKS, rec(0, {"a": 1}), Record(1, None, b"null"))
    assert j.columns["contract_version"] == [SCHEMALESS] * 2 and j.columns["kind_key"] == [""] * 2
    assert j.columns["kind"] == ["", ""] and j.columns["warnings"] == [(), ()]
    table = ingest_log_table(j.columns)
    assert table.column("contract_version").to_pylist() == [SCHEMALESS] * 2


# ------------------------------------------------------------------ (g) a property of the shipped behaviour contract

BEHAVIOUR = shipped()["behaviour"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.integers(), st.text(max_size=20), st.floats(), st.just("x" * (MAX_ID_CHARS + 1))),
    "string": st.one_of(st.text(max_size=50),
                        st.sampled_from(["view", "VIEW ", "search", "cart", "fav", "page_scroll", "1st", ""]),
                        st.from_regex(r"[a-zA-Z][a-zA-Z0-9_ ]{0,45}", fullmatch=True)),
    "timestamp": st.one_of(st.integers(), st.floats(), st.text(max_size=30),
                           st.sampled_from(["2019-10-01T00:00:00Z", "2019-10-01 00:00:00 UTC", "2101-01-01"])),
}
VALID_OF: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.integers(-(2**53), 2**53), st.text(min_size=1, max_size=20).filter(str.strip)),
    "event_type": st.one_of(st.sampled_from(["view", "click", "cart", "remove_from_cart", "fav", "purchase", "search"]),
                            st.from_regex(r"[a-z][a-z0-9_]{0,39}", fullmatch=True)).map(lambda t: f" {t.upper()}"),
    "string": st.text(min_size=1, max_size=20).filter(str.strip),
    "timestamp": st.one_of(st.integers(0, MAX_MS - 1), st.sampled_from(["2019-10-01T00:00:00Z", "2019-10-01"])),
}
CODES = {f"{what}:{f.name}" for f in BEHAVIOUR.fields for what in ("missing_field", "invalid_type", "invalid_value")}
CODES |= {"invalid_ts", NO_PRODUCT, NO_QUERY}


@st.composite
def behaviour_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of the contract (its optional fields present or not), extra fields beside,
    then up to three of its fields damaged: dropped, null, another value of the field's type
    (valid or not) or any JSON at all."""
    ev: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in BEHAVIOUR.names),
                                              json_values, max_size=3))
    for f in BEHAVIOUR.fields:
        if f.required or draw(st.booleans()):
            ev[f.name] = draw(VALID_OF.get(f.name, VALID_OF[f.type]))
    for name in draw(st.lists(st.sampled_from([f.name for f in BEHAVIOUR.fields]), max_size=3)):
        how = draw(st.sampled_from(["drop", "null", "typed", "json"]))
        if how == "drop":
            ev.pop(name, None)
        else:
            ev[name] = None if how == "null" else draw(json_values if how == "json" else
                                                       BY_TYPE[BEHAVIOUR.by_name[name].type])
    return ev


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(behaviour_like())
def test_prop_normalize_never_raises_on_behaviour_like_events(obj: dict[str, Any]) -> None:
    before = copy.deepcopy(obj)
    r = normalize(BEHAVIOUR, obj)
    assert isinstance(r, Event | Rejected)
    assert repr(obj) == repr(before)  # the caller's event is not touched (repr: NaN is not == NaN)
    if isinstance(r, Rejected):
        assert r.reason in CODES and r.detail
        return
    assert 0 <= r.ts_ms < MAX_MS and r.event_id and r.user_id and r.source
    assert len(r.event_id) <= MAX_ID_CHARS and len(r.source) <= 256
    assert set(r.warnings) <= {NO_PRODUCT, NO_QUERY}
    assert (NO_PRODUCT in r.warnings) == (r.kind in {"view", "click", "cart", "remove_from_cart", "fav", "purchase"}
                                          and not r.product_id)
    assert set(r.fields) == set(obj)


# ------------------------------------------------------------------ bugs found (these fail until fixed)


def test_a_condition_on_a_non_scalar_value_does_not_raise() -> None:
    """contract.py compile_contract: a rule's `when` (and a conditional field's) looks the
    event's value up in a dict / frozenset; a list or object value raises TypeError
    (unhashable) out of normalize instead of simply not matching. Reachable with any user
    contract conditioning on a field of type any/object/array, or on a `warn` field that kept
    a bad value as it came."""
    c = parse_contract(HEAD + '[fields.meta]\n[fields.note]\ntype = "string"\n[fields.price]\ntype = "number"\n'
                              'when = { meta = ["x"] }\n[[rules]]\nname = "r"\nwhen = { meta = ["x"] }\n'
                              'require = ["note"]\n', "any.toml")
    for meta in (["x"], {"x": 1}):
        e = normalize(c, {"meta": meta, "price": -1})
        assert isinstance(e, Event) and e.warnings == ()


def test_a_conditional_field_is_judged_whatever_the_order_of_the_file() -> None:
    """contract.py compile_contract: steps run in the file's field order and a condition reads
    `f`, where fields judged so far are canonical and later ones still as they came. A field
    conditional on `op` but written before it is judged only when the raw op is exactly
    "upsert": "UPSERT" or " upsert" (valid, and stored as "upsert") skips the check."""
    ops = '[fields.op]\ntype = "string"\nrequired = true\nrole = "kind"\ncase = "lower"\nenum = ["upsert", "delete"]\n'
    price = '[fields.price]\ntype = "number"\nmin = 0\nwhen = { op = ["upsert"] }\n'
    after = parse_contract(HEAD + ops + price, "after.toml")
    before = parse_contract(HEAD + price + ops, "before.toml")
    for op in ("upsert", "UPSERT", " upsert"):
        obj = {"op": op, "price": -5}
        assert normalize(after, obj) == normalize(before, obj), op


def test_replacing_a_contracts_fields_leaves_the_original_alone() -> None:
    """contract.py Contract: `by_name` is an init field, so dataclasses.replace() hands the
    original's dict to the copy, whose __post_init__ then adds its fields to it: the copy
    keeps the old names, and the original gains the copy's (were it the cached shipped contract,
    every later judge in the process would see them)."""
    b = read_contract(SHIPPED_DIR / "behaviour.toml")  # a fresh one: the cached shipped one stays clean
    original = set(b.names)
    smaller = dataclasses.replace(b, fields=b.fields[:3])
    assert smaller.names == {"event_id", "event_type", "user_id"}
    renamed = dataclasses.replace(b, fields=(dataclasses.replace(b.fields[0], name="eid"), *b.fields[1:]))
    assert "eid" in renamed.names
    assert b.names == original


def test_a_record_timestamp_outside_1970_2100_is_not_an_event_time() -> None:
    """judge.py judge_batch: `fallback_ms = record.timestamp_ms` is used unchecked (the transport
    drops only negative ones). A producer may set any CreateTime: an event without a time of
    its own is then stored at year 146 million (ingest_log.ts holds 1970..2100, see
    test_fuzz), and the partition's dedupe window, led by that time, forgets every id, so a
    redelivered event is stored as valid twice. Expected: such a timestamp is ignored
    (ingest time used), like an event's own ts outside 1970..2100 is."""
    window = DedupeWindow(3_600_000, 1000)
    first = judged(CLICKS, rec(0, {"event_id": "a"}, ts=KAFKA_MS), rec(1, {"event_id": "b"}, ts=2**62),
                   window=window)
    assert all(0 <= ts < MAX_MS for ts in first.columns["ts"]), first.columns["ts"]
    again = judged(CLICKS, rec(2, {"event_id": "a"}, ts=KAFKA_MS + 1000), window=window)
    assert again.columns["status"] == ["duplicate"]


def test_an_invalid_events_time_is_read_from_its_contracts_time_field() -> None:
    """judge.py judge_batch: an invalid event's row takes its time from `obj.get("ts")`, the
    name contract v1 used; under a contract whose time field is another (role = "time"), the
    event's own valid time is ignored and the row is dated by the Kafka timestamp (or ingest
    time). The same holds for the event_id and source columns (read as "event_id", "source")."""
    c = parse_contract(HEAD + '[fields.id]\ntype = "id"\nrequired = true\nrole = "event_id"\n'
                              '[fields.event_time]\ntype = "timestamp"\nrequired = true\nrole = "time"\n', "t.toml")
    j = judged(c, Record(0, None, b'{"event_time": "2019-10-01T00:00:00Z"}', KAFKA_MS))
    assert j.columns["reason"] == ["missing_field:id"]
    assert j.columns["ts"] == [T0]


def test_a_broken_field_is_reported_once() -> None:
    """contract_spec.py parse_contract: a field with a mistake is left out of `names`, so every
    rule, `when` and `key` naming it adds a second, false line: "names 'price', which is not
    a field of this contract" (it is; it is the one with the bad type)."""
    errors = errors_of(HEAD + 'key = "price"\n[fields.kind]\n[fields.price]\ntype = "float"\n'
                              '[[rules]]\nname = "r"\nwhen = { kind = ["x"] }\nrequire = ["price"]\n')
    assert len(errors) == 1 and "fields.price: type 'float'" in errors[0], errors


# ------------------------------------------------------------------ schemaless time, inference


def _event(judged: Event | Rejected) -> Event:
    assert isinstance(judged, Event), judged
    return judged


def test_schemaless_time_comes_from_a_field_named_like_a_time() -> None:
    """Real exports name their times review_creation_date, order_purchase_timestamp: the
    first such field that parses, in the event's order, after the usual names."""
    c = schemaless("reviews")
    review = {"review_id": "r1", "review_score": "5", "review_creation_date": "2018-01-18 00:00:00",
              "review_answer_timestamp": "2018-01-18 21:46:59"}
    assert _event(normalize(c, review)).ts_ms == 1516233600000
    assert _event(normalize(c, {**review, "ts": "2019-10-01T00:00:00Z"})).ts_ms == T0   # a usual name first
    # digits only are an id or a count, not a date; nothing else names a time: the record's time then
    assert _event(normalize(c, {"order_id": "123", "paid_at": "17", "x_date": "soon"})).ts_ms == -1


def test_infer_prefers_a_creation_time_and_writes_what_the_checker_reads() -> None:
    from stocktake.processors.contract_infer import FieldSeen, infer_contract
    seen = [
        FieldSeen("review_id", {"string": 100}, 100, ["a", "b"]),
        FieldSeen("order_id", {"string": 100}, 97, ["o1"]),
        FieldSeen("review_answer_timestamp", {"string": 100}, 100, ["2018-01-18 21:46:59"]),
        FieldSeen("review_creation_date", {"string": 90, "null": 10}, 30, ["2018-01-18 00:00:00"]),
        FieldSeen("review_score", {"string": 100}, 5, ["5"], values=["1", "2", "3", "4", "5"]),
        FieldSeen("channel", {"string": 100}, 2, ["App"], values=["app", "web"]),
        FieldSeen("comment", {"string": 40}, 40, ["great"]),
    ]
    c = infer_contract("reviews", 100, seen)
    by = {f.name: f for f in c.fields}
    assert c.role("time") == "review_creation_date" and not by["review_creation_date"].required
    assert by["review_score"].enum == frozenset("12345") and by["review_score"].case == ""
    assert by["channel"].case == "lower" and by["order_id"].role == "order_id" and c.key == "order_id"
    assert by["review_id"].type == "id" and by["comment"].type == "string" and not by["comment"].required
    assert parse_contract(to_toml(c), "inferred") == dataclasses.replace(c, origin="inferred")
