"""The run store: one SQLite file holding the run registry and every recorded metric.

One writer per run (its worker process) and any number of readers (dashboard
tabs, CLI) share the file. WAL mode lets readers proceed while a writer
commits; each reader query is its own short transaction so checkpoints can
always catch up; the writer runs a passive checkpoint every few commits and
``journal_size_limit`` truncates the ``-wal`` file afterwards.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import __version__
from . import lifecycle, records
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from .lifecycle import ACTIVE, ENDED, ENDING, PROCESS_LOST, NoSuchRun, TransitionRefused
from .records import CONFUSION_KINDS, SPLITS
CHECKPOINT_WAL_EVERY = 20  # commits between passive WAL checkpoints
MAX_POINTS = 2000  # default cap on steps returned per series
VIEW_POINTS = 300  # step bins per series on the Live and Compare pages: a refresh stays light at any run length
ROLLUPS_KEPT = 256  # finished step bins kept per store object (an LRU of series), see RunStore._series
ROLLUP_FOLDER = "cache/rollups"  # beside the store: the same bins on disk, for a server that starts afresh
SCHEMA_VERSION = 3  # PRAGMA user_version of the files this code writes; bump it with a new step in UPGRADES

RUNS_SQL = """
CREATE TABLE runs (
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
    info TEXT NOT NULL DEFAULT '{}',
    code_version TEXT,
    executor TEXT NOT NULL DEFAULT 'local',
    archived INTEGER NOT NULL DEFAULT 0,
    sweep INTEGER
)"""
# A sweep: a grid of runs defined together (sslviz.sweep); its runs carry its id in ``runs.sweep``.
SWEEPS_SQL = """
CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    spec TEXT NOT NULL,
    executor TEXT NOT NULL DEFAULT 'local',
    options TEXT NOT NULL DEFAULT '{}'
)"""
METRIC_TABLES = tuple(r.TABLE for r in records.METRIC_ROWS)


# -- schema upgrades: one frozen step per version, never edited once released ---------------------
def _rebuild(conn: sqlite3.Connection, table: str, create: str, select: str) -> None:
    """Replace ``table`` by the one ``create`` declares, copying ``select`` from the old rows.

    SQLite cannot alter a primary key, so: create a new table, copy, drop the old one, rename.
    """
    conn.execute(create.format(name=f"{table}_new"))
    conn.execute(f"INSERT INTO {table}_new SELECT {select} FROM {table}")
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_new RENAME TO {table}")


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    """The validation split: evals and class_eval keyed by split (every older evaluation was the test set),
    a technique table for techniques' live state, and the code version of each run."""
    _rebuild(conn, "evals", "CREATE TABLE {name} (run_id INTEGER NOT NULL, step INTEGER NOT NULL, "
             "split TEXT NOT NULL, wall REAL NOT NULL, accuracy REAL, balanced_accuracy REAL, "
             "PRIMARY KEY (run_id, step, split))",
             "run_id, step, 'test', wall, accuracy, balanced_accuracy")
    _rebuild(conn, "class_eval", "CREATE TABLE {name} (run_id INTEGER NOT NULL, step INTEGER NOT NULL, "
             "split TEXT NOT NULL, cls INTEGER NOT NULL, recall REAL, PRIMARY KEY (run_id, step, split, cls))",
             "run_id, step, 'test', cls, recall")
    conn.execute("CREATE TABLE technique (run_id INTEGER NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, "
                 "cls INTEGER NOT NULL, value REAL, PRIMARY KEY (run_id, step, name, cls))")
    conn.execute("ALTER TABLE runs ADD COLUMN code_version TEXT")


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """The explicit lifecycle: how each run executes (its liveness check; every older run was a local process)
    and the archive bit (nothing was archived before)."""
    conn.execute("ALTER TABLE runs ADD COLUMN executor TEXT NOT NULL DEFAULT 'local'")
    conn.execute("ALTER TABLE runs ADD COLUMN archived INTEGER NOT NULL DEFAULT 0")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Sweeps: a ``sweeps`` table and the sweep each run belongs to (none before)."""
    conn.execute("ALTER TABLE runs ADD COLUMN sweep INTEGER")
    conn.execute("CREATE TABLE sweeps (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL DEFAULT '', "
                 "created REAL NOT NULL, spec TEXT NOT NULL, executor TEXT NOT NULL DEFAULT 'local', "
                 "options TEXT NOT NULL DEFAULT '{}')")


UPGRADES = (_v0_to_v1, _v1_to_v2, _v2_to_v3)  # UPGRADES[v] turns a version-v file into version v + 1


def _create_current(conn: sqlite3.Connection) -> None:
    """A fresh file goes straight to the current version, from the record declarations."""
    for sql in (RUNS_SQL, SWEEPS_SQL, *(stmt for row in records.ROWS for stmt in records.create_sql(row))):
        conn.execute(sql)


@functools.cache
def code_version() -> str:
    """``__version__``, plus ``+g<commit>`` when the package sits in a git checkout ("0.2.0+g9912014").

    Computed once per process; a missing git, or no checkout, gives the bare version.
    """
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return __version__
    commit = out.stdout.strip()
    return f"{__version__}+g{commit}" if out.returncode == 0 and commit else __version__


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


def _decoded(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` rows with ``config`` as a dict: the one place a run's config JSON is decoded for the readers."""
    return runs.assign(config=[json.loads(c) for c in runs["config"]]) if "config" in runs else runs


