"""Collection behaviour a user notices: search quality, incremental re-index, dedup, safety."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from lookalike import Collection, CollectionError
from conftest import FIVE_CATEGORIES, dataset_photos


def test_held_back_photos_find_their_own_category(five_category_collection, held_back_queries):
    with Collection.open(five_category_collection, readonly=True) as collection:
        for category, query in held_back_queries.items():
            top5 = collection.search(query, k=5)
            same = sum(r.category == category for r in top5)
            assert same >= 4, f"{category}: only {same} of the top 5 share its category"


def test_an_indexed_photo_finds_itself_first(five_category_collection, five_category_folder):
    photo = five_category_folder / "Leopards" / dataset_photos("Leopards")[3].name
    with Collection.open(five_category_collection, readonly=True) as collection:
        first = collection.search(photo, k=3)[0]
    assert first.path == str(photo) and first.score == pytest.approx(1.0, abs=1e-4)


def test_category_filter_returns_only_that_category(five_category_collection, held_back_queries):
    with Collection.open(five_category_collection, readonly=True) as collection:
        results = collection.search(held_back_queries["pizza"], k=10, category="sunflower")
        assert len(results) == 10 and {r.category for r in results} == {"sunflower"}
        assert [r.rank for r in results] == list(range(1, 11))
        assert all(a.score >= b.score for a, b in zip(results, results[1:]))
        with pytest.raises(CollectionError, match="no category 'nope'"):
            collection.search(held_back_queries["pizza"], category="nope")


def test_categories_and_counts(five_category_collection):
    with Collection.open(five_category_collection, readonly=True) as collection:
        assert collection.categories() == {c: 12 for c in sorted(FIVE_CATEGORIES)}
        info = collection.info()
    assert info["items"] == 60 and info["encoder"]["dim"] == 1280
    assert info["encoder"]["name"] == "efficientnet_lite0" and len(info["encoder"]["checksum"]) == 16


def test_reindex_is_incremental(make_photo_folder, tmp_path):
    photos = make_photo_folder(["pizza", "sunflower"], 6, name="incr")
    with Collection.create(tmp_path / "c") as collection:
        first = collection.update(photos, progress=False)
        assert (first.added, first.embedded) == (12, 12)

        again = collection.update(photos, progress=False)
        assert (again.added, again.updated, again.removed, again.embedded, again.unchanged) == (0, 0, 0, 0, 12)

        gone = photos / "pizza" / sorted(os.listdir(photos / "pizza"))[0]
        gone.unlink()
        shutil.copy(dataset_photos("accordion")[0], photos / "sunflower" / "new.jpg")
        changed = photos / "sunflower" / sorted(os.listdir(photos / "sunflower"))[0]
        shutil.copy(dataset_photos("Leopards")[0], changed)  # same name, new content
        report = collection.update(photos, progress=False)
        assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 10)
        assert len(collection) == 12
        assert str(gone) not in {i.path for i in collection.items()}
        hit = collection.search(dataset_photos("Leopards")[0], k=1)[0]
        assert hit.path == str(changed) and hit.score > 0.999


def test_second_folder_adds_to_the_collection(make_photo_folder, tmp_path):
    a = make_photo_folder(["pizza"], 3, name="a")
    b = make_photo_folder(["Leopards"], 4, name="b")
    with Collection.create(tmp_path / "c") as collection:
        collection.update(a, progress=False)
        collection.update(b, progress=False)
        assert collection.categories() == {"Leopards": 4, "pizza": 3}
        assert collection.update(a, progress=False).removed == 0


def test_identical_files_are_embedded_once(tmp_path):
    photos = tmp_path / "photos"
    (photos / "x").mkdir(parents=True)
    (photos / "y").mkdir()
    source = dataset_photos("pizza")[0]
    for name in ("x/one.jpg", "x/two.jpg", "y/three.jpg"):
        shutil.copy(source, photos / name)
    with Collection.create(tmp_path / "c") as collection:
        report = collection.update(photos, progress=False)
        assert (report.added, report.embedded) == (3, 1)
        shutil.copy(source, photos / "y" / "four.jpg")
        report = collection.update(photos, progress=False)
        assert (report.added, report.embedded) == (1, 0)
        results = collection.search(source, k=4)
        assert len(results) == 4 and all(r.score > 0.999 for r in results)
        assert {r.category for r in results} == {"x", "y"}


def test_encoders_are_never_mixed(five_category_collection, tmp_path):
    fake = tmp_path / "other"
    fake.mkdir()
    from lookalike.encoders.registry import resolve_onnx

    onnx = resolve_onnx("efficientnet_lite0")
    shutil.copy(onnx, fake / "encoder.onnx")
    sidecar = onnx.with_suffix(".json").read_text().replace('"name": "efficientnet_lite0"', '"name": "other"')
    (fake / "encoder.json").write_text(sidecar)
    with pytest.raises(CollectionError, match="cannot be mixed"):
        Collection.open_or_create(five_category_collection, encoder=str(fake))


def test_missing_collection_is_a_clear_error(tmp_path):
    with pytest.raises(CollectionError, match="no collection at"):
        Collection.open(tmp_path / "nothing")


def test_second_writer_is_refused_while_one_runs(make_photo_folder, tmp_path):
    photos = make_photo_folder(["pizza"], 2, name="lock")
    with Collection.create(tmp_path / "c") as first, Collection.open(tmp_path / "c") as second:
        with first._write_lock():
            with pytest.raises(CollectionError, match="being indexed by process"):
                second.update(photos, progress=False)
        assert second.update(photos, progress=False).added == 2


def test_reader_sees_new_commits(make_photo_folder, tmp_path):
    photos = make_photo_folder(["pizza"], 3, name="reader")
    with Collection.create(tmp_path / "c") as writer, Collection.open(tmp_path / "c", readonly=True) as reader:
        assert len(reader) == 0
        writer.update(photos, progress=False)
        assert len(reader) == 3
        np.testing.assert_allclose(np.linalg.norm(reader.vector_of(1)), 1.0, atol=1e-5)


def test_symlinked_category_folder_is_indexed_once(make_photo_folder, tmp_path):
    real = make_photo_folder(["pizza"], 3, name="real")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "food").symlink_to(real / "pizza", target_is_directory=True)
    (photos / "food" / "again").symlink_to(real / "pizza", target_is_directory=True)  # a loop
    (photos / "snacks").symlink_to(real / "pizza", target_is_directory=True)  # the same folder twice
    with Collection.create(tmp_path / "c") as collection:
        report = collection.update(photos, progress=False)
        assert (report.added, report.skipped) == (3, [])
        assert collection.categories() == {"food": 3}
