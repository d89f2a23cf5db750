"""The rule set PLD produces (rules.json): plain data that a reviewer can read, edit and apply again.

The artifact, not the compiled program, is what a human audits: every rule keeps the train examples and
teacher rationales it came from, so a bad rule can be traced to its evidence and deleted or rewritten in
`rules.json` without mining again (`pld_optim.apply_rules`). Worked examples (demos) are data: train
examples shown as they are, each next to the rule it illustrates.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dspy
from pydantic import Field, model_validator

from pld_optim.files import atomic_write_text, read_json
from pld_optim.records import ClusterReport, Record, RefineIteration, Refusal, SearchResult, Selection, StageUsage

FORMAT_VERSION = 2
KNOWN_VERSIONS = (1, 2)  # version 1 files (no demos) load unchanged
DEFAULT_PREAMBLE = "Apply these rules, in order of relevance, to choose the `{label_field}`:"


class DemoExample(Record):
    """A train example the student may be shown as a worked example, with its gold label."""

    id: str
    inputs: dict[str, str]
    label: str


class Confusion(Record):
    """What a corrective rule is for: items of `gold` the student answered `predicted`."""

    gold: str
    predicted: str
    example_ids: list[str] = Field(default_factory=list, description="the confused train examples shown to the teacher")


class Rule(Record):
    id: str
    text: str
    phrasings: list[str] = Field(default_factory=list, description="alternative wordings of `text`")
    support: list[str] = Field(default_factory=list, description="train example ids whose mined rules formed it")
    rationales: list[str] = Field(default_factory=list, description="sample teacher rationales, as provenance")
    cluster_size: int = 0
    label: str | None = Field(None, description="the gold label its mined rules shared (label-wise clustering)")
    stage: Literal["cluster", "corrective", "rewrite"] = Field(
        "cluster", description="the stage that wrote it: merged from a cluster, a corrective rule of refinement, or "
                               "the paper's rewrite of the list")
    origin: str = Field("cluster", description="how it came about, for a reader")
    corrects: Confusion | None = Field(None, description="corrective rules: the confusion it was written to fix")
    examples: list[DemoExample] = Field(
        default_factory=list, description="train examples that illustrate it, the most telling first; the search "
                                          "may show one to the student as a demo")
    contribution: float | None = Field(
        None, description="dev macro F1 of the final prompt minus its F1 without this rule (None: not active or "
                          "not measured); negative: the prompt does better without it")
    precision: float | None = Field(
        None, description="of the sampled train items its condition held for (as the student read it), the share "
                          "of its label (None: not checked, or it never held)")
    coverage: float | None = Field(None, description="of the sampled train items of its label, the share its "
                                                     "condition held for (None: not checked)")
    evidence: str = Field("", description="the data check's counts, as a reviewer reads them")

    @model_validator(mode="before")
    @classmethod
    def _stage_of_old_files(cls, data):
        """Files written before rules carried a stage said it only in `origin`'s first word."""
        if isinstance(data, dict) and "stage" not in data and isinstance(data.get("origin"), str):
            first = data["origin"].split(" ", 1)[0]
            data = {**data, "stage": {"corrective": "corrective", "refine": "rewrite"}.get(first, "cluster")}
        return data

    def variants(self) -> list[str]:
        """Index 0 is the canonical text; the search stage picks among these."""
        return [self.text, *self.phrasings]


@dataclass
class Prompt:
    """What the student sees besides the task: numbered rules in the instructions, and worked examples."""

    rules: list[str] = field(default_factory=list)
    demos: list[dspy.Example] | None = None  # PLD's worked examples; the program's own demos are kept before them


