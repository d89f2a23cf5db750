"""The StereoSet excerpt shipped for the quickstart, built from ../shared/data/stereoset and nothing else.

    python -m pld_optim.datasets.excerpt [--source ../shared/data/stereoset/dev.json] [--out FILE] [--check]

Each split is label-stratified with its own sizes (test 150, dev 100, train 140 intrasentence items): gender,
profession and race equal, religion a third of that in test and dev and half in train (it has 59 items in
all). Within each bias type the
items are taken in order of sha1('excerpt|' + id), test first, then dev, then train, so the excerpt is
the same on every machine; each item carries its split. `--check` verifies a shipped file against the
source instead of writing one: every item must be a source item, unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

from pld_optim.datasets.common import shared_data_dir
from pld_optim.files import atomic_write_text, read_text

SIZES = {"test": {"gender": 45, "profession": 45, "race": 45, "religion": 15},
         "dev": {"gender": 30, "profession": 30, "race": 30, "religion": 10},
         "train": {"gender": 40, "profession": 40, "race": 40, "religion": 20}}
NAME = "stereoset_excerpt.json"
NOTE = ("pld-optim quickstart excerpt of the StereoSet dev-set content (Nadeem et al. 2021, CC BY-SA 4.0): "
        "intrasentence items, label-stratified per split, chosen by smallest sha1('excerpt|' + id) within each bias "
        "type, skipping an item whose context and stereotype sentence repeat an earlier one's; unchanged text; each "
        "item carries its split. See LICENSE and NOTICE.md.")


def row_key(item: dict) -> tuple[str, str]:
    """What the student sees of an item under the bias-type framing: its context and stereotype sentence."""
    stereotype = next(s["sentence"] for s in item["sentences"] if s.get("gold_label") == "stereotype")
    return " ".join(item["context"].split()), " ".join(stereotype.split())


def build(source: dict) -> list[dict]:
    """Items whose row repeats an earlier item's (the source has such pairs under two ids) are skipped, so
    no split holds the same input twice and no input is in two splits."""
    by_label: dict[str, list[dict]] = {}
    for item in source["data"]["intrasentence"]:
        by_label.setdefault(item["bias_type"], []).append(item)
    seen: set[tuple[str, str]] = set()
    out = []
    for label, pool in sorted(by_label.items()):
        pool = sorted(pool, key=lambda it: hashlib.sha1(f"excerpt|{it['id']}".encode()).hexdigest())
        pool = [it for it in pool if not (row_key(it) in seen or seen.add(row_key(it)))]
        start = 0
        for split in ("test", "dev", "train"):
            n = SIZES[split][label]
            if start + n > len(pool):
                raise ValueError(f"the source has {len(pool)} {label} items, fewer than the excerpt needs")
            out += [{**item, "split": split} for item in pool[start:start + n]]
            start += n
    return sorted(out, key=lambda it: it["id"])


def check(shipped: dict, source: dict) -> Counter:
    """Every shipped item is a source item with the same text; returns the (split, label) counts."""
    originals = {it["id"]: it for it in source["data"]["intrasentence"]}
    for item in shipped["data"]["intrasentence"]:
        original = originals.get(item["id"])
        if original is None or {k: v for k, v in item.items() if k != "split"} != original:
            raise ValueError(f"item {item['id']} is not in the source, or differs from it")
    return Counter((it["split"], it["bias_type"]) for it in shipped["data"]["intrasentence"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(shared_data_dir() / "stereoset" / "dev.json"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / NAME))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    source = json.loads(read_text(args.source))
    if args.check:
        counts = check(json.loads(read_text(args.out)), source)
        print(f"{args.out}: {sum(counts.values())} items, all from {args.source}: {dict(sorted(counts.items()))}")
        return
    items = build(source)
    doc = {"version": "1.0-dev", "note": NOTE, "data": {"intrasentence": items, "intersentence": []}}
    atomic_write_text(args.out, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: {len(items)} items")


if __name__ == "__main__":
    main()
