import re

import dspy
import optuna
import pytest
from conftest import LABELS, Classify

from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.factory import TokenCounter
from pld_optim.rules import DemoExample, Prompt, Rule, RuleSet, Selection
from pld_optim.search import SearchConfig
from pld_optim.search.space import Space
from pld_optim.search.study import PromptSearch
from pld_optim.testing import ScriptedEngine, rule_follower

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


def words(text: str) -> int:
    return len(text.split())


class WordScorer(Scorer):
    """Prompt budgets in words, so a test can state them exactly."""

    token_counter = TokenCounter(words, "words")


def harness(tmp_path=None, *, rules=RULES, max_demos=0, seed=0, **config):
    engine = ScriptedEngine(rule_follower(default="race"))
    lm = dspy.LM("local/student", engine=engine, cache=False)
    program = dspy.Predict(Classify)
    scorer = WordScorer(program, resolve_task(program), lm=lm)
    # `local`, the sampler this synthetic space was built for (the default, tpe, is tested in test_pld)
    cfg = SearchConfig(**{"n_trials": 40, "minibatch_size": 8, "sampler": "local", **config})

    def search(cfg=cfg) -> PromptSearch:
        return PromptSearch(scorer, rules, DEV, config=cfg, max_demos=max_demos, label_field="label",
                            out_dir=tmp_path, seed=seed)

    return engine, scorer, search


def load(tmp_path) -> optuna.Study:
    url = f"sqlite:///{tmp_path}/study.db"
    return optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)


def test_plots_survive_a_study_where_every_trial_ties(tmp_path):
    from pld_optim.search.plots import save_plots

    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) * 0 + 0.5, n_trials=4)
    paths = save_plots(study, tmp_path, multi_objective=False)
    assert tmp_path / "search_optimization_history.html" in paths


def test_rank_keys_round_trip():
    space = Space(RULES)
    sel = [Selection(rule_id="R4", variant=1), Selection(rule_id="R1")]
    assert space.selection(space.params(sel)) == sel
    assert space.selection(space.params([])) == []


def _with_examples(rules):
    demo = DemoExample(id="t1", inputs={"sentence": "the mother"}, label="gender")
    return [r.model_copy(update={"examples": [demo, demo.model_copy(update={"id": "t2"})]}) for r in rules]


def test_demos_round_trip_and_are_capped_at_max_demos():
    rules = _with_examples(RULES)
    sel = [Selection(rule_id="R2", variant=1, demos=[0, 1]), Selection(rule_id="R1", demos=[0])]
    assert Space(rules, max_demos=3).selection(Space(rules, max_demos=3).params(sel)) == sel
    # Two demos allowed: the highest-ranked rule keeps both of its demos, the next shows none.
    capped = Space(rules, max_demos=2).selection(Space(rules, max_demos=3).params(sel))
    assert [(s.rule_id, s.demos) for s in capped] == [("R2", [0, 1]), ("R1", [])]
    # max_demos=0 (the paper's rules-only prompt): no demo parameter at all.
    assert not any(k.startswith("show_") for k in Space(rules, max_demos=0).params(sel))
    assert Space(rules, max_demos=2).size() == (4, 6, 8) and Space(rules, max_demos=0).size() == (4, 6, 0)


def test_a_selected_demo_reaches_the_student_next_to_its_rule():
    from pld_optim.rules import prompt_of

    rules = _with_examples(RULES)
    selection = [Selection(rule_id="R2", variant=1), Selection(rule_id="R1", demos=[1])]
    prompt = prompt_of(rules, selection, "label")
    assert prompt.rules == [RULES[1].phrasings[0], RULES[0].text]
    (demo,) = prompt.demos
    assert demo.sentence == "the mother" and demo.label == "gender" and set(demo.inputs().keys()) == {"sentence"}
    assert prompt_of(rules, [Selection(rule_id="R1")], "label").demos is None  # rules only: demos left alone
    ruleset = RuleSet(predictor="p", label_field="label", labels=LABELS, base_instructions="x", rules=rules,
                      selection=selection)
    assert [d.toDict() for d in ruleset.prompt().demos] == [demo.toDict()]
    for demos in ([5], [1, 1]):  # an example it does not have, or one shown twice
        with pytest.raises(ValueError, match=r"selection shows examples \[.*\] of rule 'R1', which has 2"):
            RuleSet(predictor="p", label_field="label", labels=LABELS, base_instructions="x", rules=rules,
                    selection=[Selection(rule_id="R1", demos=demos)])
    # The student receives the demo as a worked example before the input.
    engine, scorer, _ = harness()
    scorer.outcomes(prompt, DEV[:1])
    turns = [m.text for m in engine.requests[-1].messages]
    assert len(turns) == 3 and "the mother" in turns[0] and "gender" in turns[1] and DEV[0].sentence in turns[2]


