import json
import os
import re
from typing import Literal

import dspy
import pytest

from pld_optim.testing import scripted_lm

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


def field(user: str, name: str) -> str:
    m = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\nRespond|\Z)", user, re.S)
    return m.group(1).strip() if m else ""


def teacher_respond(system: str, user: str):
    if "You write labelling rules for a small model" in system:
        gold = field(user, "gold_label")
        cue = next(c for c in CUES[gold] if f" {c} " in field(user, "example"))
        return {"rationale": f"The word '{cue}' signals {gold}.",
                "rule": f"If the sentence mentions a {gold} cue such as {cue}, answer {gold}."}
    if "Merge labelling rules that all lead" in system:
        rules = json.loads(field(user, "rules"))  # the adapter renders list inputs as JSON
        cues = sorted({r.split("such as ")[1].split(",")[0] for r in rules})
        answers = [r.split("answer ")[1].rstrip(".") for r in rules]
        label = max(set(answers), key=answers.count)
        text = f"If the sentence mentions {' or '.join(cues)}, answer {label}."
        return {"instruction": text, "phrasings": [f"Sentences with {' or '.join(cues)} are {label}."]}
    if "A small model labels examples" in system:
        rules = json.loads(field(user, "rules"))
        return {"revised_rules": rules}
    raise AssertionError("unexpected teacher prompt: " + system[:200])


def student_respond(system: str, user: str):
    sentence = field(user, "sentence")
    for m in re.finditer(r"^\s*\d+\. If the sentence mentions (.+?), answer (\w+)\.$", system, re.M):
        cues = m.group(1).split(" or ")
        if any(f" {c} " in sentence for c in cues):
            return {"label": m.group(2)}
    return {"label": "race"}


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
