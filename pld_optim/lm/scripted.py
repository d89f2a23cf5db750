"""Scripted LMs for deterministic tests and benchmarks, on DSPy 3.4's custom-engine contract.

`ScriptedEngine(respond)` calls `respond(system, user) -> dict of output fields` and formats the answer
the way ChatAdapter expects, so tests exercise the real adapter, cache and usage paths with no model.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage


def chat_answer(fields: dict) -> str:
    parts = []
    for name, value in fields.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"[[ ## {name} ## ]]\n{text}")
    return "\n\n".join(parts) + "\n\n[[ ## completed ## ]]"


class ScriptedEngine:
    """`respond(system, user)` gets the system text and the last user turn (earlier turns are demos); it returns
    a dict of output fields, or a raw string sent back as is."""

    def __init__(self, respond: Callable[[str, str], dict | str], keep_requests: bool = True):
        self.respond = respond
        self.calls = 0
        self.keep_requests = keep_requests  # tests inspect them; a long benchmark must not hold every one
        self.requests: list = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"respond": self.respond, "keep_requests": self.keep_requests}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def complete(self, request):
        system = request.system if isinstance(request.system, str) else ""
        # The last user turn is the input to answer; earlier ones are demos (mining's worked examples).
        user = [m.text for m in request.messages if m.role == "user"][-1]
        with self._lock:
            self.calls += 1
            if self.keep_requests:
                self.requests.append(request)
        answer = self.respond(system, user)
        text = answer if isinstance(answer, str) else chat_answer(answer)
        words = len((system + user).split())
        return Response(id=f"scripted-{self.calls}", model=request.model,
                        message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=words, output_tokens=len(text.split()),
                                    total_tokens=words + len(text.split())))


def scripted_lm(respond: Callable[[str, str], dict | str], name: str = "scripted", **kwargs) -> dspy.LM:
    kwargs.setdefault("cache", False)
    return dspy.LM(f"local/{name}", engine=ScriptedEngine(respond), **kwargs)


_NUMBERED_RULE = re.compile(r"^\s*\d+\.\s*If the sentence mentions (.+?), answer ([\w-]+)\.\s*$", re.M)


def field_value(user: str, name: str) -> str:
    """The value of one `[[ ## name ## ]]` input as ChatAdapter rendered it."""
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond|\Z)", user, re.S)
    return match.group(1).strip() if match else ""


def rule_follower(default: str, field: str = "sentence") -> Callable[[str, str], dict]:
    """A student that applies the first numbered rule 'If the sentence mentions X or Y, answer L.' whose
    cue occurs in the input, else answers `default`: its accuracy is a known function of which rules are
    in its system prompt, in which order and wording. Asked whether a rule's condition "... mentions X or Y"
    holds (PLD's data check), it answers yes when a cue occurs in the input."""

    def respond(system: str, user: str) -> dict:
        text = f" {field_value(user, field)} "
        if "Answer yes if the condition holds for the item" in " ".join(system.split()):  # PLD's data check
            # "the sentence mentions X or Y", "... description: sentences with X or Y"
            named = re.search(r"(?:mentions|with) (.+)$", field_value(user, "condition"))
            cues = named.group(1).split(" or ") if named else []
            return {"holds": "yes" if any(f" {cue} " in text for cue in cues) else "no"}
        for cues, label in _NUMBERED_RULE.findall(system):
            if any(f" {cue} " in text for cue in cues.split(" or ")):
                return {"label": label}
        return {"label": default}

    return respond


def cue_examples(cues: dict[str, list[str]], n: int, offset: int = 0) -> list[dspy.Example]:
    """`n` examples of a cue-word task (`cues`: label -> its words), labels in turn, each sentence naming one cue:
    the data `cue_teacher` mines and `rule_follower` answers."""
    labels, out = list(cues), []
    for i in range(offset, offset + n):
        label = labels[i % len(labels)]
        cue = cues[label][(i // len(labels)) % len(cues[label])]
        out.append(dspy.Example(id=f"ex{i}", sentence=f"Item {i}: the {cue} was mentioned here.", label=label)
                   .with_inputs("sentence"))
    return out


def cue_teacher(cues: dict[str, list[str]], phrasing: Callable[[list[str], str], str] | None = None,
                ) -> Callable[[str, str], dict]:
    """A teacher for a task whose truth is one cue word per example (`cues`: label -> its words): it mines
    "If the sentence mentions a L cue such as C, answer L.", merges a cluster into "If the sentence mentions
    C1 or C2, answer L." (a rule `rule_follower` applies) plus one `phrasing(cues, label)`, writes a
    corrective rule naming the cues its failures share, and hands a whole-list rewrite its list back."""
    phrasing = phrasing or (lambda cues, label: f"Sentences with {' or '.join(cues)} are {label}.")

    def respond(system: str, user: str) -> dict:
        # The adapter renders a signature's docstring line by line, indented: match its words, not its layout.
        system = " ".join(system.split())
        if "You write labelling rules for a small model" in system:
            gold = field_value(user, "gold_label")
            example = f" {field_value(user, 'example')} "
            cue = next(c for c in cues[gold] if f" {c} " in example)
            return {"rationale": f"The word '{cue}' signals {gold}.",
                    "rule": f"If the sentence mentions a {gold} cue such as {cue}, answer {gold}."}
        if "Merge labelling rules that all lead" in system:
            rules = json.loads(field_value(user, "rules"))  # the adapter renders list inputs as JSON
            found = sorted({r.split("such as ")[1].split(",")[0] for r in rules})
            answers = [r.split("answer ")[1].rstrip(".") for r in rules]
            label = max(set(answers), key=answers.count)
            return {"instruction": f"If the sentence mentions {' or '.join(found)}, answer {label}.",
                    "phrasings": [phrasing(found, label)]}
        if "It gives the failures below the wrong label" in system:  # a corrective rule for one confusion
            gold, failures = field_value(user, "gold_label"), f" {field_value(user, 'failures')} "
            found = sorted({c for c in cues[gold] if f" {c} " in failures})
            return {"rationale": f"The failures mention {' or '.join(found)}, which signal {gold}.",
                    "rule": f"If the sentence mentions {' or '.join(found)}, answer {gold}."}
        if "A small model labels examples" in system:  # the paper's whole-list rewrite: the list back
            return {"revised_rules": json.loads(field_value(user, "rules"))}
        raise AssertionError("unexpected teacher prompt: " + system[:200])

    return respond
