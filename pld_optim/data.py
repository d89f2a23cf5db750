"""Benchmark and user data as dspy.Examples, with deterministic hashed splits.

Local files are parsed here row by row (so a bad row is reported by file and line, never dropped) and
held as `datasets.Dataset`; a Hub name goes through `datasets.load_dataset` when the user is online.
Splits hash each example id: the same file always gives the same train/dev/test, whatever its order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path

import datasets
import dspy

SPLITS = ("train", "dev", "test")
DEFAULT_FRACTIONS = (0.5, 0.25, 0.25)
STEREOSET_BIAS_TYPES = ["gender", "profession", "race", "religion"]
STEREOSET_STEREOTYPE = ["stereotype", "anti-stereotype", "unrelated"]
CONTRACT_NLI_LABELS = ["Entailment", "Contradiction", "NotMentioned"]

# Each benchmark's own label definitions, written as rules: the reference a student must be able to follow
# before PLD can help it (benchmarks/rule_following.py). StereoSet's four domains (Nadeem et al. 2021, whose
# "race" covers nationality and ethnicity) and ContractNLI's three labels (Koreeda & Manning 2021).
REFERENCE_RULES = {
    "stereoset": [
        "If the target is a nationality, a country, an ethnicity or the people of a region, answer race.",
        "If the target is an occupation, a job or a trade, answer profession.",
        "If the target is a religion, a religious group, a religious text or a religious figure, answer religion.",
        "If the target is a gender or a gendered role (a mother, a sister, a gentleman, a schoolboy), answer gender.",
    ],
    "contract_nli": [
        "If the contract states what the hypothesis says, answer Entailment.",
        "If the contract states the opposite of what the hypothesis says, answer Contradiction.",
        "If the contract says nothing about what the hypothesis says, answer NotMentioned.",
    ],
}


class DataError(ValueError):
    """A data problem, always naming the file and the row or field."""


def shared_data_dir() -> Path:
    """`$PLD_OPTIM_DATA`, else `../shared/data` next to a source checkout, else `./shared/data`."""
    env = os.environ.get("PLD_OPTIM_DATA")
    if env:
        return Path(env)
    repo_sibling = Path(__file__).resolve().parents[2] / "shared" / "data"
    return repo_sibling if repo_sibling.exists() else Path("shared/data")


def resolve_source(source: str | Path | None) -> str | Path | None:
    """Every loader accepts what a config accepts: `package:NAME` is a file shipped in pld_optim/data."""
    if isinstance(source, str) and source.startswith("package:"):
        from importlib.resources import files

        return str(files("pld_optim").joinpath(f"data/{source.removeprefix('package:')}"))
    return source


def split_of(example_id: str, fractions=DEFAULT_FRACTIONS) -> str:
    """sha1(id) mapped to [0, 1) and cut at the cumulative fractions: stable and order-free. Rows that
    share a `group` (the three sentences of one StereoSet item) share a split, so no context leaks."""
    u = int(hashlib.sha1(str(example_id).encode()).hexdigest()[:12], 16) / float(1 << 48)
    edge = 0.0
    for name, share in zip(SPLITS, fractions):
        edge += share
        if u < edge:
            return name
    return SPLITS[-1]


def take_split(rows: datasets.Dataset, split: str | None, fractions=DEFAULT_FRACTIONS) -> datasets.Dataset:
    if split in (None, "all"):
        return rows
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS} or 'all'")
    keys = rows["group"] if "group" in rows.column_names else rows["id"]
    return rows.select([i for i, key in enumerate(keys) if split_of(key, fractions) == split])


def to_examples(rows: datasets.Dataset, input_fields: list[str]) -> list[dspy.Example]:
    return [dspy.Example(**row).with_inputs(*input_fields) for row in rows]


def _read_json(path: Path):
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


# --- StereoSet ---------------------------------------------------------------------------------------

def load_stereoset(source: str | Path | None = None, *, framing: str = "bias_type",
                   part: str = "intrasentence", split: str | None = None,
                   fractions=DEFAULT_FRACTIONS, limit: int | None = None) -> list[dspy.Example]:
    """StereoSet as classification.

    framing="bias_type" (the paper's, most likely): context + the stereotype sentence -> gender,
    profession, race or religion; one example per item. framing="stereotype" (the classic task):
    context + each of the three sentences -> stereotype, anti-stereotype or unrelated.
    `source`: a dev.json in the upstream layout, a folder holding one, or a Hub dataset name.
    """
    if framing not in ("bias_type", "stereotype"):
        raise DataError(f"stereoset framing={framing!r}; choose 'bias_type' or 'stereotype'")
    parts = ["intrasentence", "intersentence"] if part == "both" else [part]
    if any(p not in ("intrasentence", "intersentence") for p in parts):
        raise DataError(f"stereoset part={part!r}; choose 'intrasentence', 'intersentence' or 'both'")
    items = []
    for p in parts:
        items += [(p, item) for item in _stereoset_items(source, p)]
    rows = []
    for n, (p, item) in enumerate(items):
        where = f"stereoset {p} item {n} (id {item.get('id')})"
        for key in ("id", "bias_type", "context", "sentences"):
            if key not in item:
                raise DataError(f"{where}: missing field {key!r}")
        if item["bias_type"] not in STEREOSET_BIAS_TYPES:
            raise DataError(f"{where}: unknown bias_type {item['bias_type']!r}, expected one of {STEREOSET_BIAS_TYPES}")
        sentences = item["sentences"]
        labels = [s.get("gold_label") for s in sentences]
        if framing == "bias_type":
            if "stereotype" not in labels:
                raise DataError(f"{where}: no sentence with gold_label 'stereotype'")
            sentence = sentences[labels.index("stereotype")]["sentence"]
            rows.append({"id": item["id"], "context": item["context"], "sentence": sentence,
                         "label": item["bias_type"], "part": p})
        else:
            for s in sentences:
                if s.get("gold_label") not in STEREOSET_STEREOTYPE:
                    raise DataError(f"{where}: sentence gold_label {s.get('gold_label')!r} is not one of "
                                    f"{STEREOSET_STEREOTYPE}")
                sid = hashlib.sha1(f"{item['id']}|{s['sentence']}".encode()).hexdigest()[:16]
                rows.append({"id": sid, "context": item["context"], "sentence": s["sentence"],
                             "label": s["gold_label"], "part": p, "group": item["id"]})
    data = take_split(datasets.Dataset.from_list(rows), split, fractions)
    if limit:
        data = data.select(range(min(limit, len(data))))
    return to_examples(data, ["context", "sentence"])


def _stereoset_items(source, part: str) -> list[dict]:
    source = resolve_source(source)
    path = Path(source) if source is not None else shared_data_dir() / "stereoset"
    if path.is_dir():
        path = path / "dev.json"
    if path.exists():
        doc = _read_json(path)
        try:
            return list(doc["data"][part])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: expected {{'data': {{'{part}': [...]}}}} (upstream StereoSet layout)") from exc
    if source is None or re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)) is None:
        raise DataError(f"StereoSet not found at {path}; pass a dev.json path, a folder, or a Hub name")
    hub = datasets.load_dataset(str(source), part, split="validation")
    names = STEREOSET_STEREOTYPE  # the Hub copy encodes gold labels as class ids in this order
    return [{"id": r["id"], "target": r["target"], "bias_type": r["bias_type"], "context": r["context"],
             "sentences": [{"sentence": s, "gold_label": names[g] if isinstance(g, int) else g}
                           for s, g in zip(r["sentences"]["sentence"], r["sentences"]["gold_label"])]}
            for r in hub]


# --- ContractNLI ------------------------------------------------------------------------------------

def load_contract_nli(source: str | Path | None = None, *, file: str = "dev.json", split: str | None = None,
                      context: str = "window", max_context_tokens: int = 1024,
                      fractions=DEFAULT_FRACTIONS, limit: int | None = None) -> list[dspy.Example]:
    """(NDA text, hypothesis) -> Entailment / Contradiction / NotMentioned.

    context="full" passes the whole contract (median about 11k characters, ~3k tokens: too long for a
    small local student's context). context="window" keeps the contract spans most similar to the
    hypothesis (TF-IDF cosine), in document order, up to `max_context_tokens` (estimated at 4
    characters per token). Split hashing uses the document id, so a contract never straddles splits.
    """
    if context not in ("full", "window"):
        raise DataError(f"contract_nli context={context!r}; choose 'full' or 'window'")
    source = resolve_source(source)
    path = Path(source) if source is not None else shared_data_dir() / "contract_nli"
    if path.is_dir():
        path = path / file
    if not path.exists():
        raise DataError(f"ContractNLI file not found: {path}")
    doc = _read_json(path)
    try:
        documents, hypotheses = doc["documents"], doc["labels"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: expected the official layout with 'documents' and 'labels'") from exc
    rows = []
    for d, document in enumerate(documents):
        doc_split = split_of(f"cnli-doc-{document.get('id')}", fractions)
        if split not in (None, "all") and doc_split != split:
            continue
        annotations = (document.get("annotation_sets") or [{}])[0].get("annotations")
        if not annotations or "text" not in document:
            raise DataError(f"{path}: document {d} (id {document.get('id')}) lacks text or annotations")
        spans = [document["text"][a:b] for a, b in document.get("spans", [])]
        for key, ann in annotations.items():
            if key not in hypotheses:
                raise DataError(f"{path}: document {d} annotates unknown hypothesis {key!r}")
            if ann.get("choice") not in CONTRACT_NLI_LABELS:
                raise DataError(f"{path}: document {d} hypothesis {key}: label {ann.get('choice')!r} "
                                f"is not one of {CONTRACT_NLI_LABELS}")
            hypothesis = hypotheses[key]["hypothesis"]
            text = document["text"] if context == "full" else window(spans, hypothesis, max_context_tokens)
            rows.append({"id": f"{document.get('id')}-{key}", "contract": text, "hypothesis": hypothesis,
                         "label": ann["choice"]})
    if split not in (None, "all", *SPLITS):
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS} or 'all'")
    data = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict(
        {"id": [], "contract": [], "hypothesis": [], "label": []})
    if limit:
        data = data.select(range(min(limit, len(data))))
    return to_examples(data, ["contract", "hypothesis"])


def window(spans: list[str], query: str, max_tokens: int) -> str:
    """The spans most similar to the query, in document order, within a token budget."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    spans = [s.strip() for s in spans if s.strip()]
    if not spans:
        return ""
    matrix = TfidfVectorizer(stop_words="english").fit(spans + [query])
    sims = (matrix.transform(spans) @ matrix.transform([query]).T).toarray().ravel()
    budget, keep = max_tokens * 4, []
    for i in sims.argsort()[::-1]:
        if budget - len(spans[i]) < 0 and keep:
            continue
        keep.append(i)
        budget -= len(spans[i])
    return "\n".join(spans[i][: max_tokens * 4] for i in sorted(keep))


# --- your own data ----------------------------------------------------------------------------------

def load_generic(source: str | Path, *, inputs: dict[str, str] | list[str], label: str,
                 id_field: str | None = None, labels: list[str] | None = None, split: str | None = None,
                 fractions=DEFAULT_FRACTIONS, hub_split: str = "train", limit: int | None = None
                 ) -> list[dspy.Example]:
    """CSV, JSON lines or a Hub dataset. `inputs` maps program field -> column (a list keeps names).

    Rows missing a mapped column, or with a label outside `labels`, are errors naming the row.
    """
    mapping = {k: k for k in inputs} if isinstance(inputs, list) else dict(inputs)
    source = resolve_source(source)
    path = Path(source)
    if path.exists():
        rows = list(_read_rows(path))
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
        rows = [(n, dict(r)) for n, r in enumerate(datasets.load_dataset(str(source), split=hub_split), 1)]
    else:
        raise DataError(f"data file not found: {source}")
    out = []
    for n, row in rows:
        where = f"{source} row {n}"
        missing = [c for c in (*mapping.values(), label) if row.get(c) in (None, "")]
        if missing:
            raise DataError(f"{where}: missing value for column(s) {missing}")
        gold = str(row[label])
        if labels is not None and gold not in labels:
            raise DataError(f"{where}: label {gold!r} in column {label!r} is not one of {labels}")
        rid = str(row[id_field]) if id_field else hashlib.sha1(
            json.dumps([str(row[c]) for c in mapping.values()]).encode()).hexdigest()[:16]
        out.append({"id": rid, **{k: str(row[c]) for k, c in mapping.items()}, "label": gold})
    ids = {}
    for n, row in enumerate(out, 1):
        if row["id"] in ids:
            raise DataError(f"{source}: rows {ids[row['id']]} and {n} have the same id {row['id']!r}")
        ids[row["id"]] = n
    data = take_split(datasets.Dataset.from_list(out), split, fractions) if out else []
    if limit:
        data = data.select(range(min(limit, len(data))))
    return to_examples(data, list(mapping)) if out else []


def _read_rows(path: Path):
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    if path.suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n}: malformed JSON ({exc.msg}, column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
            yield n, row
    elif path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        for n, row in enumerate(reader, 2):  # line 1 is the header
            if None in row or any(v is None for v in row.values()):
                raise DataError(
                    f"{path} line {n}: {len(reader.fieldnames)} columns expected, row has a different count")
            yield n, row
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .jsonl")
