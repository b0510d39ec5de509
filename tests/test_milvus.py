"""A Milvus store (Milvus Lite, for real) does what a local collection does: index, search, filter, info."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from badfiles import make_image_zoo
from conftest import dataset_photos
from lookalike import Collection
from lookalike.cli import main
from lookalike.collection import CollectionError, open_collection
from lookalike.milvus_store import MilvusCollection

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def local(five_category_collection):
    with Collection.open(five_category_collection, readonly=True) as collection:
        yield collection


@pytest.fixture(scope="module")
def store(five_category_folder, tmp_path_factory):
    """five_category_folder indexed into a Milvus Lite store."""
    spec = f"milvus:{tmp_path_factory.mktemp('milvus') / 'five.db'}"
    with MilvusCollection.create(spec) as store:
        report = store.update(five_category_folder, progress=False)
        assert report.added == 60
        yield store


def by_path(collection) -> dict[str, tuple]:
    return {i.path: (i.root, i.category, i.size, i.mtime_ns, i.hash, i.width, i.height) for i in collection.items()}


def test_store_holds_what_the_local_collection_holds(store, local):
    assert by_path(store) == by_path(local)
    assert len(store) == len(local) == 60
    assert store.categories() == local.categories()
    ids = {i.path: i.id for i in store.items()}
    for item in local.items():
        np.testing.assert_allclose(store.vector_of(ids[item.path]), local.vector_of(item.id), atol=1e-6)
    info = store.info()
    assert (info["items"], info["categories"], info["roots"]) == (60, local.info()["categories"], local.info()["roots"])
    assert info["encoder"] == local.info()["encoder"]


def test_search_finds_what_exact_search_finds(store, local, held_back_queries):
    for category, query in held_back_queries.items():
        mine, exact = store.search(query, k=10), local.search(query, k=10)
        assert [r.rank for r in mine] == list(range(1, 11))
        assert {r.path for r in mine} == {r.path for r in exact}
        np.testing.assert_allclose([r.score for r in mine], [r.score for r in exact], atol=1e-5)
        assert mine[0].category == category


def test_category_filter_runs_in_milvus(store, local, held_back_queries):
    results = store.search(held_back_queries["pizza"], k=20, category="sunflower")
    assert len(results) == 12 and {r.category for r in results} == {"sunflower"}
    assert [r.path for r in results] == [r.path for r in local.search(held_back_queries["pizza"], k=20, category="sunflower")]
    with pytest.raises(CollectionError, match="no category 'tulip'"):
        store.search(held_back_queries["pizza"], category="tulip")


def test_similar_item_and_reopening(store):
    first = next(iter(store.items()))
    with open_collection(store.path, readonly=True) as reader:
        assert len(reader) == 60
        similar = reader.similar(first.id, k=3)
        assert similar[0].path == first.path and similar[0].score == pytest.approx(1.0, abs=1e-5)
        assert reader.item(first.id) == first
        assert [i.id for i in reader.items()] == sorted(i.id for i in reader.items())
        with pytest.raises(CollectionError, match="read-only"):
            reader.update(Path(first.root))


def test_incremental_update_changes_only_what_changed(make_photo_folder, tmp_path):
    folder = make_photo_folder(["accordion", "pizza"], 3, name="milvus_incremental")
    odd = folder / 'it\'s "odd"'  # a category name that needs escaping in a filter expression
    odd.mkdir()
    shutil.copy2(dataset_photos("Leopards")[0], odd / "leopard.jpg")
    with MilvusCollection.create(f"milvus:{tmp_path / 'inc.db'}") as store:
        assert store.update(folder, progress=False).added == 7
        again = store.update(folder, progress=False)
        assert (again.added, again.updated, again.removed, again.unchanged, again.embedded) == (0, 0, 0, 7, 0)

        changed = sorted((folder / "pizza").iterdir())[0]
        changed.write_bytes(dataset_photos("sunflower")[0].read_bytes())
        sorted((folder / "accordion").iterdir())[0].unlink()
        shutil.copy2(dataset_photos("pizza")[5], folder / "pizza" / "new.jpg")
        report = store.update(folder, progress=False)
        assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 5)
        assert len(store) == 7
        ids = {i.path: i.id for i in store.items()}
        assert store.similar(ids[str(changed)], k=1)[0].path == str(changed)
        assert store.search(dataset_photos("sunflower")[0], k=1)[0].path == str(changed)

        hits = store.search(dataset_photos("Leopards")[1], k=5, category='it\'s "odd"')
        assert [r.path for r in hits] == [str(odd / "leopard.jpg")]


def test_bad_files_are_reported_as_in_a_local_collection(tmp_path):
    zoo = tmp_path / "zoo"
    make_image_zoo(zoo, dataset_photos("accordion")[0])
    with Collection.create(tmp_path / "zoo.lookalike") as local, MilvusCollection.create(f"milvus:{tmp_path / 'zoo.db'}") as store:
        expected, report = local.update(zoo, progress=False), store.update(zoo, progress=False)
        assert report.skipped == expected.skipped and len(report.skipped) >= 5
        assert (report.added, report.embedded) == (expected.added, expected.embedded)
        assert by_path(store) == by_path(local)
        assert store.info()["skipped"] == local.info()["skipped"]
        again = store.update(zoo, progress=False)
        assert again.skipped == expected.skipped and again.embedded == 0


def test_cli_index_search_info_on_a_milvus_store(make_photo_folder, tmp_path, capsys):
    folder = make_photo_folder(["accordion", "pizza"], 3, name="milvus_cli")
    spec = f"milvus:{tmp_path / 'cli.db'}"
    assert main(["index", str(folder), "--store", spec, "-q"]) == 0
    assert "6 added" in capsys.readouterr().out
    query = dataset_photos("pizza")[10]
    assert main(["search", str(query), "--collection", spec, "-k", "2", "--category", "pizza", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["category"] for r in results] == ["pizza", "pizza"]
    assert main(["info", "--store", spec]) == 0
    out = capsys.readouterr().out
    assert "images       6" in out and "milvus" in out
    assert main(["index", str(folder), "--store", spec, "-q"]) == 0
    assert "0 added, 0 updated, 0 removed, 6 unchanged" in capsys.readouterr().out


def test_bad_store_specs_get_one_line_errors(tmp_path, capsys):
    assert main(["info", "--store", f"milvus:{tmp_path / 'missing.db'}"]) == 2
    assert "no collection at" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "missing.db")
    assert main(["info", "--store", f"milvus:{tmp_path / 'photos.txt'}"]) == 2
    assert "ends in .db" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info", "--store", str(tmp_path / "x.db")])
    assert "expected milvus:URI" in capsys.readouterr().err
    assert main(["info", "--store", "milvus:http://127.0.0.1:9"]) == 2  # nothing listens on port 9
    assert "cannot open Milvus at http://127.0.0.1:9" in capsys.readouterr().err
