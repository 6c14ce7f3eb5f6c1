"""The metrics record, defined once: what ``trainer.train`` hands ``on_log`` and how the store lays it out.

The trainer emits one dict per log step (every key but ``step`` and ``wall`` may be absent)::

    {"step": int, "wall": float,
     "scalars": {"loss", "loss_sup", "loss_unsup", "mask_rate", "pl_accuracy", "lr"},   # floats or None
     "classes": [{threshold, conf_pl, conf_true, n_pl, n_accepted, n_true, n_correct, precision, recall}, ...],
     "pseudo_confusion": K x K,                          # rows = hidden true class, columns = pseudo-label
     "eval": {"val": {"accuracy", "balanced_accuracy", "recall": [K], "confusion": K x K}, "test": {...}},
     "technique": {"da.p_model": [K floats], "freematch.tau_t": 0.7, ...},
     "snapshot": {...}}

A flat ``"eval": {"accuracy", ...}`` (the format before the validation split) means the test set.

Each table row is one frozen dataclass below; its fields, in order, are the table's columns and
their annotations the SQL types (``int`` INTEGER, ``float`` REAL, ``str`` TEXT; ``| None`` nullable).
The store derives CREATE TABLE, INSERT and reader column lists from them, so a new column is one
new field here. `to_rows` turns a record into rows; it is pure, so the contract is testable
without SQLite.
"""
from __future__ import annotations

import functools
import json
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

SPLITS = ("val", "test")  # evaluation sets: validation every eval_every steps, test at the end / on demand
SPLIT_LABELS = {"val": "validation", "test": "test"}
NO_VAL_MESSAGE = "no validation data (run recorded before the validation split)"  # what views say for old runs
CONFUSION_KINDS = (*SPLITS, "pseudo")
SCALAR_CLS = -1  # `Technique.cls` of an entry that is one number rather than a per-class vector
SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
# How a reader merges the rows of one step bin (`RunStore` readers with ``max_points``): counts are summed,
# rates, losses and confidences averaged; every measured column also gets ``<col>_min`` / ``<col>_max`` so a
# chart can draw the bin's spread and a one-interval spike stays visible. ``wall`` is the bin's last.
SUM, MEAN = "sum", "mean"


# -- row kinds ----------------------------------------------------------------
@dataclass(frozen=True)
class Scalars:
    """Run-level training numbers of one log step (means over the logging window)."""
    TABLE: ClassVar[str] = "scalars"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "step")
    run_id: int
    step: int
    wall: float
    loss: float | None
    loss_sup: float | None
    loss_unsup: float | None
    mask_rate: float | None
    pl_accuracy: float | None
    lr: float | None


@dataclass(frozen=True)
class ClassTrain:
    """Per-class pseudo-label statistics of one logging window (``sslviz.meter.IntervalMeter.flush``)."""
    TABLE: ClassVar[str] = "class_train"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "step", "cls")
    BIN: ClassVar[dict[str, str]] = {"n_pl": SUM, "n_accepted": SUM, "n_true": SUM, "n_correct": SUM}  # else MEAN
    run_id: int
    step: int
    cls: int
    threshold: float | None
    conf_pl: float | None
    conf_true: float | None
    n_pl: int | None
    n_accepted: int | None
    n_true: int | None
    n_correct: int | None
    precision: float | None
    recall: float | None


@dataclass(frozen=True)
class Eval:
    """Accuracy and balanced accuracy of one evaluation of the validation or test set."""
    TABLE: ClassVar[str] = "evals"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "step", "split")
    run_id: int
    step: int
    split: str
    wall: float
    accuracy: float | None
    balanced_accuracy: float | None


