"""HNSW graph search (hnswlib): incremental adds, deletions whose slots are reused, growth by resize.

Inner-product space on unit vectors, so 1 - distance is the cosine similarity.
"""
from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np
from tqdm import tqdm

from lookalike.index.base import Index, IndexFileError, atomic_path, commit_file, pack

CHUNK = 20_000  # vectors per add_items call (bounds the copy out of a memory map; drives the progress bar)


class HnswIndex(Index):
    backend = "hnsw"
    build_params = {"M": 16, "ef_construction": 100}
    search_params = {"ef": 200}
    num_threads = -1  # threads for batches of queries and for adds; -1 = all cores

    def __init__(self, dim: int, **params) -> None:
        super().__init__(dim, **params)
        self._graph: hnswlib.Index | None = None
        self._ids = np.zeros(0, np.int64)  # live ids, sorted
        self._max_label = -1  # every label ever added is <= this (removed ones may still sit in the graph)

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def _new_graph(self, capacity: int) -> hnswlib.Index:
        graph = hnswlib.Index(space="ip", dim=self.dim)
        graph.init_index(
            max_elements=max(capacity, 1), M=int(self.params["M"]),
            ef_construction=int(self.params["ef_construction"]), random_seed=100, allow_replace_deleted=True,
        )
        return graph

    def build(self, ids: np.ndarray, vectors: np.ndarray, progress: bool = False) -> None:
        self._graph, self._ids, self._max_label = self._new_graph(len(ids)), np.zeros(0, np.int64), -1
        self.add(ids, vectors, progress)

    def add(self, ids: np.ndarray, vectors: np.ndarray, progress: bool = False) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        if self._graph is None:
            self._graph = self._new_graph(len(ids))
        held = np.isin(ids, self._ids)
        revived = np.array([i for i in ids[~held & (ids <= self._max_label)] if self._unmark(int(i))], np.int64)
        live_after = len(self._ids) + len(revived)
        fresh = int((~held).sum()) - len(revived)  # go into deleted slots first, then free ones
        deleted = self._graph.element_count - live_after
        needed = self._graph.element_count + max(0, fresh - deleted)
        if needed > self._graph.get_max_elements():
            self._graph.resize_index(max(needed, int(self._graph.get_max_elements() * 1.25)))
        bar = tqdm(total=len(ids), unit="vec", desc="hnsw index", disable=not progress, smoothing=0.1)
        with bar:
            for start in range(0, len(ids), CHUNK):
                part = ids[start : start + CHUNK]
                chunk = np.ascontiguousarray(vectors[start : start + CHUNK], np.float32)
                update = np.isin(part, self._ids) | np.isin(part, revived)
                if update.any():  # in place, no new slot
                    self._graph.add_items(chunk[update], part[update], num_threads=self.num_threads)
                if (~update).any():
                    self._graph.add_items(
                        chunk[~update], part[~update], num_threads=self.num_threads, replace_deleted=True
                    )
                bar.update(len(part))
        self._ids = np.union1d(self._ids, ids)
        self._max_label = max(self._max_label, int(ids.max()))

    def _unmark(self, label: int) -> bool:
        """Bring back a removed label that still has its slot (so re-adding updates it in place)."""
        try:
            self._graph.unmark_deleted(label)
            return True
        except RuntimeError:  # its slot was reused, or it was never added
            return False

    def remove(self, ids: np.ndarray) -> None:
        gone = np.intersect1d(self._ids, np.asarray(ids, np.int64))
        for label in gone:
            self._graph.mark_deleted(int(label))
        self._ids = np.setdiff1d(self._ids, gone, assume_unique=True)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if len(self._ids) == 0:
            return pack([([], [])] * len(queries), k)
        if allowed is not None:
            keep = set(np.intersect1d(allowed, self._ids).tolist())
            if not keep:
                return pack([([], [])] * len(queries), k)
            return pack([self._one(q, min(k, len(keep)), keep.__contains__) for q in queries], k)
        want = min(k, len(self._ids))
        ef = max(int(self.params["ef"]), want)
        self._graph.set_ef(ef)
        threads = 1 if len(queries) == 1 else self.num_threads
        try:
            labels, distances = self._graph.knn_query(queries, k=want, num_threads=threads)
        except RuntimeError:  # too few reachable live items at this ef (many deletions): per query, wider
            return pack([self._one(q, want, None) for q in queries], k)
        return pack([(l.astype(np.int64), 1.0 - d) for l, d in zip(labels, distances)], k)

    def _one(self, query: np.ndarray, want: int, keep) -> tuple[list[int], list[float]]:
        """One query, widening ef until `want` results come back (or the whole graph was allowed)."""
        ef = max(int(self.params["ef"]), want)
        while True:
            self._graph.set_ef(ef)
            try:
                labels, distances = self._graph.knn_query(query, k=want, num_threads=1, filter=keep)
                return labels[0].astype(np.int64).tolist(), (1.0 - distances[0]).tolist()
            except RuntimeError:
                if ef >= self._graph.element_count:
                    return [], []  # the caller searches the allowed items exactly
                ef *= 4

    def save(self, directory: Path, stem: str) -> list[str]:
        name = f"{stem}.hnsw"
        tmp = atomic_path(directory / name)
        self._graph.save_index(str(tmp))
        commit_file(tmp, directory / name)
        return [name]

    def load(self, directory: Path, files: list[str], ids: np.ndarray) -> None:
        graph = hnswlib.Index(space="ip", dim=self.dim)
        try:
            graph.load_index(str(directory / files[0]), allow_replace_deleted=True)
        except (RuntimeError, ValueError, IndexError) as e:
            raise IndexFileError(f"cannot read {files[0]}: {e}") from None
        labels = np.asarray(graph.get_ids_list(), np.int64)
        if graph.dim != self.dim or not np.isin(ids, labels).all():
            raise IndexFileError(f"{files[0]} does not hold the items it is recorded with")
        self._graph, self._ids = graph, np.sort(np.asarray(ids, np.int64))
        self._max_label = int(labels.max()) if len(labels) else -1
