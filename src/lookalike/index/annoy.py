"""Annoy random-projection forests: a compact .ann file, memory-mapped when opened.

Annoy cannot add items to a built index, so any change rebuilds it from the vectors (the collection
rebuilds from its stored vector file; never by embedding images again). Annoy's angular distance
d between unit vectors gives the cosine as 1 - d^2 / 2.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex as AnnoyForest
from tqdm import tqdm

from lookalike.index.base import Index, IndexFileError, atomic_path, commit_file, pack


class AnnoyIndex(Index):
    backend = "annoy"
    build_params = {"trees": 100}
    search_params = {"search_k": -1}  # nodes inspected per query; -1 = Annoy's default, trees * k
    incremental = False

    def __init__(self, dim: int, **params) -> None:
        super().__init__(dim, **params)
        self._forest: AnnoyForest | None = None
        self._ids = np.zeros(0, np.int64)  # Annoy item i is id self._ids[i]

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def build(self, ids: np.ndarray, vectors: np.ndarray, progress: bool = False) -> None:
        forest = AnnoyForest(self.dim, "angular")
        forest.set_seed(1)
        for n in tqdm(range(len(ids)), unit="vec", desc="annoy index", disable=not progress, smoothing=0.1):
            forest.add_item(n, vectors[n])
        forest.build(int(self.params["trees"]), n_jobs=-1)
        self._forest, self._ids = forest, np.asarray(ids, np.int64).copy()

    def _vectors(self) -> np.ndarray:
        return np.asarray([self._forest.get_item_vector(n) for n in range(len(self._ids))], np.float32).reshape(
            -1, self.dim
        )

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Rebuild with the items kept (their vectors read back from the forest) plus these."""
        ids = np.asarray(ids, np.int64)
        keep = ~np.isin(self._ids, ids)
        self.build(
            np.concatenate([self._ids[keep], ids]), np.concatenate([self._vectors()[keep], np.asarray(vectors)])
        )

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, ids)
        if not keep.all():
            self.build(self._ids[keep], self._vectors()[keep])

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        n = len(self._ids)
        if n == 0:
            return pack([([], [])] * len(queries), k)
        mask = None if allowed is None else np.isin(self._ids, allowed)
        return pack([self._one(q, k, mask) for q in queries], k)

    def _one(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[list[int], list[float]]:
        total = len(self._ids)
        search_k = int(self.params["search_k"])
        if mask is None:
            return self._nearest(query, min(k, total), search_k)
        allowed = int(mask.sum())
        if allowed == 0:
            return [], []
        ask = min(total, math.ceil(2 * k * total / allowed))  # over-fetch in proportion to what is filtered out
        while True:
            positions, scores = self._nearest(query, ask, search_k * ask // k if search_k > 0 else -1, raw=True)
            keep = mask[positions]
            if keep.sum() >= min(k, allowed) or ask >= total:
                return self._ids[positions[keep]][:k].tolist(), scores[keep][:k].tolist()
            ask = min(total, ask * 4)

    def _nearest(self, query: np.ndarray, n: int, search_k: int, raw: bool = False):
        positions, distances = self._forest.get_nns_by_vector(query, n, search_k=search_k, include_distances=True)
        positions = np.asarray(positions, np.int64)
        scores = 1.0 - np.square(np.asarray(distances, np.float32)) / 2.0
        return (positions, scores) if raw else (self._ids[positions].tolist(), scores.tolist())

    def save(self, directory: Path, stem: str) -> list[str]:
        name = f"{stem}.ann"
        tmp = atomic_path(directory / name)
        self._forest.save(str(tmp))  # Annoy then memory-maps the written file; the rename keeps that map
        commit_file(tmp, directory / name)
        return [name]

    def load(self, directory: Path, files: list[str], ids: np.ndarray) -> None:
        forest = AnnoyForest(self.dim, "angular")
        try:
            forest.load(str(directory / files[0]), prefault=False)  # memory-mapped, pages read on demand
        except OSError as e:
            raise IndexFileError(f"cannot read {files[0]}: {e}") from None
        if forest.get_n_items() != len(ids):
            raise IndexFileError(f"{files[0]} holds {forest.get_n_items()} items, recorded {len(ids)}")
        self._forest, self._ids = forest, np.asarray(ids, np.int64)
