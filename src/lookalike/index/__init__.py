"""Index backends, chosen by name: exact (NumPy), annoy, hnsw, or auto (exact while it is as fast
as HNSW, HNSW above that size)."""
from __future__ import annotations

from typing import Any

from lookalike.index.annoy import AnnoyIndex
from lookalike.index.base import Index, IndexFileError, Searcher
from lookalike.index.exact import ExactIndex
from lookalike.index.hnsw import HnswIndex

BACKENDS: dict[str, type[Index]] = {cls.backend: cls for cls in (ExactIndex, AnnoyIndex, HnswIndex)}
CHOICES = [*BACKENDS, "auto"]
# Exact search answered single queries faster than HNSW (default settings, ef=200) up to 2,000
# items, about as fast at 4,000 and slower at 8,000, at 256-d and 1280-d (`bench_index.py
# crossover`, benchmarks/RESULTS.md).
AUTO_EXACT_BELOW = 4_000


def resolve_backend(backend: str, items: int) -> str:
    """The concrete backend for a collection of `items` items."""
    if backend == "auto":
        return "exact" if items < AUTO_EXACT_BELOW else "hnsw"
    if backend not in BACKENDS:
        raise ValueError(f"unknown index backend {backend!r}; choose one of: {', '.join(CHOICES)}")
    return backend


def check_params(params: dict[str, Any], search_only: bool = False) -> None:
    """Refuse parameter names no backend knows (each backend takes the ones it has)."""
    known = {
        name for cls in BACKENDS.values() for name in (*cls.search_params, *([] if search_only else cls.build_params))
    }
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown index parameter {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def own_params(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    cls = BACKENDS[backend]
    return {k: v for k, v in params.items() if k in cls.build_params or k in cls.search_params}


def configure(searcher: Searcher, params: dict[str, Any]) -> None:
    """Apply query-time parameters to whatever index answers (the ones its backend has)."""
    index = getattr(searcher, "base", searcher)  # an Overlay searches a saved index underneath
    if isinstance(index, Index):
        index.set_search_params(**{k: v for k, v in params.items() if k in index.search_params})


def create_index(backend: str, dim: int, **params: Any) -> Index:
    """A new, empty index of a concrete backend, taking from `params` the parameters it has."""
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown index backend {backend!r}; choose one of: {', '.join(BACKENDS)}") from None
    check_params(params)
    return cls(dim, **own_params(backend, params))


__all__ = [
    "AUTO_EXACT_BELOW", "BACKENDS", "CHOICES", "AnnoyIndex", "ExactIndex", "HnswIndex", "Index", "IndexFileError",
    "Searcher", "check_params", "configure", "create_index", "resolve_backend",
]
