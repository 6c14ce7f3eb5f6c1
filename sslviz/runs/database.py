"""The SQLite file under the store: where it lives, one connection per thread, transactions, the schema version.

One writer per run (its worker process) and any number of readers (dashboard tabs, CLI) share the file. WAL mode
lets readers proceed while a writer commits; each reader query is its own short transaction so checkpoints can
always catch up; the writer runs a passive checkpoint every few commits and ``journal_size_limit`` truncates the
``-wal`` file afterwards. SQLite's errors reach callers as a ``StoreError`` saying what to do.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
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


def writable(path: Path) -> bool:
    """Whether this process may write the store file ``path`` and its folder (SQLite's journal lives there);
    False on read-only media."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def backup_path(path: Path, version: int) -> Path:
    """Where an upgrade keeps the file as it was: ``runs.db`` at version 0 -> ``runs.db.v0.bak``.

    >>> backup_path(Path("/home/me/.sslviz/runs.db"), 0).name
    'runs.db.v0.bak'
    """
    return path.with_name(f"{path.name}.v{version}.bak")


class Database:
    """One SQLite store file, opened (created or upgraded to ``SCHEMA_VERSION``, keeping a copy of the file as it
    was) on construction; a file newer than this code is refused untouched; an older one that cannot be written
    is read from an upgraded private copy, untouched (``frozen`` says so, and writes are refused)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_store_path()
        self._file = self.path  # the SQLite file connected to: ``path``, or the upgraded copy of a frozen one
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
        self.frozen = None  # why this store cannot be written, when it is read from an upgraded copy
        if version < SCHEMA_VERSION and self.path.exists() and not writable(self.path):
            self._read_upgraded_copy(version)
        elif version < SCHEMA_VERSION:
            self._upgrade()

    def _upgrade(self) -> None:
        """Bring the file to SCHEMA_VERSION in one transaction: create it, or keep a copy of the file as it was
        (:func:`backup_path`) and apply the missing UPGRADES."""
        kept = self._copy_as_it_is()
        try:
            with self._transaction(upgrading=True) as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have just done it
                if version >= SCHEMA_VERSION:
                    return
                if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
                    if kept is None or kept[1] != version:
                        raise StoreError(f"Run store {self.path} changed while a copy was kept before its upgrade; "
                                         "open it again.")
                    for step in UPGRADES[version:SCHEMA_VERSION]:
                        step(conn)
                else:
                    create_current(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if kept is not None:
                os.replace(kept[0], backup_path(self._file, kept[1]))
        finally:
            if kept is not None and kept[0].exists():
                os.remove(kept[0])

    def _copy_as_it_is(self) -> tuple[Path, int] | None:
        """(a consistent copy of a file that holds runs, beside it under a temporary name; its version), or None
        for a file with no runs table yet. SQLite's backup API: committed pages, the WAL's included."""
        source = self._connect()
        try:
            if not source.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
                return None
            tmp = self._file.with_name(f"{self._file.name}.{os.getpid()}.bak.tmp")
            copy = sqlite3.connect(tmp)
            try:
                source.backup(copy)
                version = copy.execute("PRAGMA user_version").fetchone()[0]
            finally:
                copy.close()
        except sqlite3.Error as exc:
            raise _explain(exc, self.path) from None
        finally:
            source.close()
        return tmp, version

    def _read_upgraded_copy(self, version: int) -> None:
        """An older file that cannot be written (read-only media, a shared archive): upgrade a private copy in a
        temporary folder and read that; the file itself is never touched, and every write is refused."""
        folder = Path(tempfile.mkdtemp(prefix="sslviz-store-"))
        weakref.finalize(self, shutil.rmtree, folder, True)
        source = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)  # no -shm, no lock
        copy = sqlite3.connect(folder / self.path.name)
        try:
            source.backup(copy)
        finally:
            source.close()
            copy.close()
        self._file = folder / self.path.name
        self._upgrade()
        os.remove(backup_path(self._file, version))  # the original is the copy as it was
        self.frozen = (f"Run store {self.path} has schema version {version} and cannot be written here, so it is "
                       f"read from an upgraded copy (version {SCHEMA_VERSION}) and cannot be changed; copy it to a "
                       "writable folder (SSLVIZ_HOME or --store) to add or change runs.")

    # -- connection -------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._file, timeout=30, isolation_level=None, check_same_thread=False)
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
    def _transaction(self, upgrading: bool = False):
        """One IMMEDIATE transaction on this thread's connection; SQLite errors become StoreErrors, and so does any
        write to a store read from an upgraded copy (``frozen``)."""
        if self.frozen and not upgrading:
            raise StoreError(self.frozen)
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
