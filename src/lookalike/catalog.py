"""The SQLite catalogue: one row per indexed image, the files that were skipped and why, and commit state."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    root TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    category TEXT,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    row INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_category ON items(category);
CREATE INDEX IF NOT EXISTS items_hash ON items(hash);
CREATE INDEX IF NOT EXISTS items_root ON items(root);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES ('vector_rows', 0), ('generation', 0);
"""


@dataclass(frozen=True)
class Item:
    id: int
    root: str
    path: str
    category: str | None
    size: int
    mtime_ns: int
    hash: str
    width: int
    height: int
    row: int


@dataclass(frozen=True)
class NewItem:
    root: str
    path: str
    category: str | None
    size: int
    mtime_ns: int
    hash: str
    width: int
    height: int


ITEM_COLUMNS = "id, root, path, category, size, mtime_ns, hash, width, height, row"


class Catalog:
    """Thin typed access to catalog.sqlite. Writes happen inside `transaction()` only."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        if not readonly:  # readers never write, so they never wait on a writer's lock
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- commit state -------------------------------------------------------------------------
    def state(self, key: str) -> int:
        return self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()[0]

    def transaction(self) -> "Transaction":
        return Transaction(self.db)

    # --- reads --------------------------------------------------------------------------------
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def items(self, where: str = "", params: Iterable = ()) -> Iterator[Item]:
        sql = f"SELECT {ITEM_COLUMNS} FROM items {where} ORDER BY id"
        for row in self.db.execute(sql, tuple(params)):
            yield Item(*row)

    def get(self, item_id: int) -> Item | None:
        row = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return Item(*row) if row else None

    def get_many(self, ids: Iterable[int]) -> dict[int, Item]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {item.id: item for item in self.items(f"WHERE id IN ({marks})", ids)}

    def id_row_pairs(self) -> tuple[list[int], list[int]]:
        rows = self.db.execute("SELECT id, row FROM items ORDER BY id").fetchall()
        return [r[0] for r in rows], [r[1] for r in rows]

    def ids_in_category(self, category: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM items WHERE category = ? ORDER BY id", (category,))]

    def categories(self) -> dict[str | None, int]:
        rows = self.db.execute("SELECT category, COUNT(*) FROM items GROUP BY category ORDER BY category")
        return {name: n for name, n in rows}

    def hash_rows(self) -> dict[str, int]:
        return {h: r for h, r in self.db.execute("SELECT hash, row FROM items")}

    def files_under(self, root: str) -> dict[str, tuple[int, int, int]]:
        """path -> (id, size, mtime_ns) of the items indexed from one root."""
        rows = self.db.execute("SELECT path, id, size, mtime_ns FROM items WHERE root = ?", (root,))
        return {p: (i, s, m) for p, i, s, m in rows}

    def skipped_under(self, root: str) -> dict[str, tuple[int | None, int | None]]:
        rows = self.db.execute("SELECT path, size, mtime_ns FROM skipped WHERE root = ?", (root,))
        return {p: (s, m) for p, s, m in rows}

    def skipped(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT path, reason FROM skipped ORDER BY path").fetchall()

    def roots(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT root FROM items ORDER BY root")]


class Transaction:
    """One atomic catalogue commit: everything inside is applied together or not at all."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> "Transaction":
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")

    def set_state(self, key: str, value: int) -> None:
        self.db.execute("UPDATE state SET value = ? WHERE key = ?", (value, key))

    def upsert_item(self, item: NewItem, row: int) -> None:
        self.db.execute(
            "INSERT INTO items (root, path, category, size, mtime_ns, hash, width, height, row)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(path) DO UPDATE SET root=excluded.root, category=excluded.category,"
            " size=excluded.size, mtime_ns=excluded.mtime_ns, hash=excluded.hash, width=excluded.width,"
            " height=excluded.height, row=excluded.row",
            (item.root, item.path, item.category, item.size, item.mtime_ns, item.hash, item.width, item.height, row),
        )
        self.db.execute("DELETE FROM skipped WHERE path = ?", (item.path,))

    def record_skip(self, root: str, path: str, size: int | None, mtime_ns: int | None, reason: str) -> None:
        self.db.execute("DELETE FROM items WHERE path = ?", (path,))
        self.db.execute(
            "INSERT OR REPLACE INTO skipped (path, root, size, mtime_ns, reason) VALUES (?, ?, ?, ?, ?)",
            (path, root, size, mtime_ns, reason),
        )

    def remove_paths(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.db.execute("DELETE FROM items WHERE path = ?", (path,))
            self.db.execute("DELETE FROM skipped WHERE path = ?", (path,))
