"""The bias doctor: what majority bias a run has, the evidence, and what to try.

Pure functions over a run's records (:class:`RunRecords`; :func:`read` builds them from a store). Each kind of
finding is declared once in :data:`KINDS` (its name, what it means, the chart that shows it, its thresholds and its
rule); :func:`diagnose` applies them all and returns the findings, none for a run without a problem.

Where the data carries labels for the unlabeled set (the built-in and folder datasets do: it is their training
split), the rules may read that hidden truth (the unlabeled class counts, the pseudo-labels' correctness); every
finding says whether it did (``source``), and each rule has an estimate to fall back on when the truth is hidden:
the unlabeled class profile by black-box shift estimation (:func:`estimate_profile`: the validation confusion
matrix inverted on the pseudo-label counts) and pseudo-label precision by the precision of the model's validation
predictions. Only validation is read, never test: the doctor's advice must not be chosen on test.

Suggestions (:func:`suggest`) come from what each technique declares (``Technique.addresses``, ``try_with``,
``hurts_under`` in ``engine/registry.py`` and ``engine/methods/``), ranked by the store's own runs where they
compared the technique on and off on the same data (:func:`store_evidence`: "strong" from runs that differ in
nothing else, "weak" otherwise), then by the findings they address, and put last where the technique is known to
work against the data's profile (DA and DARP under reversed data).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from . import bias
from .lifecycle import NoSuchRun
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py

SEVERITIES = ("info", "mild", "severe")


@dataclass
class RunRecords:
    """What the rules read of one run. ``truth``: the unlabeled set's true class counts, None when hidden."""
    labeled_counts: np.ndarray
    truth: np.ndarray | None
    class_names: list
    train: pd.DataFrame  # class_train rows: step, cls, threshold, conf_pl, n_pl, n_accepted, n_true, n_correct
    val_evals: pd.DataFrame  # step, balanced_accuracy (validation)
    val_confusion: np.ndarray | None  # the latest validation confusion matrix (rows: true class)
    cfg: object  # the run's TrainConfig
    step: int  # the last step logged

    @property
    def num_classes(self) -> int:
        return len(self.labeled_counts)

    def hidden(self) -> "RunRecords":
        """The same records with the truth taken away (the unlabeled counts and the pseudo-labels' correctness)."""
        train = self.train.drop(columns=[c for c in ("n_true", "n_correct") if c in self.train], errors="ignore")
        return RunRecords(self.labeled_counts, None, self.class_names, train, self.val_evals, self.val_confusion,
                          self.cfg, self.step)


@dataclass(frozen=True)
class Finding:
    """One problem of a run: its kind, how bad, the classes it concerns, the numbers and steps that show it."""
    kind: str
    title: str
    severity: str
    classes: tuple
    summary: str  # one sentence, with the numbers
    evidence: dict  # numbers (per class where it applies)
    steps: tuple  # (first, last) step the evidence covers
    since: int | None  # the step the problem appeared, where the records say
    chart: str  # where it shows: the Live page tab
    source: str  # "truth" (the unlabeled set's hidden labels), "estimate" or "records"


@dataclass(frozen=True)
class Kind:
    """A kind of finding, declared once: its rule reads :class:`RunRecords` and returns findings of this kind;
    ``measure`` is the validation number a fix of it must move (a key of :func:`validation_numbers`)."""
    name: str
    title: str
    meaning: str
    chart: str
    thresholds: dict
    rule: Callable = field(repr=False, compare=False)
    measure: str = "val_tail_recall"


# -- the estimates the rules fall back on --------------------------------------------------------------------

def estimate_profile(confusion, predicted_counts) -> np.ndarray | None:
    """The unlabeled set's class profile (shares summing to 1) by black-box shift estimation (Lipton et al., 2018):
    with ``confusion[y, p]`` counted on validation, solve ``P(pred = p, y) w = mu`` for the class weights ``w``,
    ``mu`` the profile of the predictions on the unlabeled data (``predicted_counts``); the profile is ``w`` times
    the validation class profile, clipped at 0. None without a usable confusion matrix.

    >>> conf = np.array([[8, 2], [2, 8]])  # validation: 10 of each class, 80 % recall
    >>> np.round(estimate_profile(conf, [26, 74]), 3)  # unlabeled predicted 26 / 74: truly 10 / 90
    array([0.1, 0.9])
    """
    c = np.asarray(confusion, dtype=float)
    mu = np.asarray(predicted_counts, dtype=float)
    if c.ndim != 2 or c.sum() <= 0 or mu.sum() <= 0:
        return None
    joint = (c / c.sum()).T  # joint[p, y] = P(pred = p, y)
    prior = c.sum(axis=1) / c.sum()
    w = np.linalg.lstsq(joint, mu / mu.sum(), rcond=None)[0]
    profile = np.clip(w * prior, 0, None)
    return profile / profile.sum() if profile.sum() > 0 else None


