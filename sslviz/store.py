"""The run store: one SQLite file holding the run registry and every recorded metric.

One writer per run (its worker process) and any number of readers (dashboard
tabs, CLI) share the file. WAL mode lets readers proceed while a writer
commits; each reader query is its own short transaction so checkpoints can
always catch up; the writer runs a passive checkpoint every few commits and
``journal_size_limit`` truncates the ``-wal`` file afterwards.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ACTIVE = ("queued", "running")
CHECKPOINT_WAL_EVERY = 20  # commits between passive WAL checkpoints
MAX_POINTS = 2000  # default cap on steps returned per series

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    preset TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    device TEXT,
    error TEXT,
    pid INTEGER,
    heartbeat REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS scalars (
    run_id INTEGER NOT NULL, step INTEGER NOT NULL, wall REAL NOT NULL,
    loss REAL, loss_sup REAL, loss_unsup REAL, mask_rate REAL, pl_accuracy REAL, lr REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS class_train (
    run_id INTEGER NOT NULL, step INTEGER NOT NULL, cls INTEGER NOT NULL,
    threshold REAL, conf_pl REAL, conf_true REAL,
    n_pl INTEGER, n_accepted INTEGER, n_true INTEGER, n_correct INTEGER,
    precision REAL, recall REAL,
    PRIMARY KEY (run_id, step, cls)
);
CREATE TABLE IF NOT EXISTS evals (
    run_id INTEGER NOT NULL, step INTEGER NOT NULL, wall REAL NOT NULL,
    accuracy REAL, balanced_accuracy REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS class_eval (
    run_id INTEGER NOT NULL, step INTEGER NOT NULL, cls INTEGER NOT NULL, recall REAL,
    PRIMARY KEY (run_id, step, cls)
);
CREATE TABLE IF NOT EXISTS confusion (
    run_id INTEGER NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL, matrix TEXT NOT NULL,
    PRIMARY KEY (run_id, step, kind)
);
CREATE TABLE IF NOT EXISTS snapshots (
    run_id INTEGER NOT NULL, step INTEGER NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL, wall REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id);
"""
METRIC_TABLES = ("scalars", "class_train", "evals", "class_eval", "confusion", "snapshots")
SCALAR_COLUMNS = ("loss", "loss_sup", "loss_unsup", "mask_rate", "pl_accuracy", "lr")
CLASS_COLUMNS = ("threshold", "conf_pl", "conf_true", "n_pl", "n_accepted", "n_true", "n_correct", "precision", "recall")


class StoreError(RuntimeError):
    """The store file cannot be opened or written (read-only, full disk, not a database)."""


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


