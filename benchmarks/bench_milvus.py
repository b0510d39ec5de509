"""Milvus Lite search against the local index backends, on the same vectors.

    .venv/bin/python benchmarks/bench_milvus.py [--collection /tmp/caltech.lookalike] [--queries 200]

Copies a built local collection's items and vectors into Milvus Lite stores (through the store's
own update path, with an embedder that hands over the stored vectors instead of re-embedding),
one per Milvus index type, then runs the same queries (stored photos, k=10, the photo itself
included) through MilvusCollection.search_vector and through each local backend. Recall@10 is
measured against exact search; latency is the median per query, in the same process, after 20
warm-up queries. `build_s` includes the flush at the end of the update, after which Milvus seals
and indexes the new rows (searching unsealed rows took seconds per query on Milvus Lite).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import Collection
from lookalike.embedding import Batch
from lookalike.images import Decoded
from lookalike.index import BACKENDS, create_index
from lookalike.milvus_store import MilvusCollection

MILVUS_INDEXES = [  # (index type, build params, search params); nprobe 1 shows the IVF index is real
    ("FLAT", {}, {}),
    ("IVF_FLAT", {"nlist": 128}, {"nprobe": 1}),
    ("IVF_FLAT", {"nlist": 128}, {"nprobe": 16}),
    ("HNSW", {"M": 16, "efConstruction": 200}, {"ef": 64}),
]


def stored_vectors(local: Collection):
    """An embedder that returns the local collection's stored vectors for its files."""
    items = {i.path: i for i in local.items()}

    def embed(files, encoder, known_hashes, batch_size: int = 500):
        for start in range(0, len(files), batch_size):
            chunk = [f for f in files[start : start + batch_size] if f.path in items]
            decoded = [Decoded(None, items[f.path].hash, items[f.path].width, items[f.path].height) for f in chunk]
            vectors = np.stack([local.vector_of(items[f.path].id) for f in chunk])
            yield Batch(embedded=list(zip(chunk, decoded)), vectors=vectors)

    return embed


def timed(search, queries: np.ndarray) -> tuple[list[list[str]], float]:
    found, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(search(query))
        seconds.append(time.perf_counter() - started)
    return found, statistics.median(seconds) * 1000


def recall(found: list[list], truth: list[list]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, default=Path("/tmp/caltech.lookalike"))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    local = Collection.open(args.collection, readonly=True)
    items = list(local.items())
    ids = np.asarray([i.id for i in items], np.int64)
    matrix = np.stack([local.vector_of(i) for i in ids]).astype(np.float32)
    path_of = {i.id: i.path for i in items}
    rng = np.random.default_rng(0)
    queries = matrix[rng.choice(len(matrix), size=args.queries, replace=False)]
    roots = sorted({i.root for i in items})

    rows: list[dict] = []
    exact = create_index("exact", local.dim)
    exact.build(ids, matrix)
    truth = [[path_of[int(i)] for i in exact.search(q[None], args.k)[0][0]] for q in queries]
    for backend in BACKENDS:
        index = create_index(backend, local.dim)
        started = time.perf_counter()
        index.build(ids, matrix)
        build = time.perf_counter() - started
        found, latency = timed(lambda q: [path_of[int(i)] for i in index.search(q[None], args.k)[0][0] if i >= 0], queries)
        rows.append({"engine": f"local {backend}", "build_s": round(build, 1), "median_ms": round(latency, 3),
                     f"recall@{args.k}": round(recall(found, truth), 4)})
        print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for n, (kind, build_params, search_params) in enumerate(MILVUS_INDEXES):
            spec = f"milvus:{Path(tmp) / kind.lower()}{n}.db"
            with MilvusCollection.create(spec, local.manifest["encoder"]["spec"], index=kind,
                                         index_params=build_params, search_params=search_params) as store:
                started = time.perf_counter()
                for root in roots:
                    store.update(root, progress=False, embedder=stored_vectors(local))
                build = time.perf_counter() - started
                assert len(store) == len(items), (len(store), len(items))
                timed(lambda q: store.search_vector(q, args.k), queries[:20])  # warm up
                found, latency = timed(lambda q: [r.path for r in store.search_vector(q, args.k)], queries)
                _, filtered = timed(lambda q: store.search_vector(q, args.k, category="Faces_easy"), queries)
                rows.append({"engine": f"Milvus Lite {kind} {search_params or ''}".strip(), "build_s": round(build, 1),
                             "median_ms": round(latency, 3), "filtered_median_ms": round(filtered, 3),
                             f"recall@{args.k}": round(recall(found, truth), 4)})
                print(rows[-1], flush=True)
    figures = {"items": len(items), "dim": local.dim, "queries": args.queries, "k": args.k, "results": rows}
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
