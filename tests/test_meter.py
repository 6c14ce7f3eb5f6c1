"""IntervalMeter against a batch worked out by hand."""
import pytest
import torch

from sslviz.engine.meter import IntervalMeter


def test_flush_counts_confidences_precision_recall_and_resets():
    m = IntervalMeter(3, "cpu")
    pseudo = torch.tensor([0, 0, 1, 2])
    conf = torch.tensor([0.9, 0.5, 0.8, 0.99])
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    true = torch.tensor([0, 1, 1, 0])
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.3, 0.2], [0.2, 0.8, 0.0], [0.0, 0.01, 0.99]])
    m.update(torch.tensor([1.0, 0.5, 0.5, 0.75]), pseudo, conf, mask, true, probs)
    m.update(torch.tensor([3.0, 1.5, 1.5, 0.25]))  # a step without unlabeled data
    rec = m.flush(torch.tensor([0.95, 0.8, 0.7]))
    assert rec["scalars"] == pytest.approx({"loss": 2.0, "loss_sup": 1.0, "loss_unsup": 1.0, "mask_rate": 0.5,
                                            "pl_accuracy": 2 / 3})
    c0, c1, c2 = rec["classes"]
    # class 0: two pseudo-labels (conf 0.9, 0.5), one accepted and correct; truth has two class-0 samples
    assert (c0["n_pl"], c0["n_accepted"], c0["n_correct"], c0["n_true"]) == (2, 1, 1, 2)
    assert c0["conf_pl"] == pytest.approx(0.7) and c0["conf_true"] == pytest.approx((0.9 + 0.99) / 2)
    assert c0["precision"] == 1.0 and c0["recall"] == 0.5 and c0["threshold"] == pytest.approx(0.95)
    # class 2: one accepted pseudo-label, wrong (truth 0); no true class-2 samples -> recall undefined
    assert (c2["n_accepted"], c2["n_correct"], c2["precision"], c2["recall"]) == (1, 0, 0.0, None)
    assert c1["recall"] == 0.5
    # accepted only, rows = truth: (0->0), (1->1), (0->2)
    assert rec["pseudo_confusion"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert rec["pseudo_mean"] == pytest.approx([0.4, 0.3025, 0.2975])  # column means of probs
    empty = m.flush(torch.zeros(3))
    assert sum(c["n_pl"] for c in empty["classes"]) == 0 and empty["scalars"]["loss"] == 0.0
    assert empty["pseudo_mean"] is None
