"""Adsh (Guo & Li, ICML 2022): per-class thresholds from confidence quantiles over the unlabeled set.

A threshold schedule (``threshold_schedule: adsh``), listed in ``registry.THRESHOLD_SCHEDULES``.
"""
from __future__ import annotations


from ..lazy import torch  # torch on first use: see sslviz/engine/lazy.py
from .. import techniques as fx
from ..fields import Field
from ..params import integer
from ..technique import Technique


class Adsh(Technique):
    name, title, schedule = "adsh", "Adsh thresholds", "adsh"
    addresses, try_with = ("threshold_starvation", "tail_starvation"), {"threshold_schedule": "adsh"}
    needs_pass = True
    epoch_field = "adsh_epoch_steps"
    epoch_labels = ("warm-up: thresholds at `threshold` until the first epoch ends",
                    "adapting: thresholds from the unlabeled set's confidence quantiles, every epoch")
    paper = "Guo & Li, Class-Imbalanced Semi-Supervised Learning with Adaptive Thresholding, ICML 2022"
    implemented = ("After each epoch of `adsh_epoch_steps` steps (USB: 1,024 iterations), the confidences of the whole "
                   "unlabeled set are sorted per predicted class; rho = the head class's fraction above `threshold` "
                   "(USB: `(m-1)/n_head`), and class k's threshold is its confidence at position "
                   "`floor(n_k * rho) - 1` (USB's `exp(-s_k)`), so every class admits the head class's fraction; "
                   "equals a port of USB's hook where it is defined.")
    differs = ("From the training model in eval mode (USB: the EMA model). Starts at `threshold` (USB starts at "
               "`exp(-tau)` = 0.39). Where USB's index wraps to -1 the class's top confidence is used instead of its "
               "lowest, and when no head-class sample clears `threshold` the thresholds stay (USB sets rho = 1 and "
               "admits everything).")
    fields = (Field("adsh_epoch_steps", 1024, (integer(1, 1_000_000),), "Adsh: steps between its re-estimates of "
                    "the thresholds (USB's epoch: 1,024 iterations)", "Thresholds"),)

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        K = run.num_classes
        self.head_class = int(torch.argmax(run.labeled_counts))  # class 0 under the long-tail convention
        self.state = {"thresholds": torch.full((K,), float(cfg.threshold), device=run.device),
                      "rho": torch.ones((), device=run.device)}

    def on_pass(self, _, probs_all):
        conf, pred = probs_all.max(1)
        self.state["thresholds"], self.state["rho"] = fx.adsh_thresholds(
            conf, pred, self.run.num_classes, self.cfg.threshold, self.head_class, self.state["thresholds"])

    def thresholds(self, tau, u, t):
        return self.state["thresholds"].clone()

    def metrics(self, out):
        return {**out, "adsh.thresholds": self.state["thresholds"], "adsh.rho": self.state["rho"]}
