"""ABC and ACR (methods with heads of their own): formulas and state against ports of the reference code, then
behaviour on short toy2d runs.

References (read, ported here only as test oracles): LeeHyuck/ABC `ABCcode0920/ABCfix.py`, USB
`semilearn/imb_algorithms/abc/abc.py` (`compute_abc_loss`), Gank0078/ACR `train.py` and its USB port in
machengcheng2016/CPE-LTSSL `semilearn/imb_algorithms/acr/acr.py` (`train`, `train_step`).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslviz.engine import registry
from sslviz.engine import techniques as T
from sslviz.engine.config import TrainConfig, from_preset
from sslviz.engine.models import Classifier, build_model
from sslviz.engine.prepare import prepare
from sslviz.engine.trainer import evaluate, load_checkpoint, train


def _model(d, K, cfg, run):
    model = Classifier(nn.Identity(), nn.Linear(d, K))
    pipe = registry.Pipeline(cfg, run)
    pipe.attach_heads(model)
    return model, pipe


# -- ABC -------------------------------------------------------------------------------------------------------
def test_abc_keep_probability_equals_references():
    counts = np.array([1500, 899, 539, 323, 193, 116, 69, 41, 24, 15])  # CIFAR-10-LT gamma 100
    ir2 = counts[-1] / counts  # ABCfix: N_K / N_c; USB: min / N_c (the same on a long-tailed profile)
    for epoch in (0, 125, 250, 499):
        ir22 = 1 - (epoch / 500) * (1 - ir2)  # ABCfix's unlabeled keep probability at an epoch of 500
        ours = T.abc_keep_probability(torch.tensor(counts, dtype=torch.float32), epoch / 500)
        assert np.allclose(ours.numpy(), ir22, atol=1e-6)
    assert np.allclose(T.abc_keep_probability(torch.tensor(counts, dtype=torch.float32), 1.0).numpy(), ir2)


def _usb_abc_loss(logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, lb_class_dist, progress, cutoff, draws_l,
                  draws_u):
    """USB ABC.compute_abc_loss, ported; torch.bernoulli(p) replaced by (u < p) with the given uniforms."""
    mask_lb = (draws_l < lb_class_dist[y_lb]).float()
    abc_lb_loss = (F.cross_entropy(logits_x_lb, y_lb, reduction="none") * mask_lb).mean()
    with torch.no_grad():
        probs = torch.softmax(logits_x_ulb_w, dim=1)
        max_probs, y_ulb = torch.max(probs, dim=1)
        mask_ulb_1 = max_probs.ge(cutoff).to(logits_x_ulb_w.dtype)
        ulb_class_dist = 1 - progress * (1 - lb_class_dist)
        mask_ulb_2 = (draws_u < ulb_class_dist[y_ulb]).float()
        mask_ulb = mask_ulb_1 * mask_ulb_2
    abc_ulb_loss = (F.cross_entropy(logits_x_ulb_s, y_ulb, reduction="none") * mask_ulb).mean()
    return abc_lb_loss + abc_ulb_loss


def test_abc_loss_equals_usb():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([100.0, 45, 20, 9, 4, 2])
    lb_dist = counts.min() / counts
    worst = 0.0
    for i in range(100):
        progress = i / 100
        y = torch.randint(6, (16,), generator=g)
        lw, ls, ll = (torch.randn(48, 6, generator=g) * 4, torch.randn(48, 6, generator=g),
                      torch.randn(16, 6, generator=g))
        dl, du = torch.rand(16, generator=g), torch.rand(48, generator=g)
        l, u, _ = T.abc_loss(ll, y, lw, ls, T.abc_keep_probability(counts, 1.0),
                             T.abc_keep_probability(counts, progress), 0.95, dl, du)
        worst = max(worst, abs(float(l + u - _usb_abc_loss(ll, y, lw, ls, lb_dist, progress, 0.95, dl, du))))
    assert worst < 1e-6


def test_abc_technique_adds_its_head_loss_and_predicts_with_its_head():
    K, d, B, uB, step = 4, 8, 12, 36, 37
    cfg = TrainConfig(abc=True, abc_weight=0.5, seed=3)
    run = registry.Run(K, torch.device("cpu"), torch.tensor([40.0, 20, 10, 5]), 100, 100)
    model, pipe = _model(d, K, cfg, run)
    head = model.heads["abc"]
    g = torch.Generator().manual_seed(1)
    fl, fw, fs = torch.randn(B, d, generator=g), torch.randn(uB, d, generator=g) * 5, torch.randn(uB, d, generator=g)
    y = torch.randint(K, (B,), generator=g)
    u = registry.Unlabeled(torch.arange(uB), model.fc(fw).detach(), F.softmax(model.fc(fw), 1).detach(), fw)
    b = registry.Batch(y, model.fc(fl), fl, u, model.fc(fs), fs, model=model, step=step)
    out = pipe("extra_loss", torch.tensor(1.0), b)
    # the same draws as the technique: a generator seeded by (seed, step), labeled draws first
    gen = torch.Generator().manual_seed(3 * 1_000_003 + step)
    dl, du = torch.rand(B, generator=gen), torch.rand(uB, generator=gen)
    ref = _usb_abc_loss(head(fl), y, head(fw), head(fs), torch.tensor([5.0, 5, 5, 5]) / torch.tensor([40.0, 20, 10, 5]),
                        step / 100, 0.95, dl, du)
    assert float(out.detach()) == pytest.approx(1.0 + 0.5 * float(ref.detach()), abs=1e-6)
    out.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert torch.equal(pipe("eval_logits", model.fc(fl), fl, model), head(fl))
    metrics = pipe("metrics", {})
    assert len(metrics["abc.recall_balanced"]) == K and len(metrics["abc.unlabeled_share_main"]) == K
    assert [t.name for t in registry.Pipeline(TrainConfig(), run).techniques] == ["fixmatch"]  # off by default


# -- ACR -------------------------------------------------------------------------------------------------------
class _ACRReference:
    """CPE-LTSSL's USB port of ACR (train / train_step), one strong view, ported as an oracle.

    ``literal=False`` counts the accepted pseudo-labels with index_put_(accumulate=True); the reference line
    ``now_mask[targets_u_b] += mask_b`` keeps one write per class (checked in the test below).
    """

    def __init__(self, py_con, tau1, tau12, tau2, est_epoch, ema_u, steps_per_epoch, thr, literal=False):
        self.py_con, self.py_uni, self.py_rev = py_con, torch.ones_like(py_con) / len(py_con), py_con.flip(0)
        self.adj_l1, self.adj_l12 = torch.log(py_con**tau1 + 1e-12), torch.log(py_con**tau12 + 1e-12)
        self.adj_l2 = torch.log(py_con**tau2 + 1e-12)
        self.taumin, self.taumax, self.tau = 0, tau1, tau1
        self.est_epoch, self.ema_u, self.P, self.thr, self.literal = est_epoch, ema_u, steps_per_epoch, thr, literal
        self.u_py = torch.ones_like(py_con) / len(py_con)
        self.kl = nn.KLDivLoss(reduction="sum")
        self.count_KL = torch.zeros(3)

    def start_epoch(self, epoch):
        self.epoch = epoch
        if epoch > self.est_epoch:
            self.count_KL = self.count_KL / self.P
            ksm = torch.exp(self.count_KL[0]) / torch.exp(self.count_KL).sum()
            self.tau = self.taumin + (self.taumax - self.taumin) * ksm
            if not torch.isnan(self.tau):
                self.adj_l1 = torch.log(self.py_con**self.tau + 1e-12)
        self.count_KL = torch.zeros(3)

    def step(self, logits_x_b, y, logits_u_w, logits_u_s, logits_u_w_b, logits_u_s_b):
        Lx_b = F.cross_entropy(logits_x_b + self.adj_l2, y)
        max_p, targets_u = torch.softmax(logits_u_w - self.adj_l1, -1).max(-1)
        max_h2, targets_h2 = torch.softmax(logits_u_w - self.adj_l12, -1).max(-1)
        max_b, targets_b = torch.softmax(logits_u_w_b, -1).max(-1)
        max_t, _ = torch.softmax(logits_u_w, -1).max(-1)
        mask, mask_h2, mask_b, mask_t = (x.ge(self.thr) for x in (max_p, max_h2, max_b, max_t))
        mask_ss_b_h2, mask_ss_t = (mask_b + mask_h2).float(), (mask + mask_t).float()
        if self.epoch > self.est_epoch:
            now = torch.zeros(len(self.py_con))
            if self.literal:
                now[targets_b] += mask_b.float()
            else:
                now.index_put_((targets_b,), mask_b.float(), accumulate=True)
            if now.sum() > 0:
                now = now / now.sum()
                self.u_py = self.ema_u * self.u_py + (1 - self.ema_u) * now
                for i, anchor in enumerate((self.py_con, self.py_uni, self.py_rev)):
                    self.count_KL[i] += 0.5 * self.kl(anchor.log(), self.u_py) + 0.5 * self.kl(self.u_py.log(), anchor)
        Lu = (F.cross_entropy(logits_u_s, targets_u, reduction="none") * mask_ss_t).mean()
        Lu_b = (F.cross_entropy(logits_u_s_b, targets_h2, reduction="none") * mask_ss_b_h2).mean()
        return targets_u, mask_ss_t, Lu, Lx_b + Lu_b


def test_acr_equals_reference_step_by_step():
    K, d, B, uB, P, est = 5, 6, 16, 64, 4, 2
    counts = torch.tensor([50.0, 25, 12, 6, 3])
    cfg = TrainConfig(acr=True, acr_tau1=2.0, acr_tau12=1.5, acr_tau2=1.0, acr_est_epochs=est, acr_ema_u=0.8,
                      acr_epoch_steps=P, threshold=0.7)
    run = registry.Run(K, torch.device("cpu"), counts, 3 * P * uB, 40)  # the unlabeled set's size moves no clock
    model, pipe = _model(d, K, cfg, run)
    acr, head = pipe.techniques[-1], model.heads["acr"]
    ref = _ACRReference(counts / counts.sum(), 2.0, 1.5, 1.0, est, 0.8, P, 0.7)
    g = torch.Generator().manual_seed(0)
    taus = []
    for step in range(1, 41):
        if (step - 1) % P == 0:  # an epoch starts: the reference chooses tau1 for it, sslviz did at the last step
            ref.start_epoch((step - 1) // P)
            if (step - 1) // P > est:
                assert float(acr.state["tau1"]) == pytest.approx(float(ref.tau), abs=1e-6)
        fl, fs = torch.randn(B, d, generator=g), torch.randn(uB, d, generator=g)
        fw = torch.randn(uB, d, generator=g) * 4 + torch.tensor([3.0, 0, 0, 0, 0, 0]) * (step % 3)  # drifting
        y = torch.randint(K, (B,), generator=g)
        with torch.no_grad():
            lw = model.fc(fw)
        # sslviz's phases, as the trainer calls them
        u = registry.Unlabeled(torch.arange(uB), lw, F.softmax(lw, 1), fw)
        u.probs = pipe("transform_probs", u.probs, u)
        u.pseudo, u.conf, u.mask = T.confidence_mask(u.probs, pipe("thresholds", torch.full((K,), 0.7), u, step - 1))
        pipe("observe", None, u)
        ls = model.fc(fs)
        lu = (F.cross_entropy(pipe("unsup_logits", ls, u), u.pseudo, reduction="none") * u.mask).mean()
        extra = pipe("extra_loss", torch.zeros(()), registry.Batch(y, model.fc(fl), fl, u, ls, fs, model, step))
        # the reference on the same outputs
        t_ref, m_ref, lu_ref, extra_ref = ref.step(head(fl), y, lw, ls, head(fw).detach(), head(fs))
        assert torch.equal(u.pseudo, t_ref) and torch.equal(u.mask, m_ref)
        assert float(lu.detach()) == pytest.approx(float(lu_ref.detach()), abs=1e-6)
        assert float(extra.detach()) == pytest.approx(float(extra_ref.detach()), abs=1e-6)
        torch.testing.assert_close(acr.state["u_py"], ref.u_py, atol=1e-6, rtol=1e-5)
        taus.append(float(acr.state["tau1"]))  # after the step: the tau1 the next step uses
    # tau1 stays tau_max until the first choice, then changes (the first uses the zero sums of epoch `est`: 2/3)
    assert taus[: P * (est + 1) - 1] == [2.0] * (P * (est + 1) - 1)
    assert taus[P * (est + 1) - 1] == pytest.approx(2.0 / 3, abs=1e-6)
    assert len(set(np.round(taus, 6))) > 3
    metrics = pipe("metrics", {})
    assert {"acr.unlabeled_estimate", "acr.tau1", "acr.kl_reversed", "acr.loss_balanced"} <= set(metrics)


def test_acr_runs_on_its_references_clock_by_default():
    # Gank0078/ACR: eval_step 500, est_epoch 5: the estimate from iteration 3,000 (0-based), tau1 re-chosen at the
    # start of every later epoch; the phases the Live page marks and the budget it declares follow.
    cfg = TrainConfig(acr=True)
    assert (cfg.acr_epoch_steps, cfg.acr_est_epochs) == (500, 5)
    assert [(p.start, p.label.split(":")[0]) for p in next(t for t in registry.TECHNIQUES if t.name == "acr").phases(cfg)] == [
        (1, "warm-up"), (3001, "estimating the unlabeled distribution"),
        (3501, "adapting tau1 every epoch from the estimate")]
    assert registry.budget_warnings(cfg.replace(steps=3999)) and not registry.budget_warnings(cfg.replace(steps=4000))


def test_acr_reference_histogram_line_records_presence_not_counts():
    # Why sslviz counts with scatter_add: in the reference line, repeated classes overwrite each other.
    now, targets, mask = torch.zeros(3), torch.tensor([0, 0, 0, 1]), torch.tensor([1.0, 1.0, 1.0, 1.0])
    now[targets] += mask
    assert now.tolist() == [1.0, 1.0, 0.0]
    assert T.accepted_histogram(targets, mask, 3).tolist() == [3.0, 1.0, 0.0]


def test_acr_tau_and_anchor_distances():
    prior = torch.tensor([0.6, 0.3, 0.1])
    d = T.acr_anchor_distances(prior.flip(0), prior)  # a reversed estimate: far from consistent, 0 from reversed
    assert float(d[2]) == pytest.approx(0.0, abs=1e-7) and float(d[0]) > float(d[1]) > 0
    # the further from consistent, the stronger the adjustment: reversed > uniform > consistent
    tau = [float(T.acr_tau(T.acr_anchor_distances(e, prior), 2.0)) for e in (prior.flip(0), torch.ones(3) / 3, prior)]
    assert tau[0] > tau[1] > tau[2] and tau[0] == pytest.approx(1.0432, abs=1e-4)  # 2 e^0.896 / (e^0.896 + e^0.221 + 1)
    steep = torch.tensor([0.9, 0.09, 0.01])
    assert float(T.acr_tau(T.acr_anchor_distances(steep.flip(0), steep), 2.0)) > 1.85  # near tau_max


# -- behaviour on short toy2d runs -----------------------------------------------------------------------------
def _run(preset, tmp_path, **knobs):
    records, ckpt = [], tmp_path / f"{preset}-{len(list(tmp_path.iterdir()))}.pt"
    cfg = from_preset(preset, dataset="toy2d", steps=300, log_every=10, eval_every=100, checkpoint_every=300,
                      device="cpu", **knobs)
    return cfg, train(cfg, on_log=records.append, checkpoint_path=ckpt), records, ckpt


def test_abc_balanced_head_has_higher_tail_recall_than_the_main_head(tmp_path):
    # Validation recall of the two rarest classes (toy2d gamma 50, 300 steps, seed 0), both heads of the same EMA
    # model: balanced minus main +0.08 (consistent unlabeled), +0.37 (reversed); the test asks for half the mean.
    gains = []
    for shape in ("consistent", "reversed"):
        cfg, summary, records, ckpt = _run("fixmatch-abc", tmp_path, unlabeled_shape=shape)
        p = prepare(cfg)
        model = build_model("mlp", input_shape=p.dataset.input_shape, num_classes=6)
        pipe = registry.Pipeline(cfg, registry.Run(6, torch.device("cpu"), torch.ones(6), 1, cfg.steps))
        pipe.attach_heads(model)
        model.load_state_dict(load_checkpoint(ckpt)["ema"])
        x, y = torch.as_tensor(p.dataset.x_val), p.dataset.y_val
        main = evaluate(model, x, y, 6, "points")["recall"]
        balanced = evaluate(model, x, y, 6, "points", pipe)["recall"]
        assert balanced == pytest.approx(summary["val_recall"])  # the run's predictions are the balanced head's
        gains.append(np.mean(balanced[-2:]) - np.mean(main[-2:]))
        assert set(records[-1]["technique"]) >= {"abc.recall_main", "abc.recall_balanced", "abc.keep_unlabeled"}
    assert min(gains) > 0 and np.mean(gains) > 0.11, gains


def test_acr_estimate_follows_a_reversed_unlabeled_profile(tmp_path):
    # Share of the estimate on the three labeled-rarest classes (toy2d, taus 1: at the paper's 2 the toy's small
    # logit margins let the adjusted pseudo-labels collapse onto the rarest class within 300 steps):
    # consistent 0.04, reversed 0.56 (seed 0).
    # ACR's epoch shortened to 10 steps (reference: 500), so that its estimate runs from step 61 of the 300.
    taus = dict(acr_tau1=1.0, acr_tau2=1.0, acr_tau12=1.0, acr_epoch_steps=10)
    tail = {}
    for shape in ("consistent", "reversed"):
        _, _, records, _ = _run("fixmatch-acr", tmp_path, unlabeled_shape=shape, **taus)
        est = np.mean([r["technique"]["acr.unlabeled_estimate"] for r in records[-5:]], axis=0)
        assert est.sum() == pytest.approx(1.0, abs=1e-4)
        tail[shape] = est[3:].sum()
    assert tail["reversed"] > tail["consistent"] + 0.2, tail
