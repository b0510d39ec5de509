"""Embedding on Ray (a local Ray of 2 CPUs) gives the same collection as the single-process path."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray

from lookalike import Collection
from lookalike.cli import main
from lookalike.collection import open_collection
from lookalike.distributed import RayEmbedder

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the whole module: starting one takes several seconds."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(make_photo_folder) -> Path:
    """24 real photos in three categories, a copy of one of them, and two files that are not photos."""
    root = make_photo_folder(["accordion", "pizza", "sunflower"], 8, name="rayphotos")
    shutil.copy2(next((root / "pizza").iterdir()), root / "sunflower" / "copy_of_pizza.jpg")
    (root / "accordion" / "empty.jpg").write_bytes(b"")
    (root / "pizza" / "notes.jpg").write_text("not a photo")
    return root


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    """The single-process result."""
    collection = Collection.create(tmp_path_factory.mktemp("ref") / "ref.lookalike")
    report = collection.update(photos, progress=False)
    yield collection, report
    collection.close()


def by_path(collection) -> dict[str, tuple]:
    return {i.path: (i.root, i.category, i.size, i.mtime_ns, i.hash, i.width, i.height) for i in collection.items()}


def assert_same(collection, reference: Collection) -> None:
    """Same catalogue rows, vectors equal within float tolerance, same files skipped for the same reasons."""
    assert by_path(collection) == by_path(reference)
    assert len(collection) == len(reference)
    mine = {i.path: i.id for i in collection.items()}
    for item in reference.items():
        np.testing.assert_allclose(collection.vector_of(mine[item.path]), reference.vector_of(item.id), atol=1e-5)
    assert collection.info()["skipped"] == reference.info()["skipped"]


def test_ray_index_equals_single_process(ray_session, photos, reference, tmp_path):
    expected, expected_report = reference
    with Collection.create(tmp_path / "ray.lookalike") as collection, RayEmbedder(batch_size=4) as embedder:
        report = collection.update(photos, progress=False, embedder=embedder)
        assert_same(collection, expected)
        assert (report.added, report.embedded, report.skipped) == (
            expected_report.added, expected_report.embedded, expected_report.skipped)
        assert dict(report.skipped)[str(photos / "accordion" / "empty.jpg")] == "empty file"

        again = collection.update(photos, progress=False, embedder=embedder)
        assert (again.added, again.updated, again.unchanged, again.embedded) == (0, 0, expected_report.added, 0)


def embed_workers() -> list[psutil.Process]:
    """This test's Ray actors that run EmbedBlock (children of the Ray this process started)."""
    found = []
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "EmbedBlock" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_killed_worker_neither_loses_nor_duplicates_items(ray_session, photos, reference, tmp_path):
    expected, _ = reference
    killed: list[int] = []

    def kill_one_worker_after_first_batch(files, encoder, known):
        for n, batch in enumerate(embedder(files, encoder, known)):
            if n == 0:
                worker = embed_workers()[0]
                worker.send_signal(signal.SIGKILL)
                killed.append(worker.pid)
            yield batch

    with Collection.create(tmp_path / "killed.lookalike") as collection, RayEmbedder(batch_size=2) as embedder:
        report = collection.update(photos, progress=False, embedder=kill_one_worker_after_first_batch)
        assert killed and not psutil.pid_exists(killed[0])
        assert report.added == len(by_path(expected))
        assert_same(collection, expected)


def test_cli_index_on_ray_into_milvus(ray_session, photos, reference, tmp_path, capsys):
    expected, _ = reference
    spec = f"milvus:{tmp_path / 'photos.db'}"
    assert main(["index", str(photos), "--store", spec, "--ray", "--quiet"]) == 0
    assert f"{len(by_path(expected))} added" in capsys.readouterr().out
    with open_collection(spec, readonly=True) as store:
        assert_same(store, expected)


def test_unreachable_ray_address_is_a_quick_one_line_error(photos: Path, tmp_path: Path, capsys):
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"):
        assert main(["index", str(photos), "-c", str(tmp_path / "c.lookalike"), "--ray", address, "-q"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("lookalike: error:") for e in errors)
    assert "cannot reach Ray at 127.0.0.1:1" in errors[0] and "not auto, host:port" in errors[2]
