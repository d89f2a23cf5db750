import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import cue_word

from pld_optim.cli.config import build_program, load_config, load_split
from pld_optim.rules import RuleSet

QUICKSTART = Path(__file__).parents[2] / "pld_optim" / "configs" / "quickstart.yaml"


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "pld_optim", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})


def write_config(tmp_path, **overrides):
    cfg = yaml.safe_load(QUICKSTART.read_text())
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_quickstart_config_is_valid_and_builds_the_program():
    cfg = load_config("quickstart")
    program = build_program(cfg.data)
    assert list(program.signature.input_fields) == ["context", "sentence"]
    splits = {s: load_split(cfg.data, s) for s in ("train", "dev", "test")}
    ids = {s: {e.id for e in rows} for s, rows in splits.items()}
    assert all(splits.values()) and not (ids["train"] & ids["dev"] or ids["train"] & ids["test"] or
                                         ids["dev"] & ids["test"])  # three disjoint, non-empty splits
    assert {e.label for e in splits["train"]} == set(program.signature.output_fields["label"].annotation.__args__)
    assert cfg.pld_params()["max_train_examples"] == cfg.pld["max_train_examples"]  # the section, defaults filled
    assert cfg.student.model == cfg.teacher.model == "local/qwen2.5-coder-1.5b" and cfg.search is not None