def shares(counts) -> np.ndarray:
    """Counts as shares of their sum (zeros when the sum is 0).

    >>> shares([1, 3]).tolist()
    [0.25, 0.75]
    """
    counts = np.nan_to_num(np.asarray(counts, dtype=float))
    return counts / counts.sum() if counts.sum() > 0 else np.zeros_like(counts)


def recent(train: pd.DataFrame) -> pd.DataFrame:
    """The second half of the logged windows (at least the last one): where a run stands now, not its warm-up."""
    if train.empty:
        return train
    steps = np.sort(train["step"].unique())
    return train[train["step"] >= steps[len(steps) // 2]]


def per_class(frame: pd.DataFrame, column: str, k: int) -> np.ndarray:
    """``column`` summed per class over ``frame`` (length ``k``)."""
    out = np.zeros(k)
    if column in frame and not frame.empty:
        sums = frame.groupby("cls")[column].sum()
        out[sums.index.to_numpy(dtype=int)] = sums.to_numpy(dtype=float)
    return out


def unlabeled_profile(r: RunRecords) -> tuple[np.ndarray | None, str]:
    """(the unlabeled class profile, "truth" or "estimate"); (None, "") when neither is known."""
    if r.truth is not None and np.sum(r.truth) > 0:
        return shares(r.truth), "truth"
    est = estimate_profile(r.val_confusion, per_class(recent(r.train), "n_pl", r.num_classes)) \
        if r.val_confusion is not None else None
    return est, ("estimate" if est is not None else "")


def _names(r: RunRecords, classes) -> str:
    return ", ".join(str(r.class_names[c]) if c < len(r.class_names) else str(c) for c in classes)


def _span(frame: pd.DataFrame) -> tuple:
    return (int(frame["step"].min()), int(frame["step"].max())) if not frame.empty else ()


# -- the rules ----------------------------------------------------------------------------------------------

def tail_starvation(r: RunRecords, kind: Kind) -> list[Finding]:
    """Classes whose share of accepted pseudo-labels is far below their share of the unlabeled data."""
    t = kind.thresholds
    window = recent(r.train)
    accepted = per_class(window, "n_accepted", r.num_classes)
    profile, source = unlabeled_profile(r)
    if profile is None or accepted.sum() < t["min_accepted"]:
        return []
    got = shares(accepted)
    # a class is judged only where its fair share of the accepted pseudo-labels is a count worth reading
    ratio = np.where(profile * accepted.sum() >= t["min_expected"], got / np.maximum(profile, 1e-12), np.inf)
    starved = [int(c) for c in np.flatnonzero(ratio < t["ratio"])]
    if not starved:
        return []
    severe = any(ratio[c] < t["severe_ratio"] for c in starved)
    evidence = {"classes": {str(r.class_names[c]): {"accepted": int(accepted[c]), "share_accepted": round(float(got[c]), 4),
                                                    "share_unlabeled": round(float(profile[c]), 4)} for c in starved},
                "accepted_total": int(accepted.sum())}
    worst = min(starved, key=lambda c: (ratio[c], -profile[c]))  # of the most starved, the largest share
    return [Finding(kind.name, kind.title, "severe" if severe else "mild", tuple(starved),
                    f"{_names(r, starved)}: {got[worst]:.1%} of the accepted pseudo-labels for "
                    f"{r.class_names[worst]} against {profile[worst]:.1%} of the unlabeled data"
                    f"{' (estimated)' if source == 'estimate' else ''}, over steps {_span(window)[0]:,}-"
                    f"{_span(window)[1]:,}",
                    evidence, _span(window), None, kind.chart, source)]


def contamination(r: RunRecords, kind: Kind) -> list[Finding]:
    """A class whose pseudo-labels are far less often right than the others' (it absorbs wrong ones)."""
    t = kind.thresholds
    window = recent(r.train)
    if r.truth is not None and "n_correct" in window and per_class(window, "n_accepted", r.num_classes).sum() > 0:
        n = per_class(window, "n_accepted", r.num_classes)
        right = per_class(window, "n_correct", r.num_classes)
        source, span = "truth", _span(window)
    elif r.val_confusion is not None:  # the model's validation predictions: how often "class c" is right
        c = np.asarray(r.val_confusion, dtype=float)
        n, right = c.sum(axis=0), np.diag(c)
        source = "estimate"
        span = (int(r.val_evals["step"].max()),) * 2 if not r.val_evals.empty else ()
    else:
        return []
    enough = n >= t["min_count"]
    precision = np.where(enough, right / np.maximum(n, 1), np.nan)
    found = []
    for cls in np.flatnonzero(enough):
        others = np.delete(precision, cls)
        others = others[~np.isnan(others)]
        if len(others) == 0:
            continue
        gap = float(np.median(others) - precision[cls])
        if precision[cls] < t["max_precision"] and gap > t["gap"]:
            found.append((int(cls), gap))
    if not found:
        return []
    classes = tuple(c for c, _ in found)
    evidence = {"classes": {str(r.class_names[c]): {"precision": round(float(precision[c]), 4), "labels": int(n[c])}
                            for c in classes},
                "others_median_precision": round(float(np.nanmedian(np.delete(precision, list(classes)))), 4)
                if len(classes) < r.num_classes else None}
    worst = min(classes, key=lambda c: precision[c])
    what = "pseudo-labels" if source == "truth" else "validation predictions (estimate of its pseudo-labels)"
    return [Finding(kind.name, kind.title, "severe" if precision[worst] < t["severe_precision"] else "mild", classes,
                    f"{_names(r, classes)} absorb{'s' if len(classes) == 1 else ''} wrong labels: {precision[worst]:.0%} of its {what} are right, "
                    f"against a median of {evidence['others_median_precision']:.0%} for the other classes",
                    evidence, span, None, kind.chart, source)]


def threshold_starvation(r: RunRecords, kind: Kind) -> list[Finding]:
    """A class the model predicts on unlabeled data whose pseudo-labels are never accepted, window after window,
    because its threshold stays above the confidence the model gives it."""
    t = kind.thresholds
    if r.train.empty:
        return []
    steps = np.sort(r.train["step"].unique())
    last = steps[-t["windows"]:] if len(steps) >= t["windows"] else []
    if len(last) == 0:
        return []
    window = r.train[r.train["step"].isin(last)]
    found, evidence = [], {}
    for cls, rows in window.groupby("cls"):
        predicted, accepted = rows["n_pl"].sum(), rows["n_accepted"].sum()
        threshold, confidence = rows["threshold"].mean(), rows["conf_pl"].mean()
        if predicted > 0 and accepted == 0 and threshold > confidence:
            # the trailing run of windows with nothing accepted: when the starvation began
            mine = r.train[r.train["cls"] == cls].sort_values("step")
            zero = (mine["n_accepted"].to_numpy() == 0)
            start = len(zero) - int(np.argmin(zero[::-1])) if not zero.all() else 0
            since = int(mine["step"].to_numpy()[start])
            found.append(int(cls))
            evidence[str(r.class_names[int(cls)])] = {"windows": int(len(zero) - start), "predicted": int(predicted),
                                                      "accepted": 0, "threshold": round(float(threshold), 4),
                                                      "mean_confidence": round(float(confidence), 4), "since": since}
    if not found:
        return []
    windows = max(v["windows"] for v in evidence.values())
    first = min(found, key=lambda c: evidence[str(r.class_names[c])]["since"])
    e = evidence[str(r.class_names[first])]
    return [Finding(kind.name, kind.title, "severe" if windows >= t["severe_windows"] else "mild", tuple(found),
                    f"{_names(r, found)}: not one pseudo-label accepted in {e['windows']} logging windows although the "
                    f"model predicts it {e['predicted']} times in the last {t['windows']}; threshold "
                    f"{e['threshold']:.2f} above its mean confidence {e['mean_confidence']:.2f}",
                    {"classes": evidence}, _span(r.train), e["since"], kind.chart, "records")]


def majority_drift(r: RunRecords, kind: Kind) -> list[Finding]:
    """Validation predictions concentrating on few classes, or balanced accuracy falling from its best."""
    t = kind.thresholds
    out = []
    if r.val_confusion is not None and np.sum(r.val_confusion) > 0:
        c = np.asarray(r.val_confusion, dtype=float)
        truth, pred = shares(c.sum(axis=1)), shares(c.sum(axis=0))
        effective = lambda p: float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))))  # noqa: E731
        ratio = effective(pred) / effective(truth)
        if ratio < t["effective_ratio"]:
            heavy = tuple(int(k) for k in np.flatnonzero(pred > t["heavy"] * truth))
            ignored = [int(k) for k in np.flatnonzero(pred < t["ignored"] * truth)]
            step = int(r.val_evals["step"].max()) if not r.val_evals.empty else r.step
            out.append(Finding(
                kind.name, kind.title, "severe" if ratio < t["severe_ratio"] else "mild", heavy,
                f"validation predictions concentrate on {_names(r, heavy)}: {pred[list(heavy)].sum():.0%} of them "
                f"for {truth[list(heavy)].sum():.0%} of the data; {len(ignored)} class(es) almost never predicted "
                f"({effective(pred):.1f} effective classes predicted of {effective(truth):.1f})",
                {"predicted_share": dict(zip(map(str, r.class_names), np.round(pred, 4).tolist())),
                 "true_share": dict(zip(map(str, r.class_names), np.round(truth, 4).tolist())),
                 "ignored": [str(r.class_names[k]) for k in ignored]},
                (step, step), None, kind.chart, "records"))
    ev = r.val_evals.sort_values("step")
    if len(ev) >= 3:
        acc = ev["balanced_accuracy"].to_numpy(dtype=float)
        best = int(np.nanargmax(acc))
        tail = acc[-t["falling_evals"]:]
        if best < len(acc) - t["falling_evals"] and np.all(acc[best] - tail > t["drop"]):
            drop = float(acc[best] - acc[-1])
            out.append(Finding(
                kind.name, kind.title, "severe" if drop > t["severe_drop"] else "mild", (),
                f"validation balanced accuracy fell from its best {acc[best]:.3f} (step {int(ev['step'].iloc[best]):,}) "
                f"to {acc[-1]:.3f} (step {int(ev['step'].iloc[-1]):,})",
                {"best": round(float(acc[best]), 4), "latest": round(float(acc[-1]), 4), "drop": round(drop, 4)},
                (int(ev["step"].iloc[best]), int(ev["step"].iloc[-1])), int(ev["step"].iloc[best]), kind.chart,
                "records"))
    return out


