"""Reading a label out of what a model wrote: exactly one label, named unambiguously, or nothing."""

from __future__ import annotations

import re
import typing
import unicodedata


def literal_values(annotation) -> list[str] | None:
    """The labels of a `Literal[...]` field type, or None for any other type."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return None


def _edges(text: str) -> str:
    """NFKC, then strip whitespace, quotes, brackets and closing punctuation from both ends only:
    characters inside a label (`c#`, `c++`, `中性`) are never dropped."""
    text = unicodedata.normalize("NFKC", text).strip()
    while text and (unicodedata.category(text[0])[0] in "PZ" or text[0] in "`*"):
        text = text[1:]
    while text and (unicodedata.category(text[-1])[0] in "PZ" or text[-1] in "`*"):
        text = text[:-1]
    return text


def _spaced(label: str) -> str:
    """`NotMentioned`, `not-mentioned`, `not_mentioned` -> `not mentioned`."""
    return " ".join(re.sub(r"(?<=[a-z])(?=[A-Z])|[-_\s]+", " ", label).split())


def normalize_label(raw, labels: list[str]) -> str | None:
    """An answer maps to a label only when it names exactly one label unambiguously; anything else is
    None (counted invalid). Tolerated: surrounding whitespace, quotes and punctuation, case (unless two
    labels differ only by case), `NotMentioned` written `not mentioned`, and one label named inside a
    sentence as a whole word."""
    if raw is None:
        return None
    text = str(raw).strip()
    if text in labels:
        return text
    fold: dict[str, list[str]] = {}
    for label in labels:
        fold.setdefault(label.casefold(), []).append(label)
    caseless = all(len(v) == 1 for v in fold.values())  # labels that differ only by case: exact only
    core = _edges(text)
    for candidate in (text, core):  # `C#` is the label c#, not c with its '#' stripped
        if candidate in labels:
            return candidate
        if caseless and candidate.casefold() in fold:
            return fold[candidate.casefold()][0]
    spaced: dict[str, list[str]] = {}
    for label in labels:
        spaced.setdefault(_spaced(label).casefold() if caseless else _spaced(label), []).append(label)
    key = _spaced(core).casefold() if caseless else _spaced(core)
    if len(spaced.get(key, [])) == 1:
        return spaced[key][0]
    return _named_once(text, labels, caseless)


def _named_once(text: str, labels: list[str], caseless: bool) -> str | None:
    """Exactly one label named as a whole word (no letter or digit on either side); longer labels first,
    so "anti-stereotype" is not also read as "stereotype"."""
    remaining = unicodedata.normalize("NFKC", text)
    remaining = remaining.casefold() if caseless else remaining
    hits = []
    for label in sorted(labels, key=len, reverse=True):
        needle = label.casefold() if caseless else label
        pattern = re.compile(rf"(?<!\w){re.escape(needle)}(?!\w)")
        if pattern.search(remaining):
            hits.append(label)
            remaining = pattern.sub(" ", remaining)
    return hits[0] if len(hits) == 1 else None
