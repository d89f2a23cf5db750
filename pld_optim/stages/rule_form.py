"""The form of one rule: one sentence that says "if this holds, answer L", in the task's own language.

The student follows each rule as written, so a rule must be one instruction it can apply: two sentences,
a list, a rule that answers several labels or none, or a definition with no condition on the input teach
it nothing; a tail in another script (the 1.5B teacher drifts into Chinese) or a pointer to the example
the rule came from ("(in this case, passion)") is noise in its system prompt. Each gate is a plain
function of the text that returns a reason or None; `gates.Gate.check` runs them with the others.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_LETTERS = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")

# Dots that end no sentence: abbreviations, initials, "U.S.", list numbers ("1. If ...", which `markdown` refuses).
_ABBREVIATION = re.compile(r"(?:^|(?<=[\s:;,(]))\d{1,2}\.(?=\s)"
                           r"|\b(?:e\.\s?g|i\.\s?e|etc|vs|cf|viz|approx|incl|esp|resp|et al|a\.m|p\.m)\."
                           r"|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Inc|Ltd|Co|Corp|No|Nos|Sec|Art|Fig|U\.S|U\.K|[A-Z])\.",
                           re.IGNORECASE)
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|(?<!\w)'[^']*'(?!\w)|‘[^’]*’|\([^()]*\)")
_BOUNDARY = re.compile(r"[.!?]+[\"”’')\]]*\s+(?=\S)|[。！？]\s*(?=\S)|(?<=[a-z]{2})[.!?](?=[A-Z][a-z])")


def _second_sentence(text: str) -> re.Match | None:
    """Where the first sentence of `text` ends, past abbreviations ("e.g.", "vs.", "U.S."), decimals and
    quoted or bracketed text."""
    return _BOUNDARY.search(_QUOTED.sub(_hide_stops, _ABBREVIATION.sub(_hide_stops, text)))


def first_sentence(text: str) -> str:
    text = text.strip()
    match = _second_sentence(text)
    return text[:match.end()].rstrip() if match else text


def first_answer(text: str, label: str) -> str:
    """A run-on rule ends at its first answer: held to "If <condition>, answer L.", a small teacher writes its
    qualifications into the condition and answers again ("If X, answer L, even if Y, answer L.")."""
    clauses = list(re.finditer(r"\banswer\s+" + re.escape(label) + r"(?![\w-])", text, re.IGNORECASE))
    return text[:clauses[0].end()].rstrip(",;: ") + "." if len(clauses) > 1 else text


def several_sentences(text: str) -> str | None:
    """A rule is one sentence; a second one is the teacher explaining itself, or a second rule."""
    text = text.strip()
    match = _second_sentence(text)
    return f"more than one sentence (the next begins {text[match.end():][:30]!r})" if match else None


def _hide_stops(match: re.Match) -> str:
    return re.sub(r"[.!?。！？]", "_", match.group(0))  # the same length, so positions still point into the text


_MARKDOWN = re.compile(r"^\s*(?:[-*•+>]\s|#{1,6}\s|\(?\d{1,2}[.)]\s)|\*\*|`|(?<!_)__\w[^_]*\w__(?!_)"
                       r"|(?<![\w*])\*\S[^*]*\S\*(?![\w*])")
_NUMBERED = re.compile(r"(?:^|[\s:;,])\(?\d{1,2}[.)](?=\s)")


def markdown(text: str) -> str | None:
    """The prompt numbers the rules itself: a bullet, heading, bold or code mark, or a list number inside a
    rule shows in the student's prompt as it is; two numbers are two rules in one."""
    if len(_NUMBERED.findall(text)) >= 2:
        return "holds a numbered list (two rules in one)"
    match = _MARKDOWN.search(text)
    return f"markdown ({match.group(0).strip()!r})" if match else None


def too_long(text: str, max_chars: int = 300) -> str | None:
    n = len(text.strip())
    return f"not one rule: {n} characters, more than {max_chars}" if n > max_chars else None


