"""Usage is counted through DSPy's callback and usage-tracker hooks, not its history (capped at 10,000)."""

import dspy
import pytest

from pld_optim.run.usage import UsageLog
from pld_optim.testing import ScriptedEngine


@pytest.mark.filterwarnings("ignore")  # DSPy warns on each direct lm(messages=...) call
def test_usage_is_exact_past_dspys_history_cap_and_across_threads():
    engine = ScriptedEngine(lambda system, user: {"answer": "x"})
    lm = dspy.LM("local/fast", engine=engine, cache=False)
    log = UsageLog()
    n_direct = 10_050  # past DSPy's MAX_HISTORY_SIZE of 10,000
    with log.stage("many") as st:
        for i in range(n_direct):
            lm(messages=[{"role": "user", "content": f"q{i}"}])
        devset = [dspy.Example(q=str(i)).with_inputs("q") for i in range(40)]
        with dspy.context(lm=lm):
            dspy.Evaluate(devset=devset, metric=lambda e, p: 1.0, num_threads=4)(dspy.Predict("q -> answer"))
        st.failures = 0
    record = log.stages[0]
    assert engine.calls == n_direct + 40
    assert record.lm_calls == engine.calls and record.by_model == {"local/fast": engine.calls}
    assert record.cache_hits == 0 and record.prompt_tokens > 0


@pytest.mark.filterwarnings("ignore")
def test_cache_hits_are_counted_and_not_billed(tmp_path):
    engine = ScriptedEngine(lambda system, user: {"answer": "x"})
    lm = dspy.LM("local/cached", engine=engine, cache=True)
    log = UsageLog()
    with log.stage("cached"):
        for _ in range(3):
            lm(messages=[{"role": "user", "content": f"the same question {tmp_path}"}])
    record = log.stages[0]
    assert engine.calls == 1 and record.lm_calls == 3 and record.cache_hits == 2
    billed_once = record.prompt_tokens
    with log.stage("again"):
        lm(messages=[{"role": "user", "content": f"the same question {tmp_path}"}])
    assert log.stages[1].cache_hits == 1 and log.stages[1].prompt_tokens == 0 and billed_once > 0


def test_a_stage_counts_the_invalid_answers_its_scorer_scored():
    from pld_optim import Scorer
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.rules import Prompt
    from pld_optim.testing import scripted_lm

    program = dspy.Predict("sentence -> label")
    task = resolve_task(program, labels=["a", "b"])
    answers = iter(["a", "maybe", "b", "neither"])
    scorer = Scorer(program, task, lm=scripted_lm(lambda s, u: {"label": next(answers)}))
    examples = [dspy.Example(id=str(i), sentence=f"s{i}", label="a").with_inputs("sentence") for i in range(4)]
    log = UsageLog()
    with log.stage("before"):
        scorer.score(Prompt(), examples[:1])  # a stage without the scorer counts no invalid answers
    with log.stage("scored", scorer):
        scorer.score(Prompt(), examples[1:])
    assert [u.invalid for u in log.stages] == [0, 2] and scorer.invalid == 2
    assert log.total().invalid == 2 and log.total().lm_calls == 4
