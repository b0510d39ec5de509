"""Collection: one directory holding a photo collection's catalogue, vectors and index.

It is the only object the CLI, the server, the notebook and the evaluator talk to.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
from tqdm import tqdm

from lookalike.catalog import Catalog, Item, NewItem
from lookalike.embedding import Batch, Known, embed_files
from lookalike.encoders import DEFAULT_ENCODER, OnnxEncoder, get_encoder
from lookalike.images import Decoded, FoundFile, Skipped, decode_bytes, read_bytes, scan
from lookalike.index import AUTO_EXACT_BELOW, CHOICES, Searcher, check_params, configure, resolve_backend
from lookalike.index.base import top_k
from lookalike.index.store import INDEX_JSON, IndexStore
from lookalike.vectors import VECTORS_FILE, VectorFile

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.sqlite"
LOCK = "write.lock"
log = logging.getLogger("lookalike")

# Turns files into committed-ready Batches: embedding.embed_files, or distributed.RayEmbedder.
Embedder = Callable[[list[FoundFile], OnnxEncoder, dict[str, int]], Iterable[Batch]]
Waiting = list[tuple[FoundFile, Decoded | Known]]  # copies of content whose original is not stored yet


class CollectionError(Exception):
    """A problem the user can fix; the message is one line."""


class Snapshot(NamedTuple):
    """One committed catalogue state: item ids (ascending), their vector rows, and their vectors."""

    generation: int
    ids: np.ndarray
    rows: np.ndarray
    matrix: np.ndarray


@dataclass(frozen=True)
class Result:
    rank: int
    id: int
    path: str
    category: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "path": self.path, "category": self.category, "score": round(self.score, 6)}


@dataclass
class UpdateReport:
    root: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0  # images run through the encoder (identical content is embedded once)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run and earlier
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.removed} removed, "
            f"{self.unchanged} unchanged, {len(self.skipped)} skipped"
        )


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class Collection:
    """Open with `Collection.open(dir)` or `Collection.create(dir, encoder=...)`."""

    def __init__(self, path: Path, manifest: dict, readonly: bool = False) -> None:
        self.path = path
        self.manifest = manifest
        self.catalog = Catalog(path / CATALOG, readonly=readonly)
        self.vectors = VectorFile(path / VECTORS_FILE, self.dim)
        self._encoder: OnnxEncoder | None = None
        self._generation = -1
        self._seen: tuple | None = None  # catalogue generation and index/manifest files last loaded
        self._index: Searcher | None = None
        self._ids = np.zeros(0, np.int64)
        self._id_to_row: dict[int, int] = {}
        self._matrix = np.zeros((0, self.dim), np.float32)
        self._store = IndexStore(path, self.dim)
        self._search_params: dict[str, Any] = {}

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, encoder: str = DEFAULT_ENCODER, backend: str = "auto") -> "Collection":
        path = Path(path)
        if (path / MANIFEST).exists():
            raise CollectionError(f"{path} already holds a collection")
        if path.exists() and any(path.iterdir()):
            raise CollectionError(f"{path} exists and is not an empty folder or a collection")
        enc = get_encoder(encoder)
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format_version": FORMAT_VERSION,
            "encoder": {**enc.info.to_dict(), "spec": encoder},
            "index": {"backend": backend, "params": {}},
            "created": utc_now(),
            "updated": utc_now(),
            "counts": {"items": 0, "skipped": 0, "categories": 0},
        }
        _write_json_atomic(path / MANIFEST, manifest)
        collection = cls(path, manifest)
        collection._encoder = enc
        return collection

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False) -> "Collection":
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise CollectionError(f"no collection at {path} (run `lookalike index FOLDER --collection {path}`)") from None
        except (OSError, ValueError) as e:
            raise CollectionError(f"cannot read {path / MANIFEST}: {e}") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CollectionError(f"{path} has format {manifest.get('format_version')}, expected {FORMAT_VERSION}")
        return cls(path, manifest, readonly=readonly)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, encoder: str | None = None) -> "Collection":
        return open_existing_or_create(cls, path, (Path(path) / MANIFEST).exists(), encoder)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- encoder ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["encoder"]["dim"])

    @property
    def encoder(self) -> OnnxEncoder:
        if self._encoder is None:
            self._encoder = get_encoder(self.manifest["encoder"]["spec"])
            self._check_same(self._encoder)
        return self._encoder

    def check_encoder(self, spec: str) -> None:
        """Refuse to mix vectors of two encoders in one collection."""
        encoder = get_encoder(spec)
        self._check_same(encoder)
        self._encoder = encoder

    def _check_same(self, enc: OnnxEncoder) -> None:
        mine = self.manifest["encoder"]
        if (enc.info.name, enc.info.checksum, enc.info.dim) != (mine["name"], mine["checksum"], mine["dim"]):
            raise CollectionError(
                f"{self.path} holds vectors of encoder {mine['name']} (weights {mine['checksum']}, {mine['dim']}-d);"
                f" {enc.info.name} (weights {enc.info.checksum}, {enc.info.dim}-d) cannot be mixed in."
                " Index into a new collection instead."
            )

    # --- writing ------------------------------------------------------------------------------
    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        with open(self.path / LOCK, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                raise CollectionError(
                    f"{self.path} is being indexed by {holder}; wait for it to finish and run again"
                ) from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"process {os.getpid()}")
            lock.flush()
            try:
                yield
            finally:
                lock.truncate(0)
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update(
        self, folder: str | os.PathLike, progress: bool = True, batch_size: int = 16, embedder: Embedder | None = None
    ) -> UpdateReport:
        """Bring the collection in line with `folder`: embed new and changed images, drop deleted ones.
        `embedder` replaces the local pipeline (e.g. `distributed.RayEmbedder`); it yields the same Batches.

        Each batch is committed atomically: stopping at any moment keeps what was committed, and a
        re-run only does what is left.
        """
        started = time.perf_counter()
        root, found, scan_skipped = scan_folder(folder)
        report = UpdateReport(root=root)
        with self._write_lock():
            indexed = self.catalog.files_under(root)
            skipped_before = self.catalog.skipped_under(root)
            todo, report.unchanged, gone, gone_skipped = plan_update(found, scan_skipped, indexed, skipped_before)
            with self.catalog.transaction() as tx:
                tx.remove_paths(gone + gone_skipped)
                for s in scan_skipped:
                    tx.record_skip(root, s.path, None, None, s.reason)
            report.removed = len(gone)
            self._embed(todo, indexed, report, progress, embedder or partial(embed_files, batch_size=batch_size))
            report.skipped = [(p, r) for p, r in self.catalog.skipped() if p.startswith(root + os.sep)]
            self._write_manifest()
            self._maintain_index(progress)
        report.seconds = time.perf_counter() - started
        return report

    def _embed(
        self, todo: list[FoundFile], indexed: dict, report: UpdateReport, progress: bool, embedder: Embedder
    ) -> None:
        hash_rows = self.catalog.hash_rows()
        embed_and_commit(
            todo, self.encoder, hash_rows, embedder, lambda batch, waiting: self._commit(batch, hash_rows, waiting),
            indexed, report, progress,
        )

    def _commit(
        self, batch: Batch, hash_rows: dict[str, int], waiting: Waiting
    ) -> Waiting:
        """Append the batch's vectors, then commit its catalogue rows in one transaction.

        Returns the duplicates whose original is not committed yet (they wait for a later batch)."""
        start = self.catalog.state("vector_rows")
        vectors = batch.vectors if batch.vectors is not None else np.zeros((0, self.dim), np.float32)
        end = self.vectors.append(start, vectors)
        for (file, decoded), row in zip(batch.embedded, range(start, end)):
            hash_rows[decoded.hash] = row
        duplicates = waiting + batch.duplicates
        with self.catalog.transaction() as tx:
            for file, decoded in batch.embedded:
                tx.upsert_item(_new_item(file, decoded), hash_rows[decoded.hash])
            for file, decoded in duplicates:
                if decoded.hash in hash_rows:
                    item = self._copy_of(file, decoded) if isinstance(decoded, Known) else _new_item(file, decoded)
                    tx.upsert_item(item, hash_rows[decoded.hash])
            for file, reason in batch.skipped:
                tx.record_skip(file.root, file.path, file.size, file.mtime_ns, reason)
            tx.set_state("vector_rows", end)
        return [(file, decoded) for file, decoded in duplicates if decoded.hash not in hash_rows]

    def _copy_of(self, file: FoundFile, known: Known) -> NewItem:
        (width, height) = self.catalog.db.execute(
            "SELECT width, height FROM items WHERE hash = ? LIMIT 1", (known.hash,)
        ).fetchone()
        return NewItem(file.root, file.path, file.category, file.size, file.mtime_ns, known.hash, width, height)

    def remove_root(self, folder: str | os.PathLike) -> int:
        """Forget every image indexed from `folder`."""
        root = str(Path(os.path.abspath(folder)))
        with self._write_lock():
            paths = list(self.catalog.files_under(root)) + list(self.catalog.skipped_under(root))
            with self.catalog.transaction() as tx:
                tx.remove_paths(paths)
            self._write_manifest()
            self._maintain_index(progress=False)
        return len(paths)

    def _write_manifest(self) -> None:
        self.manifest["updated"] = utc_now()
        self.manifest["counts"] = {
            "items": self.catalog.count(),
            "skipped": len(self.catalog.skipped()),
            "categories": len([c for c in self.catalog.categories() if c is not None]),
        }
        _write_json_atomic(self.path / MANIFEST, self.manifest)

    # --- reading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Load the latest committed state if a writer has committed since the last look (catalogue
        rows, or a new index or index setting)."""
        seen = self._look()
        if seen == self._seen:
            return
        manifest = json.loads((self.path / MANIFEST).read_text())
        self.manifest["index"] = manifest["index"]
        snapshot = self._snapshot()
        backend = resolve_backend(self.manifest["index"]["backend"], len(snapshot.ids))
        opened = self._store.open(backend, self._index_params(), snapshot.ids, snapshot.rows, snapshot.matrix)
        searcher = opened.searcher
        if opened.problem is not None:
            with self._try_write_lock() as locked:
                if locked:  # no writer will fix it: rebuild or bring up to date from the stored vectors
                    log.warning("%s: %s; updating the index from the stored vectors", self.path, opened.problem)
                    snapshot, searcher = self._maintain_index(progress=False)
        self._install(snapshot, searcher)

    def _look(self) -> tuple:
        """What tells a reader that something changed: the catalogue generation and the identity
        of index.json and the manifest (both are replaced, never edited in place)."""
        def stamp(name: str) -> tuple[int, int] | None:
            try:
                st = (self.path / name).stat()
                return st.st_ino, st.st_mtime_ns
            except FileNotFoundError:
                return None

        return self.catalog.state("generation"), stamp(INDEX_JSON), stamp(MANIFEST)

    def _snapshot(self) -> Snapshot:
        db = self.catalog.db
        db.execute("BEGIN")  # one snapshot for the counts and the rows
        try:
            generation = self.catalog.state("generation")
            rows = self.catalog.state("vector_rows")
            ids, item_rows = self.catalog.id_row_pairs()
        finally:
            db.execute("COMMIT")
        vectors = self.vectors.read(rows)
        row_array = np.asarray(item_rows, np.int64)
        if len(row_array) == len(vectors) and np.array_equal(row_array, np.arange(len(vectors))):
            matrix = vectors  # rows line up with items: search the memory map itself
        else:
            matrix = np.asarray(vectors[row_array]) if len(row_array) else np.zeros((0, self.dim), np.float32)
        return Snapshot(generation, np.asarray(ids, np.int64), row_array, matrix)

    def _install(self, snapshot: Snapshot, searcher: Searcher) -> None:
        configure(searcher, self._search_params)
        self._index, self._matrix, self._ids = searcher, snapshot.matrix, snapshot.ids
        self._id_to_row = {int(i): n for n, i in enumerate(snapshot.ids)}
        self._generation = snapshot.generation
        self._seen = self._look()

    def _index_params(self) -> dict[str, Any]:
        return {**self.manifest["index"]["params"], **self._search_params}

    def _maintain_index(self, progress: bool) -> tuple[Snapshot, Searcher]:
        """Bring the saved index in line with the catalogue (the caller holds the write lock):
        HNSW adds and removes in place, Annoy is rebuilt from the stored vectors."""
        snapshot = self._snapshot()
        backend = resolve_backend(self.manifest["index"]["backend"], len(snapshot.ids))
        index = self._store.maintain(
            backend, self._index_params(), snapshot.ids, snapshot.rows, snapshot.matrix, snapshot.generation, progress
        )
        self._install(snapshot, index)
        return snapshot, index

    @contextmanager
    def _try_write_lock(self) -> Iterator[bool]:
        """Hold the write lock if it is free right now (True); False while a writer runs."""
        with ExitStack() as stack:
            try:
                stack.enter_context(self._write_lock())
            except (CollectionError, OSError):
                yield False
                return
            yield True

    def set_backend(self, backend: str, progress: bool = True, **params: Any) -> None:
        """Search with another index backend or parameters; rebuilds the index from the stored vectors
        (never re-embeds images) when the saved one does not fit."""
        if backend not in CHOICES:
            raise CollectionError(f"unknown index backend {backend!r}; choose one of: {', '.join(CHOICES)}")
        try:
            check_params(params)
        except ValueError as e:
            raise CollectionError(str(e)) from None
        with self._write_lock():
            self.manifest["index"] = {"backend": backend, "params": params}
            self._write_manifest()
            self._maintain_index(progress)

    def set_search_params(self, **params: Any) -> None:
        """Query-time settings for this reader (hnsw ef, annoy search_k); nothing is rebuilt."""
        try:
            check_params(params, search_only=True)
        except ValueError as e:
            raise CollectionError(str(e)) from None
        self._search_params.update(params)
        if self._index is not None:
            configure(self._index, self._search_params)

    def __len__(self) -> int:
        self.refresh()
        return len(self._id_to_row)

    def vector_of(self, item_id: int) -> np.ndarray:
        self.refresh()
        try:
            return np.asarray(self._matrix[self._id_to_row[item_id]])
        except KeyError:
            raise CollectionError(f"no item with id {item_id}") from None

    def embed_image(self, image: str | os.PathLike | bytes) -> np.ndarray:
        """The unit vector of a query image given as a path or as file bytes."""
        return self.encoder.embed(self._query_tensor(image))[0]

    def _query_tensor(self, image: str | os.PathLike | bytes) -> np.ndarray:
        """A query image (path or file bytes) as a batch of one, preprocessed for the encoder."""
        data = read_bytes(str(image)) if not isinstance(image, bytes) else image
        return decode_bytes(data, self.encoder.prep).tensor[None]

    def predict(self, image: str | os.PathLike | bytes, top: int = 3) -> list[tuple[str, float]]:
        """The encoder's most likely categories for an image, when it was trained on categories
        (a fine-tuned model folder); empty for encoders without a category head."""
        encoder = self.encoder
        if not encoder.labels or encoder.label_kind != "categories":
            return []
        _, probs = encoder.embed_and_classify(self._query_tensor(image))
        best = np.argsort(-probs[0])[:top]
        return [(encoder.labels[i], float(probs[0][i])) for i in best]

    def search(
        self, image: str | os.PathLike | bytes, k: int = 10, category: str | None = None
    ) -> list[Result]:
        """The k items most like an image (a path or file bytes), optionally within one category."""
        return self.search_vector(self.embed_image(image), k, category)

    def similar(self, item_id: int, k: int = 10, category: str | None = None) -> list[Result]:
        """More like an item already in the collection (the item itself comes first)."""
        return self.search_vector(self.vector_of(item_id), k, category)

    def search_vector(self, vector: np.ndarray, k: int = 10, category: str | None = None) -> list[Result]:
        if k < 1:
            raise CollectionError("k must be at least 1")
        self.refresh()
        query = np.asarray(vector, np.float32)[None]
        if category is None:
            ids, scores = self._index.search(query, k)
            if (ids[0] >= 0).sum() < min(k, len(self._ids)):  # an approximate index came up short
                ids, scores = top_k(query @ np.asarray(self._matrix).T, self._ids, k)
        else:
            ids, scores = self._search_category(query, k, category)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        items = self.catalog.get_many(i for i, _ in found)
        return [
            Result(rank, i, items[i].path, items[i].category, score)
            for rank, (i, score) in enumerate(((i, s) for i, s in found if i in items), start=1)
        ]

    def _search_category(self, query: np.ndarray, k: int, category: str) -> tuple[np.ndarray, np.ndarray]:
        """k results whenever the category holds k items: small categories (or an index that came
        up short) are searched exactly, large ones through the index's filtered search."""
        ids = np.asarray(self.catalog.ids_in_category(category), np.int64)
        if len(ids) == 0:
            known = ", ".join(str(c) for c in self.categories() if c is not None) or "none"
            raise CollectionError(f"no category {category!r} (categories: {known})")
        allowed = ids[np.isin(ids, self._ids)]  # only items of the snapshot being searched
        if len(allowed) >= AUTO_EXACT_BELOW:
            found = self._index.search(query, k, allowed)
            if (found[0][0] >= 0).sum() >= min(k, len(allowed)):
                return found
        positions = np.searchsorted(self._ids, allowed)
        return top_k(query @ np.asarray(self._matrix[positions]).T, allowed, k)

    def items(self) -> Iterator[Item]:
        return self.catalog.items()

    def item(self, item_id: int) -> Item:
        item = self.catalog.get(item_id)
        if item is None:
            raise CollectionError(f"no item with id {item_id}")
        return item

    def categories(self) -> dict[str | None, int]:
        return self.catalog.categories()

    def info(self) -> dict[str, Any]:
        files = [p for p in self.path.iterdir() if p.is_file()]
        return {
            "path": str(self.path.resolve()),
            "items": self.catalog.count(),
            "categories": {str(k) if k is not None else "(none)": v for k, v in self.categories().items()},
            "encoder": {k: v for k, v in self.manifest["encoder"].items()},
            "index": {**self.manifest["index"],
                      "in_use": resolve_backend(self.manifest["index"]["backend"], self.catalog.count())},
            "roots": self.catalog.roots(),
            "size_bytes": sum(p.stat().st_size for p in files),
            "skipped": [{"path": p, "reason": r} for p, r in self.catalog.skipped()],
            "created": self.manifest["created"],
            "updated": self.manifest["updated"],
        }


