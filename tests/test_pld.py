import json

import dspy
import pytest
from conftest import Classify

from pld_optim import PLD, RuleSet, apply_rules
from pld_optim.adapter import LabelAdapter


def test_compile_distils_rules_into_the_system_prompt(teacher, student, data, tmp_path):
    train, dev = data
    program = dspy.Predict(Classify)
    pld = PLD(teacher=teacher, num_threads=2, n_clusters=1, out_dir=tmp_path, seed=0)
    compiled = pld.compile(program, trainset=train, valset=dev)

    # The student only answers right when the mined rules reach its system prompt.
    assert pld.baseline_score_.macro_f1 < 0.4
    assert pld.score_.macro_f1 == pytest.approx(1.0)
    assert pld.clusters_.n_clusters == 3 and pld.clusters_.per_label == {"gender": 1, "race": 1, "religion": 1}
    # The original program is untouched: with_instructions, never the shared setter.
    assert "Rules" not in program.signature.instructions and "mentions" not in program.signature.instructions
    instr = compiled.predictors()[0].signature.instructions
    assert instr.startswith("Classify the bias type of the sentence.")
    assert "1. If the sentence mentions" in instr

    rules = RuleSet.load(tmp_path / "rules.json")
    assert len(rules.rules) == 3
    assert all(r.support and r.rationales and r.cluster_size >= 2 for r in rules.rules)
    assert sum(r.cluster_size for r in rules.rules) == len(train)
    assert rules.system_prompt == LabelAdapter().format_system_message(compiled.predictors()[0].signature)
    assert (tmp_path / "system_prompt.txt").read_text().strip() == rules.system_prompt.strip()
    assert rules.history[0].iteration == 0 and rules.dev_macro_f1 == pytest.approx(1.0)
    mine = next(u for u in rules.usage if u.stage == "mine")
    assert mine.lm_calls == len(train) and mine.failures == 0
    assert json.loads((tmp_path / "program.json").read_text())


def test_edited_rules_apply_without_mining(teacher, student, data, tmp_path):
    train, dev = data
    program = dspy.Predict(Classify)
    PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, max_refine_iters=0).compile(
        program, trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    rules.rules = [r for r in rules.rules if "church" not in r.text]  # a reviewer deletes the religion rule
    edited = apply_rules(program, rules)
    preds = [edited(sentence=ex.sentence).label for ex in dev]
    religion = [p for p, ex in zip(preds, dev) if ex.label == "religion"]
    assert religion and all(p == "race" for p in religion)
    assert all(p == ex.label for p, ex in zip(preds, dev) if ex.label != "religion")


def test_compile_with_search_persists_the_study_and_selects_rules(teacher, student, data, tmp_path):
    from pld_optim.report import render_report

    train, dev = data
    pld = PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, search={"n_trials": 8, "minibatch_size": 6})
    compiled = pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    assert rules.search is not None and rules.search.n_trials == 8 and rules.selection
    assert rules.dev_macro_f1 == pytest.approx(1.0) == rules.search.best.macro_f1
    assert (tmp_path / "study.db").exists()
    assert compiled.predictors()[0].signature.instructions == rules.render_instructions()
    assert next(u for u in rules.usage if u.stage == "search").lm_calls > 0
    assert "## Search" in render_report(rules)
    assert pld.estimate_calls(len(train), len(dev))["student: search"] == 8 * len(dev) + len(dev)
    # score_ is a fresh evaluation of the chosen prompt: all its fields describe that one prompt.
    from pld_optim.scoring import run_student, score_outcomes
    from pld_optim.task import resolve_task

    fresh = score_outcomes(run_student(compiled, dev, resolve_task(compiled)), ["gender", "race", "religion"])
    assert pld.score_ == fresh


def test_a_teacher_model_string_is_built_like_the_cli_builds_it():
    """PLD(teacher="local/...") from Python used to reach litellm ("LLM Provider NOT provided")."""
    from pld_optim.models import LlamaCppEngine, as_lm

    lm = as_lm("local/smollm2-135m")
    assert isinstance(lm._engine_spec, LlamaCppEngine) and lm.kwargs["max_tokens"] == 1024


