"""Compile costs are exact where they are compared: tallies nest (compare's around PLD's stages, a user's
`dspy.track_usage()` around a compile, one stage around another), and each optimizer pays for its own calls.
`pld-optim compare` reports PLD's compile as what a standalone `pld-optim compile` of the same config spends
(old main: 0 LM calls and 0 tokens), in its result files and in compare.md."""

import json
from collections import Counter

import dspy
import pytest
from conftest import LABELS, Classify, make_examples, student_respond, teacher_respond
from dspy.utils.callback import BaseCallback
from dspy.utils.usage_tracker import UsageTracker
from harness import cli, scripted_cli, write_config  # noqa: F401 - scripted_cli is a fixture

from pld_optim import PLD
from pld_optim.compare import Setup, run_compare, summarize
from pld_optim.run.usage import UsageLog
from pld_optim.testing import ScriptedEngine, scripted_lm

PLD_KWARGS = {"n_clusters": 1, "max_refine_iters": 1, "contribution": False, "search": {"n_trials": 3, "plots": False}}


@pytest.fixture(autouse=True)
def fresh_cache():
    """An empty, in-memory cache for each test: DSPy's default one persists on disk between runs, and every
    count below must start from nothing."""
    shared = dspy.cache
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    yield
    dspy.cache = shared


class CallsPerModel(BaseCallback):
    """Every LM call, cached or not, by model string: the test's own count, independent of pld_optim's."""

    def __init__(self):
        self.calls = Counter()

    def on_lm_start(self, call_id, instance, inputs):
        self.calls[instance.model] += 1


def _lms(name="student", teacher_name="teacher"):
    return scripted_lm(student_respond, name, cache=True), scripted_lm(teacher_respond, teacher_name, cache=True)


def _splits():
    return make_examples(24), make_examples(9, 100), make_examples(6, 200)


def _tokens(tracker: UsageTracker) -> int:
    return sum(e.get("prompt_tokens", 0) + e.get("completion_tokens", 0)
               for entries in tracker.usage_data.values() for e in entries)


def test_compare_counts_pld_exactly_as_a_standalone_compile_of_the_same_setup(tmp_path):
    train, dev, test = _splits()
    student, teacher = _lms()
    counted = CallsPerModel()
    with dspy.context(lm=student, callbacks=[counted]), dspy.track_usage() as tracker:
        PLD(teacher=teacher, num_threads=1, out_dir=tmp_path / "alone", **PLD_KWARGS).compile(
            dspy.Predict(Classify), trainset=train, valset=dev)
    billed = student._engine_spec.calls + teacher._engine_spec.calls
    assert billed > 0 and _tokens(tracker) > 0

    # New LMs, same model strings, the standalone compile's answers still in the cache: compare's PLD must
    # neither reuse them nor lose its tokens to PLD's own stage tallies.
    student2, teacher2 = _lms()
    setup = Setup(program=dspy.Predict(Classify), train=train, dev=dev, test=test, student=student2,
                  teacher=teacher2, threads=1, pld_kwargs=PLD_KWARGS)
    result = run_compare(setup, ["pld"], tmp_path / "compare")[0]
    usage = result.compile_usage
    assert result.error is None
    assert usage.lm_calls - usage.cache_hits == billed  # the calls that reached a model, as standalone
    assert teacher2._engine_spec.calls == teacher._engine_spec.calls  # the teacher only works in the compile
    assert usage.prompt_tokens + usage.completion_tokens == _tokens(tracker)
    assert (result.student_calls, result.teacher_calls) == (counted.calls["local/student"],
                                                            counted.calls["local/teacher"])
    assert usage.lm_calls == sum(counted.calls.values())
    row = summarize([result], tmp_path / "compare", LABELS)[0]  # what compare.md and MLflow are given
    assert (row["lm_calls"], row["billed_calls"]) == (usage.lm_calls, billed)
    assert row["compile_tokens"] == _tokens(tracker)


@pytest.mark.parametrize("install", ["track_usage", "settings"])
def test_a_users_tracker_around_pld_compile_sees_every_call(tmp_path, install):
    """Threads included: PLD's stages hand each call's usage on to the tracker that was open when they began,
    the user's, from whichever worker thread made the call."""
    train, dev, _ = _splits()
    student, teacher = _lms()
    mine = UsageTracker()
    with dspy.context(lm=student):
        if install == "track_usage":
            with dspy.track_usage() as mine:
                PLD(teacher=teacher, num_threads=3, **PLD_KWARGS).compile(dspy.Predict(Classify), trainset=train,
                                                                         valset=dev)
        else:
            with dspy.context(usage_tracker=mine):
                PLD(teacher=teacher, num_threads=3, **PLD_KWARGS).compile(dspy.Predict(Classify), trainset=train,
                                                                         valset=dev)
    # DSPy adds one entry per call that reached a model.
    assert len(mine.usage_data["local/teacher"]) == teacher._engine_spec.calls > 0
    assert len(mine.usage_data["local/student"]) == student._engine_spec.calls > 0


def _lm(name):
    return dspy.LM(f"local/{name}", engine=ScriptedEngine(lambda system, user: {"answer": "x"}), cache=False)


def _devset(n, tag):
    return [dspy.Example(q=f"{tag} {i}").with_inputs("q") for i in range(n)]


