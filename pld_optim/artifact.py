"""The rule set PLD produces: plain pydantic data that a reviewer can read, edit and re-apply.

The artifact, not the compiled program, is the product a human audits: every rule keeps the train
examples and teacher rationales it came from, so a bad rule can be traced to its evidence and deleted
or rewritten in `rules.json` without mining again (see `apply_rules`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pld_optim.run_folder import atomic_write_text

FORMAT_VERSION = 1
DEFAULT_PREAMBLE = "Apply these rules, in order of relevance, to choose the `{label_field}`:"


class _Model(BaseModel):
    # An unknown key in an edited rules.json is a typo, not data to drop silently.
    model_config = ConfigDict(extra="forbid")


class MinedRule(_Model):
    """Stage 1 output for one train example; `error` is set instead of failing the run."""

    example_id: str
    gold: str
    rationale: str = ""
    rule: str = ""
    error: str | None = None
    inputs: str = Field("", description="the example as the teacher saw it, so provenance reads without the data")


class Refusal(_Model):
    """A teacher text a quality gate kept out of the prompt, with the reason (see pld_optim/gates.py)."""

    stage: str = Field(description="mine, merge or refine")
    source: str = Field(description="the example id, cluster or refine iteration it came from")
    text: str
    reason: str


class Rule(_Model):
    id: str
    text: str
    phrasings: list[str] = Field(default_factory=list, description="alternative wordings of `text`")
    support: list[str] = Field(default_factory=list, description="train example ids whose mined rules formed it")
    rationales: list[str] = Field(default_factory=list, description="sample teacher rationales, as provenance")
    cluster_size: int = 0
    label: str | None = Field(None, description="the gold label its mined rules shared (label-wise clustering)")
    origin: str = "cluster"
    contribution: float | None = Field(
        None, description="dev macro F1 of the final prompt minus its F1 without this rule (None: not active or "
                          "not measured); negative: the prompt does better without it")

    def variants(self) -> list[str]:
        """Index 0 is the canonical text; the search stage picks among these."""
        return [self.text, *self.phrasings]


class ClusterReport(_Model):
    method: str
    params: dict = Field(default_factory=dict)
    n_rules: int
    n_clusters: int
    n_noise: int
    noise_share: float
    cluster_sizes: list[int] = Field(default_factory=list)
    per_label: dict[str, int] = Field(default_factory=dict, description="clusters per gold label")


class RefineIteration(_Model):
    iteration: int
    rules: list[str]
    dev_macro_f1: float
    n_failures: int = 0
    n_successes: int = 0
    accepted: bool = True
    note: str = ""


class StageUsage(_Model):
    stage: str
    lm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    failures: int = 0
    by_model: dict[str, int] = Field(default_factory=dict, description="LM calls per model string")


class Selection(_Model):
    """One rule in the chosen prompt: which rule, and which of its variants."""

    rule_id: str
    variant: int = 0


class Candidate(_Model):
    selection: list[Selection]
    macro_f1: float
    prompt_tokens: int
    trial: int


class SearchResult(_Model):
    best: Candidate
    pareto: list[Candidate] = Field(default_factory=list, description="multi-objective: F1 vs prompt tokens")
    n_trials: int
    n_pruned: int
    n_repaired: int = Field(0, description="trials whose lowest-ranked rules were dropped to fit the budget")
    token_counter: str
    student_calls: int = 0
    history: list[tuple[int, float | None, int]] = Field(
        default_factory=list, description="per trial in order: number, dev macro F1 (None if pruned), student calls")


class RuleSet(_Model):
    format_version: int = FORMAT_VERSION
    predictor: str
    label_field: str
    labels: list[str]
    base_instructions: str
    preamble: str = DEFAULT_PREAMBLE
    rules: list[Rule]
    selection: list[Selection] | None = Field(
        default=None, description="ordered subset chosen by search; None means every rule in listed order"
    )
    system_prompt: str = ""
    baseline_dev_macro_f1: float | None = None
    dev_macro_f1: float | None = None
    baseline_dev_confusion: list[list[int]] | None = Field(
        None, description="dev confusion matrix without rules: rows gold (`labels` order), columns the labels, "
                          "then answers outside them")
    dev_confusion: list[list[int]] | None = Field(None, description="the same with the chosen rules")
    clustering: ClusterReport | None = None
    history: list[RefineIteration] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list, description="teacher texts the quality gates refused")
    search: SearchResult | None = None
    usage: list[StageUsage] = Field(default_factory=list)
    seed: int | None = None

    def active_rules(self) -> list[str]:
        if self.selection is None:
            return [r.text for r in self.rules]
        return texts_of(self.rules, self.selection, where="rules.json: ")

    def pick(self, max_tokens: int) -> RuleSet:
        """The best Pareto point within a prompt-token budget, as a new rule set (multi-objective search)."""
        if not self.search or not self.search.pareto:
            raise ValueError("rules.json has no Pareto front: run the search with multi_objective: true")
        fits = [c for c in self.search.pareto if c.prompt_tokens <= max_tokens]
        if not fits:
            smallest = min(c.prompt_tokens for c in self.search.pareto)
            raise ValueError(f"no Pareto point fits {max_tokens} prompt tokens; the smallest uses {smallest}")
        chosen = max(fits, key=lambda c: (c.macro_f1, -c.prompt_tokens))
        return self.model_copy(update={"selection": chosen.selection, "dev_macro_f1": chosen.macro_f1})

    def render_instructions(self) -> str:
        return render_instructions(self.base_instructions, self.active_rules(), self.label_field, self.preamble)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(path), self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        """Plain JSON through pydantic: loading a rule file never unpickles or executes anything."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc
        return cls.model_validate(data)


def texts_of(rules: list[Rule], selection: list[Selection], where: str = "") -> list[str]:
    """The rule texts a selection puts in the prompt, in its order and wordings: the one place a selection
    becomes text (search trials, the final score, rules.json)."""
    by_id = {r.id: r for r in rules}
    out = []
    for sel in selection:
        if sel.rule_id not in by_id:
            raise ValueError(f"{where}selection names rule {sel.rule_id!r}, which is not in `rules`")
        variants = by_id[sel.rule_id].variants()
        if not 0 <= sel.variant < len(variants):
            raise ValueError(f"{where}selection picks variant {sel.variant} of rule {sel.rule_id!r}, "
                             f"which has {len(variants)} variants")
        out.append(variants[sel.variant])
    return out


def render_instructions(base: str, rules: list[str], label_field: str, preamble: str = DEFAULT_PREAMBLE) -> str:
    """Keep the user's task description fixed and append only the numbered rule block (dspy#1165)."""
    if not rules:
        return base
    lines = [base.rstrip(), "", preamble.format(label_field=label_field)]
    lines += [f"{i}. {' '.join(rule.split())}" for i, rule in enumerate(rules, 1)]
    return "\n".join(lines)
