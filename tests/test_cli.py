"""The `lookalike` command as a user runs it: tables, JSON, progress, one-line errors."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import dataset_photos

LOOKALIKE = [sys.executable, "-m", "lookalike.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*LOOKALIKE, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_index_search_info(make_photo_folder, tmp_path):
    photos = make_photo_folder(["accordion", "sunflower"], 5, name="cli")
    collection = tmp_path / "my.lookalike"
    indexed = run("index", photos, "--collection", collection)
    assert "10 added, 0 updated, 0 removed, 0 unchanged, 0 skipped" in indexed.stdout
    assert "10/10" in indexed.stderr and "img/s" in indexed.stderr  # progress bar with counts and rate

    query = photos / "sunflower" / dataset_photos("sunflower")[0].name
    table = run("search", query, "--collection", collection, "-k", "3").stdout.splitlines()
    assert table[0].split() == ["rank", "score", "category", "path"]
    assert table[1].split()[:3] == ["1", "1.000", "sunflower"] and table[1].endswith(str(query))

    out = json.loads(run("search", query, "--collection", collection, "-k", "4", "--json").stdout)
    assert set(out) == {"query", "k", "results"} and out["k"] == 4 and out["query"] == str(query)
    assert [r["rank"] for r in out["results"]] == [1, 2, 3, 4]
    first = out["results"][0]
    assert set(first) == {"rank", "path", "category", "score"}
    assert first["path"] == str(query) and first["category"] == "sunflower" and first["score"] > 0.999

    only = json.loads(run("search", query, "-c", collection, "--json", "--category", "accordion").stdout)
    assert {r["category"] for r in only["results"]} == {"accordion"} and len(only["results"]) == 5

    info = run("info", "--collection", collection).stdout
    assert "images       10" in info and "efficientnet_lite0 (1280-d" in info and "skipped      0" in info

    again = run("index", photos, "--collection", collection)
    assert "0 added, 0 updated, 0 removed, 10 unchanged, 0 skipped" in again.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "{query}", "-c", "{missing}"], "no collection at"),
        (["search", "{text}", "-c", "{collection}"], "not an image"),
        (["search", "{nofile}", "-c", "{collection}"], "no such file"),
        (["index", "{nofile}", "-c", "{collection}"], "not a folder"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message, five_category_collection, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    values = {
        "query": dataset_photos("pizza")[0],
        "missing": tmp_path / "none.lookalike",
        "text": text,
        "collection": five_category_collection,
        "nofile": tmp_path / "nope.jpg",
    }
    result = run(*[a.format(**values) for a in args], check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("lookalike: error:") and message in result.stderr


def test_killed_index_run_loses_nothing_and_repeats_nothing(make_photo_folder, tmp_path):
    photos = make_photo_folder(["airplanes", "Motorbikes"], 150, name="kill")
    collection = tmp_path / "killed.lookalike"
    proc = subprocess.Popen([*LOOKALIKE, "index", str(photos), "-c", str(collection), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    deadline = time.time() + 120
    while time.time() < deadline and committed < 40:
        time.sleep(0.05)
        try:
            with sqlite3.connect(collection / "catalog.sqlite", timeout=1) as db:
                committed = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        except sqlite3.Error:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < committed < 300, "the kill should land mid-run"

    from lookalike import Collection

    with Collection.open(collection, readonly=True) as c:
        kept = len(c)
        assert kept >= committed
        assert c.search(dataset_photos("Motorbikes")[0], k=3)[0].score > 0.99

    out = run("index", photos, "-c", collection, "-q").stdout
    assert f"{300 - kept} added, 0 updated, 0 removed, {kept} unchanged, 0 skipped" in out
    with Collection.open(collection, readonly=True) as c:
        paths = [i.path for i in c.items()]
        assert len(paths) == len(set(paths)) == 300
        rows = [i.row for i in c.items()]
        assert len(set(rows)) == 300
