"""Indexing throughput on Ray (a local Ray of --cpus CPUs) against the single-process path.

    .venv/bin/python benchmarks/bench_ray.py [--photos ../shared/datasets/caltech101] [-n 2000] [--cpus 2]

Both index the same photos into fresh collections, in the same process, alternating over
--repeats rounds; medians and their ratio are printed (a shared machine drifts; ratios hold).
Ray's start-up (once per `lookalike index --ray` run) is timed separately; each Ray round includes
starting the actor pool and loading one ONNX session per actor.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import Collection
from lookalike.distributed import RayEmbedder


def linked_folder(root: Path, n: int, into: Path, seed: int = 0) -> Path:
    """A folder of per-category symlinks to n photos sampled from root (the real files are read)."""
    photos = sorted(random.Random(seed).sample(sorted(root.glob("*/*.jpg")), n))
    for photo in photos:
        (into / photo.parent.name).mkdir(parents=True, exist_ok=True)
        (into / photo.parent.name / photo.name).symlink_to(photo.resolve())
    return into


def index_once(folder: Path, embedder: RayEmbedder | None) -> tuple[float, dict[str, np.ndarray]]:
    """Images/second of one full index run, and the vectors by path."""
    with tempfile.TemporaryDirectory() as tmp, Collection.create(Path(tmp) / "c") as collection:
        report = collection.update(folder, progress=False, embedder=embedder)
        vectors = {i.path: collection.vector_of(i.id) for i in collection.items()}
    return report.embedded / report.seconds, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/caltech101")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import ray

    single, distributed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder(args.photos, args.n, Path(tmp) / "photos")
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        with RayEmbedder() as embedder:
            for round_ in range(args.repeats):
                rate, reference = index_once(folder, None)
                single.append(rate)
                rate, mine = index_once(folder, embedder)
                distributed.append(rate)
                worst = max(float(np.abs(mine[p] - reference[p]).max()) for p in reference)
                assert mine.keys() == reference.keys() and worst < 1e-4, worst
                print(f"round {round_ + 1}: single {single[-1]:.1f} img/s, ray {distributed[-1]:.1f} img/s,"
                      f" max |vector difference| {worst:.1e}", flush=True)
        ray.shutdown()
    figures = {
        "photos": args.n,
        "cpus": args.cpus,
        "ray_start_s": round(ray_start, 1),
        "single_img_s": round(statistics.median(single), 1),
        "ray_img_s": round(statistics.median(distributed), 1),
        "ray_img_s_per_cpu": round(statistics.median(distributed) / args.cpus, 1),
        "ray_vs_single": round(statistics.median(distributed) / statistics.median(single), 2),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
