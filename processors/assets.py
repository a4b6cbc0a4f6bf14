"""Asset names: a stream, or a stream's slice by one key (its kind or its source).

The inventory, the detectors, the alerts and the dashboards name assets by
string, as the store's ``prefixed_assets`` view builds them:

- ``behaviour``: a stream asset (every event of the topic);
- ``behaviour/event_type=view``, ``product/op=upsert``,
  ``transaction/status=paid``: a sub-asset by the stream's kind;
- ``behaviour/source=web``: a sub-asset by source.

``Asset`` is that name parsed once, answering what callers used to ask of the
string (``"/" in name``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Asset:
    stream: str
    key: str = ""       # "" for a stream asset; else the slicing key (event_type | op | status | source)
    value: str = ""

    @staticmethod
    @functools.lru_cache(maxsize=4096)   # the detectors ask per asset and minute; names are few
    def parse(name: str) -> Asset:
        stream, sep, rest = name.partition("/")
        if not sep:
            return Asset(stream)
        key, _, value = rest.partition("=")
        return Asset(stream, key, value)

    @property
    def is_stream(self) -> bool:
        return not self.key

    @property
    def parent(self) -> Asset:
        """The stream asset this one slices (itself for a stream)."""
        return Asset(self.stream)

    @property
    def kind(self) -> str:
        """``stream`` or the slicing key: the inventory's asset kind."""
        return self.key or "stream"

    @property
    def label(self) -> str:
        """The name without its stream: ``event_type=view`` (a stream's own name)."""
        return f"{self.key}={self.value}" if self.key else self.stream

    def __str__(self) -> str:
        return f"{self.stream}/{self.key}={self.value}" if self.key else self.stream


def is_stream(name: str) -> bool:
    """Whether an asset name names a whole stream."""
    return Asset.parse(name).is_stream


def event_assets(stream: str, kind_key: str, kind: str, source: str) -> list[str]:
    """The assets an event counts in: its stream, its kind's slice (``kind_key``: the field its
    contract names sub-assets by), its source's slice; as ``prefixed_assets`` names them."""
    out = [stream]
    if kind and kind_key:
        out.append(str(Asset(stream, kind_key, kind)))
    if source:
        out.append(str(Asset(stream, "source", source)))
    return out
