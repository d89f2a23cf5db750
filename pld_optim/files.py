"""Reading and writing files the way every part of pld-optim does it.

Writes go to a temporary file beside the target and are moved into place, so an interruption leaves the
previous file whole; a write that fails (a full disk, a folder removed meanwhile) removes its temporary file
and says which file and why in words (`WriteError`). Files that belong together are staged together
(`Staged`): all are written before any is moved into place.

Text is read as the csv and json modules expect: UTF-8 with an optional byte-order mark (Excel's "CSV UTF-8"
writes one), never split on Unicode line separators that may sit inside a JSON string or a CSV field.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import unicodedata
from pathlib import Path

logger = logging.getLogger(__name__)


class FileFormatError(ValueError):
    """A file that cannot be read as the text it should be, always naming the file."""


class WriteError(OSError):
    """A file that could not be written, named, with the cause in words (an OSError, as the CLI reports)."""

    def __init__(self, path: str | Path, cause: OSError, advice: str = ""):
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.filename = str(path)
        self.message = f"cannot write {path}: {_reason(Path(path), cause)}" + (f". {advice}" if advice else "")

    def __str__(self) -> str:
        return self.message


def _reason(path: Path, cause: OSError) -> str:
    if cause.errno == errno.ENOSPC:
        return "the disk is full (no space left on the device)"
    if cause.errno == errno.EDQUOT:
        return "the disk quota is used up"
    if cause.errno == errno.EROFS:
        return "the file system is read-only"
    if cause.errno == errno.ENOENT and not path.parent.is_dir():
        return f"its folder {path.parent} no longer exists (removed while the command ran?)"
    return cause.strerror or str(cause)


class Staged:
    """Files written beside their targets and moved into place together, on `commit`. A failure before
    that (a full disk strikes while writing, not while renaming) changes no target, and leaving the block
    removes every temporary file not moved, so files written together never disagree."""

    def __init__(self):
        self.pending: dict[Path, Path] = {}
        self.moved: list[Path] = []

    def write(self, target: str | Path, data: str | bytes) -> Path:
        """Stage `data` for `target`; the temporary file it is in (its digest is the target's to be)."""
        target = Path(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        self.pending[target] = tmp
        try:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        except OSError as exc:
            raise WriteError(target, exc) from exc
        return tmp

    def commit(self) -> None:
        for target, tmp in list(self.pending.items()):
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise WriteError(target, exc) from exc
            del self.pending[target]
            self.moved.append(target)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc_info) -> None:
        for tmp in self.pending.values():
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # the folder itself is gone or read-only: nothing is left to remove
                pass
        self.pending.clear()


def atomic_write_text(path: str | Path, text: str) -> None:
    with Staged() as staged:
        staged.write(path, text)
        staged.commit()


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path} is a folder, not a file") from None


def read_json(path: str | Path):
    """A JSON file, or a FileFormatError naming the file, line and column: the one reader every artifact,
    data file and fingerprint goes through."""
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None


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
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write(record.model_dump_json() + "\n")
        except OSError as exc:
            raise WriteError(self.path, exc) from exc


def check_place(path: Path, what: str) -> None:
    """The folder, or its first existing parent, must be a writable folder; a link to nothing is named."""
    for place in (path, *path.parents):
        if place.is_symlink() and not place.exists():
            raise ValueError(f"{what} {path}: {place} is a symbolic link to {os.readlink(place)}, which does not "
                             "exist; create that folder, or give another")
        if place.exists():
            if not place.is_dir():
                raise ValueError(f"{what} {path}: {place} is a file, not a folder")
            if not os.access(place, os.W_OK | os.X_OK):
                raise ValueError(f"{what} {path}: {place} is not writable")
            return
