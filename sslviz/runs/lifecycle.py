"""The run lifecycle, in one table: statuses, the actions that move a run between them, and liveness.

A run is a row of the store's ``runs`` table. Its ``status`` changes only through an action of
:data:`TRANSITIONS`; the store applies each one as a single guarded update
(``UPDATE runs SET ... WHERE id = ? AND status IN (<the statuses the action allows>)``), so two processes
racing on one run cannot both win, and a refused action raises :class:`TransitionRefused` naming the run,
its status and what the action needs.

Liveness is the other half: a ``running`` run whose process is gone is ``failed`` / "process lost". How
that is judged depends on how the run executes (``runs.executor``): :data:`LIVENESS` maps an executor to
its check (``"local"``: the worker's pid and heartbeat on this machine). :func:`lost_runs` is the one
function every reader goes through (``RunStore.runs()`` / ``run()``, hence the CLI, the pages and the
Python API), so a dead run reads as lost everywhere within seconds, with no dashboard open. Marking lost
runs never starts queued ones: that is ``worker.start_queued``, called by submit, resume, a worker's exit
and the dashboard's queue pump (``worker.reap``) only.

This module is pure (no store, no torch): the store imports it, not the other way round.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

QUEUED, RUNNING, FINISHED, FAILED, STOPPED = "queued", "running", "finished", "failed", "stopped"
STATUSES = (QUEUED, RUNNING, FINISHED, FAILED, STOPPED)
ACTIVE = (QUEUED, RUNNING)  # a process is (or will be) attached; not deletable, not archivable
ENDED = (FINISHED, FAILED, STOPPED)
PROCESS_LOST = "process lost"  # the error of a run whose process vanished
NEW = None  # the "status" of a run that does not exist yet (submit, start_foreground)
GONE = None  # the "status" after delete
SAME = "same"  # the target of actions that leave the status as it is (a flag, the archive bit)

# Liveness of local runs: a run whose pid is gone is lost at once; silence alone counts after LOST_AFTER,
# longer than the store's 30 s busy timeout a live heartbeat may wait out.
HEARTBEAT_EVERY = 2.0
LOST_AFTER = 45.0


@dataclass(frozen=True)
class Transition:
    """One action: ``moves`` maps each status it accepts to the status it leaves the run in."""
    action: str
    moves: Mapping[str | None, str | None]
    doc: str
    label: str = ""  # how messages name it ("stop" for request_stop); the action name when empty

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(s for s in self.moves if s is not NEW)


def _t(action: str, moves: dict, doc: str, label: str = "") -> Transition:
    return Transition(action, moves, doc, label or action.replace("_", " "))


TRANSITIONS: dict[str, Transition] = {t.action: t for t in (
    _t("submit", {NEW: QUEUED}, "record a run for a background worker (Setup's Start, train --background)"),
    _t("start_foreground", {NEW: RUNNING}, "record a run already running in this process (CLI train)"),
    _t("claim", {QUEUED: RUNNING}, "a free device slot takes a queued run (the worker process is then spawned)",
       "start"),
    _t("refuse", {QUEUED: FAILED}, "the queue cannot start it on this machine (a device it lacks, a bad "
       "SSLVIZ_*_SLOTS setting): the error says why, and the queue goes on", "cannot start"),
    _t("finish", {RUNNING: FINISHED}, "the trainer reached its last step"),
    _t("stop", {RUNNING: STOPPED}, "the trainer honoured a stop request (or SIGTERM / Ctrl-C)"),
    _t("fail", {RUNNING: FAILED}, "the trainer raised (divergence, foreign checkpoint, OOM, any error)"),
    _t("lose", {RUNNING: FAILED}, "the liveness check found the process gone: error 'process lost'"),
    _t("request_stop", {QUEUED: STOPPED, RUNNING: SAME},
       "Stop: a queued run stops at once; a running one gets the stop flag and stops at its next log step", "stop"),
    _t("resume", {STOPPED: QUEUED, FAILED: QUEUED}, "queue a stopped or failed run again (from its checkpoint)"),
    _t("resume_foreground", {STOPPED: RUNNING, FAILED: RUNNING},
       "continue a stopped or failed run in this process (CLI resume)", "resume"),
    _t("delete", {s: GONE for s in ENDED}, "remove the run, its metrics, checkpoint and log"),
    _t("archive", {s: SAME for s in ENDED}, "hide the run from the default lists"),
    _t("unarchive", {s: SAME for s in ENDED}, "show an archived run again"),
)}
ENDING = {FINISHED: "finish", STOPPED: "stop", FAILED: "fail"}  # the action that ends a run in each status


def _names(statuses) -> str:
    """('stopped', 'failed') -> 'stopped or failed'; three or more with commas."""
    statuses = list(statuses)
    return statuses[0] if len(statuses) == 1 else ", ".join(statuses[:-1]) + " or " + statuses[-1]


class TransitionRefused(ValueError):
    """An action the run's current status does not allow ("Run 3 is running; resume needs a stopped or failed run.").

    A ValueError, so the CLI (exit 2) and the pages' handlers show the message as it is.
    """

    def __init__(self, run_id: int, status: str, action: str):
        self.run_id, self.status, self.action = run_id, status, action
        transition = TRANSITIONS[action]
        needs = transition.sources
        article = "an" if needs[0][0] in "aeiou" else "a"
        hint = " (stop it first)" if status in ACTIVE and set(needs) == set(ENDED) else ""
        super().__init__(f"Run {run_id} is {status}; {transition.label} needs {article} {_names(needs)} "
                         f"run{hint}.")


class NoSuchRun(ValueError):
    """The run id is not in the store ("There is no run 9 in /path/runs.db.")."""

    def __init__(self, run_id: int, path):
        self.run_id = run_id
        super().__init__(f"There is no run {run_id} in {path}.")


def target(action: str, status: str | None) -> str | None:
    """The status ``action`` leaves a run in ``status`` in; TransitionRefused (run id 0) if it is not allowed."""
    moves = TRANSITIONS[action].moves
    if status not in moves:
        raise TransitionRefused(0, str(status), action)
    out = moves[status]
    return status if out == SAME else out


def allowed(action: str, status: str | None) -> bool:
    return status in TRANSITIONS[action].moves


# -- liveness -------------------------------------------------------------------------------------------
def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie (our own exited children are reaped)."""
    if not pid:
        return False
    try:
        # Collect our own exited children so they do not linger as zombies that look alive.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet collected by a parent that is not us) still answers kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def present(value) -> bool:
    """False for None and for the NaN pandas gives a NULL column."""
    return value is not None and not (isinstance(value, float) and value != value)  # NULL may arrive as NaN


