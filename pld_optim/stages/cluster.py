"""Stage 2, clustering: embed the mined rules, cluster them within each gold label, drop noise.

The paper uses DBSCAN (cosine, eps 0.4, min_samples 6) on 768-d Gemini embeddings. With small local
embedders DBSCAN tends to put every rule in one cluster (or none), so k-means with k picked by
silhouette is the default here; both report their cluster count and noise share so a collapse is seen.
Merging each cluster into one instruction is the next stage (`pld_optim.stages.merge`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dspy
import numpy as np
from sklearn.cluster import DBSCAN, KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize

from pld_optim.records import ClusterReport, MinedRule, StageResult

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
    """'tfidf' (the offline default), an embedding model string (through dspy.Embedder, e.g.
    'openai/text-embedding-3-small'), or a callable texts -> vectors."""
    if spec is None or spec == "tfidf":
        return TfidfEmbedder(seed=seed)
    if isinstance(spec, str):
        return dspy.Embedder(spec)
    if callable(spec):
        return spec
    raise ValueError(f"PLD: embedder={spec!r} is neither 'tfidf', a model string nor a callable")


def cluster_vectors(vectors: np.ndarray, method: str, *, n_clusters: int | None, max_clusters: int, eps: float,
                    min_samples: int, min_cluster_size: int, seed: int,
                    quiet: bool = False) -> tuple[np.ndarray, ClusterReport]:
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


def cluster_by_label(vectors: np.ndarray, labels: list[str], method: str, *, n_clusters: int | None,
                     max_clusters: int, eps: float, min_samples: int, min_cluster_size: int,
                     seed: int) -> tuple[np.ndarray, ClusterReport]:
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


class ClusterResult(StageResult):
    model_config = {"arbitrary_types_allowed": True}
    mined: list[MinedRule]
    cluster_ids: list[int]
    vectors: np.ndarray
    report: ClusterReport


def cluster_rules(mined: list[MinedRule], embed: Embedder, *, by: str, method: str, n_clusters: int | None,
                  max_clusters: int, eps: float, min_samples: int, min_cluster_size: int,
                  seed: int) -> ClusterResult:
    """The mined rules that passed the gates, clustered; a clustering that calls every rule noise is an
    error that says which setting to change."""
    vectors = embed([m.rule for m in mined])
    options = dict(n_clusters=n_clusters, max_clusters=max_clusters, eps=eps, min_samples=min_samples,
                   min_cluster_size=min_cluster_size, seed=seed)
    if by == "label":
        ids, report = cluster_by_label(vectors, [m.gold for m in mined], method, **options)
    else:
        ids, report = cluster_vectors(vectors, method, **options)
    if report.n_clusters == 0:
        raise RuntimeError(
            f"PLD: clustering ({report.method}, {report.params}) labelled all {report.n_rules} rules "
            "as noise; lower min_samples / min_cluster_size, raise eps, or use cluster_method='kmeans'.")
    return ClusterResult(mined=mined, cluster_ids=[int(i) for i in ids], vectors=vectors, report=report)
