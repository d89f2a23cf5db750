"""What a split's figures can stand on, checked before any LM call: how many examples, and of which labels.

A dev or test figure on a handful of examples reads like any other number. A label no dev example has is
left out of dev macro F1 (`pld_optim.evaluation.scoring`), so the search never learns how a prompt fares on
it; a label with no train example gets no mined rule (mining and correction write rules for the gold labels
of train examples); a label with one dev example has its recall, and so its F1, decided by one answer; a
test split of one example has no bootstrap interval, and finding that out after the whole compile wastes it.
`warn_coverage` (train and dev: `PLD.prepare`, and `pld-optim compare` for every optimizer) logs what it
finds; `check_test` refuses a test split no interval can be computed on (`compile --test`, `compare`). Both
need only the data, so both run before any LM call.
"""

from __future__ import annotations

import logging
from collections import Counter

import dspy
from pydantic import BaseModel

from pld_optim.evaluation.task import Task

logger = logging.getLogger("pld_optim")

MIN_INTERVAL_EXAMPLES = 2  # scipy's bootstrap needs two observations; below that no interval exists
MIN_PER_LABEL = 2  # fewer dev examples of a label and its recall is one answer's 0 or 1 (its F1 0 when wrong)


class Coverage(BaseModel):
    """One split's examples per declared label."""

    split: str
    n: int
    support: dict[str, int]

    @property
    def absent(self) -> list[str]:
        return [label for label, k in self.support.items() if not k]

    @property
    def thin(self) -> list[str]:
        """Labels present, but with fewer than MIN_PER_LABEL examples."""
        return [label for label, k in self.support.items() if 0 < k < MIN_PER_LABEL]

    def describe(self) -> str:
        """'12 dev (gender 4, race 4, religion 4)': what a figure on this split stands on."""
        counts = ", ".join(f"{label} {k}" for label, k in self.support.items())
        return f"{self.n} {self.split} ({counts})"


def stands_on(support: dict[str, int]) -> str:
    """'12 examples', or '5 examples, macro over 2 of 3 labels (no example of religion)': the words every
    printed figure carries, from the gold examples per declared label it was measured on."""
    n, absent = sum(support.values()), [label for label, k in support.items() if not k]
    text = f"{n} example{'s' if n != 1 else ''}"
    if absent:
        text += (f", macro over {len(support) - len(absent)} of {len(support)} labels (no example of "
                 f"{', '.join(absent)})")
    return text


def coverage(examples: list[dspy.Example], task: Task, split: str) -> Coverage:
    counts = Counter(str(ex[task.label_field]) for ex in examples)
    return Coverage(split=split, n=len(examples), support={label: counts[label] for label in task.labels})


def coverage_problems(train: list[dspy.Example], dev: list[dspy.Example], task: Task) -> list[str]:
    """One sentence per thing that makes a compile's rules or dev figures rest on too little."""
    problems = []
    trained, scored = coverage(train, task, "train"), coverage(dev, task, "dev")
    if trained.absent:
        problems.append(f"no train example has the label(s) {', '.join(trained.absent)}: no rule can be mined for "
                        "them, so the student answers them from the task's instructions alone")
    if scored.absent:
        left = len(task.labels) - len(scored.absent)
        problems.append(f"no dev example has the label(s) {', '.join(scored.absent)}: dev macro F1 (and the search "
                        f"that maximises it) averages over the other {f'{left} labels' if left > 1 else 'label'} "
                        "only and cannot tell how a prompt fares on them")
    if scored.thin:
        problems.append(f"the label(s) {', '.join(scored.thin)} have fewer than {MIN_PER_LABEL} dev examples: "
                        "each one's recall is one answer's 0 or 1, and its F1 is 0 whenever that answer is wrong")
    if problems:
        problems.append(f"dev figures and the rules chosen on them stand on {scored.describe()}; add dev examples "
                        "(valset=, or data.fractions / data.dev_limit) for figures that generalise")
    return problems


def warn_coverage(train: list[dspy.Example], dev: list[dspy.Example], task: Task, where: str = "PLD") -> list[str]:
    """`coverage_problems`, logged as warnings that start with `where` (a small split is allowed, but never
    silently); returns them."""
    problems = coverage_problems(train, dev, task)
    for problem in problems:
        logger.warning("%s: %s", where, problem)
    return problems


def check_test(test: list[dspy.Example], task: Task, where: str = "--test",
               fix: str = "set data.fractions or data.test_limit", warn: bool = True) -> Coverage:
    """A test split the paired bootstrap interval can be computed on, or an error before anything is spent:
    the caller runs it before its first LM call. `fix` ends the error (the CLI's settings, or what a Python
    caller passes); `warn` logs the declared labels no test example has (once per run, not once per seed)."""
    found = coverage(test, task, "test")
    if found.n < MIN_INTERVAL_EXAMPLES:
        raise ValueError(f"{where}: the test split has {found.n} example{'s' if found.n != 1 else ''}; the paired "
                         f"bootstrap interval needs at least {MIN_INTERVAL_EXAMPLES} ({fix})")
    if warn and found.absent:
        logger.warning("%s: no test example has the label(s) %s; test macro F1 averages over the other labels",
                       where, ", ".join(found.absent))
    return found
