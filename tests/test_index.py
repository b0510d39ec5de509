"""Index backends on real Caltech-101 embeddings: recall against exact search, incremental changes,
category filters that return k, damaged index files rebuilt, a reader searching while a writer commits."""
from __future__ import annotations

import logging
import shutil
import threading

import numpy as np
import pytest

from lookalike import Collection
from lookalike.cli import main as cli
from lookalike.index import create_index
from lookalike.index.store import INDEX_JSON

CATEGORIES = ["accordion", "airplanes", "Leopards", "pizza", "sunflower", "ketch", "watch", "brain"]
ANN = ["annoy", "hnsw"]


@pytest.fixture(scope="module")
def base_collection(make_photo_folder, tmp_path_factory):
    """25 real photos of each of 8 categories, embedded once; tests copy it before changing it."""
    photos = make_photo_folder(CATEGORIES, 25, name="index-photos")
    path = tmp_path_factory.mktemp("index") / "base.lookalike"
    with Collection.create(path, backend="exact") as collection:
        collection.update(photos, progress=False)
    return path


@pytest.fixture(scope="module")
def vectors(base_collection):
    with Collection.open(base_collection, readonly=True) as collection:
        ids = np.asarray([item.id for item in collection.items()], np.int64)
        return ids, np.stack([collection.vector_of(int(i)) for i in ids])


def copy_of(base, tmp_path):
    return shutil.copytree(base, tmp_path / "c.lookalike")


def exact_top(ids, matrix, queries, k, allowed=None):
    exact = create_index("exact", matrix.shape[1])
    exact.build(ids, matrix)
    return exact.search(queries, k, allowed)


@pytest.mark.parametrize("backend", ANN)
def test_default_settings_find_what_exact_search_finds(vectors, backend):
    ids, matrix = vectors
    index = create_index(backend, matrix.shape[1])
    index.build(ids, matrix)
    found, scores = index.search(matrix, 11)
    truth, truth_scores = exact_top(ids, matrix, matrix, 11)
    recall = np.mean([len(set(f[1:]) & set(t[1:])) / 10 for f, t in zip(found, truth)])  # itself aside
    assert recall >= 0.95
    assert (found[:, 0] == ids).mean() > 0.99  # each photo finds itself first, with cosine 1
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    same = found == truth  # and reports the same cosine as exact search for the same items
    np.testing.assert_allclose(scores[same], truth_scores[same], atol=1e-4)


@pytest.mark.parametrize("backend", ANN)
def test_add_and_remove_round_trip(vectors, backend, tmp_path):
    ids, matrix = vectors
    half = len(ids) // 2
    index = create_index(backend, matrix.shape[1])
    index.build(ids[:half], matrix[:half])
    index.add(ids[half:], matrix[half:])
    gone = ids[::3]
    index.remove(gone)
    kept = ~np.isin(ids, gone)
    found, _ = index.search(matrix, 5)
    assert not np.isin(found, gone).any(), "a removed item came back"
    assert (found[kept, 0] == ids[kept]).all(), "a kept item no longer finds itself"
    assert len(index) == kept.sum()

    size = sum((tmp_path / f).stat().st_size for f in index.save(tmp_path, "before"))
    index.add(gone, matrix[::3])  # re-added: found again, in the same space
    found, _ = index.search(matrix[::3], 1)
    assert (found[:, 0] == gone).all()
    if backend == "hnsw":  # removed slots were reused, the graph did not grow
        assert sum((tmp_path / f).stat().st_size for f in index.save(tmp_path, "after")) == size


@pytest.mark.parametrize("backend", ANN)
def test_filtered_search_returns_k_of_a_small_category(vectors, backend):
    ids, matrix = vectors
    index = create_index(backend, matrix.shape[1])
    index.build(ids, matrix)
    allowed = np.sort(ids[::8][:20])  # 20 of 200 items
    found, _ = index.search(matrix[:30], 10, allowed)
    assert (found >= 0).all() and np.isin(found, allowed).all()
    truth, _ = exact_top(ids, matrix, matrix[:30], 10, allowed)
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= 0.95


