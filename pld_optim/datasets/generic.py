"""Your own data: CSV, JSON lines or a Hub dataset, mapped onto the program's input fields."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import datasets
import dspy

from pld_optim.datasets.common import (
    DEFAULT_FRACTIONS,
    DataError,
    blank,
    check_split,
    limited,
    load_hub,
    resolve_source,
    take_split,
    to_examples,
)
from pld_optim.files import FileFormatError, lines, read_text


def load_generic(source: str | Path, *, inputs: dict[str, str] | list[str], label: str,
                 id_field: str | None = None, labels: list[str] | None = None, split: str | None = None,
                 fractions=DEFAULT_FRACTIONS, hub_split: str = "train", limit: int | None = None
                 ) -> list[dspy.Example]:
    """`inputs` maps program field -> column (a list keeps the names). Rows missing a mapped column, with
    only whitespace in one, or with a label outside `labels`, are errors naming the row."""
    check_split(split)  # also when the file holds no rows: a typo'd split must not read as an empty one
    mapping = {k: k for k in inputs} if isinstance(inputs, list) else dict(inputs)
    source = resolve_source(source)
    path = Path(source)
    if path.exists():
        rows = list(_read_rows(path))
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
        rows = [(n, dict(r)) for n, r in enumerate(load_hub(str(source), split=hub_split), 1)]
    else:
        raise DataError(f"data file not found: {source}")
    out, ids = [], {}
    for n, row in rows:
        where = f"{source} row {n}"
        missing = [c for c in (*mapping.values(), label) if blank(row.get(c))]
        if missing:
            raise DataError(f"{where}: no value (or only whitespace) in column(s) {missing}")
        gold = str(row[label])
        if labels is not None and gold not in labels:
            raise DataError(f"{where}: label {gold!r} in column {label!r} is not one of {labels}")
        rid = str(row[id_field]) if id_field else hashlib.sha1(
            json.dumps([str(row[c]) for c in mapping.values()]).encode()).hexdigest()[:16]
        if rid in ids:
            raise DataError(f"{source}: rows {ids[rid]} and {n} have the same id {rid!r}")
        ids[rid] = n
        out.append({"id": rid, **{k: str(row[c]) for k, c in mapping.items()}, "label": gold})
    if not out:
        return []
    return to_examples(limited(take_split(datasets.Dataset.from_list(out), split, fractions), limit), list(mapping))


def _read_rows(path: Path):
    """Rows with the line they start on. UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8");
    records end at '\\n' only, so a U+2028 inside a JSON string or a newline inside a quoted CSV field
    stays in its record."""
    try:
        text = read_text(path)
    except FileFormatError as exc:
        raise DataError(str(exc)) from None
    suffix = path.suffix.lower()  # D.CSV from Windows is a CSV file
    if suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(lines(text), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n}: malformed JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
            yield n, row
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        start = 2  # line 1 is the header
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise DataError(
                    f"{path} line {start}: {len(reader.fieldnames)} columns expected, row has a different count")
            yield start, row
            start = reader.line_num + 1
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .jsonl")
