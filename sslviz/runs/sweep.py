"""Sweeps: a grid of runs defined, validated, executed, stopped, resumed, deleted and read as one object.

A sweep is a row of the store's ``sweeps`` table (its :class:`SweepSpec`, how it executes) and the runs that
carry its id in ``runs.sweep``, one per cell of the grid (every combination of the ``grid`` values, times the
seeds). Every cell is checked before anything is recorded (its config against the declared fields, its split
against the data, its model against the input shape: the checks ``worker.record`` makes), so an impossible
cell fails the whole sweep at once, naming the cell and the field.

Executors: ``local`` (default) records every cell as a queued run of the existing worker queue (its
``SSLVIZ_CPU_SLOTS`` / ``SSLVIZ_GPU_SLOTS`` slots); ``ray`` (``ray_executor``) runs each cell as a Ray
task and streams its records back to this process, which owns the store. Every cell runs to the same budget,
except in a tuning sweep (:class:`EarlyStop`, Ray only): its cells are Ray Tune trials under ASHA
(``ray_asha``), which stops those behind on the validation metric. A folder dataset must be readable at
the same path on every Ray node; that is checked on each node before anything is recorded. Stop, resume and
delete act on every run of a sweep through the runs' own lifecycle actions.

The spec itself is ``sweep_spec.py``'s; reading what the runs did, ``sweep_results.py``'s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import devices, lifecycle
from .sweep_spec import EXECUTORS, SweepError, SweepSpec, cell_config, describe
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from ..engine.params import InvalidParameterError
from ..engine.splits import SplitError


# Fields that shape the split: an impossible split is blamed on the one its message names (the grid's first).
SPLIT_TOKENS = {"gamma_u": "gamma_u", "gamma": "gamma", "n1": "N_1", "m1": "M_1", "unlabeled_shape": "shape"}


# Seconds per training step on one CPU thread when the store has no finished run of the dataset to go by.
DEFAULT_STEP_SECONDS = {"toy2d": 0.01, "digits": 0.04}


FOLDER_STEP_SECONDS = 0.5


def _blame(exc: Exception, cell: dict) -> str | None:
    """The field an error is about: its own ``field``, else the split field its message names (grid axes first)."""
    if getattr(exc, "field", None):
        return exc.field
    if not isinstance(exc, SplitError):  # a model's "input shape" is no unlabeled_shape
        return None
    text = str(exc)
    names = [n for n in SPLIT_TOKENS if n in cell] + [n for n in SPLIT_TOKENS if n not in cell]
    for name in names:
        token = SPLIT_TOKENS[name]
        if f"{token}=" in text or f"{token} " in text:
            return name
    return None


@dataclass
class Plan:
    """A validated sweep: one config and run info per cell, and the time estimate."""
    spec: SweepSpec
    cells: list
    configs: list
    infos: list
    seconds: float  # estimated wall time on the executor's parallelism
    basis: str  # what the estimate is based on

    @property
    def warnings(self) -> list[str]:
        """The budget warnings of its cells (``registry.budget_warnings``), each once, with how many cells it
        concerns: a sweep of short ACR runs says so before it starts, as a single run does."""
        from ..engine.registry import budget_warnings

        counts: dict[str, int] = {}
        for cfg in self.configs:
            for message in budget_warnings(cfg):
                counts[message] = counts.get(message, 0) + 1
        n = len(self.configs)
        return [f"{c} of {n} cells: {m}" if c < n else m for m, c in counts.items()]


def validate(spec: SweepSpec, cache_dir=None, *, parallel: int = 1, store=None) -> Plan:
    """Check every cell as a single run is checked (``worker.check``: config fields, split against the data, a
    named model against the input shape) before anything starts; SweepError naming the first bad cell ("cell 3 of
    8 (gamma=500, seed=0): gamma: ...") and its field. Returns the :class:`Plan` with the time estimate for
    ``parallel`` runs at once."""
    from ..engine.data import DatasetError, load_dataset
    from .worker import check

    cuda_count = _cuda_count(store)
    cells = spec.cells()
    datasets: dict = {}
    configs, infos = [], []
    for i, cell in enumerate(cells):
        where = f"Cell {i + 1} of {len(cells)} ({describe(cell)})"
        try:
            cfg = cell_config(spec, i, cell)
            if cfg.dataset not in datasets:
                datasets[cfg.dataset] = load_dataset(cfg.dataset, cache_dir)
            device = devices.resolve_type(cfg.device, cuda_count)
            infos.append(check(cfg, cache_dir, dataset=datasets[cfg.dataset], device=device))
        except (InvalidParameterError, SplitError, DatasetError, ValueError) as exc:
            blamed = _blame(exc, cell)
            raise SweepError(f"{where}: {blamed + ': ' if blamed else ''}{exc}", cell=i, field=blamed) from None
        configs.append(cfg)
    seconds, basis = estimate_seconds(configs, parallel=parallel, store=store)
    return Plan(spec, cells, configs, infos, seconds, basis)


def step_seconds(dataset: str, store=None) -> tuple[float, str]:
    """Seconds per step of a run on ``dataset``: the median of the store's finished runs of it, else a default."""
    if store is not None:
        runs = store.runs(include_archived=True)
        done = runs[(runs.status == "finished") & runs.started.notna() & runs.finished.notna()]
        rates = [(r.finished - r.started) / max(1, r.total_steps) for r in done.itertuples()
                 if r.config.get("dataset") == dataset]
        if rates:
            return float(np.median(rates)), f"median of {len(rates)} finished {dataset} run(s) in the store"
    if dataset in DEFAULT_STEP_SECONDS:
        return DEFAULT_STEP_SECONDS[dataset], f"a default of {DEFAULT_STEP_SECONDS[dataset]} s/step on one CPU thread"
    return FOLDER_STEP_SECONDS, f"a guess of {FOLDER_STEP_SECONDS} s/step for a folder dataset"


def estimate_seconds(configs, *, parallel: int = 1, store=None) -> tuple[float, str]:
    """Estimated wall time of ``configs`` run ``parallel`` at a time, and what it rests on."""
    total, bases = 0.0, {}
    for cfg in configs:
        rate, basis = step_seconds(cfg.dataset, store)
        bases[cfg.dataset] = basis
        total += rate * cfg.steps
    return total / max(1, parallel), "; ".join(bases.values())


def _cuda_count(store=None) -> int:
    """GPUs a run may use here: as the store's workers last saw them (``devices.known``, no torch import), or
    probed when there is no store."""
    return devices.known(home_of(store))["cuda"] if store is not None else devices.probe()["cuda"]


def local_parallelism(configs, store=None) -> int:
    """How many of ``configs`` the local worker queue trains at once (its slots on their device)."""
    from .worker import device_slots

    cuda_count = _cuda_count(store)
    folder = home_of(store) if store is not None else None
    slots = [device_slots(devices.resolve_type(c.device, cuda_count), c, folder) for c in configs] or [device_slots("cpu")]
    return max(1, min(slots))


# -- execution ----------------------------------------------------------------------------------------
def record(store, plan: Plan, *, executor: str = "local", options: dict | None = None) -> tuple[int, list[int]]:
    """Record the sweep and one queued run per cell (tagged with the sweep, executing on ``executor``);
    starts nothing. Returns (sweep id, run ids)."""
    from .worker import checkpoint_path

    if executor not in EXECUTORS:
        raise SweepError(f"Unknown executor {executor!r}; expected one of {list(EXECUTORS)}.")
    sweep_id = store.create_sweep(plan.spec.to_dict(), name=plan.spec.name, executor=executor, options=options)
    run_ids = []
    for cfg, info in zip(plan.configs, plan.infos):
        run_id = store.create_run(cfg.to_dict(), info=info, executor=executor, sweep=sweep_id)
        checkpoint_path(store, run_id).unlink(missing_ok=True)  # a stale file of an older store of the same name
        store.add_event(run_id, "queued", f"queued by sweep {sweep_id}")
        run_ids.append(run_id)
    return sweep_id, run_ids


SWEEP_SPARE_IDLE_S = 60.0


def submit_local(store, plan: Plan) -> tuple[int, list[int]]:
    """Record the sweep's runs for the local worker queue and start as many as the slots allow. A warm worker
    forks every cell's process (cells start in milliseconds, not after the seconds a cold process spends
    importing torch); it exits SWEEP_SPARE_IDLE_S after the sweep's last cell started."""
    from .worker import ensure_spare, start_queued

    sweep_id, run_ids = record(store, plan, executor="local")
    ensure_spare(store, idle_s=SWEEP_SPARE_IDLE_S)
    start_queued(store)
    return sweep_id, run_ids


def sweep_runs(store, sweep_id: int) -> pd.DataFrame:
    """The runs of a sweep (archived ones too), oldest first; SweepError for an unknown sweep."""
    if store.sweep(sweep_id) is None:
        raise SweepError(f"There is no sweep {sweep_id} in {store.path}.")
    runs = store.runs(include_archived=True)
    return runs[runs["sweep"] == sweep_id].sort_values("id")


def stop(store, sweep_id: int) -> list[int]:
    """``request_stop`` every queued or running run of the sweep; the ids asked.

    Queued runs first: a running run that honours its stop calls ``worker.start_queued`` as it ends, and would
    start a queued run of this sweep not yet stopped (which would then train until its first log step)."""
    asked = []
    runs = sweep_runs(store, sweep_id)
    for row in sorted(runs.itertuples(), key=lambda r: r.status != lifecycle.QUEUED):  # stable: then by id
        if row.status in lifecycle.ACTIVE:
            try:
                store.request_stop(int(row.id))
                asked.append(int(row.id))
            except lifecycle.TransitionRefused:
                pass  # it ended meanwhile
    return asked


def resume(store, sweep_id: int) -> list[int]:
    """``resume`` every stopped or failed run of the sweep (from its checkpoint when it has one): local runs are
    queued for the worker queue; Ray runs are queued for the sweep's driver (``ray_executor.drive``). The ids."""
    from . import worker

    runs = sweep_runs(store, sweep_id)
    if store.sweep(sweep_id)["options"].get("early_stop"):
        raise SweepError(f"Sweep {sweep_id} was tuned with early stopping: its stopped runs were stopped on "
                         "purpose and Tune trials keep no checkpoint. Start a new sweep to tune again.")
    resumed = []
    for row in runs.itertuples():
        if row.status not in (lifecycle.STOPPED, lifecycle.FAILED):
            continue
        if row.executor == "local" and worker.checkpoint_path(store, int(row.id)).exists():
            worker.resume(store, int(row.id))
        else:  # a local run with no checkpoint yet (stopped while queued), or a Ray run: queued as it is
            store.resume(int(row.id))
            store.add_event(int(row.id), "resume", f"queued again by sweep {sweep_id}")
        resumed.append(int(row.id))
    if resumed:
        worker.start_queued(store)
    return resumed


def delete(store, sweep_id: int) -> list[int]:
    """Delete a sweep with every run of it (metrics, checkpoints, logs); refused while any of them is active."""
    from . import worker

    runs = sweep_runs(store, sweep_id)
    active = runs[runs.status.isin(lifecycle.ACTIVE)]
    if len(active):
        raise SweepError(f"Sweep {sweep_id} has {len(active)} queued or running run(s) "
                         f"({', '.join(f'#{i}' for i in active.id)}); stop it first.")
    options = store.sweep(sweep_id)["options"]
    for run_id in runs.id.astype(int):
        worker.delete(store, run_id)
        if options.get("storage_path"):
            from .ray_executor import storage_checkpoint

            storage_checkpoint(store, run_id, options["storage_path"]).unlink(missing_ok=True)
    store.delete_sweep(sweep_id)
    return runs.id.astype(int).tolist()


def home_of(store) -> Path:
    return Path(store.path).parent


def default_parallel(executor: str, configs, store=None) -> int:
    return local_parallelism(configs, store) if executor == "local" else max(1, os.cpu_count() or 1)


def check_folders_on_ray(configs, *, address: str | None = None, num_cpus: int | None = None) -> None:
    """SweepError unless every alive Ray node reads each folder dataset of ``configs`` at its path (trials load the
    data where they run); the message names the nodes and paths. Built-in datasets need nothing."""
    from ..engine import data
    from . import ray_executor

    folders = sorted({c.dataset for c in configs if c.dataset not in data.BUILTIN})
    if not folders:
        return
    ray_executor.connect(address, num_cpus)
    problems = ray_executor.unreadable_on_nodes(folders)
    if problems:
        raise SweepError("A folder dataset must be readable at the same path on every Ray node (a shared mount); "
                         "refused before any run started: " + "; ".join(problems) + ".", field="dataset")


def submit_ray(store, plan: Plan, *, address: str | None = None, storage_path=None, early_stop: dict | None = None,
               **drive_options):
    """Check folder datasets on every Ray node, record the sweep's runs for Ray and drive them to their end in this
    process: ``ray_executor.drive`` (every cell to the same budget), or with ``early_stop`` (``EarlyStop.options``)
    ``ray_asha.tune`` (Tune trials under ASHA). Returns (sweep id, run ids, {run id: status})."""
    from . import ray_asha, ray_executor

    if early_stop:
        ray_asha.tune_modules()  # a missing Ray Tune says so before anything is recorded
    check_folders_on_ray(plan.configs, address=address, num_cpus=drive_options.get("num_cpus"))
    if storage_path is not None:
        storage_path = str(Path(storage_path).resolve())
    options = {"address": address, "storage_path": storage_path, **({"early_stop": early_stop} if early_stop else {})}
    sweep_id, run_ids = record(store, plan, executor="ray", options=options)
    if early_stop:
        return sweep_id, run_ids, ray_asha.tune(store, sweep_id, address=address, **drive_options)
    return sweep_id, run_ids, ray_executor.drive(store, sweep_id, address=address, storage_path=storage_path,
                                                 **drive_options)
