"""Data contracts, compiled: what one stream's events must carry, judged per event.

A ``Contract`` is data (read from TOML by processors/contract_spec.py: the shipped contract
v1 for behaviour/product/transaction, user files in STOCKTAKE_CONTRACTS). ``compile`` turns
it into one function per stream, the worker's hot path: a list of field steps built once,
so judging an event is a few closure calls, no lookups in the contract.

Each check has a severity. ``reject`` raises (the event becomes a dead letter with a stable
reason code: ``missing_field:<f>``, ``invalid_type:<f>``, ``invalid_value:<f>``,
``invalid_ts``); ``warn`` keeps the event valid and adds the same code to its
``warnings`` (a conditional rule's code also names the rule: ``missing_field:product_id@
product_events_name_the_product``). A stream without a contract is judged schemaless:
every JSON object is valid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from stocktake.processors.decode import FLOAT_RE, INT_RE, TS_BAD, TS_SEEN, Rejected, parse_ts_ms, show, ts_pair

# Bounds on what one hostile event can make us keep. Ids and `source` are stored in their own
# columns, remembered by the dedupe window and name assets: longer ones are rejected
# (invalid_value:<name>).
MAX_ID_CHARS = 256
MAX_SOURCE_CHARS = 256
# Ids sent as JSON numbers must be exact: orjson reads integers beyond 64 bits as floats, and
# a float above 2**53 is not the number that was written (2**64 + 1 reads as 2**64).
MAX_EXACT_FLOAT_ID = 2**53
# Integer fields (quantity, stock): counts, at most a signed 64-bit integer.
MAX_INT_FIELD = 2**63 - 1

TYPES = ("id", "string", "number", "integer", "timestamp", "boolean", "object", "array", "any")
ROLES = ("event_id", "time", "kind", "source", "user_id", "product_id", "order_id")
SEVERITIES = ("reject", "warn")
SCHEMALESS = "schemaless"  # the version of a stream judged without a contract
# Where a schemaless event's time is looked for: these names in this order, then the fields
# named like a time (TIME_SUFFIXES: review_creation_date, order_purchase_timestamp) in the
# event's own order; the first that parses wins. Without one, the Kafka record's timestamp.
TIME_FIELDS = ("ts", "timestamp", "event_time", "eventTime", "time", "@timestamp", "created_at", "datetime")
TIME_SUFFIXES = ("_ts", "_at", "_time", "_timestamp", "_date", "_datetime", "Time", "Date", "Timestamp")

Condition = tuple[tuple[str, frozenset[str]], ...]  # every (field, values) holds


class Event(NamedTuple):
    event_id: str  # "" when the contract names none (no dedupe then)
    kind: str  # the value of its contract's kind field (behaviour: event_type, ...); "" if none
    source: str
    user_id: str  # "" when absent / not applicable
    product_id: str  # "" when absent
    order_id: str  # "" when absent
    ts_ms: int  # event time, epoch milliseconds UTC; -1: the event names none (judge fills it in)
    fields: dict[str, Any]  # whole event normalized; unknown extra fields kept as they came
    warnings: tuple[str, ...] = ()  # codes of the `warn` checks it breached


@dataclass(frozen=True)
class Field:
    name: str
    type: str = "any"
    required: bool = False
    severity: str = "reject"
    role: str = ""
    enum: frozenset[str] | None = None
    case: str = ""  # "lower": values are lower-cased (and stored so) before enum/pattern
    pattern: str = ""  # the whole (stripped) value must match
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    max_length: int | None = None
    when: Condition = ()  # judged only on events where these hold (product attributes: op upsert)
    description: str = ""


@dataclass(frozen=True)
class Rule:
    """A conditional requirement: events where ``when`` holds must carry ``require``."""

    name: str
    when: Condition
    require: tuple[str, ...]
    severity: str = "warn"
    description: str = ""


@dataclass(frozen=True)
class Contract:
    stream: str
    version: str
    fields: tuple[Field, ...] = ()
    rules: tuple[Rule, ...] = ()
    key: str = ""  # what producers key (and so partition) messages by
    description: str = ""
    origin: str = ""  # the file it came from ("shipped: …" for the defaults)
    schemaless: bool = False
    by_name: dict[str, Field] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update((f.name, f) for f in self.fields)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)

    @property
    def names(self) -> frozenset[str]:
        """The contract's fields; any other field is an extra, kept and inventoried."""
        return frozenset(self.by_name)

    def role(self, role: str) -> str:
        """The field holding ``role`` ("" if none)."""
        return next((f.name for f in self.fields if f.role == role), "")

    @property
    def kind_field(self) -> str:
        """The field whose value names a sub-asset: behaviour/event_type=view."""
        return self.role("kind")

    def kind_asset(self, kind: str) -> str:
        return f"{self.stream}/{self.kind_field}={kind}"

    @cached_property
    def judge(self) -> Callable[[dict[str, Any]], Event | Rejected]:
        return _schemaless if self.schemaless else compile_contract(self)


