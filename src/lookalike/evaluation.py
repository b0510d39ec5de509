"""Search quality: every query photo against the rest of the collection, relevance = same category.

AP@k (the definition used throughout, see docs/evaluation.md): for a ranked list with relevance
rel_1..rel_k (the query itself left out),

    AP@k = sum_i P@i * rel_i / (number of relevant items in the top k),   and 0 when there are none,

where P@i is the fraction of relevant items among the first i. mAP@k is its mean over queries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lookalike.collection import Collection, CollectionError
from lookalike.index.base import top_k

PRECISION_AT = (1, 5, 10)


def average_precision_at_k(relevant: np.ndarray) -> np.ndarray:
    """(q, k) booleans, best result first -> (q,) AP@k, normalised by the relevant items retrieved."""
    rel = np.asarray(relevant, np.float64)
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    found = hits[:, -1] if rel.shape[1] else np.zeros(len(rel))
    return np.divide((precision * rel).sum(axis=1), found, out=np.zeros(len(rel)), where=found > 0)


def exact_neighbours(
    queries: np.ndarray, query_ids: np.ndarray, base: np.ndarray, base_ids: np.ndarray, k: int, chunk: int = 512
) -> np.ndarray:
    """(q, k) positions in `base` of each query's k nearest by inner product, the query's own id left
    out; -1 where there are fewer than k others."""
    out = np.empty((len(queries), k), np.int64)
    positions = np.arange(len(base_ids))
    for start in range(0, len(queries), chunk):
        scores = np.asarray(queries[start : start + chunk], np.float32) @ np.asarray(base, np.float32).T
        scores[query_ids[start : start + chunk, None] == base_ids[None, :]] = -np.inf
        found, best = top_k(scores, positions, k)
        out[start : start + chunk] = np.where(np.isneginf(best), -1, found)  # fewer than k others
    return out


@dataclass
class Evaluation:
    """Metrics of one run, plus the rankings themselves (for the report)."""

    k: int
    categories: list[str]  # category name of each label number
    query_ids: np.ndarray  # (q,) item ids
    query_labels: np.ndarray  # (q,) label numbers
    neighbour_ids: np.ndarray  # (q, max(k, 10)) item ids, best first
    neighbour_labels: np.ndarray  # (q, max(k, 10)) label numbers, -1 for items without a category
    ap: np.ndarray  # (q,) AP@k
    extra: dict[str, Any] = field(default_factory=dict)  # backend recall and latency, when measured

    @property
    def relevant(self) -> np.ndarray:
        return self.neighbour_labels == self.query_labels[:, None]

    def precision(self, n: int) -> float:
        return float(self.relevant[:, :n].mean()) if len(self.ap) else 0.0

    @property
    def map(self) -> float:
        return float(self.ap.mean()) if len(self.ap) else 0.0

    def per_category(self) -> dict[str, dict[str, float | int]]:
        out: dict[str, dict[str, float | int]] = {}
        for label in np.unique(self.query_labels):
            mine = self.query_labels == label
            out[self.categories[label]] = {"map@k": round(float(self.ap[mine].mean()), 6), "n": int(mine.sum())}
        return dict(sorted(out.items()))

    def confusions(self) -> list[tuple[str, str, int]]:
        """(query category, result category, count) of wrong-category results in the top k, most first."""
        wrong = ~self.relevant[:, : self.k] & (self.neighbour_labels[:, : self.k] >= 0)
        pairs = np.stack([np.repeat(self.query_labels, self.k)[wrong.ravel()], self.neighbour_labels[:, : self.k][wrong]])
        found, counts = np.unique(pairs, axis=1, return_counts=True) if pairs.size else (np.zeros((2, 0), int), [])
        order = np.argsort(-np.asarray(counts), kind="stable")
        return [(self.categories[found[0, i]], self.categories[found[1, i]], int(counts[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"queries": int(len(self.ap)), "k": self.k, "map@k": round(self.map, 6)}
        for n in PRECISION_AT:
            out[f"precision@{n}"] = round(self.precision(n), 6)
        out["per_category"] = self.per_category()
        out.update(self.extra)
        return out


def evaluate_vectors(
    vectors: np.ndarray,
    labels: Sequence[str | None],
    ids: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    k: int = 10,
) -> Evaluation:
    """Every item (or those whose positions are in `queries`) searched exactly against all others.

    Items without a category are searched over but never used as queries.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    vectors = np.asarray(vectors, np.float32)
    ids = np.arange(len(vectors)) if ids is None else np.asarray(ids, np.int64)
    categories = sorted({c for c in labels if c is not None})
    number = {c: i for i, c in enumerate(categories)}
    label_array = np.asarray([number.get(c, -1) if c is not None else -1 for c in labels], np.int64)
    positions = np.arange(len(vectors)) if queries is None else np.asarray(queries, np.int64)
    positions = positions[label_array[positions] >= 0]
    depth = max(k, max(PRECISION_AT))
    near = exact_neighbours(vectors[positions], ids[positions], vectors, ids, min(depth, len(vectors)))
    neighbour_labels = np.full((len(positions), depth), -2, np.int64)  # -2: no such result (tiny collections)
    neighbour_labels[:, : near.shape[1]] = np.where(near >= 0, label_array[np.maximum(near, 0)], -2)
    neighbour_ids = np.full((len(positions), depth), -1, np.int64)
    neighbour_ids[:, : near.shape[1]] = np.where(near >= 0, ids[np.maximum(near, 0)], -1)
    query_labels = label_array[positions]
    ap = average_precision_at_k(neighbour_labels[:, :k] == query_labels[:, None])
    return Evaluation(k, categories, ids[positions], query_labels, neighbour_ids, neighbour_labels, ap)


