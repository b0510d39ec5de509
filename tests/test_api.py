"""The REST API as a client sees it: a real server on loopback over a small real collection."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from badfiles import _png_bomb
from conftest import FIVE_CATEGORIES, dataset_photos
from lookalike import Collection
from lookalike.server.batcher import MicroBatcher
from lookalike.server.run import start_background
from lookalike.server.service import ServerConfig


@pytest.fixture(scope="module")
def api(five_category_collection):
    server = start_background(ServerConfig(str(five_category_collection)), ui=False)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
    server.stop()


def upload(client: httpx.Client, data: bytes, name: str = "query.jpg", **form) -> httpx.Response:
    return client.post("/api/search", files={"image": (name, data, "application/octet-stream")}, data=form)


def test_search_by_upload_finds_the_same_category(api, held_back_queries):
    for category, photo in held_back_queries.items():
        found = upload(api, photo.read_bytes(), photo.name, k=5)
        assert found.status_code == 200, found.text
        body = found.json()
        assert body["query"] == photo.name and body["k"] == 5 and body["predicted"] == []
        assert len(body["results"]) == 5
        assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
        assert body["results"][0]["category"] == category
        first = body["results"][0]
        assert first["image_url"] == f"/api/items/{first['id']}/image"
        assert first["thumbnail_url"] == f"/api/items/{first['id']}/thumbnail"
        scores = [r["score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True)


def test_search_within_a_category(api, held_back_queries):
    body = upload(api, held_back_queries["pizza"].read_bytes(), k=3, category="sunflower").json()
    assert [r["category"] for r in body["results"]] == ["sunflower"] * 3 and body["category"] == "sunflower"
    unknown = upload(api, held_back_queries["pizza"].read_bytes(), category="unicorn")
    assert unknown.status_code == 404 and "unicorn" in unknown.json()["detail"]


def test_more_like_an_item_image_and_thumbnail(api, five_category_collection):
    first = upload(api, dataset_photos("Leopards")[0].read_bytes(), k=1).json()["results"][0]
    similar = api.get(f"/api/items/{first['id']}/similar", params={"k": 4}).json()
    assert similar["id"] == first["id"] and similar["query"] == first["path"]
    assert similar["results"][0]["id"] == first["id"] and similar["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert {r["category"] for r in similar["results"]} == {"Leopards"}

    image = api.get(first["image_url"])
    assert image.status_code == 200 and image.content == Path(first["path"]).read_bytes()
    thumb = api.get(first["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/jpeg"
    original = Image.open(first["path"]).size
    assert max(Image.open(io.BytesIO(thumb.content)).size) == min(256, max(original))
    again = api.get(first["thumbnail_url"], headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304


def test_categories_stats_health_and_schema(api, five_category_collection):
    assert api.get("/api/categories").json() == [{"name": c, "count": 12} for c in sorted(FIVE_CATEGORIES, key=str.lower)]
    stats = api.get("/api/stats").json()
    assert stats["items"] == 60 and stats["categories"] == 5
    with Collection.open(five_category_collection, readonly=True) as collection:
        index = collection.info()["index"]
    assert index["backend"] == "auto" and index["in_use"] == "exact"  # 60 items: below the switch to HNSW
    assert stats["encoder"]["name"] == "efficientnet_lite0" and stats["backend"] == "exact"
    assert stats["index"]["size"] == 60
    assert api.get("/healthz").json() == {"status": "ok", "items": 60}
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/items/{item_id}/similar", "/api/items/{item_id}/thumbnail"} <= set(paths)


def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(api, held_back_queries):
    photo = held_back_queries["accordion"].read_bytes()
    tiny = Image.new("RGB", (8, 8), "red")
    cases = {
        "empty upload": (upload(api, b""), 400, "empty"),
        "text file": (upload(api, b"just some words\n" * 10, "notes.txt"), 400, "not an image"),
        "truncated JPEG": (upload(api, photo[: len(photo) // 3]), 400, "truncated"),
        "40000x40000 PNG": (upload(api, _png_bomb(tiny, 40000, 40000), "bomb.png"), 413, "too large"),
        "25 MB upload": (upload(api, photo + bytes(25 * 1024 * 1024)), 413, "too large"),
        "unknown id": (api.get("/api/items/987654/similar"), 404, "no item"),
        "unknown image": (api.get("/api/items/987654/image"), 404, "no item"),
        "k=0": (upload(api, photo, k=0), 422, "k: Input should be greater than or equal to 1"),
        "k=100000": (api.get("/api/items/1/similar", params={"k": 100000}), 422, "less than or equal to 1000"),
        "id not a number": (api.get("/api/items/abc/thumbnail"), 422, "item_id"),
        "huge id": (api.get(f"/api/items/{2**70}/image"), 422, "item_id"),
    }
    for name, (response, status, words) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert words in response.json()["detail"], (name, response.text)
    for evil in ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd"]:
        response = api.get(f"/api/items/{evil}/image")
        assert response.status_code in (404, 422) and b"root:" not in response.content, evil
    assert api.get("/healthz").status_code == 200
    assert upload(api, photo, k=2).json()["results"][0]["category"] == "accordion"


def test_concurrent_uploads_are_answered_correctly(api, held_back_queries):
    """Uploads arriving together share encoder batches; each still gets its own answer."""
    jobs = [(c, p.read_bytes()) for c, p in held_back_queries.items()] * 3
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: upload(api, job[1], k=1).json(), jobs))
    assert [a["results"][0]["category"] for a in answers] == [c for c, _ in jobs]


def test_a_running_server_sees_reindexing(five_category_collection, make_photo_folder, tmp_path):
    path = tmp_path / "growing.lookalike"
    shutil.copytree(five_category_collection, path)
    server = start_background(ServerConfig(str(path)), ui=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/api/stats").json()["items"] == 60
            extra = make_photo_folder(["ketch"], 4, name="extra")
            with Collection.open(path) as writer:
                writer.update(extra, progress=False)
            query = dataset_photos("ketch")[0].read_bytes()
            assert upload(client, query, k=1).json()["results"][0]["category"] == "ketch"
            assert client.get("/api/stats").json()["items"] == 64
    finally:
        server.stop()


def test_token_protects_page_and_api(five_category_collection):
    server = start_background(ServerConfig(str(five_category_collection), token="s3cret"), ui=True)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/healthz").status_code == 200
            for path in ["/", "/api/stats", "/openapi.json"]:
                refused = client.get(path)
                assert refused.status_code == 401 and "token" in refused.json()["detail"], path
            assert client.get("/api/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get("/api/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
            page = client.get("/", params={"token": "s3cret"})  # a browser opening the printed link
            assert page.status_code == 200 and "lookalike_token" in page.headers["set-cookie"]
            assert client.get("/api/stats").status_code == 200  # the cookie now carries the token
    finally:
        server.stop()


def test_empty_collection_answers_with_no_results(tmp_path, held_back_queries):
    Collection.create(tmp_path / "empty.lookalike").close()
    server = start_background(ServerConfig(str(tmp_path / "empty.lookalike")), ui=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            body = upload(client, held_back_queries["pizza"].read_bytes()).json()
            assert body["results"] == [] and client.get("/api/categories").json() == []
    finally:
        server.stop()


def test_micro_batcher_joins_waiting_inputs_into_one_batch():
    """While one batch runs, inputs that arrive queue up and run together as the next batch."""
    running, release, sizes = threading.Event(), threading.Event(), []

    def double(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        running.set()
        release.wait(10)
        return batch * 2

    batcher = MicroBatcher(double, max_batch=16, max_wait_s=0)
    try:
        first = batcher.submit(np.array([1.0]))
        running.wait(10)
        rest = [batcher.submit(np.array([float(i)])) for i in range(2, 9)]
        release.set()
        assert first.result(10)[0] == 2.0
        assert [f.result(10)[0] for f in rest] == [2.0 * i for i in range(2, 9)]
        assert sizes == [1, 7]
    finally:
        batcher.close()


def test_micro_batcher_one_by_one_and_errors():
    sizes = []

    def fail_on_negative(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        if (batch < 0).any():
            raise ValueError("negative input")
        return batch

    batcher = MicroBatcher(fail_on_negative, max_batch=1)
    try:
        futures = [batcher.submit(np.array([x])) for x in (1.0, -1.0, 3.0)]
        assert futures[0].result(10)[0] == 1.0 and futures[2].result(10)[0] == 3.0
        with pytest.raises(ValueError, match="negative"):
            futures[1].result(10)
        assert sizes == [1, 1, 1]
    finally:
        batcher.close()


def test_micro_batcher_waits_for_announced_inputs_only():
    """A lone input runs at once; inputs announced as on their way join the batch being formed."""
    sizes = []
    batcher = MicroBatcher(lambda b: sizes.append(len(b)) or b, max_batch=16, max_wait_s=30)
    try:
        assert batcher.submit(np.array([1.0])).result(timeout=10)[0] == 1.0  # no 30 s wait for company
        with batcher.expecting(), batcher.expecting():
            first = batcher.submit(np.array([2.0]))
            second = batcher.submit(np.array([3.0]))
        assert (first.result(timeout=10)[0], second.result(timeout=10)[0]) == (2.0, 3.0)
        assert sizes == [1, 2]
    finally:
        batcher.close()


def test_serve_command_refuses_a_missing_collection(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "serve", "--collection", str(tmp_path / "nothing")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("lookalike: error: no collection at") and len(result.stderr.splitlines()) == 1
