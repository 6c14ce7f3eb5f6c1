"""What a run's augmentations do to its data, shown before it trains (the Data page): the views a technique gives
each class, computed with the trainer's own augmentations and technique pipeline."""
from __future__ import annotations

import numpy as np

from . import augment, registry, text
from .config import TrainConfig
from .lazy import torch  # torch on first use: see sslviz/engine/lazy.py
from .prepare import Prepared


def preview_text_views(cfg: TrainConfig, p: Prepared, per_class: int = 3, seed: int = 0) -> list[dict]:
    """A few labeled sentences of the head class and of the rarest class with a weak and a strong view each, the
    strong view at the strength the run's techniques give that class (``strong_strength``, e.g. rare classes
    augmented harder); for the Data page.

    Returns
    -------
    list of dict
        Rows with ``class``, ``class_name``, ``strength``, ``sentence`` (the token ids decoded: what the model
        sees), ``weak`` and ``strong``; ``per_class`` rows per class.
    """
    ds, split = p.dataset, p.split
    K = ds.num_classes
    cpu = torch.device("cpu")
    tech = registry.Pipeline(cfg, registry.Run(K, cpu, torch.as_tensor(split.labeled_counts, dtype=torch.float32),
                                               len(split.unlabeled_idx), cfg.steps))
    classes = torch.tensor([0, K - 1])
    strengths = tech("strong_strength", torch.full((2,), cfg.aug_strength), classes)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    rows, words = [], lambda ids: text.decode(ids, ds.vocab)
    for k, strength in zip(classes.tolist(), strengths.tolist()):
        idx = split.labeled_idx[ds.y_train[split.labeled_idx] == k]
        ids = torch.as_tensor(ds.x_train[rng.choice(idx, min(per_class, len(idx)), replace=False)])
        weak = augment.weak_text(ids, generator=gen)
        strong = augment.strong_text(ids, torch.full((len(ids),), strength), torch.as_tensor(ds.synonyms),
                                     generator=gen)
        rows += [{"class": k, "class_name": ds.class_names[k], "strength": strength, "sentence": words(i),
                  "weak": words(w), "strong": words(s_)} for i, w, s_ in zip(ids, weak, strong)]
    return rows