class RunStore:
    """Registry of runs and their metrics in one SQLite file; readers return DataFrames."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_store_path()
        self._local = threading.local()
        self._commits = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            conn.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise _explain(exc, self.path) if isinstance(exc, sqlite3.Error) else StoreError(
                f"Run store {self.path} cannot be created: {exc}."
            ) from None

    # -- connection -------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: Streamlit serves sessions from several threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA journal_size_limit = 8388608")
            self._local.conn = conn
        return conn

    def _write(self, statements) -> None:
        """Run ``[(sql, params | [params...]), ...]`` in one IMMEDIATE transaction."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    if isinstance(params, list):
                        conn.executemany(sql, params)
                    else:
                        conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLITE_FULL (and some I/O errors) already rolled it back
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _explain(exc, self.path) from None
        self._commits += 1
        if self._commits % CHECKPOINT_WAL_EVERY == 0:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _read(self, sql: str, params=()) -> pd.DataFrame:
        return pd.read_sql_query(sql, self._conn(), params=params)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- run registry -----------------------------------------------------
    def create_run(self, config: dict, *, info: dict | None = None, pid: int | None = None) -> int:
        """Record a new run, queued, or already running in process ``pid`` (a foreground CLI run,
        claimed in the same transaction so no reaper can start a second worker for it); returns its id."""
        conn = self._conn()
        now = time.time()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO runs (name, preset, config, status, created, total_steps, info, pid, heartbeat, started) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (config.get("name", ""), config.get("preset", ""), json.dumps(config),
                 "queued" if pid is None else "running", now, int(config["steps"]), json.dumps(info or {}),
                 pid, None if pid is None else now, None if pid is None else now),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _explain(exc, self.path) from None
        return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields) -> None:
        """Set registry columns (status, pid, device, error, heartbeat, step, started, finished, info)."""
        if "info" in fields:
            fields["info"] = json.dumps(fields["info"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._write([(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))])

    def claim_run(self, run_id: int, pid: int, device: str) -> None:
        now = time.time()
        # stop_requested is kept: a Stop pressed while the worker was booting still counts.
        self.update_run(run_id, status="running", pid=pid, device=device, started=now, heartbeat=now, error=None,
                        finished=None)

    def claim_queued(self, run_id: int, device: str, slots: int) -> bool:
        """Mark queued ``run_id`` running on ``device`` ("cpu"/"cuda") if fewer than ``slots`` runs run there.

        Test and set happen in one IMMEDIATE transaction, so concurrent reapers never start a run twice
        or overfill a device. Returns whether this caller claimed it.
        """
        now = time.time()
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "UPDATE runs SET status = 'running', device = ?, heartbeat = ?, started = ?, pid = NULL "
                    "WHERE id = ? AND status = 'queued' AND (SELECT COUNT(*) FROM runs WHERE status = 'running' "
                    "AND (CASE WHEN device LIKE 'cuda%' THEN 'cuda' ELSE 'cpu' END) = ?) < ?",
                    (device, now, now, run_id, device, slots),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _explain(exc, self.path) from None
        return cur.rowcount == 1

    def set_pid(self, run_id: int, pid: int, heartbeat: float) -> None:
        """Record a just-spawned worker's pid, unless it has already claimed (or finished) the run itself."""
        self._write([("UPDATE runs SET pid = ?, heartbeat = ? WHERE id = ? AND status = 'running' AND pid IS NULL",
                      (pid, heartbeat, run_id))])

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        self.update_run(run_id, status=status, error=error, finished=time.time())

    def heartbeat(self, run_id: int) -> None:
        self.update_run(run_id, heartbeat=time.time())

    def request_stop(self, run_id: int) -> bool:
        """Ask a running run to stop; a queued run is stopped at once. False if the run is not active."""
        row = self._conn().execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row[0] not in ACTIVE:
            return False
        self._write([
            ("UPDATE runs SET stop_requested = 1 WHERE id = ?", (run_id,)),
            ("UPDATE runs SET status = 'stopped', finished = ? WHERE id = ? AND status = 'queued'", (time.time(), run_id)),
        ])
        return True

    def stop_requested(self, run_id: int) -> bool:
        row = self._conn().execute("SELECT stop_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        return bool(row and row[0])

    def run(self, run_id: int) -> dict | None:
        """One run's registry row with ``config`` and ``info`` decoded, or None."""
        df = self._read("SELECT * FROM runs WHERE id = ?", (int(run_id),))
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["config"] = json.loads(row["config"])
        row["info"] = json.loads(row["info"])
        return row

    def runs(self) -> pd.DataFrame:
        """All runs, newest first, with their latest accuracy and balanced accuracy."""
        return self._read(
            """
            SELECT r.id, r.name, r.preset, r.status, r.error, r.step, r.total_steps, r.device,
                   r.created, r.started, r.finished, r.heartbeat, r.pid, r.config,
                   e.accuracy, e.balanced_accuracy
            FROM runs r LEFT JOIN evals e
              ON e.run_id = r.id AND e.step = (SELECT MAX(step) FROM evals WHERE run_id = r.id)
            ORDER BY r.id DESC
            """
        )

    def delete_run(self, run_id: int) -> None:
        stmts = [(f"DELETE FROM {t} WHERE run_id = ?", (run_id,)) for t in (*METRIC_TABLES, "events")]
        self._write([*stmts, ("DELETE FROM runs WHERE id = ?", (run_id,))])

    def truncate_after(self, run_id: int, step: int) -> None:
        """Drop metrics recorded after ``step`` (a resume restarts from the checkpoint there)."""
        self._write([*((f"DELETE FROM {t} WHERE run_id = ? AND step > ?", (run_id, step)) for t in METRIC_TABLES),
                     ("UPDATE runs SET step = ? WHERE id = ?", (step, run_id))])

    def add_event(self, run_id: int, kind: str, message: str) -> None:
        self._write([("INSERT INTO events (run_id, wall, kind, message) VALUES (?, ?, ?, ?)",
                      (run_id, time.time(), kind, message))])

    # -- metrics ----------------------------------------------------------
    def log(self, run_id: int, record: dict) -> None:
        """Write one trainer record (see ``trainer.train``'s ``on_log``) in a single transaction."""
        step, wall = int(record["step"]), float(record["wall"])
        stmts = [("UPDATE runs SET step = ?, heartbeat = ? WHERE id = ?", (step, time.time(), run_id))]
        if "scalars" in record:
            s = record["scalars"]
            stmts.append((
                f"INSERT OR REPLACE INTO scalars (run_id, step, wall, {', '.join(SCALAR_COLUMNS)}) VALUES (?, ?, ?{', ?' * len(SCALAR_COLUMNS)})",
                (run_id, step, wall, *(s.get(c) for c in SCALAR_COLUMNS)),
            ))
        if "classes" in record:
            stmts.append((
                f"INSERT OR REPLACE INTO class_train (run_id, step, cls, {', '.join(CLASS_COLUMNS)}) VALUES (?, ?, ?{', ?' * len(CLASS_COLUMNS)})",
                [(run_id, step, c, *(row[k] for k in CLASS_COLUMNS)) for c, row in enumerate(record["classes"])],
            ))
        if "eval" in record:
            e = record["eval"]
            stmts.append(("INSERT OR REPLACE INTO evals VALUES (?, ?, ?, ?, ?)",
                          (run_id, step, wall, e["accuracy"], e["balanced_accuracy"])))
            stmts.append(("INSERT OR REPLACE INTO class_eval VALUES (?, ?, ?, ?)",
                          [(run_id, step, c, float(r)) for c, r in enumerate(e["recall"])]))
            stmts.append(("INSERT OR REPLACE INTO confusion VALUES (?, ?, 'test', ?)",
                          (run_id, step, json.dumps(np.asarray(e["confusion"]).tolist()))))
        if "pseudo_confusion" in record:
            stmts.append(("INSERT OR REPLACE INTO confusion VALUES (?, ?, 'pseudo', ?)",
                          (run_id, step, json.dumps(np.asarray(record["pseudo_confusion"]).tolist()))))
        if "snapshot" in record:
            stmts.append(("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)",
                          (run_id, step, json.dumps(record["snapshot"]))))
        self._write(stmts)

    def _step_filter(self, table: str, run_id: int, max_points: int | None) -> tuple[str, tuple]:
        """SQL condition keeping at most ``max_points`` evenly spaced steps (always the last one)."""
        if not max_points:
            return "", ()
        n = self._conn().execute(f"SELECT COUNT(DISTINCT step) FROM {table} WHERE run_id = ?", (run_id,)).fetchone()[0]
        if n <= max_points:
            return "", ()
        stride = -(-n // max_points)
        # Count back from the last step: at most ceil(n / stride) <= max_points steps, the last always kept.
        return (
            f" AND step IN (SELECT step FROM (SELECT step, ROW_NUMBER() OVER (ORDER BY step) - 1 AS i FROM "
            f"(SELECT DISTINCT step FROM {table} WHERE run_id = ?)) WHERE (? - 1 - i) % ? = 0)",
            (run_id, n, stride),
        )

    def _series(self, table: str, columns: str, run_id: int, max_points: int | None, order: str = "step") -> pd.DataFrame:
        cond, params = self._step_filter(table, run_id, max_points)
        return self._read(f"SELECT {columns} FROM {table} WHERE run_id = ?{cond} ORDER BY {order}", (run_id, *params))

    def scalars(self, run_id: int, max_points: int | None = MAX_POINTS) -> pd.DataFrame:
        """Columns step, wall, loss, loss_sup, loss_unsup, mask_rate, pl_accuracy, lr."""
        return self._series("scalars", "step, wall, " + ", ".join(SCALAR_COLUMNS), run_id, max_points)

    def class_train(self, run_id: int, max_points: int | None = MAX_POINTS) -> pd.DataFrame:
        """Long format: one row per (step, cls) with thresholds, confidences and pseudo-label counts."""
        return self._series("class_train", "step, cls, " + ", ".join(CLASS_COLUMNS), run_id, max_points, "step, cls")

    def evals(self, run_id: int) -> pd.DataFrame:
        return self._read("SELECT step, wall, accuracy, balanced_accuracy FROM evals WHERE run_id = ? ORDER BY step", (run_id,))

    def class_eval(self, run_id: int, max_points: int | None = MAX_POINTS) -> pd.DataFrame:
        return self._series("class_eval", "step, cls, recall", run_id, max_points, "step, cls")

    def confusion(self, run_id: int, kind: str = "test", step: int | None = None) -> tuple[int, np.ndarray] | None:
        """The (step, matrix) of the latest (or given) confusion matrix of ``kind`` 'test' or 'pseudo'."""
        sql = "SELECT step, matrix FROM confusion WHERE run_id = ? AND kind = ?"
        params: tuple = (run_id, kind)
        if step is not None:
            sql += " AND step <= ?"
            params += (step,)
        row = self._conn().execute(sql + " ORDER BY step DESC LIMIT 1", params).fetchone()
        return None if row is None else (int(row[0]), np.array(json.loads(row[1])))

    def snapshots(self, run_id: int) -> list[tuple[int, dict]]:
        rows = self._conn().execute("SELECT step, payload FROM snapshots WHERE run_id = ? ORDER BY step", (run_id,))
        return [(int(s), json.loads(p)) for s, p in rows.fetchall()]

    def events(self, run_id: int) -> pd.DataFrame:
        return self._read("SELECT wall, kind, message FROM events WHERE run_id = ? ORDER BY id", (run_id,))

    def export(self, run_id: int) -> dict[str, pd.DataFrame]:
        """Every metric table of a run, unsampled, for CSV/Parquet export."""
        return {
            "scalars": self.scalars(run_id, None),
            "class_train": self.class_train(run_id, None),
            "evals": self.evals(run_id),
            "class_eval": self.class_eval(run_id, None),
            "events": self.events(run_id),
        }
