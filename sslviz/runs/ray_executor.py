"""Sweeps on Ray: each cell a Ray task with its CPU/GPU request; records stream back to the store's process.
(A tuning sweep's cells are Ray Tune trials instead: ``ray_asha``.)

``ray`` is imported lazily (the ``sslviz[ray]`` extra; the dashboard's install has none). ``drive(store, sweep)``
is the driver: it connects to Ray (``address``, else ``$RAY_ADDRESS``, else a local Ray started here), submits one
task per queued Ray run of the sweep (Ray schedules them as CPUs/GPUs free up) and, every ``POLL`` seconds, takes
the trainer records the tasks put in its :class:`Mailbox` (an actor) and writes them into the SQLite store, which
only this process opens: a trial is given the config and a checkpoint path, never the store (its
``SSLVIZ_STORE`` points nowhere, so an accidental ``RunStore()`` in a trial fails). Each record is put once, taken
once and written once; a task's puts arrive in order (Ray runs one caller's calls on an actor in order), and its
last call waits for them, so once the task is done the driver's next take holds all of its records.

Why tasks and not an actor per cell: Ray keeps a task's worker process for the next task, so the 3-4 s of
importing torch and the trainer are paid once per worker, not once per cell (``bench/sweep.py``: 12 digits cells,
an actor each: 1.33 x the local executor, whose warm worker forks every cell).

Lifecycle: a run is ``queued`` until its task starts training (``claim``, pid = this driver), then ``running``;
the driver heartbeats it while Ray answers for the task, so readers elsewhere judge it by the driver
(``lifecycle.ray_lost``). A crashed worker is recorded as lost by the driver. Stop goes through Ray: the store's
stop flag makes the driver set the run's flag in the mailbox, which the trainer reads at its next log step (then it
checkpoints and ends); a stop of a queued cell cancels its task before it starts.

A folder dataset is loaded where a trial runs: ``unreadable_on_nodes`` lists it from a zero-CPU task pinned to
each alive node, and ``sweep.submit_ray`` refuses the sweep before recording anything when a node cannot.

Checkpoints follow Ray's multi-node storage rule: they go to ``storage_path`` (a folder every node and the driver
reach, e.g. NFS or a shared mount), as ``<store>-run<id>.pt``. A local Ray started here is one node, so the
store's own checkpoints folder is used when no storage_path is given. On a remote cluster without one, trials
write no checkpoint, and resuming such a run restarts it from step 0, recorded as an event saying so.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from . import lifecycle
from .host import RunHost

POLL = 0.5  # seconds between takes of the records in the mailbox
NO_STORE = "/dev/null/sslviz-trials-have-no-store.db"  # /dev/null is no folder, even for root  # a trial's SSLVIZ_STORE
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("The Ray executor needs Ray: pip install 'sslviz[ray]' (ray==2.60.0).") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray unless this process already is: ``address`` or ``$RAY_ADDRESS`` (a cluster), else a local Ray
    (``num_cpus`` CPUs). Returns whether the Ray in use is one started here (a single node)."""
    ray = _ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return getattr(connect, "_local", not address)
    # Local workers import this same sslviz; on a cluster, sslviz must be installed on every node.
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}}
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env=env)
    connect._local = not address
    return connect._local


def storage_checkpoint(store, run_id: int, storage_path) -> Path:
    return Path(storage_path) / f"{Path(store.path).stem}-run{run_id}.pt"


def trial_setup(config: dict, threads: int):
    """In a trial process (a task here, a Tune trial in ``ray_asha``): no store, ``threads`` torch threads.
    Returns the run's TrainConfig and the device it trains on."""
    import torch

    from ..engine.config import TrainConfig
    from ..engine.device import resolve_device

    os.environ["SSLVIZ_STORE"] = NO_STORE  # no path to the driver's store reaches a trial
    torch.set_num_threads(max(1, threads))
    cfg = TrainConfig.from_dict(config)
    return cfg, str(resolve_device(cfg.device))


def gpus_for(cfg, gpus_per_run: float | None) -> float:
    """The GPUs a trial of ``cfg`` asks Ray for: ``gpus_per_run`` when given, else 1 for a ``cuda`` run or an
    ``auto`` one on a cluster with GPUs, else 0."""
    if gpus_per_run is not None:
        return gpus_per_run
    ray = _ray()
    return 1 if cfg.device == "cuda" or (cfg.device == "auto" and ray.cluster_resources().get("GPU", 0)) else 0


def _unreadable_here(paths) -> dict[str, str | None]:
    """{folder: why this machine cannot read it, or None}."""
    out = {}
    for path in paths:
        out[path] = None
        if not os.path.exists(path):
            out[path] = "does not exist"
        elif not os.path.isdir(path):
            out[path] = "is not a folder"
        else:
            try:
                os.listdir(path)
            except OSError as exc:
                out[path] = f"cannot be listed ({exc.strerror or exc})"
    return out


