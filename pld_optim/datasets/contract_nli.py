"""ContractNLI (Koreeda & Manning 2021): (NDA text, hypothesis) -> Entailment / Contradiction / NotMentioned."""

from __future__ import annotations

from pathlib import Path

import datasets
import dspy

from pld_optim.datasets.common import (
    DEFAULT_FRACTIONS,
    DataError,
    blank,
    check_split,
    limited,
    read_json,
    resolve_source,
    shared_data_dir,
    split_of,
    to_examples,
)

LABELS = ["Entailment", "Contradiction", "NotMentioned"]
REFERENCE_RULES = [
    "If the contract states what the hypothesis says, answer Entailment.",
    "If the contract states the opposite of what the hypothesis says, answer Contradiction.",
    "If the contract says nothing about what the hypothesis says, answer NotMentioned.",
]


def load_contract_nli(source: str | Path | None = None, *, file: str = "dev.json", split: str | None = None,
                      context: str = "window", max_context_tokens: int = 1024,
                      fractions=DEFAULT_FRACTIONS, limit: int | None = None) -> list[dspy.Example]:
    """context="full" passes the whole contract (median about 11k characters, ~3k tokens: too long for a
    small local student's context). context="window" keeps the contract spans most similar to the
    hypothesis (TF-IDF cosine), in document order, up to `max_context_tokens` (estimated at 4
    characters per token). Split hashing uses the document id, so a contract never straddles splits.
    """
    if context not in ("full", "window"):
        raise DataError(f"contract_nli context={context!r}; choose 'full' or 'window'")
    check_split(split)
    source = resolve_source(source)
    path = Path(source) if source is not None else shared_data_dir() / "contract_nli"
    if path.is_dir():
        path = path / file
    if not path.exists():
        raise DataError(f"ContractNLI file not found: {path}")
    doc = read_json(path)
    try:
        documents, hypotheses = doc["documents"], doc["labels"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: expected the official layout with 'documents' and 'labels'") from exc
    rows = []
    for d, document in enumerate(documents):
        if split not in (None, "all") and split_of(f"cnli-doc-{document.get('id')}", fractions) != split:
            continue
        rows += _pairs(document, hypotheses, f"{path}: document {d} (id {document.get('id')})", context,
                       max_context_tokens)
    data = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict(
        {"id": [], "contract": [], "hypothesis": [], "label": []})
    return to_examples(limited(data, limit), ["contract", "hypothesis"])


def _pairs(document: dict, hypotheses: dict, where: str, context: str, max_context_tokens: int) -> list[dict]:
    annotations = (document.get("annotation_sets") or [{}])[0].get("annotations")
    if not annotations or "text" not in document:
        raise DataError(f"{where} lacks text or annotations")
    if blank(document["text"]):
        raise DataError(f"{where}: the contract text is empty or only whitespace")
    spans = [document["text"][a:b] for a, b in document.get("spans", [])]
    rows = []
    for key, ann in annotations.items():
        if key not in hypotheses:
            raise DataError(f"{where} annotates unknown hypothesis {key!r}")
        if ann.get("choice") not in LABELS:
            raise DataError(f"{where} hypothesis {key}: label {ann.get('choice')!r} is not one of {LABELS}")
        entry = hypotheses[key]
        hypothesis = entry.get("hypothesis") if isinstance(entry, dict) else None
        if blank(hypothesis):
            raise DataError(f"{where} hypothesis {key}: the hypothesis text is missing, empty or only whitespace "
                            "(in the file's 'labels' section)")
        text = document["text"] if context == "full" else window(spans, hypothesis, max_context_tokens)
        rows.append({"id": f"{document.get('id')}-{key}", "contract": text, "hypothesis": hypothesis,
                     "label": ann["choice"]})
    return rows


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