def profile_shape(unlabeled, labeled) -> str:
    """'reversed', 'uniform' or 'different': how an unlabeled class profile differs from the labeled one.

    >>> profile_shape([1, 2, 4], [4, 2, 1]), profile_shape([3, 3, 3], [4, 2, 1]), profile_shape([1, 4, 2], [4, 2, 1])
    ('reversed', 'uniform', 'different')
    """
    u, lab = shares(unlabeled), shares(labeled)
    if u.max() <= 1.5 * max(u.min(), 1e-12):
        return "uniform"
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return "reversed" if np.corrcoef(rank(u), rank(lab))[0, 1] < -0.5 else "different"


def distribution_mismatch(r: RunRecords, kind: Kind) -> list[Finding]:
    """The unlabeled class profile differs from the labeled one (uniform, reversed): a technique that aligns to the
    labeled distribution works against the data."""
    t = kind.thresholds
    profile, source = unlabeled_profile(r)
    if profile is None or np.sum(r.labeled_counts) <= 0:
        return []
    labeled = shares(r.labeled_counts)
    distance = 0.5 * float(np.abs(profile - labeled).sum())
    if distance < t["distance"]:
        return []
    shape = profile_shape(profile, labeled)
    aligned = [name for name, on in (("distribution alignment to the labeled profile", r.cfg.dist_align == "labeled"),
                                      ("DARP", getattr(r.cfg, "darp", False))) if on]
    return [Finding(kind.name, kind.title, "severe" if shape == "reversed" or distance > t["severe_distance"] else "mild",
                    (), f"the unlabeled data looks {shape}, not like the labeled data (total variation "
                        f"{distance:.2f}{', estimated' if source == 'estimate' else ''})"
                        + (f"; this run aligns to the labeled profile ({', '.join(aligned)}), against the data"
                           if aligned else ""),
                    {"shape": shape, "total_variation": round(distance, 4),
                     "unlabeled_share": dict(zip(map(str, r.class_names), np.round(profile, 4).tolist())),
                     "labeled_share": dict(zip(map(str, r.class_names), np.round(labeled, 4).tolist())),
                     "aligned_to_labeled": aligned},
                    _span(recent(r.train)) if source == "estimate" else (), None, kind.chart, source)]


