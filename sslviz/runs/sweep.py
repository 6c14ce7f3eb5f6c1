"""Sweeps: a grid of runs defined, validated, executed, stopped, resumed, deleted and read as one object.

A sweep is a row of the store's ``sweeps`` table (its :class:`SweepSpec`, how it executes) and the runs that
carry its id in ``runs.sweep``, one per cell of the grid (every combination of the ``grid`` values, times the
seeds). Every cell is checked before anything is recorded (its config against the declared fields, its split
against the data, its model against the input shape: the checks ``worker.record`` makes), so an impossible
cell fails the whole sweep at once, naming the cell and the field.

Executors: ``local`` (default) records every cell as a queued run of the existing worker queue (its
``SSLVIZ_CPU_SLOTS`` / ``SSLVIZ_GPU_SLOTS`` slots); ``ray`` (``sslviz.ray_executor``) runs each cell as a Ray
task and streams its records back to this process, which owns the store. Every cell runs to the same budget,
except in a tuning sweep (:class:`EarlyStop`, Ray only): its cells are Ray Tune trials under ASHA
(``sslviz.ray_asha``), which stops those behind on the validation metric. A folder dataset must be readable at
the same path on every Ray node; that is checked on each node before anything is recorded. Stop, resume and
delete act on every run of a sweep through the runs' own lifecycle actions.

Reading: :func:`results` (one row per run: knobs, validation / test balanced accuracy, 3-rarest recall, head-tail
gap) and :func:`cell_table` (mean, std and seed count per cell), which the Sweep page draws
(``dashboard.charts.make_sweep_heatmap_figure`` and ``make_sweep_parallel_figure``) and exports.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import yaml

from . import devices, lifecycle
from .ray_asha import ASHA_EVENT, TUNE_METRIC
from ..engine.config import FIELDS, PRESETS, TrainConfig, preset_values
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from ..engine.params import InvalidParameterError, NoneOK, Options, check_params, integer, real

EXECUTORS = ("local", "ray")
EARLY_STOP = ("asha",)  # the early-stopping schedulers of a tuning sweep (Ray Tune's)
# metric key -> (label, higher is better); per run from RunStore.runs() and bias.run_bias_summary
METRICS = {
    "val_balanced_accuracy": ("validation balanced accuracy", True),
    "test_balanced_accuracy": ("test balanced accuracy", True),
    "val_tail_recall": ("validation recall of the 3 rarest", True),
    "test_tail_recall": ("test recall of the 3 rarest", True),
    "val_head_tail_gap": ("validation head − tail recall", False),
    "test_head_tail_gap": ("test head − tail recall", False),
}
# Fields that shape the split: an impossible split is blamed on the one its message names (the grid's first).
SPLIT_TOKENS = {"gamma_u": "gamma_u", "gamma": "gamma", "n1": "N_1", "m1": "M_1", "unlabeled_shape": "shape"}
# Seconds per training step on one CPU thread when the store has no finished run of the dataset to go by.
DEFAULT_STEP_SECONDS = {"toy2d": 0.01, "digits": 0.04}
FOLDER_STEP_SECONDS = 0.5


class SweepError(ValueError):
    """A sweep that cannot start: the message names the cell (its number and values) and the field."""

    def __init__(self, message: str, cell: int | None = None, field: str | None = None):
        super().__init__(message)
        self.cell, self.field = cell, field


# -- definition ---------------------------------------------------------------------------------------
def parse_value(name: str, text: str):
    """The typed value of field ``name`` written as ``text`` on a command line ('none' is None when optional)."""
    f = FIELDS.get(name)
    if f is None:
        raise SweepError(f"Unknown sweep field {name!r}; any config field can vary ({', '.join(FIELDS)}).", field=name)
    text = text.strip()
    if f.optional and text.lower() == "none":
        return None
    try:
        if f.kind == "int":
            return int(text)
        if f.kind == "float":
            return float(text)
        if f.kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
    except ValueError:
        raise SweepError(f"The {name!r} values must be {f.kind}s; got {text!r}.", field=name) from None
    return text


def parse_grid(items) -> dict[str, list]:
    """``["preset=fixmatch,balanced", "gamma=10,50"]`` -> ``{"preset": [...], "gamma": [10.0, 50.0]}``."""
    grid: dict[str, list] = {}
    for item in items or ():
        name, sep, values = str(item).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise SweepError(f"A grid axis is FIELD=V1,V2,...; got {item!r}.")
        grid[name] = [parse_value(name, v) for v in values.split(",")]
    return grid


@dataclass(frozen=True)
class SweepSpec:
    """A grid over config fields (``{field: [values]}``, in axis order), the seeds of every cell, and the values
    every cell shares (``base``: e.g. steps, dataset). Cells: the product of the axes, seeds innermost."""
    grid: dict = field(default_factory=dict)
    seeds: tuple = (0,)
    base: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        if "seed" in self.grid:
            raise SweepError("Give seeds with --seeds (the seeds of every cell), not as a grid axis.", field="seed")
        for name, values in self.grid.items():
            if name not in FIELDS:
                raise SweepError(f"Unknown sweep field {name!r}.", field=name)
            if not values:
                raise SweepError(f"The grid axis {name!r} has no values.", field=name)
            if len(set(map(repr, values))) != len(values):
                raise SweepError(f"The grid axis {name!r} repeats a value: {values!r}.", field=name)
        overlap = sorted(set(self.grid) & set(self.base))
        if overlap:
            raise SweepError(f"{overlap[0]!r} is both a grid axis and a shared value.", field=overlap[0])
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SweepError(f"Seeds must be distinct and at least one; got {list(self.seeds)!r}.", field="seed")

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)

    def cells(self) -> list[dict]:
        """The knobs each cell sets: its grid values and its seed (``base`` left out), in run order."""
        axes = list(self.grid)
        return [{**dict(zip(axes, combo)), "seed": int(seed)}
                for combo in itertools.product(*self.grid.values()) for seed in self.seeds]

    def to_dict(self) -> dict:
        return {"name": self.name, "grid": {k: list(v) for k, v in self.grid.items()}, "seeds": list(self.seeds),
                "base": dict(self.base)}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        unknown = sorted(set(d) - {"name", "grid", "seeds", "base"})
        if unknown:
            raise SweepError(f"Unknown sweep file key {unknown[0]!r}; a sweep file has name, grid, seeds and base.")
        return cls(grid={str(k): list(v if isinstance(v, (list, tuple)) else [v]) for k, v in (d.get("grid") or {}).items()},
                   seeds=tuple(int(s) for s in (d.get("seeds") or [0])), base=dict(d.get("base") or {}),
                   name=str(d.get("name") or ""))

    @classmethod
    def from_yaml(cls, text: str) -> "SweepSpec":
        """A sweep file: ``grid: {preset: [fixmatch, balanced], gamma: [10, 50]}``, ``seeds: [0, 1, 2]``,
        ``base: {steps: 300}``, optional ``name``."""
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise SweepError("A sweep file is a mapping with grid, seeds, base and name.")
        return cls.from_dict(data)


@dataclass(frozen=True)
class EarlyStop:
    """Early stopping for tuning a knob (``--early-stop asha``): the cells run as Ray Tune trials under ASHA, which
    compares them on the validation balanced accuracy at rungs of ``grace_period`` x ``reduction_factor``^k steps
    and stops a trial below the rung's cutoff (the 1 - 1/reduction_factor quantile of the trials recorded there).

    For tuning one knob on validation; a method x gamma map runs every cell to the same budget (no EarlyStop).
    """
    scheduler: str = "asha"  # Ray Tune's ASHAScheduler
    grace_period: int | None = None  # steps before a trial can be stopped (None: the cells' eval_every)
    reduction_factor: float = 3.0  # > 1; a rung keeps about 1/reduction_factor of the trials reaching it

    CONSTRAINTS: ClassVar[dict] = {"scheduler": [Options(EARLY_STOP)], "grace_period": [integer(1), NoneOK()],
                                   "reduction_factor": [real(1, None, "neither")]}

    def options(self, executor: str, configs) -> dict:
        """The options the tuning driver reads (``sweeps.options["early_stop"]``), checked against the executor
        and the cells: SweepError for the local executor, InvalidParameterError naming the field."""
        if executor != "ray":
            raise SweepError(f"Early stopping ({self.scheduler}) runs the cells as Ray Tune trials; it needs "
                             f"--executor ray, not {executor!r}. Without --early-stop every cell runs to the same "
                             "budget.", field="early_stop")
        check_params(asdict(self), self.CONSTRAINTS, "EarlyStop")
        shortest = min(c.steps for c in configs)
        grace = self.grace_period or min(shortest, max(c.eval_every for c in configs))
        if grace > shortest:
            raise InvalidParameterError(f"The 'grace_period' parameter of EarlyStop must be an int in the range "
                                        f"[1, {shortest}] (the cells' steps). Got {grace!r} instead.",
                                        field="grace_period")
        return {"scheduler": self.scheduler, "metric": TUNE_METRIC, "grace_period": int(grace),
                "reduction_factor": float(self.reduction_factor), "max_t": max(c.steps for c in configs)}


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from '0,1,2' (the CLI's --seeds, the Setup page's Seeds field); SweepError naming the field otherwise.

    >>> parse_seeds("0, 1,2")
    (0, 1, 2)
    >>> parse_seeds("a,b")
    Traceback (most recent call last):
    ...
    sslviz.runs.sweep.SweepError: Seeds must be whole numbers separated by commas, e.g. 0,1,2; got 'a,b'.
    """
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise SweepError(f"Seeds must be whole numbers separated by commas, e.g. 0,1,2; got {text!r}.",
                         field="seed") from None


