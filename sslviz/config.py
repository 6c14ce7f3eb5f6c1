"""One validated training configuration shared by the CLI, the dashboard and YAML files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from numbers import Integral, Real

import yaml

from .splits import SHAPES
from .params import Bool, InvalidParameterError, Interval, NoneOK, Options, Str, check_params

THRESHOLD_SCHEDULES = ("fixed", "flexmatch", "freematch")
CLASS_WEIGHTINGS = ("none", "inverse", "effective")
DIST_ALIGN_TARGETS = ("none", "labeled", "uniform")
UNLABELED_SHAPES = SHAPES
DEVICES = ("auto", "cpu", "cuda")
MODEL_NAMES = ("auto", "mlp", "cnn_digits", "cnn32", "wrn28_2")  # "auto" + models.MODELS (a test checks)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. Defaults are plain FixMatch on imbalanced digits."""

    # -- data and imbalance ------------------------------------------------
    dataset: str = "digits"  # "digits", "toy2d", or a CIFAR-10 pickle / ImageFolder path
    n1: int | None = None  # labeled images of the head class; None = dataset default
    gamma: float = 50.0  # labeled imbalance ratio N_1 / N_K (1 = balanced)
    m1: int | None = None  # unlabeled images of the largest unlabeled class; None = dataset default
    gamma_u: float | None = None  # unlabeled imbalance ratio; None = same as gamma
    unlabeled_shape: str = "consistent"  # "consistent", "uniform" or "reversed"
    # -- model and optimisation ------------------------------------------
    model: str = "auto"  # "auto" picks by input shape and device
    steps: int = 1000  # optimiser steps (the whole budget)
    batch_size: int = 64  # labeled batch B
    mu: int = 7  # unlabeled batch is mu * B
    lr: float = 0.03  # SGD learning rate, cosine-decayed to cos(7 pi / 16) of it
    momentum: float = 0.9  # SGD momentum (nesterov)
    weight_decay: float = 5e-4
    ema_decay: float = 0.999  # EMA of weights used for evaluation; 0 evaluates the raw model
    # -- pseudo-labels -----------------------------------------------------
    threshold: float = 0.95  # confidence threshold tau for a pseudo-label to count
    threshold_schedule: str = "fixed"  # "fixed", "flexmatch" (curriculum) or "freematch" (self-adaptive)
    threshold_class_alpha: float = 0.0  # tau_c = tau * (n_c / n_max) ** alpha: lower for rare classes
    threshold_min: float = 0.5  # frequency scaling never lowers a threshold below this (nor raises one to it)
    threshold_warmup_steps: int = 0  # thresholds fall linearly from 1.0 to their value over this many steps
    flexmatch_warmup: bool = True  # FlexMatch: count not-yet-predicted samples as a class (threshold warm-up)
    freematch_momentum: float = 0.999  # FreeMatch EMA momentum for global / per-class confidence
    # -- supervised loss ---------------------------------------------------
    class_weighting: str = "none"  # "none", "inverse" (1/n_c) or "effective" ((1-beta)/(1-beta^n_c))
    effective_beta: float = 0.999  # beta of the effective number of samples
    logit_adjust_tau: float = 0.0  # train on logits + tau * log(prior): 1 = logit-adjusted loss
    # -- unsupervised loss -------------------------------------------------
    lambda_u: float = 1.0  # weight of the unsupervised (consistency) loss
    unsup_class_alpha: float = 0.0  # scale each pseudo-label's loss by (n_max / n_c) ** alpha (mean 1)
    dist_align: str = "none"  # distribution alignment target: "none", "labeled" or "uniform"
    dist_align_momentum: float = 0.999  # EMA momentum of the running mean prediction
    debias_tau: float = 0.0  # DebiasPL: pseudo-label from logits - tau * log p_hat (0 = off)
    # -- augmentation ------------------------------------------------------
    aug_strength: float = 1.0  # strong-augmentation strength (1 = FixMatch RandAugment + Cutout)
    aug_class_alpha: float = 0.0  # per-class multiplier (n_max / n_c) ** alpha: rare classes augmented harder
    aug_max_multiplier: float = 3.0  # cap of that multiplier
    # -- run bookkeeping ---------------------------------------------------
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    log_every: int = 10  # steps between per-class training metrics
    eval_every: int = 100  # steps between test-set evaluations
    checkpoint_every: int = 250  # steps between checkpoints (worker runs only)
    compile: bool = False  # torch.compile the model (CUDA only pays off)
    preset: str = "fixmatch"  # the preset this config started from (for labels)
    name: str = ""  # free-text label shown in the dashboard

    def __post_init__(self):
        check_params(dataclasses.asdict(self), CONSTRAINTS, "TrainConfig")
        for name in ("eval_every", "checkpoint_every"):
            # Evaluation and checkpoints happen at log steps, after the interval's metrics are flushed.
            if getattr(self, name) % self.log_every:
                raise InvalidParameterError(
                    f"The {name!r} parameter of TrainConfig must be a multiple of log_every ({self.log_every}). "
                    f"Got {getattr(self, name)!r} instead.",
                    field=name,
                )

    # -- conversions -------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, *, preset: str | None = None) -> "TrainConfig":
        """Build from a mapping; unknown keys are an error, `preset` supplies the defaults."""
        if not isinstance(values, dict):
            raise InvalidParameterError(f"A config must be a mapping of field: value, got {type(values).__name__}.")
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            raise InvalidParameterError(
                f"Unknown config key {unknown[0]!r}. Valid keys are: {', '.join(FIELD_NAMES)}.", field=unknown[0]
            )
        name = preset or values.get("preset") or "fixmatch"
        base = preset_values(name)
        return cls(**{**base, **values, "preset": name})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "TrainConfig":
        return cls.from_dict(parse_yaml(text))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _real(lo, hi=None, closed="both"):
    return Interval(Real, lo, hi, closed)


