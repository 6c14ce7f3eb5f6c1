"""SAW, Adsh and DARP: formulas against ports of the reference code, then short toy2d runs showing each acts.

The ports below follow USB (`semilearn/imb_algorithms/saw/utils.py`, `adsh/utils.py`, `darp/utils.py`) and
bbuing9/DARP `common.py` line by line, rewritten here as test oracles.
"""
import math

import numpy as np
import pytest
import torch

from sslviz.engine import registry
from sslviz.engine import techniques as T
from sslviz.engine.config import TrainConfig, from_preset
from sslviz.engine.trainer import PSEUDO_MEAN, train

CPU = torch.device("cpu")


# -- ports of the reference code (oracles) ------------------------------------------------
def usb_effective_weights(y_cnt):
    N = torch.sum(y_cnt) / len(y_cnt)
    beta = (N - 1) / N
    weights = (1.0 - beta) / (1.0 - torch.pow(beta, y_cnt))
    return weights / weights.sum() * len(y_cnt)


def usb_adsh_s(conf_all, pred_all, num_classes, tau_1, s):
    C = [torch.sort(conf_all[pred_all == y], descending=True)[0] for y in range(num_classes)]
    rho = 1.0
    for i in range(len(C[0])):
        if C[0][i] < tau_1:
            break
        rho = i / len(C[0])
    s = s.clone()
    for k in range(num_classes):
        if len(C[k]) != 0:
            s[k] = -torch.log(C[k][int(len(C[k]) * rho) - 1])
    return s


def darp_estimate_pseudo(q_y, saved_q, num_class, alpha):
    pseudo_labels, k_probs = torch.zeros(len(saved_q), num_class), torch.zeros(num_class)
    for i in range(1, num_class + 1):
        i = num_class - i
        num_i = int(alpha * q_y[i])
        sorted_probs, idx = saved_q[:, i].sort(dim=0, descending=True)
        pseudo_labels[idx[:num_i], i] = 1
        k_probs[i] = sorted_probs[:num_i].sum()
    return pseudo_labels, (q_y + 1e-6) / (k_probs + 1e-6)


def darp_opt_solver(probs, target_distb, num_iter=10, num_newton=30):
    from scipy import optimize

    def f(x, a, b, c, d):
        return np.sum(a * b * np.exp(-1 * x / c)) - d

    weights = 1 / (-1 * probs * torch.log(probs + 1e-6)).sum(1)
    N, K = probs.shape
    A, w, nu, r, c = probs.numpy(), weights.numpy(), np.ones(K), np.ones(N), target_distb.numpy()
    A_e = A / math.e
    Y_t = np.exp(-1 * nu.reshape(1, -1) / w.reshape(-1, 1))
    prev_Y = np.zeros(K)
    for _ in range(num_iter):
        X_t = r / np.sum(A_e * Y_t, 1)
        Y_t = np.zeros(K)
        for i in range(K):
            Y_t[i] = optimize.newton(f, prev_Y[i], maxiter=num_newton, args=(A_e[:, i], X_t, w, c[i]), tol=1.0e-01)
        prev_Y = Y_t
        Y_t = np.exp(-1 * Y_t.reshape(1, -1) / w.reshape(-1, 1))
    X_t = r / np.sum(A_e * Y_t, 1)
    return torch.Tensor(A_e * X_t.reshape(-1, 1) * Y_t)


def _long_tail_probs(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 5, generator=g) * 2 + torch.tensor([2.0, 1.0, 0.0, -1.0, -2.0])
    return torch.softmax(logits, 1)


# -- SAW -----------------------------------------------------------------------------------
def test_saw_weights_equal_usb():
    for counts in ([1500, 899, 539, 323, 193, 116, 69, 41, 25, 15], [50, 32, 21, 13, 9, 6, 4, 2, 1, 1], [7, 7]):
        c = torch.tensor(counts, dtype=torch.float64)
        torch.testing.assert_close(T.saw_effective_weights(c), usb_effective_weights(c))
    probs = _long_tail_probs()
    counts = torch.nn.functional.one_hot(probs.argmax(1), 5).sum(0)
    torch.testing.assert_close(T.predicted_class_counts(probs, 5), torch.maximum(counts, torch.ones_like(counts)).float())


def test_saw_reweights_both_losses_from_the_pass():
    cfg = TrainConfig(saw=True)
    pipe = registry.Pipeline(cfg, registry.Run(3, CPU, torch.tensor([60.0, 30.0, 10.0]), 6, 100))
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(pipe("sup_weights", torch.ones(3), y), usb_effective_weights(torch.tensor([60., 30, 10])))
    u = registry.Unlabeled(torch.arange(3), torch.zeros(3, 3), torch.full((3, 3), 1 / 3), pseudo=y)
    torch.testing.assert_close(pipe("unsup_weights", torch.ones(3), u), torch.ones(3))  # before the first pass
    probs_all = torch.eye(3)[[0, 0, 0, 0, 1, 2]]
    pipe("on_pass", None, probs_all)
    torch.testing.assert_close(pipe("unsup_weights", torch.ones(3), u), usb_effective_weights(torch.tensor([4., 1, 1])))
    assert pipe("metrics", {})["saw.pseudo_share"].tolist() == pytest.approx([4 / 6, 1 / 6, 1 / 6])