def not_yet_itself(r: RunRecords, kind: Kind) -> list[Finding]:
    """A technique still short of the budget its paper needs (``Technique.min_steps``, ``phases``)."""
    from ..engine.registry import TECHNIQUES
    from ..engine.technique import phase_at

    out = []
    for tech in TECHNIQUES:
        need = tech.min_steps(r.cfg) if tech.active(r.cfg) else 0
        if need <= r.step:
            continue
        now, _ = phase_at(tech.phases(r.cfg), max(1, r.step)) if tech.phases(r.cfg) else (None, None)
        ending = r.cfg.steps < need
        out.append(Finding(kind.name, kind.title, "info", (),
                           f"{tech.title} needs about {need:,} steps to be itself; "
                           + (f"this run ends at {r.cfg.steps:,}, so it shows the early phase only"
                              if ending else f"at step {r.step:,} it is not there yet")
                           + (f" ({now.label})" if now else ""),
                           {"technique": tech.name, "needs": int(need), "at": int(r.step), "budget": int(r.cfg.steps),
                            "phase": now.label if now else None},
                           (1, int(r.step)), None, kind.chart, "records"))
    return out


KINDS = (
    Kind("tail_starvation", "tail starvation", "classes get far fewer accepted pseudo-labels than their share of the "
         "unlabeled data", "Pseudo-labels",
         {"ratio": 0.25, "severe_ratio": 0.05, "min_expected": 10, "min_accepted": 50}, tail_starvation),
    Kind("contamination", "pseudo-label contamination", "a class absorbs wrong pseudo-labels: its precision is far "
         "below the others'", "Pseudo-labels",
         {"min_count": 20, "max_precision": 0.6, "gap": 0.25, "severe_precision": 0.4}, contamination,
         "val_balanced_accuracy"),
    Kind("threshold_starvation", "threshold starvation", "a class the model predicts never passes its threshold",
         "Thresholds", {"windows": 5, "severe_windows": 10}, threshold_starvation),
    Kind("majority_drift", "prediction collapse / majority drift", "validation predictions concentrate on few "
         "classes, or balanced accuracy falls from its best", "Confusion",
         {"effective_ratio": 0.6, "severe_ratio": 0.4, "heavy": 1.5, "ignored": 0.25, "falling_evals": 2,
          "drop": 0.05, "severe_drop": 0.15}, majority_drift),
    Kind("distribution_mismatch", "distribution mismatch", "the unlabeled class profile is not the labeled one",
         "Data", {"distance": 0.2, "severe_distance": 0.4}, distribution_mismatch),
    Kind("not_yet_itself", "not yet itself", "a technique is still short of the budget its paper needs", "Live",
         {}, not_yet_itself),
)
BY_NAME = {k.name: k for k in KINDS}