@dataclass(frozen=True)
class ClassEval:
    """Recall of one class in one evaluation."""
    TABLE: ClassVar[str] = "class_eval"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "step", "split", "cls")
    run_id: int
    step: int
    split: str
    cls: int
    recall: float | None


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix as JSON, rows = true class; ``kind`` is a split or 'pseudo'."""
    TABLE: ClassVar[str] = "confusion"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "step", "kind")
    run_id: int
    step: int
    kind: str
    matrix: str


@dataclass(frozen=True)
class Technique:
    """One number of a technique's live state; vectors give one row per class, scalars ``cls = SCALAR_CLS``."""
    TABLE: ClassVar[str] = "technique"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "step", "name", "cls")
    run_id: int
    step: int
    name: str
    cls: int
    value: float | None


@dataclass(frozen=True)
class Snapshot:
    """A toy2d decision-region snapshot as JSON (Teaching page)."""
    TABLE: ClassVar[str] = "snapshots"
    KEY: ClassVar[tuple[str, ...]] = ("run_id", "step")
    run_id: int
    step: int
    payload: str


@dataclass(frozen=True)
class Event:
    """A line of a run's history (queued, started, resumed, failed ...); rows are numbered in arrival order."""
    TABLE: ClassVar[str] = "events"
    KEY: ClassVar[tuple[str, ...]] = ()  # an AUTOINCREMENT ``id`` keeps the order
    INDEXES: ClassVar[dict[str, tuple[str, ...]]] = {"events_run": ("run_id",)}
    run_id: int
    wall: float
    kind: str
    message: str


ROWS = (Scalars, ClassTrain, Eval, ClassEval, Confusion, Technique, Snapshot, Event)
METRIC_ROWS = tuple(r for r in ROWS if "step" in {f.name for f in fields(r)})  # cut back on resume


# -- SQL derived from the declarations --------------------------------------------
def columns(row: type) -> tuple[str, ...]:
    """Column names of a row kind, in declaration order."""
    return tuple(f.name for f in fields(row))


def value_columns(row: type) -> tuple[str, ...]:
    """The columns a reader returns: all but ``run_id`` (readers ask for one run)."""
    return tuple(c for c in columns(row) if c != "run_id")


def measure_columns(row: type) -> tuple[str, ...]:
    """The measured values of a row kind: neither key nor clock (``loss`` ... for `Scalars`)."""
    return tuple(c for c in columns(row) if c not in (*row.KEY, "run_id", "wall"))


@functools.cache  # the declarations are fixed; every series read asks
def float_columns(row: type) -> tuple[str, ...]:
    """The columns declared ``float`` (REAL). Readers give them a float dtype, NaN for NULL: SQLite hands a column
    with nothing but NULLs (no pseudo-label accepted in a window, hence no precision) to pandas as objects (None),
    which cannot be rounded or averaged.

    >>> float_columns(Eval)
    ('wall', 'accuracy', 'balanced_accuracy')
    """
    hints = typing.get_type_hints(row)
    return tuple(c for c in columns(row) if _sql_type(hints[c]).startswith(SQL_TYPES[float]))


