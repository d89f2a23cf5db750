"""Secrets never reach artifacts or logs; data and teacher text are data, never code."""

import logging

import dspy

from pld_optim import PLD, RuleSet, RunFolder
from pld_optim.run.report import render_report

SECRET = "sk-test-DO-NOT-LEAK-1234567890"


def test_api_keys_stay_out_of_artifacts_reports_and_logs(teacher, student, data, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    train, dev = data
    caplog.set_level(logging.DEBUG)
    from conftest import Classify

    pld = PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, max_refine_iters=0)
    compiled = pld.compile(dspy.Predict(Classify), trainset=train, valset=dev)
    # A predictor bound to a keyed API model is saved too: the key must not be written.
    compiled.predictors()[0].set_lm(dspy.LM("openai/gpt-4o-mini", api_key=SECRET, max_tokens=8))
    RunFolder(tmp_path).save(compiled, pld.rules_)
    (tmp_path / "report.md").write_text(render_report(pld.rules_))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_bytes().decode("utf-8", "replace"), path
    assert SECRET not in caplog.text


def test_text_from_data_and_teacher_is_never_executed(tmp_path, student):
    from typing import Literal

    from pld_optim.testing import scripted_lm

    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    class Sig(dspy.Signature):
        """Label."""

        sentence: str = dspy.InputField()
        label: Literal["gender", "race"] = dspy.OutputField()

    def teacher_respond(system, user):
        system = " ".join(system.split())
        if "It gives the failures below the wrong label" in system:  # a corrective rule, the payload inside it
            return {"rationale": payload, "rule": f"If the sentence mentions a daughter, answer gender. {payload}"}
        if "Merge labelling rules that all lead" in system:
            return {"instruction": "{{" + payload + "}} If it mentions she, answer gender.", "phrasings": [payload]}
        if "You write labelling rules for a small model" in system:
            return {"rationale": payload, "rule": "When the sentence describes women, mothers, wives or daughters, "
                                                  f"the answer should be gender. {payload} ${{{payload}}}"}
        return {"revised_rules": [payload]}

    rows = [dspy.Example(id=str(i), sentence=f"{payload} she {i}" if i % 2 else f"{{{payload}}} x {i}",
                         label="gender" if i % 2 else "race").with_inputs("sentence") for i in range(12)]
    pld = PLD(teacher=scripted_lm(teacher_respond), n_clusters=1, out_dir=tmp_path, max_refine_iters=1)
    pld.compile(dspy.Predict(Sig), trainset=rows[:8], valset=rows[8:])
    assert not marker.exists()
    rules = RuleSet.load(tmp_path / "rules.json")
    assert any(payload in r.text for r in rules.rules)  # kept verbatim, as text
