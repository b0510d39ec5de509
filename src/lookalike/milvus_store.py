"""A collection kept in Milvus instead of a local folder, for shared and very large stores.

`milvus:./photos.db` runs Milvus Lite (embedded, one local file); `milvus:http://host:19530` talks to a
Milvus server or cluster with the same code (a token, if the server wants one, comes from
$MILVUS_TOKEN). `#name` after the URI picks the Milvus collection (default `lookalike`).

Three Milvus collections hold it: NAME (one entity per photo: id, path, root, category, size,
mtime_ns, hash, width, height and the vector), NAME_skipped (files that could not be used, keyed by
path) and NAME_meta (one row: the manifest, the next free id and a generation counter). Milvus has
no transactions, so every write is idempotent: ids are reserved before they are used, paths are
looked up before they are inserted, and a re-run after a crash only does what is missing.
One writer at a time per collection (`lookalike index`); any number of readers.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from lookalike.catalog import Item
from lookalike.collection import (
    FORMAT_VERSION,
    Collection,
    CollectionError,
    Embedder,
    Result,
    UpdateReport,
    Waiting,
    utc_now,
    embed_and_commit,
    open_existing_or_create,
    plan_update,
    scan_folder,
)
from lookalike.embedding import Batch, embed_files
from lookalike.encoders import DEFAULT_ENCODER, get_encoder
from lookalike.images import FoundFile

SCHEME = "milvus:"
DEFAULT_NAME = "lookalike"
MAX_K = 16384  # Milvus's limit on top-k
PAGE = 2000  # rows per page when reading a whole collection
ITEM_FIELDS = ["id", "root", "path", "category", "size", "mtime_ns", "hash", "width", "height"]
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")

# Milvus Lite keeps no MVCC timestamps; pymilvus warns about it on every page it reads. Drop that note.
logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(lambda record: "mvccTs" not in record.getMessage())


def literal(value: str) -> str:
    """A string as a Milvus filter-expression literal (quotes, backslashes and newlines escaped)."""
    return json.dumps(value, ensure_ascii=False)


def parse_spec(spec: str | os.PathLike) -> tuple[str, str]:
    """`milvus:URI[#name]` -> (URI, collection name); local paths become absolute Milvus Lite files."""
    text = str(spec)
    rest = text[len(SCHEME):] if text.startswith(SCHEME) else text
    uri, _, name = rest.partition("#")
    name = name or DEFAULT_NAME
    if not uri:
        raise CollectionError("a Milvus store needs a URI: milvus:./photos.db (Milvus Lite) or milvus:http://host:19530")
    if not NAME_PATTERN.fullmatch(name):
        raise CollectionError(f"Milvus collection names are letters, digits and underscores, not {name!r}")
    if "://" not in uri:
        if not uri.endswith(".db"):
            raise CollectionError(f"a Milvus Lite store is a file whose name ends in .db, not {uri}")
        uri = os.path.abspath(os.path.expanduser(uri))
    return uri, name


def _connect(uri: str):
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        return MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))
    except MilvusException as e:
        raise CollectionError(f"cannot open Milvus at {uri}: {e.message}") from None


class MilvusCollection:
    """The Collection interface (update, search, similar, items, info, ...) over a Milvus store.

    Open with `MilvusCollection.open("milvus:./x.db")`, or `create` / `open_or_create`.
    """

    # Everything that only needs the encoder and search_vector / vector_of is shared with Collection.
    dim = Collection.dim
    encoder = Collection.encoder
    check_encoder = Collection.check_encoder
    _check_same = Collection._check_same
    embed_image = Collection.embed_image
    _query_tensor = Collection._query_tensor
    predict = Collection.predict
    search = Collection.search
    similar = Collection.similar
    __enter__ = Collection.__enter__
    __exit__ = Collection.__exit__

    def __init__(self, client, uri: str, name: str, readonly: bool = False) -> None:
        self.client = client
        self.uri = uri
        self.name = name
        self.path = f"{SCHEME}{uri}" + (f"#{name}" if name != DEFAULT_NAME else "")
        self.readonly = readonly
        self._encoder = None
        self._generation = -1
        self._summary: tuple[dict[str | None, int], list[str]] | None = None
        for collection in (name, self._skipped, self._meta):
            client.load_collection(collection)
        self.manifest: dict = {}
        self._state: dict = {}
        self._read_meta()

    @property
    def _skipped(self) -> str:
        return f"{self.name}_skipped"

    @property
    def _meta(self) -> str:
        return f"{self.name}_meta"

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, spec: str | os.PathLike, encoder: str = DEFAULT_ENCODER, index: str = "AUTOINDEX",
        index_params: dict | None = None, search_params: dict | None = None,
    ) -> "MilvusCollection":
        """A new store; `index` is a Milvus index type (AUTOINDEX, FLAT, HNSW, IVF_FLAT, ...)."""
        uri, name = parse_spec(spec)
        client = _connect(uri)
        if client.has_collection(name):
            raise CollectionError(f"{spec} already holds a collection")
        enc = get_encoder(encoder)
        index_info = {"index_type": index, "params": index_params or {}, "search_params": search_params or {}}
        _create_collections(client, name, enc.info.dim, index_info)
        manifest = {
            "format_version": FORMAT_VERSION,
            "encoder": {**enc.info.to_dict(), "spec": encoder},
            "index": {"backend": "milvus", "params": {**index_info, "metric_type": "IP"}},
            "created": utc_now(),
            "updated": utc_now(),
            "counts": {"items": 0, "skipped": 0, "categories": 0},
        }
        client.upsert(f"{name}_meta", [_meta_row({"manifest": manifest, "next_id": 1, "generation": 0})])
        store = cls(client, uri, name)
        store._encoder = enc
        return store

    @classmethod
    def open(cls, spec: str | os.PathLike, readonly: bool = False) -> "MilvusCollection":
        uri, name = parse_spec(spec)
        if "://" not in uri and not os.path.exists(uri):
            raise CollectionError(f"no collection at {spec} (run `lookalike index FOLDER --store {spec}`)")
        client = _connect(uri)
        if not client.has_collection(name) or not client.has_collection(f"{name}_meta"):
            client.close()
            raise CollectionError(f"no collection at {spec} (run `lookalike index FOLDER --store {spec}`)")
        return cls(client, uri, name, readonly=readonly)

    @classmethod
    def open_or_create(cls, spec: str | os.PathLike, encoder: str | None = None) -> "MilvusCollection":
        uri, name = parse_spec(spec)
        exists = os.path.exists(uri) if "://" not in uri else True
        if exists:
            client = _connect(uri)
            exists = client.has_collection(name)
            client.close()
        return open_existing_or_create(cls, spec, exists, encoder)

    def close(self) -> None:
        self.client.close()

    # --- state --------------------------------------------------------------------------------
    def _read_meta(self) -> None:
        rows = self.client.query(self._meta, filter="id == 0", output_fields=["doc"])
        if not rows:
            raise CollectionError(f"{self.path} has no lookalike manifest")
        self._state = json.loads(rows[0]["doc"])
        self.manifest = self._state["manifest"]
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise CollectionError(f"{self.path} has format {self.manifest.get('format_version')}, expected {FORMAT_VERSION}")

    def _write_meta(self, **changes: Any) -> None:
        self._state.update(changes)
        self.client.upsert(self._meta, [_meta_row(self._state)])

    def refresh(self) -> None:
        """See what another writer committed since the last look (Milvus itself always answers with
        the latest data; this renews the cached category counts and manifest)."""
        self._read_meta()
        if self._state["generation"] != self._generation:
            self._summary = None
            self._generation = self._state["generation"]

    def __len__(self) -> int:
        return int(self.client.query(self.name, filter="", output_fields=["count(*)"])[0]["count(*)"])

    # --- writing ------------------------------------------------------------------------------
    def update(
        self, folder: str | os.PathLike, progress: bool = True, batch_size: int = 16, embedder: Embedder | None = None
    ) -> UpdateReport:
        """Bring the store in line with `folder`, as Collection.update does: embed new and changed
        images (path, size and mtime tell), drop deleted ones, record the files that cannot be used."""
        if self.readonly:
            raise CollectionError(f"{self.path} is open read-only")
        started = time.perf_counter()
        root, found, scan_skipped = scan_folder(folder)
        report = UpdateReport(root=root)
        indexed = {r["path"]: (r["id"], r["size"], r["mtime_ns"]) for r in self._rows(
            self.name, f"root == {literal(root)}", ["id", "path", "size", "mtime_ns"])}
        skipped_before = {r["path"]: (r["size"], r["mtime_ns"]) for r in self._rows(
            self._skipped, f"root == {literal(root)}", ["path", "size", "mtime_ns"])}
        todo, report.unchanged, gone, gone_skipped = plan_update(found, scan_skipped, indexed, skipped_before)
        self._delete(self.name, [indexed[p][0] for p in gone])
        self._delete(self._skipped, gone_skipped)
        if scan_skipped:
            self.client.upsert(self._skipped, [_skip_row(root, s.path, None, None, s.reason) for s in scan_skipped])
        report.removed = len(gone)
        self._embed(todo, indexed, report, progress, embedder or partial(embed_files, batch_size=batch_size))
        report.skipped = self._skipped_list(root)
        if todo or gone:
            self.client.flush(self.name)  # seal the new rows so Milvus indexes them (growing segments search slowly)
        self._write_meta(generation=self._state["generation"] + 1, manifest=self._manifest_now())
        report.seconds = time.perf_counter() - started
        return report

    def _embed(self, todo: list[FoundFile], indexed: dict, report: UpdateReport, progress: bool, embedder) -> None:
        hashes = {r["hash"] for r in self._rows(self.name, "", ["hash"])}
        embed_and_commit(
            todo, self.encoder, hashes, embedder, lambda batch, waiting: self._commit(batch, indexed, waiting),
            indexed, report, progress,
        )

    def _commit(
        self, batch: Batch, indexed: dict, waiting: Waiting
    ) -> Waiting:
        """Write one batch; returns the duplicates whose original is not stored yet."""
        vectors = batch.vectors if batch.vectors is not None else np.zeros((0, self.dim), np.float32)
        entries = [(file, decoded.width, decoded.height, decoded.hash, vector)
                   for (file, decoded), vector in zip(batch.embedded, vectors)]
        fresh = {decoded.hash: (decoded.width, decoded.height, vector)
                 for (_, decoded), vector in zip(batch.embedded, vectors)}
        later = []
        for file, decoded in waiting + batch.duplicates:
            original = fresh.get(decoded.hash) or self._by_hash(decoded.hash)
            if original is None:
                later.append((file, decoded))
            else:
                entries.append((file, original[0], original[1], decoded.hash, original[2]))
        new_paths = [file.path for file, *_ in entries if file.path not in indexed]
        first = self._state["next_id"]
        if new_paths:
            self._write_meta(next_id=first + len(new_paths))  # reserve the ids before using them
        ids = dict(zip(new_paths, range(first, first + len(new_paths))))
        rows = [
            {"id": indexed[f.path][0] if f.path in indexed else ids[f.path], "root": f.root, "path": f.path,
             "category": f.category, "size": f.size, "mtime_ns": f.mtime_ns, "hash": digest,
             "width": int(width), "height": int(height), "vector": np.asarray(vector, np.float32).tolist()}
            for f, width, height, digest, vector in entries
        ]
        self._delete(self._skipped, [r["path"] for r in rows])
        if rows:
            self.client.upsert(self.name, rows)
        bad = [(f, reason) for f, reason in batch.skipped]
        self._delete(self.name, [indexed[f.path][0] for f, _ in bad if f.path in indexed])
        if bad:
            self.client.upsert(self._skipped, [_skip_row(f.root, f.path, f.size, f.mtime_ns, r) for f, r in bad])
        self._write_meta(generation=self._state["generation"] + 1)
        return later

    def _by_hash(self, digest: str) -> tuple[int, int, list[float]] | None:
        rows = self.client.query(self.name, filter=f"hash == {literal(digest)}", limit=1,
                                 output_fields=["width", "height", "vector"])
        return (rows[0]["width"], rows[0]["height"], rows[0]["vector"]) if rows else None

    def _delete(self, collection: str, keys: list) -> None:
        """Delete by primary key: item ids, or the paths of skipped files (quoted here: pymilvus
        does not escape string keys)."""
        field = "path" if collection == self._skipped else "id"
        for start in range(0, len(keys), PAGE):
            values = ", ".join(literal(k) if isinstance(k, str) else str(int(k)) for k in keys[start : start + PAGE])
            self.client.delete(collection, filter=f"{field} in [{values}]")

    def _manifest_now(self) -> dict:
        categories, _ = self._summarise()
        self.manifest["updated"] = utc_now()
        self.manifest["counts"] = {
            "items": sum(categories.values()),
            "skipped": len(self._skipped_list()),
            "categories": len([c for c in categories if c is not None]),
        }
        return self.manifest

    # --- reading ------------------------------------------------------------------------------
    def _rows(self, collection: str, expr: str, fields: list[str]) -> Iterator[dict]:
        iterator = self.client.query_iterator(collection, batch_size=PAGE, filter=expr, output_fields=fields)
        try:
            while page := iterator.next():
                yield from page
        finally:
            iterator.close()

    def _summarise(self, fresh: bool = True) -> tuple[dict[str | None, int], list[str]]:
        """(items per category, roots), from one pass over the store; cached per generation."""
        if fresh:
            self._summary = None
        if self._summary is None:
            counts: Counter = Counter()
            roots: set[str] = set()
            for row in self._rows(self.name, "", ["category", "root"]):
                counts[row["category"]] += 1
                roots.add(row["root"])
            order = sorted(counts, key=lambda c: (c is not None, c or ""))
            self._summary = ({c: counts[c] for c in order}, sorted(roots))
        return self._summary

    def _skipped_list(self, root: str | None = None) -> list[tuple[str, str]]:
        expr = f"root == {literal(root)}" if root is not None else ""
        return sorted((r["path"], r["reason"]) for r in self._rows(self._skipped, expr, ["path", "reason"]))

    def vector_of(self, item_id: int) -> np.ndarray:
        rows = self.client.query(self.name, filter=f"id == {int(item_id)}", output_fields=["vector"])
        if not rows:
            raise CollectionError(f"no item with id {item_id}")
        return np.asarray(rows[0]["vector"], np.float32)

    def search_vector(self, vector: np.ndarray, k: int = 10, category: str | None = None) -> list[Result]:
        """The k nearest items by inner product; the category filter runs inside Milvus."""
        if k < 1:
            raise CollectionError("k must be at least 1")
        if k > MAX_K:
            raise CollectionError(f"k must be at most {MAX_K} on a Milvus store")
        expr = ""
        if category is not None:
            if category not in self.categories():  # refreshes the cached counts if a writer committed
                known = ", ".join(str(c) for c in self.categories() if c is not None) or "none"
                raise CollectionError(f"no category {category!r} (categories: {known})")
            expr = f"category == {literal(category)}"
        params = self.manifest["index"]["params"]
        hits = self.client.search(
            self.name, data=[np.asarray(vector, np.float32).tolist()], limit=k, filter=expr,
            output_fields=["path", "category"], anns_field="vector",
            search_params={"metric_type": "IP", "params": params.get("search_params", {})},
        )[0]
        return [
            Result(rank, int(hit["id"]), hit["entity"]["path"], hit["entity"]["category"], float(hit["distance"]))
            for rank, hit in enumerate(hits, start=1)
        ]

    def items(self) -> Iterator[Item]:
        rows = sorted(self._rows(self.name, "", ITEM_FIELDS), key=lambda r: r["id"])
        for r in rows:  # `row` has no meaning here: a Milvus entity holds its own vector
            yield Item(r["id"], r["root"], r["path"], r["category"], r["size"], r["mtime_ns"], r["hash"],
                       r["width"], r["height"], r["id"])

    def item(self, item_id: int) -> Item:
        rows = self.client.query(self.name, filter=f"id == {int(item_id)}", output_fields=ITEM_FIELDS)
        if not rows:
            raise CollectionError(f"no item with id {item_id}")
        r = rows[0]
        return Item(r["id"], r["root"], r["path"], r["category"], r["size"], r["mtime_ns"], r["hash"],
                    r["width"], r["height"], r["id"])

    def categories(self) -> dict[str | None, int]:
        self.refresh()
        return self._summarise(fresh=False)[0]

    def info(self) -> dict[str, Any]:
        self.refresh()
        categories, roots = self._summarise(fresh=False)
        size = None
        if "://" not in self.uri:  # Milvus Lite: a local file or folder
            lite = Path(self.uri)
            files = [lite] if lite.is_file() else [p for p in lite.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
        return {
            "path": self.path,
            "store": "milvus",
            "items": sum(categories.values()),
            "categories": {str(k) if k is not None else "(none)": v for k, v in categories.items()},
            "encoder": dict(self.manifest["encoder"]),
            "index": self.manifest["index"],
            "roots": roots,
            "size_bytes": size,
            "skipped": [{"path": p, "reason": r} for p, r in self._skipped_list()],
            "created": self.manifest["created"],
            "updated": self.manifest["updated"],
        }


def _meta_row(state: dict) -> dict:
    return {"id": 0, "doc": json.dumps(state), "vector": [0.0, 0.0]}


def _skip_row(root: str, path: str, size: int | None, mtime_ns: int | None, reason: str) -> dict:
    return {"path": path, "root": root, "size": size, "mtime_ns": mtime_ns, "reason": reason[:1000],
            "vector": [0.0, 0.0]}


def _create_collections(client, name: str, dim: int, index: dict) -> None:
    """The three Milvus collections of a store (Milvus wants a vector field in each: the two
    bookkeeping ones carry a 2-d placeholder)."""
    from pymilvus import DataType, MilvusClient

    def make(collection: str, fields: Iterable[tuple], vector_dim: int, index_type: str, params: dict) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        for field_name, dtype, options in fields:
            schema.add_field(field_name, dtype, **options)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vector_dim)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=params)
        client.create_collection(collection, schema=schema, index_params=index_params, consistency_level="Strong")

    text = DataType.VARCHAR
    make(name, [
        ("id", DataType.INT64, {"is_primary": True}),
        ("root", text, {"max_length": 8192}),
        ("path", text, {"max_length": 8192}),
        ("category", text, {"max_length": 1024, "nullable": True}),
        ("size", DataType.INT64, {}),
        ("mtime_ns", DataType.INT64, {}),
        ("hash", text, {"max_length": 64}),
        ("width", DataType.INT64, {}),
        ("height", DataType.INT64, {}),
    ], dim, index["index_type"], index["params"])
    make(f"{name}_skipped", [
        ("path", text, {"is_primary": True, "max_length": 8192}),
        ("root", text, {"max_length": 8192}),
        ("size", DataType.INT64, {"nullable": True}),
        ("mtime_ns", DataType.INT64, {"nullable": True}),
        ("reason", text, {"max_length": 1024}),
    ], 2, "FLAT", {})
    make(f"{name}_meta", [
        ("id", DataType.INT64, {"is_primary": True}),
        ("doc", text, {"max_length": 65535}),
    ], 2, "FLAT", {})
