"""What the tests share: the toy signatures, the cue-word data, the scripted teacher and student, and the
parameter sets that pin the paper's pipeline. Import them with `from conftest import ...`."""

import os
from typing import Literal

import dspy
import pytest

from pld_optim.testing import cue_examples, cue_teacher, rule_follower, scripted_lm

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# A toy bias-type task whose truth is a keyword. The scripted teacher abstracts the keyword into a rule;
# the scripted student follows numbered rules found in its system prompt and otherwise answers "race".
CUES = {"gender": ["she", "mother", "wife"], "religion": ["church", "prayer", "mosque"], "race": ["country", "skin"]}
LABELS = ["gender", "race", "religion"]


class Classify(dspy.Signature):
    """Classify the bias type of the sentence."""

    sentence: str = dspy.InputField()
    label: Literal["gender", "race", "religion"] = dspy.OutputField()


class Sentiment(dspy.Signature):
    """Label."""

    text: str = dspy.InputField()
    label: Literal["pos", "neg"] = dspy.OutputField()


def make_examples(n: int, offset: int = 0) -> list[dspy.Example]:
    return cue_examples(CUES, n, offset)


teacher_respond = cue_teacher(CUES)
student_respond = rule_follower(default="race")

# The paper's pipeline (label-conditioned mining, whole-list rewrite, rules only) for tests that pin it;
# PLD's defaults are contrastive mining, corrective refinement and up to 4 demos.
PAPER = {"mining": "label", "refinement": "rewrite", "max_demos": 0}
# What PLD() takes besides the parameter schema (pld_optim.params.PLDParams).
NOT_PARAMS = {"teacher", "search", "adapter", "out_dir", "progress"}


def cue_word(examples, label: str, field: str = "sentence") -> str:
    """A word (as `rule_follower` matches it, between spaces) in at least two `label` examples and in no
    other example: a rule naming it changes exactly those answers."""
    def words(ex):
        return set(f" {ex[field]} ".split())

    others = set().union(*(words(ex) for ex in examples if ex.label != label))
    counts = {}
    for ex in examples:
        if ex.label == label:
            for w in words(ex) - others:
                counts[w] = counts.get(w, 0) + 1
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # a stop word is no cue (the gates say so)

    found = sorted(w for w, n in counts.items() if n >= 2 and w.isalpha() and w.islower()
                   and w not in ENGLISH_STOP_WORDS)
    assert found, f"no word marks {label} in these examples"
    return found[0]


def pld_params(**overrides):
    """A validated PLDParams: PLD's defaults with `overrides`, as PLD.compile builds it."""
    from pld_optim import PLD
    from pld_optim.params import validate

    return validate({**{k: v for k, v in PLD.defaults().items() if k not in NOT_PARAMS}, **overrides})


def stage_context(teacher_lm, train=None, *, student_lm=None, program=None, **overrides):
    """A StageContext for calling one stage directly, with PLD's defaults and `overrides`."""
    from pld_optim.evaluation.scorer import Scorer
    from pld_optim.evaluation.task import resolve_task
    from pld_optim.stages.cluster import TfidfEmbedder
    from pld_optim.stages.context import StageContext

    program = program or dspy.Predict(Classify)
    task = resolve_task(program)
    params = pld_params(**overrides)
    scorer = Scorer(program, task, lm=student_lm or scripted_lm(student_respond, "student"))
    return StageContext.build(task, train if train is not None else make_examples(6), teacher_lm, scorer, params,
                              TfidfEmbedder(seed=params.seed))


class FixedScorer:
    """Stands in for a stage's Scorer: dev F1 as a function of the prompt's rule texts, and the same train
    outcomes for any prompt, so a refinement test controls exactly what the stage sees."""

    def __init__(self, dev_f1, outcomes):
        self.dev_f1, self.train_outcomes = dev_f1, outcomes

    def score(self, prompt, examples):
        from pld_optim.evaluation.scoring import Score

        f1 = self.dev_f1(prompt.rules)
        return Score(macro_f1=f1, accuracy=f1, per_class_f1={}, n=1, failures=0, invalid=0)

    def outcomes(self, prompt, examples):
        return self.train_outcomes


@pytest.fixture
def teacher():
    return scripted_lm(teacher_respond, "teacher")


@pytest.fixture
def student():
    lm = scripted_lm(student_respond, "student")
    with dspy.context(lm=lm):
        yield lm


@pytest.fixture
def data():
    return make_examples(30), make_examples(12, offset=100)
