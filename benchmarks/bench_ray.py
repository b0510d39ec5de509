"""Indexing throughput on Ray (a local Ray of --cpus CPUs) against the single-process path.

    .venv/bin/python benchmarks/bench_ray.py [--photos ../shared/datasets/caltech101] [-n 2000] [--cpus 2]

Both index the same photos into fresh collections, in the same process, alternating over
--repeats rounds; medians and their ratio are printed (a shared machine drifts; ratios hold).
Ray's start-up (once per `lookalike index --ray` run) is timed separately; each Ray round includes
starting the actor pool and loading one ONNX session per actor.

    .venv/bin/python benchmarks/bench_ray.py --large-photo

prints instead what a 12-megapixel JPEG costs against a Caltech-sized one (decode, and embedding on
one thread), the factor docs/scaling.md scales the measured images/second by.
"""
from __future__ import annotations

import argparse
import io
import json
import os
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


def large_photo_factor(photo: Path, repeats: int = 20) -> dict[str, float]:
    """Milliseconds to decode a photo and a 4000x3000 JPEG made from it, and to embed one image."""
    os.environ["LOOKALIKE_THREADS"] = "1"
    from PIL import Image

    from lookalike.encoders import get_encoder
    from lookalike.images import decode_bytes

    encoder = get_encoder()
    small = photo.read_bytes()
    big = io.BytesIO()
    Image.open(photo).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(big, "JPEG", quality=92)

    def ms(fn) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    batch = np.stack([decode_bytes(small, encoder.prep).tensor] * 16)
    figures = {
        "decode_caltech_ms": ms(lambda: decode_bytes(small, encoder.prep)),
        "decode_12mp_ms": ms(lambda: decode_bytes(big.getvalue(), encoder.prep)),
        "embed_ms_per_image": ms(lambda: encoder.embed(batch)) / len(batch),
    }
    embed = figures["embed_ms_per_image"]
    figures["large_photo_factor"] = (figures["decode_12mp_ms"] + embed) / (figures["decode_caltech_ms"] + embed)
    return {k: round(v, 2) for k, v in figures.items()}


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
    parser.add_argument("--large-photo", action="store_true", help="only measure the 12-megapixel cost factor")
    args = parser.parse_args()
    if args.large_photo:
        print(json.dumps(large_photo_factor(args.photos / "Leopards" / "image_0001.jpg"), indent=1))
        return

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