def scan_folder(folder: str | os.PathLike) -> tuple[str, list[FoundFile], list[Skipped]]:
    """The folder's root as stored, its image files and the entries that cannot be read."""
    try:
        found, skipped = scan(folder)
    except FileNotFoundError as e:
        raise CollectionError(str(e)) from None
    return str(Path(os.path.abspath(folder))), found, skipped


def open_existing_or_create(store: type, spec: str | os.PathLike, exists: bool, encoder: str | None):
    """Open `spec` when it exists (refusing vectors of another encoder), else create it with `encoder`."""
    if not exists:
        return store.create(spec, encoder=encoder or DEFAULT_ENCODER)
    opened = store.open(spec)
    if encoder is not None:
        opened.check_encoder(encoder)
    return opened


def plan_update(
    found: list[FoundFile],
    scan_skipped: list[Skipped],
    indexed: dict[str, tuple[int, int, int]],
    skipped_before: dict[str, tuple[int | None, int | None]],
) -> tuple[list[FoundFile], int, list[str], list[str]]:
    """What an update of one folder must do, from the files found and what the store holds for it:
    (files to embed, number unchanged, indexed paths now gone, skipped paths now gone).
    Unchanged = same size and mtime; a bad file that is unchanged is not retried."""
    todo: list[FoundFile] = []
    unchanged = 0
    for f in found:
        previous = indexed.get(f.path)
        if previous and previous[1:] == (f.size, f.mtime_ns):
            unchanged += 1
        elif skipped_before.get(f.path) != (f.size, f.mtime_ns):
            todo.append(f)
    present = {f.path for f in found} | {s.path for s in scan_skipped}
    return todo, unchanged, [p for p in indexed if p not in present], [p for p in skipped_before if p not in present]


