"""Embed photos on a Ray cluster: a Ray Data pipeline with one ONNX Runtime session per actor.

The driver lists the files; Ray Data ships them in blocks to a pool of actors, each of which
reads, hashes, decodes and embeds a whole block with its own single-threaded ONNX Runtime session
(one actor per CPU). Blocks come back in file order, and the driver turns them into the same
`Batch`es as the single-process pipeline, so the collection (or Milvus store) commits them the same
way: a re-run after any failure only does what was not committed. Ray restarts a killed actor and
retries its block (`max_restarts`, `max_task_retries`), so a lost worker neither loses nor
duplicates files.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from lookalike.collection import CollectionError
from lookalike.embedding import Batch, decode_or_reason
from lookalike.encoders import OnnxEncoder
from lookalike.encoders.onnx_encoder import load_onnx_encoder
from lookalike.images import Decoded, FoundFile

DEFAULT_BATCH = 64  # files per block: big enough to keep ONNX Runtime busy, small enough to retry cheaply


class EmbedBlock:
    """Ray Data callable class: one ONNX Runtime session per actor, one block of files per call."""

    def __init__(self, model: bytes, sidecar: bytes) -> None:
        os.environ["LOOKALIKE_THREADS"] = "1"  # one actor per CPU: one thread per session
        with tempfile.TemporaryDirectory(prefix="lookalike-encoder-") as tmp:  # the session keeps the model in memory
            folder = Path(tmp)
            (folder / "encoder.onnx").write_bytes(model)  # shipped by Ray: workers need no model cache
            (folder / "encoder.json").write_bytes(sidecar)
            self.encoder = load_onnx_encoder(folder / "encoder.onnx")

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, dim = len(block["path"]), self.encoder.dim
        out = {
            "path": block["path"],
            "hash": np.full(n, "", object),
            "width": np.zeros(n, np.int64),
            "height": np.zeros(n, np.int64),
            "reason": np.full(n, "", object),
            "vector": np.zeros((n, dim), np.float32),
        }
        good: list[int] = []
        tensors: list[np.ndarray] = []
        for i, path in enumerate(block["path"]):
            result = decode_or_reason(FoundFile(str(path), "", None, 0, 0), self.encoder.prep, lambda _: False)
            if isinstance(result, str):
                out["reason"][i] = result
                continue
            out["hash"][i], out["width"][i], out["height"][i] = result.hash, result.width, result.height
            good.append(i)
            tensors.append(result.tensor)
        if tensors:
            out["vector"][good] = self.encoder.embed(np.stack(tensors))
        return out


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error within seconds when nothing listens at a `host:port` or `ray://host:port`
    address (Ray itself waits for minutes); `auto` is left to Ray."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise CollectionError(f"Ray address {address!r} is not auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise CollectionError(f"cannot reach Ray at {address}: {e.strerror or e}") from None


class RayEmbedder:
    """Embeds files on Ray with the same output as `embedding.embed_files`.

    Use as a context manager: it joins the cluster at `address`, or starts a local Ray (stopped
    again on exit) when there is none. Call it like `embed_files(files, encoder, known_hashes)`.
    """

    def __init__(self, address: str | None = None, batch_size: int = DEFAULT_BATCH):
        self.address = address
        self.batch_size = batch_size
        self._started = False

    def __enter__(self) -> "RayEmbedder":
        import ray

        if self.address:
            check_reachable(self.address)
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
            self._started = True
        return self

    def __exit__(self, *exc) -> None:
        import ray

        if self._started:
            ray.shutdown()
            self._started = False

    def actors(self) -> int:
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def __call__(
        self, files: list[FoundFile], encoder: OnnxEncoder, known_hashes: set[str] | dict[str, int]
    ) -> Iterator[Batch]:
        """Yield one Batch per block, in file order; content already known or embedded earlier in
        the run comes back as a duplicate, as in the single-process pipeline. (Actors do not hold
        the known hashes, which at scale would not fit in each one: known content is embedded and
        then dropped here, a waste only for files copied or moved within the collection.)"""
        if not files:
            return
        import ray

        known = set(known_hashes)
        seen: set[str] = set()
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # blocks come back in file order
        context.enable_progress_bars = False  # the caller shows one bar for the whole run
        blocks = -(-len(files) // self.batch_size)
        dataset = ray.data.from_items([{"path": f.path} for f in files], override_num_blocks=blocks)
        embedded = dataset.map_batches(
            EmbedBlock,
            batch_size=None,  # one call per block
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(self.actors(), blocks)),
            fn_constructor_kwargs={
                "model": encoder.onnx_path.read_bytes(),
                "sidecar": encoder.onnx_path.with_suffix(".json").read_bytes(),
            },
            num_cpus=1,
        )  # Ray Data's actor pools restart a dead actor and retry its block (max_restarts and
        # max_task_retries default to -1 there); tests/test_ray.py kills one to show it.
        position = 0
        for block in embedded.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            chunk = files[position : position + len(block["path"])]
            position += len(chunk)
            yield _to_batch(chunk, block, known, seen)
        if position != len(files):
            raise RuntimeError(f"Ray returned {position} of {len(files)} files")


def _to_batch(files: list[FoundFile], block: dict[str, np.ndarray], known: set[str], seen: set[str]) -> Batch:
    batch = Batch()
    vectors: list[np.ndarray] = []
    for i, file in enumerate(files):
        if str(block["path"][i]) != file.path:
            raise RuntimeError(f"Ray returned {block['path'][i]} where {file.path} was expected")
        if block["reason"][i]:
            batch.skipped.append((file, str(block["reason"][i])))
            continue
        decoded = Decoded(None, str(block["hash"][i]), int(block["width"][i]), int(block["height"][i]))
        if decoded.hash in known or decoded.hash in seen:
            batch.duplicates.append((file, decoded))
        else:
            seen.add(decoded.hash)
            batch.embedded.append((file, decoded))
            vectors.append(block["vector"][i])
    dim = block["vector"].shape[1]
    batch.vectors = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    return batch
