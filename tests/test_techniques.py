"""Each technique against numbers worked out by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from sslviz.engine import techniques as T


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


def test_fixed_threshold_and_mask():
    probs = torch.tensor([[0.96, 0.04], [0.6, 0.4], [0.02, 0.98]])
    pseudo, conf, mask = T.confidence_mask(probs, T.fixed_thresholds(0.95, 2))
    assert pseudo.tolist() == [0, 0, 1]
    assert mask.tolist() == [1.0, 0.0, 1.0]
    assert close(conf, [0.96, 0.6, 0.98])


def test_class_specific_mask_uses_threshold_of_predicted_class():
    probs = torch.tensor([[0.7, 0.3], [0.3, 0.7]])
    _, _, mask = T.confidence_mask(probs, torch.tensor([0.95, 0.6]))
    assert mask.tolist() == [0.0, 1.0]


def test_frequency_scaled_thresholds():
    # tau * (n_c / n_max) ** 0.5 = 0.9 * [1, 0.5, 0.1] = [0.9, 0.45, 0.09] -> floor 0.3 lifts the last one
    out = T.frequency_scaled_thresholds(torch.full((3,), 0.9), torch.tensor([100, 25, 1]), 0.5, 0.3)
    assert close(out, [0.9, 0.45, 0.3])
    # alpha = 0 leaves thresholds alone; the floor never raises a threshold above tau_c
    assert close(T.frequency_scaled_thresholds(torch.tensor([0.2, 0.9]), torch.tensor([9, 1]), 0.0, 0.5), [0.2, 0.9])


def test_flexmatch_thresholds_with_and_without_warmup():
    predicted = torch.tensor([0, 0, 0, 1, -1, -1, -1, -1])
    # sigma = [3, 1]; without warm-up beta = [1, 1/3] -> tau_c = beta / (2 - beta) * 0.9 = [0.9, 0.18]
    assert close(T.flexmatch_thresholds(0.9, predicted, 2, warmup=False), [0.9, 0.18])
    # with warm-up the 4 unused samples dominate: beta = [3/4, 1/4] -> [0.75/1.25, 0.25/1.75] * 0.9
    assert close(T.flexmatch_thresholds(0.9, predicted, 2, warmup=True), [0.54, 0.9 / 7])
    # nothing predicted yet: every threshold is 0 in the plain variant (FlexMatch's cold start)
    assert close(T.flexmatch_thresholds(0.9, torch.full((4,), -1), 2, warmup=False), [0.0, 0.0])


def test_freematch_update_and_thresholds():
    g, c, h = torch.tensor(0.5), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
    g, c, h = T.freematch_update(g, c, h, probs, momentum=0.5)
    # global: 0.5*0.5 + 0.5*mean(0.9, 0.7) = 0.65; class: 0.5*[.5,.5] + 0.5*[0.8, 0.2] = [0.65, 0.35]
    # histogram of argmax: both class 0 -> [1, 0]; 0.5*[.5,.5] + 0.5*[1, 0] = [0.75, 0.25]
    assert close(g, 0.65) and close(c, [0.65, 0.35]) and close(h, [0.75, 0.25])
    # tau_c = 0.65 * [0.65, 0.35] / 0.65 = [0.65, 0.35]
    assert close(T.freematch_thresholds(g, c), [0.65, 0.35])


def test_warmup_thresholds_linear_from_one():
    tau = torch.tensor([0.5, 0.9])
    assert close(T.warmup_thresholds(tau, 0, 10), [1.0, 1.0])
    assert close(T.warmup_thresholds(tau, 5, 10), [0.75, 0.95])
    assert close(T.warmup_thresholds(tau, 10, 10), tau)
    assert close(T.warmup_thresholds(tau, 3, 0), tau)


@pytest.mark.parametrize(
    "scheme, expected",
    [
        ("none", [1.0, 1.0]),
        # 1/n = [0.25, 1] -> mean-1 normalisation: * 2 / 1.25
        ("inverse", [0.4, 1.6]),
    ],
)
def test_class_weights(scheme, expected):
    assert close(T.class_weights(torch.tensor([4.0, 1.0]), scheme), expected)


def test_effective_number_weights():
    beta = 0.9
    # (1 - beta) / (1 - beta ** n): n=10 -> 0.1/0.6513216 = 0.153534; n=1 -> 1.0; normalised to mean 1
    raw = [0.1 / (1 - 0.9**10), 1.0]
    s = sum(raw)
    assert close(T.class_weights(torch.tensor([10.0, 1.0]), "effective", beta), [2 * raw[0] / s, 2 * raw[1] / s])
    with pytest.raises(ValueError, match="Unknown class weighting 'x'"):
        T.class_weights(torch.tensor([1.0]), "x")


def test_logit_adjustment_is_balanced_softmax():
    prior = T.log_prior(torch.tensor([3.0, 1.0]))
    assert close(prior, [math.log(0.75), math.log(0.25)])
    adjusted = T.logit_adjust(torch.tensor([[1.0, 2.0]]), prior, 1.0)
    assert close(adjusted, [[1 + math.log(0.75), 2 + math.log(0.25)]])
    assert close(T.logit_adjust(torch.tensor([[1.0, 2.0]]), prior, 0.0), [[1.0, 2.0]])


def test_unsup_class_scale():
    # (n_max / n_c) ** 1 = [1, 4] -> mean-1: [0.4, 1.6]
    assert close(T.unsup_class_scale(torch.tensor([4.0, 1.0]), 1.0), [0.4, 1.6])
    assert close(T.unsup_class_scale(torch.tensor([4.0, 1.0]), 0.0), [1.0, 1.0])


def test_distribution_alignment():
    probs = torch.tensor([[0.6, 0.4]])
    # p * target / p_model = [0.6 * 0.5 / 0.75, 0.4 * 0.5 / 0.25] = [0.4, 0.8] -> normalised [1/3, 2/3]
    out = T.distribution_alignment(probs, torch.tensor([0.5, 0.5]), torch.tensor([0.75, 0.25]))
    assert close(out, [[1 / 3, 2 / 3]])
    assert close(out.sum(1), [1.0])


def test_ema():
    assert close(T.ema(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.999), [0.999, 0.001])


def test_debiased_probs():
    # logits [0, 0] - 1 * log [0.8, 0.2] -> softmax gives [0.2, 0.8]
    assert close(T.debiased_probs(torch.zeros(1, 2), torch.tensor([0.8, 0.2]), 1.0), [[0.2, 0.8]])
    assert close(T.debiased_probs(torch.tensor([[2.0, 0.0]]), torch.tensor([0.8, 0.2]), 0.0),
                 torch.softmax(torch.tensor([[2.0, 0.0]]), 1))


def test_schedules():
    assert T.cosine_lr(0, 100, 0.03) == pytest.approx(0.03)
    assert T.cosine_lr(50, 100, 0.03) == pytest.approx(0.03 * math.cos(7 * math.pi / 32))
    assert T.ema_model_decay(0, 0.999) == pytest.approx(0.1)
    assert T.ema_model_decay(10**6, 0.999) == pytest.approx(0.999)


# -- against ports of the reference implementations ---------------------------------------------------------------
def _usb_entropy_loss(mask, logits_s, prob_model, label_hist):
    """USB `algorithms/freematch/freematch.py` `entropy_loss` (boolean indexing, 1/x with inf -> 0), ported."""
    logits_s = logits_s[mask.bool()]
    prob_s = logits_s.softmax(dim=-1)
    hist_s = torch.bincount(prob_s.argmax(-1), minlength=logits_s.shape[1]).float()
    hist_s = hist_s / hist_s.sum()

    def inv(x):
        out = 1 / x
        out[out == float("inf")] = 0.0
        return out

    mod_model = prob_model.reshape(1, -1) * inv(label_hist.reshape(1, -1))
    mod_model = mod_model / mod_model.sum(dim=-1, keepdim=True)
    mod_mean = prob_s.mean(dim=0, keepdim=True) * inv(hist_s)
    mod_mean = mod_mean / mod_mean.sum(dim=-1, keepdim=True)
    return (mod_model * torch.log(mod_mean + 1e-12)).sum(dim=1).mean()


def test_freematch_fairness_loss_equals_usb():
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for i in range(200):
        logits = torch.randn(24, 5, generator=g) * 3
        mask = (torch.rand(24, generator=g) > 0.5).float()
        mask[i % 24] = 1.0  # USB skips the loss when nothing is accepted (tested below)
        p_t = torch.rand(5, generator=g)
        hist = torch.rand(5, generator=g)
        if i % 3 == 0:
            hist[0] = 0.0  # a class never predicted: USB's inf -> 0 rule
        ours = T.freematch_fairness_loss(logits, mask, p_t / p_t.sum(), hist / hist.sum())
        worst = max(worst, abs(float(ours - _usb_entropy_loss(mask, logits, p_t / p_t.sum(), hist / hist.sum()))))
    assert worst < 1e-5
    assert float(T.freematch_fairness_loss(torch.randn(4, 3), torch.zeros(4), torch.ones(3) / 3, torch.ones(3) / 3)) == 0


def test_freematch_state_update_equals_usb_hook():
    # USB FreeMatchThresholingHook.update: time_p, p_model and label_hist EMAs from the batch's probabilities.
    g = torch.Generator().manual_seed(1)
    K, m = 4, 0.9
    ours = (torch.tensor(1 / K), torch.full((K,), 1 / K), torch.full((K,), 1 / K))
    time_p, p_model, label_hist = ours
    for _ in range(50):
        probs = F.softmax(torch.randn(16, K, generator=g) * 2, 1)
        ours = T.freematch_update(*ours, probs, m)
        max_probs, max_idx = probs.max(dim=-1)
        time_p = time_p * m + (1 - m) * max_probs.mean()
        p_model = p_model * m + (1 - m) * probs.mean(dim=0)
        hist = torch.bincount(max_idx, minlength=K).float()
        label_hist = label_hist * m + (1 - m) * (hist / hist.sum())
    assert close(ours[0], time_p) and close(ours[1], p_model) and close(ours[2], label_hist)


def test_distribution_alignment_window_equals_remixmatch_running_mean():
    # ReMixMatch keeps the mean prediction of the last 128 batches; sslviz's window of W batches gives the mean of
    # the batches seen so far until full, then exactly the last W.
    from collections import deque

    g = torch.Generator().manual_seed(2)
    W, K = 8, 3
    window, recent = torch.zeros(W, K), deque(maxlen=W)
    for seen in range(30):
        batch_mean = F.softmax(torch.randn(10, K, generator=g), 1).mean(0)
        T.window_push(window, seen, batch_mean)
        recent.append(batch_mean)
        assert close(T.window_mean(window, seen + 1), torch.stack(list(recent)).mean(0))


def test_debiaspl_step_equals_reference_order():
    # main_DebiasPL.py: pseudo-label from softmax(f_w - tau log qhat) with the qhat of the previous step; mask;
    # then qhat <- m qhat + (1-m) mean softmax(f_w); then the consistency loss on f_s + tau log(updated qhat).
    from sslviz.engine import registry
    from sslviz.engine.config import TrainConfig

    g = torch.Generator().manual_seed(3)
    K, tau, m, thr = 4, 0.7, 0.8, 0.6
    cfg = TrainConfig(debias_tau=tau, debias_momentum=m, threshold=thr)
    run = registry.Run(K, torch.device("cpu"), torch.tensor([40.0, 20, 10, 5]), 100, 10)
    pipe = registry.Pipeline(cfg, run)
    assert [t.name for t in pipe.techniques] == ["fixmatch", "debias"]
    qhat = torch.full((K,), 1 / K)
    for _ in range(5):
        logits_w = torch.randn(32, K, generator=g) * 2 + torch.tensor([1.5, 0.5, 0.0, -0.5])
        logits_s = torch.randn(32, K, generator=g)
        # the reference
        pseudo_ref = F.softmax(logits_w - tau * torch.log(qhat), 1)
        conf_ref, label_ref = pseudo_ref.max(1)
        mask_ref = conf_ref.ge(thr).float()
        qhat = m * qhat + (1 - m) * F.softmax(logits_w, 1).mean(0)
        loss_ref = (F.cross_entropy(logits_s + tau * torch.log(qhat), label_ref, reduction="none") * mask_ref).mean()
        # sslviz's phases, as the trainer calls them
        u = registry.Unlabeled(torch.arange(32), logits_w, F.softmax(logits_w, 1))
        u.probs = pipe("transform_probs", u.probs, u)
        u.pseudo, u.conf, u.mask = T.confidence_mask(u.probs, pipe("thresholds", torch.full((K,), thr), u, 0))
        pipe("observe", None, u)
        loss = (F.cross_entropy(pipe("unsup_logits", logits_s, u), u.pseudo, reduction="none") * u.mask).mean()
        assert torch.equal(u.pseudo, label_ref) and torch.equal(u.mask, mask_ref)
        assert close(pipe.techniques[1].state["p_hat"], qhat) and close(loss, loss_ref)
