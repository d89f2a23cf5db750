import json

import dspy
import pytest
from conftest import LABELS, NOT_PARAMS, PAPER, Classify

from pld_optim import PLD, RuleSet, Scorer, apply_rules
from pld_optim.lm.adapter import LabelAdapter


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
    # Each rule carries worked-example candidates: train examples of its cluster, with its label.
    for r in rules.rules:
        assert 0 < len(r.examples) <= pld.n_demo_candidates
        assert {e.id for e in r.examples} <= set(r.support) and {e.label for e in r.examples} == {r.label}
    assert rules.system_prompt == LabelAdapter().format_system_message(compiled.predictors()[0].signature)
    assert (tmp_path / "system_prompt.txt").read_text().strip() == rules.system_prompt.strip()
    assert rules.history[0].iteration == 0 and rules.dev_macro_f1 == pytest.approx(1.0)
    mine = next(u for u in rules.usage if u.stage == "mine")
    assert mine.lm_calls == len(train) and mine.failures == 0
    # Contrastive mining (the default): the student answered the train examples zero-shot first, and the
    # teacher explained the ones it got wrong with its wrong answer.
    probe = next(u for u in rules.usage if u.stage == "probe")
    assert probe.lm_calls == len(train) and probe.by_model == {"local/student": len(train)}
    contrastive = [m for m in pld.mined_ if m.predicted is not None]
    assert contrastive and all(m.predicted == "race" and m.gold != "race" for m in contrastive)
    assert json.loads((tmp_path / "program.json").read_text())
    assert (tmp_path / "report.md").exists() and (tmp_path / "review.html").exists()


def test_the_papers_label_mining_asks_no_student_first(teacher, student, data):
    train, dev = data
    pld = PLD(teacher=teacher, n_clusters=1, **PAPER)
    pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    assert "probe" not in [u.stage for u in pld.usage_]
    assert all(m.predicted is None for m in pld.mined_) and len(pld.mined_) == len(train)
    assert pld.score_.macro_f1 == pytest.approx(1.0)


def test_edited_rules_apply_without_mining(teacher, student, data, tmp_path):
    train, dev = data
    program = dspy.Predict(Classify)
    PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, max_refine_iters=0).compile(
        program, trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    gone = {r.id for r in rules.rules if "church" in r.text}
    rules.rules = [r for r in rules.rules if r.id not in gone]  # a reviewer deletes the religion rule
    if rules.selection is not None:  # ... and its place in the prompt
        rules.selection = [s for s in rules.selection if s.rule_id not in gone]
    edited = apply_rules(program, rules)
    preds = [edited(sentence=ex.sentence).label for ex in dev]
    religion = [p for p, ex in zip(preds, dev) if ex.label == "religion"]
    assert religion and all(p == "race" for p in religion)
    assert all(p == ex.label for p, ex in zip(preds, dev) if ex.label != "religion")


def test_compile_with_search_persists_the_study_and_selects_rules(teacher, student, data, tmp_path):
    from pld_optim.evaluation.scoring import run_student, score_outcomes
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.run.report import render_report

    train, dev = data
    pld = PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, search={"n_trials": 8, "minibatch_size": 6})
    compiled = pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    assert rules.search is not None and rules.search.n_trials == 8 and rules.selection is not None
    assert rules.search.sampler == "tpe"  # the default, chosen on real compiles (docs/results.md)
    assert rules.dev_macro_f1 == pytest.approx(1.0) == rules.search.best.macro_f1
    assert (tmp_path / "study.db").exists()
    predictor = compiled.predictors()[0]
    assert predictor.signature.instructions == rules.render_instructions()
    assert len(predictor.demos) == sum(len(s.demos) for s in rules.selection) <= pld.max_demos  # the search's demos
    search = next(u for u in rules.usage if u.stage == "search")
    assert search.lm_calls > 0
    # Every trial's student calls are recorded, and the study's total is their sum.
    assert rules.search.student_calls == sum(calls for _, _, calls in rules.search.history) > 0
    assert "## Search" in render_report(rules)
    assert pld.estimate_calls(len(train), len(dev), len(LABELS))["student: search"] == 8 * len(dev) + len(dev)
    # score_ is a fresh evaluation of the chosen prompt: all its fields describe that one prompt.
    fresh = score_outcomes(run_student(compiled, dev, resolve_task(compiled)), LABELS)
    assert pld.score_ == fresh


def test_a_teacher_model_string_is_built_like_the_cli_builds_it():
    """PLD(teacher="local/...") from Python used to reach litellm ("LLM Provider NOT provided")."""
    from pld_optim.lm.engine import LlamaCppEngine
    from pld_optim.lm.factory import as_lm, engine_of

    lm = as_lm("local/smollm2-135m")  # the engine loads its model on first use, not here
    assert isinstance(engine_of(lm), LlamaCppEngine) and lm.kwargs["max_tokens"] == 1024
    assert engine_of(lm)._llama is None


