"""One validated training configuration shared by the CLI, the dashboard and YAML files."""
from __future__ import annotations

import dataclasses
import difflib
import warnings

import yaml

from .fields import Field
from .params import Bool, InvalidParameterError, NoneOK, Options, Str, check_params, integer, real
from .registry import TECHNIQUE_FIELDS, markdown_techniques
from .splits import SHAPES

UNLABELED_SHAPES = SHAPES
DEVICES = ("auto", "cpu", "cuda")
MODEL_NAMES = ("auto", "mlp", "cnn_digits", "cnn32", "wrn28_2", "text_bow", "text_cnn")  # "auto" + models.MODELS (a test checks)


_DATA, _IMB, _MODEL, _BUDGET, _RUN = ("Dataset", "Imbalance", "Model and optimiser", "Budget, batches, seed and device",
                                      "Run")
# The knobs that are not a technique's, in the order a config lists them. Technique knobs are declared with
# their technique in registry.py; TrainConfig is built from both below.
DATA_FIELDS = (
    Field("dataset", "digits", (Str(),), "digits (default), toy2d, wordnet (text; apt-get install wordnet-base), or a CIFAR-10 pickle / "
          "ImageFolder path, or a text CSV / TSV / JSONL file or folder", _DATA),
    Field("n1", None, (integer(1), NoneOK()), "labeled images of the head class N_1 (empty: the dataset's default)", _IMB,
          label="N₁ (labeled, head class)", placeholder="dataset default"),
    Field("gamma", 50.0, (real(1, None),), "labeled imbalance ratio N_1 / N_K (1 = balanced)", _IMB,
          label="γ = N₁ / N_K (labeled)", step=1.0),
    Field("m1", None, (integer(0), NoneOK()), "unlabeled images of the largest unlabeled class M_1 (empty: the "
          "dataset's default)", _IMB, label="M₁ (unlabeled, largest)", placeholder="dataset default"),
    Field("gamma_u", None, (real(1, None), NoneOK()), "unlabeled imbalance ratio (empty: same as gamma)", _IMB,
          label="γ_u (unlabeled ratio)", step=1.0, placeholder="same as γ"),
    Field("unlabeled_shape", "consistent", (Options(UNLABELED_SHAPES),), "unlabeled class profile: consistent "
          "(same order as labeled), uniform, or reversed", _IMB, label="unlabeled profile"),
    Field("model", "auto", (Options(MODEL_NAMES),), "network; auto picks by input shape and device", _MODEL),
    Field("lr", 0.03, (real(0, 10, "right"),), "SGD learning rate, cosine-decayed to cos(7 pi / 16) of it", _MODEL,
          label="learning rate", step=0.01),
    Field("momentum", 0.9, (real(0, 1, "left"),), "SGD momentum (nesterov)", _MODEL),
    Field("weight_decay", 5e-4, (real(0, 1),), "SGD weight decay (not on biases and BatchNorm)", _MODEL, step=1e-4),
    Field("ema_decay", 0.999, (real(0, 1, "left"),), "EMA of weights used for evaluation; 0 evaluates the raw model",
          _MODEL, step=0.001),
    Field("compile", False, (Bool(),), "torch.compile the model (CUDA only pays off)", _MODEL),
)
BUDGET_FIELDS = (
    Field("steps", 1000, (integer(1, 10_000_000),), "optimiser steps (the whole budget)", _BUDGET),
    Field("batch_size", 64, (integer(1, 4096),), "labeled batch B", _BUDGET, label="batch size B"),
    Field("mu", 7, (integer(0, 64),), "unlabeled batch is mu * B", _BUDGET, label="μ: unlabeled batch = μ × B"),
    Field("seed", 0, (integer(0, 2**31 - 1),), "seed of the split, the initialisation and the batches", _BUDGET),
    Field("device", "auto", (Options(DEVICES),), "auto (cuda if available), cpu or cuda", _BUDGET),
    Field("log_every", 10, (integer(1),), "steps between per-class training metrics", _BUDGET),
    Field("eval_every", 100, (integer(1),), "steps between validation-set evaluations (a multiple of log_every)", _BUDGET),
    Field("checkpoint_every", 250, (integer(1),), "steps between checkpoints (a multiple of log_every)", _BUDGET),
    Field("preset", "fixmatch", (Str(),), "the preset this config started from", _RUN),
    Field("name", "", (Str(),), "free-text label shown in the dashboard", _RUN, label="Run name (optional)"),
)
FIELDS: dict[str, Field] = {f.name: f for f in (*DATA_FIELDS, *TECHNIQUE_FIELDS, *BUDGET_FIELDS)}
CONSTRAINTS = {name: list(f.constraints) for name, f in FIELDS.items()}
FIELD_NAMES = tuple(FIELDS)
# Keys older sslviz versions wrote: old name -> (new name or None, why). Old YAML files and stored configs keep
# loading; each such key is reported once with a DeprecationWarning-style message.
RETIRED_KEYS = {
    "dist_align_momentum": (None, "distribution alignment now averages the last `dist_align_window` batches "
                                  "(ReMixMatch) instead of an EMA; the value is ignored"),
    "acr_est_passes": ("acr_est_epochs", "ACR now counts its own epochs of `acr_epoch_steps` steps (Gank0078/ACR: "
                                         "500) instead of passes over the unlabeled set; renamed acr_est_epochs"),
}


