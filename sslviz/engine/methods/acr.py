"""ACR (Wei & Gan, CVPR 2023): a logit-adjusted balanced branch, and pseudo-label adjustment whose strength follows
an estimate of the unlabeled class distribution (consistent, uniform or reversed)."""
from __future__ import annotations


from ..lazy import F, nn, torch  # torch on first use: see sslviz/engine/lazy.py
from .. import techniques as fx
from ..fields import Field
from ..params import Bool, integer, real
from ..technique import Phase, Technique

GROUP = "Imbalanced-SSL methods"


class ACR(Technique):
    name, title = "acr", "ACR (adaptive consistency regularizer)"
    addresses, try_with = ("distribution_mismatch", "majority_drift"), {"acr": True}
    estimates_unlabeled = ("acr.unlabeled_estimate",)
    off = ("acr", False)
    epoch_field = "acr_epoch_steps"
    paper = ("Wei & Gan, Towards Realistic Long-Tailed Semi-Supervised Learning: Consistency Is All You Need, "
             "CVPR 2023")
    implemented = (
        "Main branch: pseudo-labels from `softmax(f_w - log(p_l^tau1))` (p_l the labeled prior), accepted where "
        "that or the raw confidence reaches `threshold`. Balanced branch, a linear head of its own: labeled CE on "
        "`g + log(p_l^tau2)`; consistency of its strong-view logits with the main head's `f_w - log(p_l^tau12)` "
        "pseudo-labels, accepted where those or its own weak-view confidence reach `threshold`. ACR counts epochs of "
        "`acr_epoch_steps` steps (Gank0078/ACR: eval_step 500). After `acr_est_epochs` epochs (reference: 5, so from "
        "step 3,001), the unlabeled distribution is estimated each step as an EMA (`acr_ema_u`) of the balanced "
        "head's accepted weak-view pseudo-label histogram; its symmetric KL to the consistent, uniform and reversed "
        "anchors is averaged over an epoch, and at each epoch start `tau1 = acr_tau1 * softmax(KL)[consistent]` "
        "(the first, from an epoch of zero sums, is 2/3 of the maximum, as in the reference). "
        "Predictions from the balanced head. Live: the estimate (against the hidden truth), tau1, the three KLs."
    )
    differs = (
        "One strong view (the paper averages two). The estimate's histogram counts every "
        "accepted pseudo-label: the reference's `now_mask[targets_u_b] += mask_b` keeps one write per class when "
        "classes repeat in a batch (PyTorch indexing does not accumulate), so it records which classes appeared, "
        "not how often. `lambda_u` weighs both branches' consistency losses (reference: 1). The acceptance OR is "
        "applied to the loop's mask in the observe phase, so the live mask rate counts it."
    )
    fields = (
        Field("acr", False, (Bool(),), "ACR: balanced logit-adjusted branch, predictions from it, and pseudo-label "
              "adjustment chosen from an estimate of the unlabeled distribution", GROUP, label="ACR"),
        Field("acr_tau1", 2.0, (real(0, 10),), "ACR: largest pseudo-label adjustment tau1 (reached for a reversed "
              "unlabeled set)", GROUP, step=0.1),
        Field("acr_tau12", 2.0, (real(0, 10),), "ACR: fixed adjustment of the pseudo-labels the balanced branch "
              "learns from", GROUP, step=0.1),
        Field("acr_tau2", 2.0, (real(0, 10),), "ACR: logit adjustment of the balanced branch's labeled loss", GROUP,
              step=0.1),
        Field("acr_ema_u", 0.9, (real(0, 1, "left"),), "ACR: EMA momentum of the unlabeled distribution estimate "
              "(per step)", GROUP, step=0.01),
        Field("acr_est_epochs", 5, (integer(0),), "ACR: epochs before the estimate of the unlabeled distribution "
              "starts (reference: 5)", GROUP),
        Field("acr_epoch_steps", 500, (integer(1, 1_000_000),), "ACR: steps in one of its epochs, the clock of its "
              "estimate and of tau1's updates (Gank0078/ACR: eval_step 500)", GROUP),
    )

    @classmethod
    def phases(cls, cfg):
        E, est = cfg.acr_epoch_steps, cfg.acr_est_epochs
        return (Phase(1, "warm-up: tau1 at its maximum, no estimate yet"),
                Phase((est + 1) * E + 1, "estimating the unlabeled distribution"),
                Phase((est + 2) * E + 1, "adapting tau1 every epoch from the estimate"))

    @classmethod
    def min_steps(cls, cfg):
        return (cfg.acr_est_epochs + 3) * cfg.acr_epoch_steps  # one whole epoch on an adapted tau1

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        K, dev = run.num_classes, run.device
        counts = run.labeled_counts.float()
        self.prior = counts / counts.sum()
        self.adj_l2 = fx.acr_adjustment(self.prior, cfg.acr_tau2)
        self.adj_l12 = fx.acr_adjustment(self.prior, cfg.acr_tau12)
        self.state = {"u_py": torch.full((K,), 1.0 / K, device=dev), "count_kl": torch.zeros(3, device=dev),
                      "tau1": torch.tensor(float(cfg.acr_tau1), device=dev), "kl_mean": torch.zeros(3, device=dev)}
        self.loss_sum, self.loss_n = torch.zeros((), device=dev), 0

    def head(self, feature_dim):
        return nn.Linear(feature_dim, self.run.num_classes)

    # -- main branch: adjusted pseudo-labels, accepted if adjusted or raw confidence clears the threshold ------
    def transform_probs(self, probs, u):
        return F.softmax(u.logits_w - fx.acr_adjustment(self.prior, self.state["tau1"]), dim=1)

    def observe(self, _, u):
        raw_conf = F.softmax(u.logits_w, dim=1).max(dim=1).values
        u.mask = torch.maximum(u.mask, (raw_conf >= self.cfg.threshold).float())

    # -- balanced branch, the estimate and the pass-wise tau1 ---------------------------------------------------
    def extra_loss(self, loss, b):
        head = b.model.heads[self.name]
        loss_b = F.cross_entropy(head(b.feats_l.float()) + self.adj_l2, b.y)
        if b.u is not None:
            thr = self.cfg.threshold
            with torch.no_grad():
                conf_h2, target_h2 = F.softmax(b.u.logits_w - self.adj_l12, dim=1).max(dim=1)
                conf_b, pseudo_b = F.softmax(head(b.u.feats_w.float()), dim=1).max(dim=1)
                mask_b = (conf_b >= thr).float()
                mask = torch.maximum(mask_b, (conf_h2 >= thr).float())
            ce = F.cross_entropy(head(b.feats_s.float()), target_h2, reduction="none")
            loss_b = loss_b + self.cfg.lambda_u * (ce * mask).mean()
            self._estimate(b.step, pseudo_b, mask_b)
        self.loss_sum += loss_b.detach()
        self.loss_n += 1
        return loss + loss_b

    def _estimate(self, step: int, pseudo_b, mask_b) -> None:
        s, P, est = self.state, self.cfg.acr_epoch_steps, self.cfg.acr_est_epochs
        if (step - 1) // P > est:  # the epoch this step belongs to (0-based) is past the start
            with torch.no_grad():
                hist = fx.accepted_histogram(pseudo_b, mask_b, self.run.num_classes)
                n = hist.sum()
                any_ = n > 0  # the reference skips steps with nothing accepted (torch.where: no host sync)
                s["u_py"] = torch.where(any_, fx.ema(s["u_py"], hist / n.clamp(min=1), self.cfg.acr_ema_u), s["u_py"])
                d = fx.acr_anchor_distances(s["u_py"], self.prior)
                s["count_kl"] = s["count_kl"] + torch.where(any_, d, torch.zeros_like(d))
        if step % P == 0:  # an epoch ends: the next one's tau1 from this one's mean distances
            if step // P > est:
                s["kl_mean"] = s["count_kl"] / P
                tau = fx.acr_tau(s["kl_mean"], self.cfg.acr_tau1)
                s["tau1"] = torch.where(torch.isnan(tau), s["tau1"], tau)
            s["count_kl"] = torch.zeros_like(s["count_kl"])

    def eval_logits(self, logits, feats, model):
        return model.heads[self.name](feats.float())

    def metrics(self, out):
        s = self.state
        out = {**out, "acr.unlabeled_estimate": s["u_py"], "acr.tau1": s["tau1"],
               "acr.kl_consistent": s["kl_mean"][0], "acr.kl_uniform": s["kl_mean"][1],
               "acr.kl_reversed": s["kl_mean"][2]}
        if self.loss_n:
            out["acr.loss_balanced"] = self.loss_sum / self.loss_n
            self.loss_sum, self.loss_n = torch.zeros_like(self.loss_sum), 0
        return out
