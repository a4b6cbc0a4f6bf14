"""Semantic field types with the text model (issue #15 item 3): processors/field_types.py decides,
this module hands it the similarities of each field with the types' prototype phrases.

    typer = FieldTyper(TextEncoder(export_text_encoder(dir)))   # embeds the prototypes once
    typer.classify([("customer_city", ["sao paulo", "curitiba"]), ("price", [19.9, 5.0])])
    # -> [FieldType("city", 0.99, "city: values 0.50 (2/2 text), ...", "city"), FieldType("price_amount", ...)]

Per field two texts are embedded, the name as words ("customer city") and name + values
("customer city: sao paulo, curitiba"); a type's similarity is the mean of the two best cosines with
its phrases (`NAME_SHARE`). ``name_share=1.0`` embeds the name alone: one short text per field,
cached for as long as the field exists. All new texts of a call are encoded in one batch; embeddings
are kept in a bounded LRU keyed by text, so re-classifying an inventory costs only what changed.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from stocktake.models.encoder import TextEncoder
from stocktake.processors.field_types import (
    MIN_CONFIDENCE,
    TYPES,
    FieldType,
    decide,
    field_text,
    name_text,
)
from stocktake.processors.field_vocab import PROTOTYPES

NAME_SHARE = 0.5  # weight of the name-only text against name + values
CACHE_SIZE = 20_000  # texts (1.5 KB each as float32)


class FieldTyper:
    """Classifies fields with one encoder; holds the prototype embeddings and a text cache."""

    def __init__(self, encoder: TextEncoder, *, name_share: float = NAME_SHARE, cache_size: int = CACHE_SIZE):
        if not 0.0 <= name_share <= 1.0:
            raise ValueError("name_share must be within [0, 1]")
        self.encoder = encoder
        self.name_share = name_share
        self.cache_size = cache_size
        phrases = [p for t in TYPES for p in PROTOTYPES[t]]
        counts = [len(PROTOTYPES[t]) for t in TYPES]
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
        self._protos = encoder.encode(phrases)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[n, dim] embeddings; texts not in the cache are encoded in one call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vec in zip(missing, self.encoder.encode(missing), strict=True):
                self._cache[text] = vec
        out = np.stack([self._cache[t] for t in texts]) if texts else np.empty((0, self._protos.shape[1]))
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def clear_cache(self) -> None:
        self._cache.clear()

    def type_similarity(self, vectors: np.ndarray) -> np.ndarray:
        """[n, len(TYPES)]: per type, the best cosine with one of its phrases."""
        return np.maximum.reduceat(vectors @ self._protos.T, self._starts, axis=1)

    def similarities(self, fields: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, float]]:
        """Per field, type -> similarity: ``name_share`` x the name's + the rest x name + values'."""
        names = [name_text(name) for name, _ in fields]
        texts = [field_text(name, values) for name, values in fields] if self.name_share < 1.0 else []
        sims = self.type_similarity(self.embed(names + texts))
        mixed = sims[:len(fields)]
        if texts:
            mixed = self.name_share * mixed + (1.0 - self.name_share) * sims[len(fields):]
        return [dict(zip(TYPES, row.tolist(), strict=True)) for row in mixed]

    def classify(self, fields: Sequence[tuple[str, Sequence[Any]]], *, rules: bool = True,
                 min_confidence: float = MIN_CONFIDENCE) -> list[FieldType]:
        """One FieldType per (name, sampled values); ``rules=False``: the text model alone."""
        sims = self.similarities(fields)
        return [decide(name, values, s, rules=rules, min_confidence=min_confidence)
                for (name, values), s in zip(fields, sims, strict=True)]


_TYPERS: weakref.WeakKeyDictionary[TextEncoder, FieldTyper] = weakref.WeakKeyDictionary()


def classify_fields(fields: Sequence[tuple[str, Sequence[Any]]], encoder: TextEncoder) -> list[FieldType]:
    """Semantic type of each (name, values); the encoder's FieldTyper (and so its prototype
    embeddings and text cache) is made once per encoder and dropped with it."""
    typer = _TYPERS.get(encoder)
    if typer is None:
        typer = _TYPERS[encoder] = FieldTyper(encoder)
    return typer.classify(fields)