class RetiredKeyWarning(UserWarning):
    """A config used a key this version renamed or dropped; the message says what happened to it."""


class _ConfigMethods:
    """Conversions and validation of TrainConfig (the fields come from FIELDS)."""

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

    @classmethod
    def from_dict(cls, values: dict, *, preset: str | None = None) -> "TrainConfig":
        """Build from a mapping; unknown keys are an error, retired keys a warning, `preset` supplies the defaults."""
        if not isinstance(values, dict):
            raise InvalidParameterError(f"A config must be a mapping of field: value, got {type(values).__name__}.")
        values = _upgrade_keys(values)
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            guess = difflib.get_close_matches(unknown[0], FIELD_NAMES, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise InvalidParameterError(
                f"Unknown config key {unknown[0]!r}.{hint} Valid keys are: {', '.join(FIELD_NAMES)}.", field=unknown[0]
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


TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [(f.name, f.annotation, dataclasses.field(default=f.default)) for f in FIELDS.values()],
    bases=(_ConfigMethods,),
    frozen=True,
)
TrainConfig.__module__ = __name__
TrainConfig.__doc__ = ("Every knob of a run; defaults are plain FixMatch on imbalanced digits. Fields: "
                       "config.DATA_FIELDS, registry.TECHNIQUE_FIELDS, config.BUDGET_FIELDS.")


def _upgrade_keys(values: dict) -> dict:
    """Rename or drop keys older versions wrote, warning once per key."""
    values = dict(values)
    for old, (new, why) in RETIRED_KEYS.items():
        if old in values:
            value = values.pop(old)
            if new is not None and new not in values:
                values[new] = value
            warnings.warn(f"Config key {old!r} is retired: {why}.", RetiredKeyWarning, stacklevel=3)
    return values


# Each preset is just the knobs it changes from the plain FixMatch defaults.
PRESETS: dict[str, dict] = {
    "fixmatch": {},
    "fixmatch-da": {"dist_align": "labeled"},
    "fixmatch-debiaspl": {"debias_tau": 0.4},
    "fixmatch-la": {"logit_adjust_tau": 1.0},
    "flexmatch": {"threshold_schedule": "flexmatch"},
    "freematch": {"threshold_schedule": "freematch"},
    "fixmatch-abc": {"abc": True},
    "fixmatch-acr": {"acr": True},
    "balanced": {
        "threshold_class_alpha": 0.5,
        "threshold_min": 0.8,
        "aug_class_alpha": 0.5,
        # at the field's effective_beta, 0.999 (near inverse frequency): re-chosen on validation on digits and CPU
        # CIFAR-10-LT, where the preset's former 0.95 left the weights flat (bench/RESULTS.md section 14b)
        "class_weighting": "effective",
        "dist_align": "labeled",
    },
    "fixmatch-saw": {"saw": True},
    "fixmatch-adsh": {"threshold_schedule": "adsh"},
    "fixmatch-darp": {"darp": True},
}
PRESET_DESCRIPTIONS = {
    "fixmatch": "FixMatch: fixed threshold 0.95, plain cross-entropy.",
    "fixmatch-da": "FixMatch + ReMixMatch distribution alignment of pseudo-labels to the labeled distribution.",
    "fixmatch-debiaspl": "FixMatch + DebiasPL: debiased pseudo-labels and the adaptive marginal loss (tau 0.4).",
    "fixmatch-la": "FixMatch + logit-adjusted supervised loss (logits + log prior).",
    "flexmatch": "FlexMatch curriculum thresholds: classes the model learns slowly get lower thresholds.",
    "freematch": "FreeMatch: self-adaptive thresholds from EMAs of global and per-class confidence, plus its "
                 "self-adaptive fairness loss. Needs ~4,000 steps (EMAs at momentum 0.999); shorter runs measure its "
                 "warm-up: on CIFAR-10-LT with reversed unlabeled data (CPU, 1,500 steps) it is below FixMatch "
                 "(0.31 vs 0.33 validation balanced accuracy, just beyond the seeds' spread).",
    "fixmatch-abc": "FixMatch + ABC: an auxiliary class-balanced head (Bernoulli-masked losses), predictions from it.",
    "fixmatch-acr": "FixMatch + ACR: a logit-adjusted balanced branch, pseudo-label adjustment chosen from an estimate "
                    "of the unlabeled distribution (consistent, uniform or reversed); predictions from the branch. "
                    "Needs ~4,000 steps: before its estimate starts (step 3,001) tau1 sits at its maximum and pushes "
                    "pseudo-labels onto the rarest classes, so short runs do worse than FixMatch (CIFAR-10-LT, CPU, "
                    "1,500 steps: 0.22 vs 0.34 validation balanced accuracy; the USB port's own log: 0.22 at 1,024).",
    "balanced": "Frequency-scaled thresholds + rare classes' strong views augmented harder + effective-number "
                "weights (beta 0.999, near inverse frequency) + DA. Chosen on validation on digits and CIFAR-10-LT "
                "(CPU, 1,500 steps): the weights are what help CIFAR-10-LT (0.36 vs FixMatch's 0.34), the "
                "thresholds and DA what help digits; with consistent unlabeled data. Under reversed unlabeled data "
                "DA aligns to the wrong profile.",
    "fixmatch-saw": "FixMatch + SAW: loss weights from labeled counts and from pseudo-label counts over the "
                    "unlabeled set, re-estimated each 1,024-step epoch.",
    "fixmatch-adsh": "FixMatch + Adsh: per-class thresholds from confidence quantiles over the unlabeled set, so "
                     "every class admits the head class's fraction.",
    "fixmatch-darp": "FixMatch + DARP: after a warm-up, pseudo-labels of the whole unlabeled set refined toward the "
                     "labeled distribution every 10 steps.",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so
    ``gamma: 10`` then ``gamma: 100`` would train at 100 with no word)."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                line = first.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if line != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first on line {line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str = "The config") -> dict:
    r"""``yaml.safe_load`` a mapping of knobs, refusing a key given twice; errors name ``source`` and fit on one
    line.

    >>> parse_yaml("gamma: 10\nsteps: 300")
    {'gamma': 10, 'steps': 300}
    >>> parse_yaml("gamma: 10\ngamma: 100", source="run.yaml")
    Traceback (most recent call last):
    ...
    sslviz.engine.params.InvalidParameterError: run.yaml is not valid YAML (line 2, column 1): the key 'gamma' is given twice (first on line 1)
    """
    try:
        values = yaml.load(text, Loader=_UniqueKeyLoader)
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


# -- docs derived from the declarations ----------------------------------------------
def markdown_knobs() -> str:
    """The README's knob table: one row per field of ``FIELDS`` (knob, group, allowed values, default, help)."""
    def cell(text: str) -> str:  # plain text in a table cell: no column breaks, no emphasis from "a * b"
        return str(text).replace("|", "\\|").replace("*", "\\*")

    def default(f: Field) -> str:
        if f.default is None and f.placeholder:
            return f"`None` ({f.placeholder})"
        return f"`{f.default!r}`"

    rows = ["| knob | group | allowed values | default | what it does |", "|---|---|---|---|---|"]
    rows += [f"| `{f.name}` | {f.group} | {cell(f.allowed())} | {cell(default(f))} | {cell(f.help)} |"
             for f in FIELDS.values()]
    return "\n".join(rows)


def doc_tables() -> dict[str, str]:
    """The generated README tables by marker name: ``<!-- name:begin -->`` ... ``<!-- name:end -->``."""
    return {"techniques": markdown_techniques(), "knobs": markdown_knobs()}


def fill_doc_tables(text: str) -> str:
    """``text`` (the README) with every marker block replaced by its generated table; a missing marker is an error."""
    for name, table in doc_tables().items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        head, sep, rest = text.partition(begin)
        _, sep2, tail = rest.partition(end)
        if not (sep and sep2):
            raise ValueError(f"The text has no {begin} ... {end} block.")
        text = f"{head}{begin}\n\n{table}\n\n{end}{tail}"
    return text