# -- Adsh ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adsh_thresholds_equal_usb(seed):
    probs = _long_tail_probs(400, seed) ** 3
    probs = probs / probs.sum(1, keepdim=True)
    conf, pred = probs.max(1)
    previous = torch.full((5,), 0.95)
    th, rho = T.adsh_thresholds(conf, pred, 5, 0.95, 0, previous)
    m = int(((pred == 0) & (conf >= 0.95)).sum())
    assert m >= 2 and rho == pytest.approx((m - 1) / int((pred == 0).sum()))
    s = usb_adsh_s(conf, pred, 5, 0.95, -torch.log(previous))
    torch.testing.assert_close(th, torch.exp(-s))
    assert th[0] >= 0.95 and th[1:].min() < 0.9  # rarer classes admit the head's fraction at lower confidence


def test_adsh_edge_cases_keep_or_clamp():
    previous = torch.tensor([0.9, 0.8, 0.7])
    conf, pred = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0, 1, 1])
    # no head-class confidence clears tau: thresholds stay (USB: rho = 1, everything admitted)
    th, rho = T.adsh_thresholds(conf, pred, 3, 0.95, 0, previous)
    torch.testing.assert_close(th, previous)
    # class 2 predicted by nobody keeps its threshold; class 1 at position 0 instead of USB's wrap to -1
    conf, pred = torch.tensor([0.99, 0.98, 0.5, 0.6, 0.7]), torch.tensor([0, 0, 0, 1, 1])
    th, rho = T.adsh_thresholds(conf, pred, 3, 0.95, 0, previous)  # m = 2, rho = 1/3: class 1 floor(2/3)-1 = -1
    torch.testing.assert_close(th, torch.tensor([0.99, 0.7, 0.7]))


