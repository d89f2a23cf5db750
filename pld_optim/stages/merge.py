"""Stage 2b, merging: the teacher turns each cluster of mined rules into one instruction and its rewordings.

Every text the teacher writes passes the quality gates. The cluster's most central mined rules are kept
as further wordings (with a weak teacher the merge can be worse than its inputs, and the search lets the
student choose), and the cluster's examples become the rule's demo candidates, the student's own
mistakes first.
"""

from __future__ import annotations

import logging

import dspy
import numpy as np
from dspy.utils.parallelizer import ParallelExecutor

from pld_optim.lm.adapter import rule_format
from pld_optim.records import MinedRule, Refusal, StageResult
from pld_optim.rules import DemoExample, Rule
from pld_optim.stages.cluster import ClusterResult
from pld_optim.stages.context import StageContext
from pld_optim.stages.gates import Gate
from pld_optim.stages.rule_form import first_answer, mentions

logger = logging.getLogger(__name__)

N_MEMBER_VARIANTS = 2  # central mined rules kept as wordings
MAX_RULES_SHOWN = 30  # mined rules shown to the teacher per merge


class MergeRules(dspy.Signature):
    """Merge labelling rules that all lead to the same label into ONE general rule a small model can follow.
    Keep the cue they share, stated as a general category; drop the details of single examples; never name
    a specific person, group, nationality, religion, organisation or place. Then write the same rule again
    in other words."""

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    label: str = dspy.InputField(desc="the label these rules lead to")
    rules: list[str] = dspy.InputField(desc="rules from one cluster")
    n_phrasings: int = dspy.InputField(desc="how many other wordings to write")
    instruction: str = dspy.OutputField(desc="one sentence that starts with 'If' and ends with the label")
    phrasings: list[str] = dspy.OutputField(desc="other wordings of the same rule")


class MergeResult(StageResult):
    rules: list[Rule]


def merge_clusters(ctx: StageContext, clusters: ClusterResult) -> MergeResult:
    """One teacher call per cluster. A refused or failed merge falls back to a wording that passes, else to
    the cluster's most central mined rule (which passed the gates when it was mined), and counts as failed."""
    task, gate, n_phrasings = ctx.task, ctx.gate, ctx.params.n_phrasings
    merger = dspy.Predict(MergeRules)
    ids = np.asarray(clusters.cluster_ids)
    vectors = clusters.vectors

    def merge_one(c: int) -> tuple[Rule, bool, list[Refusal]]:
        members = [i for i, cid in enumerate(ids) if cid == c]
        centroid = vectors[members].mean(axis=0)
        members.sort(key=lambda i: -float(vectors[i] @ centroid))  # most central first
        mined = [clusters.mined[i] for i in members]
        golds = [m.gold for m in mined]
        label = max(dict.fromkeys(golds), key=golds.count)
        examples = [ctx.inputs[m.example_id] for m in mined if m.example_id in ctx.inputs]
        texts = [m.rule for m in mined[:MAX_RULES_SHOWN]]
        refused: list[Refusal] = []
        candidates, failed = [], False
        try:
            with dspy.context(lm=ctx.teacher):
                out = merger(task=task.signature.instructions, labels=", ".join(task.labels), label=label,
                             rules=texts, n_phrasings=n_phrasings,
                             config=rule_format(ctx.teacher, MergeRules, "instruction", label))
            if not isinstance(out.phrasings, list):  # one string is one phrasing, never a list of characters
                raise ValueError(f"phrasings is a {type(out.phrasings).__name__}, not a list")
            candidates = [first_answer(with_label(" ".join(str(t).split()), label, gate), label)
                          for t in [out.instruction, *out.phrasings] if str(t or "").strip()]
        except Exception as exc:  # noqa: BLE001 - a failed merge is counted, never fatal
            logger.warning("cluster %d: merge failed (%s); using its most central rule", c, exc)
            failed = True
        source = f"cluster {c + 1} ({label})"
        good = [t for t in dict.fromkeys(candidates) if _passes(t, label, examples, gate, source, refused)]
        variants = list(dict.fromkeys((good or texts[:1]) + texts[:N_MEMBER_VARIANTS]))
        rule = Rule(
            id=f"R{c + 1}", text=variants[0], phrasings=variants[1:1 + n_phrasings + N_MEMBER_VARIANTS],
            cluster_size=len(members), support=[m.example_id for m in mined], label=label,
            rationales=[m.rationale for m in mined[:3] if m.rationale],
            examples=demo_candidates(mined, ctx.demo_pool, label, ctx.params.n_demo_candidates), stage="cluster",
            origin="cluster" if good else "cluster (merge failed or refused: most central mined rule)")
        return rule, failed or not good, refused

    numbers = sorted(c for c in set(ids.tolist()) if c >= 0)
    executor = ParallelExecutor(num_threads=ctx.params.num_threads, max_errors=len(numbers) + 1,
                                disable_progress_bar=not ctx.progress)
    merged = executor.execute(merge_one, numbers)
    return MergeResult(rules=dedupe([r for r, _, _ in merged]), failures=sum(f for _, f, _ in merged),
                       refusals=[x for _, _, refused in merged for x in refused])


def _passes(text: str, label: str, examples: list[str], gate: Gate, source: str, refused: list[Refusal]) -> bool:
    verdict = gate.check(text, examples, copied_from=[MergeRules.__doc__], label=label, whose="its cluster's")
    if verdict:
        refused.append(verdict.refusal("merge", source, text))
    return verdict is None


def demo_candidates(mined: list[MinedRule], pool: dict[str, DemoExample], label: str, n: int) -> list[DemoExample]:
    """The rule's worked-example candidates: examples of its label the student got wrong zero-shot first
    (the confusion the rule addresses), then the cluster's most central examples."""
    ordered = sorted((m for m in mined if m.gold == label), key=lambda m: m.predicted is None)
    return [pool[m.example_id] for m in ordered if m.example_id in pool][:n]


def with_label(text: str, label: str, gate: Gate) -> str:
    """Repair a merged statement that names no label: every rule of the cluster led to `label`, so "The
    sentence ties a trait to a job." becomes "If the sentence ties a trait to a job, answer profession."."""
    if not text or any(mentions(text, x) for x in gate.labels) or text.lower().startswith("if "):
        return text
    body = text.strip().rstrip(".")
    return f"If {body[0].lower()}{body[1:]}, answer {label}."


def dedupe(rules: list[Rule]) -> list[Rule]:
    """Clusters the teacher merged into the same text become one rule with their support combined."""
    by_text: dict[str, Rule] = {}
    for rule in rules:
        key = " ".join(rule.text.lower().split())
        if key not in by_text:
            by_text[key] = rule
            continue
        kept = by_text[key]
        kept.support += rule.support
        kept.cluster_size += rule.cluster_size
        kept.rationales = (kept.rationales + rule.rationales)[:3]
        kept.phrasings = list(dict.fromkeys(kept.phrasings + rule.phrasings))
        kept.examples = list({e.id: e for e in kept.examples + rule.examples}.values())
        kept.origin = f"{kept.origin}; merged with {rule.id} (same text)"
    return list(by_text.values())
