"""Contracts as files: TOML in, ``Contract`` out, one clear line per mistake.

The shipped contracts (contract v1 of behaviour, product and transaction) live beside this
module in ``contracts/``; a directory named by STOCKTAKE_CONTRACTS adds streams or replaces
shipped ones (a file's ``stream`` names its stream). ``ContractBook`` is what the worker
holds: the contract of each stream, the schemaless one for streams without, re-read when a
file in the directory changes (a broken edit keeps the last good contract and says why).

The format (see README "Data contracts")::

    stream = "behaviour"          # the stream (topic PREFIX.behaviour)
    version = "1"                 # recorded on every event judged under it
    key = "user_id"               # optional: what producers key messages by
    [fields.NAME]                 # type, required, severity, role, enum, case, pattern,
                                  # min, max, exclusive_min, exclusive_max, max_length, when
    [[rules]]                     # name, when = {FIELD = [values]}, require = [FIELDS], severity
"""

from __future__ import annotations

import functools
import logging
import re
import time
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from stocktake.processors.contract import (
    ROLES,
    SEVERITIES,
    TYPES,
    Condition,
    Contract,
    Field,
    Rule,
    schemaless,
)

log = logging.getLogger("stocktake.contracts")

SHIPPED_DIR = Path(__file__).parent / "contracts"
# A stream is a topic's name after the prefix: Kafka's topic characters.
STREAM_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
_TOP = {"stream", "version", "key", "description", "fields", "rules"}
_FIELD = {"type", "required", "severity", "role", "enum", "case", "pattern", "min", "max",
          "exclusive_min", "exclusive_max", "max_length", "when", "description"}
_RULE = {"name", "when", "require", "severity", "description"}
_ROLE_TYPES = {"event_id": {"id"}, "user_id": {"id"}, "product_id": {"id"}, "order_id": {"id"},
               "time": {"timestamp"}, "kind": {"string"}, "source": {"string"}}