def _sql_type(annotation) -> str:
    """'REAL' for float, 'INTEGER NOT NULL' for int ... from a field's annotation."""
    args = typing.get_args(annotation)
    nullable = isinstance(annotation, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if nullable else annotation
    return SQL_TYPES[base] + ("" if nullable else " NOT NULL")


def create_sql(row: type) -> list[str]:
    """CREATE TABLE (and index) statements of a row kind."""
    hints = typing.get_type_hints(row)
    cols = [f"{c} {_sql_type(hints[c])}" for c in columns(row)]
    if row.KEY:
        cols.append(f"PRIMARY KEY ({', '.join(row.KEY)})")
    else:
        cols.insert(0, "id INTEGER PRIMARY KEY AUTOINCREMENT")
    return [f"CREATE TABLE {row.TABLE} (\n    " + ",\n    ".join(cols) + "\n)",
            *(f"CREATE INDEX {name} ON {row.TABLE} ({', '.join(on)})" for name, on in getattr(row, "INDEXES", {}).items())]


def bin_aggregator(row: type, column: str) -> str:
    """How ``column`` of ``row`` merges in a step bin: `SUM` for counts, `MEAN` otherwise (see ``BIN``).

    >>> bin_aggregator(ClassTrain, "n_accepted"), bin_aggregator(ClassTrain, "conf_pl")
    ('sum', 'mean')
    """
    return getattr(row, "BIN", {}).get(column, MEAN)


def insert_sql(row: type) -> str:
    """``INSERT OR REPLACE`` with named parameters, so rows are bound by column name."""
    cols = columns(row)
    return f"INSERT OR REPLACE INTO {row.TABLE} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"


# -- a trainer record as rows ----------------------------------------------------------
def eval_splits(evaluation: dict) -> dict[str, dict]:
    """``{split: metrics}`` of a record's ``eval``; the flat pre-validation format is the test set.

    >>> sorted(eval_splits({"accuracy": 0.5, "balanced_accuracy": 0.4, "recall": [], "confusion": []}))
    ['test']
    """
    if "accuracy" in evaluation:
        return {"test": evaluation}
    unknown = set(evaluation) - set(SPLITS)
    if unknown:
        raise ValueError(f"Unknown evaluation split(s) {sorted(unknown)}; the record's 'eval' takes {list(SPLITS)}.")
    return dict(evaluation)


def _number(v) -> float | None:
    """A finite float, or None (SQLite has no NaN: it would come back as NULL anyway)."""
    return float(v) if v is not None and math.isfinite(float(v)) else None


def technique_rows(run_id: int, step: int, state: dict) -> list[dict]:
    """Rows of a record's ``technique`` dict: one per class of a vector, one with cls = -1 for a number.

    >>> [(r["name"], r["cls"], r["value"]) for r in technique_rows(1, 5, {"a.t": 0.5, "b.p": [0.25, 0.75]})]
    [('a.t', -1, 0.5), ('b.p', 0, 0.25), ('b.p', 1, 0.75)]
    """
    rows = []
    for name, value in state.items():
        values = np.asarray(value, dtype=float)
        pairs = [(SCALAR_CLS, values.item())] if values.ndim == 0 else list(enumerate(values.ravel().tolist()))
        rows += [dict(run_id=run_id, step=step, name=str(name), cls=c, value=_number(v)) for c, v in pairs]
    return rows


def _matrix(m) -> str:
    return json.dumps(np.asarray(m).tolist())


def to_rows(run_id: int, record: dict) -> dict[type, list[dict]]:
    """The rows one trainer record adds, keyed by row kind (kinds the record lacks are left out)."""
    step, wall = int(record["step"]), float(record["wall"])
    at = dict(run_id=run_id, step=step)
    out: dict[type, list[dict]] = {}
    if "scalars" in record:
        s = record["scalars"]
        out[Scalars] = [{**at, "wall": wall, **{c: s.get(c) for c in measure_columns(Scalars)}}]
    if "classes" in record:
        out[ClassTrain] = [{**at, "cls": c, **{k: row[k] for k in measure_columns(ClassTrain)}}
                           for c, row in enumerate(record["classes"])]
    for split, e in eval_splits(record.get("eval") or {}).items():
        out.setdefault(Eval, []).append({**at, "split": split, "wall": wall, "accuracy": e["accuracy"],
                                         "balanced_accuracy": e["balanced_accuracy"]})
        out.setdefault(ClassEval, []).extend({**at, "split": split, "cls": c, "recall": _number(r)}
                                             for c, r in enumerate(e["recall"]))
        out.setdefault(Confusion, []).append({**at, "kind": split, "matrix": _matrix(e["confusion"])})
    if "pseudo_confusion" in record:
        out.setdefault(Confusion, []).append({**at, "kind": "pseudo", "matrix": _matrix(record["pseudo_confusion"])})
    if record.get("technique"):
        out[Technique] = technique_rows(run_id, step, record["technique"])
    if "snapshot" in record:
        out[Snapshot] = [{**at, "payload": json.dumps(record["snapshot"])}]
    return out