def schemaless(stream: str) -> Contract:
    return Contract(stream, SCHEMALESS, origin="no contract", schemaless=True)


def normalize(contract: Contract, obj: Any) -> Event | Rejected:
    """Validate and normalize one event under ``contract``."""
    if type(obj) is not dict:
        return Rejected("not_an_object", f"event is {type(obj).__name__}, not an object")
    return contract.judge(obj)


# ---------------------------------------------------------------- checks of one value

class _Bad(Exception):
    # Internal control flow: the happy path pays nothing for try/except in 3.11.
    def __init__(self, reason: str, detail: str) -> None:
        self.rejected = Rejected(reason, detail)


def _missing(name: str) -> _Bad:
    return _Bad(f"missing_field:{name}", f"field {name!r} is missing or empty")


def _too_long(name: str, limit: int) -> _Bad:
    return _Bad(f"invalid_value:{name}", f"field {name!r}: longer than {limit} characters")


_MAX_ID_INT = 10**MAX_ID_CHARS - 1  # larger ints have more digits than an id may


def _as_id(v: Any, name: str) -> str:
    t = type(v)
    if t is str:
        s = v.strip()
    elif t is int:
        if not -_MAX_ID_INT <= v <= _MAX_ID_INT:  # str() would be too long (or refuse)
            raise _too_long(name, MAX_ID_CHARS)
        s = str(v)
    elif t is float and v.is_integer():  # 12.0 -> "12"; bool is excluded by `type is`
        if not -MAX_EXACT_FLOAT_ID <= v <= MAX_EXACT_FLOAT_ID:
            raise _Bad(f"invalid_value:{name}", f"field {name!r}: {show(v)} is too large to be an exact "
                                                "id as a JSON number (send it as a string)")
        return str(int(v))
    else:
        raise _Bad(f"invalid_type:{name}", f"field {name!r}: {show(v)} is not an id")
    if len(s) > MAX_ID_CHARS:
        raise _too_long(name, MAX_ID_CHARS)
    return s


def _str(v: Any, name: str) -> str:
    if type(v) is not str:
        raise _Bad(f"invalid_type:{name}", f"field {name!r}: {show(v)} is not a string")
    return v.strip()


def _number_reader(spec: Field) -> Callable[[Any], int | float]:
    """A finite number (numeric strings accepted) within the field's bounds; int if integer."""
    name, integer = spec.name, spec.type == "integer"
    lo, hi, lo_open, hi_open = spec.min, spec.max, spec.exclusive_min, spec.exclusive_max

    def read(v: Any) -> int | float:
        x: Any = v
        try:
            if type(v) is str:
                s = v.strip()
                x = int(s) if INT_RE.fullmatch(s) else float(s) if FLOAT_RE.fullmatch(s) else None
            t = type(x)  # bool/None/containers fall through to the error below
            if t is float and math.isfinite(x) and (not integer or x.is_integer()):
                x = int(x) if integer else x
            elif t is int:
                x = x if integer else float(x)
            else:
                x = None
        except (ValueError, OverflowError):  # > 4300 digits, or an int too big for a float
            x = None
        if integer and x is not None and abs(x) > MAX_INT_FIELD:  # beyond 64 bits: no count is that large
            x = None
        if (x is None or (lo is not None and (x <= lo if lo_open else x < lo))
                or (hi is not None and (x >= hi if hi_open else x > hi))):
            raise _Bad(f"invalid_value:{name}", f"field {name!r}: {show(v)} is not a valid {name}")
        return x
    return read


