"""One run's life in the store, wherever it trains: claim, heartbeat, records, stop, resume point, end.

Every executor wraps this in a few lines. The local worker (``worker.run_worker``) uses all of it in the process
that trains. On Ray the trainer runs in a process that has no store, so the host is split where the executor
needs it: the trial's ``on_log`` and ``should_stop`` travel through the executor's channel (``ray_executor``'s
mailbox, ``ray_asha``'s results and stopper), and the driver's host claims, writes the records (``log``), beats
and ends the run. The statuses and transitions are ``lifecycle``'s; the host only drives them, and a verdict
given by someone else meanwhile (stopped while queued, deleted, marked lost) stays.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from .lifecycle import HEARTBEAT_EVERY, NoSuchRun, TransitionRefused
from .store import RunStore, StoreError


class RunHost:
    """Run ``run_id`` of ``store`` as the process that drives it sees it.

    ``where`` ends its events' messages (" (Ray)": "started on cuda (Ray)"); ``placeholder`` is the device a run
    that never started is claimed on so that it can end with its own reason; ``pid``: the process the store lists
    as the run's (this one by default)."""

    def __init__(self, store: RunStore, run_id: int, *, where: str = "", placeholder: str = "cpu",
                 pid: int | None = None):
        self.store, self.run_id = store, run_id
        self.where, self.placeholder = where, placeholder
        self.pid = pid if pid is not None else os.getpid()
        self.claimed = False
        self.lost = threading.Event()  # set by keep_alive when the store no longer lists this process as the run's

    # -- start ------------------------------------------------------------------------------
    def claim(self, device: str, *, strict: bool = False) -> bool:
        """queued (or claimed for this process) -> running on ``device``; False when refused (the run was stopped
        while queued, deleted, or taken by another process), or with ``strict`` the refusal raised."""
        try:
            self.store.claim_run(self.run_id, self.pid, device)
        except (TransitionRefused, NoSuchRun):
            if strict:
                raise
            return False
        self.claimed = True
        return True

    def resume_point(self, checkpoint: str | os.PathLike | None, cfg, *, hint: str = "") -> int:
        """The step training starts from, with the store made consistent with it: a checkpoint's step (the metrics
        after it dropped, event 'resumed'); else 0 (a run that logged before but left no checkpoint here restarts
        from scratch, its metrics dropped, event 'restarted'). Raises ``trainer.CheckpointMismatch`` for another
        config's checkpoint or an unreadable file: never a silent restart. ``hint`` says how to keep one next time."""
        from ..engine.trainer import check_checkpoint, load_checkpoint  # torch: only where a run trains or resumes

        if checkpoint is not None and Path(checkpoint).exists():
            saved = load_checkpoint(checkpoint)
            check_checkpoint(saved, cfg)
            step = int(saved["step"])
            self.store.truncate_after(self.run_id, step)
            self.store.add_event(self.run_id, "resumed", f"resumed from step {step}{self.where}")
            return step
        row = self.store.run(self.run_id)
        if row is not None and int(row["step"] or 0) > 0:
            self.store.truncate_after(self.run_id, 0)
            self.store.add_event(self.run_id, "restarted", f"no checkpoint reachable{self.where}{hint}: restarted "
                                                           "from step 0")
        return 0

    def started(self, device: str) -> None:
        self.store.add_event(self.run_id, "started", f"started on {device}{self.where}")

    # -- while it trains ------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        """One trainer record into the store (written twice, a record replaces its step's rows)."""
        self.store.log(self.run_id, record)

    def stop_requested(self) -> bool:
        return self.store.stop_requested(self.run_id)

    def beat(self) -> None:
        self.store.heartbeat(self.run_id)

    def keep_alive(self) -> _Heartbeat:
        """Beat from a thread every HEARTBEAT_EVERY s until the returned thread's ``done`` is set. ``lost`` is set if
        the store stops listing this process as the run's (a reaper gave up on it), so training stops instead of
        writing into a run marked failed."""
        beat = _Heartbeat(self)
        beat.start()
        return beat

    # -- end ------------------------------------------------------------------------------
    def end(self, status: str, error: str | None = None, message: str | None = None) -> str:
        """running -> ``status`` with ``error``, and an event saying ``message`` (by default the error, or the status).
        A run never claimed (it failed before it started) is claimed first, so it ends with its own reason.
        Returns the status the run is in afterwards: a verdict given meanwhile (lost, stopped while queued,
        deleted) stays."""
        if self.lost.is_set():  # already failed by a reader's liveness check
            return "failed"
        if not self.claimed:
            self.claim(self.placeholder)
        try:
            self.store.finish_run(self.run_id, status, error)
        except (TransitionRefused, NoSuchRun):
            row = self.store.run(self.run_id)
            return row["status"] if row else "deleted"
        self.store.add_event(self.run_id, status, message or error or f"{status}{self.where}")
        return status

    def lose(self, reason: str) -> str:
        """The process that trained it died without ending it: failed ("process lost") with ``reason``."""
        self.store.lose(self.run_id, reason)
        return "failed"


class _Heartbeat(threading.Thread):
    """``RunHost.keep_alive``'s thread."""

    def __init__(self, host: RunHost):
        super().__init__(daemon=True)
        self.host = host
        self.done = threading.Event()

    def run(self):
        host = self.host
        while not self.done.wait(HEARTBEAT_EVERY):
            try:
                host.beat()
                row = host.store.run(host.run_id)
            except StoreError:
                continue  # the main thread reports store failures
            if row is None or row["status"] != "running" or row["pid"] != host.pid:
                host.lost.set()