class ContractError(ValueError):
    """A contract file that cannot be used; ``errors`` holds one line per mistake."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def parse_contract(text: str, origin: str) -> Contract:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ContractError([f"{origin}: not valid TOML: {exc}"]) from None
    errors: list[str] = []

    def err(where: str, what: str) -> None:
        errors.append(f"{origin}: {where}: {what}" if where else f"{origin}: {what}")

    for key in sorted(set(doc) - _TOP):
        err(key, f"unknown key (expected one of {', '.join(sorted(_TOP))})")
    stream = doc.get("stream")
    if not isinstance(stream, str) or not STREAM_NAME.fullmatch(stream):
        err("stream", "required: the stream's name (letters, digits, '.', '_', '-')")
    version = doc.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        err("version", 'required: a short string, e.g. version = "2"')
    raw_fields = doc.get("fields", {})
    if not isinstance(raw_fields, dict):
        err("fields", "must be a table of [fields.NAME] tables")
        raw_fields = {}
    fields = [f for name, spec in raw_fields.items() if (f := _field(name, spec, err)) is not None]
    names = set(raw_fields)  # declared, broken or not: a broken field is reported once, as itself
    lower = {f.name for f in fields if f.case == "lower"}
    for f in fields:
        for cond_field, values in f.when:
            if cond_field not in names:
                err(f"fields.{f.name}.when", f"names {cond_field!r}, which is not a field of this contract")
            elif cond_field in lower and any(v != v.lower() for v in values):
                err(f"fields.{f.name}.when", f"{cond_field!r} is stored lower-case: these values never match")
        if f.role and f.when:
            err(f"fields.{f.name}", "a field with a role cannot be conditional (`when`)")
    roles: dict[str, str] = {}
    for f in fields:
        if f.role and roles.setdefault(f.role, f.name) != f.name:
            err(f"fields.{f.name}.role", f"{f.role!r} is already the role of {roles[f.role]!r}")
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        err("rules", "must be an array of [[rules]] tables")
        raw_rules = []
    rules = [r for i, spec in enumerate(raw_rules) if (r := _rule(i, spec, names, err)) is not None]
    for i, r in enumerate(rules):
        for cond_field, values in r.when:
            if cond_field in lower and any(v != v.lower() for v in values):
                err(f"rules[{i}].when", f"{cond_field!r} is stored lower-case: these values never match")
    if len({r.name for r in rules}) != len(rules):
        err("rules", "rule names must be unique")
    key = doc.get("key", "")
    if not isinstance(key, str) or (key and key not in names):
        err("key", "must name a field of this contract")
    description = doc.get("description", "")
    if not isinstance(description, str):
        err("description", "must be a string")
    if errors:
        raise ContractError(errors)
    return Contract(str(stream), str(version).strip(), tuple(fields), tuple(rules), key=str(key),
                    description=str(description), origin=origin)


def _field(name: str, spec: Any, err: Any) -> Field | None:
    where = f"fields.{name}"
    if not isinstance(spec, dict):
        err(where, "must be a table")
        return None
    problems: list[str] = []

    def no(what: str) -> None:
        problems.append(what)
        err(where, what)

    for key in sorted(set(spec) - _FIELD):
        no(f"unknown key {key!r} (expected one of {', '.join(sorted(_FIELD))})")
    ftype = spec.get("type", "any")
    if ftype not in TYPES:
        no(f"type {ftype!r} is not one of {', '.join(TYPES)}")
    for flag in ("required", "exclusive_min", "exclusive_max"):
        if not isinstance(spec.get(flag, False), bool):
            no(f"{flag} must be true or false")
    severity = spec.get("severity", "reject")
    if severity not in SEVERITIES:
        no(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    role = spec.get("role", "")
    if role and role not in ROLES:
        no(f"role {role!r} is not one of {', '.join(ROLES)}")
    elif role and ftype not in _ROLE_TYPES[role]:
        no(f"role {role!r} needs type {' or '.join(sorted(_ROLE_TYPES[role]))}, not {ftype!r}")
    case = spec.get("case", "")
    if case not in ("", "lower"):
        no('case must be "lower" (or left out)')
    enum = spec.get("enum")
    if enum is not None:
        if ftype != "string" or not isinstance(enum, list) or not enum or not all(isinstance(v, str) for v in enum):
            no("enum must be a non-empty list of strings, on a string field")
            enum = None
        elif any(v != v.strip() or (case == "lower" and v != v.lower()) for v in enum):
            no("enum values must be written as stored: stripped (and lower-case with case = \"lower\")")
    pattern = spec.get("pattern", "")
    if pattern:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            no(f"pattern does not compile: {exc}")
        if ftype not in ("string", "id"):
            no("pattern applies to string and id fields only")
    bounds = {k: spec.get(k) for k in ("min", "max")}
    for k, v in bounds.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            no(f"{k} must be a number")
        elif v is not None and ftype not in ("number", "integer"):
            no(f"{k} applies to number and integer fields only")
    lo, hi = bounds["min"], bounds["max"]
    if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
        no("min is above max")
    max_length = spec.get("max_length")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        no("max_length must be a whole number >= 1")
    when = _condition(spec.get("when", {}), f"{where}.when", err)
    if problems or when is None:
        return None
    return Field(name, ftype, bool(spec.get("required", False)), severity, role,
                 frozenset(enum) if enum else None, case, pattern,
                 None if lo is None else float(lo), None if hi is None else float(hi),
                 bool(spec.get("exclusive_min", False)), bool(spec.get("exclusive_max", False)),
                 max_length, when, str(spec.get("description", "")))


def _condition(raw: Any, where: str, err: Any) -> Condition | None:
    if not isinstance(raw, dict) or not all(
            isinstance(vs, list) and vs and all(isinstance(v, str) for v in vs) for vs in raw.values()):
        err(where, 'must be a table of FIELD = ["value", ...] (non-empty lists of strings)')
        return None
    return tuple((name, frozenset(values)) for name, values in raw.items())


def _rule(i: int, spec: Any, names: set[str], err: Any) -> Rule | None:
    where = f"rules[{i}]"
    if not isinstance(spec, dict):
        err(where, "must be a table")
        return None
    ok = True
    for key in sorted(set(spec) - _RULE):
        err(where, f"unknown key {key!r} (expected one of {', '.join(sorted(_RULE))})")
        ok = False
    name = spec.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
        err(f"{where}.name", "required: letters, digits, '_', '.', '-'")
        ok = False
    when = _condition(spec.get("when"), f"{where}.when", err)
    if when is not None:
        for cond_field, _ in when:
            if cond_field not in names:
                err(f"{where}.when", f"names {cond_field!r}, which is not a field of this contract")
                ok = False
    require = spec.get("require")
    if not isinstance(require, list) or not require or not all(isinstance(r, str) for r in require):
        err(f"{where}.require", "must be a non-empty list of field names")
        ok = False
    else:
        for r in require:
            if r not in names:
                err(f"{where}.require", f"names {r!r}, which is not a field of this contract")
                ok = False
    severity = spec.get("severity", "warn")
    if severity not in SEVERITIES:
        err(f"{where}.severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")
        ok = False
    if not ok or when is None:
        return None
    return Rule(str(name), when, tuple(str(r) for r in require or ()), severity, str(spec.get("description", "")))


def read_contract(path: Path) -> Contract:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError([f"{path}: cannot be read: {exc}"]) from None
    return parse_contract(text, str(path))


def check_file(path: Path) -> list[str]:
    """The mistakes in a contract file, one line each; [] when it can be used."""
    try:
        read_contract(path)
    except ContractError as exc:
        return exc.errors
    return []


def shipped() -> dict[str, Contract]:
    """Contract v1: behaviour, product and transaction (a new dict; the files are read once)."""
    return {c.stream: c for c in _shipped()}


@functools.cache
def _shipped() -> tuple[Contract, ...]:
    return tuple(read_contract(p) for p in sorted(SHIPPED_DIR.glob("*.toml")))


def load(directory: Path | None) -> dict[str, Contract]:
    """The shipped contracts, with the directory's files added or in their place. Raises
    ContractError listing every mistake of every file (and two files naming one stream)."""
    contracts = shipped()
    if directory is None:
        return contracts
    if not directory.is_dir():
        raise ContractError([f"{directory}: STOCKTAKE_CONTRACTS names no directory"])
    errors: list[str] = []
    mine: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            c = read_contract(path)
        except ContractError as exc:
            errors += exc.errors
            continue
        if c.stream in mine:
            errors.append(f"{path}: stream {c.stream!r} already has a contract in {mine[c.stream]}")
            continue
        mine[c.stream] = path
        contracts[c.stream] = c
    if errors:
        raise ContractError(errors)
    return contracts


class ContractBook:
    """The contract each stream is judged under; re-read when the directory changes."""

    def __init__(self, directory: Path | None, *, check_every_s: float = 2.0):
        self.directory = directory
        self.check_every_s = check_every_s
        self.contracts = load(directory)
        self._stamp = self._files_stamp()
        self._checked = time.monotonic()

    def get(self, stream: str) -> Contract:
        if self.directory is not None and time.monotonic() - self._checked >= self.check_every_s:
            self.reload()
        c = self.contracts.get(stream)
        if c is None:
            c = self.contracts[stream] = schemaless(stream)
        return c

    def reload(self) -> list[str]:
        """Re-read the directory if a file changed; the streams whose contract changed."""
        self._checked = time.monotonic()
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return []
        self._stamp = stamp
        try:
            fresh = load(self.directory)
        except ContractError as exc:
            log.error("contracts not reloaded, the last good ones stay in force: %s", exc)
            return []
        changed = [s for s, c in fresh.items() if self.contracts.get(s) != c]
        gone = [s for s, c in self.contracts.items() if s not in fresh and not c.schemaless]
        self.contracts = {**{s: c for s, c in self.contracts.items() if c.schemaless and s not in fresh}, **fresh}
        for stream in changed + gone:
            c = self.get(stream)
            log.warning("contract of %s is now version %s (%s)", stream, c.version, c.origin)
        return changed + gone

    def declared(self) -> Mapping[str, Contract]:
        """Streams with a contract (shipped or the user's)."""
        return {s: c for s, c in self.contracts.items() if not c.schemaless}

    def _files_stamp(self) -> tuple[tuple[str, int, int], ...]:
        if self.directory is None or not self.directory.is_dir():
            return ()
        out = []
        for p in sorted(self.directory.glob("*.toml")):
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(out)


# ---------------------------------------------------------------- writing contracts

def to_toml(c: Contract) -> str:
    """A contract as the TOML ``parse_contract`` reads (what `stocktake contract infer` writes)."""
    doc: dict[str, Any] = {"stream": c.stream, "version": c.version}
    if c.key:
        doc["key"] = c.key
    if c.description:
        doc["description"] = c.description
    doc["fields"] = {f.name: _field_doc(f) for f in c.fields}
    if c.rules:
        doc["rules"] = [{k: v for k, v in (
            ("name", r.name), ("when", _cond_doc(r.when)), ("require", list(r.require)),
            ("severity", r.severity), ("description", r.description)) if v} for r in c.rules]
    return tomli_w.dumps(doc)


def _cond_doc(when: Condition) -> dict[str, list[str]]:
    return {name: sorted(values) for name, values in when}


def _field_doc(f: Field) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": f.type}
    pairs: Iterable[tuple[str, Any]] = (
        ("required", f.required), ("severity", f.severity if f.severity != "reject" else None),
        ("role", f.role), ("case", f.case), ("enum", sorted(f.enum) if f.enum else None),
        ("pattern", f.pattern), ("min", f.min), ("max", f.max), ("exclusive_min", f.exclusive_min),
        ("exclusive_max", f.exclusive_max), ("max_length", f.max_length),
        ("when", _cond_doc(f.when) if f.when else None), ("description", f.description))
    doc.update((k, v) for k, v in pairs if not (v is None or v is False or v == ""))  # 0 is a bound
    return doc


# ---------------------------------------------------------------- the contract in the store

CONTRACT_FIELD_COLUMNS = ["prefix", "stream", "version", "field", "rule", "type", "required", "severity",
                          "role", "position", "origin", "published_at"]


def contract_rows(prefix: str, c: Contract, published_at: Any) -> list[list[Any]]:
    """The contract_fields rows (migration 012) of a contract: one per field, one per field a
    conditional rule requires; a schemaless stream's one row names no field."""
    if c.schemaless:
        return [[prefix, c.stream, c.version, "", "", "", 0, "", "", 0, c.origin, published_at]]
    rows = [[prefix, c.stream, c.version, f.name, "", f.type, int(f.required), f.severity, f.role, i, c.origin,
             published_at] for i, f in enumerate(c.fields)]
    rows += [[prefix, c.stream, c.version, name, r.name, c.by_name[name].type, 0, r.severity, "", 0, c.origin,
              published_at] for r in c.rules for name in r.require]
    return rows
