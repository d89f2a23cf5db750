"""Stage 2: embed the mined rules, cluster them, drop noise, and let the teacher merge each cluster.

The paper uses DBSCAN (cosine, eps 0.4, min_samples 6) on 768-d Gemini embeddings. With small local
embedders DBSCAN tends to put every rule in one cluster (or none), so k-means with k picked by
silhouette is the default here; both report their cluster count and noise share so a collapse is seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dspy
import numpy as np
from dspy.utils.parallelizer import ParallelExecutor
from sklearn.cluster import DBSCAN, KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize

from pld_optim.artifact import ClusterReport, MinedRule, Refusal, Rule
from pld_optim.gates import Gate, mentions
from pld_optim.task import Task

logger = logging.getLogger(__name__)

Embedder = Callable[[list[str]], np.ndarray]


class TfidfEmbedder:
    """Local, offline default: TF-IDF over word n-grams reduced by SVD (LSA), L2-normalised."""

    def __init__(self, n_components: int = 64, seed: int = 0):
        self.n_components = n_components
        self.seed = seed

    def __call__(self, texts: list[str]) -> np.ndarray:
        tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english").fit_transform(texts)
        k = min(self.n_components, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
        if k < 2:
            return normalize(tfidf.toarray())
        return normalize(TruncatedSVD(n_components=k, random_state=self.seed).fit_transform(tfidf))


def make_embedder(spec: str | Embedder | None, seed: int = 0) -> Embedder:
    """'tfidf' (default), any dspy.Embedder / litellm embedding model string, or a callable."""
    if spec is None or spec == "tfidf":
        return TfidfEmbedder(seed=seed)
    if isinstance(spec, str):
        return dspy.Embedder(spec)
    if callable(spec):
        return spec
    raise ValueError(f"PLD: embedder={spec!r} is neither 'tfidf', a model string nor a callable")


def cluster_vectors(
    vectors: np.ndarray,
    method: str = "kmeans",
    *,
    n_clusters: int | None = None,
    max_clusters: int = 12,
    eps: float = 0.4,
    min_samples: int = 6,
    min_cluster_size: int = 2,
    seed: int = 0,
    quiet: bool = False,
) -> tuple[np.ndarray, ClusterReport]:
    """Cluster ids per vector, -1 for noise. Small k-means clusters count as noise, like DBSCAN's."""
    n = len(vectors)
    vectors = normalize(np.asarray(vectors, dtype=float))
    if method == "dbscan":
        params = {"eps": eps, "min_samples": min_samples, "metric": "cosine"}
        labels = DBSCAN(**params).fit_predict(vectors)
    elif method == "kmeans":
        if n < 2 * min_cluster_size:  # too few rules to split them: one cluster
            labels = np.zeros(n, dtype=int)
            params = {"k": 1 if n else 0}
        else:
            k = n_clusters or _pick_k(vectors, min(max_clusters, n // min_cluster_size), seed)
            k = max(1, min(k, n))
            params = {"k": k, "chosen_by": "user" if n_clusters else "silhouette", "min_cluster_size": min_cluster_size}
            labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)
            sizes = np.bincount(labels)
            labels = np.where(sizes[labels] < min_cluster_size, -1, labels)
    else:
        raise ValueError(f"PLD: cluster_method={method!r}; choose 'kmeans' or 'dbscan'")
    labels = _renumber(labels)
    sizes = [int((labels == c).sum()) for c in range(labels.max() + 1)] if n and labels.max() >= 0 else []
    n_noise = int((labels == -1).sum())
    report = ClusterReport(method=method, params=params, n_rules=n, n_clusters=len(sizes), n_noise=n_noise,
                           noise_share=round(n_noise / n, 4) if n else 0.0, cluster_sizes=sizes)
    if quiet:
        return labels, report
    logger.info("cluster: %s gave %d clusters from %d rules, %.0f%% noise, sizes %s",
                method, report.n_clusters, n, 100 * report.noise_share, sizes)
    if report.n_clusters == 1 and n >= 10:
        logger.warning("cluster: every rule fell in one cluster; try cluster_method='kmeans' or a smaller eps")
    return labels, report


def cluster_by_label(
    vectors: np.ndarray,
    labels: list[str],
    method: str = "kmeans",
    *,
    n_clusters: int | None = None,
    max_clusters: int = 3,
    eps: float = 0.4,
    min_samples: int = 6,
    min_cluster_size: int = 2,
    seed: int = 0,
) -> tuple[np.ndarray, ClusterReport]:
    """Cluster the rules of each gold label separately.

    Mined rules are label-conditioned: a rule for `race` and one for `religion` can share most words
    ("If the target is a ... group") and still must never be merged. Clustering across labels let
    k-by-silhouette pick k = 2 for a 4-label task; within labels, every label keeps at least one
    instruction when it has `min_cluster_size` rules. `n_clusters` and `max_clusters` apply per label.
    """
    ids = np.full(len(vectors), -1, dtype=int)
    per_label, params, offset = {}, {}, 0
    for label in dict.fromkeys(labels):
        members = [i for i, x in enumerate(labels) if x == label]
        sub, report = cluster_vectors(vectors[members], method, n_clusters=n_clusters, max_clusters=max_clusters,
                                      eps=eps, min_samples=min_samples, min_cluster_size=min_cluster_size, seed=seed,
                                      quiet=True)
        ids[members] = np.where(sub >= 0, sub + offset, -1)
        per_label[label] = report.n_clusters
        params[label] = report.params
        offset += report.n_clusters
    ids = _renumber(ids)
    sizes = [int((ids == c).sum()) for c in range(ids.max() + 1)] if len(ids) and ids.max() >= 0 else []
    n_noise = int((ids == -1).sum())
    report = ClusterReport(method=f"{method} per label", params=params, n_rules=len(ids), n_clusters=len(sizes),
                           n_noise=n_noise, noise_share=round(n_noise / len(ids), 4) if len(ids) else 0.0,
                           cluster_sizes=sizes, per_label=per_label)
    logger.info("cluster: %s gave %d clusters from %d rules (per label %s), %.0f%% noise",
                report.method, report.n_clusters, len(ids), per_label, 100 * report.noise_share)
    return ids, report


def _pick_k(vectors: np.ndarray, max_clusters: int, seed: int) -> int:
    n = len(vectors)
    candidates = range(2, min(max_clusters, n - 1) + 1)
    best_k, best = 1, -1.0
    for k in candidates:
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vectors)
        if len(set(labels)) < 2:
            continue
        score = silhouette_score(vectors, labels, metric="cosine")
        if score > best + 1e-9:
            best_k, best = k, score
    return best_k


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Largest cluster first, so rule ids follow support."""
    ids = [c for c in np.unique(labels) if c >= 0]
    order = sorted(ids, key=lambda c: (-(labels == c).sum(), c))
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping.get(c, -1) for c in labels], dtype=int)


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


def consolidate(
    mined: list[MinedRule],
    cluster_ids: np.ndarray,
    vectors: np.ndarray,
    task: Task,
    teacher: dspy.LM,
    *,
    gate: Gate,
    inputs: dict[str, str],
    n_phrasings: int = 2,
    n_member_variants: int = 2,
    max_rules_per_merge: int = 30,
    num_threads: int = 4,
    progress: bool = False,
) -> tuple[list[Rule], int, list[Refusal]]:
    """One teacher call per cluster; every text it writes passes the quality gates.

    A refused or failed merge falls back to a phrasing that passes, else to the cluster's most central
    mined rule (which passed the gates when it was mined); the merge is then counted as failed. The
    `n_member_variants` most central mined rules are kept as alternative phrasings either way. `inputs`
    maps example ids to their input text, what the entity gate checks a rule against.
    """
    merger = dspy.Predict(MergeRules)
    clusters = sorted(c for c in set(cluster_ids.tolist()) if c >= 0)

    def merge(c: int) -> tuple[Rule, bool, list[Refusal]]:
        members = [i for i, cid in enumerate(cluster_ids) if cid == c]
        centroid = vectors[members].mean(axis=0)
        members.sort(key=lambda i: -float(vectors[i] @ centroid))  # most central first
        shown = members[:max_rules_per_merge]
        texts = [mined[i].rule for i in shown]
        golds = [mined[i].gold for i in members]
        label = max(dict.fromkeys(golds), key=golds.count)
        examples = [inputs[mined[i].example_id] for i in members if mined[i].example_id in inputs]
        source, refused = f"cluster {c + 1} ({label})", []

        def passes(text: str) -> bool:
            reason = gate.check(text, examples, copied_from=[MergeRules.__doc__])
            if reason is None and not mentions(text, label):
                reason = f"does not name its cluster's label {label!r}"
            if reason:
                refused.append(Refusal(stage="merge", source=source, text=text, reason=reason))
            return reason is None

        failed, candidates = False, []
        try:
            with dspy.context(lm=teacher):
                out = merger(task=task.signature.instructions, labels=", ".join(task.labels), label=label,
                             rules=texts, n_phrasings=n_phrasings)
            if not isinstance(out.phrasings, list):  # one string is one phrasing, never a list of characters
                raise ValueError(f"phrasings is a {type(out.phrasings).__name__}, not a list")
            candidates = [with_label(" ".join(str(t).split()), label, gate)
                          for t in [out.instruction, *out.phrasings] if str(t or "").strip()]
        except Exception as exc:  # noqa: BLE001 - a failed merge is counted, never fatal
            logger.warning("cluster %d: merge failed (%s); using its most central rule", c, exc)
            failed = True
        good = [t for t in dict.fromkeys(candidates) if passes(t)]
        failed = failed or not good
        # The cluster's most central mined rules (they passed the gates when mined) are variants too: with a
        # weak teacher the merge can be worse than its inputs, and the search lets the student choose.
        variants = list(dict.fromkeys((good or texts[:1]) + texts[:n_member_variants]))
        rule = Rule(
            id=f"R{c + 1}", text=variants[0], phrasings=variants[1:1 + n_phrasings + n_member_variants],
            cluster_size=len(members),
            support=[mined[i].example_id for i in members], label=label,
            rationales=[mined[i].rationale for i in shown[:3] if mined[i].rationale],
            origin="cluster" if good else "cluster (merge failed or refused: most central mined rule)",
        )
        return rule, failed, refused

    executor = ParallelExecutor(num_threads=num_threads, max_errors=len(clusters) + 1,
                                disable_progress_bar=not progress)
    merged = executor.execute(merge, clusters)
    return (dedupe([r for r, _, _ in merged]), sum(failed for _, failed, _ in merged),
            [x for _, _, refused in merged for x in refused])


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
        kept.origin = f"{kept.origin}; merged with {rule.id} (same text)"
    return list(by_text.values())
