"""A trainer-shaped metrics record with random values, for benchmarks that fill a store through ``RunStore.log``."""
from __future__ import annotations

import numpy as np


def trainer_record(rng: np.random.Generator, step: int, k: int, eval_every: int, *, spike_class: int | None = None,
                   technique: bool = False) -> dict:
    """One log step of a ``k``-class run: scalars, per-class rows, pseudo confusion, and a validation evaluation
    every ``eval_every`` steps; ``spike_class`` gets 400 accepted pseudo-labels instead of 30 (a one-interval spike);
    ``technique`` adds two technique-state entries."""
    r = rng.random(6 + 4 * k)
    record = {
        "step": step, "wall": step * 0.05,
        "scalars": {"loss": r[0], "loss_sup": r[1], "loss_unsup": r[2], "mask_rate": r[3],
                    "pl_accuracy": r[4], "lr": 0.03 * r[5]},
        "classes": [{"threshold": 0.95, "conf_pl": r[6 + c], "conf_true": r[16 + c], "n_pl": 45,
                     "n_accepted": 400 if c == spike_class else 30, "n_true": 44, "n_correct": 28,
                     "precision": r[26 + c], "recall": r[36 + c]} for c in range(k)],
        "pseudo_confusion": rng.integers(0, 50, (k, k)).tolist(),
    }
    if technique:
        record["technique"] = {"da.p_model": (r[6:6 + k] / r[6:6 + k].sum()).tolist(), "freematch.tau_t": r[5]}
    if step % eval_every == 0:
        record["eval"] = {"val": {"accuracy": r[0], "balanced_accuracy": r[1], "recall": list(r[6:6 + k]),
                                  "confusion": rng.integers(0, 100, (k, k)).tolist()}}
    return record
