"""The float32 vector file: row i is one embedding; rows past the committed count are ignored."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VECTORS_FILE = "vectors.f32"


class VectorFile:
    """Append-only rows of `dim` float32 values, memory-mapped for reading.

    A write appends and fsyncs rows *before* the catalogue commit that counts them, so a crash
    leaves at most some uncounted rows at the end, which the next append overwrites.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.path.touch(exist_ok=True)

    def append(self, committed_rows: int, vectors: np.ndarray) -> int:
        """Write vectors after the first `committed_rows` rows; return the new row count."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of shape {vectors.shape} do not fit dimension {self.dim}")
        with open(self.path, "r+b") as f:
            f.seek(committed_rows * self.dim * 4)
            f.write(vectors.tobytes())
            f.flush()
            os.fsync(f.fileno())
        return committed_rows + len(vectors)

    def read(self, committed_rows: int) -> np.ndarray:
        """The committed rows as a read-only memory map (an empty array when there are none)."""
        if committed_rows == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(committed_rows, self.dim))

    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0
