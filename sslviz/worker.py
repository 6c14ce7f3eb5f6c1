"""Local execution of runs: launch them in their own OS process, heartbeat, stop, resume, queue.

The statuses and the transitions between them are ``sslviz.lifecycle``'s; this module drives them for runs
executed by a local process (``executor = 'local'``). ``submit`` validates the config against the data (so a
bad split fails at Start, not in a background process), records the run as ``queued`` and calls
``start_queued``, which claims queued runs while the device has free slots and spawns their workers. Each
worker process runs ``run_worker``: it heartbeats from a thread, trains, checkpoints, and on exit calls
``start_queued`` again so the queue keeps moving even with no dashboard open. Runs whose process died are
marked ``failed`` ("process lost") by every reader of the store (``RunStore.runs()`` / ``run()``), never here
alone; ``reap`` is the dashboard's pump: mark lost runs, then start queued ones.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from . import lifecycle
from .config import TrainConfig
from .lifecycle import HEARTBEAT_EVERY, LOST_AFTER, PROCESS_LOST, NoSuchRun, TransitionRefused  # noqa: F401 (re-exported)
from .store import RunStore, StoreError
from .trainer import (CheckpointMismatch, Diverged, check_checkpoint, evaluate_checkpoint, load_checkpoint, prepare,
                      resolve_device, run_info, train)
from .models import build_model, default_model_name

STARTUP_GRACE = 60.0  # a new worker may stay silent this long while importing torch and loading data
WARM_ENV = "SSLVIZ_WARM_WORKER"  # "0" turns the warm worker off (the tests do); on otherwise
SPARE_IDLE_S = 900.0  # an unused warm worker exits after this long
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def device_slots(device_type: str) -> int:
    """Simultaneous runs allowed: ``SSLVIZ_GPU_SLOTS`` (default 1) on the GPU, ``SSLVIZ_CPU_SLOTS`` (2) on the CPU.

    Every CUDA run uses the current device (cuda:0), so GPU slots are not multiplied by the GPU count.
    """
    name, default = ("SSLVIZ_GPU_SLOTS", "1") if device_type == "cuda" else ("SSLVIZ_CPU_SLOTS", "2")
    raw = os.environ.get(name, default)
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number >= 0 (simultaneous runs); got {raw!r}.")
    return int(raw)


def _run_files(store: RunStore, kind: str, run_id: int, suffix: str) -> Path:
    # Named after the store file, so two stores in one folder never share a run's checkpoint.
    return store.path.parent / kind / f"{store.path.stem}-run{run_id}{suffix}"


def checkpoint_path(store: RunStore, run_id: int) -> Path:
    return _run_files(store, "checkpoints", run_id, ".pt")


def log_path(store: RunStore, run_id: int) -> Path:
    return _run_files(store, "logs", run_id, ".log")


def cache_dir(store: RunStore) -> Path:
    return store.path.parent / "cache"


def delete(store: RunStore, run_id: int) -> None:
    """``delete`` an ended run: its rows, checkpoint and log file (TransitionRefused while queued or running)."""
    store.run(run_id)  # the liveness check first: a run whose process is gone is ended, hence deletable
    store.delete_run(run_id)
    checkpoint_path(store, run_id).unlink(missing_ok=True)
    log_path(store, run_id).unlink(missing_ok=True)


def submit(store: RunStore, cfg: TrainConfig) -> int:
    """Validate ``cfg`` against its data, record it as queued and start it if a slot is free."""
    run_id = record(store, cfg)
    store.add_event(run_id, "queued", "queued")
    start_queued(store)
    return run_id


def record(store: RunStore, cfg: TrainConfig, pid: int | None = None) -> int:
    """Check ``cfg`` against its data and model (so mistakes surface now, not in a background process)
    and store the run: queued, or running in ``pid``."""
    prepared = prepare(cfg, cache_dir(store))
    device = resolve_device(cfg.device)
    ds = prepared.dataset
    model = default_model_name(ds.input_shape, device.type) if cfg.model == "auto" else cfg.model
    build_model(model, input_shape=ds.input_shape, num_classes=ds.num_classes)  # raises for a wrong input shape
    run_id = store.create_run(cfg.to_dict(), info=run_info(prepared, model, device), pid=pid)
    # A new run has no checkpoint: one under its name is left from an older store file of the same name.
    checkpoint_path(store, run_id).unlink(missing_ok=True)
    return run_id


def evaluate_now(store: RunStore, run_id: int, splits=("test",)) -> dict:
    """Evaluate ``run_id``'s latest checkpoint on ``splits`` and record it at the checkpoint's step (on demand:
    a running run keeps training; its next records are unaffected). Returns the record."""
    ckpt = checkpoint_path(store, run_id)
    if not ckpt.exists():
        raise ValueError(f"Run {run_id} has no checkpoint yet (one is written every checkpoint_every steps).")
    record = evaluate_checkpoint(TrainConfig.from_dict(store.run(run_id)["config"]), ckpt, splits, cache_dir(store))
    store.log_metrics(run_id, record)
    store.add_event(run_id, "evaluated", f"{', '.join(splits)} evaluated on demand at step {record['step']}")
    return record


def check_resumable(store: RunStore, run_id: int) -> None:
    """Raise saying why ``run_id`` cannot be resumed, if it cannot: NoSuchRun, TransitionRefused (its status),
    or a ValueError / CheckpointMismatch about its checkpoint."""
    row = store.run(run_id)
    if row is None:
        raise NoSuchRun(run_id, store.path)
    if not lifecycle.allowed("resume", row["status"]):
        raise TransitionRefused(run_id, row["status"], "resume")
    ckpt = checkpoint_path(store, run_id)
    if not ckpt.exists():
        raise ValueError(f"Run {run_id} has no checkpoint to resume from; start a new run with its config instead.")
    try:
        check_checkpoint(load_checkpoint(ckpt), TrainConfig.from_dict(row["config"]))
    except CheckpointMismatch as exc:
        raise CheckpointMismatch(f"Run {run_id} cannot resume: {exc}") from None


def resume(store: RunStore, run_id: int, *, foreground: bool = False) -> None:
    """``resume`` a stopped or failed run from its last checkpoint: queued for a worker (and started if a slot is
    free), or with ``foreground`` running in this process at once (``run_worker`` then trains it here)."""
    check_resumable(store, run_id)
    store.resume(run_id, pid=os.getpid() if foreground else None)
    if foreground:
        store.add_event(run_id, "resume", "resuming in the foreground from its last checkpoint")
        return
    store.add_event(run_id, "resume", "queued to resume from its last checkpoint")
    start_queued(store)


_alive = lifecycle.pid_alive  # the local executor's liveness (kept under its old name)


def mark_lost(store: RunStore) -> dict[int, str]:
    """Fail running runs whose process is gone ("process lost"); starts nothing. ``{run id: why}``."""
    return store.mark_lost()


def reap(store: RunStore, *, spawn: bool = True) -> None:
    """The dashboard's queue pump: mark lost runs, then (``spawn``) start queued runs while slots are free."""
    mark_lost(store)
    if spawn:
        start_queued(store)
        ensure_spare(store)  # a warm worker that died is replaced here


