"""The loaders' own behaviour, which a config and Python share: `package:` paths, a seeded label-stratified
`limit`, and a StereoSet item that carries its own split."""

import json

from pld_optim.datasets import load_generic, load_stereoset


def test_loaders_accept_what_a_config_accepts():
    """`package:` worked in YAML only; from Python the loader said "StereoSet not found"."""
    rows = load_stereoset("package:stereoset_excerpt.json", split="train")
    assert rows and {r.label for r in rows} == {"gender", "profession", "race", "religion"}


def test_limit_takes_a_label_stratified_sample_not_the_first_rows(tmp_path):
    rows = "".join(f"pos text {i},pos\n" for i in range(10)) + "".join(f"neg text {i},neg\n" for i in range(10))
    (tmp_path / "d.csv").write_text("text,label\n" + rows)
    kwargs = dict(inputs=["text"], label="label", labels=["pos", "neg"], limit=4)
    sample = load_generic(tmp_path / "d.csv", **kwargs)
    assert sorted(e.label for e in sample) == ["neg", "neg", "pos", "pos"]  # the first 4 rows are all pos
    assert [e.text for e in load_generic(tmp_path / "d.csv", **kwargs)] == [e.text for e in sample]  # seeded


def test_a_stereoset_item_may_carry_its_own_split(tmp_path):
    items = [{"id": f"x{i}", "bias_type": "race", "context": f"c{i}", "split": split,
              "sentences": [{"sentence": f"s{i}", "gold_label": "stereotype"}]}
             for i, split in enumerate(["train", "dev", "test", "dev"])]
    (tmp_path / "s.json").write_text(json.dumps({"data": {"intrasentence": items}}))
    assert [e.id for e in load_stereoset(tmp_path / "s.json", split="dev")] == ["x1", "x3"]
    assert "split" not in load_stereoset(tmp_path / "s.json", split="dev")[0]