def embed_and_commit(
    todo: list[FoundFile],
    encoder: OnnxEncoder,
    known_hashes: set[str] | dict[str, int],
    embedder: Embedder,
    commit: Callable[[Batch, Waiting], Waiting],
    indexed: dict,
    report: UpdateReport,
    progress: bool,
) -> None:
    """Run the embedder over `todo` with a progress bar, committing each batch as it comes.

    `commit(batch, waiting)` stores a batch and returns the duplicates whose original is not stored
    yet; they are offered again with the next batch."""
    waiting: Waiting = []
    bar = tqdm(total=len(todo), unit="img", desc="embedding", disable=not progress or not todo, smoothing=0.1)
    with bar:
        for batch in embedder(todo, encoder, known_hashes):
            waiting = commit(batch, waiting)
            for file, _ in batch.embedded + batch.duplicates:
                if file.path in indexed:
                    report.updated += 1
                else:
                    report.added += 1
            report.embedded += len(batch.embedded)
            bar.update(len(batch))
    if waiting:  # only if the original failed to embed: still report every file
        commit(Batch(skipped=[(f, "identical to a file that failed to embed") for f, _ in waiting]), [])


def open_collection(spec: str | os.PathLike, readonly: bool = False) -> Collection:
    """Open a collection named on the command line or in the API: a local collection folder, or
    `milvus:URI` for a Milvus store (milvus:./photos.db runs Milvus Lite; milvus:http://host:19530)."""
    if str(spec).startswith("milvus:"):
        from lookalike.milvus_store import MilvusCollection

        return MilvusCollection.open(spec, readonly=readonly)
    return Collection.open(spec, readonly=readonly)


def open_or_create_collection(spec: str | os.PathLike, encoder: str | None = None) -> Collection:
    """Like open_collection, creating the collection (folder or Milvus store) if there is none."""
    if str(spec).startswith("milvus:"):
        from lookalike.milvus_store import MilvusCollection

        return MilvusCollection.open_or_create(spec, encoder=encoder)
    return Collection.open_or_create(spec, encoder=encoder)


def _new_item(file: FoundFile, decoded) -> NewItem:
    return NewItem(
        file.root, file.path, file.category, file.size, file.mtime_ns, decoded.hash, decoded.width, decoded.height
    )
