"""SAW (Lai et al., ICML 2022): loss weights from the class distribution of pseudo-labels over the unlabeled set."""
from __future__ import annotations


from ..lazy import torch  # torch on first use: see sslviz/engine/lazy.py
from .. import techniques as fx
from ..fields import Field
from ..params import Bool, integer
from ..technique import Technique


class SAW(Technique):
    name, title = "saw", "SAW"
    addresses, try_with = ("tail_starvation", "majority_drift"), {"saw": True}
    off = ("saw", False)
    needs_pass = True
    epoch_field = "saw_epoch_steps"
    epoch_labels = ("warm-up: consistency weights 1 until the first epoch ends",
                    "adapting: consistency weights from the pseudo-label counts, re-estimated every epoch")
    paper = "Lai et al., Smoothed Adaptive Weighting for Imbalanced Semi-Supervised Learning, ICML 2022"
    implemented = ("As USB's port: the supervised loss weighted per class by effective-number weights "
                   "`(1-beta)/(1-beta^n_c)` with `beta = (N-1)/N`, N the mean labeled count, normalised to sum K; "
                   "the consistency loss weighted by the same formula over the counts of each predicted class "
                   "(argmax, at least 1) on the whole unlabeled set, re-estimated after each epoch of `saw_epoch_steps` "
                   "steps (USB: 1,024 iterations), consistency weights 1 until the first epoch ends.")
    differs = ("The estimate comes from the training model in eval mode (USB: the EMA model). The paper's N is a "
               "hyperparameter; USB's mean count is used.")
    fields = (Field("saw", False, (Bool(),), "SAW: weight the supervised and consistency losses per class from "
                    "the labeled counts and the pseudo-label counts over the unlabeled set (re-estimated each epoch)",
                    "Imbalanced-SSL methods", label="SAW loss weights"),
              Field("saw_epoch_steps", 1024, (integer(1, 1_000_000),), "SAW: steps between its re-estimates of the "
                    "consistency weights (USB's epoch: 1,024 iterations)", "Imbalanced-SSL methods"))

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        K = run.num_classes
        self.state = {"sup_weights": fx.saw_effective_weights(run.labeled_counts.float()).to(run.device),
                      "unsup_weights": torch.ones(K, device=run.device),
                      "pseudo_share": torch.full((K,), 1.0 / K, device=run.device)}

    def on_pass(self, _, probs_all):
        counts = fx.predicted_class_counts(probs_all, self.run.num_classes)
        self.state["unsup_weights"] = fx.saw_effective_weights(counts)
        self.state["pseudo_share"] = counts / counts.sum()

    def sup_weights(self, w, y):
        return w * self.state["sup_weights"][y]

    def unsup_weights(self, w, u):
        return w * self.state["unsup_weights"][u.pseudo]

    def metrics(self, out):
        s = self.state
        return {**out, "saw.sup_weights": s["sup_weights"], "saw.unsup_weights": s["unsup_weights"],
                "saw.pseudo_share": s["pseudo_share"]}
