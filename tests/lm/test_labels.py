"""An answer maps to a label only when it names exactly one: forgiving about case, spacing, quotes and
markdown around it, never about which label it names (misuse that used to score a wrong answer as right)."""

import pytest

from pld_optim.lm.labels import normalize_label

BIAS = ["gender", "race", "religion"]
STEREOSET = ["stereotype", "anti-stereotype", "unrelated"]


@pytest.mark.parametrize("labels, raw, expected", [
    (BIAS, "race", "race"),
    (BIAS, "Race", "race"),
    (BIAS, "  RACE. ", "race"),
    (BIAS, '"religion"', "religion"),
    (BIAS, "The answer is gender.", "gender"),
    (BIAS, "gender or race", None),
    (BIAS, "politics", None),
    (BIAS, None, None),
    (STEREOSET, "This is an anti-stereotype.", "anti-stereotype"),  # the longer label wins over its substring
    (STEREOSET, "stereotype, not anti-stereotype", None),
    (["A", "a"], "a", "a"),                      # labels that differ only by case: exact or nothing
    (["A", "a"], "A.", "A"),
    (["A", "a"], "The answer is A", "A"),
    (["yes", "no"], "YES!", "yes"),
    (["c", "c#", "c++"], "C#", "c#"),            # '#' is part of the label, not punctuation to drop
    (["c", "c#", "c++"], "c++", "c++"),
    (["c", "c#", "c++"], "c# or c", None),       # two labels named: invalid, not the first
    (["positivo", "négatif", "中性"], "中性。", "中性"),
    (["positivo", "négatif", "中性"], "中", None),  # was 中性: non-Latin characters were dropped first
    (["positivo", "négatif", "中性"], "negatif", None),
    (["Entailment", "Contradiction", "NotMentioned"], "not mentioned", "NotMentioned"),
    (["Entailment", "Contradiction", "NotMentioned"], "**Contradiction**", "Contradiction"),
    (["Entailment", "Contradiction", "NotMentioned"], "entail", None),
], ids=lambda value: "|".join(value) if isinstance(value, list) else None)
def test_an_answer_maps_to_a_label_only_when_it_names_exactly_one(labels, raw, expected):
    assert normalize_label(raw, labels) == expected
