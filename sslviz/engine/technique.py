"""What a technique is: the phases of a step it may act at, what it may see, and the base class.

The declarations themselves are in ``registry.py`` (FixMatch's own mitigations) and ``methods/`` (the
imbalanced-SSL methods papers compare against); this module holds only their common shape, so neither
imports the other.

Each phase method takes the value being built first and returns it, changed or not; the base class
returns it unchanged. The trainer calls the phases in ``PHASES`` order and, within a phase, the active
techniques in ``registry.TECHNIQUES`` order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from .lazy import nn, torch  # torch on first use: see sslviz/engine/lazy.py

if TYPE_CHECKING:
    from torch import Tensor

from .fields import Field

# The step, in order (trainer.train): each name is a Technique method.
PHASES = (
    "on_pass",  # after each of a technique's epochs (its own clock): the model's predictions on the unlabeled set
    "transform_probs",  # weak-view probabilities -> the distribution pseudo-labels are read from
    "thresholds",  # per-class confidence thresholds for this batch
    "observe",  # after the mask: state updates that must see the accepted pseudo-labels
    "strong_strength",  # per-sample strength of the unlabeled strong view
    "sup_logits",  # logits entering the supervised cross-entropy
    "sup_weights",  # per-sample weights of the supervised loss
    "unsup_logits",  # strong-view logits entering the consistency loss
    "unsup_weights",  # per-sample weights of the consistency loss (the mask is applied by the loop)
    "extra_loss",  # further loss terms (extra heads, regularisers), already weighted, added to the total
    "eval_logits",  # the logits a prediction is read from (validation, test, snapshots)
    "metrics",  # technique state for the live charts, once per log interval
)
PSEUDO_MEAN = "pseudo_label.mean"  # the loop's own metric: the mean distribution pseudo-labels were read from
GROUPS = ("Thresholds", "Pseudo-label distribution", "Supervised loss", "Unsupervised loss", "Augmentation",
          "Imbalanced-SSL methods")


@dataclass(frozen=True)
class Run:
    """What a technique may know about the run it acts in."""

    num_classes: int
    device: torch.device
    labeled_counts: Tensor  # (K,) float, on device
    num_unlabeled: int
    steps: int  # the whole budget


@dataclass(frozen=True)
class Phase:
    """A stretch of a run in which a technique behaves one way: from ``start`` (a step, 1-based) on, ``label``."""

    start: int
    label: str


def phase_at(phases: tuple[Phase, ...], step: int) -> tuple[Phase | None, Phase | None]:
    """(the phase ``step`` is in, the next one) of ``phases`` (ordered by start); None where there is none.

    >>> ph = (Phase(1, "warm-up"), Phase(101, "adapting"))
    >>> [(a and a.label, b and b.start) for a, b in (phase_at(ph, 1), phase_at(ph, 100), phase_at(ph, 101))]
    [('warm-up', 101), ('warm-up', 101), ('adapting', None)]
    """
    now = [p for p in phases if p.start <= step]
    later = [p for p in phases if p.start > step]
    return (now[-1] if now else None), (later[0] if later else None)


def ema_settled_steps(momentum: float, time_constants: float = 3.0) -> int:
    """Steps until an EMA of ``momentum`` has forgotten its start to within e^-3 (5 %): three time constants.

    >>> ema_settled_steps(0.999), ema_settled_steps(0.9)
    (3000, 30)
    """
    return int(round(time_constants / max(1e-12, 1.0 - momentum)))


@dataclass
class Unlabeled:
    """One unlabeled batch as it moves through the phases (true labels deliberately absent)."""

    idx: Tensor  # (uB,) indices into the unlabeled set
    logits_w: Tensor  # weak-view logits (no grad)
    probs: Tensor  # current pseudo-label distribution; starts as softmax(logits_w)
    feats_w: Tensor | None = None  # weak-view features (no grad), for techniques with heads of their own
    pseudo: Tensor | None = None  # hard pseudo-labels, set by the loop after "thresholds"
    conf: Tensor | None = None
    mask: Tensor | None = None  # 1.0 where accepted


@dataclass
class Batch:
    """What the loss phase sees of one step: labeled and strong-view outputs with their features."""

    y: Tensor  # (B,) labels
    logits_l: Tensor
    feats_l: Tensor
    u: Unlabeled | None = None
    logits_s: Tensor | None = None
    feats_s: Tensor | None = None
    model: nn.Module | None = field(default=None, repr=False)  # the training model (its heads included)
    step: int = 0


class Technique:
    """Base: the declaration fields and phase methods that do nothing."""

    name: ClassVar[str]  # short id: the prefix of its live metrics, its checkpoint key and its head's name
    title: ClassVar[str]  # README row
    paper: ClassVar[str]
    implemented: ClassVar[str]
    differs: ClassVar[str] = "—"
    fields: ClassVar[tuple[Field, ...]] = ()
    schedule: ClassVar[str | None] = None  # a threshold schedule answers to threshold_schedule=<schedule>
    off: ClassVar[tuple[str, object] | None] = None  # (field, value): the technique is off when field == value
    needs_pass: ClassVar[bool] = False  # whether on_pass needs the model's predictions on the whole unlabeled set
    # The knob holding this technique's epoch in steps, for a technique whose reference counts epochs (ACR, SAW,
    # Adsh): its re-estimates follow that clock, whatever the size of the unlabeled set.
    epoch_field: ClassVar[str | None] = None
    # For a technique that re-estimates once an epoch (SAW, Adsh): what it does before its first estimate and after;
    # its phases and budget follow (two phases, at least two epochs).
    epoch_labels: ClassVar[tuple[str, str] | None] = None
    # Metrics (per-class shares) that estimate the unlabeled set's class distribution: views set them beside the
    # hidden truth.
    estimates_unlabeled: ClassVar[tuple[str, ...]] = ()
    # For the bias doctor (runs/doctor.py): the finding kinds it is meant to fix, the knobs that switch it on, and
    # the unlabeled profiles (doctor.profile_shape) where it is known to work against the data.
    addresses: ClassVar[tuple[str, ...]] = ()
    try_with: ClassVar[dict] = {}
    hurts_under: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def active(cls, cfg) -> bool:
        """Whether this technique takes part in a run of ``cfg``: its schedule is chosen, or its switch is not off."""
        if cls.schedule is not None:
            return cfg.threshold_schedule == cls.schedule
        return cls.off is None or getattr(cfg, cls.off[0]) != cls.off[1]

    @classmethod
    def phases(cls, cfg) -> tuple[Phase, ...]:
        """The phases a run of ``cfg`` takes this technique through, in order (none: it is itself from step 1).
        The Live page marks the current one."""
        if cls.epoch_labels is None:
            return ()
        return (Phase(1, cls.epoch_labels[0]), Phase(getattr(cfg, cls.epoch_field) + 1, cls.epoch_labels[1]))

    @classmethod
    def min_steps(cls, cfg) -> int:
        """The budget this technique needs to be itself (its last phase reached and run for a while); shorter runs
        measure its early phase, and Setup, the CLI and sweep validation say so before they start."""
        return 2 * getattr(cfg, cls.epoch_field) if cls.epoch_labels is not None else 0  # a whole epoch adapted

    def epoch_steps(self) -> int | None:
        """This technique's epoch in steps (``epoch_field``), or None."""
        return int(getattr(self.cfg, self.epoch_field)) if self.epoch_field else None

    @classmethod
    def acts_at(cls) -> tuple[str, ...]:
        """The phases this technique overrides (for docs and the README)."""
        return tuple(p for p in PHASES if getattr(cls, p) is not getattr(Technique, p))

    def __init__(self, cfg, run: Run):
        self.cfg, self.run = cfg, run
        self.state: dict[str, Tensor] = {}  # checkpointed; restored by load_state

    def head(self, feature_dim: int) -> nn.Module | None:
        """A head of this technique's own on the backbone's features (None: it has none)."""
        return None

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.state = {k: state[k].to(self.run.device) for k in self.state}

    # -- phases (see PHASES) ------------------------------------------------
    def on_pass(self, _: None, probs_all: Tensor) -> None:
        return None

    def transform_probs(self, probs: Tensor, u: Unlabeled) -> Tensor:
        return probs

    def thresholds(self, tau: Tensor, u: Unlabeled, t: int) -> Tensor:
        return tau

    def observe(self, _: None, u: Unlabeled) -> None:
        return None

    def strong_strength(self, strength: Tensor, pseudo: Tensor) -> Tensor:
        return strength

    def sup_logits(self, logits: Tensor, y: Tensor) -> Tensor:
        return logits

    def sup_weights(self, w: Tensor, y: Tensor) -> Tensor:
        return w

    def unsup_logits(self, logits: Tensor, u: Unlabeled) -> Tensor:
        return logits

    def unsup_weights(self, w: Tensor, u: Unlabeled) -> Tensor:
        return w

    def extra_loss(self, loss: Tensor, b: Batch) -> Tensor:
        return loss

    def eval_logits(self, logits: Tensor, feats: Tensor, model: nn.Module) -> Tensor:
        return logits

    def metrics(self, out: dict) -> dict:
        return out