# Scripts as Unicode names them ("LATIN SMALL LETTER E WITH ACUTE"); the East Asian ones as one, so Japanese
# (kanji, kana) is one script and a full-width comma counts as the Chinese it comes with.
_EAST_ASIAN = ("CJK", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH", "BOPOMOFO")


def script_of(ch: str) -> str | None:
    if ch.isascii():
        return "LATIN" if ch.isalpha() else None
    first = unicodedata.name(ch, "").split(" ")[0]
    if first in _EAST_ASIAN:
        return "CJK"
    return first if ch.isalpha() and first != "MODIFIER" else None


@lru_cache(maxsize=4096)
def _profile(text: str) -> tuple[Counter, int, int]:
    """Letters per script, words, English stop words: computed once per example text, however many rules
    are checked against it."""
    words = [w.lower() for w in _LETTERS.findall(text)]
    return Counter(s for ch in text if (s := script_of(ch))), len(words), sum(w in ENGLISH_STOP_WORDS for w in words)


def scripts(texts: Iterable[str], share: float = 0.1) -> set[str]:
    """The scripts that make up at least `share` of the letters of `texts` together."""
    counts = sum((_profile(t)[0] for t in texts), Counter())
    total = sum(counts.values())
    return {s for s, n in counts.items() if n >= share * total}


def foreign_script(text: str, task: Sequence[str], inputs: Sequence[str] = ()) -> str | None:
    """Letters of a script that neither the task's own text (its description, its labels) nor its inputs
    are written in: accented Latin (café, naïve) is Latin, a Chinese or Cyrillic tail is not."""
    allowed = scripts(task) | scripts(inputs) or {"LATIN"}
    for k, ch in enumerate(text):
        found = script_of(ch)
        if found is not None and found not in allowed:
            return f"written partly in another script than the task's ({found}: {text[k:k + 20]!r})"
    return None


# Words common in other languages written in Latin letters and rare in English.
_OTHER_FUNCTION_WORDS = frozenset("le la les des une est et pour dans avec sur qui que si el los las es y por para "
                                  "una con del der das und ist ein eine nicht wenn mit oder het een van il di che "
                                  "della um não uma em".split())


def english(texts: Iterable[str], share: float = 0.15) -> bool:
    profiles = [_profile(t) for t in texts]
    words = sum(p[1] for p in profiles)
    return words > 0 and sum(p[2] for p in profiles) >= share * words


def foreign_language(text: str, reference: Sequence[str]) -> str | None:
    """In an English task, a rule whose function words are another language's: drift the script check
    cannot see ("Si la phrase mentionne une religion, ...")."""
    if not english(reference):
        return None
    words = [w.lower() for w in _LETTERS.findall(text)]
    other = [w for w in words if w in _OTHER_FUNCTION_WORDS]
    if len(other) >= 2 and len(other) > sum(w in ENGLISH_STOP_WORDS for w in words):
        return f"not in the task's language (English): {' '.join(other[:4])!r}"
    return None


_POINTER = re.compile(
    r"\b(?:in (?:this|the|that) (?:example|instance)|in this case|as in (?:the|this) (?:example|case|sentence)"
    r"|(?:as|like) (?:the|this) example|(?:the|this) (?:given|above|previous|current|same) (?:example|case|instance)"
    r"|for this (?:example|instance)|this particular (?:example|case|sentence|person|group|one)"
    r"|as (?:shown|seen|described) (?:above|here|in the example))\b|\((?:here|e\.g\.,? here)\b", re.IGNORECASE)


def example_pointer(text: str) -> str | None:
    """A rule is general: "(in this case, passion)" or "(as in the example)" points at the one example it
    was written from, which the student never sees."""
    match = _POINTER.search(text)
    return f"points at the example it came from ({match.group(0)!r})" if match else None


# Labels: which a rule names, and which it tells the model to answer.
def _spaced(text: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # "NotMentioned" reads as "Not Mentioned"


def tokens(text: str) -> list[str]:
    """Lower-case words and numbers; CamelCase labels (NotMentioned) also match their spaced form."""
    return re.findall(r"[a-z0-9]+", _spaced(text).lower())


def mentions(text: str, label: str) -> bool:
    words, target = tokens(text), tokens(label)
    joined = "".join(target)
    n = len(target)
    return any(words[i:i + n] == target for i in range(len(words) - n + 1)) or joined in words


def wrong_label(text: str, label: str, labels: Sequence[str], whose: str = "its") -> str | None:
    """A rule written for one label (its example's, its cluster's, the confusion's gold) answers that one."""
    if not mentions(text, label):
        return f"does not name {whose} label {label!r}"
    said = answers(text, labels)
    return f"answers {said[0]!r}, not {whose} label {label!r}" if said and said != [label] else None


def no_label(text: str, labels: list[str]) -> str | None:
    """A rule decides one label. It may name others ("answer profession, even when the sentence mentions
    gender, race or religion"), but then it must say which one it answers."""
    named = [label for label in labels if mentions(text, label)]
    if not named:
        return "names no label"
    if len(labels) >= 3 and len(named) == len(labels) and len(answers(text, labels)) != 1:
        return "names every label and answers none of them alone, so it decides nothing"
    return None


# What says which label to give: "answer L", "label it as L", "choose the label L", "otherwise L"; or a
# copula, "... is L.", "... are L, even if ...", which counts only with the label spelled as a label and
# ending its clause ("is not mentioned in the contract" is no answer NotMentioned).
_ACTION = re.compile(r"\b(?:answer(?:s|ing)?|choose|pick|select|output|return|label(?:l?ed)?|classif(?:y|ied)"
                     r"|assign(?:ed)?|mark(?:ed)?|tag(?:ged)?|otherwise|else)\b[\s:,'\"“(]*(?:(?:the|a|an|it"
                     r"|them|this|as|with|to|label|labels|category|class|either|simply|always|only)\b"
                     r"[\s:,'\"“(]*){0,3}$", re.IGNORECASE)
_COPULA = re.compile(r"(?:\b(?:is|are|be)|\b(?:it|that|this)['’]s)\s+(?:(?:likely|probably|usually|always|clearly)"
                     r"\s+)?['\"“]?$", re.IGNORECASE)
_CLAUSE_END = re.compile(r"['\"”]?\s*(?:[.,;:!?)]|$|(?:even|unless|regardless|rather|not|instead|too|also|because"
                         r"|since|whatever|no matter)\b)", re.IGNORECASE)
_LIST = re.compile(r"[\s,/'\"“”]*(?:(?:or|and|and/or|nor)\b[\s,/'\"“”]*)*", re.IGNORECASE)


@lru_cache(maxsize=256)
def _label_pattern(label: str) -> re.Pattern:
    words = re.findall(r"[a-z0-9]+", _spaced(label).lower())
    return re.compile(r"(?<![\w-])" + r"[\s_-]?".join(map(re.escape, words)) + r"(?![\w-])", re.IGNORECASE)


def _answers(text: str, labels: Sequence[str]) -> list[tuple[str, str, int]]:
    """(label, how it is answered, where) for each label the text tells the model to answer, in order; a
    list after an answer ("answer race, gender or religion") answers each of its labels."""
    spaced = _spaced(text)
    hits = sorted((m.start(), m.end(), label) for label in labels for m in _label_pattern(label).finditer(spaced))
    found, last_end = [], None
    for start, end, label in hits:
        before = spaced[:start]
        if _ACTION.search(before):
            how = "action"
        elif (_COPULA.search(before) and spaced[start:end].lower() == label.lower()
              and _CLAUSE_END.match(spaced, end)):
            how = "copula"
        elif last_end is not None and _LIST.fullmatch(spaced[last_end:start]):
            how = "list"
        else:
            continue
        found.append((label, how, start))
        last_end = end
    return found


def answers(text: str, labels: Sequence[str]) -> list[str]:
    """The labels a rule tells the model to answer, each once, in order."""
    return list(dict.fromkeys(label for label, _, _ in _answers(text, labels)))


def answered_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a rule answers, as `answers` reads it (the first it tells the model to answer), or None: the
    label named last is not it ("..., answer profession, even when it also mentions gender or race.")."""
    return next(iter(answers(text, labels)), None)


def several_answers(text: str, labels: Sequence[str]) -> str | None:
    """A rule answers exactly one label. It may name others in its condition ("even if it mentions gender,
    answer race"), but "answer race, gender or religion" decides nothing, and neither does a condition that
    gives an answer of its own ("..., answer the corresponding category (gender, race, ...), answer gender.")."""
    said = answers(text, labels)
    if len(said) > 1:
        return f"answers several labels ({', '.join(said)}); a rule answers one"
    told = re.findall(r"\banswer\b", text, re.IGNORECASE)
    return "says 'answer' twice; a rule gives one answer" if len(told) > 1 else None


def no_answer(text: str, labels: Sequence[str]) -> str | None:
    return None if answers(text, labels) else "says no label to answer (a rule ends 'answer <one label>')"


_CONDITION = re.compile(r"\b(?:if|when|whenever|where|wherever|unless|once|whether|provided|as long as|in case"
                        r"|in which|whose)\b", re.IGNORECASE)
# What makes the subject of "... is L." a condition on the input: "Sentences with she or mother are gender."
_MODIFIER = {"that", "which", "who", "with", "about", "where", "mentioning", "describing", "containing", "naming",
             "involving", "toward", "towards", "against", "on", "of", "in", "from", "by"}
_NO_SUBJECT = {"answer", "label", "labels", "correct", "category", "class", "type", "output", "result", "bias", "kind"}


def no_condition(text: str, labels: Sequence[str]) -> str | None:
    """A rule says when it applies: "if/when/where ...", or a subject that describes inputs ("A sentence
    about a faith's practices is religion."). A definition ("Religion is a belief system ...") or a bare
    verdict ("The answer is race.") states no condition on the input."""
    if _CONDITION.search(text):
        return None
    for _, how, start in _answers(text, labels):
        subject = [w.lower() for w in _LETTERS.findall(_spaced(text)[:start])]
        content = [w for w in subject if w not in ENGLISH_STOP_WORDS and w not in _NO_SUBJECT
                   and not any(w == x.lower() for x in labels)]
        if how == "copula" and len(subject) >= 3 and _MODIFIER & set(subject) and content:
            return None
    return "states no condition on the input (say when it applies: 'If ..., answer <label>.')"


def loops(text: str, min_words: int = 16, min_distinct: float = 0.45) -> str | None:
    """Small teachers loop ("It is about gender. It is about gender. ..."); such text is no rule."""
    words = text.lower().split()
    if len(words) >= min_words and len(set(words)) / len(words) < min_distinct:
        return "repeats itself (a looping teacher)"
    return None
