from typing import Literal

import dspy
import optuna
import pytest

from pld_optim.adapter import LabelAdapter
from pld_optim.artifact import Rule, RuleSet, Selection, render_instructions
from pld_optim.scoring import run_student
from pld_optim.search import SearchConfig, params_for, search_rules, selection_from_params
from pld_optim.task import resolve_task
from pld_optim.testing import ScriptedEngine, rule_follower


class Classify(dspy.Signature):
    """Classify the bias type of the sentence."""

    sentence: str = dspy.InputField()
    label: Literal["gender", "race", "religion"] = dspy.OutputField()


RULES = [
    Rule(id="R1", text="If the sentence mentions she or mother, answer gender."),
    Rule(id="R2", text="If the sentence mentions church, answer religion.",
         phrasings=["If the sentence mentions church or prayer, answer religion."]),
    Rule(id="R3", text="If the sentence mentions mother, answer religion."),  # conflicts with R1 when first
    Rule(id="R4", text="If the sentence mentions country, answer race.",
         phrasings=["If the sentence mentions country or nation or border or passport or flag, answer race."]),
]
CUES = [("she", "gender"), ("mother", "gender"), ("church", "religion"), ("prayer", "religion"),
        ("country", "race"), ("nation", "race")]
DEV = [dspy.Example(id=f"d{i}", sentence=f"Item {i}: the {cue} here.", label=label).with_inputs("sentence")
       for i in range(24) for cue, label in [CUES[i % len(CUES)]]]
BAD_START = [Selection(rule_id="R3"), Selection(rule_id="R1"), Selection(rule_id="R2")]


def harness(tmp_path=None, **config):
    engine = ScriptedEngine(rule_follower(default="race"))
    lm = dspy.LM("local/student", engine=engine, cache=False)
    task = resolve_task(dspy.Predict(Classify))

    def evaluate(active, examples):
        sig = Classify.with_instructions(render_instructions(Classify.instructions, active, "label"))
        with dspy.context(lm=lm, adapter=LabelAdapter()):
            return run_student(dspy.Predict(sig), examples, task)

    def render(active):
        return render_instructions(Classify.instructions, active, "label")

    cfg = SearchConfig(**{"n_trials": 40, "minibatch_size": 8, **config})
    kwargs = dict(dev=DEV, labels=task.labels, evaluate=evaluate, render=render,
                  count_tokens=lambda text: len(text.split()), token_counter="words", config=cfg,
                  seeds=[BAD_START], out_dir=tmp_path, seed=0)
    return engine, kwargs


def test_plots_survive_a_study_where_every_trial_ties(tmp_path):
    from pld_optim.search import save_plots

    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) * 0 + 0.5, n_trials=4)
    paths = save_plots(study, tmp_path, multi_objective=False)
    assert tmp_path / "search_optimization_history.html" in paths


def test_rank_keys_round_trip():
    sel = [Selection(rule_id="R4", variant=1), Selection(rule_id="R1")]
    assert selection_from_params(params_for(sel, RULES), RULES) == sel


def test_search_finds_the_best_subset_order_and_phrasing(tmp_path):
    engine, kwargs = harness(tmp_path)
    result = search_rules(RULES, **kwargs)
    assert result.best.macro_f1 == pytest.approx(1.0)
    chosen = {s.rule_id: (k, s.variant) for k, s in enumerate(result.best.selection)}
    assert "R1" in chosen and chosen["R2"][1] == 1  # both helpful rules, R2 in its 'prayer' wording
    assert "R3" not in chosen or chosen["R3"][0] > chosen["R1"][0]  # the conflicting rule never comes first
    assert result.n_pruned > 0  # minibatch chunks let the pruner stop bad configurations early
    assert (tmp_path / "search_optimization_history.html").exists()
    assert (tmp_path / "search_param_importances.html").exists()


def test_prompt_budget_is_never_broken(tmp_path):
    budget = len(render_instructions(Classify.instructions, [RULES[0].text, RULES[1].phrasings[0]], "label").split())
    engine, kwargs = harness(tmp_path, max_prompt_tokens=budget, n_trials=60)
    result = search_rules(RULES, **kwargs)
    assert result.best.prompt_tokens <= budget and result.n_repaired > 0
    assert result.best.macro_f1 == pytest.approx(1.0)  # R1 + R2's 'prayer' wording fits exactly
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path}/study.db")[0],
                              storage=f"sqlite:///{tmp_path}/study.db")
    assert all(t.user_attrs["prompt_tokens"] <= budget for t in study.trials)
    # What the student actually saw never exceeded the budget: rebuild each prompt's rule block.
    import re

    for request in engine.requests:
        active = re.findall(r"^\s*\d+\. (If .*)$", request.system, re.M)
        assert len(render_instructions(Classify.instructions, active, "label").split()) <= budget