def test_python_and_yaml_share_one_parameter_schema(teacher, student, data):
    from pld_optim.cli.config import load_config
    from pld_optim.params import PLDParams

    # The schema holds constraints only; the defaults live in PLD.__init__'s signature alone.
    defaults = PLD.defaults()
    assert set(PLDParams.model_fields) == set(defaults) - NOT_PARAMS
    assert all(field.is_required() for field in PLDParams.model_fields.values())
    # YAML's pld: section is filled from those same defaults.
    cfg = load_config("quickstart")
    filled = cfg.pld_params()
    assert cfg.pld and all(filled[k] == v for k, v in cfg.pld.items())  # what the section sets wins
    assert {k: v for k, v in filled.items() if k not in cfg.pld} == {
        k: defaults[k] for k in filled if k not in cfg.pld}
    train, dev = data
    with pytest.raises(ValueError, match=r"max_clusters=0: Input should be greater than 0"):
        PLD(teacher=teacher, max_clusters=0).compile(dspy.Predict(Classify), trainset=train, valset=dev)
    with pytest.raises(ValueError, match=r"min_delta=-0.1"):
        PLD(teacher=teacher, min_delta=-0.1).compile(dspy.Predict(Classify), trainset=train, valset=dev)
    assert teacher._engine_spec.calls == 0  # refused before any LM call


def test_each_rule_gets_its_measured_contribution_and_a_harmful_rule_is_flagged(teacher, student, data, tmp_path):
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.rules import Rule
    from pld_optim.run.report import render_report
    from pld_optim.stages.contribution import rule_contributions, with_contributions

    train, dev = data
    pld = PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, max_refine_iters=0)
    pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    worth = {r.label: r.contribution for r in rules.rules}
    assert worth["gender"] > 0 and worth["religion"] > 0
    # The scripted student answers race by default: that rule adds nothing, so it is dropped, not shipped.
    assert worth["race"] is None and [r.gate for r in rules.refusals if r.stage == "earn"] == ["no_gain"]
    contribution = next(u for u in rules.usage if u.stage == "contribution")
    assert contribution.lm_calls >= len(rules.rules) * len(dev)
    rules.selection = None  # the reviewer puts every rule back, to measure them below

    # A reviewer adds a rule that steals religion items first: its contribution is negative and flagged.
    rules.rules.insert(0, Rule(id="BAD", text="If the sentence mentions church, answer gender."))
    program = dspy.Predict(Classify)
    scorer = Scorer(program, resolve_task(program), lm=student)
    values = rule_contributions(scorer, rules.rules, [sel for _, sel in rules.selected()], rules.label_field, dev)
    assert set(values) == {r.id for r in rules.rules}
    assert values["BAD"] < 0 and all(v >= 0 for k, v in values.items() if k != "BAD")
    assert scorer.calls == (len(rules.rules) + 1) * len(dev)  # the full prompt once, then each rule left out
    report = render_report(rules.model_copy(update={"rules": with_contributions(rules.rules, values)}))
    assert "flagged: the prompt scores higher without it" in report


@pytest.mark.real_model
def test_compile_from_python_with_a_local_teacher_string(student, data, monkeypatch):
    """The whole path, not just the LM object: PLD(teacher="local/...").compile mines with the embedded model."""
    pytest.importorskip("llama_cpp")
    from pld_optim.lm.factory import as_lm, engine_of
    from pld_optim.stages.mine import ExplainLabel

    train, dev = data
    engine = engine_of(as_lm("local/smollm2-135m"))  # make_lm shares one engine per model file and settings
    prompts = []
    render = engine.render

    def recording(request):
        prompts.append(render(request))
        return prompts[-1]

    monkeypatch.setattr(engine, "render", recording)
    # What a 135M teacher writes rarely passes the quality gates (tested on their own in tests/stages/test_gates.py);
    # they are opened here so the compile must finish: a refused rule cannot pass as this path working.
    monkeypatch.setattr("pld_optim.stages.mine._refusal", lambda *a, **k: None)
    monkeypatch.setattr("pld_optim.plan.check_rules", lambda *a, **k: None)  # the same gates, on the rule set
    # Every call must reach the engine: an earlier run's answers in DSPy's disk cache would not.
    monkeypatch.setattr(dspy, "cache", dspy.clients.Cache(enable_disk_cache=False, enable_memory_cache=False,
                                                          disk_cache_dir="", memory_max_entries=0))
    pld = PLD(teacher="local/smollm2-135m", max_train_examples=2, n_clusters=1, max_refine_iters=0,
              contribution=False, verify_per_label=0, **PAPER)  # the scripted student reads no 135M condition
    compiled = pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    mine = next(u for u in pld.usage_ if u.stage == "mine")
    assert mine.by_model == {"local/smollm2-135m": 2} and mine.failures == 0
    assert len(pld.mined_) == 2 and all(m.error is None and m.rule for m in pld.mined_)
    mining = [p for p in prompts if ExplainLabel.__doc__[:60] in p]
    assert len(mining) == 2 and all("[[ ## gold_label ## ]]" in p for p in mining)
    assert compiled.pld_rules.rules


