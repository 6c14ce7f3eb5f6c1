"""Real training steps on tiny data: the records add up and the model learns."""
import numpy as np
import pytest
import torch

from sslviz.engine.config import PRESETS, from_preset
from sslviz.engine.prepare import preview_split
from sslviz.engine.trainer import load_checkpoint, train

TINY = dict(batch_size=16, mu=2, log_every=5, eval_every=10)


@pytest.fixture(scope="module")
def digits_run():
    records = []
    summary = train(from_preset("fixmatch", steps=60, **TINY), on_log=records.append)
    return summary, records


def test_records_every_log_interval_and_counts_add_up(digits_run):
    summary, records = digits_run
    assert [r["step"] for r in records] == list(range(5, 61, 5))
    walls = [r["wall"] for r in records]
    assert walls == sorted(walls)
    for r in records:
        classes = r["classes"]
        # every unlabeled sample of the interval got one pseudo-label and has one true class
        assert sum(c["n_pl"] for c in classes) == 5 * 2 * 16
        assert sum(c["n_true"] for c in classes) == 5 * 2 * 16
        assert all(c["n_correct"] <= c["n_accepted"] <= c["n_pl"] for c in classes)
        pc = np.array(r["pseudo_confusion"])
        assert pc.sum() == sum(c["n_accepted"] for c in classes)
        # rows = hidden truth, columns = pseudo-label: column sums are accepted counts, diagonal is correct
        assert pc.sum(0).tolist() == [c["n_accepted"] for c in classes]
        assert np.diag(pc).tolist() == [c["n_correct"] for c in classes]
        assert 0.0 <= r["scalars"]["mask_rate"] <= 1.0
        assert all(c["threshold"] == pytest.approx(0.95) for c in classes)


def test_evaluation_records_and_learning(digits_run):
    summary, records = digits_run
    assert [r["step"] for r in records if "eval" in r] == [5, 10, 20, 30, 40, 50, 60]  # first log step too
    evals = [r["eval"] for r in records if "eval" in r]
    # Validation at every evaluation, the test set only at the end: nothing is chosen on test along the way.
    assert [sorted(e) for e in evals] == [["val"]] * 6 + [["test", "val"]]
    for e, n in [(e["val"], 300) for e in evals] + [(evals[-1]["test"], 500)]:
        cm = np.array(e["confusion"])
        assert cm.shape == (10, 10) and cm.sum() == n and (cm.sum(1) == n // 10).all()  # balanced: 30 / 50 a class
        assert e["accuracy"] == pytest.approx(np.trace(cm) / n)
        assert e["balanced_accuracy"] == pytest.approx(np.mean(e["recall"]))
    # chance is 0.1; a few dozen steps on the head classes already beat it clearly
    assert summary["val_accuracy"] > 0.3 and summary["test_accuracy"] > 0.3
    assert summary["test_accuracy"] == pytest.approx(evals[-1]["test"]["accuracy"])


def test_same_seed_same_run_different_seed_differs():
    cfg = from_preset("fixmatch", steps=10, **TINY)
    a, b, c = [], [], []
    train(cfg, on_log=a.append)
    train(cfg, on_log=b.append)
    train(cfg.replace(seed=1), on_log=c.append)
    assert [r["scalars"]["loss"] for r in a] == [r["scalars"]["loss"] for r in b]
    assert [r["scalars"]["loss"] for r in a] != [r["scalars"]["loss"] for r in c]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_trains_and_the_same_seed_repeats_it_exactly(preset):
    # Default batches (B 64, mu 7 on digits' ~290 unlabeled images) draw samples twice in a batch: a technique
    # that stores per-sample state must not let PyTorch pick which copy's value wins (DARP and FlexMatch did, so
    # two runs of one seed differed from step 20 on).
    cfg = from_preset(preset, steps=30, log_every=10, eval_every=30)
    runs = [[], []]
    for records in runs:
        summary = train(cfg, on_log=records.append)
        assert summary["status"] == "finished" and records[-1]["step"] == 30
    first, second = ([(r["scalars"]["loss"], r.get("eval", {}).get("val", {}).get("confusion")) for r in rs]
                     for rs in runs)
    assert first == second
    assert all(np.isfinite(r["scalars"]["loss"]) for r in records)


def test_class_specific_thresholds_are_recorded():
    records = []
    train(from_preset("balanced", steps=5, **TINY), on_log=records.append)
    thr = [c["threshold"] for c in records[-1]["classes"]]
    assert thr[0] == pytest.approx(0.95)
    assert thr[-1] == pytest.approx(0.8)  # floored: 0.95 * (1/60) ** 0.5 is below threshold_min
    assert all(a >= b for a, b in zip(thr, thr[1:]))  # rarer class, lower threshold


def test_toy2d_snapshot_and_stop_with_checkpoint(tmp_path):
    records = []
    ckpt = tmp_path / "run.pt"
    summary = train(from_preset("fixmatch", dataset="toy2d", steps=100, **TINY), on_log=records.append,
                    should_stop=lambda: len(records) >= 3, checkpoint_path=ckpt)  # polled before step 20's record
    assert summary["status"] == "stopped" and summary["step"] == 20
    assert records[-1]["step"] == 20 and sorted(records[-1]["eval"]) == ["test", "val"]  # a stop reports test too
    snap = next(r["snapshot"] for r in records if "snapshot" in r)
    assert len(snap["regions"]) == snap["grid"] and len(snap["regions"][0]) == snap["grid"]
    assert {len(p) for p in snap["points"]} == {6}
    state = load_checkpoint(ckpt)
    assert state["step"] == 20 and "model" in state and "generator" in state


def test_resume_reproduces_the_unbroken_run(tmp_path):
    cfg = from_preset("flexmatch", dataset="toy2d", steps=20, checkpoint_every=10, **TINY)
    full, first, second = [], [], []
    train(cfg, on_log=full.append)
    ckpt = tmp_path / "run.pt"
    train(cfg, on_log=first.append, checkpoint_path=ckpt, should_stop=lambda: len(first) == 2)
    train(cfg, on_log=second.append, checkpoint_path=ckpt, resume=True)
    resumed = first + second
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    assert [r["scalars"]["loss"] for r in resumed] == pytest.approx([r["scalars"]["loss"] for r in full], rel=1e-4)


def test_preview_split_counts():
    df = preview_split(from_preset("fixmatch", gamma=10, n1=50, m1=40))
    labeled = df[df.set == "labeled"].sort_values("class")["count"].tolist()
    assert labeled[0] == 50 and labeled[-1] == 5
    assert df[df.set == "test"]["count"].tolist() == [50] * 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_matches_cpu_within_noise():
    cfg = from_preset("fixmatch", steps=300, eval_every=300)
    cpu = train(cfg.replace(device="cpu"))
    gpu = train(cfg.replace(device="cuda"))
    for split in ("val", "test"):  # the summary's final evaluation, per split
        assert abs(cpu[f"{split}_balanced_accuracy"] - gpu[f"{split}_balanced_accuracy"]) < 0.1