def describe(cell: dict) -> str:
    """'preset=balanced, gamma=10, seed=1'."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items())


def _blame(exc: Exception, cell: dict) -> str | None:
    """The field an error is about: its own ``field``, else the split field its message names (grid axes first)."""
    if getattr(exc, "field", None):
        return exc.field
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


def shared_base(values: dict, grid: dict) -> dict:
    """What a sweep's cells share when it starts from one whole config (the Setup form): every field but the grid's
    axes, the seed and the name. With ``preset`` on an axis, a knob some preset sets stays shared only when the
    config changed it from its own preset's value; the others are left to each cell's preset (shared, they would
    override it: every cell would train the form's preset).

    >>> form = preset_values("fixmatch") | {"steps": 300, "dist_align": "labeled"}
    >>> base = shared_base(form, {"preset": ["fixmatch", "balanced"]})
    >>> base["steps"], base["dist_align"], "threshold_class_alpha" in base, "preset" in base
    (300, 'labeled', False, False)
    """
    base = {k: v for k, v in values.items() if k not in grid and k not in ("seed", "name")}
    if "preset" in grid:
        own, knobs = preset_values(values.get("preset", "fixmatch")), set().union(*PRESETS.values())
        base = {k: v for k, v in base.items() if k not in knobs or v != own[k]}
    return base


def cell_config(spec: SweepSpec, i: int, cell: dict) -> TrainConfig:
    values = {**spec.base, **cell}
    name = values.get("name") or f"{spec.name or 'sweep'} · {describe({k: v for k, v in cell.items()})}"
    values["name"] = name
    return TrainConfig.from_dict(values, preset=values.get("preset"))


def validate(spec: SweepSpec, cache_dir=None, *, parallel: int = 1, store=None) -> Plan:
    """Check every cell as a single run is checked (``worker.check``: config fields, split against the data, a
    named model against the input shape) before anything starts; SweepError naming the first bad cell ("cell 3 of
    8 (gamma=500, seed=0): gamma: ...") and its field. Returns the :class:`Plan` with the time estimate for
    ``parallel`` runs at once."""
    from ..engine.data import DatasetError, load_dataset
    from ..engine.splits import SplitError
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
    types = {devices.resolve_type(c.device, cuda_count) for c in configs} or {"cpu"}
    return max(1, min(device_slots(d) for d in types))


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


# -- reading ------------------------------------------------------------------------------------------
def varied(spec: dict) -> list[str]:
    """The knobs a sweep varies, in axis order (seed left out)."""
    return list((spec.get("grid") or {}).keys())


def results(store, sweep_id: int) -> pd.DataFrame:
    """One row per run of the sweep: id, status, the varied knobs, seed, and every :data:`METRICS` column
    (latest validation / test; NaN where not evaluated yet)."""
    from . import bias

    spec = store.sweep(sweep_id)["spec"]
    keys = varied(spec)
    rows = []
    for r in sweep_runs(store, sweep_id).itertuples():
        cfg = r.config
        summary = bias.run_bias_summary(store, int(r.id))
        rows.append({"run": int(r.id), "status": r.status, "step": int(r.step), **{k: cfg.get(k) for k in keys},
                     "seed": cfg.get("seed"), "val_balanced_accuracy": r.val_balanced_accuracy,
                     "test_balanced_accuracy": r.test_balanced_accuracy,
                     **{k: summary[k] for k in METRICS if k in summary},
                     "early_stop": _early_stop_event(store, int(r.id)) if r.status == lifecycle.STOPPED else None})
    return pd.DataFrame(rows, columns=["run", "status", "step", *keys, "seed", *METRICS, "early_stop"])


def _early_stop_event(store, run_id: int) -> str | None:
    """The message of the event that says ASHA stopped the run ("stopped early by ASHA at step 20 (...)"), or None."""
    events = store.events(run_id)
    hits = events[events.message.str.startswith(ASHA_EVENT, na=False)]
    return str(hits.message.iloc[-1]) if len(hits) else None


def cell_table(res: pd.DataFrame, keys) -> pd.DataFrame:
    """Mean, std and number of seeds with a value per cell (``keys``: the varied knobs), plus its run ids:
    columns ``<metric>_mean``, ``<metric>_std``, ``<metric>_n``, ``runs``."""
    keys = list(keys)
    if res.empty:
        return pd.DataFrame(columns=[*keys, "seeds", "runs"])
    out = []
    for values, group in res.groupby(keys, sort=False, dropna=False) if keys else [((), res)]:
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values), seeds=len(group), runs=",".join(map(str, group.run)))
        for m in METRICS:
            v = group[m].dropna().astype(float)
            row[f"{m}_mean"] = v.mean() if len(v) else np.nan
            row[f"{m}_std"] = v.std(ddof=1) if len(v) > 1 else (0.0 if len(v) else np.nan)
            row[f"{m}_n"] = len(v)
        out.append(row)
    return pd.DataFrame(out)


def export_table(cells: pd.DataFrame, fmt: str) -> bytes:
    """The cell table as CSV or Parquet bytes."""
    if fmt == "csv":
        return cells.to_csv(index=False).encode()
    import io

    buf = io.BytesIO()
    cells.to_parquet(buf, index=False)
    return buf.getvalue()


def without_seed(label: str) -> str:
    """A run's label less the seed its sweep cell's name ends with (``describe`` puts it last), for a seed group.

    >>> without_seed("#8 tiny · preset=balanced, gamma=50, seed=0"), without_seed("#3 map · seed=2")
    ('#8 tiny · preset=balanced, gamma=50', '#3 map')
    >>> without_seed("#4 my run")
    '#4 my run'
    """
    return re.sub(r"(?:, | · )seed=-?\d+$", "", label)


def seed_groups(configs: dict[int, dict]) -> dict[tuple, list[int]]:
    """Runs that differ only by seed (and name): ``{key: [run ids]}`` in first-seen order (Compare's grouping)."""
    groups: dict[tuple, list[int]] = {}
    for run_id, cfg in configs.items():
        key = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in cfg.items() if k not in ("seed", "name")))
        groups.setdefault(key, []).append(run_id)
    return groups


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
