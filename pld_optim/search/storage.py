"""Where the Optuna study lives (SQLite in the output folder by default, any RDB URL, or a storage object),
and which study in it a search continues.

The study is opened with `load_if_exists`, so running the same compile again continues it. Its name is the
configured `study_name` (the CLI: the config's `name`) and a hash of everything a trial's score depends on
(`study_name_for`, `search_setup`): a storage shared by several configs never hands one run the trials of
another's rules, student, dev data or prompt settings, while the workers of one run share one study.
`check_storage` runs before any LM call (and in a dry run): it reads, never creates, so a dry run leaves no
database.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import dspy
import optuna

from pld_optim.datasets.sampling import data_digest
from pld_optim.evaluation.task import example_id
from pld_optim.lm.factory import lm_identity
from pld_optim.params import neutral_names
from pld_optim.rules import Prompt, Rule
from pld_optim.search.config import SearchConfig

if TYPE_CHECKING:
    from pld_optim.evaluation.scorer import Scorer
    from pld_optim.evaluation.task import Task


def study_name_for(rules: list[Rule], name: str | None, setup: dict | None = None) -> str:
    """`name` and a hash of what a trial's score depends on: the rules (ids, wordings and example candidates,
    in order, since the parameters index them) and `setup` (`search_setup`). Trials scored for other rules,
    another student, other dev data or other prompt settings never mix in."""
    parts = ([r.id for r in rules] + [v for r in rules for v in r.variants()]
             + [e.id for r in rules for e in r.examples] + [json.dumps(setup or {}, sort_keys=True, default=str)])
    return f"{name or 'pld'}-{hashlib.sha1(chr(10).join(parts).encode()).hexdigest()[:10]}"


def task_identity(task: Task, adapter: dspy.Adapter) -> dict:
    """What of the user's task changes every answer, as both the run folder's fingerprint and the study's name
    key it: the predictor, its instructions (the base ones: a compiled program is compiled from those), its
    input fields in order, every field's description (ChainOfThought's reasoning field among them), the label
    field, the labels, and the adapter that renders the prompt. Plain values, so a refusal can name which one
    was edited."""
    signature = task.signature
    return {"predictor": task.predictor_name, "instructions": signature.instructions,
            "input_fields": list(task.input_fields),
            "fields": {name: (field.json_schema_extra or {}).get("desc") for name, field in signature.fields.items()},
            "label_field": task.label_field, "labels": list(task.labels), "adapter": type(adapter).__name__}


def search_setup(scorer: Scorer, dev: list[dspy.Example], config: SearchConfig, *, max_demos: int,
                 demo_field: str) -> dict:
    """Everything besides the rules that changes what a trial scores: the student (`lm_identity`), the dev
    data (ids and gold labels, as the folder's fingerprint has them), the task (`task_identity`, as the
    fingerprint has it) and the prompt without rules, the search settings the fingerprint keeps (budget,
    minibatch, objectives), the demo cap and the counter that measures the budget. Not the seed: it steers
    only which points are proposed, so workers with their own sampler seeds still share the study."""
    task = scorer.task
    ids = [example_id(ex, task.input_fields) for ex in dev]

    def digest(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    return {"student": lm_identity(scorer.student_lm), "dev": data_digest(dev, ids, task.label_field),
            "task": {**task_identity(task, scorer.adapter), "demo_field": demo_field,
                     "bare_prompt": digest(scorer.system_prompt(Prompt())), "preamble": digest(scorer.preamble)},
            "search": config.model_dump(exclude=neutral_names(SearchConfig)), "max_demos": max_demos,
            "token_counter": scorer.token_counter.name}


def storage_url(config: SearchConfig, out_dir: Path | None) -> str | optuna.storages.BaseStorage | None:
    """The configured storage, else `study.db` in the output folder, its path quoted for a URL (a folder
    named `a?b` or `50%` would otherwise point somewhere else)."""
    if config.storage is not None:
        return config.storage
    if out_dir is None:
        return None
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str((Path(out_dir) / "study.db").resolve())).render_as_string()


def open_storage(storage: str | optuna.storages.BaseStorage, attempts: int = 6) -> optuna.storages.BaseStorage:
    """An RDB storage, retried: workers started together on a fresh database race to create Optuna's
    tables (PostgreSQL raises on the duplicate enum type); the loser succeeds once the tables exist."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    import sqlalchemy.exc
    import tenacity

    retry = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(sqlalchemy.exc.SQLAlchemyError), reraise=True,
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_incrementing(0.2, 0.2) + tenacity.wait_random(0, 0.3))
    return retry(optuna.storages.RDBStorage, storage, engine_kwargs={"pool_pre_ping": True})


def check_storage(config: SearchConfig, out_dir: Path | None) -> None:
    """A malformed URL, a database that cannot be reached, or a file that is not an Optuna study fails now,
    with the way out, instead of after mining and refinement have been paid for."""
    import sqlalchemy
    import sqlalchemy.engine
    import sqlalchemy.exc

    url = storage_url(config, out_dir)
    if url is None or isinstance(url, optuna.storages.BaseStorage):
        return
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ValueError(f"search.storage={url!r} is not a database URL (e.g. sqlite:///study.db or "
                         "postgresql://user@host/db)") from exc
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(url, parsed, configured=config.storage is not None)
        return
    try:
        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        with engine.connect() as connection:
            tables = sqlalchemy.inspect(connection).get_table_names()
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is the same error to the user
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"search storage {parsed.render_as_string()} cannot be reached ({type(exc).__name__}: "
                         f"{reason}); check the server, the database name and search.storage") from None
    _check_tables(tables, parsed.render_as_string(), "check search.storage")


def _check_sqlite(url: str, parsed, *, configured: bool) -> None:
    """SQLite creates a missing database file but never its folder. The compile creates its output folder
    (where the default study.db goes) before the search; a configured file's folder must exist already."""
    import sqlite3

    if not parsed.database or parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    if not path.exists():
        if configured and not path.parent.is_dir():
            raise ValueError(f"search storage {url}: the folder {path.parent} does not exist (SQLite creates the "
                             "database file, not its folder); create it or set search.storage to a file in an "
                             "existing folder")
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"search storage {url}: cannot create {path} ({parent} is not a writable folder); "
                             "set search.storage or --out to a writable place")
        return  # a new study: created when the search starts
    try:
        with sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True) as connection:
            tables = [row[0] for row in connection.execute("select name from sqlite_master where type='table'")]
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"search storage {url} cannot be read ({exc}); delete {path} to start the search "
                         "afresh") from None
    _check_tables(tables, url, f"delete {path} to start the search afresh")


def _check_tables(tables: list[str], where: str, fix: str) -> None:
    if tables and "studies" not in tables:
        raise ValueError(f"search storage {where} holds tables ({', '.join(sorted(tables)[:5])}) but no Optuna "
                         f"study; {fix}")