def unreadable_on_nodes(paths, timeout: float = 60.0) -> list[str]:
    """Check that every alive Ray node reads each folder of ``paths``: one tiny task pinned to each node (no CPU
    asked, so it runs beside busy trials). Returns one line per node and path that fails ("node 6c1f... (10.0.0.5):
    '/data/cifar' does not exist"), empty when every node reads every path."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = sorted(set(map(str, paths)))
    probe = ray.remote(num_cpus=0)(_unreadable_here)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths)
            for n in nodes]
    problems = []
    for node, ref in zip(nodes, refs):
        where = f"node {node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')})"
        try:
            found = ray.get(ref, timeout=timeout)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as exc:
            problems.append(f"{where}: the check did not answer ({type(exc).__name__})")
            continue
        problems.extend(f"{where}: {p!r} {why}" for p, why in found.items() if why)
    return problems


class Mailbox:
    """The driver's inbox on Ray, one per ``drive``: trials put their records and the device they train on; the
    driver takes them; Stop flags go the other way. It knows no store."""

    def __init__(self):
        self._records: dict[int, list] = {}  # by run: the records the driver has not yet said it wrote
        self._dropped: dict[int, int] = {}  # by run: how many records were dropped as written
        self._devices: dict[int, str] = {}
        self._stop: set[int] = set()

    def started(self, run_id: int, device: str) -> None:
        self._devices[run_id] = device

    def put(self, run_id: int, record: dict) -> None:
        self._records.setdefault(run_id, []).append(record)

    def take(self, written: dict[int, int]) -> tuple[dict[int, str], dict[int, list]]:
        """Drop the records the driver has written (``written``: its running total per run, so a repeated take
        drops nothing twice) and return (device of every run that started, every record not yet written, by run).

        Records leave only once written: a driver interrupted (Ctrl-C) after a take, or halfway through writing
        what it took, gets the rest again at its next take (writing a record twice is harmless: the store's
        inserts replace a step's rows).

        >>> box = Mailbox()
        >>> for step in (5, 10, 15):
        ...     box.put(1, {"step": step})
        >>> [r["step"] for r in box.take({})[1][1]]
        [5, 10, 15]
        >>> [r["step"] for r in box.take({1: 1})[1][1]]  # the driver wrote one, then was interrupted
        [10, 15]
        >>> box.take({1: 3})[1], box.take({1: 3})[1]
        ({}, {})
        """
        for run_id, total in written.items():
            del self._records.get(run_id, [])[:total - self._dropped.get(run_id, 0)]
            self._dropped[run_id] = total
        return dict(self._devices), {run_id: list(batch) for run_id, batch in self._records.items() if batch}

    def stop(self, run_id: int) -> None:
        self._stop.add(run_id)

    def stopping(self, run_id: int) -> bool:
        return run_id in self._stop


def train_cell(mailbox, run_id: int, config: dict, checkpoint: str | None, resume: bool, threads: int = 1) -> dict:
    """A cell on a Ray worker: train ``config``, putting every record in ``mailbox``; stop when it says so."""
    ray = _ray()
    from ..engine.trainer import train

    cfg, device = trial_setup(config, threads)
    mailbox.started.remote(run_id, device)
    asked = [0.0, False]  # when the mailbox was last asked, and its answer

    def stopping() -> bool:  # a round trip at most every POLL seconds, not at every log step
        if time.monotonic() - asked[0] >= POLL:
            asked[:] = [time.monotonic(), ray.get(mailbox.stopping.remote(run_id))]
        return asked[1]

    try:
        summary = train(cfg, on_log=lambda record: mailbox.put.remote(run_id, record), should_stop=stopping,
                        checkpoint_path=checkpoint, resume=resume)
    finally:
        ray.get(mailbox.stopping.remote(run_id))  # returns after every put before it was handled, even on failure
    return {"status": summary["status"]}


def probe_store(config: dict) -> str:
    """What opening the default store in a trial process gives (tests: it must fail)."""
    from .store import RunStore, StoreError

    trial_setup(config, 1)
    try:
        RunStore()
    except StoreError as exc:
        return f"no store: {exc}"
    return "opened a store"


class _Cell:
    """A queued run's Ray task, with its host on this driver."""

    def __init__(self, host: RunHost, ref):
        self.host, self.ref = host, ref
        self.run_id = host.run_id
        self.stop_sent = False


def drive(store, sweep_id: int, *, address: str | None = None, storage_path=None, num_cpus: int | None = None,
          gpus_per_run: float | None = None, threads: int = 1, on_update=None) -> dict[int, str]:
    """Run every queued Ray run of sweep ``sweep_id`` to its end, writing its records into ``store`` here.

    The run host is split: the task trains and puts its records in the mailbox; this driver's ``RunHost`` of each
    run claims it when its task starts, writes its records, beats and ends it.
    Returns ``{run id: final status}``. Ctrl-C stops every trial gracefully (they checkpoint) and returns."""
    ray = _ray()
    sweep = store.sweep(sweep_id)
    options = sweep["options"]
    address = address or options.get("address")
    storage_path = storage_path or options.get("storage_path")
    local = connect(address, num_cpus)
    from . import worker
    from ..engine.config import TrainConfig
    from ..engine.trainer import CheckpointMismatch

    Task = ray.remote(train_cell)
    mailbox = ray.remote(Mailbox).options(num_cpus=0).remote()
    runs = store.runs(include_archived=True)
    queued = runs[(runs["sweep"] == sweep_id) & (runs.status == lifecycle.QUEUED) & (runs.executor == "ray")]
    cells: dict[int, _Cell] = {}
    results: dict[int, str] = {}
    for row in queued.sort_values("id").itertuples():
        run_id = int(row.id)
        host = RunHost(store, run_id, where=" (Ray)", placeholder="ray")
        cfg = TrainConfig.from_dict(store.run(run_id)["config"])
        if storage_path:
            ckpt = storage_checkpoint(store, run_id, storage_path)
        elif local:
            ckpt = worker.checkpoint_path(store, run_id)
        else:
            ckpt = None  # no checkpoint this driver can reach: give the sweep a storage_path every node sees
        try:
            resume = host.resume_point(ckpt, cfg, hint=" (give the sweep a storage_path every Ray node sees)") > 0
        except CheckpointMismatch as exc:
            results[run_id] = host.end("failed", f"cannot resume: {exc}")
            continue
        ref = Task.options(num_cpus=1, num_gpus=gpus_for(cfg, gpus_per_run), max_retries=0).remote(
            mailbox, run_id, cfg.to_dict(), str(ckpt) if ckpt else None, resume, threads)
        cells[run_id] = _Cell(host, ref)

    written: dict[int, int] = {}  # records written per run, in all: the mailbox drops those (Mailbox.take)

    def drop(cell: _Cell) -> None:
        """A cell whose run ended elsewhere (stopped while queued, deleted, lost): cancel its task, keep the verdict."""
        ray.cancel(cell.ref, force=True)
        row = store.run(cell.run_id)
        results[cell.run_id] = row["status"] if row else "deleted"
        del cells[cell.run_id]

    def deliver() -> None:
        """Take what the trials put in the mailbox and write it: a cell that started is claimed first."""
        devices, records = ray.get(mailbox.take.remote(dict(written)))
        for run_id, device in devices.items():
            cell = cells.get(run_id)
            if cell is not None and not cell.host.claimed:
                if not cell.host.claim(f"ray:{device}"):
                    drop(cell)
                    continue
                cell.host.started(device)
        for run_id, batch in records.items():
            if not (run_id in cells and cells[run_id].host.claimed):  # a cancelled cell's records belong to no run
                written[run_id] = written.get(run_id, 0) + len(batch)
                continue
            for record in batch:
                cells[run_id].host.log(record)
                written[run_id] = written.get(run_id, 0) + 1  # counted once in the store: a Ctrl-C loses none

    interrupted = False
    while cells:
        try:
            done, _ = ray.wait([c.ref for c in cells.values()], num_returns=len(cells), timeout=POLL)
            done = set(done)
            deliver()  # before any cell ends: a finished task's records are all in the mailbox by now
            active = store.queue("ray").set_index("id")  # one query a poll, whatever the number of cells
            for cell in list(cells.values()):
                if cell.run_id not in active.index:  # stopped while queued, deleted, or lost
                    drop(cell)
                    continue
                row = active.loc[cell.run_id]
                if (interrupted or row["stop_requested"]) and not cell.stop_sent:
                    mailbox.stop.remote(cell.run_id)
                    cell.stop_sent = True
                if cell.ref in done:
                    try:
                        ended = cell.host.end(ray.get(cell.ref)["status"])
                    except ray.exceptions.RayTaskError as exc:  # the trainer raised on the worker
                        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                        ended = cell.host.end("failed", f"{type(cause).__name__}: {cause}")
                    except ray.exceptions.RayError as exc:  # the worker process died (crash, node lost, OOM kill)
                        if cell.host.claimed:
                            ended = cell.host.lose(f"the Ray worker died ({type(exc).__name__})")
                        else:
                            ended = cell.host.end("failed", f"the Ray worker died before starting "
                                                            f"({type(exc).__name__})")
                    results[cell.run_id] = ended
                    del cells[cell.run_id]
                elif cell.host.claimed:
                    cell.host.beat()
            if on_update is not None:
                on_update(results)
        except KeyboardInterrupt:
            interrupted = True  # the next pass asks every trial to stop; they checkpoint and end as stopped
    return results
