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

from pld_optim.artifact import ClusterReport, MinedRule, Rule
from pld_optim.mine import degenerate, restates
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
) -> tuple[np.ndarray, ClusterReport]:
    """Cluster ids per vector, -1 for noise. Small k-means clusters count as noise, like DBSCAN's."""
    n = len(vectors)
    vectors = normalize(np.asarray(vectors, dtype=float))
    if method == "dbscan":
        params = {"eps": eps, "min_samples": min_samples, "metric": "cosine"}
        labels = DBSCAN(**params).fit_predict(vectors)
    elif method == "kmeans":
        if n < 2:
            labels = np.zeros(n, dtype=int)
            params = {"k": 1}
        else:
            k = n_clusters or _pick_k(vectors, max_clusters, seed)
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
    logger.info("cluster: %s gave %d clusters from %d rules, %.0f%% noise, sizes %s",
                method, report.n_clusters, n, 100 * report.noise_share, sizes)
    if report.n_clusters == 1 and n >= 10:
        logger.warning("cluster: every rule fell in one cluster; try cluster_method='kmeans' or a smaller eps")
    return labels, report


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
    """Merge related labelling rules, written by an expert from single examples, into ONE clear, general
    instruction a small model can follow to choose the label. Keep the decisive cues and any exception;
    resolve contradictions in favour of the majority; no names of specific people, groups or products.
    Then write alternative phrasings of that instruction with the same meaning."""

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    rules: list[str] = dspy.InputField(desc="rules from one cluster")
    n_phrasings: int = dspy.InputField(desc="how many alternative phrasings to write")
    instruction: str = dspy.OutputField(desc="one or two sentences")
    phrasings: list[str] = dspy.OutputField(desc="alternative phrasings, same meaning")


def consolidate(
    mined: list[MinedRule],
    cluster_ids: np.ndarray,
    vectors: np.ndarray,
    task: Task,
    teacher: dspy.LM,
    *,
    n_phrasings: int = 2,
    max_rules_per_merge: int = 30,
    num_threads: int = 4,
    progress: bool = False,
) -> tuple[list[Rule], int]:
    """One teacher call per cluster. A failed merge falls back to the cluster's medoid rule, counted."""
    merger = dspy.Predict(MergeRules)
    clusters = sorted(c for c in set(cluster_ids.tolist()) if c >= 0)

    def merge(c: int) -> tuple[Rule, bool]:
        members = [i for i, cid in enumerate(cluster_ids) if cid == c]
        centroid = vectors[members].mean(axis=0)
        members.sort(key=lambda i: -float(vectors[i] @ centroid))  # most central first
        shown = members[:max_rules_per_merge]
        texts = [mined[i].rule for i in shown]
        failed = False
        try:
            with dspy.context(lm=teacher):
                out = merger(task=task.signature.instructions, labels=", ".join(task.labels), rules=texts,
                             n_phrasings=n_phrasings)
            text = " ".join(str(out.instruction or "").split())
            phrasings = [" ".join(str(p).split()) for p in (out.phrasings or []) if str(p).strip()]
            if not text:
                raise ValueError("teacher returned an empty instruction")
            if degenerate(text):
                raise ValueError("teacher's merged instruction repeats itself")
            if restates(text, MergeRules.__doc__):
                raise ValueError("teacher echoed the merge instructions instead of merging")
        except Exception as exc:  # noqa: BLE001
            logger.warning("cluster %d: merge failed (%s); using its most central rule", c, exc)
            text, phrasings, failed = texts[0], texts[1:1 + n_phrasings], True
        phrasings = [p for p in dict.fromkeys(phrasings) if p != text][:n_phrasings]
        rule = Rule(
            id=f"R{c + 1}", text=text, phrasings=phrasings, cluster_size=len(members),
            support=[mined[i].example_id for i in members],
            rationales=[mined[i].rationale for i in shown[:3] if mined[i].rationale],
        )
        return rule, failed

    executor = ParallelExecutor(num_threads=num_threads, max_errors=len(clusters) + 1,
                                disable_progress_bar=not progress)
    merged = executor.execute(merge, clusters)
    return dedupe([r for r, _ in merged]), sum(failed for _, failed in merged)


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