def _int(lo, hi=None):
    return Interval(Integral, lo, hi, "both")


CONSTRAINTS = {
    "dataset": [Str()],
    "n1": [_int(1), NoneOK()],
    "gamma": [_real(1, None)],
    "m1": [_int(0), NoneOK()],
    "gamma_u": [_real(1, None), NoneOK()],
    "unlabeled_shape": [Options(UNLABELED_SHAPES)],
    "model": [Options(MODEL_NAMES)],
    "steps": [_int(1, 10_000_000)],
    "batch_size": [_int(1, 4096)],
    "mu": [_int(0, 64)],
    "lr": [_real(0, 10, "right")],
    "momentum": [_real(0, 1, "left")],
    "weight_decay": [_real(0, 1)],
    "ema_decay": [_real(0, 1, "left")],
    "threshold": [_real(0, 1, "right")],
    "threshold_schedule": [Options(THRESHOLD_SCHEDULES)],
    "threshold_class_alpha": [_real(0, 5)],
    "threshold_min": [_real(0, 1)],
    "threshold_warmup_steps": [_int(0)],
    "flexmatch_warmup": [Bool()],
    "freematch_momentum": [_real(0, 1, "left")],
    "class_weighting": [Options(CLASS_WEIGHTINGS)],
    "effective_beta": [_real(0, 1, "neither")],
    "logit_adjust_tau": [_real(0, 5)],
    "lambda_u": [_real(0, 100)],
    "unsup_class_alpha": [_real(0, 5)],
    "dist_align": [Options(DIST_ALIGN_TARGETS)],
    "dist_align_momentum": [_real(0, 1, "left")],
    "debias_tau": [_real(0, 5)],
    "aug_strength": [_real(0, 5)],
    "aug_class_alpha": [_real(0, 5)],
    "aug_max_multiplier": [_real(1, 10)],
    "seed": [_int(0, 2**31 - 1)],
    "device": [Options(DEVICES)],
    "log_every": [_int(1)],
    "eval_every": [_int(1)],
    "checkpoint_every": [_int(1)],
    "compile": [Bool()],
    "preset": [Str()],
    "name": [Str()],
}
FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))

# Each preset is just the knobs it changes from the plain FixMatch defaults.
PRESETS: dict[str, dict] = {
    "fixmatch": {},
    "fixmatch-da": {"dist_align": "labeled"},
    "fixmatch-la": {"logit_adjust_tau": 1.0},
    "flexmatch": {"threshold_schedule": "flexmatch"},
    "freematch": {"threshold_schedule": "freematch"},
    "balanced": {
        "threshold_class_alpha": 0.5,
        "threshold_min": 0.8,
        "aug_class_alpha": 0.5,
        "class_weighting": "effective",
        "effective_beta": 0.95,
        "dist_align": "labeled",
    },
}
PRESET_DESCRIPTIONS = {
    "fixmatch": "FixMatch: fixed threshold 0.95, plain cross-entropy.",
    "fixmatch-da": "FixMatch + ReMixMatch distribution alignment of pseudo-labels to the labeled distribution.",
    "fixmatch-la": "FixMatch + logit-adjusted supervised loss (logits + log prior).",
    "flexmatch": "FlexMatch curriculum thresholds: classes the model learns slowly get lower thresholds.",
    "freematch": "FreeMatch self-adaptive thresholds from EMAs of global and per-class confidence.",
    "balanced": "Frequency-scaled thresholds + rare classes augmented harder + effective-number weights + DA.",
}


def parse_yaml(text: str, source: str = "The config") -> dict:
    """``yaml.safe_load`` a mapping of knobs; errors name ``source`` and fit on one line."""
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # PyYAML's own text spans several lines
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidParameterError(f"{source} is not valid YAML{where}: {problem}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InvalidParameterError(f"{source} must be a mapping of field: value, got {type(values).__name__}.")
    return values


def preset_values(name: str) -> dict:
    """The full field dict of a preset; unknown names list the valid ones."""
    if not isinstance(name, str) or name not in PRESETS:
        raise InvalidParameterError(
            f"The 'preset' parameter of TrainConfig must be a str among {{{', '.join(map(repr, PRESETS))}}}. "
            f"Got {name!r} instead.",
            field="preset",
        )
    return {**dataclasses.asdict(TrainConfig()), **PRESETS[name], "preset": name}


def from_preset(preset: str, /, **overrides) -> TrainConfig:
    """A preset with any knob overridden (``name=`` included: ``preset`` is positional-only)."""
    return TrainConfig.from_dict(overrides, preset=preset)
