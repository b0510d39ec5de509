"""The embedding pipeline: read and decode files in threads while the encoder runs batches."""
from __future__ import annotations

import os
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
    """One encoder batch: new vectors with their files, files whose content is already embedded,
    and files that could not be used."""

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
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        in_flight: deque[Future] = deque()
        for item in items:
            in_flight.append(pool.submit(fn, item))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def embed_files(
    files: list[FoundFile],
    encoder: OnnxEncoder,
    known_hashes: set[str] | dict[str, int],
    batch_size: int = 32,
    workers: int | None = None,
) -> Iterator[Batch]:
    """Yield one Batch per `batch_size` files, in file order. Content seen earlier in the run or
    already in `known_hashes` is reported as a duplicate instead of being embedded again."""
    workers = workers or max(2, os.cpu_count() or 1)
    seen: set[str] = set()
    results = ordered_map(
        lambda f: (f, decode_or_reason(f, encoder.prep, known_hashes.__contains__)),
        files,
        workers=workers,
        window=batch_size * 3,
    )
    batch = Batch()
    for file, result in results:
        if isinstance(result, str):
            batch.skipped.append((file, result))
        elif isinstance(result, Known) or result.hash in seen:
            batch.duplicates.append((file, result))
        else:
            seen.add(result.hash)
            batch.embedded.append((file, result))
        if len(batch) >= batch_size:
            yield _run(batch, encoder)
            batch = Batch()
    if len(batch):
        yield _run(batch, encoder)


def _run(batch: Batch, encoder: OnnxEncoder) -> Batch:
    tensors = [decoded.tensor for _, decoded in batch.embedded]
    batch.vectors = encoder.embed(np.stack(tensors)) if tensors else np.zeros((0, encoder.dim), np.float32)
    batch.embedded = [(file, replace(decoded, tensor=None)) for file, decoded in batch.embedded]  # free pixels
    return batch
