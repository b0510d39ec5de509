"""Exact search: one matrix product against every stored vector."""
from __future__ import annotations

import numpy as np

from lookalike.index.base import Index, top_k


class ExactIndex(Index):
    backend = "exact"

    def __init__(self, dim: int, **params) -> None:
        super().__init__(dim, **params)
        self._ids = np.zeros(0, np.int64)
        self.vectors = np.zeros((0, dim), np.float32)

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def build(self, ids: np.ndarray, vectors: np.ndarray, progress: bool = False) -> None:
        self._ids = np.asarray(ids, np.int64)
        self.vectors = vectors  # may be a read-only memory map; never copied when rows line up

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        self.remove(ids)
        self._ids = np.concatenate([self._ids, ids])
        self.vectors = np.concatenate([np.asarray(self.vectors), np.asarray(vectors, np.float32)])

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, ids)
        if not keep.all():
            self._ids, self.vectors = self._ids[keep], np.asarray(self.vectors)[keep]

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if allowed is None:
            return top_k(queries @ np.asarray(self.vectors).T, self._ids, k)
        positions = np.flatnonzero(np.isin(self._ids, allowed))
        return top_k(queries @ np.asarray(self.vectors[positions]).T, self._ids[positions], k)