@pytest.mark.filterwarnings("ignore")  # DSPy warns on each direct lm(messages=...) call
def test_an_outer_stage_counts_what_the_stages_inside_it_count():
    lm = _lm("nested")
    outer, single, inner = UsageLog(), UsageLog(), UsageLog()
    with outer.stage("outer"):
        with single.stage("single"):
            lm(messages=[{"role": "user", "content": "one call outside the evaluation"}])
        with inner.stage("inner"), dspy.context(lm=lm):
            dspy.Evaluate(devset=_devset(20, "nested"), metric=lambda e, p: 1.0, num_threads=4)(
                dspy.Predict("q -> answer"))
    o, s, i = outer.stages[0], single.stages[0], inner.stages[0]
    assert (o.lm_calls, s.lm_calls, i.lm_calls) == (21, 1, 20) and lm._engine_spec.calls == 21
    assert o.cache_hits == s.cache_hits == i.cache_hits == 0  # nothing was cached: every call was billed
    assert o.prompt_tokens == s.prompt_tokens + i.prompt_tokens and i.prompt_tokens > s.prompt_tokens > 0
    assert o.completion_tokens == s.completion_tokens + i.completion_tokens > 0


@pytest.mark.filterwarnings("ignore")
def test_dspys_own_track_usage_opened_inside_a_stage_rolls_up_into_it():
    """DSPy's nested `track_usage` hands its entries to `parent.usage_data` on exit; a stage takes them."""
    lm = _lm("rollup")
    log = UsageLog()
    with log.stage("outer"):
        with dspy.track_usage() as inner:
            for i in range(3):
                lm(messages=[{"role": "user", "content": f"question {i}"}])
    record = log.stages[0]
    assert len(inner.usage_data["local/rollup"]) == 3
    assert record.lm_calls == 3 and record.cache_hits == 0
    assert record.prompt_tokens == inner.get_total_tokens()["local/rollup"]["prompt_tokens"] > 0


def test_student_and_teacher_calls_are_told_apart_when_they_are_one_model(tmp_path):
    train, dev, test = _splits()
    student, teacher = _lms("same", "same")  # one model string, two engines
    setup = Setup(program=dspy.Predict(Classify), train=train, dev=dev, test=test, student=student,
                  teacher=teacher, threads=1, pld_kwargs=PLD_KWARGS)
    result = run_compare(setup, ["pld"], tmp_path)[0]
    assert result.teacher_calls == teacher._engine_spec.calls > 0  # no teacher call repeats in this setup
    assert result.student_calls > 0 and result.student_calls + result.teacher_calls == result.compile_usage.lm_calls


def test_an_optimizers_cost_does_not_depend_on_what_ran_before_it(tmp_path):
    """pld-rules-only mines, clusters and refines exactly as pld does: after pld, on one shared cache, those
    calls would be free."""
    train, dev, test = _splits()

    def setup():
        student, teacher = _lms()
        return Setup(program=dspy.Predict(Classify), train=train, dev=dev, test=test, student=student,
                     teacher=teacher, threads=1, pld_kwargs=PLD_KWARGS)

    alone = run_compare(setup(), ["pld-rules-only"], tmp_path / "alone")[0].compile_usage
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    after = {r.optimizer: r.compile_usage for r in run_compare(setup(), ["pld", "pld-rules-only"], tmp_path / "both")}
    assert after["pld-rules-only"].cache_hits == alone.cache_hits < alone.lm_calls
    assert after["pld-rules-only"].lm_calls == alone.lm_calls
    assert after["pld-rules-only"].prompt_tokens == alone.prompt_tokens > 0


def _pld_row(markdown: str) -> dict[str, str]:
    """compare.md's first table row for pld, by column header."""
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = next(line for line in table if line.startswith("| pld |"))
    return dict(zip(header, (c.strip() for c in row.strip("|").split("|"))))


def test_cli_compare_reports_plds_compile_as_a_standalone_cli_compile_spends(tmp_path, scripted_cli):  # noqa: F811
    """The real CLI on scripted LMs, both commands on one config: compare's PLD row (its result file and
    compare.md) carries the calls and tokens the standalone compile's rules.json counts, and the teacher,
    which works only in the compile, is billed the same number of calls."""
    config = write_config(tmp_path, search={"n_trials": 2, "minibatch_size": 8, "plots": False})
    lms = scripted_cli()
    code, _, err = cli("compile", str(config), "--out", str(tmp_path / "alone"))
    assert code == 0, err
    alone = {u["stage"]: u for u in json.loads((tmp_path / "alone" / "rules.json").read_text())["usage"]}["total"]
    teacher_alone = lms.calls("teacher")
    assert alone["lm_calls"] > 0 and alone["prompt_tokens"] + alone["completion_tokens"] > 0 and teacher_alone > 0

    lms = scripted_cli()  # new engines: their counts start from nothing
    out = tmp_path / "cmp"
    code, _, err = cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot,pld")
    assert code == 0, err
    result = json.loads((out / "pld-seed0.json").read_text())
    usage = result["compile_usage"]
    tokens = usage["prompt_tokens"] + usage["completion_tokens"]
    assert (usage["lm_calls"], usage["cache_hits"]) == (alone["lm_calls"], alone["cache_hits"])
    assert tokens == alone["prompt_tokens"] + alone["completion_tokens"] > 0
    assert lms.calls("teacher") == teacher_alone == result["teacher_calls"]  # no teacher call repeats here
    assert result["student_calls"] + result["teacher_calls"] == usage["lm_calls"]
    # compare's own PLD folder counts the same as its tally around the compile.
    inside = {u["stage"]: u for u in json.loads((out / "pld-seed0" / "rules.json").read_text())["usage"]}["total"]
    assert (inside["lm_calls"], inside["prompt_tokens"]) == (usage["lm_calls"], usage["prompt_tokens"])
    row = _pld_row((out / "compare.md").read_text())
    assert (row["compile: student calls"], row["teacher calls"], row["cached"], row["tokens"]) == (
        str(result["student_calls"]), str(result["teacher_calls"]), str(usage["cache_hits"]), str(tokens))