_KINDS_OF = {"boolean": (bool,), "object": (dict,), "array": (list,)}


# ---------------------------------------------------------------- compiling a contract

Step = Callable[[dict[str, Any], dict[str, Any], list[str]], Any]


def _absent(v: Any) -> bool:
    return v is None or (type(v) is str and not v.strip())


def _string_step(spec: Field) -> Step:
    """Strings: stripped; lower-cased if asked; enum, pattern and length checked; stored so.
    A value seen before is one dict lookup (the vocabulary of kind fields is small; the
    cache is bounded against garbage)."""
    name, required = spec.name, spec.required
    limit = spec.max_length if spec.max_length is not None else (MAX_SOURCE_CHARS if spec.role == "source" else None)
    constrained = bool(spec.enum or spec.pattern or spec.case or limit is not None or spec.role)
    if not constrained and not required:
        def check_type(o: dict[str, Any], f: dict[str, Any], w: list[str]) -> str:
            v = o.get(name)  # an optional free-text field is kept as it came
            if v is not None and type(v) is not str:
                raise _Bad(f"invalid_type:{name}", f"field {name!r}: {show(v)} is not a string")
            return v or ""
        return check_type
    enum, lower = spec.enum, spec.case == "lower"
    pattern = re.compile(spec.pattern) if spec.pattern else None
    cache: dict[str, str] = {e: e for e in enum or ()}  # raw value -> canonical (enum values are)

    def canonical(v: Any) -> str:
        if v is None:
            raise _missing(name)
        s = _str(v, name)
        if not s:
            raise _missing(name)
        if lower:
            s = s.lower()
        if limit is not None and len(s) > limit:
            raise _too_long(name, limit)
        if enum is not None and s not in enum:
            raise _Bad(f"invalid_value:{name}", f"field {name!r}: {show(v)} not in {sorted(enum)}")
        if pattern is not None and not pattern.fullmatch(s):
            raise _Bad(f"invalid_value:{name}", f"field {name!r}: {show(v)} is not valid")
        return s

    def check(o: dict[str, Any], f: dict[str, Any], w: list[str]) -> str:
        v: Any = o.get(name)
        if type(v) is str:
            s = cache.get(v)
            if s is not None:
                f[name] = s
                return s
        if not required and _absent(v):
            return ""
        s = f[name] = canonical(v)
        # A small vocabulary is remembered; a long padded value is judged, not kept.
        if (enum is not None or pattern is not None or lower) and len(v) <= 64:
            if len(cache) >= 10_000:
                cache.clear()
            cache[v] = s
        return s
    check.cache = cache  # type: ignore[attr-defined]  # read by the generated judge's fast path
    return check


def _id_step(spec: Field) -> Step:
    name, required = spec.name, spec.required
    pattern = re.compile(spec.pattern) if spec.pattern else None

    def check(o: dict[str, Any], f: dict[str, Any], w: list[str]) -> str:
        v = o.get(name)
        if v is None:
            if required:
                raise _missing(name)
            return ""
        s = f[name] = _as_id(v, name)
        if not s and required:
            raise _missing(name)
        if pattern is not None and s and not pattern.fullmatch(s):
            raise _Bad(f"invalid_value:{name}", f"field {name!r}: {show(v)} is not valid")
        return s
    return check


def _ts_step(spec: Field) -> Step:
    name, required = spec.name, spec.required
    bad = "invalid_ts" if name == "ts" else f"invalid_value:{name}"  # `invalid_ts`: contract v1's code

    def check(o: dict[str, Any], f: dict[str, Any], w: list[str]) -> int:
        v = o.get(name)
        if v is None or v == "":
            if required:
                raise _missing(name)
            return -1
        r = ts_pair(v)
        if r is None:
            if type(v) is str and not v.strip():  # checked only on failure: keeps the hot path lean
                if required:
                    raise _missing(name)
                return -1
            raise _Bad(bad, f"field {name!r}: {show(v)} is not a timestamp")
        f[name] = r[1]
        return r[0]
    return check


def _number_step(spec: Field) -> Step:
    name, required, read = spec.name, spec.required, _number_reader(spec)

    def check(o: dict[str, Any], f: dict[str, Any], w: list[str]) -> Any:
        v = o.get(name)
        if v is None or v == "":
            if required:
                raise _missing(name)
            return None
        x = f[name] = read(v)
        return x
    return check


