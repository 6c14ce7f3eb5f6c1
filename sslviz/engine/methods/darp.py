"""DARP (Kim et al., NeurIPS 2020): refine the pseudo-labels of the whole unlabeled set toward a target marginal."""
from __future__ import annotations

import math


from ..lazy import torch  # torch on first use: see sslviz/engine/lazy.py
from .. import techniques as fx
from ..fields import Field
from ..params import Bool, integer, real
from ..technique import Phase, Technique


class DARP(Technique):
    name, title = "darp", "DARP"
    addresses, try_with = ("contamination", "tail_starvation"), {"darp": True}
    hurts_under = ("reversed", "uniform", "different")
    estimates_unlabeled = ("darp.target_share", "darp.refined_share")
    off = ("darp", False)
    paper = "Kim et al., Distribution Aligning Refinery of Pseudo-label for Imbalanced Semi-supervised Learning, NeurIPS 2020"
    implemented = ("As bbuing9/DARP's FixMatch: every unlabeled sample's latest weak-view distribution is kept; after "
                   "`darp_warmup` of the budget, every `darp_every` steps the whole set is refined (`estimate_pseudo` "
                   "with `darp_alpha`, then `darp_iters` rounds of the dual solver) so that its class marginal matches "
                   "the labeled distribution scaled to N_u; between refinements batches read the saved refined "
                   "distributions, and both the pseudo-label and the threshold are taken from them. Equals a port of "
                   "the reference solver to 2e-6.")
    differs = ("Warm-up as a fraction of the budget (reference: 200 of 500 epochs = 0.4). The Newton solve runs for "
               "all classes at once with the derivative in float64 to 1e-6 (reference: scipy's secant per class to "
               "0.1); entropies are floored at 1e-6. The target omits the reference's `+ labeled counts` (its "
               "FixMatch reuses labeled images as unlabeled ones; sslviz keeps them disjoint). USB differs from both "
               "by masking with the raw confidence. A sample drawn twice in one batch keeps its last draw's prediction "
               "(indexing leaves the winner undefined).")
    fields = (
        Field("darp", False, (Bool(),), "DARP: refine the pseudo-labels of the whole unlabeled set so their class "
              "distribution matches the labeled one scaled to the unlabeled set", "Imbalanced-SSL methods",
              label="DARP refinement"),
        Field("darp_warmup", 0.4, (real(0, 1, "left"),), "fraction of the budget before DARP starts refining "
              "(reference: 200 of 500 epochs)", "Imbalanced-SSL methods", step=0.05),
        Field("darp_every", 10, (integer(1, 100_000),), "steps between DARP refinements of the whole unlabeled set",
              "Imbalanced-SSL methods"),
        Field("darp_iters", 10, (integer(1, 100),), "rounds of DARP's solver per refinement (reference T = 10)",
              "Imbalanced-SSL methods"),
        Field("darp_alpha", 2.0, (real(0, 100, "neither"),), "DARP estimate: the alpha * q_k most confident samples "
              "of class k take part in its rescaling (reference 2)", "Imbalanced-SSL methods", step=0.1),
    )

    @classmethod
    def phases(cls, cfg):  # its warm-up is a fraction of the budget: every run reaches the refining phase
        return (Phase(1, "warm-up: the model's own pseudo-labels"),
                Phase(math.ceil(cfg.darp_warmup * cfg.steps) + 1, f"refining every {cfg.darp_every} steps"))

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        K, N, dev = run.num_classes, run.num_unlabeled, run.device
        counts = run.labeled_counts.float()
        self.target = counts / counts.sum() * N  # target counts q: the labeled distribution scaled to N_u
        self.start = math.ceil(cfg.darp_warmup * run.steps)
        self.state = {"orig": torch.full((N, K), 1.0 / K, device=dev), "refined": torch.full((N, K), 1.0 / K, device=dev),
                      "step": torch.zeros((), dtype=torch.long), "refines": torch.zeros((), dtype=torch.long),
                      "newton_steps": torch.zeros((), dtype=torch.long),
                      "marginal_error": torch.zeros(())}  # step and the counters stay on the CPU: no device sync
        self.t = 0

    def load_state(self, state):
        super().load_state(state)
        for k in ("step", "refines", "newton_steps", "marginal_error"):
            self.state[k] = self.state[k].cpu()
        self.t = int(self.state["step"])

    def refine(self) -> None:
        """Refine the saved distributions of the whole unlabeled set (estimate, rescale, solve)."""
        orig = self.state["orig"]
        marks, weights = fx.darp_estimate(self.target, orig, self.cfg.darp_alpha)
        refined, steps = fx.darp_solve(fx.darp_rescale(orig, marks, weights), self.target, self.cfg.darp_iters)
        self.state["refined"] = refined
        self.state["refines"] += 1
        self.state["newton_steps"] = torch.tensor(steps)
        self.state["marginal_error"] = (refined.sum(0) - self.target).abs().sum().cpu() / max(1, len(orig))

    def transform_probs(self, probs, u):
        orig = self.state["orig"]  # each sample's latest prediction (the reference's pseudo_orig); drawn twice: the last
        orig[u.idx] = probs[fx.last_positions(u.idx, len(orig))]
        t = self.t
        self.t += 1
        self.state["step"] = torch.tensor(self.t)
        if t < self.start:
            return probs
        if (t - self.start) % self.cfg.darp_every == 0:
            self.refine()
        return self.state["refined"][u.idx]

    def metrics(self, out):
        K = self.run.num_classes
        share = lambda p: torch.bincount(p.argmax(1), minlength=K).float() / max(1, len(p))  # noqa: E731
        n = max(1, self.run.num_unlabeled)
        return {**out, "darp.raw_share": share(self.state["orig"]), "darp.refined_share": share(self.state["refined"]),
                "darp.target_share": self.target / n, "darp.refines": self.state["refines"],
                "darp.solver_iterations": torch.tensor(self.cfg.darp_iters if int(self.state["refines"]) else 0),
                "darp.newton_steps": self.state["newton_steps"], "darp.marginal_error": self.state["marginal_error"]}
