"""What every loader shares: where the data lives, deterministic hashed splits, reading files, errors.

Local files are parsed row by row (so a bad row is reported by file and line, never dropped) and held as
`datasets.Dataset`; a Hub name goes through `datasets.load_dataset` when the user is online. Splits hash
each example id: the same file always gives the same train/dev/test, whatever its order. A file may also
carry its own split per item (`"split": "train" | "dev" | "test"`), as the shipped excerpt does.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import datasets
import dspy

from pld_optim.datasets.sampling import stratified_indices, unit_hash
from pld_optim.files import FileFormatError
from pld_optim.files import blank as blank
from pld_optim.files import read_json as read_json_file

SPLITS = ("train", "dev", "test")
DEFAULT_FRACTIONS = (0.5, 0.25, 0.25)


class DataError(ValueError):
    """A data problem, always naming the file and the row or field."""


def shared_data_dir() -> Path:
    """`$PLD_OPTIM_DATA`, else `../shared/data` next to a source checkout, else `./shared/data`."""
    env = os.environ.get("PLD_OPTIM_DATA")
    if env:
        return Path(env)
    repo_sibling = Path(__file__).resolve().parents[3] / "shared" / "data"
    return repo_sibling if repo_sibling.exists() else Path("shared/data")


def resolve_source(source: str | Path | None) -> str | Path | None:
    """Every loader accepts what a config accepts: `package:NAME` is a file shipped in pld_optim/data."""
    if isinstance(source, str) and source.startswith("package:"):
        from importlib.resources import files

        name = source.removeprefix("package:")
        path = Path(str(files("pld_optim").joinpath(f"data/{name}")))
        if not path.is_file():
            shipped = sorted(p.name for p in path.parent.glob("*.json"))
            raise DataError(f"data.path {source!r}: pld-optim ships no file {name!r} (it ships {shipped})")
        return str(path)
    return source


def split_of(example_id: str, fractions=DEFAULT_FRACTIONS) -> str:
    """The hashed id cut at the cumulative fractions: stable and order-free. Rows that share a `group` (the
    three sentences of one StereoSet item) share a split, so no context leaks."""
    u = unit_hash(example_id)
    edge = 0.0
    for name, share in zip(SPLITS, fractions):
        edge += share
        if u < edge:
            return name
    return SPLITS[-1]


def check_split(split: str | None) -> None:
    if split not in (None, "all", *SPLITS):
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS} or 'all'")


def take_split(rows: datasets.Dataset, split: str | None, fractions=DEFAULT_FRACTIONS) -> datasets.Dataset:
    check_split(split)
    if split in (None, "all"):
        return rows
    if "split" in rows.column_names and all(rows["split"]):
        return rows.select([i for i, s in enumerate(rows["split"]) if s == split])
    keys = rows["group"] if "group" in rows.column_names else rows["id"]
    return rows.select([i for i, key in enumerate(keys) if split_of(key, fractions) == split])


def to_examples(rows, input_fields: list[str]) -> list[dspy.Example]:
    return [dspy.Example(**{k: v for k, v in row.items() if k != "split"}).with_inputs(*input_fields) for row in rows]


def limited(rows: datasets.Dataset, limit: int | None, seed: int = 0) -> datasets.Dataset:
    """At most `limit` rows, label-stratified and seeded (`sampling.stratified_indices`), kept in file order."""
    if not limit or len(rows) <= limit:
        return rows
    return rows.select(sorted(stratified_indices(rows["label"], limit, random.Random(f"limit:{seed}"))))


def read_json(path: Path):
    try:
        return read_json_file(path)
    except FileFormatError as exc:
        raise DataError(str(exc)) from None


def load_hub(name: str, *args, **kwargs):
    """A dataset from the Hugging Face Hub, or an error that says the name was read as a Hub name."""
    try:
        return datasets.load_dataset(name, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, no such config: one message
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(f"data.path {name!r} is not a local file or folder, so it was read as a Hugging Face Hub "
                        f"dataset, which could not be loaded ({type(exc).__name__}: {reason}); give a path to "
                        "a local file, or check the name and the network") from None

