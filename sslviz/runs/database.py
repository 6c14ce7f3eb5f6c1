"""The SQLite file under the store: where it lives, one connection per thread, transactions, the schema version.

One writer per run (its worker process) and any number of readers (dashboard tabs, CLI) share the file. WAL mode
lets readers proceed while a writer commits; each reader query is its own short transaction so checkpoints can
always catch up; the writer runs a passive checkpoint every few commits and ``journal_size_limit`` truncates the
``-wal`` file afterwards. SQLite's errors reach callers as a ``StoreError`` saying what to do.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from .schema import SCHEMA_VERSION, UPGRADES, create_current

CHECKPOINT_WAL_EVERY = 20  # commits between passive WAL checkpoints


class StoreError(RuntimeError):
    """The store file cannot be opened or written (read-only, full disk, not a database, too new)."""


def home_dir() -> Path:
    """``$SSLVIZ_HOME`` or ``~/.sslviz``: the store, checkpoints and dataset caches live here."""
    return Path(os.environ.get("SSLVIZ_HOME") or Path.home() / ".sslviz")


def default_store_path() -> Path:
    """``$SSLVIZ_STORE``, else ``runs.db`` in :func:`home_dir`."""
    return Path(os.environ.get("SSLVIZ_STORE") or home_dir() / "runs.db")


def _explain(exc: sqlite3.Error, path: Path) -> StoreError:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        why = "is read-only; point SSLVIZ_HOME (or --store) at a writable folder"
    elif "full" in text:
        why = "cannot grow: the disk is full; free space or move the store with SSLVIZ_HOME"
    elif "unable to open" in text:
        why = "cannot be opened; check that its folder exists and is writable"
    else:
        why = f"failed: {text}"
    return StoreError(f"Run store {path} {why}.")


class Database:
    """One SQLite store file, opened (created or upgraded to ``SCHEMA_VERSION``) on construction; a file newer than
    this code is refused untouched."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_store_path()
        self._local = threading.local()
        self._commits = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A bare connection first: a file newer than this code must not even be switched to WAL.
            conn = self._connect()
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            raise _explain(exc, self.path) if isinstance(exc, sqlite3.Error) else StoreError(
                f"Run store {self.path} cannot be created: {exc}."
            ) from None
        if version > SCHEMA_VERSION:
            raise StoreError(f"Run store {self.path} has schema version {version}, but this sslviz ({__version__}) "
                             f"reads versions up to {SCHEMA_VERSION}; upgrade sslviz, or point SSLVIZ_HOME "
                             "(or --store) at another store. The file was left unchanged.")
        if version < SCHEMA_VERSION:
            self._upgrade()

    def _upgrade(self) -> None:
        """Bring the file to SCHEMA_VERSION in one transaction: create it, or apply the missing UPGRADES."""
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have just done it
            if version >= SCHEMA_VERSION:
                return
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
                for step in UPGRADES[version:SCHEMA_VERSION]:
                    step(conn)
            else:
                create_current(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connection -------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row  # rows are read by column name
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: Streamlit serves sessions from several threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA journal_size_limit = 8388608")
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self):
        """One IMMEDIATE transaction on this thread's connection; SQLite errors become StoreErrors."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLITE_FULL (and some I/O errors) already rolled it back
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _explain(exc, self.path) from None

    def _write(self, statements) -> None:
        """Run ``[(sql, params | [params...]), ...]`` in one IMMEDIATE transaction."""
        with self._transaction() as conn:
            for sql, params in statements:
                if isinstance(params, list):
                    conn.executemany(sql, params)
                else:
                    conn.execute(sql, params)
        self._commits += 1
        if self._commits % CHECKPOINT_WAL_EVERY == 0:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _read(self, sql: str, params=()) -> pd.DataFrame:
        return pd.read_sql_query(sql, self._conn(), params=params)

    def _one(self, sql: str, params=()) -> sqlite3.Row | None:
        return self._conn().execute(sql, params).fetchone()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
