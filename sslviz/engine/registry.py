"""Every technique declared once: its knobs, its state, and the phases of the step where it acts.

A technique is a class (base and phases in ``technique.py``). Its class attributes
declare it (``fields`` with type, range, default, help and Setup group; the paper;
what is implemented and what differs); an instance holds one run's state
(``self.state``, checkpointed) and overrides the phase methods where it acts. The
trainer calls the phases in a fixed order (``PHASES``, the order of a FixMatch
step) and, within a phase, the active techniques in ``TECHNIQUES`` order, so the
whole composition is visible in this file: no hooks, priorities or runtime class
mixing. FixMatch's own mitigations are declared here; the imbalanced-SSL methods
papers compare against (ABC, ACR, SAW, Adsh, DARP) in ``methods/``.

The formulas themselves are pure functions in ``techniques.py`` with doctests.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .lazy import F, nn, torch  # torch on first use: see sslviz/engine/lazy.py
from . import augment
from . import techniques as fx
from .fields import Field
from .methods import METHODS
from .params import Bool, InvalidParameterError, Options, integer, real
from .technique import (GROUPS, PHASES, PSEUDO_MEAN, Batch, Phase, Run, Technique, Unlabeled,  # noqa: F401  (the
                        ema_settled_steps, phase_at)  # registry's API)

if TYPE_CHECKING:
    from torch import Tensor

# -- pseudo-label distribution -------------------------------------------------
class DebiasPL(Technique):
    name, title = "debias", "DebiasPL"
    addresses, try_with = ("tail_starvation", "majority_drift"), {"debias_tau": 0.4}
    off = ("debias_tau", 0.0)
    paper = "Wang et al., Debiased Learning from Naturally Imbalanced Pseudo-Labels, CVPR 2022"
    implemented = ("Pseudo-labels from `softmax(f_w - tau log p_hat)`; `p_hat` <- EMA (own momentum) of the raw "
                   "weak-view softmax, updated after pseudo-labelling; adaptive marginal loss: the consistency loss "
                   "on `f_s + tau log p_hat`.")
    differs = ("`p_hat` starts uniform and moves with momentum 0.999 as in the reference, so in runs of a few "
               "thousand steps it stays near uniform; lower `debias_momentum` for short runs.")
    fields = (
        Field("debias_tau", 0.0, (real(0, 5),), "DebiasPL strength tau: pseudo-labels from logits - tau log p_hat "
              "and the adaptive marginal loss (0 = off)", "Pseudo-label distribution", label="DebiasPL τ"),
        Field("debias_momentum", 0.999, (real(0, 1, "left"),), "EMA momentum of DebiasPL's running mean "
              "prediction p_hat", "Pseudo-label distribution", step=0.001),
    )

    @classmethod
    def phases(cls, cfg):
        return (Phase(1, "warm-up: p_hat near uniform, little debiasing"),
                Phase(ema_settled_steps(cfg.debias_momentum) + 1, "debiasing with a settled p_hat"))

    @classmethod
    def min_steps(cls, cfg):
        return ema_settled_steps(cfg.debias_momentum, 4)  # one more time constant with p_hat settled

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        self.state = {"p_hat": torch.full((run.num_classes,), 1.0 / run.num_classes, device=run.device)}

    def transform_probs(self, probs, u):
        return fx.debiased_probs(u.logits_w, self.state["p_hat"], self.cfg.debias_tau)

    def observe(self, _, u):
        # After pseudo-labelling, from the raw (not debiased) weak-view prediction, as main_DebiasPL.py does.
        self.state["p_hat"] = fx.ema(self.state["p_hat"], F.softmax(u.logits_w, dim=1).mean(0), self.cfg.debias_momentum)

    def unsup_logits(self, logits, u):
        return fx.adaptive_margin_logits(logits, self.state["p_hat"], self.cfg.debias_tau)

    def metrics(self, out):
        return {**out, "debias.p_hat": self.state["p_hat"]}


class DistributionAlignment(Technique):
    name, title = "da", "Distribution alignment"
    addresses, try_with = ("majority_drift", "tail_starvation"), {"dist_align": "labeled"}
    hurts_under = ("reversed", "uniform", "different")
    off = ("dist_align", "none")
    paper = "Berthelot et al., ReMixMatch, ICLR 2020"
    implemented = ("`p~ = normalize(p * p_target / p_model)` before the threshold; `p_model` = mean prediction of "
                   "the last `dist_align_window` unlabeled batches (ReMixMatch: 128); target = labeled class "
                   "distribution or uniform.")
    differs = ("The window averages the batches seen so far until it is full (ReMixMatch pads it with a uniform "
               "start; USB uses an EMA of momentum 0.999, which lags by ~1,000 steps).")
    fields = (
        Field("dist_align", "none", (Options(("none", "labeled", "uniform")),), "distribution alignment target of "
              "pseudo-labels: none, the labeled class distribution, or uniform", "Pseudo-label distribution",
              label="distribution alignment"),
        Field("dist_align_window", 128, (integer(1, 100_000),), "batches averaged into DA's running model "
              "distribution p_model", "Pseudo-label distribution"),
    )

    @classmethod
    def phases(cls, cfg):
        return (Phase(1, "filling its window of batches"), Phase(cfg.dist_align_window + 1, "full window"))

    @classmethod
    def min_steps(cls, cfg):
        return 2 * cfg.dist_align_window  # as long again on a full window

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        K, W = run.num_classes, cfg.dist_align_window
        counts = run.labeled_counts
        self.target = counts / counts.sum() if cfg.dist_align == "labeled" else torch.full((K,), 1.0 / K, device=run.device)
        self.state = {"model": torch.zeros(W, K, device=run.device),
                      "seen": torch.zeros((), dtype=torch.long)}  # seen stays on the CPU: a ring index, no device sync
        self.seen = 0

    def load_state(self, state):
        super().load_state(state)
        self.seen = int(state["seen"])

    def transform_probs(self, probs, u):
        fx.window_push(self.state["model"], self.seen, probs.mean(0))
        aligned = fx.distribution_alignment(probs, self.target, fx.window_mean(self.state["model"], self.seen + 1))
        self.seen += 1
        self.state["seen"] = torch.tensor(self.seen)
        return aligned

    def metrics(self, out):
        # The mean aligned distribution is the loop's own "pseudo_label.mean" (what the mask really saw).
        return {**out, "da.p_model": fx.window_mean(self.state["model"], self.seen), "da.target": self.target}


# -- threshold schedules (one of them answers to threshold_schedule) --------------
class FlexMatch(Technique):
    name, title, schedule = "flexmatch", "FlexMatch thresholds", "flexmatch"
    addresses, try_with = ("threshold_starvation", "tail_starvation"), {"threshold_schedule": "flexmatch"}
    paper = "Zhang et al., FlexMatch, NeurIPS 2021"
    implemented = ("Curriculum pseudo-labelling: `tau_c = beta_c / (2 - beta_c) * tau` (convex mapping) from each "
                   "unlabeled sample's latest prediction above tau, with the threshold warm-up; equals USB to 6e-8.")
    differs = ("Batches are drawn with replacement (no epochs); the mask uses the state before this batch's update, "
               "as USB. A sample drawn twice in one batch keeps its last draw's prediction (indexing leaves the "
               "winner undefined).")
    fields = (Field("flexmatch_warmup", True, (Bool(),),
                    "FlexMatch: count not-yet-predicted samples as a class (threshold warm-up)", "Thresholds"),)

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        self.state = {"predicted": torch.full((run.num_unlabeled,), -1, dtype=torch.long, device=run.device)}

    def thresholds(self, tau, u, t):
        return fx.flexmatch_thresholds(self.cfg.threshold, self.state["predicted"], self.run.num_classes,
                                       self.cfg.flexmatch_warmup)

    def observe(self, _, u):
        # Remember each sample's latest prediction that clears the base threshold.
        pred = self.state["predicted"]
        latest = torch.where(u.conf > self.cfg.threshold, u.pseudo, pred[u.idx])
        pred[u.idx] = latest[fx.last_positions(u.idx, len(pred))]  # a sample drawn twice: its last draw, always

    def metrics(self, out):
        pred = self.state["predicted"]
        claimed = torch.zeros(self.run.num_classes, device=pred.device).scatter_add_(
            0, pred.clamp(min=0), (pred >= 0).float())
        return {**out, "flexmatch.claimed_share": claimed / max(1, self.run.num_unlabeled)}


class FreeMatch(Technique):
    name, title, schedule = "freematch", "FreeMatch", "freematch"
    addresses, try_with = ("threshold_starvation", "tail_starvation"), {"threshold_schedule": "freematch"}
    paper = "Wang et al., FreeMatch: Self-adaptive Thresholding for Semi-supervised Learning, ICLR 2023"
    implemented = ("Self-adaptive thresholds `tau_c = tau_t * p_t(c) / max p_t` from EMAs of the mean confidence and "
                   "mean prediction (equal to USB to 3e-8), and the self-adaptive fairness loss "
                   "`-H(SumNorm(p_t/h_t), SumNorm(p_bar/h_bar))` on accepted strong-view predictions, weight "
                   "`freematch_fairness_weight` (paper: 0.01).")
    differs = ("EMAs start at 1/K with momentum 0.999 as in the paper, so at short budgets tau_t is low "
               "(0.32 after 300 steps at constant confidence 0.95); the base `threshold` is unused. The fairness "
               "loss equals USB's `entropy_loss` to 1e-5, sign included (it minimises `sum a log b`); computed "
               "with masks instead of boolean indexing so a CUDA step does not sync.")
    fields = (
        Field("freematch_momentum", 0.999, (real(0, 1, "left"),), "FreeMatch EMA momentum of the global and "
              "per-class confidence and the label histogram", "Thresholds", step=0.001),
        Field("freematch_fairness_weight", 0.01, (real(0, 10),), "FreeMatch weight of the self-adaptive fairness "
              "loss (0 = thresholds only)", "Unsupervised loss", step=0.001),
    )

    @classmethod
    def phases(cls, cfg):
        return (Phase(1, "warm-up: EMAs near 1/K, thresholds low"),
                Phase(ema_settled_steps(cfg.freematch_momentum) + 1, "self-adapted thresholds (EMAs settled)"))

    @classmethod
    def min_steps(cls, cfg):
        return ema_settled_steps(cfg.freematch_momentum, 4)  # one more time constant with the EMAs settled

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        K, dev = run.num_classes, run.device
        self.state = {"tau_t": torch.tensor(1.0 / K, device=dev), "p_t": torch.full((K,), 1.0 / K, device=dev),
                      "label_hist": torch.full((K,), 1.0 / K, device=dev)}
        self.loss_sum, self.loss_n = torch.zeros((), device=dev), 0

    def thresholds(self, tau, u, t):
        s = self.state
        s["tau_t"], s["p_t"], s["label_hist"] = fx.freematch_update(s["tau_t"], s["p_t"], s["label_hist"], u.probs,
                                                                     self.cfg.freematch_momentum)
        return fx.freematch_thresholds(s["tau_t"], s["p_t"])

    def extra_loss(self, loss, b):
        if self.cfg.freematch_fairness_weight == 0 or b.u is None:
            return loss
        fair = fx.freematch_fairness_loss(b.logits_s, b.u.mask, self.state["p_t"], self.state["label_hist"])
        self.loss_sum += fair.detach()
        self.loss_n += 1
        return loss + self.cfg.freematch_fairness_weight * fair

    def metrics(self, out):
        out = {**out, "freematch.tau_t": self.state["tau_t"], "freematch.p_t": self.state["p_t"],
               "freematch.label_hist": self.state["label_hist"]}
        if self.loss_n:
            out["freematch.loss_fair"] = self.loss_sum / self.loss_n
            self.loss_sum, self.loss_n = torch.zeros_like(self.loss_sum), 0
        return out


# The schedules threshold_schedule can name; a new schedule is a class above plus its entry here.
from .methods.adsh import Adsh  # noqa: E402  (a schedule declared with the methods; it imports only technique)
THRESHOLD_SCHEDULES = {"fixed": None, FlexMatch.schedule: FlexMatch, FreeMatch.schedule: FreeMatch, Adsh.schedule: Adsh}


class FixMatch(Technique):
    """The base algorithm: its knobs; the loop itself implements it."""

    name, title = "fixmatch", "FixMatch"
    paper = "Sohn et al., FixMatch, NeurIPS 2020"
    implemented = ("Supervised CE on weak labeled views; pseudo-label from the weak view if `max p >= tau`; CE on "
                   "the strong view (RandAugment + Cutout), averaged over all mu*B; EMA teacher for evaluation.")
    differs = ("RandAugment applies 2 ops always, factors 1 +- 0.9m, Cutout 0.5*H at strength 1 (USB: 3 ops, "
               "Cutout U[0, 0.5]; kekmodel: 2 ops with p = 0.5); EMA decay warms up as min(0.999, (1+t)/(10+t)); "
               "the weak view has its own forward (USB's use_cat=False).")
    fields = (
        Field("threshold", 0.95, (real(0, 1, "right"),), "confidence threshold tau for a pseudo-label to count",
              "Thresholds", label="τ: confidence threshold"),
        Field("threshold_schedule", "fixed", (Options(tuple(THRESHOLD_SCHEDULES)),), "how thresholds evolve: "
              + ", ".join(f"{name} ({'FixMatch' if t is None else t.title})" for name, t in THRESHOLD_SCHEDULES.items()),
              "Thresholds"),
        Field("lambda_u", 1.0, (real(0, 100),), "weight of the unsupervised (consistency) loss", "Unsupervised loss",
              label="λ_u: unsupervised loss weight"),
        Field("aug_strength", 1.0, (real(0, 5),), "strong-augmentation strength (1 = FixMatch RandAugment + Cutout)",
              "Augmentation"),
    )


# -- threshold modifiers ----------------------------------------------------------
class FrequencyThresholds(Technique):
    name, title = "freq_thresholds", "Class-frequency thresholds"
    addresses, try_with = ("threshold_starvation", "tail_starvation"), {"threshold_class_alpha": 0.5}
    off = ("threshold_class_alpha", 0.0)
    paper = "class-specific thresholds as in the imbalanced-SSL literature (e.g. Adsh's motivation, CReST)"
    implemented = "`tau_c' = max(tau_c * (n_c / n_max)^alpha, min(tau_c, floor))` from labeled counts: lower for rare classes."
    differs = "sslviz's own simple form, not a specific paper's estimator."
    fields = (
        Field("threshold_class_alpha", 0.0, (real(0, 5),), "tau_c = tau * (n_c / n_max) ** alpha: lower thresholds "
              "for rare classes (0 = off)", "Thresholds"),
        Field("threshold_min", 0.5, (real(0, 1),), "frequency scaling never lowers a threshold below this (nor "
              "raises one to it)", "Thresholds"),
    )

    def thresholds(self, tau, u, t):
        return fx.frequency_scaled_thresholds(tau, self.run.labeled_counts, self.cfg.threshold_class_alpha,
                                              self.cfg.threshold_min)


class ThresholdWarmup(Technique):
    name, title = "threshold_warmup", "Threshold warm-up"
    off = ("threshold_warmup_steps", 0)
    paper = "—"
    implemented = "Thresholds fall linearly from 1.0 to their value over the first steps."
    differs = "sslviz's own."
    fields = (Field("threshold_warmup_steps", 0, (integer(0),), "thresholds fall linearly from 1.0 to their value over "
                    "this many steps (0 = off)", "Thresholds"),)

    def thresholds(self, tau, u, t):
        return fx.warmup_thresholds(tau, t, self.cfg.threshold_warmup_steps)


# -- augmentation -------------------------------------------------------------------
class ClassAugmentation(Technique):
    name, title = "class_aug", "Per-class augmentation strength"
    off = ("aug_class_alpha", 0.0)
    paper = "rare classes augmented harder (the field's standard example; cf. CReST/ACR discussions)"
    implemented = ("Strong-view strength `aug_strength * min((n_max/n_c)^alpha, cap)` by pseudo-label class, in the "
                   "consistency branch only; labeled views are the same weak view for every class.")
    differs = ("sslviz's own. Labeled views are never augmented by their class: a class-dependent labeled view tells "
               "the model the label (on CIFAR-10-LT 'clean image' came to mean 'head class', bench/RESULTS.md).")
    fields = (
        Field("aug_class_alpha", 0.0, (real(0, 5),), "per-class strength multiplier (n_max / n_c) ** alpha: rare "
              "classes augmented harder (0 = off)", "Augmentation"),
        Field("aug_max_multiplier", 3.0, (real(1, 10),), "cap of that multiplier", "Augmentation"),
    )

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        self.mult = augment.class_strength_multiplier(run.labeled_counts, cfg.aug_class_alpha,
                                                      cfg.aug_max_multiplier).to(run.device)

    def strong_strength(self, strength, pseudo):
        return strength * self.mult[pseudo]


# -- supervised loss -------------------------------------------------------------------
class LogitAdjustment(Technique):
    name, title = "logit_adjust", "Logit adjustment"
    addresses, try_with = ("majority_drift", "tail_starvation"), {"logit_adjust_tau": 1.0}
    off = ("logit_adjust_tau", 0.0)
    paper = "Menon et al., Long-tail learning via logit adjustment, ICLR 2021"
    implemented = "Supervised loss on `logits + tau log prior` (labeled prior); prediction from the raw logits."
    differs = "Labeled loss only, as ACR and DASO do."
    fields = (Field("logit_adjust_tau", 0.0, (real(0, 5),), "train on logits + tau * log(prior): 1 = logit-adjusted "
                    "loss (0 = off)", "Supervised loss"),)

    def sup_logits(self, logits, y):
        return fx.logit_adjust(logits, fx.log_prior(self.run.labeled_counts), self.cfg.logit_adjust_tau)


class ClassWeighting(Technique):
    name, title = "class_weights", "Class-weighted supervised loss"
    addresses, try_with = ("majority_drift",), {"class_weighting": "effective", "effective_beta": 0.999}
    off = ("class_weighting", "none")
    paper = "Cui et al., Class-Balanced Loss Based on Effective Number of Samples, CVPR 2019"
    implemented = "Per-class weights `1/n_c` or `(1-beta)/(1-beta^n_c)`, normalised to mean 1 over classes."
    differs = ("Normalised over classes, so the expected per-sample weight under labeled sampling is below 1 "
               "(0.16 inverse, 0.19 effective at beta 0.999 on CIFAR-10-LT): the supervised loss scale drops.")
    fields = (
        Field("class_weighting", "none", (Options(("none", "inverse", "effective")),), "supervised loss weights: "
              "none, inverse (1/n_c) or effective ((1-beta)/(1-beta^n_c))", "Supervised loss"),
        Field("effective_beta", 0.999, (real(0, 1, "neither"),), "beta of the effective number of samples",
              "Supervised loss", step=0.001),
    )

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        self.weights = fx.class_weights(run.labeled_counts, cfg.class_weighting, cfg.effective_beta)

    def sup_weights(self, w, y):
        return w * self.weights[y]


# -- unsupervised loss -----------------------------------------------------------------
class UnsupClassScale(Technique):
    name, title = "unsup_scale", "Per-class consistency weights"
    off = ("unsup_class_alpha", 0.0)
    paper = "per-class unsupervised weights (cf. SAW, Lai et al. ICML 2022, which estimates them from pseudo-labels)"
    implemented = "Each accepted pseudo-label's loss scaled by `(n_max / n_c)^alpha` from labeled counts, mean 1."
    differs = "Fixed from labeled counts; SAW's re-estimation from the unlabeled pseudo-label distribution is not this."
    fields = (Field("unsup_class_alpha", 0.0, (real(0, 5),), "scale each pseudo-label's loss by (n_max / n_c) ** "
                    "alpha (mean 1; 0 = off)", "Unsupervised loss"),)

    def __init__(self, cfg, run):
        super().__init__(cfg, run)
        self.scale = fx.unsup_class_scale(run.labeled_counts, cfg.unsup_class_alpha)

    def unsup_weights(self, w, u):
        return w * self.scale[u.pseudo]


# The order within each phase. Pseudo-label transforms: debias, then align (as the trainer did before);
# thresholds: schedule, then frequency scaling, then warm-up.
TECHNIQUES: tuple[type[Technique], ...] = (
    FixMatch, DebiasPL, DistributionAlignment, *(t for t in THRESHOLD_SCHEDULES.values() if t is not None),
    FrequencyThresholds, ThresholdWarmup, ClassAugmentation, LogitAdjustment, ClassWeighting, UnsupClassScale,
    *METHODS,
)
TECHNIQUE_FIELDS: tuple[Field, ...] = tuple(f for t in TECHNIQUES for f in t.fields)
# Metrics that estimate the unlabeled class distribution, shown beside the hidden truth: the loop's own mean
# pseudo-label distribution and what techniques declare.
UNLABELED_ESTIMATES: tuple[str, ...] = (PSEUDO_MEAN, *(n for t in TECHNIQUES for n in t.estimates_unlabeled))


class Pipeline:
    """The techniques active in one run, called phase by phase in ``TECHNIQUES`` order."""

    def __init__(self, cfg, run: Run):
        self.run = run
        self.techniques = [t(cfg, run) for t in TECHNIQUES if t.active(cfg)]

    def attach_heads(self, model: nn.Module) -> None:
        """Add each technique's own head to ``model.heads`` (before the optimiser and the EMA copy see it)."""
        for t in self.techniques:
            head = t.head(model.feature_dim)
            if head is not None:
                model.heads[t.name] = head.to(self.run.device)

    def __call__(self, phase: str, value, *context):
        for t in self.techniques:
            value = getattr(t, phase)(value, *context)
        return value

    def on_pass(self, step: int, predictions: Callable[[], Tensor]) -> None:
        """Before ``step``: every technique whose epoch just ended (its own clock, ``epoch_steps``) re-estimates from
        the model's predictions on the whole unlabeled set, computed once and only when one is due. As USB's
        ``after_train_epoch``: nothing at step 1, the first estimate after the first epoch."""
        due = [t for t in self.techniques if t.needs_pass and step > 1 and (step - 1) % t.epoch_steps() == 0]
        if due:
            probs = predictions()
            for t in due:
                t.on_pass(None, probs)

    def state_dict(self) -> dict:
        return {t.name: {k: v.cpu() for k, v in t.state.items()} for t in self.techniques if t.state}

    def load_state_dict(self, state: dict) -> None:
        for t in self.techniques:
            if t.state:
                if t.name not in state:
                    raise KeyError(f"the checkpoint has no state for {t.title}")
                t.load_state(state[t.name])