def diagnose(r: RunRecords) -> list[Finding]:
    """Every finding of every kind, the most severe first; [] for a run without a problem."""
    found = [f for kind in KINDS for f in kind.rule(r, kind)]
    return sorted(found, key=lambda f: -SEVERITIES.index(f.severity))


@dataclass(frozen=True)
class Suggestion:
    """A change to try: the technique, the knobs to set, the findings it addresses and what the advice rests on."""
    technique: str
    change: dict
    addresses: tuple
    rests_on: str
    caution: str = ""


SAME_DATA = ("dataset", "gamma", "gamma_u", "n1", "m1", "unlabeled_shape", "val_per_class")  # what "the same data" is
IGNORED = ("seed", "name", "preset", "device", "log_every", "eval_every", "checkpoint_every", "compile")  # no effect


@dataclass(frozen=True)
class StoreRun:
    """A finished run of the store as evidence: its config and its latest validation numbers."""
    config: dict
    val_balanced_accuracy: float
    val_tail_recall: float
    cfg: object = field(init=False, repr=False, compare=False)  # the config read once, for every technique asked

    def __post_init__(self):
        from ..engine.config import RetiredKeyWarning, TrainConfig

        object.__setattr__(self, "cfg", _stored_config(self.config, RetiredKeyWarning, TrainConfig))


def comparison(cfg: dict, other: dict, knobs: set) -> str | None:
    """How ``other`` (a stored run's config) compares with the diagnosed ``cfg`` as evidence about a technique
    whose knobs are ``knobs``: "strong" when they differ in nothing but those knobs (and seed, name, logging),
    "weak" on the same data with other differences, None on other data.

    >>> base = {"dataset": "digits", "gamma": 50.0, "seed": 0, "lr": 0.03, "abc": False}
    >>> [comparison(base, dict(base, **c), {"abc"}) for c in ({"abc": True, "seed": 1}, {"lr": 0.1}, {"gamma": 10.0})]
    ['strong', 'weak', None]
    """
    if any(cfg.get(k) != other.get(k) for k in SAME_DATA):
        return None
    differ = {k for k in set(cfg) | set(other) if cfg.get(k) != other.get(k)} - set(IGNORED) - knobs
    return "weak" if differ else "strong"


