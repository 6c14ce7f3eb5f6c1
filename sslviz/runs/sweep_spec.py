"""A sweep's definition: the grid and seeds (:class:`SweepSpec`), early stopping (:class:`EarlyStop`), the parsers of
the CLI's ``--grid`` / ``--seeds`` and Setup's fields, and how cells are named and grouped.

Pure: no store, no data. ``sweep.py`` checks and executes a spec; ``sweep_results.py`` reads what its runs did.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import ClassVar


from .ray_asha import TUNE_METRIC
from ..engine.config import FIELDS, PRESETS, TrainConfig, parse_yaml, preset_values
from ..engine.params import InvalidParameterError, NoneOK, Options, check_params, integer, real


EXECUTORS = ("local", "ray")


EARLY_STOP = ("asha",)  # the early-stopping schedulers of a tuning sweep (Ray Tune's)


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
        if name in grid:
            raise SweepError(f"The grid axis {name!r} is given twice; list all its values in one --grid "
                             f"{name}=V1,V2,...", field=name)
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
        grid, seeds, base = d.get("grid") or {}, d.get("seeds", [0]), d.get("base") or {}
        if not isinstance(grid, dict):
            raise SweepError(f"The sweep's grid is a mapping of field: [values] (e.g. gamma: [10, 50]); got "
                             f"{grid!r}.", field="grid")
        if not isinstance(base, dict):
            raise SweepError(f"The sweep's base is a mapping of field: value shared by every cell; got {base!r}.",
                             field="base")
        seeds = seeds if isinstance(seeds, (list, tuple)) else [seeds]
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise SweepError(f"The sweep's seeds are whole numbers >= 0 (e.g. [0, 1, 2]); got {d.get('seeds')!r}.",
                             field="seed")
        return cls(grid={str(k): list(v if isinstance(v, (list, tuple)) else [v]) for k, v in grid.items()},
                   seeds=tuple(seeds), base=dict(base), name=str(d.get("name") or ""))

    @classmethod
    def from_yaml(cls, text: str, source: str = "The sweep file") -> "SweepSpec":
        """A sweep file: ``grid: {preset: [fixmatch, balanced], gamma: [10, 50]}``, ``seeds: [0, 1, 2]``,
        ``base: {steps: 300}``, optional ``name``; errors name ``source`` (a key given twice included)."""
        return cls.from_dict(parse_yaml(text, source=source))


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
    sslviz.runs.sweep_spec.SweepError: Seeds must be whole numbers separated by commas, e.g. 0,1,2; got 'a,b'.
    """
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise SweepError(f"Seeds must be whole numbers separated by commas, e.g. 0,1,2; got {text!r}.",
                         field="seed") from None


def describe(cell: dict) -> str:
    """'preset=balanced, gamma=10, seed=1'."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items())


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


# -- reading ------------------------------------------------------------------------------------------
def varied(spec: dict) -> list[str]:
    """The knobs a sweep varies, in axis order (seed left out)."""
    return list((spec.get("grid") or {}).keys())


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
