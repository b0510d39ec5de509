"""Index backends, chosen by name."""
from __future__ import annotations

from lookalike.index.base import Index
from lookalike.index.exact import ExactIndex

BACKENDS: dict[str, type[Index]] = {ExactIndex.backend: ExactIndex}


def create_index(backend: str, dim: int, **params) -> Index:
    try:
        return BACKENDS[backend](dim, **params)
    except KeyError:
        raise ValueError(f"unknown index backend {backend!r}; choose one of: {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "ExactIndex", "Index", "create_index"]