def store_evidence(tech, cfg, runs: list[StoreRun]) -> tuple[str, float] | None:
    """What the store's finished runs say about switching ``tech`` on for a run of ``cfg``: ("strong, validation
    ...", difference) from runs that differ only in the technique's knobs, else ("weak, ...", difference) from runs on
    the same data; None when no run on the same data had it on and another off. The difference is in the mean
    validation recall of the 3 rarest classes (on minus off)."""
    knobs = {f.name for f in tech.fields} | set(tech.try_with)
    mine = cfg.to_dict()
    for strength in ("strong", "weak"):
        on, off = [], []
        for run in runs:
            kind = comparison(mine, run.config, knobs)
            if kind is None or (strength == "strong" and kind != "strong"):
                continue
            (on if tech.active(run.cfg) else off).append(run)
        on = [r for r in on if not np.isnan(r.val_tail_recall)]
        off = [r for r in off if not np.isnan(r.val_tail_recall)]
        if on and off:
            a = np.mean([r.val_tail_recall for r in off])
            b = np.mean([r.val_tail_recall for r in on])
            spread = max(np.std([r.val_tail_recall for r in off]), np.std([r.val_tail_recall for r in on]))
            acc = (np.mean([r.val_balanced_accuracy for r in off]), np.mean([r.val_balanced_accuracy for r in on]))
            return (f"store, {strength}: validation 3-rarest recall {a:.2f} -> {b:.2f} (balanced accuracy {acc[0]:.3f} "
                    f"-> {acc[1]:.3f}), {len(off)} run(s) off vs {len(on)} on, seeds' spread {spread:.2f}"
                    + ("" if strength == "strong" else "; the runs differ in other knobs too"), float(b - a))
    return None


def stored_runs(store) -> list[StoreRun]:
    """The store's finished runs with a validation evaluation, as evidence."""
    out = []
    for row in store.runs(include_archived=True).itertuples():
        if row.status != "finished" or np.isnan(row.val_balanced_accuracy):
            continue
        summary = bias.run_bias_summary(store, int(row.id))
        out.append(StoreRun(row.config, float(row.val_balanced_accuracy), float(summary["val_tail_recall"])))
    return out


def suggest(findings: list[Finding], cfg, runs: list[StoreRun] = ()) -> list[Suggestion]:
    """Techniques that declare they address the findings (not already on), ranked: those the store's ``runs`` show
    helping (strong evidence first) ahead, those they show hurting last; the rest by the findings they address
    (severe counting double); one that works against the data's profile (``hurts_under``) after those, with the
    reason. Each says what its rank rests on."""
    from ..engine.registry import TECHNIQUES

    shape = next((f.evidence["shape"] for f in findings if f.kind == "distribution_mismatch"), None)
    weight = {f.kind: 0 for f in findings}
    for f in findings:
        weight[f.kind] = max(weight[f.kind], SEVERITIES.index(f.severity))
    ranked = []
    for tech in TECHNIQUES:
        hits = [k for k in tech.addresses if k in weight]
        if not hits or not tech.try_with or tech.active(cfg):
            continue
        hurts = shape in tech.hurts_under
        score = sum(weight[k] for k in hits) - (100 if hurts else 0)
        caution = f"declared to work against {shape} unlabeled data" if hurts else ""
        rests_on = "declared: what the technique is for (no run in this store compared it)"
        seen = store_evidence(tech, cfg, list(runs)) if runs else None
        if seen is not None:
            rests_on, diff = seen
            score += (1000 if seen[0].startswith("store, strong") else 200) * np.sign(diff) + diff
        ranked.append((score, Suggestion(tech.title, dict(tech.try_with), tuple(hits), rests_on, caution)))
    return [s for _, s in sorted(ranked, key=lambda x: -x[0])]


# -- reading a stored run --------------------------------------------------------------------------------------