def collection_arrays(collection: Collection) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str]]:
    """(ids, vectors, categories, relative paths 'category/file') of every item, the vectors as stored."""
    items = list(collection.items())
    ids = np.asarray([i.id for i in items], np.int64)
    vectors = np.stack([collection.vector_of(i.id) for i in items]) if items else np.zeros((0, collection.dim))
    relative = [str(Path(i.path).relative_to(i.root)) if i.path.startswith(i.root) else i.path for i in items]
    return ids, vectors, [i.category for i in items], relative


def backend_check(collection: Collection, evaluation: Evaluation, vectors: np.ndarray, position: dict[int, int],
                  sample: int = 200, seed: int = 0) -> dict[str, Any]:
    """The collection's own index against exact search on a sample of queries: recall@k and median latency."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(evaluation.query_ids), size=min(sample, len(evaluation.query_ids)), replace=False)
    recalls, seconds = [], []
    for q in chosen:
        query_id = int(evaluation.query_ids[q])
        started = time.perf_counter()
        results = collection.search_vector(vectors[position[query_id]], k=evaluation.k + 1)
        seconds.append(time.perf_counter() - started)
        got = {r.id for r in results if r.id != query_id}
        truth = {int(i) for i in evaluation.neighbour_ids[q, : evaluation.k] if i >= 0}
        recalls.append(len(got & truth) / max(len(truth), 1))
    return {
        "backend": collection.manifest["index"]["backend"],
        f"recall@{evaluation.k}": round(float(np.mean(recalls)), 6) if recalls else None,
        "median_latency_ms": round(float(np.median(seconds)) * 1000, 3) if seconds else None,
    }


def evaluate_collection(
    collection: Collection, k: int = 10, query_paths: set[str] | None = None, latency_sample: int = 200
) -> Evaluation:
    """Evaluate a collection's stored vectors; `query_paths` (relative 'category/file' paths, e.g. a
    saved test split) limits the queries, which are still searched against the whole collection."""
    ids, vectors, categories, relative = collection_arrays(collection)
    queries = None
    if query_paths is not None:
        queries = np.asarray([n for n, p in enumerate(relative) if p in query_paths], np.int64)
        if len(queries) == 0:
            raise CollectionError(f"none of the {len(query_paths)} split photos is in {collection.path}")
    evaluation = evaluate_vectors(vectors, categories, ids, queries, k)
    if len(evaluation.query_ids) == 0:
        raise CollectionError(f"{collection.path} has no photos in categories (subfolders) to use as queries")
    if latency_sample:
        position = {int(i): n for n, i in enumerate(ids)}
        evaluation.extra = backend_check(collection, evaluation, vectors, position, latency_sample)
    return evaluation


def summary_lines(evaluation: Evaluation, worst: int = 5) -> list[str]:
    """A few lines for the terminal: the overall figures and the worst-served categories."""
    d = evaluation.to_dict()
    lines = [f"queries      {d['queries']} (relevant = same category, query left out)",
             f"mAP@{d['k']:<8} {d['map@k']:.3f}",
             "precision    " + "  ".join(f"@{n} {d[f'precision@{n}']:.3f}" for n in PRECISION_AT)]
    if evaluation.extra:
        recall = evaluation.extra.get(f"recall@{evaluation.k}")
        lines.append(f"index        {evaluation.extra['backend']}: recall@{evaluation.k} {recall:.3f} vs exact, "
                     f"median query {evaluation.extra['median_latency_ms']:.2f} ms")
    ranked = sorted(d["per_category"].items(), key=lambda kv: kv[1]["map@k"])[:worst]
    lines.append("worst categories (mAP@k, queries):")
    lines += [f"  {v['map@k']:.3f}  {v['n']:>5}  {name}" for name, v in ranked]
    return lines
