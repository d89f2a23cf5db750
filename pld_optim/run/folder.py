"""One output folder holds one run, and this class is its one writer.

Resuming is a feature (the mined rules, the LM cache and the Optuna study pick up where an interrupted
compile stopped), so the folder must prove it is the *same* run:

- `fingerprint.json` records what produced it (data, task, teacher, student, the parameters that change
  results, the seed). A compile with another fingerprint is refused with what differs, never mixed in.
- `.pld.lock` (a `filelock.FileLock`) is held by everything that writes the folder: compile (CLI and
  `PLD(out_dir=...)`), pick, ablate, report, compare, and `RunFolder.save` and `RunFolder.clear` from Python.
  The operating system releases it when its process ends, so a crash leaves no stale lock.
- Files a compile writes (report.md, ...) in a folder with no fingerprint.json may be the user's own: nothing
  is written there and nothing removed.
- `.pld.written.json` records what each command wrote (pld_optim.run.written): an artifact a person edited
  since (the README invites editing rules.json) is never replaced or removed, and a rules.json that pick or
  ablate wrote is not undone by a compile. Each refusal names the file and how to keep or discard it.
- A folder `pld-optim compare` wrote (its fingerprint says so) is that command's, and so is each optimizer's
  sub-run in it, `<optimizer>-seed<N>/` (pld-seed0/, pld-rules-only-seed0/, ...; `SUB_RUN`), whether it exists
  yet or not: a compile there is refused (only the compare holding the compare folder compiles into it), and
  `--fresh` removes nothing from either.
- The artifacts are rendered, written to temporary files, then moved into place together: a rendering
  error or a full disk changes none of them, leaves no temporary file, and says so.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import filelock

from pld_optim.files import FileFormatError, JsonlLog, Staged, WriteError, atomic_write_text, check_place, read_json
from pld_optim.records import MinedRule
from pld_optim.run.artifacts import render_artifacts
from pld_optim.run.cache import clear_cache, foreign_in_cache, resume_hint
from pld_optim.run.fingerprint import differences
from pld_optim.run.written import CARRIES, Written, command_of, edited_message, owner_message, written_by_message

logger = logging.getLogger("pld_optim")

FINGERPRINT = "fingerprint.json"
LOCK = ".pld.lock"
MINED = "mined.jsonl"
CACHE = "cache"
# The artifacts of a compiled program, each written once by `save` (and logged by MLflow tracking).
ARTIFACTS = ("program.json", "rules.json", "system_prompt.txt", "report.md", "review.html")
# What a compile writes: `--fresh` removes exactly these, and only from a folder a compile wrote.
RUN_FILES = (FINGERPRINT, MINED, "study.db", CACHE, *ARTIFACTS, "search_optimization_history.html",
             "search_param_importances.html", "search_pareto_front.html")
# What `pld-optim compare` writes to its --out: per optimizer and seed <name>-seed<N>.json, .program.json and
# .outcomes.jsonl, and for each PLD optimizer (pld, pld-rules-only) its compiled run's folder <name>-seed<N>/.
COMPARE_FILES = (FINGERPRINT, CACHE, "compare.md", "compare.html", "*-seed[0-9]*")
# The name of an optimizer's sub-run folder in a compare folder (any optimizer's, so a new one is covered).
SUB_RUN = re.compile(r".+-seed\d+")


class RunFolder:
    """The output folder of one compile; `context` heads report.md and review.html (config, models, seed)."""

    def __init__(self, path: str | Path, *, context: dict | None = None, title: str = "PLD compile",
                 written: tuple[str, ...] = RUN_FILES):
        if not str(path).strip():
            raise ValueError("the output folder is empty; give a folder, e.g. --out out/run")
        self.path = Path(path)
        self.context = dict(context or {})
        self.title = title
        self.written = written  # names (glob patterns) of what the command that owns the folder writes
        self._kept_in_cache: set[str] = set()  # files in cache/ DSPy did not write that `clear` kept on purpose

    @classmethod
    def of(cls, out_dir) -> RunFolder | None:
        """The folder `out_dir` names, given as it came (str, Path, RunFolder or None): Path('') is '.', so
        an empty string must reach the constructor's own check (the one the CLI's --out meets) unconverted."""
        if out_dir is None:
            return None
        return out_dir if isinstance(out_dir, RunFolder) else cls(out_dir)

    @property
    def command(self) -> str:
        """The command that owns a folder of this kind, as its fingerprint names it."""
        return "compare" if self.written == COMPARE_FILES else "compile"

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE

    def mined_log(self) -> JsonlLog:
        return JsonlLog(self.path / MINED, MinedRule)

    def read_mined(self) -> dict[str, MinedRule]:
        """mined.jsonl's kept rules by example id (a refused or failed example is redone on resume)."""
        latest = {m.example_id: m for m in self.mined_log().read()}  # a re-mined example's last line counts
        return {eid: m for eid, m in latest.items() if m.ok}

    def check(self, what: str = "--out") -> None:
        """Before any LM call, creating nothing: a folder under a file, a dangling link, a read-only place, a
        folder another command's run is in, an artifact a person edited, or a folder that holds someone
        else's files under the names this command writes fails now (in a dry run too)."""
        check_place(self.path, what)
        self._refuse_other_owner(what)  # a compare's sub-run, even one not written yet, is refused here too
        if (self.path / FINGERPRINT).exists():
            if self.command == "compile":
                self.check_replaceable("compile", what=what)
            return
        theirs = self._present(foreign_only=True)
        if theirs:
            raise ValueError(f"{what} {self.path}: {self._not_ours(theirs)}")

    def check_replaceable(self, command: str, names=ARTIFACTS, *, what: str | None = None,
                          others: bool = False) -> None:
        """Refuse, naming the file and how to keep or discard it, when `command` would replace or remove an
        artifact a person edited; `others` (a compile about to resume): also a rules.json pick or ablate wrote,
        which the compile would undo (not in `check`, which runs before --fresh removes it)."""
        names = [n for n in names if n not in CARRIES.get(command, ())]
        record = Written(self.path)
        edited = record.edited(names)
        if edited:
            raise ValueError(edited_message(what or command, self.path, edited, command))
        writer = record.writer("rules.json") if others and "rules.json" in names else None
        if writer not in (None, "compile") and (self.path / "rules.json").is_file():
            raise ValueError(written_by_message(what or command, self.path, writer))

    def _refuse_other_owner(self, what: str, removing: bool = False) -> None:
        """Refuse a folder another command wrote, or a compare's sub-run; `removing` (--fresh): that sub-run
        even for the compare that holds it (compare never clears one)."""
        owner, parent = self._owner(removing)
        if owner is not None and owner != self.command:
            raise ValueError(owner_message(what, self.path, owner, self.command, parent))

    def _owner(self, removing: bool) -> tuple[str | None, Path | None]:
        """The command that owns the folder, and the compare folder it is a sub-run of (else None). A sub-run
        is compare's unless this process is the compare writing it (it holds the compare folder)."""
        parent = self._compare_parent()
        if parent is not None and (removing or not _lock(parent).is_locked):
            return "compare", parent
        return command_of(self.path / FINGERPRINT), None

    def _compare_parent(self) -> Path | None:
        """The compare folder this folder is an optimizer's sub-run of: named `<optimizer>-seed<N>` (`SUB_RUN`),
        in a folder whose fingerprint names compare. Its name in that folder, not where a link points, counts."""
        if not SUB_RUN.fullmatch(self.path.name):
            return None
        parent = self.path.absolute().parent
        return parent if command_of(parent / FINGERPRINT) == "compare" else None

    def _not_ours(self, names: list[str]) -> str:
        return (f"it has no {FINGERPRINT}, so no pld-optim run wrote it, yet it holds {', '.join(names)}, "
                "which may be yours and would be overwritten or removed. Nothing was written or removed: choose "
                "another folder, or move them away")

    def _present(self, foreign_only: bool = False) -> list[str]:
        """Names in the folder that this command writes; `foreign_only`: leaving out a cache that holds only
        what DSPy's disk cache writes (a run interrupted before its fingerprint was written leaves one)."""
        if not self.path.is_dir():
            return []
        names = sorted(p.name for p in self.path.iterdir()
                       if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in self.written))
        if foreign_only and CACHE in names and (self.path / CACHE).is_dir() and \
                set(foreign_in_cache(self.path / CACHE)) <= self._kept_in_cache:
            names.remove(CACHE)
        return names

    @contextmanager
    def writing(self, create: bool = True):
        """Held while a command writes the folder; re-entrant within one process (the CLI holds it around
        PLD.compile, which takes it too). `create=False`: the folder must exist (pick, ablate, report)."""
        lock = _lock(self.path)
        if lock.is_locked and not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} no longer exists: it was removed while this command was writing "
                                    f"it, with its fingerprint and anything else in it. Nothing more was written. "
                                    f"{resume_hint()}")
        if not create and not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} does not exist or is not a folder")
        check_place(self.path, "the output folder")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ValueError(f"{self.path} is in use by another pld-optim command (it holds {self.path / LOCK}); "
                             "wait for it to finish or use another folder") from None
        try:
            yield self
        finally:
            lock.release()

    def check_fingerprint(self, fingerprint: dict) -> bool:
        """Read-only (a dry run may call it): True when the folder holds this run, False when it holds none
        yet; a different run, or another command's, is an error naming what differs."""
        self._refuse_other_owner("")
        if not (self.path / FINGERPRINT).exists():
            return False
        diffs = differences(self._fingerprint(), fingerprint)
        if diffs:
            raise ValueError(f"{self.path} holds another run ({'; '.join(diffs)}): resuming would mix the "
                             f"two. {self._fresh_hint()}")
        return True

    def claim(self, fingerprint: dict) -> None:
        """Record the fingerprint of a new run, accept the same run (whose artifacts no person edited since,
        and, for a compile, whose rules.json pick or ablate did not write), refuse a different one."""
        path = self.path / FINGERPRINT
        if self.check_fingerprint(fingerprint):
            if self.command == "compile":
                self.check_replaceable("compile", what="out_dir", others=True)
            return
        leftovers = [name for name in (MINED, "study.db", "rules.json") if (self.path / name).exists()]
        if leftovers:
            raise ValueError(f"{self.path} holds {', '.join(leftovers)} from a run with no fingerprint, which "
                             f"cannot be matched to this one. {self._fresh_hint()}")
        atomic_write_text(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")

    def _fingerprint(self) -> dict:
        path = self.path / FINGERPRINT
        try:
            data = read_json(path)
        except FileFormatError as exc:
            raise ValueError(f"{exc}; {self._fresh_hint()}") from None
        if not isinstance(data, dict) or not {"data", "params"} <= set(data):
            raise ValueError(f"{path} is not a pld-optim fingerprint; {self._fresh_hint()}")
        return data

    def _fresh_hint(self) -> str:
        if self.written != RUN_FILES:  # compare has no --fresh
            return "Choose a new --out, or remove that folder to start over."
        if self._owner(removing=True)[0] == "compare":
            return "Choose another folder: this one belongs to a `pld-optim compare` run."
        return (f"Start over in that folder with `--fresh` (Python: RunFolder({str(self.path)!r}).clear()), "
                "or choose a new folder.")

    def clear(self) -> list[str]:
        """Remove what a compile wrote (RUN_FILES) and nothing else, holding the folder's lock; only from a
        folder whose fingerprint shows a compile wrote it (not compare, nor an optimizer's sub-run in a compare
        folder, `<optimizer>-seed<N>/`), and never an artifact a person edited. In `cache/`, only DSPy's cache
        files go: anything else there is kept (and named in a warning). Returns the names removed."""
        if not self.path.exists():
            return []
        present = self._present()
        if present and not (self.path / FINGERPRINT).exists():
            raise ValueError(f"--fresh: {self.path}: {self._not_ours(present)}")
        self._refuse_other_owner("--fresh:", removing=True)  # a compare's sub-run, even an empty one
        with self.writing():
            if present:
                self._fingerprint()  # a file that is not ours under that name: refuse rather than delete
                self.check_replaceable("--fresh")
            for name in present:
                target = self.path / name
                if name == CACHE and target.is_dir():
                    kept = clear_cache(target)
                    self._kept_in_cache = set(kept)  # the compile that follows may use cache/ beside them
                    if kept:
                        logger.warning("--fresh kept %s in %s: DSPy's cache does not write them", ", ".join(kept),
                                       target)
                else:
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
            Written(self.path).forget()
        return present

    def save(self, program, rules, *, command: str = "compile") -> list[Path]:
        """Write the ARTIFACTS of a compiled program and its complete rule set, all rendered first and moved
        into place together, holding the folder's lock (a second writer is refused, never interleaved).
        `command`: who saves; pick and ablate start from rules.json as it is and carry it forward, so they may
        replace an edited one, and nobody replaces any other edited artifact. report.md and review.html are
        headed by `rules.context` (config, models, seed)."""
        with self.writing():
            self.check_replaceable(command)
            files = render_artifacts(self.path, program, rules, title=self.title,
                                     mined=list(self.read_mined().values()))
            self._write(files, command)
        return [self.path / name for name in ARTIFACTS]

    def write(self, name: str, text: str, *, command: str) -> Path:
        """One artifact as `command` writes it alone (`report`: report.md), refused when a person edited it."""
        with self.writing(create=False):
            self.check_replaceable(command, (name,))
            self._write({name: text}, command)
        return self.path / name

    def _write(self, files: dict[str, str | bytes], command: str) -> None:
        """Stage every file, record them, move them into place; a write that fails names the file, changes
        no artifact when it strikes before the moves (a full disk does), and leaves no temporary file."""
        with Staged() as staged:
            try:
                temporary = {name: staged.write(self.path / name, data) for name, data in files.items()}
                with Written(self.path).recording(temporary, command):
                    staged.commit()
            except WriteError as exc:
                moved = ", ".join(p.name for p in staged.moved)
                changed = f"Of {self.path}, only {moved} was replaced" if moved else \
                    f"Nothing in {self.path} was changed"
                raise WriteError(exc.filename, exc.__cause__ or exc, f"{changed}. {resume_hint()}") from exc


def _lock(folder: Path) -> filelock.FileLock:
    """The folder's lock: one object per folder in this process (filelock's singleton), so whether this process
    holds a folder (a compare compiling into its sub-run) is the lock's own `is_locked`."""
    return filelock.FileLock(folder.resolve() / LOCK, timeout=0, is_singleton=True)
