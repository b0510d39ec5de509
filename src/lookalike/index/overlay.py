"""A saved index seen through the catalogue changes committed since it was written.

While a writer is still running, a reader searches the saved index with the items removed or
changed since hidden, and the items added or changed since searched exactly, so every answer
matches the catalogue snapshot the reader holds.
"""
from __future__ import annotations

import numpy as np

from lookalike.index.base import Searcher, top_k
from lookalike.index.exact import ExactIndex


class Overlay(Searcher):
    def __init__(self, base: Searcher, hidden: np.ndarray, added: ExactIndex) -> None:
        self.base, self.hidden, self.added = base, np.asarray(hidden, np.int64), added

    def __len__(self) -> int:
        return len(self.base) - len(self.hidden) + len(self.added)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if allowed is None:
            base_ids, base_scores = self.base.search(queries, k + len(self.hidden))
        else:
            base_ids, base_scores = self.base.search(queries, k, np.setdiff1d(allowed, self.hidden))
        new_ids, new_scores = self.added.search(queries, k, allowed)
        ids = np.concatenate([base_ids, new_ids], axis=1)
        scores = np.concatenate([base_scores, new_scores], axis=1)
        drop = (ids < 0) | np.isin(ids, self.hidden)
        scores = np.where(drop, -np.inf, scores)
        best_ids, best_scores = top_k(scores, np.arange(ids.shape[1]), k)
        rows = np.arange(len(ids))[:, None]
        out = np.where(np.isfinite(best_scores), ids[rows, np.maximum(best_ids, 0)], -1)
        return out, best_scores