def _gone_or_silent(row: Mapping, now: float, gone: str, silent: str) -> str | None:
    """``gone`` (formatted with the pid) if the row's process is not alive, ``silent`` (with the seconds) if it
    has not heartbeaten for LOST_AFTER, else None."""
    pid = int(row["pid"]) if present(row.get("pid")) else None
    heartbeat = float(row["heartbeat"]) if present(row.get("heartbeat")) else 0.0
    if pid is not None and not pid_alive(pid):
        return gone.format(pid=pid)
    if now - heartbeat > LOST_AFTER:
        return silent.format(seconds=now - heartbeat)
    return None


def local_lost(row: Mapping, now: float) -> str | None:
    """Why a local run (a worker or CLI process on this machine) is lost, or None while it lives.

    The pid decides at once; a NULL pid (between a claim and the spawn that records it) or a process that
    stopped heartbeating counts after LOST_AFTER seconds of silence.
    """
    return _gone_or_silent(row, now, "process {pid} is gone", "no heartbeat for {seconds:.0f} s")


# executor -> check(row, now) -> reason the run is lost, or None. A Ray trial registers its own check here
# (e.g. "ray": ask the Ray state API whether the trial's actor is alive); readers do not change.
LIVENESS: dict[str, Callable[[Mapping, float], str | None]] = {"local": local_lost}
DEFAULT_EXECUTOR = "local"


def ray_lost(row: Mapping, now: float) -> str | None:
    """Why a Ray run (a cell of a sweep on Ray, ``ray_executor``) is lost, or None while it lives.

    The trial is a Ray task (or Tune trial), possibly on another node; the driver process that owns the store
    (``pid``, on this machine) asks Ray for the task's state and records a crash itself ("the Ray worker died"),
    and heartbeats
    every running run it drives. So a reader without Ray judges the driver: its pid gone, or silent for LOST_AFTER.
    """
    return _gone_or_silent(row, now, "the Ray driver (process {pid}) is gone",
                           "no heartbeat from the Ray driver for {seconds:.0f} s")


def register_executor(name: str, check: Callable[[Mapping, float], str | None]) -> None:
    """Add (or replace) the liveness check of runs whose ``executor`` is ``name``."""
    LIVENESS[name] = check


register_executor("ray", ray_lost)


def lost_reason(row: Mapping, now: float | None = None) -> str | None:
    """Why running ``row`` (a runs row as a mapping) is lost, or None (alive, not running, unknown executor)."""
    if row.get("status") != RUNNING:
        return None
    check = LIVENESS.get(row.get("executor") or DEFAULT_EXECUTOR)
    return None if check is None else check(row, time.time() if now is None else now)


def lost_runs(rows, now: float | None = None) -> dict[int, str]:
    """``{run id: why}`` of the running rows (mappings) whose process is gone: the one liveness function."""
    now = time.time() if now is None else now
    out = {}
    for row in rows:
        why = lost_reason(row, now)
        if why is not None:
            out[int(row["id"])] = why
    return out


def markdown_table() -> str:
    """The transition table as markdown (DESIGN's "Runs and processes")."""
    lines = ["| action | from | to | what |", "|---|---|---|---|"]
    for t in TRANSITIONS.values():
        groups: dict = {}
        for src, dst in t.moves.items():
            groups.setdefault(dst, []).append("(new)" if src is NEW else src)
        for dst, srcs in groups.items():
            to = "(deleted)" if dst is GONE and t.action == "delete" else ("unchanged" if dst == SAME else dst)
            lines.append(f"| `{t.action}` | {', '.join(srcs)} | {to} | {t.doc} |")
    return "\n".join(lines)
