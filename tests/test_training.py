"""`lookalike train`: a stratified saved split, a model folder that indexes and predicts, ONNX == PyTorch."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from lookalike.cli import main
from lookalike.encoders import get_encoder
from lookalike.images import scan
from lookalike.training import TrainConfig, load_split, stratified_split, train
from conftest import dataset_photos

CATEGORIES = ["accordion", "airplanes", "Leopards", "pizza"]


@pytest.fixture(scope="module")
def tiny_folder(make_photo_folder) -> Path:
    return make_photo_folder(CATEGORIES, 20, name="tiny")


@pytest.fixture(scope="module")
def trained(tiny_folder: Path, tmp_path_factory) -> tuple[Path, dict, Path]:
    model = tmp_path_factory.mktemp("models") / "tiny-model"
    cache = tmp_path_factory.mktemp("feature-cache")
    metrics = train(tiny_folder, model, TrainConfig(epochs=3), progress=False, cache_root=cache)
    return model, metrics, cache


def test_split_is_stratified_disjoint_and_saved(trained, tiny_folder: Path):
    model, metrics, _ = trained
    split = load_split(model)
    everything = {str(Path(f.path).relative_to(tiny_folder)) for f in scan(tiny_folder)[0]}
    parts = [set(split[name]) for name in ("train", "val", "test")]
    assert parts[0] | parts[1] | parts[2] == everything and sum(map(len, parts)) == len(everything)
    for part, expected in zip(parts, (14, 3, 3)):  # 20 photos a category: 70 / 15 / 15 %
        assert Counter(p.split("/")[0] for p in part) == {c: expected for c in CATEGORIES}
    assert metrics["split"] == {"train": 56, "val": 12, "test": 12}
    again = stratified_split(scan(tiny_folder)[0], 0.15, 0.15, seed=0)
    assert {k: again[k] for k in ("train", "val", "test")} == {k: split[k] for k in ("train", "val", "test")}
    assert stratified_split(scan(tiny_folder)[0], 0.15, 0.15, seed=1)["test"] != split["test"]


def test_model_folder_holds_everything_as_json(trained):
    model, metrics, _ = trained
    assert json.loads((model / "categories.json").read_text()) == sorted(CATEGORIES)
    config = json.loads((model / "config.json").read_text())
    assert config["embedding_dim"] == 256 and config["epochs"] == 3 and config["objective"] == "cosine"
    saved = json.loads((model / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] >= 0.75
    assert 0 <= saved["test_map@10_before"] <= 1 and 0 <= saved["test_map@10_after"] <= 1
    assert [e["epoch"] for e in saved["history"]] == [1, 2, 3] and saved["best_epoch"] in (1, 2, 3)
    sidecar = json.loads((model / "encoder.json").read_text())
    assert sidecar["label_kind"] == "categories" and sidecar["labels"] == sorted(CATEGORIES)
    assert sidecar["encoder"]["dim"] == 256 and len(sidecar["encoder"]["checksum"]) == 16


def test_onnx_export_matches_torch_on_real_photos(trained):
    _, metrics, _ = trained
    assert metrics["export_check"]["photos"] == 4
    assert metrics["export_check"]["onnx_vs_torch_max_abs"] < 1e-4


def test_base_features_are_cached_by_content(trained):
    _, _, cache = trained
    (folder,) = cache.iterdir()
    features = np.load(folder / "features.npy")
    assert features.shape == (80, 2 * 2560)  # 80 photos, centre and mirrored views, two base networks side by side
    assert len(json.loads((folder / "hashes.json").read_text())) == 80


def test_trained_model_indexes_searches_and_predicts(trained, tiny_folder: Path, tmp_path: Path, capsys):
    model, _, _ = trained
    encoder = get_encoder(str(model))
    assert encoder.dim == 256 and encoder.labels == sorted(CATEGORIES)
    collection_path = tmp_path / "trained.lookalike"
    assert main(["index", str(tiny_folder), "--encoder", str(model), "-c", str(collection_path), "-q"]) == 0
    with Collection.open(collection_path, readonly=True) as collection:
        assert collection.dim == 256 and collection.manifest["encoder"]["name"].startswith("lookalike-trained:")
        unseen = dataset_photos("Leopards")[30]  # not among the 20 photos trained on
        assert collection.search(unseen, k=1)[0].category == "Leopards"
        assert collection.predict(unseen)[0][0] == "Leopards"
        vector = collection.vector_of(next(collection.items()).id)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    capsys.readouterr()
    assert main(["search", str(unseen), "-c", str(collection_path), "-k", "3"]) == 0
    assert "predicted category: Leopards" in capsys.readouterr().out
    assert main(["search", str(unseen), "-c", str(collection_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predicted"][0]["category"] == "Leopards"
    assert main(["evaluate", "-c", str(collection_path), "--queries", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 12  # the model's own test split


def test_bad_training_input_is_one_line_error(trained, tiny_folder: Path, tmp_path: Path, capsys):
    model, _, _ = trained
    assert main(["train", str(tiny_folder), "--output", str(model)]) == 2  # would overwrite a model
    assert main(["train", str(tmp_path / "missing"), "--output", str(tmp_path / "m")]) == 2
    (tmp_path / "one" / "only").mkdir(parents=True)
    assert main(["train", str(tmp_path / "one"), "--output", str(tmp_path / "m2"), "-q"]) == 2
    assert main(["train", str(tiny_folder), "--output", str(tmp_path / "m3"), "--categories", "pizza,nope"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("lookalike: error:") for e in errors)
    assert "not empty" in errors[0] and "nope" in errors[3]
    assert main(["train", str(tiny_folder), "--output", str(tmp_path / "m4"), "--base", "resnet"]) == 2
    assert main(["train", str(tiny_folder), "--output", str(tmp_path / "m5"), "--unfreeze", "1"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert "unknown base" in errors[0] and "single built-in base" in errors[1]


def test_unfrozen_last_stage_trains_and_exports(tiny_folder: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    metrics = train(tiny_folder, tmp_path / "tuned", TrainConfig(base="efficientnet_lite0", epochs=2, unfreeze=1), progress=False, cache_root=cache)
    assert metrics["test_accuracy"] >= 0.75
    assert metrics["export_check"]["onnx_vs_torch_max_abs"] < 1e-4  # the trained last stage is in the export
    maps = np.load(next(cache.glob("*-trunk1-center+flip")) / "features.npy")
    assert maps.shape == (80, 2 * 192 * 7 * 7)  # the maps entering the last stage are cached, not pooled features
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["unfreeze"] == 1
    encoder = get_encoder(str(tmp_path / "tuned"))
    with Collection.create(tmp_path / "c.lookalike", encoder=str(tmp_path / "tuned")) as collection:
        collection.update(tiny_folder)
        assert collection.search(dataset_photos("pizza")[30], k=1)[0].category == "pizza"
    assert encoder.dim == 256


def test_cli_trains_on_a_chosen_base(tiny_folder: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "lite0-model"
    assert main(["train", str(tiny_folder), "--output", str(model), "--base", "efficientnet_lite0", "--epochs", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "pretrained (efficientnet_lite0) ->" in out and "trained" in out
    config = json.loads((model / "config.json").read_text())
    assert config["base"] == "efficientnet_lite0" and config["base_encoder"]["dim"] == 1280
    assert get_encoder(str(model)).prep.size == 224  # the single network's own input size
