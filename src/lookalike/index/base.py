"""The index interface every backend implements: build, add, remove, search k, save, load."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class Index(ABC):
    """Maps item ids to unit vectors and answers top-k by cosine similarity (inner product)."""

    backend: ClassVar[str]

    def __init__(self, dim: int, **params: Any) -> None:
        self.dim = dim
        self.params = params

    @abstractmethod
    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the contents with these (n,) int64 ids and (n, dim) float32 vectors."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None: ...

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, dim) queries -> ((q, k) ids, (q, k) scores), best first; missing places hold id -1."""

    @abstractmethod
    def __len__(self) -> int: ...

    def save(self, directory: Path) -> None:
        """Write index files into `directory` atomically (backends without files write nothing)."""

    def load(self, directory: Path, ids: np.ndarray) -> bool:
        """Load saved files if they match these ids; False means the caller must rebuild."""
        return False


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k of each row of (q, n) scores, sorted, padded with id -1 / score -inf when n < k."""
    q, n = scores.shape
    out_ids = np.full((q, k), -1, np.int64)
    out_scores = np.full((q, k), -np.inf, np.float32)
    take = min(k, n)
    if take == 0:
        return out_ids, out_scores
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < n else np.tile(np.arange(n), (q, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    out_ids[:, :take] = ids[best]
    out_scores[:, :take] = np.take_along_axis(part_scores, order, axis=1)
    return out_ids, out_scores