@pytest.mark.parametrize("backend", ["exact", "annoy", "hnsw"])
def test_category_search_returns_k_with_every_backend(base_collection, tmp_path, backend):
    path = copy_of(base_collection, tmp_path)
    with Collection.open(path) as collection:
        collection.set_backend(backend, progress=False)
    with Collection.open(path, readonly=True) as reader:
        item = next(i for i in reader.items() if i.category == "pizza")
        for category in CATEGORIES:
            results = reader.similar(item.id, k=25, category=category)
            assert len(results) == 25 and {r.category for r in results} == {category}
        assert reader.similar(item.id, k=1)[0].id == item.id
    assert ((path / INDEX_JSON).exists()) == (backend != "exact")


@pytest.mark.parametrize("damage", ["delete", "corrupt", "truncate"])
@pytest.mark.parametrize("backend", ANN)
def test_damaged_index_file_is_rebuilt_from_the_vectors(base_collection, tmp_path, caplog, backend, damage):
    path = copy_of(base_collection, tmp_path)
    with Collection.open(path) as collection:
        collection.set_backend(backend, progress=False)
        item = next(collection.items())
        expected = [r.id for r in collection.similar(item.id, k=10)]
    target = next(p for p in path.glob(f"index.{backend}.*") if not p.name.endswith(".items.npy"))
    if damage == "delete":
        target.unlink()
    elif damage == "corrupt":
        with open(target, "r+b") as f:
            f.seek(target.stat().st_size // 2)
            f.write(b"\xff" * 64)
    else:
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size // 3)
    with caplog.at_level(logging.WARNING, logger="lookalike"):
        with Collection.open(path, readonly=True) as reader:
            assert [r.id for r in reader.similar(item.id, k=10)] == expected
    assert any(("missing" if damage == "delete" else "damaged") in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lookalike"):
        with Collection.open(path, readonly=True) as reader:  # the rebuilt index was saved
            assert [r.id for r in reader.similar(item.id, k=10)] == expected
    assert not caplog.records


def test_reader_keeps_answering_while_an_index_run_commits(base_collection, make_photo_folder, tmp_path, caplog):
    path = copy_of(base_collection, tmp_path)
    with Collection.open(path) as collection:
        collection.set_backend("hnsw", progress=False)
    more = make_photo_folder(["butterfly", "chair"], 8, name="more-photos")
    reader = Collection.open(path, readonly=True)
    probe = next(reader.items())
    seen_sizes = set()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with Collection.open(path) as writer:
                writer.update(more, progress=False, batch_size=4)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    writer = threading.Thread(target=write)
    with caplog.at_level(logging.WARNING, logger="lookalike"):
        writer.start()
        while writer.is_alive():
            results = reader.similar(probe.id, k=10)
            assert len(results) == 10 and results[0].id == probe.id
            assert all(a.score >= b.score for a, b in zip(results, results[1:]))
            seen_sizes.add(len(reader))
        writer.join()
    assert not errors, errors
    assert not caplog.records, "a reader rebuilt the index while the writer held it"
    assert len(reader) == 200 + 16  # the committed run is seen
    new = next(i for i in reader.items() if i.category == "butterfly")
    assert reader.similar(new.id, k=1)[0].id == new.id
    assert len(reader.similar(new.id, k=8, category="butterfly")) == 8
    assert type(reader._index).__name__ == "HnswIndex"  # from the saved index, not an exact fallback
    assert len(seen_sizes) >= 2, "the reader never saw the writer's intermediate commits"
    reader.close()


def test_cli_backend_switch_and_search_params(base_collection, tmp_path, capsys, caltech):
    path = copy_of(base_collection, tmp_path)
    assert cli(["index", "-c", str(path), "--backend", "annoy", "--trees", "20", "-q"]) == 0
    query = caltech / "pizza" / "image_0030.jpg"
    assert cli(["search", str(query), "-c", str(path), "--search-k", "500", "--json", "-k", "5"]) == 0
    assert '"category": "pizza"' in capsys.readouterr().out
    assert cli(["info", "-c", str(path), "--json"]) == 0
    assert '"backend": "annoy"' in capsys.readouterr().out and (path / INDEX_JSON).exists()
    assert cli(["index", "-c", str(path), "--backend", "auto", "-q"]) == 0  # 200 items: exact, no index file
    assert not (path / INDEX_JSON).exists() and not list(path.glob("index.*"))
