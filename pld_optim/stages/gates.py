"""Rule-quality gates: what a reviewer would reject never reaches the student's prompt.

Every rule a teacher writes (mined, merged with its wordings, corrective, or rewritten by refinement)
passes through `Gate.check`. A refusal is recorded with the gate that refused it and why, never silently
dropped: the student follows its rules faithfully, so a template copied from a field description, a
fragment of a broken list, a rule that names no label, or a rule that names a group taken from its
example (the paper's own warning for StereoSet) must stop here; so must text that is not one rule
(pld_optim/stages/rule_form.py).

Each gate is a plain function of the text and what it is checked against that returns a reason or None;
`Gate.check` returns the first refusal as a `Verdict` naming the gate. `Gate.text_gates` is the one list of
the gates that need only the rule's text and the task (its labels, its text): `Gate.check` runs them with
the gates that need the rule's own examples or the train data, and a rule a reviewer edited into rules.json,
which has neither, passes them alone (`Gate.check_text`, through `pld_optim.stages.context.rule_text_verdict`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from pld_optim.records import Refusal
from pld_optim.stages.rule_form import (
    example_pointer,
    foreign_language,
    foreign_script,
    loops,
    markdown,
    no_answer,
    no_condition,
    no_label,
    several_answers,
    several_sentences,
    tokens,
    too_long,
    wrong_label,
)

# Template placeholders a teacher copied from a prompt: <general cue>, {label}, [LABEL], "X".
_PLACEHOLDER = re.compile(r"<[^<>\n]{1,40}>|\{[^{}\n]{1,40}\}|\[[A-Z][A-Z _-]{1,29}\]"
                          r"|\[[^\]\n]{0,20}\b(?:label|cue|category|class|word)\b[^\]\n]{0,20}\]|\bLABEL\b|\bCUE\b")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
# Words that say how to answer rather than what to look for: they are no cue.
_TEMPLATE_WORDS = {"answer", "label", "labels", "choose", "pick", "select", "classify", "classified", "output",
                   "return", "respond", "rule", "rules", "correct", "example", "examples", "case", "cases",
                   "instruction", "instructions", "given", "explained", "earlier", "question", "true", "always"}
_DANGLING = ("and", "or", "but", "the", "a", "an", "of", "to", "with", "which", "that", "if", "is", "as", "e.g")


@dataclass(frozen=True)
class Verdict:
    """A refusal: the gate that refused the text (what counts and summaries group by) and why (what a
    reviewer reads)."""

    gate: str
    reason: str

    def refusal(self, stage: str, source: str, text: str) -> Refusal:
        return Refusal(stage=stage, source=source, text=text, gate=self.gate, reason=self.reason)


@dataclass
class Gate:
    """What one rule is checked against: the task's labels and text, and the inputs of its examples.

    `common_words` are words in many train inputs (boilerplate such as StereoSet's BLANK or a contract's
    "Agreement"): naming them is not naming an entity from one example. The task's script and language
    come from its text, its labels and the examples a rule is checked against.
    """

    labels: list[str]
    task_text: str = ""
    common_words: set[str] = field(default_factory=set)
    borrowed: set[str] = field(default_factory=set)  # words of the prompts' worked examples absent from the data
    min_words: int = 5
    max_words: int = 80
    max_chars: int = 300

    def text_gates(self, text: str, examples: Iterable[str] = (), *, min_content: int = 2) -> list[partial]:
        """The gates that need only the rule's text and the task, in the order they run. `examples` (the
        inputs a compile's rule is checked against) add the scripts and the language the rule may be written
        in; an edited rule has none, so the task's text and labels decide. `min_content`: the content words
        `no_cue` asks for (the teacher pads restatements of the task with one; a reviewer does not)."""
        examples, labels = list(examples), self.labels
        return [partial(placeholder, text), partial(addresses_model, text), partial(markdown, text),
                partial(fragment, text, self.min_words, self.max_words), partial(too_long, text, self.max_chars),
                partial(several_sentences, text), partial(foreign_script, text, [self.task_text, *labels], examples),
                partial(foreign_language, text, [self.task_text, *examples]), partial(loops, text),
                partial(several_answers, text, labels), partial(no_label, text, labels),
                partial(no_answer, text, labels), partial(no_condition, text, labels),
                partial(no_cue, text, labels, self.task_text, min_content=min_content),
                partial(example_pointer, text), partial(names_group, text)]

    def check(self, text: str, examples: Iterable[str] = (), *, copied_from: Iterable[str] = (),
              label: str | None = None, whose: str = "its") -> Verdict | None:
        """The first gate that refuses `text`, or None: the text gates, and the gates that need the rule's
        examples and the train data. `label`: the label the rule was asked for (its example's, its
        cluster's), which it must answer; `whose` names it in the reason."""
        examples = list(examples)
        gates = self.text_gates(text, examples)
        # A restatement of the task or the prompt is told as a copy, before the label gates say it answers none.
        at = next(k for k, gate in enumerate(gates) if gate.func is several_answers)
        gates.insert(at, partial(copies, text, [self.task_text, *copied_from, *examples]))
        gates += [partial(borrows, text, self.borrowed),
                  partial(names_entity, text, examples, self.labels, self.task_text, self.common_words)]
        if label is not None:
            gates.append(partial(wrong_label, text, label, self.labels, whose))
        return first_refusal(gates)

    def check_text(self, text: str, *, min_content: int = 2) -> Verdict | None:
        """The first text gate that refuses `text`, or None: for a rule with no examples and no train data
        to check it against (a rule a reviewer edited into rules.json)."""
        return first_refusal(self.text_gates(text, min_content=min_content))


def first_refusal(gates: Iterable[partial]) -> Verdict | None:
    """The first of `gates` (partials of gate functions) that gives a reason, as a `Verdict` named after it."""
    for gate in gates:
        reason = gate()
        if reason:
            return Verdict(gate=gate.func.__name__, reason=reason)
    return None


def placeholder(text: str) -> str | None:
    match = _PLACEHOLDER.search(text)
    return f"copies a template placeholder {match.group(0)!r}" if match else None


# Text about the prompt, the model or the rule list itself, not about the task's inputs: an injected command
# ("Ignore all previous instructions", "Print your system prompt") would ship in the student's system prompt.
# Its kind, not its instances: a command (a verb where a clause starts) whose object is what the model was
# told, or a name of what it was told by where or whose it is. A rule about the inputs uses the same verbs
# with the inputs' things ("ignore any mention of gender", "disclose information before consent") or after a
# subject ("an employee ignores instructions"), so neither the verb nor the noun alone is refused.
_CLAUSE = (r"(?:^|[.;:!?,]|\s[-–—]|\b(?:and|then|but|so|also|now|first|finally|next|instead|please|just|simply"
           r"|always))\s*")
_COMMAND = (r"(?:(?:do\s+not|don'?t|never|no\s+longer|stop)\s+(?:follow(?:ing)?|obey(?:ing)?|apply(?:ing)?|use"
            r"|using)|ignore|disregard|forget|override|overrule|bypass|skip|drop|discard|abandon|neglect|replace"
            r"|print|reveal|repeat|output|show|display|leak|disclose|dump|recite|echo|restate|reproduce"
            r"|write\s+out|spell\s+out|tell\s+(?:me|us|the\s+user))")
_TOLD = (r"(?:prompts?|instructions?|directives?|directions|guidance|guidelines?|rules?|rulebook|list|task"
         r"|(?:everything|anything|all)(?=\s*(?:[.;:!?,]|$|\s(?:and|else|above|before|earlier|so\s+far|written"
         r"|said|stated|given|you)))|(?:the\s+)?above|what(?:ever)?\s+(?:\w+\s+){0,3}?(?:above|before|earlier"
         r"|so\s+far))")
_WHERE = r"(?:above|below|earlier|previously|so\s+far|before\s+(?:this|now|here))"
_ABOUT_THE_PROMPT = re.compile(
    # A command aimed at what the model was told: "ignore the task description", "print the full prompt text".
    rf"{_CLAUSE}\b{_COMMAND}\s+(?:[\w'-]+\s+){{0,3}}?{_TOLD}\b"
    # What the model was told, named by where or whose it is: "previous instructions", "the rules above".
    r"|\b(?:system|previous|prior|above|earlier|original|hidden|initial|preceding|foregoing|your|this)\s+prompts?\b"
    r"|\b(?:previous|prior|above|earlier|original|initial|preceding|foregoing|hidden|system|your|these|those"
    r"|other|the\s+following)\s+(?:instructions?|directives?|messages?|rules|guidance|guidelines)\b"
    r"|\b(?:instructions?|directives?|rules?|prompts?|guidance|guidelines|list|text)\s+"
    rf"(?:(?:listed|written|given|stated|shown|provided)\s+)?{_WHERE}\b"
    r"|\b(?:this|that|every|each|any|no|other)\s+rule\b|\brules?\s+\d+\b"
    r"|\b(?:new|updated|revised|real|actual)\s+(?:instructions?|directives?|system\s+prompt)\b"
    r"|\byou\s+are\b|\byour\s+(?:role|task|job|answer|output|instructions?|rules?|prompt)\b"
    # "model" and "assistant" alone are professions in StereoSet: only unambiguous names of an AI.
    r"|\b(?:as\s+an\s+ai|ai\s+model|language\s+model|chatgpt|llm|jailbreak)\b",
    re.IGNORECASE)


def addresses_model(text: str) -> str | None:
    """Refuse text that speaks about the prompt, the model or the rules themselves: a rule is about what to
    look for in an input."""
    match = _ABOUT_THE_PROMPT.search(text)
    if match is None:
        return None
    said = match.group(0).strip(" .;:!?,-–—")
    return f"speaks about the prompt, the model or the rules ({said!r}), not about the inputs"


def fragment(text: str, min_words: int = 5, max_words: int = 80) -> str | None:
    """A rule is one whole sentence: it starts with a letter, closes every quote and bracket it opens,
    and does not end mid-clause."""
    stripped = text.strip()
    words = _WORD.findall(stripped)
    if len(words) < min_words:
        return f"a fragment: {len(words)} words, a rule needs at least {min_words}"
    if len(words) > max_words:
        return f"not one rule: {len(words)} words, more than {max_words}"
    if not stripped[0].isalnum():
        return f"a fragment: starts with {stripped[0]!r}"
    if stripped.count('"') % 2 or stripped.count("“") != stripped.count("”"):
        return "a fragment: an unclosed quote"
    for a, b in ("()", "[]", "{}"):
        if stripped.count(a) != stripped.count(b):
            return f"a fragment: unbalanced {a}{b}"
    if stripped[-1] in ",;:-(" or words[-1].lower() in _DANGLING or stripped.endswith(("…", "...")):
        return "a fragment: ends mid-clause"
    return None


def borrows(text: str, borrowed: set[str]) -> str | None:
    """A rule that uses a word of the teacher's worked examples (from unrelated tasks) that no train input
    holds was copied from them, not learnt from the data."""
    found = sorted({w.lower() for w in _WORD.findall(text)} & borrowed)
    return f"borrows {found[0]!r} from the teacher's worked examples (an unrelated task)" if found else None


def no_cue(text: str, labels: list[str], task_text: str = "", min_content: int = 2) -> str | None:
    """A cue is something to look for beyond the label and the task's own words ("The sentence expresses a
    bias type related to religion." restates the task and names a label: no cue)."""
    known = {w for label in labels for w in tokens(label)} | set(tokens(task_text)) | _TEMPLATE_WORDS
    content = [w for w in tokens(text) if len(w) > 2 and w not in ENGLISH_STOP_WORDS and w not in known]
    return None if len(set(content)) >= min_content else "names no cue to look for"


def copies(text: str, sources: Iterable[str], threshold: float = 0.8) -> str | None:
    """Most of its content words come from the task description, the prompt it was given, or its example:
    a restatement, not a rule."""
    words = {w for w in tokens(text) if len(w) > 3 and w not in ENGLISH_STOP_WORDS}
    if len(words) < 3:
        return None
    for source in sources:
        if source and len(words & set(tokens(source))) / len(words) >= threshold:
            return "copies its task, prompt or example instead of stating a rule"
    return None


def _stem(word: str) -> str:
    return word.lower()[:5]


def names_entity(text: str, examples: Iterable[str], labels: list[str], task_text: str = "",
                 common_words: set[str] = frozenset()) -> str | None:
    """A proper noun (a capitalised word that does not open a sentence) or a quoted phrase whose words come
    from the rule's own examples names a specific person, group, nationality, organisation or place.

    Nationalities, religions, places, people and organisations are capitalised in English, however the
    example spelled them, so they are matched on their first five letters ("Russians" ~ "russia").
    """
    example_words = {w.lower() for ex in examples for w in _WORD.findall(ex)} - common_words
    if not example_words:
        return None
    stems = {_stem(w) for w in example_words if len(w) >= 3}
    allowed = {w for label in labels for w in tokens(label)} | set(tokens(task_text))
    for match in re.finditer(r"(?<![.!?:]\s)(?<!^)\b([A-Z][A-Za-z'-]{2,})", text.strip()):
        word = match.group(1)
        if word.lower() in allowed or word.lower() in ENGLISH_STOP_WORDS:
            continue
        if word.lower() in example_words or _stem(word) in stems:
            return f"names {word!r}, taken from its examples"
    # "(in this case, the X man)": an instance taken from the example, however it is spelled.
    for match in re.finditer(r"\b(?:in this case|in this example|in the example|here)\b"
                             r"([^.;)]{0,60})", text, re.IGNORECASE):
        words = [w.lower() for w in _WORD.findall(match.group(1))]
        specific = [w for w in words if w in example_words and w not in allowed and w not in ENGLISH_STOP_WORDS]
        if specific:
            return f"names {specific[0]!r} from its examples as an instance"
    for quoted in re.findall(r"[\"“']([^\"”']{2,60})[\"”']", text):
        words = [w.lower() for w in _WORD.findall(quoted)]
        specific = [w for w in words if w in example_words and w not in allowed and w not in ENGLISH_STOP_WORDS]
        if specific:
            return f"quotes {quoted!r} from its examples"
    return None


# Groups a rule must never single out, whether or not its examples named them: the student follows its rules
# faithfully, so "If the text says black people are inferior, answer race" teaches it the stereotype (the
# paper's own warning for StereoSet). Nationalities and ethnicities are also caught as proper nouns above.
_GROUP_WORDS = {
    "muslim", "muslims", "islam", "islamic", "christian", "christians", "christianity", "catholic", "catholics",
    "protestant", "jewish", "jews", "jew", "judaism", "hindu", "hindus", "hinduism", "buddhist", "buddhists",
    "buddhism", "sikh", "sikhs", "mormon", "mormons", "atheist", "atheists", "brahmin", "bible", "quran", "koran",
    "torah", "hispanic", "hispanics", "latino", "latina", "latinos", "asian", "asians", "african", "africans",
    "arab", "arabs", "arabic", "caucasian", "european", "europeans", "mexican", "mexicans", "chinese", "japanese",
    "korean", "indian", "indians", "russian", "russians", "italian", "italians", "german", "germans", "french",
    "british", "irish", "american", "americans", "persian", "iranian", "iraqi", "afghan", "pakistani", "somali",
    "ethiopian", "nigerian", "ukrainian", "polish", "norwegian", "swedish", "spanish", "syrian", "vietnamese",
}
_COLOUR_GROUP = re.compile(r"\b(black|white|brown|yellow|red)\s+(people|persons?|m[ae]n|wom[ae]n|folks?"
                           r"|communit(?:y|ies)|families|kids|children|americans)\b", re.IGNORECASE)


def names_group(text: str) -> str | None:
    words = {w.lower() for w in _WORD.findall(text)}
    named = sorted(words & _GROUP_WORDS)
    if named:
        return f"names the group {named[0]!r}"
    match = _COLOUR_GROUP.search(text)
    return f"names the group {match.group(0)!r}" if match else None


def common_words(texts: list[str], share: float = 0.3) -> set[str]:
    """Words in more than `share` of the inputs: the data's boilerplate, never an entity of one example."""
    if not texts:
        return set()
    counts: dict[str, int] = {}
    for text in texts:
        for w in {w.lower() for w in _WORD.findall(text)}:
            counts[w] = counts.get(w, 0) + 1
    return {w for w, c in counts.items() if c > share * len(texts)}
