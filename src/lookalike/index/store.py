"""Saved index files in a collection folder, checked against the catalogue whenever they are opened.

`index.json` names the backend, its build parameters, the files (with sizes and CRC-32s) and the
(id, vector row) pairs the index holds, so a reader can tell exactly how the saved index differs
from the catalogue snapshot it holds: missing, damaged or built for other settings (rebuild), or
behind by some changes (search it with those changes overlaid, or bring it up to date).
Files are written under new names, fsync'd and renamed; index.json is replaced last, atomically.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import create_index
from lookalike.index.base import Index, IndexFileError, Searcher, atomic_path, checksum, commit_file
from lookalike.index.exact import ExactIndex
from lookalike.index.overlay import Overlay

INDEX_JSON = "index.json"
OVERLAY_HIDDEN = 1_000  # beyond this many removed/changed items, over-fetching to hide them gets slow
OVERLAY_ADDED = 50_000  # beyond this many added/changed items, exact search over them gets slow


@dataclass
class Opened:
    searcher: Searcher
    problem: str | None  # why the saved index needs rebuilding or updating; None when it is current


def exact(dim: int, ids: np.ndarray, vectors: np.ndarray) -> ExactIndex:
    index = ExactIndex(dim)
    index.build(ids, vectors)
    return index


def _keys(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return (np.asarray(ids, np.int64) << 32) | np.asarray(rows, np.int64)


class IndexStore:
    def __init__(self, directory: Path, dim: int) -> None:
        self.directory = directory
        self.dim = dim

    def state(self) -> dict[str, Any] | None:
        """The contents of index.json, or None when there is none."""
        try:
            return json.loads((self.directory / INDEX_JSON).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise IndexFileError(f"{INDEX_JSON} is unreadable ({e})") from None

    # --- reading ------------------------------------------------------------------------------
    def open(self, backend: str, params: dict, ids: np.ndarray, rows: np.ndarray, matrix: np.ndarray) -> Opened:
        """The best searcher for this catalogue snapshot that needs no writing."""
        if backend == "exact" or len(ids) == 0:
            return Opened(exact(self.dim, ids, matrix), None)
        try:
            index, saved_ids, saved_rows = self.load(backend, params)
        except IndexFileError as e:
            return Opened(exact(self.dim, ids, matrix), str(e))
        saved, current = _keys(saved_ids, saved_rows), _keys(ids, rows)
        hidden = np.sort(saved_ids[~np.isin(saved, current)])
        added = np.flatnonzero(~np.isin(current, saved))
        if len(hidden) == 0 and len(added) == 0:
            return Opened(index, None)
        problem = f"the saved index is {len(hidden)} removals and {len(added)} additions behind the catalogue"
        if len(hidden) > OVERLAY_HIDDEN or len(added) > OVERLAY_ADDED:
            return Opened(exact(self.dim, ids, matrix), problem)
        return Opened(Overlay(index, hidden, exact(self.dim, ids[added], np.asarray(matrix[added]))), problem)

    def load(self, backend: str, params: dict) -> tuple[Index, np.ndarray, np.ndarray]:
        """The saved index with its (ids, rows); IndexFileError when it cannot be used as it is."""
        for _ in range(3):
            state = self.state()
            if state is None:
                raise IndexFileError("there is no saved index")
            try:
                return self._load(state, backend, params)
            except FileNotFoundError:  # a writer replaced the files after we read index.json: read it again
                continue
        raise IndexFileError("the index files named in index.json keep disappearing")

    def _load(self, state: dict, backend: str, params: dict) -> tuple[Index, np.ndarray, np.ndarray]:
        index = create_index(backend, self.dim, **params)
        if state.get("backend") != backend:
            raise IndexFileError(f"the saved index is {state.get('backend')}, the collection asks for {backend}")
        if state.get("dim") != self.dim or state.get("params") != index.saved_params():
            raise IndexFileError(
                f"the saved index was built with {state.get('params')}, the collection asks for {index.saved_params()}"
            )
        for name, expect in state["files"].items():
            path = self.directory / name
            if not path.exists():
                if self.state() != state:
                    raise FileNotFoundError(path)  # replaced meanwhile
                raise IndexFileError(f"index file {name} is missing")
            if path.stat().st_size != expect["bytes"] or checksum(path) != expect["crc32"]:
                raise IndexFileError(f"index file {name} is damaged (size or checksum differs)")
        try:
            items = np.load(self.directory / state["items"], allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IndexFileError(f"index file {state['items']} is unreadable ({e})") from None
        index.load(self.directory, [n for n in state["files"] if n != state["items"]], items[:, 0])
        return index, items[:, 0], items[:, 1]

    # --- writing (the caller holds the collection's write lock) -------------------------------
    def maintain(
        self, backend: str, params: dict, ids: np.ndarray, rows: np.ndarray, matrix: np.ndarray,
        generation: int, progress: bool = False,
    ) -> Index:
        """Bring the saved index in line with this snapshot, incrementally where the backend can,
        else rebuilding from the stored vectors, and save it; returns the index."""
        if backend == "exact" or len(ids) == 0:
            self.clear()
            return exact(self.dim, ids, matrix)
        try:
            index, saved_ids, saved_rows = self.load(backend, params)
        except IndexFileError:
            index = None
        if index is not None:
            saved, current = _keys(saved_ids, saved_rows), _keys(ids, rows)
            added = np.flatnonzero(~np.isin(current, saved))
            removed = np.setdiff1d(saved_ids, ids)
            if len(added) == 0 and len(removed) == 0:
                return index
            if index.incremental:
                index.remove(removed)
                index.add(ids[added], np.asarray(matrix[added]))
                self.save(index, ids, rows, generation)
                return index
        index = create_index(backend, self.dim, **params)
        index.build(ids, matrix, progress=progress)
        self.save(index, ids, rows, generation)
        return index

    def save(self, index: Index, ids: np.ndarray, rows: np.ndarray, generation: int) -> None:
        stem = f"index.{index.backend}.{generation}.{os.urandom(3).hex()}"
        files = index.save(self.directory, stem)
        items_name = f"{stem}.items.npy"
        tmp = atomic_path(self.directory / items_name)
        held = index.ids
        with open(tmp, "wb") as f:
            np.save(f, np.stack([held, rows[np.searchsorted(ids, held)]], axis=1).astype(np.int64))
        commit_file(tmp, self.directory / items_name)
        state = {
            "backend": index.backend,
            "params": index.saved_params(),
            "dim": self.dim,
            "count": len(held),
            "generation": generation,
            "items": items_name,
            "files": {
                name: {"bytes": (self.directory / name).stat().st_size, "crc32": checksum(self.directory / name)}
                for name in [*files, items_name]
            },
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = atomic_path(self.directory / INDEX_JSON)
        tmp.write_text(json.dumps(state, indent=2))
        commit_file(tmp, self.directory / INDEX_JSON)
        self._remove_files(keep=set(state["files"]))

    def clear(self) -> None:
        """Drop any saved index (exact search needs none)."""
        (self.directory / INDEX_JSON).unlink(missing_ok=True)
        self._remove_files(keep=set())

    def _remove_files(self, keep: set[str]) -> None:
        for path in self.directory.glob("index.*.*"):
            if path.name not in keep and path.name != INDEX_JSON:
                path.unlink(missing_ok=True)