def read(store, run_id: int, *, truth: bool = True, max_points: int | None = None) -> RunRecords:
    """A stored run's records (validation only); ``truth=False`` hides the unlabeled set's labels. ``max_points``
    bins the pseudo-label windows past that many steps (counts summed: a bin reads as one window)."""
    from ..engine.config import RetiredKeyWarning, TrainConfig

    row = store.run(run_id)
    if row is None:
        raise NoSuchRun(run_id, store.path)
    info = row.get("info") or {}
    found = store.confusion(run_id, "val")
    train = store.class_train(run_id, max_points=max_points)
    k = max(len(info.get("labeled_counts") or ()), len(info.get("class_names") or ()),
            int(train["cls"].max()) + 1 if not train.empty else 0, 0 if found is None else len(found[1]))
    labeled = np.asarray(info.get("labeled_counts") or np.zeros(k), dtype=float)  # zeros: a run recorded without
    records = RunRecords(  # its split (no rule that compares with the labeled profile then fires)
        labeled_counts=labeled,
        truth=np.asarray(info["unlabeled_counts"], dtype=float) if info.get("unlabeled_counts") else None,
        class_names=list(info.get("class_names") or range(len(labeled))),
        train=train,
        val_evals=store.evals(run_id, split="val"),
        val_confusion=None if found is None else np.asarray(found[1], dtype=float),
        cfg=_stored_config(row["config"], RetiredKeyWarning, TrainConfig),
        step=int(row.get("step") or 0))
    return records if truth else records.hidden()


