"""What the REST API and the web page both call: validated search over one open collection."""
from __future__ import annotations

import asyncio
import io
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from lookalike.collection import Collection, CollectionError, Result, open_collection
from lookalike.images import BadImage, ImageTooLarge, decode_bytes, open_image, to_rgb
from lookalike.server.batcher import MicroBatcher


@dataclass(frozen=True)
class ServerConfig:
    collection: str
    max_bytes: int = 20 * 1024 * 1024  # largest upload accepted
    max_pixels: int = 50_000_000  # largest declared image size accepted, checked before decoding
    max_k: int = 1000
    default_k: int = 10
    max_batch: int = 16  # 1 runs the encoder once per upload
    batch_wait_ms: float = 2.0  # how long a batch waits for more uploads to join it
    encoder_workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # batches encoded at once
    thumbnail_px: int = 256
    thumbnail_cache: int = 2048  # thumbnails kept in memory
    token: str | None = None


class ServiceError(Exception):
    """A request the service refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(413, f"upload too large ({size / 1e6:.1f} MB; limit {limit / 1e6:.0f} MB)")


class SearchService:
    """Opens the collection and loads the encoder and index once; safe to call from many threads."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.collection: Collection = open_collection(config.collection, readonly=True)
        self._lock = threading.Lock()  # the catalogue connection and index are used by one thread at a time
        self.encoder = self.collection.encoder
        with self._lock:
            self.collection.refresh()
        self.batcher = MicroBatcher(
            self.encoder.embed, config.max_batch, config.batch_wait_ms / 1000, config.encoder_workers
        )
        self.has_categories = bool(self.encoder.labels) and self.encoder.label_kind == "categories"
        self._thumbnail = lru_cache(maxsize=config.thumbnail_cache)(self._make_thumbnail)

    def close(self) -> None:
        self.batcher.close()
        self.collection.close()

    # --- queries ------------------------------------------------------------------------------
    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.config.max_k:
            raise ServiceError(422, f"k must be between 1 and {self.config.max_k}, got {k}")

    def validate_upload(self, data: bytes) -> None:
        """Refuse empty and oversized uploads (the pixel limit is checked from the header, in `_decode`)."""
        if not data:
            raise ServiceError(400, "empty upload: send an image file")
        if len(data) > self.config.max_bytes:
            raise too_large(len(data), self.config.max_bytes)

    def _decode(self, data: bytes):
        try:
            return decode_bytes(data, self.encoder.prep, self.config.max_pixels).tensor
        except ImageTooLarge as e:
            raise ServiceError(413, str(e)) from None
        except BadImage as e:
            raise ServiceError(400, str(e)) from None

    async def search_upload(self, data: bytes, name: str, k: int, category: str | None) -> dict[str, Any]:
        """Search with uploaded image bytes; the JSON shape of `lookalike search --json`, plus ids and URLs."""
        self.check_k(k)
        self.validate_upload(data)
        with self.batcher.expecting():
            tensor = await asyncio.to_thread(self._decode, data)
            future = self.batcher.submit(tensor)
        vector = await asyncio.wrap_future(future)
        results = await asyncio.to_thread(self._search_vector, vector, k, category)
        predicted = await asyncio.to_thread(self.collection.predict, data) if self.has_categories else []
        return {
            "query": name,
            "k": k,
            "category": category,
            "results": [result_dict(r) for r in results],
            "predicted": [{"category": c, "probability": round(p, 6)} for c, p in predicted],
        }

    def _search_vector(self, vector, k: int, category: str | None) -> list[Result]:
        with self._lock:
            return self._run(self.collection.search_vector, vector, k, category)

    def similar(self, item_id: int, k: int, category: str | None) -> dict[str, Any]:
        """More like an item in the collection (the item itself ranks first)."""
        self.check_k(k)
        item = self.item(item_id)
        with self._lock:
            results = self._run(self.collection.similar, item_id, k, category)
        return {
            "query": item.path,
            "id": item_id,
            "k": k,
            "category": category,
            "results": [result_dict(r) for r in results],
        }

    def browse(self, category: str, limit: int) -> list[dict[str, Any]]:
        """The first `limit` items of a category, in catalogue order."""
        with self._lock:
            self.collection.refresh()
            if category not in self.collection.categories():
                raise ServiceError(404, f"no category {category!r}")
            items = []
            for item in self.collection.items():
                if item.category == category:
                    items.append(item)
                    if len(items) == limit:
                        break
        return [
            result_dict(Result(n, it.id, it.path, it.category, 1.0)) for n, it in enumerate(items, start=1)
        ]

    def _run(self, fn, *args):
        try:
            return fn(*args)
        except CollectionError as e:
            status = 404 if str(e).startswith(("no item", "no category")) else 422
            raise ServiceError(status, str(e)) from None

    # --- catalogue ----------------------------------------------------------------------------
    def item(self, item_id: int):
        with self._lock:
            return self._run(self.collection.item, item_id)

    def count(self) -> int:
        with self._lock:
            return len(self.collection)

    def categories(self) -> list[dict[str, Any]]:
        with self._lock:
            counts = self.collection.categories()
        return [
            {"name": name, "count": n}
            for name, n in sorted(counts.items(), key=lambda kv: (kv[0] is None, str(kv[0]).lower()))
        ]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self.collection.refresh()
            info = self.collection.info()
            size = len(self.collection)
        return {
            "collection": info["path"],
            "items": info["items"],
            "categories": len([c for c in info["categories"] if c != "(none)"]),
            "encoder": info["encoder"],
            "backend": info["index"].get("in_use", info["index"]["backend"]),  # what `auto` resolves to now
            "index": {**info["index"], "size": size},
            "size_bytes": info["size_bytes"],
            "skipped": len(info["skipped"]),
            "updated": info["updated"],
            "batching": {"max_batch": self.config.max_batch, "batches": self.batcher.batches,
                         "uploads": self.batcher.inputs},
        }

    def image_path(self, item_id: int) -> Path:
        """The catalogued file of an item: looked up by id, never taken from the request."""
        item = self.item(item_id)
        path = Path(item.path)
        try:
            size = path.stat().st_size if path.is_file() else None
        except OSError:
            size = None
        if size is None:
            raise ServiceError(404, f"image {item_id} is no longer on disk")
        if size != item.size:  # never serve whatever a catalogued path has since been replaced with
            raise ServiceError(404, f"image {item_id} changed on disk since it was indexed; re-index it")
        return path

    def thumbnail(self, item_id: int) -> tuple[bytes, str]:
        """JPEG thumbnail bytes and an ETag; cached by item id and content hash."""
        item = self.item(item_id)
        return self._thumbnail(str(self.image_path(item_id)), item.hash), item.hash

    def _make_thumbnail(self, path: str, content_hash: str) -> bytes:
        """(The content hash is part of the cache key, so a re-indexed changed file gets a new thumbnail.)"""
        try:
            with open(path, "rb") as f:
                img = to_rgb(open_image(f.read()), draft_size=self.config.thumbnail_px)
        except (OSError, BadImage):
            raise ServiceError(404, f"{Path(path).name} is no longer readable") from None
        img.thumbnail((self.config.thumbnail_px, self.config.thumbnail_px), Image.BILINEAR)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        return out.getvalue()


def result_dict(r: Result) -> dict[str, Any]:
    return {
        **r.to_dict(),
        "id": r.id,
        "image_url": f"/api/items/{r.id}/image",
        "thumbnail_url": f"/api/items/{r.id}/thumbnail",
    }