def test_budget_below_the_bare_prompt_is_a_clear_error(tmp_path):
    _, kwargs = harness(tmp_path, max_prompt_tokens=3)
    with pytest.raises(ValueError, match="max_prompt_tokens=3 is below the prompt without any rule"):
        search_rules(RULES, **kwargs)


def test_search_resumes_after_an_interruption(tmp_path):
    engine, kwargs = harness(tmp_path, n_trials=12, pruner="none")
    calls = {"n": 0}
    respond = engine.respond

    def dies_midway(system, user):
        calls["n"] += 1
        if calls["n"] == 5 * len(DEV) + 3:  # in the middle of the sixth trial
            raise KeyboardInterrupt
        return respond(system, user)

    engine.respond = dies_midway
    with pytest.raises(KeyboardInterrupt):
        search_rules(RULES, **kwargs)
    engine.respond = respond
    before = engine.calls
    result = search_rules(RULES, **kwargs)
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path}/study.db")[0],
                              storage=f"sqlite:///{tmp_path}/study.db")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 12  # 5 kept from the first run + 7 new
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # only the trial in flight was lost
    assert engine.calls - before == 7 * len(DEV) + len(DEV)  # 7 new trials and the final re-score
    assert result.n_trials == 13


def test_multi_objective_returns_a_pareto_front_to_pick_from(tmp_path):
    engine, kwargs = harness(tmp_path, multi_objective=True, n_trials=40, n_startup_trials=8)
    result = search_rules(RULES, **kwargs)
    front = result.pareto
    assert len(front) >= 2
    assert [c.prompt_tokens for c in front] == sorted(c.prompt_tokens for c in front)
    assert all(a.macro_f1 < b.macro_f1 for a, b in zip(front, front[1:]))  # more tokens must buy F1
    assert (tmp_path / "search_pareto_front.html").exists()
    rules = RuleSet(predictor="p", label_field="label", labels=["gender", "race", "religion"],
                    base_instructions="x", rules=RULES, search=result, usage=[])
    small = rules.pick(front[0].prompt_tokens)
    assert small.selection == front[0].selection
    with pytest.raises(ValueError, match="no Pareto point fits"):
        rules.pick(front[0].prompt_tokens - 1)


def test_every_local_edit_is_recognised_when_the_walk_is_replayed():
    from pld_optim.local_search import LocalSearchSampler, _move_between

    sampler = LocalSearchSampler(RULES, ["gender", "race", "religion"], seed=0)
    current = (("R3", 0), ("R1", 0), ("R2", 1))
    moves = list(sampler._neighbours(current))
    assert {m[0] for m, _ in moves} == {"drop", "variant", "front", "add"}
    for move, key in moves:
        assert key != current
        assert _move_between(current, key) == move  # else the sampler's memory of what helped is wrong


def test_local_search_reaches_the_optimum_in_few_trials_and_resumes_from_its_incumbent(tmp_path):
    from pld_optim.local_search import _move_between

    engine, kwargs = harness(tmp_path, sampler="local", n_trials=6, pruner="none", minibatch_size=len(DEV))
    first = search_rules(RULES, **kwargs)
    kwargs["config"] = kwargs["config"].model_copy(update={"n_trials": 14})
    result = search_rules(RULES, **kwargs)  # the same study, continued
    assert [n for n, _, _ in result.history] == list(range(14)) and result.history[:6] == first.history
    assert result.best.macro_f1 == pytest.approx(1.0)
    # The continued run starts from the best prompt the first run found, one edit away from it.
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path}/study.db")[0],
                              storage=f"sqlite:///{tmp_path}/study.db")
    trials = sorted(study.trials, key=lambda t: t.number)
    incumbent = max(trials[:6], key=lambda t: (t.values[0], -t.number))
    key = lambda t: tuple((s["rule_id"], s["variant"]) for s in t.user_attrs["selection"])  # noqa: E731
    assert _move_between(key(incumbent), key(trials[6])) is not None
    assert len({key(t) for t in trials}) == len(trials)  # no prompt is scored twice


def test_optuna_sampler_and_pruner_objects_are_used_as_given():
    class Counting(optuna.samplers.RandomSampler):
        calls = 0

        def sample_independent(self, *args, **kwargs):
            Counting.calls += 1
            return super().sample_independent(*args, **kwargs)

    class NeverPrune(optuna.pruners.NopPruner):
        asked = 0

        def prune(self, study, trial):
            NeverPrune.asked += 1
            return False

    engine, kwargs = harness(None, sampler=Counting(seed=3), pruner=NeverPrune(), n_trials=5)
    result = search_rules(RULES, **kwargs)
    assert result.n_trials == 5 and result.n_pruned == 0
    assert Counting.calls > 0 and NeverPrune.asked > 0  # the objects were used, not replaced by the defaults
    with pytest.raises(ValueError, match="sampler"):
        SearchConfig(sampler="tp")
