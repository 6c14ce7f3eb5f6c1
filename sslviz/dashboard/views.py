"""A run's views, declared once: every chart of one run that the Live page's tabs and the HTML report draw.

Each :class:`View` names its tab (a Live tab, a report section) and builds its figure from the run's frames
(:class:`Frames`: each store frame read at most once, and only for the views drawn) in a :class:`Style` (the
Live page's smoothing, x axis, row normalisation and zoom key; the report's plain defaults). The Live page draws
the open tab's views; the report draws every view marked ``report`` (the interactive-only ones, the confidence
heatmaps and the latest-step bars, stay on Live). The technique state is data-driven, one chart per quantity the
run reports: :func:`technique_figures`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go

from . import charts
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from ..engine.registry import UNLABELED_ESTIMATES

TABS = ("Pseudo-labels", "Thresholds", "Confusion", "Validation & test", "Technique state", "Training")
TECHNIQUE_TAB = "Technique state"
COLUMNS = {"Confusion": 3}  # views side by side in a tab's rows (default 2; a wide view takes a row of its own)
CONFUSION_TITLES = {"val": "Validation-set confusion matrix", "test": "Test-set confusion matrix",
                    "pseudo": "Pseudo-label confusion vs hidden truth"}  # store.confusion kind -> chart title


@dataclass(frozen=True)
class Frames:
    """What a run's views read: ``read(name)`` gives the store frame ``scal`` (scalars), ``ct`` (class_train),
    ``ev`` (evals), ``ce`` (class_eval) or ``tech`` (technique); ``confusion(kind)`` the latest (step, matrix)
    shown, or None; ``names`` the class names."""

    read: Callable[[str], pd.DataFrame]
    confusion: Callable[[str], tuple | None]
    names: list[str]


@dataclass(frozen=True)
class Style:
    """How the views are drawn: EMA ``smoothing``, the ``x`` axis ('step' or 'wall'), confusion rows
    ``normalize``d, and ``uirevision`` (Plotly keeps zoom while it stays the same)."""

    smoothing: float = 0.0
    x: str = "step"
    normalize: bool = False
    uirevision: str = "report"

    @property
    def kw(self) -> dict:
        return dict(x=self.x, uirevision=self.uirevision)


@dataclass(frozen=True)
class View:
    key: str  # the Live page's chart key is "live_" + key
    tab: str
    build: Callable[[Frames, Style], go.Figure]
    report: bool = True  # drawn in the HTML report too
    wide: bool = False  # a row of its own
    shown: Callable[[Frames], bool] = lambda f: True  # whether the report draws it (Live draws a placeholder)


def _confusion(kind: str) -> Callable[[Frames, Style], go.Figure]:
    def build(f: Frames, s: Style) -> go.Figure:
        got = f.confusion(kind)
        title = f"{CONFUSION_TITLES[kind]} (step {got[0]})" if got else CONFUSION_TITLES[kind]
        return charts.make_confusion_figure(got[1] if got else None, f.names, normalize=s.normalize, title=title,
                                            uirevision=s.uirevision)
    return build


def _mask(f: Frames, s: Style) -> go.Figure:
    return charts.make_scalars_figure(f.read("scal"), ["mask_rate", "pl_accuracy"], smoothing=s.smoothing,
                                      labels={"mask_rate": "mask rate (accepted share)",
                                              "pl_accuracy": "pseudo-label accuracy"},
                                      title="Mask rate and pseudo-label accuracy", y_title="fraction",
                                      y_range=(0, 1.02), **s.kw)


def _losses(f: Frames, s: Style) -> go.Figure:
    return charts.make_scalars_figure(f.read("scal"), ["loss", "loss_sup", "loss_unsup"], smoothing=s.smoothing,
                                      labels={"loss": "total", "loss_sup": "supervised", "loss_unsup": "unsupervised"},
                                      title="Losses", y_title="loss (cross-entropy)", **s.kw)


VIEWS: tuple[View, ...] = (
    View("conf_pl", "Pseudo-labels", lambda f, s: charts.make_confidence_heatmap(f.read("ct"), "conf_pl", f.names,
                                                                                 **s.kw), report=False),
    View("conf_true", "Pseudo-labels", lambda f, s: charts.make_confidence_heatmap(f.read("ct"), "conf_true",
                                                                                   f.names, **s.kw), report=False),
    View("pl_now", "Pseudo-labels", lambda f, s: charts.make_pseudo_counts_figure(f.read("ct"), f.names,
                                                                                  uirevision=s.uirevision)),
    View("pl_pr", "Pseudo-labels", lambda f, s: charts.make_precision_recall_figure(f.read("ct"), f.names,
                                                                                    uirevision=s.uirevision),
         report=False),
    View("pl_time", "Pseudo-labels", lambda f, s: charts.make_pseudo_counts_over_time_figure(
        f.read("ct"), f.names, smoothing=s.smoothing, **s.kw), wide=True),
    View("threshold", "Thresholds", lambda f, s: charts.make_class_lines_figure(
        f.read("ct"), "threshold", f.names, smoothing=0.0, title="Per-class threshold τ_c", y_title="threshold",
        y_range=(0, 1.02), **s.kw)),
    View("mask", "Thresholds", _mask),
    View("precision_time", "Thresholds", lambda f, s: charts.make_class_lines_figure(
        f.read("ct"), "precision", f.names, smoothing=s.smoothing, title="Pseudo-label precision per class",
        y_title="precision", y_range=(0, 1.02), **s.kw), wide=True, report=False),
    View("cm_val", "Confusion", _confusion("val")),
    View("cm_test", "Confusion", _confusion("test")),
    View("cm_pseudo", "Confusion", _confusion("pseudo"), shown=lambda f: f.confusion("pseudo") is not None),
    View("acc", "Validation & test", lambda f, s: charts.make_eval_figure(
        f.read("ev"), title="Accuracy: validation (lines), test (◆)", **s.kw)),
    View("recall", "Validation & test", lambda f, s: charts.make_class_recall_figure(f.read("ce"), f.names, **s.kw)),
    View("loss", "Training", _losses),
    View("lr", "Training", lambda f, s: charts.make_scalars_figure(
        f.read("scal"), ["lr"], smoothing=0.0, labels={"lr": "learning rate"}, title="Learning rate",
        y_title="learning rate", **s.kw)),
)


def views(tab: str, *, report: bool = False) -> list[View]:
    """The views of ``tab``, in order; with ``report`` only those the report draws."""
    return [v for v in VIEWS if v.tab == tab and (v.report or not report)]


def rows(tab: str, *, report: bool = False) -> list[list[View]]:
    """``views(tab)`` laid out in rows: up to ``COLUMNS`` side by side, a wide view alone.

    >>> [[v.key for v in row] for row in rows("Pseudo-labels")]
    [['conf_pl', 'conf_true'], ['pl_now', 'pl_pr'], ['pl_time']]
    >>> [[v.key for v in row] for row in rows("Confusion")]
    [['cm_val', 'cm_test', 'cm_pseudo']]
    """
    out: list[list[View]] = []
    for view in views(tab, report=report):
        if view.wide or not out or out[-1][-1].wide or len(out[-1]) == COLUMNS.get(tab, 2):
            out.append([view])
        else:
            out[-1].append(view)
    return out


def technique_figures(tech: pd.DataFrame, names, truth, style: Style) -> list[tuple[str, go.Figure]]:
    """(key, figure) of the technique state: each unlabeled-distribution estimate beside the hidden truth
    (``truth``: the run's unlabeled counts, which it never sees), then one chart per reported quantity."""
    if tech.empty:
        return []
    quantities = sorted(tech["name"].unique())
    out = [(f"truth_{name}", charts.make_estimate_vs_truth_figure(tech, name, truth, names,
                                                                   uirevision=style.uirevision))
           for name in UNLABELED_ESTIMATES if name in quantities]
    out += [(f"tech_{name}", charts.make_technique_figure(tech, name, names, smoothing=style.smoothing, **style.kw))
            for name in quantities]
    return out
