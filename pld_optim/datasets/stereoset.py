"""StereoSet (Nadeem et al. 2021) as classification, from the upstream dev.json layout or the Hub."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import datasets
import dspy

from pld_optim.datasets.common import (
    DEFAULT_FRACTIONS,
    SPLITS,
    DataError,
    blank,
    check_split,
    limited,
    load_hub,
    read_json,
    resolve_source,
    shared_data_dir,
    take_split,
    to_examples,
)

BIAS_TYPES = ["gender", "profession", "race", "religion"]
STEREOTYPE_LABELS = ["stereotype", "anti-stereotype", "unrelated"]
# StereoSet's four domains written as rules (its "race" covers nationality and ethnicity): the reference a
# student must be able to follow before PLD can help it (benchmarks/rule_following.py). Never shipped as rules.
REFERENCE_RULES = [
    "If the target is a nationality, a country, an ethnicity or the people of a region, answer race.",
    "If the target is an occupation, a job or a trade, answer profession.",
    "If the target is a religion, a religious group, a religious text or a religious figure, answer religion.",
    "If the target is a gender or a gendered role (a mother, a sister, a gentleman, a schoolboy), answer gender.",
]


def load_stereoset(source: str | Path | None = None, *, framing: str = "bias_type",
                   part: str = "intrasentence", split: str | None = None,
                   fractions=DEFAULT_FRACTIONS, limit: int | None = None) -> list[dspy.Example]:
    """framing="bias_type" (the paper's, most likely): context + the stereotype sentence -> gender,
    profession, race or religion; one example per item. framing="stereotype" (the classic task):
    context + each of the three sentences -> stereotype, anti-stereotype or unrelated.
    `source`: a dev.json in the upstream layout, a folder holding one, or a Hub dataset name.
    """
    check_split(split)  # also when the file holds no rows: a typo'd split must not read as an empty one
    if framing not in ("bias_type", "stereotype"):
        raise DataError(f"stereoset framing={framing!r}; choose 'bias_type' or 'stereotype'")
    parts = ["intrasentence", "intersentence"] if part == "both" else [part]
    if any(p not in ("intrasentence", "intersentence") for p in parts):
        raise DataError(f"stereoset part={part!r}; choose 'intrasentence', 'intersentence' or 'both'")
    rows = []
    for p in parts:
        for n, item in enumerate(_items(source, p)):
            rows += _rows(item, f"stereoset {p} item {n} (id {item.get('id') if isinstance(item, dict) else '?'})",
                          framing, p)
    data = take_split(datasets.Dataset.from_list(rows), split, fractions) if rows else []
    return to_examples(limited(data, limit), ["context", "sentence"]) if rows else []


def _rows(item, where: str, framing: str, part: str) -> list[dict]:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object, got {type(item).__name__}")
    for key in ("id", "bias_type", "context", "sentences"):
        if key not in item:
            raise DataError(f"{where}: missing field {key!r}")
    if item["bias_type"] not in BIAS_TYPES:
        raise DataError(f"{where}: unknown bias_type {item['bias_type']!r}, expected one of {BIAS_TYPES}")
    if blank(item["context"]):
        raise DataError(f"{where}: the context is empty or only whitespace")
    if item.get("split") not in (None, *SPLITS):
        raise DataError(f"{where}: split {item['split']!r} is not one of {SPLITS}")
    sentences = item["sentences"]
    labels = [s.get("gold_label") for s in sentences]
    extra = {"part": part, "split": item.get("split") or ""}
    if framing == "bias_type":
        if "stereotype" not in labels:
            raise DataError(f"{where}: no sentence with gold_label 'stereotype'")
        sentence = sentences[labels.index("stereotype")].get("sentence")
        if blank(sentence):
            raise DataError(f"{where}: the stereotype sentence is empty or only whitespace")
        return [{"id": item["id"], "context": item["context"], "sentence": sentence, "label": item["bias_type"],
                 **extra}]
    rows = []
    for s in sentences:
        if s.get("gold_label") not in STEREOTYPE_LABELS:
            raise DataError(f"{where}: sentence gold_label {s.get('gold_label')!r} is not one of {STEREOTYPE_LABELS}")
        if blank(s.get("sentence")):
            raise DataError(f"{where}: a sentence is empty or only whitespace")
        sid = hashlib.sha1(f"{item['id']}|{s['sentence']}".encode()).hexdigest()[:16]
        rows.append({"id": sid, "context": item["context"], "sentence": s["sentence"], "label": s["gold_label"],
                     "group": item["id"], **extra})
    return rows


def _items(source, part: str) -> list:
    source = resolve_source(source)
    path = Path(source) if source is not None else shared_data_dir() / "stereoset"
    if path.is_dir():
        path = path / "dev.json"
    if path.exists():
        doc = read_json(path)
        try:
            return list(doc["data"][part])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: expected {{'data': {{'{part}': [...]}}}} (upstream StereoSet layout)") from exc
    if source is None or re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)) is None:
        raise DataError(f"StereoSet not found at {path}; pass a dev.json path, a folder, or a Hub name")
    hub = load_hub(str(source), part, split="validation")
    names = STEREOTYPE_LABELS  # the Hub copy encodes gold labels as class ids in this order
    return [{"id": r["id"], "target": r["target"], "bias_type": r["bias_type"], "context": r["context"],
             "sentences": [{"sentence": s, "gold_label": names[g] if isinstance(g, int) else g}
                           for s, g in zip(r["sentences"]["sentence"], r["sentences"]["gold_label"])]}
            for r in hub]
