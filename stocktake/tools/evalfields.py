"""`stocktake eval-fields`: how well semantic field types (models/field_types.py)
match the hand-labelled fixture tests/data/field_types.json (every column of the shipped REES46 and
Olist samples, plus columns of public e-commerce schemas with invented values).

Four ways of deciding are compared, all through processors.field_types.decide:

- ``model``: value evidence + name rules + text-model similarity (what the library does);
- ``model_names``: the same, the text model reading the name alone (``name_share=1.0``);
- ``words``: value evidence + name rules + word overlap with the prototypes (no model needed);
- ``rules``: value evidence + name rules only (no name semantics at all);
- ``model_only``: text-model similarity alone (no value evidence, no veto).

Accuracy counts "unknown" as wrong unless the label is unknown; ``top1`` is the accuracy of the top
type before abstention. Throughput is classify() of all fixture fields after the encoder and the
prototype embeddings are loaded: ``cold`` with an empty text cache, ``warm`` with every text cached.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stocktake.models.encoder import TextEncoder, export_text_encoder
from stocktake.models.field_types import FieldTyper
from stocktake.processors.field_types import UNKNOWN, FieldType, decide, lexical_similarity

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "data" / "field_types.json"
MODES = ("model", "model_names", "words", "rules", "model_only")
BINS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0001)


def load_fixture(path: Path = FIXTURE) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"fixture not found: {path} (it lives in the repository's tests/data/)")
    fields: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["fields"]
    return fields


def predict(mode: str, fields: Sequence[dict[str, Any]], typer: FieldTyper | None) -> list[FieldType]:
    pairs = [(f["name"], f["values"]) for f in fields]
    if mode in ("model", "model_names", "model_only"):
        if typer is None:
            raise ValueError(f"mode {mode!r} needs the text model")
        if mode == "model_names":
            typer = FieldTyper(typer.encoder, name_share=1.0)
        return typer.classify(pairs, rules=mode != "model_only")
    if mode == "words":
        return [decide(name, values, lexical_similarity(name)) for name, values in pairs]
    if mode == "rules":
        return [decide(name, values) for name, values in pairs]
    raise ValueError(f"unknown mode {mode!r}")


def score(fields: Sequence[dict[str, Any]], predictions: Sequence[FieldType]) -> dict[str, Any]:
    """Accuracy overall, on the real and the invented columns, per labelled type (support,
    correct, accuracy), by confidence bin, and the list of mistakes."""
    per_type: dict[str, dict[str, Any]] = {}
    mistakes = []
    bins: list[dict[str, Any]] = [{"bin": f"{lo:.1f}-{min(hi, 1.0):.1f}", "n": 0, "correct": 0}
                                  for lo, hi in itertools.pairwise(BINS)]
    hits = {"all": [0, 0], "real": [0, 0], "invented": [0, 0]}
    top1 = 0
    for f, p in zip(fields, predictions, strict=True):
        ok = p.semantic_type == f["type"]
        top1 += p.top == f["type"]
        row = per_type.setdefault(f["type"], {"support": 0, "correct": 0})
        row["support"] += 1
        row["correct"] += ok
        for key in ("all", "real" if f.get("real") else "invented"):
            hits[key][0] += ok
            hits[key][1] += 1
        b = next(i for i, hi in enumerate(BINS[1:]) if p.confidence < hi)
        bins[b]["n"] += 1
        bins[b]["correct"] += p.top == f["type"]
        if not ok:
            mistakes.append({"source": f["source"], "name": f["name"], "type": f["type"],
                             "predicted": p.semantic_type, "top": p.top, "confidence": p.confidence,
                             "evidence": p.evidence})
    for row in per_type.values():
        row["accuracy"] = round(row["correct"] / row["support"], 3)
    for bin_ in bins:
        bin_["top1_accuracy"] = round(bin_["correct"] / bin_["n"], 3) if bin_["n"] else None
    return {"accuracy": {k: round(c / n, 3) if n else None for k, (c, n) in hits.items()},
            "top1": round(top1 / len(fields), 3), "n": len(fields),
            "abstained": sum(p.semantic_type == UNKNOWN for p in predictions),
            "per_type": dict(sorted(per_type.items())), "by_confidence": bins, "mistakes": mistakes}


def throughput(typer: FieldTyper, fields: Sequence[dict[str, Any]], repeat: int = 3) -> dict[str, float]:
    """fields/s of typer.classify over the fixture, the median of `repeat` runs."""
    pairs = [(f["name"], f["values"]) for f in fields]
    cold, warm = [], []
    for _ in range(repeat):
        typer.clear_cache()
        t0 = time.perf_counter()
        typer.classify(pairs)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        typer.classify(pairs)
        warm.append(time.perf_counter() - t0)
    n = len(pairs)
    return {"fields": n, "cold_fields_per_s": round(n / statistics.median(cold), 1),
            "warm_fields_per_s": round(n / statistics.median(warm), 1)}


def run(fixture: Path, encoder_dir: Path, device: str = "auto",
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    fields = load_fixture(fixture)
    t0 = time.perf_counter()
    path = export_text_encoder(encoder_dir)
    encoder = TextEncoder(path, device=device)
    typer = FieldTyper(encoder)
    say(f"encoder and prototypes ready in {time.perf_counter() - t0:.1f} s ({encoder.device})")
    report: dict[str, Any] = {"fixture": str(fixture), "device": encoder.device, "modes": {}}
    for mode in MODES:
        report["modes"][mode] = score(fields, predict(mode, fields, typer))
        say(f"{mode}: accuracy {report['modes'][mode]['accuracy']['all']}")
    report["throughput"] = throughput(typer, fields)
    report["throughput_names"] = throughput(FieldTyper(encoder, name_share=1.0), fields)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The README tables: per-type accuracy in each mode, then calibration and throughput."""
    modes = report["modes"]
    head = "| type | n | " + " | ".join(MODES) + " |"
    lines = [head, "|---|---|" + "---|" * len(MODES)]
    for t, row in modes["model"]["per_type"].items():
        cells = [f"{modes[m]['per_type'][t]['correct']}/{row['support']}" for m in MODES]
        lines.append(f"| {t} | {row['support']} | " + " | ".join(cells) + " |")
    for key in ("all", "real", "invented"):
        cells = [f"**{modes[m]['accuracy'][key]:.3f}**" for m in MODES]
        lines.append(f"| accuracy ({key}) | | " + " | ".join(cells) + " |")
    lines.append("| top-1 before abstaining | | " + " | ".join(f"{modes[m]['top1']:.3f}" for m in MODES) + " |")
    lines.append("| abstained (unknown) | | " + " | ".join(str(modes[m]["abstained"]) for m in MODES) + " |")
    lines += ["", "| confidence (model) | fields | top-1 accuracy |", "|---|---|---|"]
    lines += [f"| {b['bin']} | {b['n']} | {b['top1_accuracy'] if b['n'] else '-'} |"
              for b in modes["model"]["by_confidence"]]
    lines += [""]
    for key, what in (("throughput", "model"), ("throughput_names", "model_names")):
        tp = report[key]
        lines += [f"Throughput of {what} ({report['device']}, {tp['fields']} fields, encoder loaded): "
                  f"{tp['cold_fields_per_s']:.0f} fields/s with an empty text cache, "
                  f"{tp['warm_fields_per_s']:.0f} fields/s cached."]
    return "\n".join(lines)


def mistakes(report: dict[str, Any]) -> str:
    """The text model's wrong answers, a line each."""
    return "\n".join(f"- {m['source']} `{m['name']}`: {m['type']} -> {m['predicted']} ({m['confidence']:.2f}) "
                     f"{m['evidence']}" for m in report["modes"]["model"]["mistakes"])
