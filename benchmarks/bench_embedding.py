"""Indexing throughput: lookalike's full pipeline vs ONNX Runtime alone vs a naive PyTorch loop.

    .venv/bin/python benchmarks/bench_embedding.py [--photos ../shared/datasets/caltech101] [-n 1000]

All three run in the same process on the same photos, interleaved over --repeats rounds, and the
medians are printed with their ratios (absolute speed on a shared machine drifts; ratios hold).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lookalike import Collection
from lookalike.encoders import DEFAULT_ENCODER, OnnxEncoder, get_encoder
from lookalike.images import decode_file


def sample_photos(root: Path, n: int, seed: int = 0) -> list[Path]:
    photos = sorted(root.glob("*/*.jpg"))
    return sorted(random.Random(seed).sample(photos, min(n, len(photos))))


def linked_folder(photos: list[Path], into: Path) -> Path:
    """A folder of per-category symlinks to the photos, so the pipeline reads the real files."""
    for photo in photos:
        (into / photo.parent.name).mkdir(parents=True, exist_ok=True)
        (into / photo.parent.name / photo.name).symlink_to(photo.resolve())
    return into


def full_pipeline(photos: list[Path], encoder: str = DEFAULT_ENCODER) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder = linked_folder(photos, Path(tmp) / "photos")
        with Collection.create(Path(tmp) / "c", encoder=encoder) as collection:
            report = collection.update(folder, progress=False)
    assert report.embedded == len(photos), report.summary()
    return len(photos) / report.seconds


def onnx_ceiling(photos: list[Path], batch: int = 16) -> float:
    """ONNX Runtime alone on pre-decoded tensors, every core busy (the best of two ways to use them)."""
    encoder = get_encoder()
    tensors = np.stack([decode_file(str(p), encoder.prep).tensor for p in photos])
    batches = [tensors[i : i + batch] for i in range(0, len(tensors), batch)]
    cores = os.cpu_count() or 1
    start = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:  # one single-threaded run per core, as the pipeline does
        list(pool.map(encoder.embed, batches))
    per_core_runs = len(photos) / (time.perf_counter() - start)
    multi = OnnxEncoder(encoder.info, encoder.onnx_path, encoder.prep, threads=cores)
    start = time.perf_counter()
    for b in batches:  # one run at a time, spread over all cores
        multi.embed(b)
    return max(per_core_runs, len(photos) / (time.perf_counter() - start))


def naive_pytorch(photos: list[Path]) -> float:
    """As tutorials write it: torchvision transforms, one photo at a time, eager PyTorch, main thread."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from lookalike.encoders.registry import efficientnet_lite

    model, _, prep = efficientnet_lite()
    transform = transforms.Compose([
        transforms.Resize((prep.size, prep.size)),
        transforms.ToTensor(),
        transforms.Normalize(prep.mean, prep.std),
    ])
    start = time.perf_counter()
    with torch.no_grad():
        for photo in photos:
            x = transform(Image.open(photo).convert("RGB")).unsqueeze(0)
            model.forward_head(model.forward_features(x), pre_logits=True)
    return len(photos) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/caltech101")
    parser.add_argument("-n", type=int, default=1000, help="photos for the pipeline and the ceiling")
    parser.add_argument("--naive-n", type=int, default=200, help="photos for the (slow) naive loop")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    photos = sample_photos(args.photos, args.n)
    get_encoder()  # export once, outside the timings
    rates: dict[str, list[float]] = {"full pipeline": [], "onnx ceiling": [], "naive pytorch": []}
    for round_ in range(args.repeats):
        rates["onnx ceiling"].append(onnx_ceiling(photos))
        rates["full pipeline"].append(full_pipeline(photos))
        rates["naive pytorch"].append(naive_pytorch(photos[: args.naive_n]))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in rates.items()), flush=True)

    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nmedians over {args.repeats} rounds, {len(photos)} photos ({args.naive_n} for naive):")
    for name, rate in median.items():
        print(f"  {name:<14} {rate:7.1f} img/s")
    print(f"  full / ceiling = {median['full pipeline'] / median['onnx ceiling']:.2f}  (target >= 0.85)")
    print(f"  full / naive   = {median['full pipeline'] / median['naive pytorch']:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