# -- budgets and phases, from the declarations ------------------------------------------
# Phases whose result one technique alone may decide: two techniques overriding one of them would have the later
# silently win (ABC and ACR both pick the logits the model predicts with).
EXCLUSIVE_PHASES = ("eval_logits",)


def conflicts(cfg) -> list[tuple[type, type, str]]:
    """(technique, technique, phase) for every pair of ``cfg``'s active techniques that both override an exclusive
    phase (:data:`EXCLUSIVE_PHASES`)."""
    active = [t for t in TECHNIQUES if t.active(cfg)]
    return [(a, b, phase) for i, a in enumerate(active) for b in active[i + 1:]
            for phase in EXCLUSIVE_PHASES if phase in a.acts_at() and phase in b.acts_at()]


PHASE_WORDS = {"eval_logits": "the logits a prediction is read from"}


def _switched_off(t) -> str:
    """How to switch technique ``t`` off, as a knob setting."""
    return f"{t.off[0]}={t.off[1]!r}" if t.off else f"another threshold_schedule than {t.schedule!r}"


def check_combination(cfg) -> None:
    """InvalidParameterError naming both techniques of the first conflicting pair (and the knobs that switch them
    off), for the CLI, Setup and sweep validation alike."""
    for a, b, phase in conflicts(cfg):
        raise InvalidParameterError(
            f"{a.title} and {b.title} both decide {PHASE_WORDS.get(phase, phase)} ({phase}), so one would silently "
            f"override the other: switch one off ({_switched_off(a)} or {_switched_off(b)}).",
            field=b.off[0] if b.off else "threshold_schedule")


