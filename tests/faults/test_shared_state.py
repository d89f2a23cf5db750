"""State shared between runs that are not the same run (issue 26, kind 5).

An Optuna study on a shared `search.storage` is reused only by a search that would score its trials the same:
the same rules, student, dev data and prompt settings. Two configs with one storage and one `name` but another
student (or dev set, or demo cap) each run and ship their own search; the workers of one run, each with its own
sampler seed, still share one study.
"""

import importlib
import json

import dspy
import optuna
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import CLI_MODULES, cli, write_config

from pld_optim import PLD
from pld_optim.testing import rule_follower, scripted_lm

SEARCH = {"n_trials": 6, "minibatch_size": 8, "sampler": "random"}
# Another student: it answers "gender" unless a rule says otherwise, so the prompt it needs is not the first's.
OTHER_STUDENT = rule_follower(default="gender")


def storage_of(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/shared.db"


def search_calls(pld: PLD) -> int:
    return next(u.lm_calls for u in pld.usage_ if u.stage == "search")


def compile_on(tmp_path, out: str, student, *, dev=None, **kwargs) -> PLD:
    """A scripted compile whose search lives on the shared storage under the study name 'shared'."""
    pld = PLD(teacher=scripted_lm(teacher_respond, "teacher"), n_clusters=1, max_refine_iters=0, contribution=False,
              out_dir=tmp_path / out, search={**SEARCH, "storage": storage_of(tmp_path), "study_name": "shared"},
              **kwargs)
    with dspy.context(lm=student):
        pld.compile(dspy.Predict(Classify), trainset=make_examples(30),
                    valset=dev if dev is not None else make_examples(12, offset=100))
    return pld


def studies(tmp_path) -> list[optuna.Study]:
    url = storage_of(tmp_path)
    return [optuna.load_study(study_name=name, storage=url) for name in optuna.get_all_study_names(url)]


def test_another_student_on_a_shared_storage_runs_its_own_search(tmp_path):
    # Before: one study for both (keyed by rule texts only); the second student ran no trial (its search
    # stage made only the one re-score of the first student's pick) and shipped that pick.
    # Label-conditioned mining asks the teacher the same for any student: the same rules, so the same old name.
    first = compile_on(tmp_path, "a", scripted_lm(student_respond, "student"), mining="label")
    second = compile_on(tmp_path, "b", scripted_lm(OTHER_STUDENT, "other-student"), mining="label")
    assert len(studies(tmp_path)) == 2
    assert search_calls(first) > 12 and search_calls(second) > 12  # 12 dev examples: one pass is the re-score
    students = sorted(s.user_attrs["pld_setup"]["student"]["model"] for s in studies(tmp_path))
    assert students == ["local/other-student", "local/student"]
    assert second.score_.macro_f1 == pytest.approx(1.0)  # its own pick, scored on its own answers


def test_another_dev_set_or_demo_cap_gets_its_own_study(tmp_path):
    student = scripted_lm(student_respond, "student")
    compile_on(tmp_path, "a", student, max_demos=0)
    # Relabelled dev (same ids and inputs): every earlier trial's F1 is wrong for it.
    relabelled = [ex.copy(label="gender" if ex.label == "race" else "race") if i == 0 else ex
                  for i, ex in enumerate(make_examples(12, offset=100))]
    compile_on(tmp_path, "b", student, max_demos=0, dev=relabelled)
    # The demo cap: rules-only (compare's pld-rules-only) must not load a study whose trials showed demos.
    rules_only = compile_on(tmp_path, "c", student, max_demos=2)
    found = studies(tmp_path)
    assert len(found) == 3 and {s.user_attrs["pld_setup"]["max_demos"] for s in found} == {0, 2}
    assert search_calls(rules_only) > 12


def test_dev_chunks_do_not_depend_on_the_seed():
    # Before: the pruning chunks were shuffled by the seed, so two workers of one study (each seeding its own
    # sampler) reported running F1 on different examples at the same step, which the median pruner compares.
    from pld_optim.evaluation.scorer import Scorer
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.rules import Rule
    from pld_optim.search.config import SearchConfig
    from pld_optim.search.study import PromptSearch

    program, dev = dspy.Predict(Classify), make_examples(24)
    scorer = Scorer(program, resolve_task(program), lm=scripted_lm(student_respond, "student"))
    rules = [Rule(id="R1", text="If the sentence mentions she, answer gender.")]

    def chunks(seed, examples):
        search = PromptSearch(scorer, rules, examples, config=SearchConfig(minibatch_size=8), max_demos=0,
                              label_field="label", seed=seed)
        return [[ex.id for ex in chunk] for chunk in search.chunks]

    assert chunks(0, dev) == chunks(1, dev) == chunks(7, list(reversed(dev)))
    assert PromptSearch(scorer, rules, dev, config=SearchConfig(), max_demos=0, label_field="label",
                        seed=0).setup() == PromptSearch(scorer, rules, dev, config=SearchConfig(), max_demos=0,
                                                        label_field="label", seed=5).setup()


def test_two_workers_of_one_run_still_share_one_study(tmp_path):
    # A guard on the fix: the workers of one run (own sampler seeds, one storage) continue one study to n_trials.
    from pld_optim.evaluation.scorer import Scorer
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.rules import Rule
    from pld_optim.search.config import SearchConfig
    from pld_optim.search.study import PromptSearch

    program, dev = dspy.Predict(Classify), make_examples(16)
    rules = [Rule(id="R1", text="If the sentence mentions she or mother or wife, answer gender."),
             Rule(id="R2", text="If the sentence mentions church or prayer or mosque, answer religion.")]
    config = SearchConfig(n_trials=6, minibatch_size=8, sampler="random", storage=storage_of(tmp_path),
                          study_name="shared", plots=False)
    for seed in (0, 1):  # a fresh Scorer and LM per worker, as two processes have
        scorer = Scorer(program, resolve_task(program), lm=scripted_lm(student_respond, "student"))
        PromptSearch(scorer, rules, dev, config=config, max_demos=0, label_field="label", seed=seed).run()
    (study,) = studies(tmp_path)
    assert len(study.trials) == 6


@pytest.fixture
def students_by_name(monkeypatch):
    """The CLI builds a scripted LM per config model name (harness's scripted_cli gives every student one)."""
    def install(**students) -> dict:
        lms = {"teacher": scripted_lm(teacher_respond, "teacher"),
               **{name: scripted_lm(respond, name) for name, respond in students.items()}}
        for module in CLI_MODULES:
            importlib.import_module(module)
        for module in CLI_MODULES:
            monkeypatch.setattr(f"{module}.lm_from_config", lambda cfg, **kw: lms[cfg.model], raising=False)
        monkeypatch.setattr("pld_optim.cli.common.preflight_all", lambda *a, **k: None)
        return lms
    return install


def _compile(tmp_path, name: str, **sections) -> dict:
    search = {**SEARCH, "storage": storage_of(tmp_path)}
    config = write_config(tmp_path, name=f"{name}.yaml", search=search, **sections)
    code, out, err = cli("compile", str(config), "--out", str(tmp_path / name))
    assert code == 0, err
    return json.loads((tmp_path / name / "rules.json").read_text())


def test_cli_two_configs_with_one_name_and_storage_but_other_students(tmp_path, students_by_name):
    lms = students_by_name(student=student_respond, other=OTHER_STUDENT)
    _compile(tmp_path, "first", student={"model": "student"}, pld={"max_demos": 0})
    before = lms["other"]._engine_spec.calls
    second = _compile(tmp_path, "second", student={"model": "other"}, pld={"max_demos": 0})
    search = next(u for u in second["usage"] if u["stage"] == "search")
    assert len(studies(tmp_path)) == 2 and search["lm_calls"] > len(make_examples(12))
    assert second["dev_macro_f1"] == pytest.approx(1.0) and lms["other"]._engine_spec.calls > before


def test_cli_the_same_config_with_another_demo_cap_does_not_reuse_the_study(tmp_path, students_by_name):
    students_by_name(student=student_respond)
    _compile(tmp_path, "demos", student={"model": "student"}, pld={"max_demos": 2})
    rules_only = _compile(tmp_path, "rules-only", student={"model": "student"}, pld={"max_demos": 0})
    assert len(studies(tmp_path)) == 2
    assert all(not s["demos"] for s in rules_only["selection"])
    assert not any(k.startswith("show_") for s in studies(tmp_path) if s.user_attrs["pld_setup"]["max_demos"] == 0
                   for t in s.trials for k in t.params)
