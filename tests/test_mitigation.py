"""The mitigations work on real data: on imbalanced digits, `balanced` beats plain `fixmatch`.

Same seeds, same budget, labeled gamma = 50 (class 9 keeps a single labeled image). Averaged
over two seeds and read on the validation split (the preset was chosen on validation, see
bench/RESULTS.md); the margins are about half of the gaps measured when writing the test,
so the test is stable but still fails if a mitigation stops working.
"""
import numpy as np
import pytest

from sslviz.engine.config import from_preset
from sslviz.engine.trainer import train

SEEDS = (0, 1)
BUDGET = dict(gamma=50, steps=300, eval_every=300, log_every=50)


def _scores(preset: str) -> tuple[float, float]:
    bal, rare = [], []
    for seed in SEEDS:
        result = train(from_preset(preset, seed=seed, **BUDGET))
        bal.append(result["val_balanced_accuracy"])
        rare.append(np.mean(result["val_recall"][-3:]))  # classes 7, 8, 9 are the rarest
    return float(np.mean(bal)), float(np.mean(rare))


@pytest.fixture(scope="module")
def scores():
    return {preset: _scores(preset) for preset in ("fixmatch", "balanced")}


# Measured once the labeled views stopped carrying their label (issue 18: before, the rare classes' labeled views
# were augmented harder, and part of balanced's gain, 0.722 -> 0.792 and 0.261 -> 0.522, came from that leak), with
# the preset re-chosen on validation (effective_beta 0.95 -> 0.999): seeds 0-1, fixmatch 0.723 and 0.272 ->
# balanced 0.745 and 0.344 (with beta 0.95: 0.738 and 0.311). The margins are half the two-seed gaps.
def test_balanced_beats_fixmatch_on_balanced_accuracy(scores):
    assert scores["balanced"][0] >= scores["fixmatch"][0] + 0.011, scores


def test_balanced_beats_fixmatch_on_rarest_three_recall(scores):
    assert scores["balanced"][1] >= scores["fixmatch"][1] + 0.036, scores
