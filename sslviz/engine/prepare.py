"""What a run trains on, worked out without torch: its dataset, its split, the facts the dashboard labels it with.

The dashboard's server validates a config at Start and previews its split with these (numpy only), so a bad
split fails at once and no model-related import lands in the server; the worker that trains builds the model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .data import Dataset, default_counts, load_dataset
from .lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from .splits import Split, counts_frame, make_split, split_counts


@dataclass(frozen=True)
class Prepared:
    """A dataset with its imbalanced split, as a run sees it."""

    dataset: Dataset
    split: Split
    n1: int
    m1: int
    gamma_u: float


def prepare(cfg: TrainConfig, cache_dir: str | os.PathLike | None = None, *, dataset: Dataset | None = None) -> Prepared:
    """Load the dataset (unless given, e.g. from a UI cache) and build the split.

    Raises DatasetError / SplitError with user-facing text.
    """
    dataset = dataset if dataset is not None else load_dataset(cfg.dataset, cache_dir)
    n1_default, m1_default = default_counts(dataset)
    n1 = cfg.n1 if cfg.n1 is not None else n1_default
    m1 = cfg.m1 if cfg.m1 is not None else m1_default
    gamma_u = cfg.gamma_u if cfg.gamma_u is not None else cfg.gamma
    split = make_split(
        dataset.y_train, dataset.num_classes, n1=n1, gamma=cfg.gamma, m1=m1, gamma_u=gamma_u,
        shape=cfg.unlabeled_shape, seed=cfg.seed, class_names=dataset.class_names,
    )
    return Prepared(dataset, split, n1, m1, gamma_u)


def preview_counts(cfg: TrainConfig, cache_dir: str | os.PathLike | None = None, *,
                   dataset: Dataset | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Class names and the examples per class of ``cfg``'s split in each set (``splits.split_counts``: labeled,
    unlabeled, validation, test), before any training; numpy only."""
    p = prepare(cfg, cache_dir, dataset=dataset)
    return list(p.dataset.class_names), split_counts(p.split, p.dataset.y_test, p.dataset.y_val)


def preview_split(cfg: TrainConfig, cache_dir: str | os.PathLike | None = None, *,
                  dataset: Dataset | None = None) -> pd.DataFrame:
    """``preview_counts`` in long format (``class, class_name, set, count``: ``splits.counts_frame``)."""
    names, counts = preview_counts(cfg, cache_dir, dataset=dataset)
    return counts_frame(counts, names)


def run_info(p: Prepared, model_name: str | None = None, device: str | None = None) -> dict:
    """What the dashboard needs to label a run's charts. ``model`` and ``device`` are filled in by the process
    that builds the model (the server that records a run at Start imports no torch)."""
    ds = p.dataset
    counts = split_counts(p.split, ds.y_test, ds.y_val)
    return {
        "class_names": list(ds.class_names),
        "labeled_counts": counts["labeled"].tolist(),
        "unlabeled_counts": counts["unlabeled"].tolist(),
        "val_counts": counts["validation"].tolist(),
        "test_counts": counts["test"].tolist(),
        "kind": ds.kind,
        "model": model_name,
        "device": device,
        "n1": p.n1,
        "m1": p.m1,
        "gamma_u": p.gamma_u,
        "skipped_files": list(ds.skipped),
    }