def start_queued(store: RunStore) -> list[int]:
    """Claim and spawn queued local runs, oldest first, while device slots are free; the ids started.

    Called by submit, resume, a worker's exit and the dashboard's pump (``reap``) only: reading never starts runs.
    """
    runs = store.runs(include_archived=True)
    started = []
    for row in runs[(runs.status == "queued") & (runs.executor == "local")].sort_values("id").itertuples():
        device = resolve_device(TrainConfig.from_dict(json.loads(row.config)).device).type
        # Claim and slot count in one transaction: two workers reaping at once cannot both start it.
        if store.claim_queued(int(row.id), device, device_slots(device)):
            _spawn(store, int(row.id), device)
            started.append(int(row.id))
    return started


def _child_env() -> dict:
    # The package's parent goes on PYTHONPATH so the child imports this same sslviz from any cwd.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}


def _spawn(store: RunStore, run_id: int, device: str) -> None:
    """Hand the run to the warm worker, or start a worker process; mark the run running with that process before
    it boots, so a second reap does not double-start it. (The dashboard keeps a warm worker ready: ``reap``.)"""
    pid = _hand_to_spare(store, run_id)
    if pid is None:
        log = log_path(store, run_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            pid = subprocess.Popen(
                [sys.executable, "-m", "sslviz", "--store", str(store.path), "worker", str(run_id)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env=_child_env(),
            ).pid
    # A heartbeat in the future gives the worker time to boot; a dead pid is still caught at once.
    now = time.time()
    store.set_pid(run_id, pid, heartbeat=now + STARTUP_GRACE)


# -- the warm worker: a process that has imported the engine and waits for one run -----------------------
# It waits on a FIFO ``spares/<pid>`` next to the store. A spawner claims it by renaming the FIFO to
# ``<pid>.taken`` (atomic: one spawner wins), then writes the run id; the process then is that run's worker,
# exactly as ``python -m sslviz worker N`` (one process per run). A FIFO without a reader (the process died)
# is removed and replaced. Only the dashboard starts them (when it opens the store, and in its pump ``reap``), so
# CLI runs and sweeps without a dashboard never leave one behind; an unused one exits after SPARE_IDLE_S.
def warm_enabled() -> bool:
    return os.environ.get(WARM_ENV, "1").strip() != "0"


def spare_dir(store: RunStore) -> Path:
    return Path(store.path).parent / "spares"


def spares(store: RunStore) -> list[int]:
    """Pids of the warm workers waiting for this store (their FIFOs; dead ones' FIFOs removed)."""
    return _spare_files(store)[0]


def _spare_files(store: RunStore) -> tuple[list[int], list[int]]:
    """(pids waiting on their FIFO, pids still importing: ``<pid>.starting``); files of dead pids removed."""
    folder = spare_dir(store)
    ready, starting = [], []
    for path in folder.glob("*") if folder.is_dir() else ():
        name, _, kind = path.name.partition(".")
        if not name.isdigit() or kind not in ("", "starting"):
            continue
        if lifecycle.pid_alive(int(name)):
            (ready if kind == "" else starting).append(int(name))
        else:
            path.unlink(missing_ok=True)
    return ready, starting


def ensure_spare(store: RunStore) -> int | None:
    """Start a warm worker for ``store`` unless one waits already (or warm workers are off); its pid, or None."""
    if not warm_enabled():
        return None
    ready, starting = _spare_files(store)
    if ready or starting:  # one waits, or is still importing the engine (the pump calls this every refresh)
        return (ready or starting)[0]
    folder = spare_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "spares.log", "ab") as out:
        pid = subprocess.Popen(
            [sys.executable, "-m", "sslviz", "--store", str(store.path), "spare"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=_child_env(),
        ).pid
    (folder / f"{pid}.starting").touch()  # removed by the process once it waits, or when it is gone
    return pid


def _hand_to_spare(store: RunStore, run_id: int) -> int | None:
    """Give ``run_id`` to a waiting warm worker; its pid, or None when none is ready (or they are off)."""
    if not warm_enabled():
        return None
    for pid in spares(store):
        fifo = spare_dir(store) / str(pid)
        taken = fifo.with_name(f"{pid}.taken")
        try:
            fifo.rename(taken)  # claims it: a second spawner finds the name gone
        except FileNotFoundError:
            continue
        try:
            fd = os.open(taken, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody reads it, the process is gone
        except OSError as exc:
            taken.unlink(missing_ok=True)
            if exc.errno == errno.ENXIO:
                continue
            raise
        try:
            os.write(fd, f"{run_id}\n".encode())
        finally:
            os.close(fd)
        return pid
    return None


def run_spare(store: RunStore, idle_s: float = SPARE_IDLE_S) -> str | None:
    """Wait (engine imported) for one run id on this process's FIFO, then be that run's worker: the run's final
    status, or None when no run came within ``idle_s`` seconds."""
    folder = spare_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    fifo, taken = folder / str(os.getpid()), folder / f"{os.getpid()}.taken"
    starting = folder / f"{os.getpid()}.starting"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)  # read and write: never at end-of-file while waiting
    starting.unlink(missing_ok=True)
    deadline, data = time.monotonic() + idle_s, b""
    try:
        while not data.endswith(b"\n"):
            if select.select([fd], [], [], 1.0)[0]:
                data += os.read(fd, 64)
            elif time.monotonic() > deadline or not (fifo.exists() or taken.exists()):
                try:
                    fifo.rename(folder / f"{os.getpid()}.gone")  # retire, unless a spawner claimed it just now
                except FileNotFoundError:
                    continue
                (folder / f"{os.getpid()}.gone").unlink(missing_ok=True)
                return None
    finally:
        os.close(fd)
        for path in (taken, fifo, starting):
            path.unlink(missing_ok=True)
    run_id = int(data.split()[0])
    log = log_path(store, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:  # from here on this process is the run's worker, its output in the run's log
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
    return run_worker(store, run_id)


class _Heartbeat(threading.Thread):
    """Beats every HEARTBEAT_EVERY s; sets ``lost`` if the store no longer lists this process as the run's worker
    (a reaper gave up on it), so the trainer stops instead of writing into a run marked failed."""

    def __init__(self, store: RunStore, run_id: int):
        super().__init__(daemon=True)
        self.store, self.run_id = store, run_id
        self.done, self.lost = threading.Event(), threading.Event()

    def run(self):
        while not self.done.wait(HEARTBEAT_EVERY):
            try:
                self.store.heartbeat(self.run_id)
                row = self.store.run(self.run_id)
            except StoreError:
                continue  # the main thread reports store failures
            if row is None or row["status"] != "running" or row["pid"] != os.getpid():
                self.lost.set()


def run_worker(store: RunStore, run_id: int, *, progress=None) -> str:
    """Train stored run ``run_id`` in this process; resumes from its checkpoint when one exists.

    Returns the final status. SIGTERM asks for a graceful stop, like the Stop button.
    """
    row = store.run(run_id)
    if row is None:
        raise NoSuchRun(run_id, store.path)
    cfg = TrainConfig.from_dict(row["config"])
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        # Share the cores between the runs allowed to train at once.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, device_slots("cpu"))))
    store.claim_run(run_id, os.getpid(), str(device))
    ckpt = checkpoint_path(store, run_id)
    resume_from = ckpt.exists()

    terminate = threading.Event()

    def graceful(signum, frame):  # first SIGTERM / Ctrl-C: stop at the next log step; a second Ctrl-C: now
        if terminate.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        terminate.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, graceful) for sig in (signal.SIGTERM, signal.SIGINT)}
    heartbeat = _Heartbeat(store, run_id)
    heartbeat.start()
    status, error = "failed", None
    try:
        # Inside the try: an unreadable or foreign checkpoint fails the run with its reason (never a silent
        # restart from step 0, nor "process lost").
        if resume_from:
            saved = load_checkpoint(ckpt)
            check_checkpoint(saved, cfg)
            step = int(saved["step"])
            store.truncate_after(run_id, step)
            store.add_event(run_id, "resumed", f"resumed from step {step}")
        else:
            store.add_event(run_id, "started", f"started on {device}")
        summary = train(
            cfg,
            on_log=lambda record: store.log(run_id, record),
            should_stop=lambda: terminate.is_set() or heartbeat.lost.is_set() or store.stop_requested(run_id),
            checkpoint_path=ckpt,
            resume=resume_from,
            cache_dir=cache_dir(store),
            progress=progress,
        )
        status = summary["status"]
    except (Diverged, CheckpointMismatch) as exc:
        error = str(exc)
    except torch.OutOfMemoryError:
        error = (f"CUDA out of memory with batch_size={cfg.batch_size}, mu={cfg.mu}: lower batch_size or mu, "
                 "or pick a smaller model.")
    except KeyboardInterrupt:
        status, error = "stopped", "interrupted"
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure must reach the dashboard, not just a log file
        error = f"{type(exc).__name__}: {exc}"
        store.add_event(run_id, "traceback", traceback.format_exc())
    finally:
        heartbeat.done.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if heartbeat.lost.is_set():  # already marked failed by a reader's liveness check; leave its verdict
        return "failed"
    try:
        store.finish_run(run_id, status, error)
    except TransitionRefused:  # marked lost between the heartbeat's last look and now: that verdict stays
        return store.run(run_id)["status"]
    store.add_event(run_id, status, error or status)
    start_queued(store)
    return status
