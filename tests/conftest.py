"""Shared fixtures: real Caltech-101 photos copied into temporary folders, and small collections."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from lookalike import Collection

DATASET = Path(os.environ.get("LOOKALIKE_DATASET", Path(__file__).resolve().parents[2] / "shared/datasets/caltech101"))
FIVE_CATEGORIES = ["accordion", "airplanes", "Leopards", "pizza", "sunflower"]


def dataset_photos(category: str) -> list[Path]:
    return sorted((DATASET / category).glob("*.jpg"))


@pytest.fixture(scope="session")
def caltech() -> Path:
    if not DATASET.is_dir():
        pytest.fail(f"Caltech-101 not found at {DATASET} (set LOOKALIKE_DATASET)")
    return DATASET


@pytest.fixture(scope="session")
def make_photo_folder(caltech: Path, tmp_path_factory) -> Callable[..., Path]:
    """Copy the first `per_category` photos (after skipping `offset`) of each category into a new folder."""

    def make(categories: list[str], per_category: int, offset: int = 0, name: str = "photos") -> Path:
        root = tmp_path_factory.mktemp(name)
        for category in categories:
            (root / category).mkdir()
            for photo in dataset_photos(category)[offset : offset + per_category]:
                shutil.copy2(photo, root / category / photo.name)
        return root

    return make


@pytest.fixture(scope="session")
def five_category_folder(make_photo_folder) -> Path:
    """12 photos of each of five categories; photo 13 of each is held back as a query."""
    return make_photo_folder(FIVE_CATEGORIES, 12, name="five")


@pytest.fixture(scope="session")
def held_back_queries(caltech: Path) -> dict[str, Path]:
    return {c: dataset_photos(c)[12] for c in FIVE_CATEGORIES}


@pytest.fixture(scope="session")
def five_category_collection(five_category_folder: Path, tmp_path_factory) -> Path:
    """A collection of five_category_folder, built once per test session. Tests must not modify it."""
    path = tmp_path_factory.mktemp("collections") / "five.lookalike"
    with Collection.create(path) as collection:
        collection.update(five_category_folder, progress=False)
    return path
