"""The ``runs`` table: a run's registry row and every change of its status, each one guarded transition of
``lifecycle.TRANSITIONS`` (applied as ``UPDATE ... WHERE status IN (its sources)``), its events, and the records
its trainer logs. Readers of the registry mark a run whose process is gone as lost (``lifecycle.lost_runs``).
"""
from __future__ import annotations

import functools
import json
import sqlite3
import subprocess
import time
from pathlib import Path

from .. import __version__
from . import lifecycle, records
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from .database import CHECKPOINT_WAL_EVERY, StoreError
from .lifecycle import ENDED, ENDING, PROCESS_LOST, NoSuchRun, TransitionRefused
from .records import SPLITS

METRIC_TABLES = tuple(r.TABLE for r in records.METRIC_ROWS)


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


def _decoded(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` rows with ``config`` as a dict: the one place a run's config JSON is decoded for the readers."""
    return runs.assign(config=[json.loads(c) for c in runs["config"]]) if "config" in runs else runs


class RunTable:
    """The run registry's reads and writes (a part of ``RunStore``; the connection is ``Database``'s)."""

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

    def refuse_queued(self, run_id: int, why: str) -> bool:
        """``refuse``: fail queued ``run_id`` that cannot start here, with ``why`` as its error (and an event). False
        when it was no longer queued (stopped, or claimed by another reaper meanwhile)."""
        try:
            self._apply(run_id, "refuse", dict(error=why, finished=time.time()), event=("failed", why))
        except (TransitionRefused, NoSuchRun):
            return False
        return True

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

    def trial_runs(self, run_id: int) -> list[tuple[int, str, dict]]:
        """(id, status, trial) of the runs launched to try a change beside ``run_id`` (their ``info.trial.of``, the
        bias doctor's Try it), oldest first: one query, not one per run."""
        rows = self._conn().execute(
            "SELECT id, status, json_extract(info, '$.trial') AS trial FROM runs "
            "WHERE json_extract(info, '$.trial.of') = ? ORDER BY id", (run_id,)).fetchall()
        return [(int(r["id"]), r["status"], json.loads(r["trial"])) for r in rows]

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
        self._rollups.delete(run_id)

    def truncate_after(self, run_id: int, step: int) -> None:
        """Drop metrics recorded after ``step`` (a resume restarts from the checkpoint there)."""
        self._rollups.clear()
        self._write([*((f"DELETE FROM {t} WHERE run_id = ? AND step > ?", (run_id, step)) for t in METRIC_TABLES),
                     ("UPDATE runs SET step = ? WHERE id = ?", (step, run_id))])

    def add_event(self, run_id: int, kind: str, message: str) -> None:
        row = dict(run_id=run_id, wall=time.time(), kind=kind, message=message)
        self._write([(records.insert_sql(records.Event), row)])

    # -- metrics ----------------------------------------------------------
    def log(self, run_id: int, record: dict) -> None:
        """Write one trainer record (`records.py`) and the run's progress, in a single transaction."""
        self._write([("UPDATE runs SET step = ?, heartbeat = ? WHERE id = ?", (int(record["step"]), time.time(), run_id)),
                     *self._metric_statements(run_id, record)])

    def log_metrics(self, run_id: int, record: dict) -> None:
        """Write a record's metric rows only: an evaluation made outside the run's own process (on demand, from
        a checkpoint) must not move the run's step or heartbeat."""
        self._write(self._metric_statements(run_id, record))

    @staticmethod
    def _metric_statements(run_id: int, record: dict) -> list:
        return [(records.insert_sql(kind), batch) for kind, batch in records.to_rows(run_id, record).items()]