def test_python_and_yaml_share_one_parameter_schema(teacher, student, data):
    import inspect

    from pld_optim.config import PLDConfig

    defaults = inspect.signature(PLD.__init__).parameters
    for name, field in PLDConfig.model_fields.items():
        assert defaults[name].default == field.default, name  # YAML's pld: section and PLD(...) agree
    train, dev = data
    with pytest.raises(ValueError, match=r"max_clusters=0: Input should be greater than 0"):
        PLD(teacher=teacher, max_clusters=0).compile(dspy.Predict(Classify), trainset=train, valset=dev)
    with pytest.raises(ValueError, match=r"min_delta=-0.1"):
        PLD(teacher=teacher, min_delta=-0.1).compile(dspy.Predict(Classify), trainset=train, valset=dev)
    assert teacher._engine_spec.calls == 0  # refused before any LM call


def test_each_rule_gets_its_measured_contribution_and_a_harmful_rule_is_flagged(teacher, student, data, tmp_path):
    from pld_optim.ablate import rule_contributions, with_contributions
    from pld_optim.artifact import Rule
    from pld_optim.report import render_report
    from pld_optim.scoring import run_student, score_outcomes
    from pld_optim.task import resolve_task

    train, dev = data
    pld = PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, max_refine_iters=0)
    pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    worth = {r.label: r.contribution for r in rules.rules}
    assert worth["gender"] > 0 and worth["religion"] > 0
    assert worth["race"] == 0  # the scripted student answers race by default: that rule is redundant
    contribution = next(u for u in rules.usage if u.stage == "contribution")
    assert contribution.lm_calls == len(rules.rules) * len(dev)

    # A reviewer adds a rule that steals religion items first: its contribution is negative and flagged.
    rules.rules.insert(0, Rule(id="BAD", text="If the sentence mentions church, answer gender."))
    task = resolve_task(dspy.Predict(Classify))

    def score(texts):
        kept = rules.model_copy(update={"rules": [r for r in rules.rules if r.text in texts]})
        return score_outcomes(run_student(apply_rules(dspy.Predict(Classify), kept), dev, task), task.labels).macro_f1

    values = rule_contributions(rules, score)
    assert values["BAD"] < 0 and all(v >= 0 for k, v in values.items() if k != "BAD")
    report = render_report(with_contributions(rules, values))
    assert "flagged: the prompt scores higher without it" in report


def test_cli_ablate_rescores_an_edited_rules_json_without_the_teacher(student, tmp_path, monkeypatch, capsys):
    from pld_optim import cli
    from pld_optim.artifact import Rule
    from pld_optim.config import build_program, load_config
    from pld_optim.pld import save_artifacts
    from pld_optim.testing import rule_follower, scripted_lm

    cfg = load_config("quickstart")
    rules = RuleSet(predictor="self", label_field="label", labels=["gender", "profession", "race", "religion"],
                    base_instructions=build_program(cfg.data).signature.instructions,
                    rules=[Rule(id="G", text="If the sentence mentions mommy, answer gender."),
                           Rule(id="X", text="If the sentence mentions mommy, answer religion.")])
    save_artifacts(apply_rules(build_program(cfg.data), rules), rules, tmp_path)
    lm = scripted_lm(rule_follower(default="race"), "student")
    monkeypatch.setattr(cli, "lm_from_config", lambda *a, **k: lm)
    assert cli.main(["ablate", "quickstart", str(tmp_path)]) == 0
    saved = {r.id: r.contribution for r in RuleSet.load(tmp_path / "rules.json").rules}
    assert saved["G"] > 0 and saved["X"] == 0  # X never fires: G answers every 'mommy' sentence first
    assert "wrote the contributions" in capsys.readouterr().out
    page = (tmp_path / "review.html").read_text()  # the review page shows the new figures, under the run's header
    assert f"contribution {saved['G']:+.3f}" in page and "<dt>config</dt><dd>quickstart</dd>" in page


@pytest.mark.real_model
def test_compile_from_python_with_a_local_teacher_string(student, data):
    """The whole path, not just the LM object: PLD(teacher="local/...").compile mines with the embedded model."""
    pytest.importorskip("llama_cpp")
    from pld_optim.models import as_lm, engine_of

    train, dev = data
    engine = engine_of(as_lm("local/smollm2-135m"))  # make_lm shares one engine per model file and settings
    engine.last_prompt = None
    pld = PLD(teacher="local/smollm2-135m", max_train_examples=2, n_clusters=1, max_refine_iters=0,
              contribution=False)
    try:
        pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    except RuntimeError as exc:  # a 135M teacher may write no rule the gates accept; that is not this test
        assert "usable rule" in str(exc)
    else:
        assert pld.usage_[0].by_model == {"local/smollm2-135m": 2}
    assert engine.last_prompt and "You write labelling rules for a small model" in engine.last_prompt
