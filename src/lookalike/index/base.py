"""The index interface every backend implements: build, add, remove, search k (optionally among
allowed ids), save, load. Scores are always cosine similarities of unit vectors."""
from __future__ import annotations

import os
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class IndexFileError(Exception):
    """A saved index that cannot be used (missing, truncated, corrupt, or made for other settings)."""


class Searcher(ABC):
    """Anything that answers top-k by cosine similarity over item ids."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(q, dim) queries -> ((q, k) ids, (q, k) scores), best first; missing places hold id -1.

        `allowed` (sorted int64 ids) restricts the answer to those items. Approximate backends
        may return fewer than k allowed items; the caller then searches the allowed items exactly.
        """

    @abstractmethod
    def __len__(self) -> int: ...


class Index(Searcher):
    """Maps item ids to unit vectors. `build_params` shape the saved structure (changing one means
    a rebuild); `search_params` only change how it is searched."""

    backend: ClassVar[str]
    build_params: ClassVar[dict[str, Any]] = {}
    search_params: ClassVar[dict[str, Any]] = {}
    incremental: ClassVar[bool] = True  # add/remove without rebuilding everything

    def __init__(self, dim: int, **params: Any) -> None:
        unknown = set(params) - set(self.build_params) - set(self.search_params)
        if unknown:
            raise ValueError(f"{self.backend} index has no parameter {', '.join(sorted(unknown))}")
        self.dim = dim
        self.params = {**self.build_params, **self.search_params, **params}

    def set_search_params(self, **params: Any) -> None:
        """Change query-time settings (e.g. HNSW ef, Annoy search_k) without rebuilding."""
        unknown = set(params) - set(self.search_params)
        if unknown:
            raise ValueError(f"{self.backend} index has no search parameter {', '.join(sorted(unknown))}")
        self.params.update(params)

    def saved_params(self) -> dict[str, Any]:
        """The build parameters this index was made with (what a saved index must match)."""
        return {name: self.params[name] for name in self.build_params}

    @property
    @abstractmethod
    def ids(self) -> np.ndarray:
        """The ids held, in the index's own order (the order `save` relies on)."""

    @abstractmethod
    def build(self, ids: np.ndarray, vectors: np.ndarray, progress: bool = False) -> None:
        """Replace the contents with these (n,) int64 ids and (n, dim) float32 unit vectors."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add items; an id already held gets the new vector."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None: ...

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, directory: Path, stem: str) -> list[str]:
        """Write the index's files as `stem`.* in `directory`, each atomically; return their names."""
        return []

    def load(self, directory: Path, files: list[str], ids: np.ndarray) -> None:
        """Open files written by `save` for these ids (in saved order); IndexFileError if unusable."""


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


def pack(rows: list[tuple[list[int], list[float]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query (ids, scores) lists, best first, -> padded (q, k) arrays."""
    out_ids = np.full((len(rows), k), -1, np.int64)
    out_scores = np.full((len(rows), k), -np.inf, np.float32)
    for n, (ids, scores) in enumerate(rows):
        out_ids[n, : len(ids[:k])] = ids[:k]
        out_scores[n, : len(scores[:k])] = scores[:k]
    return out_ids, out_scores


def atomic_path(path: Path) -> Path:
    """A temporary name next to `path`; write there, then `commit_file` it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def commit_file(tmp: Path, path: Path) -> None:
    """fsync a finished temporary file and rename it over `path` in one step."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checksum(path: Path, chunk: int = 1 << 24) -> str:
    """CRC-32 of a file, to tell a damaged index file from a good one before a backend opens it."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"
