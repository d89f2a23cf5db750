import re

import dspy
import pytest
from conftest import Classify, make_examples, teacher_respond

from pld_optim.compare import Setup, render_html, render_markdown, run_compare, summarize
from pld_optim.testing import field_value, rule_follower, scripted_lm


def generic_teacher(system, user):
    """PLD's prompts get the scripted PLD teacher; any other optimizer's prompt gets plausible fields."""
    try:
        return teacher_respond(system, user)
    except AssertionError:
        pass
    out = {}
    block = system.split("Your output fields are:")[1].split("All interactions")[0]
    for name, kind in re.findall(r"\d+\. `(\w+)` \(([^)]*)\)", block):
        out[name] = [] if kind.startswith("list") else ("race" if "Literal" in kind else
                                                          "If the sentence mentions she, answer gender.")
    return out


def student_respond(system, user):
    answer = rule_follower("race")(system, user)
    if "`reasoning`" in system:
        answer = {"reasoning": "Looking at the cue.", **answer}
    return answer


def test_compare_runs_optimizers_on_the_same_setup_and_resumes(tmp_path):
    train, dev, test = make_examples(24), make_examples(9, 100), make_examples(12, 200)
    student = scripted_lm(student_respond, "student", cache=True)
    teacher = scripted_lm(generic_teacher, "teacher", cache=True)
    setup = Setup(program=dspy.Predict(Classify), train=train, dev=dev, test=test, student=student,
                  teacher=teacher, pld_kwargs={"n_clusters": 1, "max_refine_iters": 1})
    names = ["zero-shot", "cot", "bootstrap-fewshot", "infer-rules-0shot", "pld"]
    results = run_compare(setup, names, tmp_path)
    by = {r.optimizer: r for r in results}
    assert set(by) == set(names) and all(r.n == 12 for r in results)
    assert by["pld"].macro_f1 == pytest.approx(1.0) and by["zero-shot"].macro_f1 < 0.5
    assert by["pld"].teacher_calls > 0 and by["zero-shot"].compile_usage.lm_calls == 0
    assert by["cot"].output_tokens > by["zero-shot"].output_tokens  # the rationale costs output tokens
    assert by["pld"].prompt_tokens > by["zero-shot"].prompt_tokens  # the rules cost prompt tokens
    assert by["pld"].ci_low <= by["pld"].macro_f1 <= by["pld"].ci_high
    rows = summarize(results, tmp_path, ["gender", "race", "religion"])
    pld_row = next(r for r in rows if r["optimizer"] == "pld")
    assert pld_row["vs_zero_shot"].startswith("better")
    assert next(r for r in rows if r["optimizer"] == "cot")["vs_zero_shot"].startswith("no difference")
    markdown = render_markdown(rows, {"seeds": [0]})
    assert "| pld |" in markdown
    render_html(rows, {"seeds": [0], "data": "<b>12</b> test"}, tmp_path / "compare.html")
    page = (tmp_path / "compare.html").read_text()
    text, plots = page.split("<h2>Plots</h2>")  # plotly's bundled JavaScript follows
    assert "plotly" in plots.lower() and "<pre>" not in text and "|---|" not in text and "**" not in text
    assert "<td>pld</td>" in text and "<th>gender</th>" in text  # tables are HTML tables
    assert "&lt;b&gt;12&lt;/b&gt;" in text  # context values are escaped by the template
    assert '"range":[0,1.05]' in plots and '"text":"test macro F1"' in plots  # F1 axes run 0-1, with a title

    # InferRules writes the shared signature class in place; the harness must have isolated it.
    assert Classify.instructions == "Classify the bias type of the sentence."
    calls = teacher._engine_spec.calls
    again = run_compare(setup, names, tmp_path)  # finished optimizers are not run again
    assert teacher._engine_spec.calls == calls and [r.macro_f1 for r in again] == [r.macro_f1 for r in results]


def test_field_value_reads_one_rendered_input():
    assert field_value("[[ ## x ## ]]\nhello\n\n[[ ## y ## ]]\n1", "x") == "hello"


def test_peers_get_a_teacher_cap_their_long_answers_fit_and_pld_keeps_its_own():
    from pld_optim.compare.registry import PEER_TEACHER_MAX_TOKENS, peer_teacher

    short = dspy.LM("openai/teacher", max_tokens=200)
    raised = peer_teacher(short)
    assert raised.kwargs["max_tokens"] == PEER_TEACHER_MAX_TOKENS and short.kwargs["max_tokens"] == 200
    roomy = dspy.LM("openai/teacher", max_tokens=4096)
    assert peer_teacher(roomy) is roomy