def _plain_step(spec: Field) -> Step:
    """boolean / object / array / any: presence and JSON type only."""
    name, required = spec.name, spec.required
    kinds = _KINDS_OF.get(spec.type)

    def check(o: dict[str, Any], f: dict[str, Any], w: list[str]) -> Any:
        v = o.get(name)
        if v is None:
            if required:
                raise _missing(name)
            return None
        if kinds is not None and type(v) not in kinds:
            raise _Bad(f"invalid_type:{name}", f"field {name!r}: {show(v)} is not {spec.type}")
        return v
    return check


_STEPS: dict[str, Callable[[Field], Step]] = {
    "id": _id_step, "string": _string_step, "timestamp": _ts_step, "number": _number_step,
    "integer": _number_step, "boolean": _plain_step, "object": _plain_step, "array": _plain_step,
    "any": _plain_step,
}
_EMPTY_OF = {"timestamp": -1, "id": "", "string": ""}


def _warned(spec: Field, step: Step) -> Step:
    """``step`` for a ``warn`` field: a breach is a warning and the field reads as empty."""
    empty = _EMPTY_OF.get(spec.type)

    def warned(o: dict[str, Any], f: dict[str, Any], w: list[str]) -> Any:
        try:
            return step(o, f, w)
        except _Bad as e:
            w.append(e.rejected.reason)
            return empty
    return warned


# ---------------------------------------------------------------- fast paths, generated

# An id sent as a JSON integer in this range is its decimal text (short of every limit).
_FAST_INT_ID = 10**18


def _fast_lines(i: int, spec: Field, step: Step, ns: dict[str, Any]) -> list[str]:
    """Code that sets ``v{i}`` for plain field ``i``: the common, clean value judged inline, and
    anything else handed to the field's step ``s{i}``. The inline test accepts only values the
    step accepts unchanged-or-normalized the same way, so the verdict is the step's (a
    property test holds the two judges equal); it saves the step's calls, most of judging."""
    name, fallback = repr(spec.name), ["        else:", f"            v{i} = s{i}(o, f, w)"]
    get = f"        x = o.get({name})"
    if spec.type == "id":
        test = f"y and len(y) <= {MAX_ID_CHARS}"
        if spec.pattern:
            ns[f"p{i}"] = re.compile(spec.pattern)
            test += f" and p{i}.fullmatch(y)"
        return [get, "        if type(x) is str:", "            y = x.strip()",
                f"        elif type(x) is int and -{_FAST_INT_ID} < x < {_FAST_INT_ID}:", "            y = str(x)",
                "        else:", "            y = ''",
                f"        if {test}:", f"            v{i} = f[{name}] = y", *fallback]
    if spec.type == "timestamp":  # a time string seen before: one lookup in decode's cache
        return [get, "        if type(x) is str and (y := _TS_SEEN.get(x)) is not None and y is not _TS_BAD:",
                f"            f[{name}] = y[1]", f"            v{i} = y[0]", *fallback]
    if spec.type == "string":
        cache = getattr(step, "cache", None)
        if cache is not None and (spec.enum or spec.pattern or spec.case):  # a value seen before
            ns[f"c{i}"] = cache
            return [get, f"        if type(x) is str and (y := c{i}.get(x)) is not None:",
                    f"            v{i} = f[{name}] = y", *fallback]
        if not (spec.required or spec.role or spec.max_length is not None):  # free text: type only
            return [get, f"        v{i} = x if type(x) is str else s{i}(o, f, w)"]
        limit = spec.max_length if spec.max_length is not None else MAX_SOURCE_CHARS if spec.role == "source" else None
        test = "" if limit is None else f" and len(y) <= {limit}"
        return [get, f"        if type(x) is str and (y := x.strip()){test}:", f"            v{i} = f[{name}] = y",
                *fallback]
    return [f"        v{i} = s{i}(o, f, w)"]


