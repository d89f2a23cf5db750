"""Reading and writing files the way every part of pld-optim does it.

Writes go to a temporary file beside the target and are moved into place, so an interruption leaves the
previous file whole. Text is read as the csv and json modules expect: UTF-8 with an optional byte-order
mark (Excel's "CSV UTF-8" writes one), never split on Unicode line separators that may sit inside a JSON
string or a CSV field.
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from pathlib import Path

logger = logging.getLogger(__name__)


class FileFormatError(ValueError):
    """A file that cannot be read as the text it should be, always naming the file."""


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path} is a folder, not a file") from None


def lines(text: str) -> list[str]:
    """Record boundaries are '\\n' (and '\\r\\n'); str.splitlines would also split at U+2028 and other
    separators that are legal inside a JSON string. A byte-order mark at the start of a line (files joined
    with `cat`, each saved by an editor that writes one) is not part of its record."""
    return [line.removesuffix("\r").removeprefix("\ufeff") for line in text.split("\n")]


def blank(value) -> bool:
    """No text a reader could see: None, or only whitespace and invisible format characters (zero-width
    spaces and joiners, a stray byte-order mark, soft hyphens). Every loader and `PLD` refuse such inputs,
    as they refuse empty ones."""
    if value is None:
        return True
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in str(value))


class JsonlLog:
    """An append-only JSON-lines file of pydantic records, written as each record arrives and read back
    on resume. A damaged line (an interrupted write) is skipped with a warning: that item is redone."""

    def __init__(self, path: str | Path, model):
        self.path = Path(path)
        self.model = model
        self._lock = threading.Lock()

    def read(self) -> list:
        if not self.path.exists():
            return []
        records = []
        for n, line in enumerate(lines(read_text(self.path)), 1):
            if not line.strip():
                continue
            try:
                records.append(self.model.model_validate_json(line))
            except ValueError:
                logger.warning("%s line %d is damaged (an interrupted write?); its item is done again", self.path, n)
        return records

    def append(self, record) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(record.model_dump_json() + "\n")
