"""The store's DDL for a ClickHouse cluster (``STOCKTAKE_CLICKHOUSE_CLUSTER``).

The same statements as on one server, run on every server of the named cluster (its
``remote_servers`` entry) and replicated:

- every DDL statement gets ``ON CLUSTER '<name>'`` after the object it names;
- every MergeTree-family engine becomes its Replicated twin, with no arguments: the servers'
  ``default_replica_path`` and ``default_replica_name`` (by default
  ``/clickhouse/tables/{uuid}/{shard}`` and ``{replica}``) place it in Keeper;
- ``non_replicated_deduplication_window`` (migration 010: a retried insert's token is stored
  once) becomes ``replicated_deduplication_window``, whose tokens live in Keeper and so hold
  across replicas: a retry that reaches another replica is still stored once.

Nothing else changes; tests/test_cluster_ddl.py holds every migration to its single-server
text, those clauses aside. One shard with any number of replicas: every server holds every
row, so the rollups' reads are unchanged. Sharding across servers would need Distributed
tables in front of every table the readers name; it is not done (README: Past one server).
"""

from __future__ import annotations

import re

_COMMENTS = r"^(?:\s+|--[^\n]*(?:\n|$))*"
# What a DDL statement names, up to the object's name: ON CLUSTER goes right after it.
_OBJECT = re.compile(
    _COMMENTS + r"(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?(?:TABLE|VIEW|DICTIONARY)"
    r"|ALTER\s+TABLE|DROP\s+(?:TABLE|VIEW|DICTIONARY)|TRUNCATE\s+TABLE)"
    r"(?:\s+IF\s+(?:NOT\s+)?EXISTS)?\s+[A-Za-z_][\w.]*",
    re.I)
_DDL = re.compile(_COMMENTS + r"(?:CREATE|ALTER|DROP|TRUNCATE|RENAME)\b", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*((?:Replacing|Aggregating|Summing|Collapsing|VersionedCollapsing)?MergeTree)\b")


def is_ddl(sql: str) -> bool:
    return bool(_DDL.match(sql))


def on_cluster(sql: str, cluster: str) -> str:
    """``sql`` (one DDL statement of this project) for the cluster ``cluster``."""
    found = _OBJECT.match(sql)
    if found is None:
        raise ValueError(f"cannot place ON CLUSTER in: {sql.strip()[:80]}")
    out = f"{sql[:found.end()]} ON CLUSTER '{cluster}'{sql[found.end():]}"
    out = _ENGINE.sub(lambda engine: f"ENGINE = Replicated{engine.group(1)}", out)
    return out.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