def compile_contract(c: Contract, *, fast: bool = True) -> Callable[[dict[str, Any]], Event | Rejected]:
    """The contract as one generated function: each field judged in turn (``fast``: its clean
    values inline, see _fast_lines; else by its step), conditions and rules inlined, so an
    event costs about what hand-written checks would. Conditions compare a field's
    (normalized) value with strings: a value of another type (a list, a number) never matches."""
    ns: dict[str, Any] = {"_new": tuple.__new__, "Event": Event, "_Bad": _Bad, "_missing": _missing,
                          "_TS_SEEN": TS_SEEN, "_TS_BAD": TS_BAD}
    body = ["def judge(o):", "    f = dict(o)", "    w = []", "    try:"]
    role_of: dict[str, str] = {}
    # Plain fields first, in the file's order; then the conditional ones, whose conditions
    # read the values the plain steps normalized (op "UPSERT" is "upsert" by then).
    order = sorted(range(len(c.fields)), key=lambda i: bool(c.fields[i].when))  # stable: file order within
    for i in order:
        spec = c.fields[i]
        if spec.role and spec.when:
            raise ValueError(f"{c.stream}: role field {spec.name!r} cannot be conditional")
        step = _STEPS[spec.type](spec)
        ns[f"s{i}"] = step if spec.severity == "reject" else _warned(spec, step)
        if spec.when:
            test = " and ".join(f"type(x := f.get({name!r})) is str and x in when{i}_{k}"
                                for k, (name, _) in enumerate(spec.when))
            ns.update((f"when{i}_{k}", values) for k, (_, values) in enumerate(spec.when))
            body += [f"        if {test}:", f"            s{i}(o, f, w)"]
        else:
            body += _fast_lines(i, spec, step, ns) if fast else [f"        v{i} = s{i}(o, f, w)"]
            if spec.role:
                role_of[spec.role] = f"v{i}"
    for j, rule in enumerate(c.rules):
        # Inlined: a rule costs a set lookup on events its condition leaves out (profiled: as a
        # call per rule and event it was a sixth of judging a behaviour event).
        ns.update((f"r{j}_{k}", values) for k, (_, values) in enumerate(rule.when))
        test = " and ".join(f"type(x := f.get({name!r})) is str and x in r{j}_{k}"
                            for k, (name, _) in enumerate(rule.when))
        body.append(f"        if {test}:")
        for name in rule.require:
            body += [f"            if (x := f.get({name!r})) is None or (type(x) is str and not x.strip()):",  # _absent
                     f"                w.append({f'missing_field:{name}@{rule.name}'!r})" if rule.severity == "warn"
                     else f"                raise _missing({name!r})"]  # reject: contract v1's reason code
    body += ["    except _Bad as e:", "        return e.rejected"]
    args = [role_of.get(r, '""') for r in ("event_id", "kind", "source", "user_id", "product_id", "order_id")]
    args += [role_of.get("time", "-1"), "f", "tuple(w) if w else ()"]
    body.append(f"    return _new(Event, ({', '.join(args)}))")  # tuple.__new__: no Python-level __new__
    # The text is ours: names enter it only as repr() literals, every value through `ns`.
    exec(compile("\n".join(body), f"<contract {c.stream} v{c.version}>", "exec"), ns)
    judge: Callable[[dict[str, Any]], Event | Rejected] = ns["judge"]
    return judge


# ---------------------------------------------------------------- schemaless streams

def _loose_id(v: Any) -> str:
    if v is None:
        return ""
    try:
        return _as_id(v, "")
    except _Bad:
        return ""


def _schemaless_time(o: dict[str, Any]) -> int:
    for name in TIME_FIELDS:
        v = o.get(name)
        if v is not None and (ms := parse_ts_ms(v)) is not None:
            return ms
    for name, v in o.items():
        # a string that is only digits is an id or a count, not a date (epoch times need a name above)
        if (type(name) is str and name.endswith(TIME_SUFFIXES) and type(v) is str and not v.isdigit()
                and (ms := parse_ts_ms(v)) is not None):
            return ms
    return -1


def _schemaless(o: dict[str, Any]) -> Event:
    """Any JSON object is valid. Ids, source and time are taken where the usual names carry
    usable values; the event is stored as it came."""
    ts = _schemaless_time(o)
    src = o.get("source")
    source = src.strip() if type(src) is str and len(src) <= MAX_SOURCE_CHARS else ""
    return Event(_loose_id(o.get("event_id")), "", source, _loose_id(o.get("user_id")),
                 _loose_id(o.get("product_id")), _loose_id(o.get("order_id")), ts, o)