def test_the_data_check_refuses_a_false_rule_and_every_shipped_rule_carries_its_figures(student, data, tmp_path):
    """A merged rule for race that names gender's cues answers race for gender items: the student, asked
    whether its condition holds on train items, says yes only for gender ones, so the data refuses it."""
    from conftest import teacher_respond

    from pld_optim.testing import scripted_lm

    def respond(system, user):
        answer = teacher_respond(system, user)
        if "Merge labelling rules that all lead" in " ".join(system.split()) and "answer race" in answer["instruction"]:
            return {"instruction": "If the sentence mentions she or mother, answer race.", "phrasings": []}
        return answer

    train, dev = data
    pld = PLD(teacher=scripted_lm(respond, "teacher"), n_clusters=1, max_refine_iters=0, out_dir=tmp_path,
              verify_per_label=4, **PAPER)
    pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    data_refusals = [r for r in rules.refusals if r.stage == "verify"]
    assert [r.text for r in data_refusals] == ["If the sentence mentions she or mother, answer race."]
    assert data_refusals[0].gate == "data" and "held for 0 of 4 race items" in data_refusals[0].reason
    assert "precision 0.00" in data_refusals[0].reason  # gender items with "she" or "mother" said yes
    assert all("answer race" not in r.text for r in rules.rules)
    assert rules.rules and all(r.precision == 1.0 and r.coverage and r.evidence for r in rules.rules)
    verify = next(u for u in rules.usage if u.stage == "verify")
    assert verify.lm_calls == 3 * 4 * 3  # three merged rules x 4 train items x 3 labels
    assert "checked on train: precision 1.00" in (tmp_path / "report.md").read_text()
    assert "train precision 1.00" in (tmp_path / "review.html").read_text()


def test_no_data_check_when_verify_per_label_is_0(teacher, student, data):
    train, dev = data
    pld = PLD(teacher=teacher, n_clusters=1, max_refine_iters=0, verify_per_label=0, **PAPER)
    pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    assert not any(u.stage == "verify" for u in pld.usage_)
    assert pld.rules_.rules and all(r.precision is None for r in pld.rules_.rules)


def test_a_rule_that_adds_nothing_is_dropped_and_the_report_says_what_rules_and_demos_add(student, data, tmp_path):
    """A fourth rule no dev item triggers adds nothing: at equal dev F1 the shorter prompt ships, the rule is
    listed as dropped, and report.md states what the rules add beside the worked examples and vice versa."""
    from conftest import teacher_respond

    from pld_optim.testing import scripted_lm

    def respond(system, user):
        answer = teacher_respond(system, user)
        if "Merge labelling rules that all lead" in " ".join(system.split()) and "answer race" in answer["instruction"]:
            return {"instruction": answer["instruction"], "phrasings": []}
        return answer

    train, dev = data
    pld = PLD(teacher=scripted_lm(respond, "teacher"), n_clusters=1, max_refine_iters=0, out_dir=tmp_path,
              max_demos=1, verify_per_label=0, mining="label", refinement="rewrite")
    pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    rules = RuleSet.load(tmp_path / "rules.json")
    # race is the student's default answer: its rule changes no answer, so it adds nothing and is dropped.
    dropped = [r for r in rules.refusals if r.stage == "earn"]
    assert [r.gate for r in dropped] == ["no_gain"] and "answer race" in dropped[0].text
    assert all("answer race" not in text for text in rules.active_rules()) and len(rules.active_rules()) == 2
    assert rules.dev_macro_f1 == pytest.approx(1.0)
    assert all(r.contribution > 0 for r in rules.rules if r.contribution is not None)
    # No worked example is shown (no search): nothing to measure the rules beside.
    assert rules.rules_beside_demos is None and rules.demos_beside_rules is None


def test_what_rules_add_beside_worked_examples_and_back(student, data):
    """earn_places on a prompt with a worked example: the rules' and the demos' worth beside each other."""
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.records import Selection
    from pld_optim.rules import DemoExample, Rule
    from pld_optim.stages.contribution import earn_places

    train, dev = data
    she = next(ex for ex in train if " she " in ex.sentence)
    rule = Rule(id="G", text="If the sentence mentions she or mother, answer gender.",
                examples=[DemoExample(id=she.id, inputs={"sentence": she.sentence}, label="gender")])
    program = dspy.Predict(Classify)
    scorer = Scorer(program, resolve_task(program), lm=student)
    selection = [Selection(rule_id="G", demos=[0])]
    full = scorer.score(Prompt_of(rule, selection), dev)
    earned = earn_places(scorer, [rule], selection, "label", dev, full)
    # The scripted student follows rules and ignores demos: the rule is all the gain, the demo none of it.
    assert earned.rules_beside_demos > 0 and earned.demos_beside_rules == 0
    assert earned.selection == selection and earned.contributions["G"] > 0


def Prompt_of(rule, selection):
    from pld_optim.rules import prompt_of

    return prompt_of([rule], selection, "label")
