"""Fine-tuning on Caltech-101: both objectives, all categories and with categories held out.

    .venv/bin/python benchmarks/bench_training.py --photos ../shared/datasets/caltech101 --out /tmp/bench_training

Every run searches test-split queries against the whole folder and reports, on the same queries,
the default pretrained encoder (EfficientNet-Lite0, 1280-d), the pretrained base the head was
trained on, and the trained 256-d encoder (see docs/evaluation.md). The first
run starts from an empty feature cache, so its time includes extracting the base features; the
others reuse that cache. Prints a Markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from lookalike.encoders import DEFAULT_ENCODER, get_encoder
from lookalike.evaluation import evaluate_vectors
from lookalike.images import scan
from lookalike.training import OBJECTIVES, VIEWS, TrainConfig, base_features, load_split, relative_path, train


def held_out_categories(photos: Path, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    names = sorted(p.name for p in photos.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    left_out = sorted(rng.choice(names, size=round(len(names) * fraction), replace=False).tolist())
    return [n for n in names if n not in left_out], left_out


def default_baseline(photos: Path, model: Path, left_out: list[str], cache: Path) -> dict[str, float]:
    """mAP@10 of the default pretrained encoder on the model's test queries and on the left-out categories."""
    files = [f for f in scan(photos)[0] if f.category is not None]
    features, kept, _ = base_features(files, get_encoder(DEFAULT_ENCODER), VIEWS, progress=False, cache_root=cache)
    position = {relative_path(f): n for n, f in enumerate(kept)}
    categories = [f.category for f in kept]
    test = np.asarray([position[p] for p in load_split(model)["test"]])
    held = np.asarray([n for n, c in enumerate(categories) if c in set(left_out)])
    return {"test": evaluate_vectors(features[:, 0], categories, queries=test).map,
            "held_out": evaluate_vectors(features[:, 0], categories, queries=held).map}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--hold-out", type=float, default=0.2, help="fraction of categories left out of training")
    parser.add_argument("--warm", action="store_true", help="keep the feature cache from an earlier run")
    parser.add_argument("--base", default=TrainConfig.base, help="pretrained base (default: %(default)s)")
    parser.add_argument("--unfreeze", type=int, default=0, help="last block stages of the base trained too")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="at most this many epochs")
    parser.add_argument("--base-learning-rate", type=float, default=TrainConfig.base_learning_rate,
                        help="learning rate of the unfrozen base stages")
    parser.add_argument("--all-only", action="store_true", help="skip the held-out-categories runs")
    parser.add_argument("--keep-structure", type=float, default=TrainConfig.keep_structure,
                        help="weight of the loss keeping pretrained pairwise similarities")
    args = parser.parse_args()
    cache = args.out / "features"
    if not args.warm:
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    trained_on, left_out = held_out_categories(args.photos, args.hold_out, seed=0)
    runs = []
    for objective in args.objectives:
        settings = [("all categories", None), (f"{len(left_out)} categories held out", trained_on)]
        for setting, categories in settings[: 1 if args.all_only else 2]:
            model = args.out / f"{objective}-{args.base}-u{args.unfreeze}-lr{args.base_learning_rate:g}-k{args.keep_structure:g}-{'all' if categories is None else 'heldout'}"
            shutil.rmtree(model, ignore_errors=True)
            started, cpu = time.perf_counter(), time.process_time()
            metrics = train(args.photos, model, TrainConfig(base=args.base, objective=objective, categories=categories,
                                                                unfreeze=args.unfreeze,
                                                                epochs=args.epochs, keep_structure=args.keep_structure,
                                                                base_learning_rate=args.base_learning_rate), progress=False,
                            cache_root=cache)
            metrics["wall_s"], metrics["cpu_s"] = time.perf_counter() - started, time.process_time() - cpu
            metrics["default_encoder"] = default_baseline(args.photos, model, left_out if categories else [], cache)
            label = f"{objective} on {args.base}" + (f", {args.unfreeze} stage(s) unfrozen" if args.unfreeze else "") + (
                f", keep-structure {args.keep_structure:g}" if args.keep_structure else "")
            runs.append((label, setting, metrics))
            print(json.dumps({k: v for k, v in metrics.items() if k not in ("history", "skipped")}), flush=True)
    print("\n| objective | trained on | test queries | mAP@10 default encoder (Lite0, 1280-d) | mAP@10 pretrained base "
          "| mAP@10 trained 256-d | test accuracy | largest category drop | held-out queries "
          "| held-out mAP@10 default / base -> trained | time (features + training) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for objective, setting, m in runs:
        drop = m["largest_drop"]
        held = m["held_out"]
        default = m["default_encoder"]
        held_text = (f"{default['held_out']:.3f} / {held['map@10_before']:.3f} -> {held['map@10_after']:.3f}"
                     if held else "-")
        print(f"| {objective} | {setting} | {m['split']['test']} | {default['test']:.3f} | {m['test_map@10_before']:.3f} | "
              f"{m['test_map@10_after']:.3f} | {m['test_accuracy']:.3f} | {drop['category']} "
              f"{drop['before']:.3f} -> {drop['after']:.3f} | {held['queries'] if held else '-'} | {held_text} | "
              f"{m['seconds']['features']:.0f} s + {m['seconds']['training']:.0f} s |")


if __name__ == "__main__":
    main()
