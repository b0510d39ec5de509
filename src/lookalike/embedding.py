"""The embedding pipeline: each core reads, decodes and embeds its own batches; results come in file order.

On a few cores, one single-threaded ONNX Runtime run per core beats one run spread over all cores
(no synchronisation between threads inside each convolution), and decoding in the same worker keeps
every core busy without a hand-off queue.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

import numpy as np

from lookalike.encoders import OnnxEncoder
from lookalike.images import BadImage, Decoded, FoundFile, Preprocess, content_hash, decode_bytes, read_bytes


@dataclass(frozen=True)
class Known:
    """A file whose content hash is already in the collection: it needs no decoding or embedding."""

    hash: str


@dataclass
class Batch:
    """One encoder batch: new vectors with their files, files whose content is embedded elsewhere
    (already in the collection, or by another file of this run), and files that could not be used."""

    embedded: list[tuple[FoundFile, Decoded]] = field(default_factory=list)
    vectors: np.ndarray | None = None
    duplicates: list[tuple[FoundFile, Decoded | Known]] = field(default_factory=list)
    skipped: list[tuple[FoundFile, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.embedded) + len(self.duplicates) + len(self.skipped)


def decode_or_reason(file: FoundFile, prep: Preprocess, known: Callable[[str], bool]) -> Decoded | Known | str:
    """Decode one file; a string result is the reason it was skipped."""
    try:
        data = read_bytes(file.path)
        digest = content_hash(data)
        if known(digest):
            return Known(digest)
        return decode_bytes(data, prep)
    except BadImage as e:
        return str(e)
    except Exception as e:  # one bad file never stops a run
        return f"unexpected error: {type(e).__name__}: {e}"


def ordered_map(fn: Callable, items: Iterable, workers: int, window: int) -> Iterator:
    """Like ThreadPoolExecutor.map, in order, but with at most `window` results in flight (bounded memory)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed") as pool:
        in_flight: deque[Future] = deque()
        for item in items:
            in_flight.append(pool.submit(fn, item))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


class _Claims:
    """Content hashes embedded in this run, so identical files are embedded once."""

    def __init__(self) -> None:
        self._hashes: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, digest: str) -> bool:
        with self._lock:
            if digest in self._hashes:
                return False
            self._hashes.add(digest)
            return True


def embed_chunk(files: list[FoundFile], encoder: OnnxEncoder, known: Callable[[str], bool], claims: _Claims) -> Batch:
    """Decode and embed one chunk of files (runs in a worker thread)."""
    batch = Batch()
    for file in files:
        result = decode_or_reason(file, encoder.prep, known)
        if isinstance(result, str):
            batch.skipped.append((file, result))
        elif isinstance(result, Known) or not claims.claim(result.hash):
            batch.duplicates.append((file, replace(result, tensor=None) if isinstance(result, Decoded) else result))
        else:
            batch.embedded.append((file, result))
    tensors = [decoded.tensor for _, decoded in batch.embedded]
    batch.vectors = encoder.embed(np.stack(tensors)) if tensors else np.zeros((0, encoder.dim), np.float32)
    batch.embedded = [(file, replace(decoded, tensor=None)) for file, decoded in batch.embedded]  # free pixels
    return batch


def embed_files(
    files: list[FoundFile],
    encoder: OnnxEncoder,
    known_hashes: set[str] | dict[str, int],
    batch_size: int = 16,
    workers: int | None = None,
) -> Iterator[Batch]:
    """Yield one Batch per `batch_size` files, in file order. Content already in `known_hashes`, or
    embedded earlier in the run by another file, comes back as a duplicate instead of a vector."""
    workers = workers or int(os.environ.get("LOOKALIKE_WORKERS", 0)) or (os.cpu_count() or 1)
    claims = _Claims()
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    yield from ordered_map(
        lambda chunk: embed_chunk(chunk, encoder, known_hashes.__contains__, claims),
        chunks,
        workers=workers,
        window=workers * 2,
    )
