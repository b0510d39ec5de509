"""One bad file never stops a run: every tricky file is embedded or skipped with its reason."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from lookalike import Collection
from lookalike.images import decode_file, Preprocess
from badfiles import EXPECTED_SIZE, make_image_zoo
from conftest import dataset_photos


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo") / "zoo"
    expected = make_image_zoo(root, dataset_photos("accordion")[0])
    return root, expected


@pytest.fixture(scope="module")
def zoo_collection(zoo, tmp_path_factory):
    root, _ = zoo
    collection = Collection.create(tmp_path_factory.mktemp("c") / "zoo.lookalike")
    report = collection.update(root, progress=False)
    yield collection, report
    collection.close()


def test_every_good_file_is_indexed_and_every_bad_one_reported(zoo, zoo_collection):
    root, expected = zoo
    collection, report = zoo_collection
    indexed = {item.path for item in collection.items()}
    skipped = dict(report.skipped)
    for rel, reason in expected.items():
        path = str(root / rel)
        if reason is None:
            assert path in indexed, f"{rel} should be indexed"
        else:
            assert path in skipped, f"{rel} should be skipped"
            assert reason in skipped[path].lower(), f"{rel}: {skipped[path]!r} should mention {reason!r}"
    assert report.added == sum(1 for r in expected.values() if r is None)
    assert len(report.skipped) == sum(1 for r in expected.values() if r is not None)


def test_info_lists_skipped_files_with_reasons(zoo, zoo_collection):
    collection, report = zoo_collection
    listed = {s["path"]: s["reason"] for s in collection.info()["skipped"]}
    assert listed == dict(report.skipped)


def test_categories_come_from_first_level_folders(zoo, zoo_collection):
    root, _ = zoo
    collection, _ = zoo_collection
    by_path = {item.path: item.category for item in collection.items()}
    assert by_path[str(root / "good/nested/deeper/x.png")] == "good"
    assert by_path[str(root / "my photo (1).jpg")] is None
    assert by_path[str(root / "good/café/naïve 写真.jpg")] == "good"


def test_exif_orientation_is_applied(zoo, zoo_collection):
    root, _ = zoo
    collection, _ = zoo_collection
    for rel, (width, height) in EXPECTED_SIZE.items():
        item = next(i for i in collection.items() if i.path == str(root / rel))
        assert (item.width, item.height) == (width, height)


def test_every_format_decodes_to_a_normalised_rgb_tensor(zoo):
    root, expected = zoo
    prep = Preprocess()
    for rel, reason in expected.items():
        if reason is None:
            tensor = decode_file(str(root / rel), prep).tensor
            assert tensor.shape == (3, 224, 224) and np.isfinite(tensor).all()
            assert -1.01 <= tensor.min() and tensor.max() <= 1.01


def test_rerun_does_not_retry_unchanged_bad_files(zoo, zoo_collection):
    root, expected = zoo
    collection, first = zoo_collection
    again = collection.update(root, progress=False)
    assert (again.added, again.updated, again.removed, again.embedded) == (0, 0, 0, 0)
    assert again.unchanged == first.added
    assert dict(again.skipped) == dict(first.skipped)


def test_fixed_bad_file_is_indexed_on_the_next_run(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "later.jpg").write_bytes(b"")
    with Collection.create(tmp_path / "c") as collection:
        assert "empty" in collection.update(photos, progress=False).skipped[0][1]
        shutil.copy(dataset_photos("pizza")[0], photos / "later.jpg")
        report = collection.update(photos, progress=False)
        assert (report.added, report.skipped) == (1, [])
