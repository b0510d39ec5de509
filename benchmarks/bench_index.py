"""Index backends side by side: recall@10 against exact search, queries/second on one thread and on
two, build time, memory and file size, for exact, Annoy and HNSW at several settings.

    # one data set per run; results go to benchmarks/results/<name>.json
    .venv/bin/python benchmarks/bench_index.py caltech --collection /tmp/caltech.lookalike
    .venv/bin/python benchmarks/bench_index.py synthetic --n 100000 --dim 256
    .venv/bin/python benchmarks/bench_index.py synthetic --n 1000000 --dim 256
    # where exact search stops being as fast as HNSW (sets `auto`'s switch size)
    .venv/bin/python benchmarks/bench_index.py crossover --dim 1280
    # the recall vs queries/second plot and the tables, from the saved results
    .venv/bin/python benchmarks/bench_index.py report

Synthetic sets: a Gaussian mixture of unit vectors. 3,000 centres drawn uniformly on the sphere;
each point is centre + 0.8 * (a Gaussian step inside a 16-d subspace of its own cluster) + 0.2 *
(isotropic Gaussian noise), normalised; so clusters have a low intrinsic dimension as image
embeddings do. Queries are further draws from the same mixture, never in the index.

Queries/second: one query per call (as a search request arrives), median of --repeats timed
passes; "2 threads" runs two callers at once (hnswlib and NumPy release the GIL, so does Annoy).
Memory: resident-set growth while building and the saved file's size, against the raw float32
vectors. Absolute speeds drift on a shared machine; compare rows of one run.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from threadpoolctl import threadpool_limits

from lookalike.index import AnnoyIndex, ExactIndex, HnswIndex, create_index

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
K = 10


# --- data -------------------------------------------------------------------------------------
def synthetic(n: int, dim: int, seed: int = 0, centres: int = 3000, rank: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim), dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    labels = rng.integers(0, centres, n)
    out = np.empty((n, dim), np.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(centres + 1))
    basis_rng = np.random.default_rng(seed + 1)  # same subspaces for index and queries of one (dim, centres)
    for j in range(centres):
        rows = order[bounds[j] : bounds[j + 1]]
        basis, _ = np.linalg.qr(basis_rng.standard_normal((dim, rank)).astype(np.float32))
        step = rng.standard_normal((len(rows), rank), dtype=np.float32) / np.sqrt(rank)
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32) / np.sqrt(dim)
        out[rows] = c[j] + 0.8 * step @ basis.T + 0.2 * noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def caltech_vectors(collection: Path) -> np.ndarray:
    db = sqlite3.connect(f"file:{collection / 'catalog.sqlite'}?mode=ro", uri=True)
    rows = np.asarray([r for (r,) in db.execute("SELECT row FROM items ORDER BY id")], np.int64)
    dim = json.loads((collection / "manifest.json").read_text())["encoder"]["dim"]
    return np.fromfile(collection / "vectors.f32", np.float32).reshape(-1, dim)[rows]


def ground_truth(data: np.ndarray, queries: np.ndarray, block: int = 100) -> np.ndarray:
    exact = ExactIndex(data.shape[1])
    exact.build(np.arange(len(data)), data)
    return np.concatenate([exact.search(queries[s : s + block], K)[0] for s in range(0, len(queries), block)])


# --- measuring --------------------------------------------------------------------------------
def rss() -> int:
    return psutil.Process().memory_info().rss


def recall(index, queries: np.ndarray, truth: np.ndarray) -> float:
    found = np.concatenate([index.search(queries[s : s + 100], K)[0] for s in range(0, len(queries), 100)])
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def qps(index, queries: np.ndarray, threads: int, repeats: int, budget_s: float) -> float:
    """Median queries/second over `repeats` passes, one query per call, `threads` callers at once."""
    per_pass = max(20, min(len(queries), int(len(queries) * budget_s / max(repeats, 1) / _probe(index, queries))))
    sample = queries[:per_pass]
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        if threads == 1:
            for q in sample:
                index.search(q[None], K)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda q: index.search(q[None], K), sample))
        rates.append(len(sample) / (time.perf_counter() - start))
    return statistics.median(rates)


def _probe(index, queries: np.ndarray) -> float:
    """Seconds per query on a few queries, to size the timed passes (this also warms caches)."""
    start = time.perf_counter()
    for q in queries[:10]:
        index.search(q[None], K)
    return (time.perf_counter() - start) * len(queries) / 10


def measure(name, index, settings, queries, truth, raw_bytes, build_s, rss_growth, file_bytes, args) -> list[dict]:
    rows = []
    for setting in settings:
        if setting:
            index.set_search_params(**setting)
        row = {
            "backend": index.backend, "params": {**index.saved_params(), **setting},
            "recall": recall(index, queries, truth),
            "qps_1": qps(index, queries, 1, args.repeats, args.budget),
            "qps_2": qps(index, queries, 2, args.repeats, args.budget),
            "build_s": build_s, "rss_growth": rss_growth, "file_bytes": file_bytes,
            "memory_vs_raw": round(max(rss_growth, file_bytes) / raw_bytes, 3),
        }
        rows.append(row)
        print(f"{name:<24} {index.backend:<6} {json.dumps(row['params']):<44} recall {row['recall']:.3f}  "
              f"qps1 {row['qps_1']:8.0f}  qps2 {row['qps_2']:8.0f}  build {build_s:7.1f}s  "
              f"mem {row['memory_vs_raw']:.2f}x raw", flush=True)
    return rows


def built(backend: str, data: np.ndarray, params: dict, workdir: Path) -> tuple[object, float, int, int]:
    """Build, save and (for Annoy) reopen memory-mapped; returns (index, seconds, RSS growth, file bytes)."""
    before = rss()
    start = time.perf_counter()
    index = create_index(backend, data.shape[1], **params)
    index.build(np.arange(len(data)), data, progress=len(data) >= 200_000)
    seconds = time.perf_counter() - start
    growth = rss() - before
    files = index.save(workdir, f"bench.{backend}")
    size = sum((workdir / f).stat().st_size for f in files)
    if isinstance(index, AnnoyIndex):  # a reader opens the file memory-mapped
        index = create_index(backend, data.shape[1], **params)
        index.load(workdir, files, np.arange(len(data)))
    return index, seconds, growth, size


def run_set(name: str, data: np.ndarray, queries: np.ndarray, args) -> list[dict]:
    print(f"{name}: {len(data)} x {data.shape[1]}, {len(queries)} queries", flush=True)
    start = time.perf_counter()
    truth = ground_truth(data, queries)
    print(f"ground truth in {time.perf_counter() - start:.1f}s", flush=True)
    raw = data.nbytes
    rows = []
    with threadpool_limits(1):  # one BLAS thread per caller: exact's "2 threads" means two callers
        exact = ExactIndex(data.shape[1])
        exact.build(np.arange(len(data)), data)
        rows += measure(name, exact, [{}], queries, truth, raw, 0.0, 0, 0, args)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for build_params in args.hnsw_builds:
            index, seconds, growth, size = built("hnsw", data, build_params, Path(tmp))
            rows += measure(name, index, [{"ef": ef} for ef in args.ef], queries, truth, raw, seconds, growth, size, args)
            del index
        for trees in args.trees:
            index, seconds, growth, size = built("annoy", data, {"trees": trees}, Path(tmp))
            settings = [{"search_k": s} for s in args.search_k]
            rows += measure(name, index, settings, queries, truth, raw, seconds, growth, size, args)
            del index
    return [{"dataset": name, "n": len(data), "dim": data.shape[1], **r} for r in rows]


def crossover(args) -> list[dict]:
    """Exact vs HNSW (default settings) queries/second, one thread, as the collection grows."""
    full = synthetic(max(args.sizes) + 500, args.dim, seed=7)
    queries = full[-500:]
    rows = []
    for n in args.sizes:
        data = full[:n]
        exact = ExactIndex(args.dim)
        exact.build(np.arange(n), data)
        hnsw = HnswIndex(args.dim)
        hnsw.build(np.arange(n), data)
        rates: dict[str, list[float]] = {"exact": [], "hnsw": []}
        with threadpool_limits(1):
            for _ in range(args.repeats):  # interleaved, so both see the same machine load
                for name, index in (("exact", exact), ("hnsw", hnsw)):
                    rates[name].append(qps(index, queries, 1, 1, args.budget / args.repeats))
        truth = ground_truth(data, queries)
        row = {"n": n, "dim": args.dim, "ef": hnsw.params["ef"], "exact_qps_1": statistics.median(rates["exact"]),
               "hnsw_qps_1": statistics.median(rates["hnsw"]), "hnsw_recall": recall(hnsw, queries, truth)}
        rows.append(row)
        print(f"n {n:>7}  exact {row['exact_qps_1']:8.0f} q/s   hnsw {row['hnsw_qps_1']:8.0f} q/s  "
              f"(recall {row['hnsw_recall']:.3f})  ratio {row['hnsw_qps_1'] / row['exact_qps_1']:.2f}", flush=True)
    return rows


# --- report -----------------------------------------------------------------------------------
def memory(row: dict) -> str:
    """Index memory over the raw vectors; exact search keeps nothing but the (memory-mapped) vectors."""
    return "1.00 (the vectors)" if row["backend"] == "exact" else f"{row['memory_vs_raw']:.2f}"


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")) if not p.name.startswith("crossover")]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.2), squeeze=False)
    for ax, rows in zip(axes[0], sets):
        for backend, colour in (("hnsw", "tab:blue"), ("annoy", "tab:orange"), ("exact", "black")):
            mine = [r for r in rows if r["backend"] == backend]
            builds = sorted({json.dumps({k: v for k, v in r["params"].items() if k not in ("ef", "search_k")}) for r in mine})
            for style, build in zip(("-o", "--s", ":^"), builds):
                line = sorted((r for r in mine if json.dumps({k: v for k, v in r["params"].items() if k not in ("ef", "search_k")}) == build),
                              key=lambda r: r["recall"])
                ax.plot([r["recall"] for r in line], [r["qps_1"] for r in line], style, color=colour,
                        label=f"{backend} {build if build != '{}' else ''}", markersize=4)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/second (1 thread)")
        ax.set_title(f"{rows[0]['dataset']} ({rows[0]['n']:,} x {rows[0]['dim']})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "index_recall_qps.png", dpi=110)
    print(f"wrote {HERE / 'index_recall_qps.png'}")
    for rows in sets:
        print(f"\n{rows[0]['dataset']} ({rows[0]['n']:,} x {rows[0]['dim']}, raw {rows[0]['n'] * rows[0]['dim'] * 4 / 1e6:,.0f} MB)\n")
        print("| backend | settings | recall@10 | q/s 1 thread | q/s 2 threads | build s | memory / raw | file MB |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['backend']} | {' '.join(f'{k}={v}' for k, v in r['params'].items())} | {r['recall']:.3f} | "
                  f"{r['qps_1']:,.0f} | {r['qps_2']:,.0f} | {r['build_s']:.1f} | {memory(r)} | {r['file_bytes'] / 1e6:,.0f} |")
    for path in sorted(RESULTS.glob("crossover*.json")):
        print(f"\n{path.name}\n\n| items | exact q/s | hnsw q/s (ef) | hnsw / exact | hnsw recall@10 |\n|---:|---:|---:|---:|---:|")
        for r in json.loads(path.read_text()):
            print(f"| {r['n']:,} | {r['exact_qps_1']:,.0f} | {r['hnsw_qps_1']:,.0f} ({r.get('ef', 100)}) | "
                  f"{r['hnsw_qps_1'] / r['exact_qps_1']:.2f} | {r['hnsw_recall']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["caltech", "synthetic", "crossover", "report"])
    parser.add_argument("--collection", type=Path, default=Path("/tmp/caltech.lookalike"))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timed queries per setting and thread count")
    parser.add_argument("--ef", type=int, nargs="+", default=[10, 20, 40, 100, 200, 400])
    parser.add_argument("--hnsw-builds", type=json.loads, default=[{"M": 16, "ef_construction": 100}], help="JSON list")
    parser.add_argument("--trees", type=int, nargs="+", default=[100])
    parser.add_argument("--search-k", type=int, nargs="+", default=[-1, 3000, 10000, 30000, 100000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000, 20000, 50000])
    parser.add_argument("--workdir", default=None, help="where index files are written (default: system temp)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    if args.what == "report":
        report()
        return 0
    if args.what == "crossover":
        rows, name = crossover(args), f"crossover-{args.dim}"
    elif args.what == "caltech":
        vectors = caltech_vectors(args.collection)
        pick = np.random.default_rng(0).permutation(len(vectors))
        queries, data = vectors[pick[: min(args.queries, 500)]], vectors[pick[min(args.queries, 500) :]]
        name = "caltech101"
        rows = run_set(name, data, queries, args)
    else:
        name = f"synthetic-{args.n // 1000}k-{args.dim}d"
        both = synthetic(args.n + args.queries, args.dim)
        rows = run_set(name, both[: args.n], both[args.n :], args)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
