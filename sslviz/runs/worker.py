"""Local execution of runs: launch them in their own OS process, heartbeat, stop, resume, queue.

The statuses and the transitions between them are ``lifecycle``'s; this module drives them for runs
executed by a local process (``executor = 'local'``). ``submit`` validates the config against the data (so a
bad split fails at Start, not in a background process), records the run as ``queued`` and calls
``start_queued``, which claims queued runs while the device has free slots and spawns their workers. Each
worker process runs ``run_worker``: it heartbeats from a thread, trains, checkpoints, and on exit calls
``start_queued`` again so the queue keeps moving even with no dashboard open. Runs whose process died are
marked ``failed`` ("process lost") by every reader of the store (``RunStore.runs()`` / ``run()``), never here
alone; ``reap`` is the dashboard's pump: mark lost runs, then start queued ones.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from . import devices, lifecycle
from ..engine.config import TrainConfig
from ..engine.files import DiskFull, leftovers
from ..engine.params import InvalidParameterError
from .lifecycle import HEARTBEAT_EVERY, LOST_AFTER, PROCESS_LOST, NoSuchRun, TransitionRefused  # noqa: F401 (re-exported)
from ..engine.prepare import prepare, run_info
from .host import RunHost
from .store import RunStore, StoreError

# torch, the trainer and the models are imported inside the functions that run a model (run_worker, the warm
# worker, evaluate_now, check_resumable): the dashboard's server imports this module to queue runs, and issue 14
# wants no model-related import there (a Start costs no torch import in the server).

STARTUP_GRACE = 60.0  # a new worker may stay silent this long while importing torch and loading data
WARM_ENV = "SSLVIZ_WARM_WORKER"  # "0" turns the warm worker off (the tests do); on otherwise
SPARE_IDLE_S = 900.0  # an unused warm worker exits after this long
HAND_POLL_S = 0.1  # how often a warm worker looks for runs handed to it (an idle one costs ~0.7% of a core)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def device_slots(device_type: str, cfg=None, folder=None) -> int:
    """Simultaneous runs allowed: ``SSLVIZ_CPU_SLOTS`` (default 2) on the CPU; on each GPU ``SSLVIZ_GPU_SLOTS`` when
    set, else as many runs like ``cfg`` as fit in its memory (``devices.auto_gpu_slots`` from the footprint the
    store's workers measured in ``folder``; 1 until one has been measured, or without ``cfg``).

    GPU slots count per GPU: with several GPUs each takes that many runs (``devices.least_loaded`` picks one).
    """
    name, default = ("SSLVIZ_GPU_SLOTS", None) if device_type == "cuda" else ("SSLVIZ_CPU_SLOTS", "2")
    raw = os.environ.get(name, default)
    if raw is None:  # the GPU, no setting: from memory
        if cfg is None or folder is None:
            return 1
        return devices.auto_gpu_slots(devices.known(folder).get("memory") or [],
                                      devices.footprints(folder).get(devices.footprint_key(cfg)))
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
    """``delete`` an ended run: its rows, checkpoint (and a temporary one a killed writer left) and log file
    (TransitionRefused while queued or running)."""
    store.run(run_id)  # the liveness check first: a run whose process is gone is ended, hence deletable
    store.delete_run(run_id)
    ckpt = checkpoint_path(store, run_id)
    for path in (ckpt, *leftovers(ckpt), log_path(store, run_id)):  # a killed writer's temporary file too
        path.unlink(missing_ok=True)


def submit(store: RunStore, cfg: TrainConfig, *, dataset=None) -> int:
    """Validate ``cfg`` against its data (``dataset``: already loaded, e.g. the dashboard's cached copy), record it
    as queued and start it if a slot is free."""
    run_id = record(store, cfg, dataset=dataset)
    store.add_event(run_id, "queued", "queued")
    start_queued(store)
    return run_id


def check(cfg: TrainConfig, cache_dir=None, *, dataset=None, device: str | None = None) -> dict:
    """``cfg`` checked against its data before anything is recorded (mistakes surface now, not in a background
    process): the split (DatasetError, SplitError) and a model named in the config, built once to check it fits
    the data's shape (that imports torch; ValueError). Returns the run's info (``prepare.run_info``): the model
    and device are filled in for ``device`` (a type) when given, else left to the worker that trains it, so the
    default model costs numpy only."""
    from ..engine.registry import check_combination

    check_combination(cfg)  # techniques that would silently override each other: refused, naming both
    prepared = prepare(cfg, cache_dir, dataset=dataset)
    ds = prepared.dataset
    if cfg.model != "auto":
        from ..engine.models import build_model

        try:
            build_model(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
        except ValueError as exc:  # a model for another input shape: the 'model' field is what to change
            raise InvalidParameterError(str(exc), field="model") from None
    from ..engine.device import model_name

    model = model_name(cfg.model, ds.input_shape, device) if device is not None or cfg.model != "auto" else None
    return run_info(prepared, model, device)


def device_type_here(store: RunStore, cfg: TrainConfig) -> str:
    """The device type ``cfg`` gets on this machine, its slot setting read: ValueError naming the ``device``
    parameter (e.g. 'cuda' where there is no GPU) or the bad ``SSLVIZ_*_SLOTS`` variable, so a run that cannot
    start here is refused before it is recorded instead of waiting in the queue."""
    device = devices.resolve_type(cfg.device, devices.known(store.path.parent)["cuda"])
    device_slots(device)
    return device


def record(store: RunStore, cfg: TrainConfig, pid: int | None = None, *, dataset=None) -> int:
    """``check`` ``cfg`` and store the run: queued, or running in ``pid``; ValueError when it cannot run here."""
    device_type_here(store, cfg)
    run_id = store.create_run(cfg.to_dict(), info=check(cfg, cache_dir(store), dataset=dataset), pid=pid)
    # A new run has no checkpoint: one under its name is left from an older store file of the same name.
    checkpoint_path(store, run_id).unlink(missing_ok=True)
    return run_id


def evaluate_now(store: RunStore, run_id: int, splits=("test",)) -> dict:
    """Evaluate ``run_id``'s latest checkpoint on ``splits`` and record it at the checkpoint's step (on demand:
    a running run keeps training; its next records are unaffected). Returns the record."""
    ckpt = checkpoint_path(store, run_id)
    if not ckpt.exists():
        raise ValueError(f"Run {run_id} has no checkpoint yet (one is written every checkpoint_every steps).")
    from ..engine.trainer import evaluate_checkpoint

    record = evaluate_checkpoint(TrainConfig.from_dict(store.run(run_id)["config"]), ckpt, splits, cache_dir(store))
    store.log_metrics(run_id, record)
    store.add_event(run_id, "evaluated", f"{', '.join(splits)} evaluated on demand at step {record['step']}")
    return record


def never_started(row: dict) -> bool:
    """A run that logged nothing (stopped while queued, or while its process booted): its resume starts it from
    step 0, with nothing recorded to lose."""
    return int(row.get("step") or 0) == 0


def check_resumable(store: RunStore, run_id: int) -> None:
    """Raise saying why ``run_id`` cannot be resumed, if it cannot: NoSuchRun, TransitionRefused (its status),
    or a ValueError about this machine (``device_type_here``) or its checkpoint (CheckpointMismatch)."""
    row = store.run(run_id)
    if row is None:
        raise NoSuchRun(run_id, store.path)
    if not lifecycle.allowed("resume", row["status"]):
        raise TransitionRefused(run_id, row["status"], "resume")
    try:
        device_type_here(store, TrainConfig.from_dict(row["config"]))
    except ValueError as exc:
        raise ValueError(f"Run {run_id} cannot resume here: {exc}") from None
    ckpt = checkpoint_path(store, run_id)
    if not ckpt.exists():
        if never_started(row):
            return  # resuming queues it again, from step 0 (as a sweep's resume does)
        raise ValueError(f"Run {run_id} has no checkpoint to resume from; start a new run with its config instead.")
    from ..engine.trainer import CheckpointMismatch, check_checkpoint, load_checkpoint

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
    store.add_event(run_id, "resume", "queued to resume from its last checkpoint" if checkpoint_path(store, run_id).exists()
                    else "queued again: it had not started")
    start_queued(store)


_alive = lifecycle.pid_alive  # the local executor's liveness (kept under its old name)


def mark_lost(store: RunStore) -> dict[int, str]:
    """Fail running runs whose process is gone ("process lost"); starts nothing. ``{run id: why}``."""
    return store.mark_lost()


def reap(store: RunStore, *, spawn: bool = True, owner: int | None = None) -> None:
    """The dashboard's queue pump: mark lost runs, then (``spawn``) start queued runs while slots are free, and keep
    a warm worker that leaves with process ``owner`` (the server)."""
    mark_lost(store)
    if spawn:
        start_queued(store)
        ensure_spare(store, owner=owner)  # a warm worker that died is replaced here


def start_queued(store: RunStore) -> list[int]:
    """Claim and spawn queued local runs, oldest first, while device slots are free; the ids started.

    Called by submit, resume, a worker's exit and the dashboard's pump (``reap``) only: reading never starts runs.
    """
    cold_start_handed(store)
    runs = store.queue("local")
    queued = runs[runs.status == "queued"]
    if queued.empty:
        return []
    cuda_count = devices.known(store.path.parent)["cuda"]
    busy = list(runs.loc[runs.status == "running", "device"].dropna())
    started = []
    for row in queued.itertuples():
        try:  # queued before the machine or the environment changed, or by another host on a shared store
            cfg = TrainConfig.from_dict(row.config)
            device = devices.resolve_type(cfg.device, cuda_count)
            slots = device_slots(device, cfg, store.path.parent)
        except ValueError as exc:  # this run fails with its own reason; the runs behind it still start
            store.refuse_queued(int(row.id), f"cannot start here: {exc}")
            continue
        if device == "cuda":
            device = devices.least_loaded(busy, cuda_count)
        # Claim and slot count in one transaction: two workers reaping at once cannot both start it.
        if store.claim_queued(int(row.id), device, slots):
            _spawn(store, int(row.id), device)
            started.append(int(row.id))
            busy.append(device)
    return started


def _child_env() -> dict:
    # The package's parent goes on PYTHONPATH so the child imports this same sslviz from any cwd.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}


def _spawn(store: RunStore, run_id: int, device: str) -> None:
    """Hand the run to the warm worker, or start a worker process; give it STARTUP_GRACE seconds to boot (with
    the pid of a process started here, so a dead one is still caught at once), so a second reap does not
    double-start it. (The dashboard keeps a warm worker ready: ``reap``; a local sweep starts one.)"""
    if _hand_to_spare(store, run_id) is not None:
        pid = None  # the warm worker forks the run's process, which claims the run with its own pid at once
    else:
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


# -- the warm worker: a process that has imported the engine and forks one process per run --------------
# Runs are handed to it as files ``spares/queue/<run id>`` next to the store; it claims each by renaming it
# (atomic: with two warm workers one wins) and forks a child that is that run's worker, exactly as
# ``python -m sslviz worker N`` (its own process and session, its output in the run's log), born with torch and
# the trainer imported: a run starts in milliseconds instead of the 3-5 s a cold process spends importing. A
# file, not a pipe: a run handed over while the warm worker still imports waits for it, and the spawner (the
# dashboard's Start) never blocks. ``spares/<pid>`` marks a ready warm worker, ``<pid>.starting`` one still
# importing; a dead one's marker is removed, its pending runs go to cold workers (``reap``) and the pump starts
# another. The dashboard starts one when it opens the store and in its pump; a local sweep starts one for its
# cells. An unused one exits after its idle time.
#
# Fork safety: the warm worker imports torch but runs no tensor operation (that would start the OpenMP pool,
# which a forked child cannot use) and holds no SQLite connection while it forks.
def warm_enabled() -> bool:
    return os.environ.get(WARM_ENV, "1").strip() != "0"


def spare_dir(store: RunStore) -> Path:
    return Path(store.path).parent / "spares"


def handed_dir(store: RunStore) -> Path:
    return spare_dir(store) / "queue"


def spares(store: RunStore) -> list[int]:
    """Pids of the ready warm workers of this store (dead ones' markers removed)."""
    return _spare_files(store)[0]


def _spare_files(store: RunStore) -> tuple[list[int], list[int]]:
    """(pids of ready warm workers, pids still importing: ``<pid>.starting``); markers of dead pids removed."""
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


def ensure_spare(store: RunStore, idle_s: float = SPARE_IDLE_S, *, owner: int | None = None) -> int | None:
    """Start a warm worker for ``store`` unless one runs already (or warm workers are off); its pid, or None. With
    ``owner`` (the dashboard's server) it leaves within ``HAND_POLL_S`` once that process is gone, instead of idling
    for ``idle_s`` with ~800 MB resident; a local sweep's has no owner (the CLI that starts it exits at once)."""
    if not warm_enabled():
        return None
    ready, starting = _spare_files(store)
    if ready or starting:  # one waits, or is still starting (the pump calls this every refresh)
        return (ready or starting)[0]
    folder = spare_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "spares.log", "ab") as out:
        pid = subprocess.Popen(
            [sys.executable, "-m", "sslviz", "--store", str(store.path), "spare", "--idle", str(idle_s),
             *(["--owner", str(owner)] if owner else [])],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=_child_env(),
        ).pid
    (folder / f"{pid}.starting").touch()  # renamed to <pid> by the process once it is ready; removed if it dies
    return pid


def _hand_to_spare(store: RunStore, run_id: int) -> int | None:
    """Give ``run_id`` to a warm worker, ready or still starting; its pid, or None when none runs (or they are off)."""
    if not warm_enabled():
        return None
    ready, starting = _spare_files(store)
    if not (ready or starting):
        return None
    folder = handed_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{run_id}.tmp"
    tmp.touch()
    os.replace(tmp, folder / str(run_id))  # appears whole: the warm worker never sees a half-written hand-over
    return (ready or starting)[0]


def cold_start_handed(store: RunStore) -> list[int]:
    """Runs handed to warm workers that are gone (none ready or starting): start them in cold workers, and remove
    their hand-over files. The dashboard's pump and every CLI command call it, so such a run goes on within a
    command or a pump, not after the ~100 s its start-up grace takes to read "process lost"."""
    folder = handed_dir(store)
    handed = [path for path in folder.iterdir() if path.name.isdigit()] if folder.is_dir() else []
    if not handed or any(_spare_files(store)):  # every pump calls this: the pid checks only when something waits
        return []
    started = []
    for path in handed:
        path.unlink(missing_ok=True)
        row = store.run(int(path.name))  # still waiting for its process (not stopped or lost meanwhile)
        if row is not None and row["status"] == "running" and not lifecycle.present(row["pid"]):
            _spawn(store, int(path.name), row["device"])
            started.append(int(path.name))
    return started


def warm_up() -> None:
    """Import now what a cold worker imports before its first log step: the engine (torch, sklearn, the models;
    2-3 s) and ``torch._dynamo``, which the first optimiser imports (1.5 s more). Imports only: no tensor
    operation runs here (fork safety, above)."""
    import torch  # noqa: F401

    import torch._dynamo  # noqa: F401

    from ..engine import trainer  # noqa: F401


def _fork_run(store_path: Path, run_id: int) -> int:
    """Fork the worker process of ``run_id``; returns its pid (in this, the parent process)."""
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: a session of its own (stopping the warm worker leaves it alone), output in the run's log
        os.setsid()
        store = RunStore(store_path)
        log = log_path(store, run_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
        run_worker(store, run_id)
        code = 0
    except BaseException:  # noqa: BLE001 - the child must never return into the warm worker's loop
        traceback.print_exc()
    finally:
        os._exit(code)


def run_spare(store: RunStore, idle_s: float = SPARE_IDLE_S, owner: int | None = None) -> None:
    """Be the warm worker: fork a worker process for every run handed over (``spares/queue``), until no run came
    for ``idle_s`` seconds, this process's marker was removed, or process ``owner`` (the server that started it)
    is gone. Runs handed over while it still imports are picked up once it is ready; runs it forked keep
    training after it stops taking new ones (it waits for them, their parent)."""
    folder, queue = spare_dir(store), handed_dir(store)
    queue.mkdir(parents=True, exist_ok=True)
    starting, marker = folder / f"{os.getpid()}.starting", folder / str(os.getpid())
    store_path = Path(store.path)
    store.close()  # no SQLite connection may cross a fork
    # torch.cuda.is_available() initialises CUDA, and a forked child can then never use it ("Cannot re-initialize
    # CUDA in forked subprocess"); asked through NVML instead, the device count leaves CUDA untouched (PyTorch's
    # documented switch), so the runs forked below can use the GPU.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    devices.write(store_path.parent)  # first (imports torch): the server reads it to place its next run
    warm_up()
    if starting.exists():
        os.replace(starting, marker)
    else:
        marker.touch()
    deadline = time.monotonic() + idle_s
    try:
        while marker.exists() and time.monotonic() < deadline and (owner is None or lifecycle.pid_alive(owner)):
            while _reap_children():
                pass
            if _fork_handed(queue, store_path):
                deadline = time.monotonic() + idle_s
            time.sleep(HAND_POLL_S)
    finally:
        marker.unlink(missing_ok=True)
    _fork_handed(queue, store_path)  # runs handed over just before the marker went
    while _reap_children(block=True):  # wait for the runs still going, so none is left a zombie
        pass


def _fork_handed(queue: Path, store_path: Path) -> int:
    """Claim (rename: one warm worker wins) and fork every run handed over in ``queue``; how many."""
    forked = 0
    for path in sorted(queue.iterdir(), key=lambda f: f.name):
        if not path.name.isdigit():
            continue
        claimed = queue / f".{path.name}.{os.getpid()}"
        try:
            os.replace(path, claimed)
        except FileNotFoundError:
            continue
        claimed.unlink()
        _fork_run(store_path, int(path.name))
        forked += 1
    return forked


def _reap_children(block: bool = False) -> int | None:
    """Collect one exited child (any, when ``block`` the next to exit); its pid, or None when there is none."""
    try:
        pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    return pid or None


def run_worker(store: RunStore, run_id: int, *, progress=None) -> str:
    """Train stored run ``run_id`` in this process; resumes from its checkpoint when one exists.

    Returns the final status. SIGTERM asks for a graceful stop, like the Stop button.
    """
    import torch

    from ..engine.device import resolve_device
    from ..engine.device import model_name
    from ..engine.trainer import CheckpointMismatch, Diverged, train

    row = store.run(run_id)
    if row is None:
        raise NoSuchRun(run_id, store.path)
    cfg = TrainConfig.from_dict(row["config"])
    devices.write(store.path.parent)  # what torch sees here, for the server's next queue decision
    claimed = row["device"] if row["status"] == "running" and row["device"] else None  # start_queued's pick
    device = resolve_device(claimed or cfg.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # the trainer's "cuda" is then this GPU (one run per GPU)
    elif device.type == "cpu":
        # Share the cores between the runs allowed to train at once.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, device_slots("cpu"))))
    host = RunHost(store, run_id)
    host.claim(str(device), strict=True)  # raises for a run this process may not take
    ckpt = checkpoint_path(store, run_id)

    terminate = threading.Event()

    def graceful(signum, frame):  # first SIGTERM / Ctrl-C: stop at the next log step; a second Ctrl-C: now
        if terminate.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        terminate.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, graceful) for sig in (signal.SIGTERM, signal.SIGINT)}
    heartbeat = host.keep_alive()
    status, error = "failed", None
    try:
        # Inside the try: data that cannot be prepared (a full disk for its cache), an unreadable or foreign
        # checkpoint fail the run with their reason (never a silent restart from step 0, nor "process lost").
        prepared = prepare(cfg, cache_dir(store))
        if not row["info"].get("model") or not row["info"].get("device"):  # recorded by a server without torch
            model = model_name(cfg.model, prepared.dataset.input_shape, device.type)
            store.update_run(run_id, info={**row["info"], "model": model, "device": str(device)})
        resume_from = host.resume_point(ckpt, cfg) > 0
        if not resume_from:
            host.started(str(device))
        summary = train(
            cfg,
            on_log=host.log,
            should_stop=lambda: terminate.is_set() or host.lost.is_set() or host.stop_requested(),
            checkpoint_path=ckpt,
            resume=resume_from,
            cache_dir=cache_dir(store),
            prepared=prepared,
            progress=progress,
        )
        status = summary["status"]
        if device.type == "cuda":  # what a run like this one needs, so the queue can put several on one GPU
            devices.record_footprint(store.path.parent, devices.footprint_key(cfg),
                                     torch.cuda.max_memory_reserved(device))
    except (Diverged, CheckpointMismatch, DiskFull) as exc:
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
    ended = host.end(status, error)
    if ended == status:  # this process ended it (not a reader's verdict meanwhile): the queue moves on
        start_queued(store)
        store.roll_up(run_id)  # after the queue moved on: a long run's pages then open from its rollup files
    return ended
