"""What pld-optim wrote to an output folder, so that a person's edit is told from a command's own file.

The README invites editing rules.json; report.md and program.json are plain files too. The folder records
the sha256 of every artifact as the command that wrote it left it, and which command that was
(`.pld.written.json`). An artifact whose bytes are not the recorded ones is a person's edit, and no command
replaces it; a rules.json that pick or ablate wrote is theirs, and a compile does not undo it. While a save
is under way the record accepts the old and the new bytes of each file, so an interruption between two moves
is never taken for an edit. A folder written before the record existed is judged by its rules.json alone:
one that no longer loads, or whose prompt is not the one its dev figures were measured on, was edited.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

from pld_optim.files import FileFormatError, atomic_write_text, read_json

logger = logging.getLogger("pld_optim")
RECORD = ".pld.written.json"
# Commands that start from rules.json as it is and carry it (a reviewer's edit too) into what they write.
CARRIES = {"pick": ("rules.json",), "ablate": ("rules.json",)}


def digest(path: Path) -> str | None:
    """sha256 of the file's bytes; None when there is no file; '' when something else is there (a folder)."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Written:
    """The record of one folder: {name: {"sha256": [digests], "by": command}}."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / RECORD

    def read(self) -> dict[str, dict] | None:
        """None when the folder holds no (readable) record: it was written before records were kept."""
        if not self.path.is_file():
            return None
        try:
            data = read_json(self.path)
        except FileFormatError:
            return None
        return data if isinstance(data, dict) else None

    def edited(self, names) -> list[str]:
        """Of `names`, those present whose bytes no pld-optim command wrote."""
        record = self.read() or {}
        out = []
        for name in names:
            now = digest(self.folder / name)
            if now is None:
                continue
            entry = record.get(name)
            if entry is None:
                if name == "rules.json" and _rules_edited(self.folder / name):
                    out.append(name)
            elif now not in entry.get("sha256", []):
                out.append(name)
        return out

    def writer(self, name: str) -> str | None:
        """The command that wrote `name` as it is now (None: unrecorded); 'compile' for files from before."""
        entry = (self.read() or {}).get(name)
        return None if entry is None else entry.get("by", "compile")

    @contextmanager
    def recording(self, staged: dict[str, Path], command: str):
        """Around moving `staged` (name -> temporary file) into place: the record accepts old and new bytes
        while the moves run, then only the new. A write of the record that fails raises before any move."""
        record = self.read() or {}
        new = {name: digest(tmp) for name, tmp in staged.items()}
        during = dict(record)
        for name, value in new.items():
            old = digest(self.folder / name)
            kept = [d for d in (record.get(name, {}).get("sha256", []) + [old]) if d]
            during[name] = {"sha256": sorted({*kept, value}), "by": command}
        self._write(during)
        yield
        try:
            self._write({**record, **{name: {"sha256": [value], "by": command} for name, value in new.items()}})
        except OSError as exc:  # the files are in place and the record accepts them; it is only less strict
            logger.warning("%s could not be updated (%s); the files it lists are written", self.path, exc)

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self, record: dict) -> None:
        atomic_write_text(self.path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def command_of(fingerprint: Path) -> str | None:
    """The command a folder's fingerprint names ('compile' for those from before fingerprints named one), or
    None when there is none to read."""
    try:
        data = read_json(fingerprint)
    except (FileFormatError, OSError):
        return None
    return data.get("command", "compile") if isinstance(data, dict) else None


def _rules_edited(path: Path) -> bool:
    """A rules.json from before records were kept: edited when it no longer loads or its prompt is not the
    one its dev macro F1 was measured on."""
    from pld_optim.rules import RuleSet
    from pld_optim.run.report import stale_score

    try:
        rules = RuleSet.load(path)
    except ValueError:
        return True
    return stale_score(rules) is not None


def edited_message(prefix: str, folder: Path, names: list[str], command: str) -> str:
    files = [str(folder / name) for name in names]
    doing = {"compile": "a compile here would replace it (and --fresh would remove it)",
             "--fresh": "--fresh would remove it"}.get(command, f"`pld-optim {command}` would replace it")
    text = (f"{prefix}: {' and '.join(files)} {'was' if len(files) == 1 else 'were'} edited after pld-optim wrote it, "
            f"and {doing}. Nothing was written or removed. ")
    if "rules.json" in names:
        rules = folder / "rules.json"
        text += (f"To keep the edit: `pld-optim evaluate CONFIG --program {folder}` scores it as it is and "
                 f"`pld-optim ablate CONFIG {folder}` measures its rules in place; or copy it away (cp {rules} "
                 "my-rules.json) and score the copy with `pld-optim evaluate CONFIG --program none --rules "
                 "my-rules.json`. ")
    else:
        text += "To keep it, copy it out of the folder first. "
    return text + f"To discard it, delete it (rm {' '.join(files)}) and rerun."


def written_by_message(prefix: str, folder: Path, writer: str) -> str:
    rules = folder / "rules.json"
    return (f"{prefix}: {rules} was written by `pld-optim {writer}` after the compile, and a compile here would "
            "replace it with the compile's own choice. Nothing was written. To score it as it is: `pld-optim "
            f"evaluate CONFIG --program {folder} --split test`; to compile again anyway, move it away or delete it "
            f"(rm {rules}) and rerun.")


def owner_message(prefix: str, folder: Path, owner: str, command: str, parent: Path | None) -> str:
    where = f"it is part of the run in {parent}, whose fingerprint says so" if parent else "its fingerprint says so"
    head = f"{prefix} {folder}".strip()
    return (f"{head}: `pld-optim {owner}` wrote it ({where}), so it holds that command's results and LM "
            f"cache, which a {command} here would mix with its own or remove. Nothing was written or removed: "
            "choose another folder.")
