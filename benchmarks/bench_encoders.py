"""Indexing throughput of several encoders through the full pipeline, relative to the default one.

    .venv/bin/python benchmarks/bench_encoders.py efficientnet_lite0+efficientnet_lite1 MODEL_DIR [-n 500]

Each round indexes the same photos into a new collection with every encoder in turn; the medians
over the rounds are printed with their ratio to the default encoder measured in the same rounds.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench_embedding import full_pipeline, sample_photos
from lookalike.encoders import DEFAULT_ENCODER, get_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoders", nargs="+", help="encoder names or trained model folders")
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/caltech101")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    photos = sample_photos(args.photos, args.n)
    specs = [DEFAULT_ENCODER, *args.encoders]
    for spec in specs:
        get_encoder(spec)  # export once, outside the timings
    rates: dict[str, list[float]] = {spec: [] for spec in specs}
    for round_ in range(args.repeats):
        for spec in specs:
            rates[spec].append(full_pipeline(photos, spec))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in rates.items()), flush=True)
    median = {spec: statistics.median(v) for spec, v in rates.items()}
    print(f"\nmedians over {args.repeats} rounds, {len(photos)} photos:")
    for spec, rate in median.items():
        print(f"  {spec}: {rate:.1f} img/s, {rate / median[DEFAULT_ENCODER]:.2f}x the default")


if __name__ == "__main__":
    main()