class RuleSet(Record):
    format_version: int = FORMAT_VERSION
    predictor: str
    label_field: str
    labels: list[str]
    base_instructions: str
    preamble: str = DEFAULT_PREAMBLE
    rules: list[Rule]
    selection: list[Selection] | None = Field(
        default=None, description="ordered subset chosen by search; None means every rule in listed order")
    system_prompt: str = ""
    baseline_dev_macro_f1: float | None = None
    dev_macro_f1: float | None = None
    rules_beside_demos: float | None = Field(None, description="dev macro F1 of the prompt minus that of its worked "
                                                               "examples alone: what the rules add beside them")
    demos_beside_rules: float | None = Field(None, description="dev macro F1 of the prompt minus that of its rules "
                                                               "alone: what the worked examples add beside them")
    baseline_dev_confusion: list[list[int]] | None = Field(
        None, description="dev confusion matrix without rules: rows gold (`labels` order), columns the labels, "
                          "then answers outside them")
    dev_confusion: list[list[int]] | None = Field(None, description="the same with the chosen rules")
    clustering: ClusterReport | None = None
    history: list[RefineIteration] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list, description="teacher texts the quality gates refused, "
                                    "and train rows kept out of the worked examples (stage 'demos')")
    search: SearchResult | None = None
    usage: list[StageUsage] = Field(default_factory=list)
    data_overlap: dict[str, int] = Field(
        default_factory=dict, description="examples whose inputs appear in two splits, per pair ('train/dev'); "
                                          "repeats inside one split as 'train/train'")
    seed: int | None = None
    context: dict = Field(default_factory=dict, description="the run that made it: config, student, teacher, seed, "
                                                            "split sizes, wall time (heads report.md and review.html)")
    scored_prompt: str | None = Field(
        None, description="digest of the prompt (instructions and demos) that dev_macro_f1 was measured on: report "
                          "and pick tell from it whether the rules were edited since")
    rule_digests: dict[str, str] = Field(
        default_factory=dict, description="digest of each rule (wordings and examples) as the compile's search "
                                          "scored it: pick refuses a Pareto point whose rules were edited since")

    @model_validator(mode="after")
    def _consistent(self) -> RuleSet:
        if self.format_version not in KNOWN_VERSIONS:
            raise ValueError(f"format_version {self.format_version} is not one this pld-optim reads "
                             f"({', '.join(map(str, KNOWN_VERSIONS))}); upgrade pld-optim or re-run the compile")
        blank = [f"rule {r.id!r}" + (" (text)" if i == 0 else f" (phrasings[{i - 1}])")
                 for r in self.rules for i, text in enumerate(r.variants()) if not text or not text.strip()]
        if blank:
            raise ValueError(f"{blank[0]} is empty or only whitespace; the student would see an empty rule. Write "
                             "the rule, or delete it and its selection entry")
        if not self._formats(self.preamble):
            raise ValueError(f"preamble {self.preamble!r}: only {{label_field}} may stand in braces (write {{{{ and "
                             "}} for a literal brace)")
        ids = [r.id for r in self.rules]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"rule ids {duplicated} occur more than once; each rule needs its own id")
        strangers = sorted({r.label for r in self.rules if r.label is not None} - set(self.labels))
        if strangers:
            raise ValueError(f"rules carry labels {strangers} that are not among labels {self.labels}")
        if self.selection is not None:
            self.selected()  # raises on a selection that names an unknown rule, wording or demo
        return self

    @staticmethod
    def _formats(preamble: str) -> bool:
        """render_instructions fills {label_field} with str.format: any other field would raise there."""
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(preamble) if name is not None}
            preamble.format(label_field="label")
        except (ValueError, IndexError, KeyError, AttributeError):
            return False
        return names <= {"label_field"}

    @classmethod
    def measured(cls, **fields) -> RuleSet:
        """A compile's rule set, complete: it records digests of the prompt its dev figures were measured on
        and of each rule the search scored, so that report and pick can tell an edited rules.json later."""
        draft = cls(**fields)
        digests = {"scored_prompt": draft.prompt_digest() if draft.dev_macro_f1 is not None else None}
        if draft.search is not None:
            digests["rule_digests"] = {r.id: cls.rule_digest(r) for r in draft.rules}
        return draft.model_copy(update=digests)

    def prompt_digest(self) -> str:
        """What the student sees from these rules (instructions and demos), as a short digest."""
        prompt = self.prompt()
        demos = [dict(d) for d in prompt.demos or []]
        payload = json.dumps([self.render_instructions(), demos], sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    @staticmethod
    def rule_digest(rule: Rule) -> str:
        payload = json.dumps([rule.variants(), [e.model_dump() for e in rule.examples]], sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def edited_rules(self, ids: list[str]) -> list[str]:
        """Of `ids`, the rules whose wordings or examples differ from what the compile's search scored
        (none can be told when the file records no digests)."""
        by_id = {r.id: r for r in self.rules}
        return [i for i in ids if i in self.rule_digests and i in by_id
                and self.rule_digests[i] != self.rule_digest(by_id[i])]

    def selected(self) -> list[tuple[Rule, Selection]]:
        """The rules in the prompt, in order, each with how it was chosen."""
        if self.selection is None:
            return [(r, Selection(rule_id=r.id)) for r in self.rules]
        by_id = {r.id: r for r in self.rules}
        out = []
        for sel in self.selection:
            rule = by_id.get(sel.rule_id)
            if rule is None:
                raise ValueError(f"selection names rule {sel.rule_id!r}, which is not in `rules`: a deleted rule "
                                 "goes from `selection` too (or restore it)")
            if not 0 <= sel.variant < len(rule.variants()):
                raise ValueError(f"selection picks wording {sel.variant} of rule {sel.rule_id!r}, which has "
                                 f"{len(rule.variants())}")
            bad = [d for d in sel.demos if not 0 <= d < len(rule.examples)]
            if bad or len(set(sel.demos)) != len(sel.demos):
                raise ValueError(f"selection shows examples {sel.demos} of rule {sel.rule_id!r}, which has "
                                 f"{len(rule.examples)} (each at most once)")
            out.append((rule, sel))
        return out

    def active_rules(self) -> list[str]:
        return [rule.variants()[sel.variant] for rule, sel in self.selected()]

    def prompt(self) -> Prompt:
        return prompt_of(self.rules, [sel for _, sel in self.selected()], self.label_field)

    def pick(self, max_tokens: int) -> RuleSet:
        """The best Pareto point within a prompt-token budget, as a new rule set (multi-objective search)."""
        if not self.search or not self.search.pareto:
            raise ValueError("rules.json has no Pareto front: run the search with multi_objective: true")
        fits = [c for c in self.search.pareto if c.prompt_tokens <= max_tokens]
        if not fits:
            smallest = min(c.prompt_tokens for c in self.search.pareto)
            raise ValueError(f"no Pareto point fits {max_tokens} prompt tokens; the smallest uses {smallest}")
        chosen = max(fits, key=lambda c: (c.macro_f1, -c.prompt_tokens))
        # The confusion and each rule's contribution were measured on another prompt: not carried over.
        rules = [r.model_copy(update={"contribution": None}) for r in self.rules]
        return self.model_copy(update={"selection": chosen.selection, "dev_macro_f1": chosen.macro_f1,
                                       "dev_confusion": None, "rules": rules})

    def render_instructions(self) -> str:
        return render_instructions(self.base_instructions, self.active_rules(), self.label_field, self.preamble)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(path), self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        """Plain JSON through pydantic: loading a rule file never unpickles or executes anything."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give its rules.json ({path / 'rules.json'})")
        data = read_json(path)
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def prompt_of(rules: list[Rule], selection: list[Selection], label_field: str) -> Prompt:
    """The one place a selection becomes what the student sees: the rule texts in their order and wordings,
    and each chosen example as a demo, in the order of the rules they illustrate."""
    by_id = {r.id: r for r in rules}
    texts, demos = [], []
    for sel in selection:
        rule = by_id[sel.rule_id]
        texts.append(rule.variants()[sel.variant])
        for index in sel.demos:
            example = rule.examples[index]
            demos.append(dspy.Example(**example.inputs, **{label_field: example.label}).with_inputs(*example.inputs))
    return Prompt(rules=texts, demos=demos or None)


def render_instructions(base: str, rules: list[str], label_field: str, preamble: str = DEFAULT_PREAMBLE) -> str:
    """Keep the user's task description fixed and append only the numbered rule block (dspy#1165)."""
    if not rules:
        return base
    lines = [base.rstrip(), "", preamble.format(label_field=label_field)]
    lines += [f"{i}. {' '.join(rule.split())}" for i, rule in enumerate(rules, 1)]
    return "\n".join(lines)


def split_rule_block(instructions: str, label_field: str, preamble: str = DEFAULT_PREAMBLE
                     ) -> tuple[str, list[str]] | None:
    """The inverse of `render_instructions`: (base instructions, rules) when `instructions` end in the rule
    block PLD renders, else None. A program PLD compiled is mined again from its base: with the old block in
    its task text, every rule the teacher writes reads as a copy of the task."""
    head = f"\n\n{preamble.format(label_field=label_field)}\n"
    at = instructions.rfind(head)
    if at < 0:
        return None
    lines = instructions[at + len(head):].split("\n")
    numbered = [re.fullmatch(rf"{i}\. (\S.*)", line) for i, line in enumerate(lines, 1)]
    if not all(numbered):
        return None
    return instructions[:at], [match.group(1) for match in numbered]