def test_adsh_schedule_takes_thresholds_from_the_pass():
    cfg = TrainConfig(threshold_schedule="adsh")
    pipe = registry.Pipeline(cfg, registry.Run(2, CPU, torch.tensor([20.0, 5.0]), 6, 100))
    u = registry.Unlabeled(torch.arange(2), torch.zeros(2, 2), torch.full((2, 2), 0.5))
    torch.testing.assert_close(pipe("thresholds", torch.full((2,), 0.95), u, 0), torch.full((2,), 0.95))
    probs_all = torch.tensor([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    pipe("on_pass", None, probs_all)
    th = pipe("thresholds", torch.full((2,), 0.95), u, 1)
    # head: 3 of 4 above 0.95, rho = 2/4, position floor(4 * 0.5) - 1 = 1; class 1: floor(2 * 0.5) - 1 = 0
    torch.testing.assert_close(th, torch.tensor([0.98, 0.8]))
    assert pipe("metrics", {})["adsh.thresholds"].tolist() == th.tolist()


# -- DARP ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_darp_refinement_equals_the_reference(seed):
    probs = _long_tail_probs(300, seed)
    target = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08]) * 300
    marks, weights = T.darp_estimate(target, probs, 2.0)
    ref_marks, ref_weights = darp_estimate_pseudo(target, probs, 5, 2.0)
    torch.testing.assert_close(marks, ref_marks)
    torch.testing.assert_close(weights, ref_weights)
    rescaled = T.darp_rescale(probs, marks, weights)
    ref = probs * ref_marks * ref_weights.reshape(1, -1) + 1e-6
    torch.testing.assert_close(rescaled, ref / ref.sum(1, keepdim=True))
    refined, steps = T.darp_solve(rescaled, target, 10)
    torch.testing.assert_close(refined, darp_opt_solver(rescaled.clone(), target), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(refined.sum(1), torch.ones(300))
    assert (refined.sum(0) - target).abs().max() < 0.05 and steps >= 10
    # the refined pseudo-labels follow the target: rare classes gain, the head loses
    raw, new = torch.bincount(probs.argmax(1), minlength=5), torch.bincount(refined.argmax(1), minlength=5)
    assert new[0] < raw[0] and new[-1] > raw[-1]


def test_darp_warms_up_then_refines_every_few_steps_and_resumes():
    cfg = TrainConfig(darp=True, darp_warmup=0.2, darp_every=3)
    run = registry.Run(2, CPU, torch.tensor([30.0, 10.0]), 8, 10)
    pipe = registry.Pipeline(cfg, run)
    darp = pipe.techniques[-1]
    p0 = torch.linspace(0.95, 0.6, 8)
    probs = torch.stack([p0, 1 - p0], 1)
    idx = torch.arange(8)
    seen = []
    for _ in range(6):
        u = registry.Unlabeled(idx, torch.zeros(8, 2), probs.clone())
        seen.append(pipe("transform_probs", u.probs, u))
    torch.testing.assert_close(seen[0], probs)  # steps 0, 1: warm-up (0.2 * 10)
    torch.testing.assert_close(seen[1], probs)
    assert int(darp.state["refines"]) == 2  # steps 2 and 5
    torch.testing.assert_close(seen[2].sum(0), torch.tensor([6.0, 2.0]), atol=0.05, rtol=0)  # 8 * (3/4, 1/4)
    torch.testing.assert_close(seen[3], seen[2])  # between refinements: the saved refined rows
    state = pipe.state_dict()
    again = registry.Pipeline(cfg, run)
    again.load_state_dict(state)
    assert again.techniques[-1].t == 6
    m = pipe("metrics", {})
    assert m["darp.refined_share"].tolist() == [0.75, 0.25] and m["darp.raw_share"].tolist() == [1.0, 0.0]


# -- behaviour on short toy2d runs ------------------------------------------------------------
def _run(preset="fixmatch", seed=0, **knobs):
    records = []
    cfg = from_preset(preset, dataset="toy2d", steps=300, log_every=10, eval_every=100, device="cpu", seed=seed,
                      **knobs)
    return train(cfg, on_log=records.append), records


TOY_EPOCH = 10  # SAW's and Adsh's epoch on the 300-step toy runs (USB: 1,024): 29 re-estimates, from step 11


def _accepted(records) -> np.ndarray:
    return np.sum([[c["n_accepted"] for c in r["classes"]] for r in records if "classes" in r], axis=0)


@pytest.fixture(scope="module")
def plain():
    return _run()


def test_saw_raises_rare_class_recall(plain):
    # rare-2 validation recall (toy2d gamma 50, 300 steps, seed 0, epoch 10): fixmatch 0.66 -> SAW 0.765
    out, records = _run("fixmatch-saw", saw_epoch_steps=TOY_EPOCH)
    state = records[-1]["technique"]
    assert state["saw.unsup_weights"][-1] > 3 * state["saw.unsup_weights"][0]
    assert np.mean(out["val_recall"][-2:]) >= np.mean(plain[0]["val_recall"][-2:]) + 0.05


def test_adsh_lowers_rare_thresholds_and_admits_more_rare_pseudo_labels(plain):
    # last-log thresholds [0.953, 0.873, 0.814, 0.852, 0.825, 0.715] (epoch 10); rare-2 accepted pseudo-labels 5x plain's
    _, records = _run("fixmatch-adsh", adsh_epoch_steps=TOY_EPOCH)
    th = [c["threshold"] for c in records[-1]["classes"]]
    assert th == pytest.approx(records[-1]["technique"]["adsh.thresholds"]) and max(th[1:]) < th[0] - 0.05
    assert _accepted(records)[-2:].sum() > 1.2 * _accepted(plain[1])[-2:].sum()


def test_darp_refined_pseudo_labels_are_closer_to_the_target(plain):
    # Unlabeled data uniform, target the labeled long tail: the refined pseudo-labels move toward the target
    # (seed 0: L1 to the target 0.162 raw, 0.029 refined argmax, 0.005 for the mean distribution the mask saw).
    _, records = _run("fixmatch-darp", unlabeled_shape="uniform")
    state = records[-1]["technique"]
    target = np.array(state["darp.target_share"])
    raw_gap = np.abs(np.array(state["darp.raw_share"]) - target).sum()
    refined_gap = np.abs(np.array(state["darp.refined_share"]) - target).sum()
    assert state["darp.refines"] == 18 and state["darp.solver_iterations"] == 10  # (300 - 120) / 10 refinements
    assert refined_gap < 0.5 * raw_gap, (refined_gap, raw_gap)
    assert state["darp.marginal_error"] < 0.05
    # and the batches' pseudo-labels are read from the refined rows: the mean distribution the mask saw after the
    # warm-up is near the target, unlike the model's own predictions
    seen = np.mean([r["technique"][PSEUDO_MEAN] for r in records if r["step"] > 150], axis=0)
    assert np.abs(seen - target).sum() < 0.5 * raw_gap, (np.abs(seen - target).sum(), raw_gap)


@pytest.mark.parametrize("knobs, field", [(dict(saw=True), "saw_epoch_steps"),
                                          (dict(threshold_schedule="adsh"), "adsh_epoch_steps")])
def test_saw_and_adsh_re_estimate_on_their_references_epoch_clock(knobs, field):
    # USB re-estimates after each 1,024-iteration epoch (after_train_epoch), never at step 1; the unlabeled set's
    # size does not move the clock.
    assert TrainConfig().to_dict()[field] == 1024
    cfg = TrainConfig(**knobs, **{field: 4})
    pipe = registry.Pipeline(cfg, registry.Run(2, CPU, torch.tensor([20.0, 5.0]), 6, 100))
    calls = []
    for step in range(1, 14):
        pipe.on_pass(step, lambda: calls.append(step) or torch.tensor([[0.9, 0.1]] * 3 + [[0.2, 0.8]] * 3))
    assert calls == [5, 9, 13]  # after steps 4, 8 and 12
    technique = pipe.techniques[-1]
    assert [p.start for p in technique.phases(cfg)] == [1, 5] and technique.min_steps(cfg) == 8