def test_unknown_config_key_is_named(tmp_path):
    path = write_config(tmp_path, **{"pld.n_clustres": 3})
    with pytest.raises(ValueError, match=r"invalid config: pld: n_clustres=3: Extra inputs are not permitted"):
        load_config(path)
    path = write_config(tmp_path, **{"student.max_tokens": 0})
    with pytest.raises(ValueError, match=r"student\.max_tokens: Input should be greater than 0"):
        load_config(path)


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    path = write_config(tmp_path, **{"data.datset": "stereoset"})
    result = run_cli("compile", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert result.returncode == 2 and "data.datset" in result.stderr and "Traceback" not in result.stderr


def test_dry_run_estimates_and_spends_nothing(tmp_path):
    cfg = load_config("quickstart")
    p, n_train = cfg.pld_params(), len(load_split(cfg.data, "train"))
    probe = min(n_train, p["probe_examples"]) if p["mining"] == "contrastive" else n_train
    mine = min(p["max_train_examples"] or probe, probe)  # contrastive: teacher calls only for probed examples
    result = run_cli("compile", "quickstart", "--out", str(tmp_path / "o"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"data: {n_train} train" in result.stdout and f"teacher: mine {mine}," in result.stdout
    assert f"teacher: merge clusters {min(p['max_clusters'] * 4, mine)}," in result.stdout  # per label, 4 labels
    assert "checked; nothing was called" in result.stdout
    assert not (tmp_path / "o").exists()


@pytest.mark.real_model
def test_compile_then_evaluate_on_the_embedded_models(tmp_path):
    pytest.importorskip("llama_cpp")
    config = write_config(tmp_path, **{"data.train_limit": 12, "data.dev_limit": 4, "pld.refine_examples": 4,
                                       "pld.max_train_examples": 6, "pld.n_failures": 2, "pld.n_successes": 1,
                                       "teacher.max_tokens": 160, "search.n_trials": 4, "search.minibatch_size": 4})
    out = tmp_path / "run"
    result = run_cli("compile", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("program.json", "rules.json", "system_prompt.txt", "report.md", "mined.jsonl"):
        assert (out / name).exists(), name
    rules = RuleSet.load(out / "rules.json")
    prompt = (out / "system_prompt.txt").read_text()
    assert rules.rules and all(r.text in prompt for r in rules.rules if rules.selection is None)
    mine = next(u for u in rules.usage if u.stage == "mine")
    assert mine.lm_calls >= 6 and mine.prompt_tokens > 0
    redone = mine.failures + sum(r.stage == "mine" for r in rules.refusals)  # failed or refused: mined again
    assert rules.search is not None and (out / "study.db").exists()  # the quickstart runs the whole product

    data = Path(__file__).parents[2] / "pld_optim" / "data" / "stereoset_excerpt.json"
    scores = {}
    for program in (str(out), "none"):
        result = run_cli("evaluate", str(config), "--program", program, "--data", str(data), "--split", "test",
                         "--limit", "5")
        assert result.returncode == 0, result.stderr[-3000:]
        scores[program] = json.loads(result.stdout.strip().splitlines()[-1])
    for score in scores.values():
        assert score["n"] == 5 and 0 <= score["macro_f1"] <= 1 and score["mean_latency_s"] > 0
        # macro F1 is over the labels the 5 gold answers hold; the others are named, not scored as 0
        assert set(score["support"]) == {"gender", "profession", "race", "religion"}
        assert set(score["per_class_f1"]) == {k for k, n in score["support"].items() if n}
        assert set(score["labels_absent"]) == {k for k, n in score["support"].items() if not n}

    # Resume: the same command again replays the cached calls and changes nothing.
    before = (out / "rules.json").read_text()
    result = run_cli("compile", str(config), "--out", str(out))
    assert result.returncode == 0
    again = RuleSet.load(out / "rules.json")
    assert [r.text for r in again.rules] == [r.text for r in rules.rules]
    # Rules that were kept come from mined.jsonl; failed or refused ones are asked again and hit the cache.
    mine_again = next(u for u in again.usage if u.stage == "mine")
    assert mine_again.lm_calls == mine_again.cache_hits == redone and mine_again.prompt_tokens == 0
    assert all(u.prompt_tokens == 0 for u in again.usage)  # nothing new was paid for
    assert before.count('"text"') == (out / "rules.json").read_text().count('"text"')


def test_compare_dry_run_lists_the_shared_setup(tmp_path):
    n_test = len(load_split(load_config("quickstart").data, "test"))
    result = run_cli("compare", "quickstart", "--optimizers", "zero-shot,pld", "--out", str(tmp_path / "c"),
                     "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "compare ['zero-shot', 'pld'] x seeds [0]" in result.stdout and f", {n_test} test |" in result.stdout
    result = run_cli("compare", "quickstart", "--optimizers", "zero-shot,textgrad", "--out", str(tmp_path / "c"))
    assert result.returncode == 2 and "unknown optimizer(s) ['textgrad']" in result.stderr


def test_evaluate_scores_the_folders_rules_json_and_an_edited_file(tmp_path, capsys):
    """A reviewer edits rules.json and re-evaluates: the edit must reach the program that is scored."""
    from pld_optim import RunFolder, apply_rules
    from pld_optim.cli.evaluate import load_program
    from pld_optim.rules import Rule

    cfg = load_config("quickstart")
    rules = RuleSet(predictor="self", label_field="label", labels=["gender", "profession", "race", "religion"],
                    base_instructions=build_program(cfg.data).signature.instructions,
                    rules=[Rule(id="R1", text="If the target is a job, answer profession.")])
    RunFolder(tmp_path).save(apply_rules(build_program(cfg.data), rules), rules)
    assert "answer profession" in load_program(cfg, str(tmp_path)).signature.instructions

    rules.rules[0].text = "If the target is a country, answer race."
    rules.save(tmp_path / "rules.json")  # edited by hand; program.json still holds the old rule
    program = load_program(cfg, str(tmp_path))
    assert "answer race" in program.signature.instructions and "answer profession" not in program.signature.instructions
    assert "differ from the program's" in capsys.readouterr().err

    other = tmp_path / "edited.json"
    rules.rules[0].text = "If the target is a faith, answer religion."
    rules.save(other)
    assert "answer religion" in load_program(cfg, "none", str(other)).signature.instructions


def test_an_edited_rule_moves_the_score_evaluate_reports(tmp_path):
    """`evaluate --program DIR` after a hand edit of DIR/rules.json: the score is the edit's, not program.json's."""
    import dspy

    from pld_optim import RunFolder, apply_rules
    from pld_optim.cli.evaluate import load_program
    from pld_optim.evaluation.scoring import run_student, score_outcomes
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.lm.adapter import LabelAdapter
    from pld_optim.rules import Rule
    from pld_optim.testing import rule_follower, scripted_lm

    cfg = load_config("quickstart")
    dev = load_split(cfg.data, "dev")
    word = cue_word(dev, "gender")  # a word in some gender sentences of the dev split and in no others
    rules = RuleSet(predictor="self", label_field="label", labels=["gender", "profession", "race", "religion"],
                    base_instructions=build_program(cfg.data).signature.instructions,
                    rules=[Rule(id="R1", text=f"If the sentence mentions {word}, answer gender.")])
    RunFolder(tmp_path).save(apply_rules(build_program(cfg.data), rules), rules)

    def score():
        program = load_program(cfg, str(tmp_path))
        student = scripted_lm(rule_follower(default="race", field="sentence"))
        with dspy.context(lm=student, adapter=LabelAdapter()):
            return score_outcomes(run_student(program, dev, resolve_task(program)), rules.labels)

    before = score()
    rules.rules[0].text = f"If the sentence mentions {word}, answer religion."
    rules.save(tmp_path / "rules.json")  # the reviewer's edit; program.json is unchanged
    after = score()
    assert before.per_class_f1["gender"] > 0 and after.per_class_f1["gender"] == 0
    assert after.macro_f1 < before.macro_f1


def test_cli_ablate_rescores_an_edited_rules_json_without_the_teacher(tmp_path, monkeypatch, capsys):
    from pld_optim import RunFolder, apply_rules
    from pld_optim.cli import main
    from pld_optim.rules import Rule
    from pld_optim.testing import rule_follower, scripted_lm

    cfg = load_config("quickstart")
    word = cue_word(load_split(cfg.data, "dev"), "gender")
    rules = RuleSet(predictor="self", label_field="label", labels=["gender", "profession", "race", "religion"],
                    base_instructions=build_program(cfg.data).signature.instructions,
                    rules=[Rule(id="G", text=f"If the sentence mentions {word}, answer gender."),
                           Rule(id="X", text=f"If the sentence mentions {word}, answer religion.")])
    RunFolder(tmp_path).save(apply_rules(build_program(cfg.data), rules), rules)
    lm = scripted_lm(rule_follower(default="race"), "student")
    monkeypatch.setattr("pld_optim.cli.folder.lm_from_config", lambda *a, **k: lm)
    assert main(["ablate", "quickstart", str(tmp_path)]) == 0
    saved = {r.id: r.contribution for r in RuleSet.load(tmp_path / "rules.json").rules}
    assert saved["G"] > 0 and saved["X"] == 0  # X never fires: G answers every such sentence first
    assert "wrote the contributions" in capsys.readouterr().out
    page = (tmp_path / "review.html").read_text()  # the review page shows the new figures, under the run's header
    assert f"contribution {saved['G']:+.3f}" in page and "<dt>config</dt><dd>quickstart</dd>" in page
