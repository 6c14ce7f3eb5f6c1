"""ABC (Lee et al., NeurIPS 2021): an auxiliary class-balanced classifier on the shared features.

Named ``abc_head`` so that the module never shadows the standard library's ``abc``.
"""
from __future__ import annotations


from ..lazy import F, nn, torch  # torch on first use: see sslviz/engine/lazy.py
from .. import techniques as fx
from ..fields import Field
from ..params import Bool, real
from ..technique import Technique

GROUP = "Imbalanced-SSL methods"


class ABC(Technique):
    name, title = "abc", "ABC (auxiliary balanced classifier)"
    addresses, try_with = ("majority_drift", "tail_starvation"), {"abc": True}
    off = ("abc", False)
    paper = "Lee et al., ABC: Auxiliary Balanced Classifier for Class-imbalanced Semi-supervised Learning, NeurIPS 2021"
    implemented = (
        "A linear head of its own on the backbone's features, trained beside FixMatch's: labeled CE masked by "
        "Bernoulli(n_min / n_c); on unlabeled data the head's own confident weak-view pseudo-labels (>= `threshold`) "
        "as targets for its strong-view logits, masked by Bernoulli(1 - (t/T)(1 - n_min / n_c)) of the pseudo-label's "
        "class; loss `abc_weight * (L_l + L_u)` (USB's abc_loss_ratio); predictions from the balanced head. Live: "
        "per-class recall of both heads on the interval's labeled batches, each head's predicted class shares on "
        "the unlabeled weak views, the unlabeled keep probability."
    )
    differs = (
        "One strong view (ABCfix uses two; USB one); hard pseudo-labels as USB (ABCfix uses the weak-view softmax as a "
        "soft target; equal once it is above 0.95 up to its entropy); the anneal t/T runs by step, not by epoch; "
        "the run's `threshold` is the head's (references: 0.95); Bernoulli draws from a generator seeded by seed "
        "and step, so a resumed run draws the same masks. The live recall is on the labeled training batches "
        "(the technique does not see validation labels); validation recall is the balanced head's."
    )
    fields = (
        Field("abc", False, (Bool(),), "ABC: train an auxiliary class-balanced head and predict with it", GROUP,
              label="ABC: auxiliary balanced classifier"),
        Field("abc_weight", 1.0, (real(0, 100),), "ABC: weight of the balanced head's losses (USB abc_loss_ratio)",
              GROUP),
    )

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        K, dev = run.num_classes, run.device
        self.keep_l = fx.abc_keep_probability(run.labeled_counts, 1.0)
        self.gen = torch.Generator(device=dev)
        self._reset(K, dev)
        self.last_recall = {"main": torch.zeros(K, device=dev), "balanced": torch.zeros(K, device=dev)}
        self.keep_u = torch.ones(K, device=dev)

    def _reset(self, K, dev):
        z = lambda: torch.zeros(K, device=dev)  # noqa: E731
        self.acc = {"n_l": z(), "hit_main": z(), "hit_balanced": z(), "pred_main": z(), "pred_balanced": z(),
                    "loss": torch.zeros((), device=dev), "mask": torch.zeros((), device=dev), "steps": 0, "u_steps": 0}

    def head(self, feature_dim):
        return nn.Linear(feature_dim, self.run.num_classes)

    def extra_loss(self, loss, b):
        head = b.model.heads[self.name]
        K, dev = self.run.num_classes, self.run.device
        self.gen.manual_seed(self.cfg.seed * 1_000_003 + b.step)
        logits_l = head(b.feats_l.float())
        draws_l = torch.rand(len(b.y), generator=self.gen, device=dev)
        acc = self.acc
        with torch.no_grad():
            ones = torch.ones_like(b.y, dtype=torch.float)
            acc["n_l"].scatter_add_(0, b.y, ones)
            acc["hit_main"].scatter_add_(0, b.y, (b.logits_l.argmax(1) == b.y).float())
            acc["hit_balanced"].scatter_add_(0, b.y, (logits_l.argmax(1) == b.y).float())
        if b.u is None:  # no unlabeled data: the labeled half only
            loss_l = (F.cross_entropy(logits_l, b.y, reduction="none") * (draws_l < self.keep_l[b.y]).float()).mean()
            total = loss_l
        else:
            self.keep_u = fx.abc_keep_probability(self.run.labeled_counts, b.step / self.run.steps)
            with torch.no_grad():
                logits_w = head(b.u.feats_w.float())
            logits_s = head(b.feats_s.float())
            draws_u = torch.rand(len(logits_w), generator=self.gen, device=dev)
            loss_l, loss_u, mask_u = fx.abc_loss(logits_l, b.y, logits_w, logits_s, self.keep_l, self.keep_u,
                                                 self.cfg.threshold, draws_l, draws_u)
            total = loss_l + loss_u
            with torch.no_grad():
                acc["pred_main"] += F.one_hot(b.u.logits_w.argmax(1), K).sum(0)
                acc["pred_balanced"] += F.one_hot(logits_w.argmax(1), K).sum(0)
                acc["mask"] += mask_u.mean()
            acc["u_steps"] += 1
        acc["loss"] += total.detach()
        acc["steps"] += 1
        return loss + self.cfg.abc_weight * total

    def eval_logits(self, logits, feats, model):
        return model.heads[self.name](feats.float())

    def metrics(self, out):
        a = self.acc
        if not a["steps"]:
            return out
        seen = a["n_l"] > 0  # a class absent from the interval's labeled batches keeps its last recall
        for h in ("main", "balanced"):
            self.last_recall[h] = torch.where(seen, a[f"hit_{h}"] / a["n_l"].clamp(min=1), self.last_recall[h])
        out = {**out, "abc.recall_main": self.last_recall["main"], "abc.recall_balanced": self.last_recall["balanced"],
               "abc.loss": a["loss"] / a["steps"], "abc.keep_unlabeled": self.keep_u}
        if a["u_steps"]:
            out["abc.unlabeled_share_main"] = a["pred_main"] / a["pred_main"].sum()
            out["abc.unlabeled_share_balanced"] = a["pred_balanced"] / a["pred_balanced"].sum()
            out["abc.mask_rate"] = a["mask"] / a["u_steps"]
        self._reset(self.run.num_classes, self.run.device)
        return out