def _stored_config(values: dict, retired, config):
    """A stored run's config; a key retired since it ran is ignored without a word (the run is history)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", retired)
        return config.from_dict(values)


def report(store, run_id: int, *, truth: bool = True) -> dict:
    """The doctor's report of a stored run: its findings, the suggestions and ``bias.run_bias_summary``'s numbers
    (JSON-ready)."""
    records = read(store, run_id, truth=truth)
    findings = diagnose(records)
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v)
               for k, v in bias.run_bias_summary(store, run_id).items() if not k.startswith("test_")}
    return {"run": run_id, "step": records.step, "truth_used": truth and records.truth is not None,
            "findings": [asdict(f) for f in findings],
            "suggestions": [asdict(s) for s in suggest(findings, records.cfg, stored_runs(store))],
            "verdicts": verdicts(store, run_id), "summary": summary}


def headline(findings) -> str:
    """One line: '2 findings: tail starvation — severe; distribution mismatch — mild', or 'no finding'."""
    items = [(f["title"], f["severity"]) if isinstance(f, dict) else (f.title, f.severity) for f in findings]
    if not items:
        return "no finding"
    return (f"{len(items)} finding{'s' if len(items) > 1 else ''}: "
            + "; ".join(f"{title} — {severity}" for title, severity in items))


def format_text(rep: dict) -> str:
    """The report as the CLI prints it."""
    lines = [f"run {rep['run']} at step {rep['step']:,}: {headline(rep['findings'])}"
             + ("" if rep["truth_used"] else " (the unlabeled set's labels were not used)")]
    for f in rep["findings"]:
        steps = f"steps {f['steps'][0]:,}-{f['steps'][1]:,}" if f["steps"] else "no step range"
        lines.append(f"- {f['title']} ({f['severity']}): {f['summary']}. [{f['source']}; {steps}"
                     + (f"; since step {f['since']:,}" if f["since"] else "") + f"; chart: {f['chart']}]")
    if rep["suggestions"]:
        lines.append(f"what to try, best first ({min(5, len(rep['suggestions']))} of {len(rep['suggestions'])}; "
                     "--json lists all):")
        for i, s in enumerate(rep["suggestions"][:5], 1):
            change = ", ".join(f"{k}={v}" for k, v in s["change"].items())
            lines.append(f"{i}. {s['technique']} ({change}) for {', '.join(s['addresses'])}; rests on: {s['rests_on']}"
                         + (f"; caution: {s['caution']}" if s["caution"] else ""))
    for v in rep.get("verdicts", ()):
        lines.append(f"tried: {v}")
    return "\n".join(lines)


def to_json(rep: dict) -> str:
    return json.dumps(rep, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v))


# -- try it: a suggestion launched beside the run, and the verdict on the finding it was meant to fix --------------

MEASURES = {"val_tail_recall": "validation recall of the 3 rarest classes",
            "val_balanced_accuracy": "validation balanced accuracy"}


def trial_configs(cfg, change: dict, seeds) -> list[tuple[str, object]]:
    """The runs that try ``change`` on a run of ``cfg``: ("treatment", the change) for every seed of ``seeds`` (the
    run's own first), and ("control", the run as it was) for every seed but its own (the run itself is that one):
    same data, budget and every other knob, so the comparison is strong evidence."""
    from ..engine.config import TrainConfig

    base = cfg.to_dict()
    out = [("treatment", TrainConfig.from_dict({**base, **change, "seed": int(seed)})) for seed in seeds]
    out += [("control", TrainConfig.from_dict({**base, "seed": int(seed)})) for seed in seeds if int(seed) != cfg.seed]
    return out


def target_finding(findings, suggestion) -> str:
    """The kind of the most severe of ``findings`` that ``suggestion`` addresses (findings come most severe first)."""
    addressed = suggestion["addresses"] if isinstance(suggestion, dict) else suggestion.addresses
    kinds = [f["kind"] if isinstance(f, dict) else f.kind for f in findings]
    return next((k for k in kinds if k in addressed), addressed[0])


def launch_trial(store, run_id: int, suggestion: Suggestion, finding: str, seeds=(), *, submit) -> list[int]:
    """Launch ``suggestion`` beside stored run ``run_id`` for ``finding`` (a kind name): ``submit(cfg) -> run id``
    records and queues each run (the dashboard's or the CLI's); each new run's info says which trial it belongs to.
    ``seeds``: more seeds for both arms beside the run's own. Returns the new run ids."""
    from ..engine.config import RetiredKeyWarning, TrainConfig

    row = store.run(run_id)
    if row is None:
        raise NoSuchRun(run_id, store.path)
    cfg = _stored_config(row["config"], RetiredKeyWarning, TrainConfig)
    ids = []
    for arm, trial in trial_configs(cfg, suggestion.change, [cfg.seed, *[s for s in seeds if int(s) != cfg.seed]]):
        label = f"try {suggestion.technique}" if arm == "treatment" else "as it was"
        new = submit(TrainConfig.from_dict({**trial.to_dict(), "name": f"{label} (for #{run_id})"}))
        if new is None:
            break
        info = store.run(new)["info"]
        store.update_run(new, info={**info, "trial": {"of": run_id, "arm": arm, "finding": finding,
                                                      "technique": suggestion.technique, "change": suggestion.change}})
        ids.append(int(new))
    return ids


def validation_numbers(store, run_id: int) -> dict:
    """A run's latest validation balanced accuracy and 3-rarest recall (NaN where not evaluated)."""
    evals = store.latest_evals(run_id).get("val") or {}
    return {"val_balanced_accuracy": float(evals.get("balanced_accuracy", float("nan"))),
            "val_tail_recall": float(bias.run_bias_summary(store, run_id)["val_tail_recall"])}


def verdicts(store, run_id: int) -> list[str]:
    """One sentence per trial launched for ``run_id``: the measure of the finding it was meant to fix, control ->
    treatment, on validation, with the seeds; "it worked" only when the gain exceeds the seeds' spread (so never
    from one seed), "waiting" while its runs train."""
    trials: dict = {}
    for rid, status, t in store.trial_runs(run_id):
        trials.setdefault((t["technique"], t["finding"]), []).append((t["arm"], rid, status))
    out = []
    for (technique, finding), members in trials.items():
        kind = BY_NAME.get(finding)
        measure = kind.measure if kind else "val_balanced_accuracy"
        arms = {"control": [(run_id, (store.run(run_id) or {}).get("status"))], "treatment": []}
        for arm, rid, status in members:
            arms[arm].append((rid, status))
        waiting = sorted(rid for rows in arms.values() for rid, status in rows if status != "finished")
        if waiting:
            out.append(f"{technique} for {kind.title if kind else finding}: waiting for run(s) "
                       f"{', '.join(f'#{r}' for r in waiting)} to finish")
            continue
        values = {arm: [v for rid, _ in rows if not np.isnan(v := validation_numbers(store, rid)[measure])]
                  for arm, rows in arms.items()}  # a run never evaluated on validation (an old store's) is left out
        if not (values["control"] and values["treatment"]):
            out.append(f"{technique} for {kind.title if kind else finding}: no validation evaluation to compare")
            continue
        a, b = np.mean(values["control"]), np.mean(values["treatment"])
        spread = max(np.std(values["control"]), np.std(values["treatment"]))
        n = min(len(values["control"]), len(values["treatment"]))
        if n < 2:
            word = "one seed cannot tell a change from noise: try it with more seeds"
        elif b - a > spread:
            word = "it worked"
        elif a - b > spread:
            word = "it made it worse"
        else:
            word = "within the seeds' spread: no effect shown"
        out.append(f"{technique} for {kind.title if kind else finding}: {MEASURES[measure]} {a:.2f} -> {b:.2f}, "
                   f"{n} seed(s) each, spread {spread:.2f}: {word}")
    return out
