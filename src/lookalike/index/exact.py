"""Exact search: one matrix product against every stored vector."""
from __future__ import annotations

import numpy as np

from lookalike.index.base import Index, top_k


class ExactIndex(Index):
    backend = "exact"

    def __init__(self, dim: int, **params) -> None:
        super().__init__(dim, **params)
        self.ids = np.zeros(0, np.int64)
        self.vectors = np.zeros((0, dim), np.float32)

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.vectors = vectors  # may be a read-only memory map; never copied when rows line up

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = np.concatenate([self.ids, np.asarray(ids, np.int64)])
        self.vectors = np.concatenate([np.asarray(self.vectors), np.asarray(vectors, np.float32)])

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, ids)
        self.ids, self.vectors = self.ids[keep], np.asarray(self.vectors)[keep]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        return top_k(queries @ np.asarray(self.vectors).T, self.ids, k)

    def __len__(self) -> int:
        return len(self.ids)