def budget_warnings(cfg) -> list[str]:
    """One sentence per active technique whose declared minimum budget (``Technique.min_steps``) ``cfg.steps`` is
    below: its numbers would measure its early phase, not the method."""
    out = []
    for t in TECHNIQUES:
        need = t.min_steps(cfg) if t.active(cfg) else 0
        if need > cfg.steps:
            later = "; ".join(f"{p.label} from step {p.start:,}" for p in t.phases(cfg) if p.start > 1)
            out.append(f"{t.title}: needs about {need:,} steps to be itself, and this run has {cfg.steps:,}, so its "
                       f"numbers show the method's early phase only ({later}).")
    return out


def phase_notes(cfg, step: int) -> list[str]:
    """Where a run of ``cfg`` at ``step`` stands in each active technique's phases ("ACR (adaptive consistency
    regularizer): estimating the unlabeled distribution (since step 3,001; adapting tau1 every epoch from step
    3,501)"), for the Live page."""
    out = []
    for t in TECHNIQUES:
        phases = t.phases(cfg) if t.active(cfg) else ()
        if not phases:
            continue
        now, later = phase_at(phases, max(1, step))
        parts = [f"since step {now.start:,}"] if now.start > 1 else []
        if later is not None:
            parts.append(f"{later.label} from step {later.start:,}")
        out.append(f"{t.title}: {now.label}" + (f" ({'; '.join(parts)})" if parts else ""))
    return out


# -- docs derived from the declarations ----------------------------------------------
def markdown_techniques() -> str:
    """The README's technique table: technique, paper, what is implemented, what differs and why, its knobs."""
    rows = ["| technique | paper | implemented | differs and why | knobs | acts at |", "|---|---|---|---|---|---|"]
    for t in TECHNIQUES:
        knobs = ", ".join(f"`{f.name}`" for f in t.fields)
        acts = ", ".join(t.acts_at()) or "the loop itself"
        rows.append(f"| {t.title} | {t.paper} | {t.implemented} | {t.differs} | {knobs} | {acts} |")
    return "\n".join(rows)