def test_search_finds_the_best_subset_order_and_phrasing(tmp_path):
    engine, scorer, search = harness(tmp_path)
    result, outcomes = search().run([BAD_START])
    assert result.best.macro_f1 == pytest.approx(1.0)
    chosen = {s.rule_id: (k, s.variant) for k, s in enumerate(result.best.selection)}
    assert "R1" in chosen and chosen["R2"][1] == 1  # both helpful rules, R2 in its 'prayer' wording
    assert "R3" not in chosen or chosen["R3"][0] > chosen["R1"][0]  # the conflicting rule never comes first
    assert result.n_pruned > 0  # minibatch chunks let the pruner stop bad configurations early
    assert (result.n_candidates, result.n_wordings, result.n_demo_candidates, result.sampler) == (4, 6, 0, "local")
    # Every trial records the student calls it made, and the result is the study's sum.
    assert result.student_calls == sum(c for _, _, c in result.history) == scorer.calls == engine.calls
    assert all(c == len(DEV) for _, f1, c in result.history if f1 is not None)  # a completed trial saw all of dev
    assert outcomes is not None and len(outcomes) == len(DEV)  # the best prompt's outcomes, scored here
    assert (tmp_path / "search_optimization_history.html").exists()
    assert (tmp_path / "search_param_importances.html").exists()


def test_prompt_budget_is_never_broken(tmp_path):
    _, scorer, _ = harness()
    budget = words(scorer.prompt_text(Prompt(rules=[RULES[0].text, RULES[1].phrasings[0]])))
    engine, _, search = harness(tmp_path, n_trials=60, max_prompt_tokens=budget)
    result, _ = search().run([BAD_START])
    assert result.best.prompt_tokens <= budget and result.n_repaired > 0
    assert result.best.macro_f1 == pytest.approx(1.0)  # R1 + R2's 'prayer' wording fits exactly
    assert all(t.user_attrs["prompt_tokens"] <= budget for t in load(tmp_path).trials)
    # What the student actually saw never exceeded the budget: the system message of every request.
    assert engine.requests and all(words(request.system) <= budget for request in engine.requests)
    assert any(len(re.findall(r"^\d+\. ", request.system, re.M)) == 2 for request in engine.requests)


def test_budget_below_the_bare_prompt_is_a_clear_error(tmp_path):
    _, _, search = harness(tmp_path, max_prompt_tokens=3)
    with pytest.raises(ValueError, match="max_prompt_tokens=3 is below the prompt without any rule"):
        search().run([BAD_START])


