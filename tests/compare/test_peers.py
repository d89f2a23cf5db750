"""The demo-search peers: DSPy's BootstrapFewShotWithRandomSearch on PLD's search budget, and PLD without its
demo search, compiled and scored on the same scripted setup as the others."""

import threading

import dspy
import pytest
from conftest import CUES, Classify, make_examples, teacher_respond

from pld_optim.compare import ALL, Setup, render_html, render_markdown, run_compare, summarize
from pld_optim.compare.registry import random_search_candidates
from pld_optim.search.config import SearchConfig
from pld_optim.testing import ScriptedEngine, field_value, rule_follower, scripted_lm

LABEL_OF = {cue: label for label, cues in CUES.items() for cue in cues}
N_TRIALS = 4


def cue(sentence: str) -> str:
    return sentence.split()[3]  # "Item 7: the <cue> was mentioned here."


class DemoReader(ScriptedEngine):
    """A student that follows the numbered rules in its prompt, else answers as the demo with its input's cue
    word does, else says "race": rules help it, and so do demos."""

    def __init__(self, respond=None, keep_requests=False):
        self._demos = threading.local()
        self._rules = rule_follower(default="")
        super().__init__(self._answer, keep_requests)

    def complete(self, request):
        users = [m.text for m in request.messages if m.role == "user"][:-1]
        replies = [m.text for m in request.messages if m.role == "assistant"]
        self._demos.labels = {cue(field_value(u, "sentence")): field_value(a, "label") for u, a in zip(users, replies)}
        return super().complete(request)

    def _answer(self, system, user):
        label = self._rules(system, user)["label"]
        return {"label": label or self._demos.labels.get(cue(field_value(user, "sentence")), "race")}


def teacher(system, user):
    """PLD's prompts get the scripted PLD teacher; the bootstrap's (the task itself) the gold label."""
    try:
        return teacher_respond(system, user)
    except AssertionError:
        return {"label": LABEL_OF[cue(field_value(user, "sentence"))]}


@pytest.fixture(autouse=True)
def fresh_cache():
    shared = dspy.cache
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    yield
    dspy.cache = shared


def test_random_search_gets_pld_searchs_student_budget():
    assert random_search_candidates({"n_trials": 10}, n_dev=9) == 8  # (8 + 3) * 9 == (10 + 1) * 9
    assert random_search_candidates(SearchConfig(n_trials=10), n_dev=40) == 8  # n_dev cancels
    assert random_search_candidates({"n_trials": 10, "max_student_calls": 45}, n_dev=9) == 2  # 45 // 9 - 3
    assert random_search_candidates({"n_trials": 1}, n_dev=9) == 1  # never fewer than one shuffled bootstrap
    assert random_search_candidates(None, n_dev=9) == 1  # PLD without a search: the smallest random search


def test_demo_search_peers_compile_and_score_on_the_same_setup(tmp_path):
    assert {"bootstrap-rs", "pld-rules-only"} <= set(ALL)
    train, dev, test = make_examples(24), make_examples(9, 100), make_examples(12, 200)
    student = dspy.LM("local/student", engine=DemoReader(), cache=True)
    setup = Setup(program=dspy.Predict(Classify), train=train, dev=dev, test=test, student=student,
                  teacher=scripted_lm(teacher, "teacher", cache=True), threads=1,
                  pld_kwargs={"n_clusters": 1, "max_refine_iters": 1, "contribution": False,
                              "search": {"n_trials": N_TRIALS, "plots": False}})
    names = ["zero-shot", "bootstrap-rs", "pld", "pld-rules-only"]
    by = {r.optimizer: r for r in run_compare(setup, names, tmp_path)}
    assert all(r.error is None and r.n == len(test) for r in by.values())

    # The random search scored its 3 fixed programs and N - 3 = n_trials - 2 shuffled bootstraps, each on dev:
    # PLD's search budget, (n_trials + 1) * n_dev student calls.
    rs = by["bootstrap-rs"]
    assert rs.student_calls == (N_TRIALS + 1) * len(dev) and rs.teacher_calls > 0
    rs_program = setup.program.deepcopy()
    rs_program.load(str(tmp_path / "bootstrap-rs-seed0.program.json"))
    assert rs_program.demos and rs.macro_f1 > by["zero-shot"].macro_f1  # it picked bootstrapped demos that help

    # pld-rules-only is pld with max_demos 0: the same rules, no worked example in its prompt.
    pld, rules_only = (setup.program.deepcopy() for _ in range(2))
    pld.load(str(tmp_path / "pld-seed0.program.json"))
    rules_only.load(str(tmp_path / "pld-rules-only-seed0.program.json"))
    assert pld.demos and not rules_only.demos
    assert rules_only.signature.instructions == pld.signature.instructions != Classify.instructions
    assert by["pld-rules-only"].macro_f1 == pytest.approx(1.0)

    rows = summarize(list(by.values()), tmp_path, ["gender", "race", "religion"])
    markdown = render_markdown(rows, {"seeds": [0]})
    header = next(line for line in markdown.splitlines() if line.startswith("| optimizer | macro F1"))
    lines = {name: next(line for line in markdown.splitlines() if line.startswith(f"| {name} |")) for name in names}
    assert {line.count("|") for line in lines.values()} == {header.count("|")}  # the same columns for every row
    assert f"| {rs.student_calls} | {rs.teacher_calls} | {rs.compile_usage.cache_hits} |" in lines["bootstrap-rs"]
    render_html(rows, {"seeds": [0]}, tmp_path / "compare.html")
    page = (tmp_path / "compare.html").read_text().split("<h2>Plots</h2>")[0]
    assert "<td>bootstrap-rs</td>" in page and "<td>pld-rules-only</td>" in page
