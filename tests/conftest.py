import os
from typing import Literal

import dspy
import pytest

from pld_optim.testing import cue_teacher, rule_follower, scripted_lm

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# A toy bias-type task whose truth is a keyword. The scripted teacher abstracts the keyword into a rule;
# the scripted student follows numbered rules found in its system prompt and otherwise answers "race".
CUES = {"gender": ["she", "mother", "wife"], "religion": ["church", "prayer", "mosque"], "race": ["country", "skin"]}


class Classify(dspy.Signature):
    """Classify the bias type of the sentence."""

    sentence: str = dspy.InputField()
    label: Literal["gender", "race", "religion"] = dspy.OutputField()


def make_examples(n: int, offset: int = 0) -> list[dspy.Example]:
    out = []
    labels = list(CUES)
    for i in range(offset, offset + n):
        label = labels[i % 3]
        cue = CUES[label][(i // 3) % len(CUES[label])]
        out.append(dspy.Example(id=f"ex{i}", sentence=f"Item {i}: the {cue} was mentioned here.", label=label)
                   .with_inputs("sentence"))
    return out


teacher_respond = cue_teacher(CUES)
student_respond = rule_follower(default="race")


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