def test_search_resumes_after_an_interruption(tmp_path):
    engine, _, search = harness(tmp_path, n_trials=12, pruner="none")
    calls = {"n": 0}
    respond = engine.respond

    def dies_midway(system, user):
        calls["n"] += 1
        if calls["n"] == 5 * len(DEV) + 3:  # in the middle of the sixth trial
            raise KeyboardInterrupt
        return respond(system, user)

    engine.respond = dies_midway
    with pytest.raises(KeyboardInterrupt):
        search().run([BAD_START])
    engine.respond = respond
    before = engine.calls
    result, _ = search().run([BAD_START])
    states = [t.state for t in load(tmp_path).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 12  # 5 kept from the first run + 7 new
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # only the trial in flight was lost
    assert engine.calls - before == 7 * len(DEV)  # only the 7 new trials cost calls
    assert result.n_trials == 13
    # The study's student calls include the first run's finished trials.
    assert result.student_calls == 12 * len(DEV)


def test_multi_objective_returns_a_pareto_front_to_pick_from(tmp_path):
    _, _, search = harness(tmp_path, multi_objective=True, n_trials=40, n_startup_trials=8)
    result, _ = search().run([BAD_START])
    front = result.pareto
    assert len(front) >= 2
    assert [c.prompt_tokens for c in front] == sorted(c.prompt_tokens for c in front)
    assert all(a.macro_f1 < b.macro_f1 for a, b in zip(front, front[1:]))  # more tokens must buy F1
    assert (tmp_path / "search_pareto_front.html").exists()
    rules = RuleSet(predictor="p", label_field="label", labels=LABELS, base_instructions="x", rules=RULES,
                    search=result, usage=[])
    small = rules.pick(front[0].prompt_tokens)
    assert small.selection == front[0].selection
    with pytest.raises(ValueError, match="no Pareto point fits"):
        rules.pick(front[0].prompt_tokens - 1)


def test_every_local_edit_is_recognised_when_the_walk_is_replayed():
    from pld_optim.search.sampler import LocalSearchSampler, _move_between

    rules = _with_examples(RULES)
    sampler = LocalSearchSampler(Space(rules, max_demos=1), LABELS, seed=0)
    current = (("R3", 0, ()), ("R1", 0, (0,)), ("R2", 1, ()))
    moves = list(sampler._neighbours(current))
    assert {m[0] for m, _ in moves} == {"drop", "variant", "front", "add", "demo"}
    # At most max_demos=1 demo: R1 may hide its demo, no rule may show another one.
    assert all(sum(len(d) for _, _, d in key) <= 1 for _, key in moves)
    assert ("demo", "R1", 0) in [m for m, _ in moves]
    for move, key in moves:
        assert key != current
        assert _move_between(current, key) == move  # else the sampler's memory of what helped is wrong


def test_local_search_reaches_the_optimum_in_few_trials_and_resumes_from_its_incumbent(tmp_path):
    from pld_optim.search.sampler import _key, _move_between

    _, _, search = harness(tmp_path, sampler="local", n_trials=6, pruner="none", minibatch_size=len(DEV))
    first, _ = search().run([BAD_START])
    more = search().config.model_copy(update={"n_trials": 14})
    result, _ = search(more).run([BAD_START])  # the same study, continued
    assert [n for n, _, _ in result.history] == list(range(14)) and result.history[:6] == first.history
    assert result.best.macro_f1 == pytest.approx(1.0)
    # The continued run starts from the best prompt the first run found, one edit away from it.
    trials = sorted(load(tmp_path).trials, key=lambda t: t.number)
    incumbent = max(trials[:6], key=lambda t: (t.values[0], -t.number))
    key = lambda t: _key(t.user_attrs["selection"])  # noqa: E731
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

    _, _, search = harness(None, sampler=Counting(seed=3), pruner=NeverPrune(), n_trials=5)
    result, _ = search().run([BAD_START])
    assert result.n_trials == 5 and result.n_pruned == 0
    assert Counting.calls > 0 and NeverPrune.asked > 0  # the objects were used, not replaced by the defaults
    assert result.sampler == "Counting"
    with pytest.raises(ValueError, match="sampler"):
        SearchConfig(sampler="tp")


def test_the_incumbent_pruner_stops_a_trial_the_best_one_beats_on_the_same_examples():
    from pld_optim.search.pruner import ANSWERS, IncumbentPruner, macro_f1

    gold = [i % 4 for i in range(48)]
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={ANSWERS: gold}))  # the incumbent: all right
    pruner = IncumbentPruner(gold, 4, min_examples=16)

    def judged(answers):
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs={ANSWERS: answers})
        return pruner.prune(study, trial)

    assert macro_f1(gold, gold, 4) == pytest.approx(1.0)
    assert judged([0] * 16)  # one label for every item: far behind on 16 paired items
    assert not judged([0] * 8)  # too few items to judge
    assert not judged(gold[:15] + [1])  # one miss in 16 is chance
    assert not judged(gold[:24])  # the same answers: never behind
    # Nothing to compare with yet: the first trial always runs to the end.
    assert not IncumbentPruner(gold, 4).prune(optuna.create_study(direction="maximize"),
                                              optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                                                        user_attrs={ANSWERS: [0] * 40}))


def test_the_incumbent_pruner_spends_fewer_answers_and_finds_the_same_best_prompt(tmp_path):
    runs = {}
    for pruner in ("incumbent", "none"):
        engine, _, search = harness(None, sampler="tpe", n_trials=16, n_startup_trials=4, pruner=pruner)
        result, _ = search().run([BAD_START, [Selection(rule_id="R2", variant=1), Selection(rule_id="R1"),
                                              Selection(rule_id="R4", variant=1)]])
        runs[pruner] = result, engine.calls
    (pruned, pruned_calls), (full, full_calls) = runs["incumbent"], runs["none"]
    assert pruned.n_pruned > 0 and pruned_calls < full_calls
    assert pruned.best.macro_f1 == pytest.approx(full.best.macro_f1)
    assert pruned.student_calls == pruned_calls  # a pruned trial's answers are counted where it stopped