class RunStore:
    """Registry of runs and their metrics in one SQLite file; readers return DataFrames."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_store_path()
        self._local = threading.local()
        self._commits = 0
        self._rollups: dict = {}  # series key -> (bins end, frame of the finished step bins); see _series
        self._rollup_lock = threading.Lock()
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
                _create_current(conn)
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

    # -- run registry: every status change is one guarded transition of lifecycle.TRANSITIONS -----------
    def _refuse(self, conn: sqlite3.Connection, run_id: int, action: str):
        """The error for an update that changed no row: the run is missing, or its status does not allow it."""
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return NoSuchRun(run_id, self.path)
        return TransitionRefused(run_id, row["status"], action)

    def _transition(self, conn: sqlite3.Connection, run_id: int, action: str, fields: dict | None = None,
                    where: str = "", params: tuple = ()) -> None:
        """Apply ``action`` to ``run_id`` inside ``conn``'s transaction: ``UPDATE runs SET status = <its target>,
        <fields> WHERE id = ? AND status IN (<its sources>) <where>``; refused (nothing changed) when no row matched."""
        t = lifecycle.TRANSITIONS[action]
        moves = {src: dst for src, dst in t.moves.items() if src is not lifecycle.NEW and dst != lifecycle.SAME}
        sets, values = [], []
        if moves:
            sets.append("status = CASE status " + " ".join("WHEN ? THEN ?" for _ in moves) + " ELSE status END")
            values += [v for pair in moves.items() for v in pair]
        for k, v in (fields or {}).items():
            sets.append(f"{k} = ?")
            values.append(json.dumps(v) if k == "info" else v)
        sources = t.sources
        cur = conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ? AND status IN "
                           f"({', '.join('?' for _ in sources)}){where}", (*values, run_id, *sources, *params))
        if cur.rowcount == 0:
            raise self._refuse(conn, run_id, action)

    def _apply(self, run_id: int, action: str, fields: dict | None = None, *, event: tuple[str, str] | None = None,
               where: str = "", params: tuple = ()) -> None:
        """``_transition`` in its own transaction, with an optional event row (kind, message) in the same one."""
        with self._transaction() as conn:
            self._transition(conn, run_id, action, fields, where, params)
            if event is not None:
                conn.execute(records.insert_sql(records.Event),
                             dict(run_id=run_id, wall=time.time(), kind=event[0], message=event[1]))
        self._commits += 1
        if self._commits % CHECKPOINT_WAL_EVERY == 0:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def create_run(self, config: dict, *, info: dict | None = None, pid: int | None = None,
                   executor: str = lifecycle.DEFAULT_EXECUTOR, sweep: int | None = None) -> int:
        """Record a new run: ``submit`` (queued), or ``start_foreground``: already running in process ``pid`` (a
        foreground CLI run, claimed in the same transaction so no reaper can start a second worker for it).
        ``executor`` names how it executes, hence its liveness check (``lifecycle.LIVENESS``). The run
        remembers the code that computes it (`code_version`); ``sweep`` is the sweep it belongs to. Returns its id."""
        now = time.time()
        running = pid is not None
        status = lifecycle.target("start_foreground" if running else "submit", lifecycle.NEW)
        row = dict(name=config.get("name", ""), preset=config.get("preset", ""), config=json.dumps(config),
                   status=status, created=now, total_steps=int(config["steps"]),
                   info=json.dumps(info or {}), pid=pid, heartbeat=now if running else None,
                   started=now if running else None, code_version=code_version(), executor=executor, sweep=sweep)
        with self._transaction() as conn:
            cur = conn.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row)
        return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields) -> None:
        """Set registry columns that are not the lifecycle (pid, device, heartbeat, step, started, info, ...).

        ``status`` here is an unguarded write kept for test fixtures and benches that fabricate a run in a given
        status; sslviz itself changes a status only through the transitions below (a test checks that).
        """
        if "info" in fields:
            fields["info"] = json.dumps(fields["info"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._write([(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))])

    def claim_run(self, run_id: int, pid: int, device: str) -> None:
        """The worker process ``pid`` takes the run: ``claim`` of a queued run (``python -m sslviz worker N``), or
        attaching to a run already claimed for it (pid NULL between a reaper's claim and its spawn, or ``pid``:
        spawned, a foreground train or resume). Refused for any other run, e.g. an ended one or another process's."""
        now = time.time()
        # stop_requested is kept: a Stop pressed while the worker was booting still counts.
        fields = dict(status="running", pid=pid, device=device, started=now, heartbeat=now, error=None, finished=None)
        with self._transaction() as conn:
            cur = conn.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ? AND (status = 'queued' OR "
                "(status = 'running' AND (pid IS NULL OR pid = ?)))", (*fields.values(), run_id, pid))
            if cur.rowcount == 0:
                raise self._refuse(conn, run_id, "claim")

    def claim_queued(self, run_id: int, device: str, slots: int) -> bool:
        """``claim``: mark queued ``run_id`` running on ``device`` ("cpu" or "cuda:i") if fewer than ``slots`` runs run
        there (the CPU counts as one device, each GPU as its own).

        Test and set happen in one IMMEDIATE transaction, so concurrent reapers never start a run twice
        or overfill a device. Returns whether this caller claimed it (losing the race is no error).
        """
        now = time.time()
        try:
            self._apply(run_id, "claim", dict(device=device, heartbeat=now, started=now, pid=None),
                        where=" AND (SELECT COUNT(*) FROM runs WHERE status = 'running' AND executor = 'local' AND "
                              "(CASE WHEN device = 'cuda' THEN 'cuda:0' WHEN device LIKE 'cuda%' THEN device "
                              "ELSE 'cpu' END) = ?) < ?",
                        params=(device, slots))
        except TransitionRefused:
            return False
        return True

    def set_pid(self, run_id: int, pid: int, heartbeat: float) -> None:
        """Record a just-spawned worker's pid, unless it has already claimed (or finished) the run itself."""
        self._write([("UPDATE runs SET pid = ?, heartbeat = ? WHERE id = ? AND status = 'running' AND pid IS NULL",
                      (pid, heartbeat, run_id))])

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        """End a running run as ``status`` ('finished', 'stopped' or 'failed'); TransitionRefused if it is not running
        (e.g. a liveness check already marked it lost: that verdict stays)."""
        if status not in ENDING:
            raise ValueError(f"A run ends as one of {list(ENDING)}, not {status!r}.")
        self._apply(run_id, ENDING[status], dict(error=error, finished=time.time()))

    def lose(self, run_id: int, why: str) -> bool:
        """``lose``: fail running ``run_id`` with "process lost" (and an event saying ``why``). False when it was no
        longer running (another reader marked it first, or it ended meanwhile)."""
        try:
            self._apply(run_id, "lose", dict(error=PROCESS_LOST, finished=time.time()),
                        event=("failed", f"{why}; {PROCESS_LOST}"))
        except (TransitionRefused, NoSuchRun):
            return False
        return True

    def heartbeat(self, run_id: int) -> None:
        self._write([("UPDATE runs SET heartbeat = ? WHERE id = ? AND status = 'running'", (time.time(), run_id))])

    def request_stop(self, run_id: int) -> bool:
        """``request_stop``: a queued run is stopped at once; a running one gets the stop flag (its trainer stops at
        the next log step). TransitionRefused for an ended run, NoSuchRun for a missing one; True otherwise."""
        with self._transaction() as conn:
            self._transition(conn, run_id, "request_stop", dict(stop_requested=1))
            conn.execute("UPDATE runs SET finished = ? WHERE id = ? AND status = 'stopped'", (time.time(), run_id))
        return True

    def resume(self, run_id: int, pid: int | None = None) -> None:
        """``resume`` a stopped or failed run: queued again for a worker, or (``pid``: ``resume_foreground``) running
        in process ``pid`` at once. The Stop that ended it is spent; the error and end time are cleared."""
        fields = dict(error=None, finished=None, stop_requested=0, pid=pid)
        if pid is None:
            self._apply(run_id, "resume", fields)
        else:
            now = time.time()
            self._apply(run_id, "resume_foreground", dict(fields, heartbeat=now, started=now))

    def set_archived(self, run_id: int, archived: bool) -> None:
        """``archive`` / ``unarchive``: hide an ended run from ``runs()`` (or show it again); refused for queued or
        running runs."""
        self._apply(run_id, "archive" if archived else "unarchive", dict(archived=int(bool(archived))))

    def stop_requested(self, run_id: int) -> bool:
        row = self._one("SELECT stop_requested FROM runs WHERE id = ?", (run_id,))
        return bool(row and row["stop_requested"])

    def mark_lost(self) -> dict[int, str]:
        """Fail every running run whose process is gone (``lifecycle.lost_runs``, per executor); ``{id: why}`` of
        those. Never starts anything, so any reader may call it."""
        rows = self._conn().execute("SELECT id, status, pid, heartbeat, executor FROM runs WHERE status = 'running'")
        lost = lifecycle.lost_runs([dict(r) for r in rows.fetchall()])
        return self._record_lost(lost)

    def _record_lost(self, lost: dict[int, str]) -> dict[int, str]:
        """Record each verdict of ``lost`` (``{id: why}`` from rows read as running); the ones that hold.

        A verdict is dropped when ``lose`` is refused because the run ended on its own after the rows were read
        (its worker finished, then exited, between the SELECT and the pid check): that run is not lost, and the
        caller keeps the row it read. Refused because another reader recorded it lost first, it holds."""
        held = {}
        for rid, why in lost.items():
            try:
                if not self.lose(rid, why):
                    row = self._one("SELECT status, error FROM runs WHERE id = ?", (rid,))
                    if row is None or (row["status"], row["error"]) != (lifecycle.FAILED, PROCESS_LOST):
                        continue  # it ended (or was deleted) meanwhile: no verdict
            except StoreError:
                pass  # a read-only store: readers still see the run as lost (below), it just is not written
            held[rid] = why
        return held

    def run(self, run_id: int) -> dict | None:
        """One run's registry row with ``config`` and ``info`` decoded, or None. A running run whose process is
        gone reads (and is recorded) as failed, "process lost"."""
        df = self._lost_checked(self._read("SELECT * FROM runs WHERE id = ?", (int(run_id),)))
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["config"] = json.loads(row["config"])
        row["info"] = json.loads(row["info"])
        return row

    def _lost_checked(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` (runs rows) with every running run whose process is gone marked lost, in the store and in ``df``."""
        running = df[df["status"] == lifecycle.RUNNING]
        if running.empty:
            return df
        lost = self._record_lost(lifecycle.lost_runs(running.to_dict("records")))
        if lost:
            df = df.copy()
            hit = df["id"].isin(list(lost))
            df.loc[hit, "status"] = lifecycle.FAILED
            df.loc[hit, "error"] = PROCESS_LOST
        return df

    def queue(self, executor: str = lifecycle.DEFAULT_EXECUTOR) -> pd.DataFrame:
        """The queued and running runs of ``executor`` (id, status, device, stop_requested, config as a dict), oldest
        first: what the queue pump reads on every dashboard refresh (and the Ray driver every poll), in one query
        whose cost does not grow with the finished runs."""
        return _decoded(self._read("SELECT id, status, device, stop_requested, config FROM runs WHERE status IN "
                                   "('queued', 'running') AND executor = ? ORDER BY id", (executor,)))

    def runs(self, include_archived: bool = False) -> pd.DataFrame:
        """All runs, newest first (archived ones only with ``include_archived``), with how each executes
        (``executor``), ``archived`` (0/1), the code that computed them and their latest evaluation per split:
        ``val_accuracy``, ``val_balanced_accuracy``, ``test_accuracy``, ``test_balanced_accuracy`` (NaN when
        that split was never evaluated, e.g. validation in runs recorded before the split existed).
        A running run whose process is gone reads (and is recorded) as failed, "process lost"."""
        metrics = {f"{s}_{m}": f"{s}.{m}" for s in SPLITS for m in ("accuracy", "balanced_accuracy")}
        joins = " ".join(
            f"LEFT JOIN evals {s} ON {s}.run_id = r.id AND {s}.split = '{s}' AND {s}.step = "
            f"(SELECT MAX(step) FROM evals WHERE run_id = r.id AND split = '{s}')" for s in SPLITS)
        df = self._read(
            "SELECT r.id, r.name, r.preset, r.status, r.error, r.step, r.total_steps, r.device, r.created, r.started, "
            "r.finished, r.heartbeat, r.pid, r.config, r.code_version, r.executor, r.archived, r.stop_requested, r.sweep, "
            f"{', '.join(f'{v} AS {k}' for k, v in metrics.items())} FROM runs r {joins}"
            f"{'' if include_archived else ' WHERE r.archived = 0'} ORDER BY r.id DESC"
        )
        # NULL -> NaN even when no run has that split; the sweep id stays an integer (pd.NA without one)
        return _decoded(self._lost_checked(df.astype({**{k: float for k in metrics}, "sweep": "Int64"})))

    # -- sweeps (sslviz.sweep): a grid of runs defined together ----------------------------------------
    def create_sweep(self, spec: dict, *, name: str = "", executor: str = lifecycle.DEFAULT_EXECUTOR,
                     options: dict | None = None) -> int:
        """Record a sweep (its grid ``spec`` and how it executes; ``options``: Ray address, storage_path ...);
        its runs are created with ``create_run(..., sweep=id)``. Returns its id."""
        row = dict(name=name, created=time.time(), spec=json.dumps(spec), executor=executor,
                   options=json.dumps(options or {}))
        with self._transaction() as conn:
            cur = conn.execute(f"INSERT INTO sweeps ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row)
        return int(cur.lastrowid)

    def sweeps(self) -> pd.DataFrame:
        """Every sweep, newest first: id, name, created, spec, executor, options (JSON text), runs (its run count)."""
        return self._read("SELECT s.*, (SELECT COUNT(*) FROM runs WHERE sweep = s.id) AS runs FROM sweeps s "
                          "ORDER BY s.id DESC")

    def sweep(self, sweep_id: int) -> dict | None:
        """One sweep's row with ``spec`` and ``options`` decoded, or None."""
        row = self._one("SELECT * FROM sweeps WHERE id = ?", (int(sweep_id),))
        if row is None:
            return None
        out = dict(row)
        out["spec"], out["options"] = json.loads(out["spec"]), json.loads(out["options"])
        return out

    def delete_sweep(self, sweep_id: int) -> None:
        """Remove a sweep's row once it has no runs left (``sweep.delete`` deletes them first)."""
        with self._transaction() as conn:
            left = conn.execute("SELECT COUNT(*) FROM runs WHERE sweep = ?", (int(sweep_id),)).fetchone()[0]
            if left:
                raise ValueError(f"Sweep {sweep_id} still has {left} run(s); delete them first.")
            conn.execute("DELETE FROM sweeps WHERE id = ?", (int(sweep_id),))

    def delete_run(self, run_id: int) -> None:
        """``delete``: remove an ended run and its metrics (files are ``worker.delete``'s); refused while it is
        queued or running."""
        with self._transaction() as conn:
            cur = conn.execute(f"DELETE FROM runs WHERE id = ? AND status IN ({', '.join('?' for _ in ENDED)})",
                               (run_id, *ENDED))
            if cur.rowcount == 0:
                raise self._refuse(conn, run_id, "delete")
            for r in records.ROWS:
                conn.execute(f"DELETE FROM {r.TABLE} WHERE run_id = ?", (run_id,))
        prefix = self._rollup_file(run_id)
        for path in prefix.parent.glob(f"{prefix.name}*") if prefix.parent.is_dir() else ():
            path.unlink(missing_ok=True)

    def truncate_after(self, run_id: int, step: int) -> None:
        """Drop metrics recorded after ``step`` (a resume restarts from the checkpoint there)."""
        with self._rollup_lock:
            self._rollups.clear()
        self._write([*((f"DELETE FROM {t} WHERE run_id = ? AND step > ?", (run_id, step)) for t in METRIC_TABLES),
                     ("UPDATE runs SET step = ? WHERE id = ?", (step, run_id))])

    def add_event(self, run_id: int, kind: str, message: str) -> None:
        row = dict(run_id=run_id, wall=time.time(), kind=kind, message=message)
        self._write([(records.insert_sql(records.Event), row)])

    # -- metrics ----------------------------------------------------------
    def log(self, run_id: int, record: dict) -> None:
        """Write one trainer record (`sslviz.records`) and the run's progress, in a single transaction."""
        self._write([("UPDATE runs SET step = ?, heartbeat = ? WHERE id = ?", (int(record["step"]), time.time(), run_id)),
                     *self._metric_statements(run_id, record)])

    def log_metrics(self, run_id: int, record: dict) -> None:
        """Write a record's metric rows only: an evaluation made outside the run's own process (on demand, from
        a checkpoint) must not move the run's step or heartbeat."""
        self._write(self._metric_statements(run_id, record))

    @staticmethod
    def _metric_statements(run_id: int, record: dict) -> list:
        return [(records.insert_sql(kind), batch) for kind, batch in records.to_rows(run_id, record).items()]

    def _bin_width(self, table: str, where: str, params: tuple, max_points: int | None) -> tuple[int, int, int] | None:
        """(first step, last step, bin width in steps) when the rows ``where`` selects hold more than ``max_points``
        steps, else None (read them as they are). Bins are ``step // width``, aligned to step 0 and a power of two
        wide, so the finished bins of a growing run stay the same; the last step keeps a bin of its own, so at
        most ``max_points`` bins are returned."""
        if not max_points:
            return None
        # Two subqueries: SQLite reads a lone MIN or MAX off the index; both in one SELECT scan every row.
        lo, hi = self._one(f"SELECT (SELECT MIN(step) FROM {table} WHERE {where}), "
                           f"(SELECT MAX(step) FROM {table} WHERE {where})", params * 2)
        if lo is None or hi - lo + 1 <= max_points:
            return None
        # Sparse steps (a narrow window, evaluations) may fit although their span does not; counting stops early.
        n = self._one(f"SELECT COUNT(*) FROM (SELECT DISTINCT step FROM {table} WHERE {where} LIMIT ?)",
                      (*params, max_points + 1))[0]
        if n <= max_points:
            return None
        budget = max_points - 1  # bins before the last step
        width = 1
        while budget and (hi - 1) // width - lo // width + 1 > budget:
            width *= 2
        return lo, hi, (width if budget else 0)

    def _series(self, row: type, run_id: int, max_points: int | None = None, steps: tuple | None = None,
                **equal) -> pd.DataFrame:
        """One run's rows of ``row`` kind in key order, by column name; ``equal`` filters (None = any); ``steps``:
        only ``(first, last)`` (either None = open). More than ``max_points`` steps are merged into step bins
        (`_bin_width`): each measured column by its aggregator (`records.bin_aggregator`: counts summed, the
        rest averaged) plus ``<col>_min`` / ``<col>_max`` and ``n_logs`` (log steps merged); ``step`` is the
        bin's last step and ``wall`` its last wall time. The latest step is always returned as it is."""
        equal = {k: v for k, v in equal.items() if v is not None}
        where = " AND ".join(["run_id = ?", *(f"{k} = ?" for k in equal)])
        params = (run_id, *equal.values())
        for op, bound in zip((">=", "<="), steps or (None, None)):
            if bound is not None:
                where += f" AND step {op} ?"
                params += (int(bound),)
        order = ", ".join(k for k in row.KEY if k != "run_id")
        cols = records.value_columns(row)
        floats = records.float_columns(row)

        def typed(df: pd.DataFrame) -> pd.DataFrame:  # REAL columns as floats, all-NULL ones (and their bins) too
            return df.astype({c: float for c in df.columns if c.removesuffix("_min").removesuffix("_max") in floats})

        binned = self._bin_width(row.TABLE, where, params, max_points)
        if binned is None:
            return typed(self._read(f"SELECT {', '.join(cols)} FROM {row.TABLE} WHERE {where} ORDER BY {order}", params))
        _, hi, width = binned
        keys = [k for k in row.KEY if k not in ("run_id", "step")]
        measures = records.measure_columns(row)
        agg = {"sum": "SUM", "mean": "AVG"}
        bin_cols = ["MAX(step) AS step", *keys, *(["MAX(wall) AS wall"] if "wall" in cols else []),
                    *(f"{agg[records.bin_aggregator(row, c)]}({c}) AS {c}" for c in measures),
                    *(f"{f}({c}) AS {c}_{f.lower()}" for c in measures for f in ("MIN", "MAX")),
                    "COUNT(*) AS n_logs"]
        last_cols = ["step", *keys, *(["wall"] if "wall" in cols else []), *measures,
                     *(f"{c} AS {c}_{f}" for c in measures for f in ("min", "max")), "1 AS n_logs"]
        group = f"GROUP BY step / {int(width)}{''.join(', ' + k for k in keys)}" if width else ""

        def bins(first: int, stop: int) -> pd.DataFrame:  # the bins of the rows first <= step < stop
            return self._read(f"SELECT {', '.join(bin_cols)} FROM {row.TABLE} WHERE {where} AND step >= ? "
                              f"AND step < ? {group}", (*params, first, stop))

        parts = []
        if width:
            # Bins below the one holding the latest step are complete: kept (a rollup, in memory and on disk) and
            # extended as the run grows, so a refresh reads only the rows of the newest bin, and a server started
            # afresh reads the file instead of every row. A restart (resume) changes ``started``, hence the key.
            cut = hi // width * width
            token = self._one("SELECT started FROM runs WHERE id = ?", (run_id,))
            key = (row.TABLE, where, params, width, None if token is None else token[0])
            with self._rollup_lock:
                done, frame = self._rollups.pop(key, (None, None))
            if done is None:
                done, frame = self._load_rollup(run_id, key)
            kept = done
            if done is None or done > cut:
                done, frame = cut, bins(-1, cut)
            elif done < cut:
                done, frame = cut, pd.concat([frame, bins(done, cut)], ignore_index=True)
            with self._rollup_lock:
                self._rollups[key] = (done, frame)
                while len(self._rollups) > ROLLUPS_KEPT:
                    self._rollups.pop(next(iter(self._rollups)))
            if kept != done:
                self._save_rollup(run_id, key, done, frame)
            parts += [frame, bins(cut, hi)]
        parts.append(self._read(f"SELECT {', '.join(last_cols)} FROM {row.TABLE} WHERE {where} AND step = ?",
                                (*params, hi)))
        out = pd.concat([p for p in parts if not p.empty] or parts[-1:], ignore_index=True)
        return typed(out.sort_values([k for k in row.KEY if k != "run_id"], ignore_index=True))

    def _rollup_file(self, run_id: int, key: tuple | None = None) -> Path:
        """The file of one series' finished bins (``key`` as in `_series`), or with no key the run's file prefix."""
        name = f"{self.path.stem}-run{run_id}-"
        if key is not None:
            name += hashlib.sha1(repr(key).encode()).hexdigest()[:16] + ".parquet"
        return self.path.parent / ROLLUP_FOLDER / name

    def _load_rollup(self, run_id: int, key: tuple) -> tuple[int | None, pd.DataFrame | None]:
        """A series' finished bins as an earlier process (another server, before a restart) saved them.

        Parquet, never pickle: the cache folder may be shared (a read-only server on another user's
        ``SSLVIZ_HOME``), and a planted pickle would run code in the dashboard. A file that is not a rollup
        this version wrote (no ``done`` step, another layout) is ignored and rebuilt from the store."""
        try:
            frame = pd.read_parquet(self._rollup_file(run_id, key))
            done = int(frame.attrs["done"])
        except (OSError, ValueError, TypeError, KeyError):  # pyarrow: ArrowInvalid is a ValueError, ArrowIOError an OSError
            return None, None
        frame.attrs.clear()
        return done, frame

    def _save_rollup(self, run_id: int, key: tuple, done: int, frame: pd.DataFrame) -> None:
        """Keep the finished bins on disk (atomic rename; a read-only folder only loses the speed-up)."""
        path = self._rollup_file(run_id, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            saved = frame.copy(deep=False)
            saved.attrs["done"] = done  # in the file's metadata: the bins below this step are complete
            saved.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        except OSError:
            pass

    def roll_up(self, run_id: int, max_points: int = VIEW_POINTS) -> None:
        """Bin every series of a run as the Live and Compare pages read it (whole run, ``max_points``), so their
        first view of it reads the rollup files instead of every row (a finished 500k-step run: 0.8 s Live,
        1.5 s Compare of five, first ever; 150 / 225 ms from the files, bench/live.py). The worker calls it when a
        run ends."""
        self.scalars(run_id, max_points)
        self.class_train(run_id, max_points)
        self.class_eval(run_id, max_points=max_points)
        self.evals(run_id, max_points=max_points)
        self.technique(run_id, max_points)

    def scalars(self, run_id: int, max_points: int | None = MAX_POINTS, steps: tuple | None = None) -> pd.DataFrame:
        """Columns step, wall, loss, loss_sup, loss_unsup, mask_rate, pl_accuracy, lr (binned above ``max_points``
        steps, see `_series`; ``steps``: a (first, last) window)."""
        return self._series(records.Scalars, run_id, max_points, steps)

    def class_train(self, run_id: int, max_points: int | None = MAX_POINTS, steps: tuple | None = None) -> pd.DataFrame:
        """Long format: one row per (step, cls) with thresholds, confidences and pseudo-label counts (binned above
        ``max_points`` steps: counts summed over the bin, the rest averaged; see `_series`)."""
        return self._series(records.ClassTrain, run_id, max_points, steps)

    def evals(self, run_id: int, split: str | None = None, steps: tuple | None = None,
              max_points: int | None = None) -> pd.DataFrame:
        """Columns step, split ('val' | 'test'), wall, accuracy, balanced_accuracy; every split when ``split`` is None.
        Every evaluation unless ``max_points`` is given (then binned as `_series`)."""
        return self._series(records.Eval, run_id, max_points, steps, split=_checked(split, SPLITS, "split"))

    def latest_evals(self, run_id: int, step: int | None = None) -> dict[str, dict]:
        """``{split: {step, wall, accuracy, balanced_accuracy}}`` of each split's latest evaluation (at or before
        ``step``); a split never evaluated is absent (validation in runs recorded before the split)."""
        ev = self.evals(run_id)
        if step is not None:
            ev = ev[ev["step"] <= step]
        return {split: rows.iloc[-1].drop("split").to_dict() for split, rows in ev.groupby("split")}

    def class_eval(self, run_id: int, split: str | None = None, max_points: int | None = MAX_POINTS,
                   steps: tuple | None = None) -> pd.DataFrame:
        """Long format: step, split, cls, recall; one split, or every split when ``split`` is None."""
        return self._series(records.ClassEval, run_id, max_points, steps, split=_checked(split, SPLITS, "split"))

    def technique(self, run_id: int, max_points: int | None = MAX_POINTS, steps: tuple | None = None) -> pd.DataFrame:
        """Techniques' live state, long format: step, name, cls (-1 for a single number), value."""
        return self._series(records.Technique, run_id, max_points, steps)

    def confusion(self, run_id: int, kind: str = "test", step: int | None = None) -> tuple[int, np.ndarray] | None:
        """The (step, matrix) of the latest (or given) confusion matrix of ``kind`` 'val', 'test' or 'pseudo'."""
        sql = "SELECT step, matrix FROM confusion WHERE run_id = ? AND kind = ?"
        params: tuple = (run_id, _checked(kind, CONFUSION_KINDS, "kind"))
        if step is not None:
            sql += " AND step <= ?"
            params += (step,)
        row = self._one(sql + " ORDER BY step DESC LIMIT 1", params)
        return None if row is None else (int(row["step"]), np.array(json.loads(row["matrix"])))

    def snapshots(self, run_id: int) -> list[tuple[int, dict]]:
        rows = self._conn().execute("SELECT step, payload FROM snapshots WHERE run_id = ? ORDER BY step", (run_id,))
        return [(int(r["step"]), json.loads(r["payload"])) for r in rows.fetchall()]

    def events(self, run_id: int) -> pd.DataFrame:
        return self._read("SELECT wall, kind, message FROM events WHERE run_id = ? ORDER BY id", (run_id,))

    def export(self, run_id: int) -> dict[str, pd.DataFrame]:
        """Every metric table of a run, unsampled, for CSV/Parquet export."""
        return {
            "scalars": self.scalars(run_id, None),
            "class_train": self.class_train(run_id, None),
            "evals": self.evals(run_id),
            "class_eval": self.class_eval(run_id, max_points=None),
            "technique": self.technique(run_id, None),
            "events": self.events(run_id),
        }


def _checked(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    """``value`` if it is one of ``allowed`` (or None); a ValueError naming them otherwise."""
    if value is not None and value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; expected one of {list(allowed)}.")
    return value
