"""`lookalike evaluate`: AP@k as documented, the JSON a user scripts against, and the HTML report."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Collection
from lookalike.cli import main
from lookalike.evaluation import average_precision_at_k, evaluate_collection, evaluate_vectors


def test_average_precision_counts_only_ranks_that_hold_a_relevant_photo():
    ap = average_precision_at_k(np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool))
    # (1/1 + 2/3) / 2 relevant found;  (1/2) / 1;  none found -> 0;  all relevant -> 1
    assert ap == pytest.approx([5 / 6, 0.5, 0.0, 1.0])


def _angle(degrees: float) -> list[float]:
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


def test_hand_computed_collection_of_four():
    # a1 at 0 deg, a2 at 8, b1 at 20, b2 at 90: nearest first, the query itself left out
    #   a1 -> a2 b1 b2: AP@2 1;  a2 -> a1 b1: 1;  b1 -> a2 a1: 0;  b2 -> b1 a2: 1
    vectors = np.array([_angle(0), _angle(8), _angle(20), _angle(90)], np.float32)
    result = evaluate_vectors(vectors, ["a", "a", "b", "b"], k=2).to_dict()
    assert result["queries"] == 4 and result["k"] == 2
    assert result["map@k"] == pytest.approx(0.75)
    assert result["precision@1"] == pytest.approx(0.75)
    assert result["precision@5"] == pytest.approx(4 / 20)  # one same-category photo each, five places asked
    assert result["per_category"] == {"a": {"map@k": 1.0, "n": 2}, "b": {"map@k": 0.5, "n": 2}}


def test_photos_without_a_category_are_searched_but_never_queries():
    vectors = np.array([_angle(0), _angle(5), _angle(10), _angle(60)], np.float32)
    result = evaluate_vectors(vectors, ["a", None, "a", "b"], k=1)
    assert len(result.query_ids) == 3
    # a at 0 deg finds the uncategorised photo at 5 deg first: not relevant
    assert result.ap.tolist() == [0.0, 0.0, 0.0]


def test_evaluate_json_on_a_real_collection(five_category_collection: Path, capsys):
    assert main(["evaluate", "--collection", str(five_category_collection), "--json", "-k", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 60 and result["k"] == 5
    assert set(result["per_category"]) == {"accordion", "airplanes", "Leopards", "pizza", "sunflower"}
    assert all(v["n"] == 12 for v in result["per_category"].values())
    assert 0.9 <= result["map@k"] <= 1.0  # five very different categories
    assert result["precision@1"] > 0.9
    assert result["recall@5"] == 1.0  # the index finds what exact search finds on 60 photos
    assert result["median_latency_ms"] > 0
    with Collection.open(five_category_collection, readonly=True) as collection:
        again = evaluate_collection(collection, k=5, latency_sample=0).to_dict()
    assert again["map@k"] == result["map@k"]  # deterministic


def test_test_split_queries_need_a_split(five_category_collection: Path, capsys):
    assert main(["evaluate", "--collection", str(five_category_collection), "--queries", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lookalike: error:") and "--split" in err and len(err.splitlines()) == 1


def test_split_file_limits_the_queries(five_category_collection: Path, tmp_path: Path, capsys):
    tests = ["pizza/image_0001.jpg", "sunflower/image_0002.jpg", "not/in_the_collection.jpg"]
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": [], "test": tests}))
    assert main(["evaluate", "-c", str(five_category_collection), "--queries", "test", "--split", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 2 and set(result["per_category"]) == {"pizza", "sunflower"}


def test_report_page_shows_its_pictures(five_category_collection: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "-c", str(five_category_collection), "--report", str(out)]) == 0
    assert "mAP@10" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert "categories.png" in sources and "map.png" in sources
    assert sum(s.startswith("thumbs/") for s in sources) >= 11  # a query and its 10 results, at least
    for source in sources:
        with Image.open(out / source) as image:  # every picture the page shows is there and readable
            assert image.size[0] > 10
    assert "Which categories get mixed up" in page
