"""Pure figure builders for the dashboard: ``make_*_figure(df, ...) -> go.Figure``.

No Streamlit here. Every figure has a title, axis titles with units and class
names, and every per-class series uses ``class_color(k)`` so class k has the
same colour in every chart. Figures carry a ``uirevision`` so a live refresh
keeps the user's zoom.

Data come from `runs.store.RunStore` readers (long format: one row per
step and class) and from `preview_split` frames (``class, class_name, set, count``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..runs.bias import LABELS, PSEUDO_KEYS, RECALL_KEYS
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from ..runs.records import NO_VAL_MESSAGE, SCALAR_CLS, SPLIT_LABELS
from ..runs.sweep_results import METRICS as SWEEP_METRICS

PALETTE = tuple(qualitative.Plotly) + tuple(qualitative.Dark24)  # class k -> PALETTE[k % len]
RUN_PALETTE = tuple(qualitative.Set2) + tuple(qualitative.Dark2)  # run series (Compare page)
SETS = ("labeled", "unlabeled", "validation", "test")  # the split preview's sets, in this order
X_TITLES = {"step": "training step", "wall": "wall time (s since first log)"}
DEFAULT_HEIGHT = 360
TEST_MARKER = dict(symbol="diamond", size=11, line=dict(width=1, color="white"))
SPLIT_LEGEND = "lines = validation (every eval), ◆ = test (end of run / on demand)"


# -- colours and small helpers ----------------------------------------------
def class_color(k: int) -> str:
    """The fixed colour of class ``k`` (hex), shared by every chart."""
    return PALETTE[int(k) % len(PALETTE)]


def class_colors(num_classes: int) -> list[str]:
    return [class_color(k) for k in range(num_classes)]


def class_name(class_names: Sequence[str] | None, k: int) -> str:
    """``class_names[k]``, or ``str(k)`` when names are missing or too short."""
    if class_names is not None and 0 <= int(k) < len(class_names):
        return str(class_names[int(k)])
    return str(int(k))


def _rgba(color: str, alpha: float) -> str:
    """'#rrggbb' or 'rgb(r, g, b)' with an alpha channel."""
    if color.startswith("#"):
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(float(v)) for v in color[color.index("(") + 1:color.index(")")].split(",")[:3])
    return f"rgba({r},{g},{b},{alpha})"


def ema_smooth_loop(values, weight: float) -> np.ndarray:
    """`ema_smooth` as TensorBoard writes it, a Python loop over the points: the reference it is tested against
    (bench/ema.py times both)."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    values = np.asarray(values, dtype=float)
    out = values.copy()
    if weight == 0:
        return out
    last, n = 0.0, 0
    for i, v in enumerate(values):
        if not np.isfinite(v):
            continue
        last = weight * last + (1 - weight) * v
        n += 1
        out[i] = last / (1 - weight**n)
    return out


def ema_smooth(values, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average.

    ``last = weight * last + (1 - weight) * v`` starting from 0, divided by
    ``1 - weight ** n`` (n = finite values seen so far) so early points are
    not pulled toward 0. Non-finite values pass through unchanged and do not
    update the average. ``weight = 0`` returns the values. This is pandas'
    ``ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean()`` (equal to the
    loop `ema_smooth_loop` to 1e-9, and faster: bench/RESULTS.md).

    >>> ema_smooth([1.0, 2.0], 0.5).round(4).tolist()
    [1.0, 1.6667]
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    values = np.asarray(values, dtype=float)
    if weight == 0 or not len(values):
        return values.copy()
    finite = np.isfinite(values)
    out = pd.Series(np.where(finite, values, np.nan)).ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean().to_numpy()
    return np.where(finite, out, values)


def attach_wall(df: pd.DataFrame, scalars: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with a ``wall`` column (seconds since the first log) mapped from its steps.

    ``df`` rows without their own ``wall`` get one interpolated from the
    ``(step, wall)`` pairs of ``scalars``.
    """
    out = df.copy()
    if scalars is None or scalars.empty:
        out["wall"] = np.nan
        return out
    ref = scalars.sort_values("step")
    t0 = float(ref["wall"].min())
    if "wall" in out.columns:
        out["wall"] = out["wall"].astype(float) - t0
    else:
        out["wall"] = np.interp(out["step"].to_numpy(float), ref["step"].to_numpy(float), ref["wall"].to_numpy(float)) - t0
    return out


def estimate_eta(steps, walls, total_steps: int, window: int = 50) -> float | None:
    """Seconds left at the recent rate (last ``window`` logs), or None when unknown.

    >>> estimate_eta([0, 10, 20], [0.0, 1.0, 2.0], 100)
    8.0
    """
    steps = np.asarray(steps, dtype=float)[-window:]
    walls = np.asarray(walls, dtype=float)[-window:]
    if len(steps) < 2 or walls[-1] <= walls[0] or steps[-1] <= steps[0]:
        return None
    rate = (steps[-1] - steps[0]) / (walls[-1] - walls[0])  # steps per second
    return float(max(0.0, (total_steps - steps[-1]) / rate))


def format_seconds(seconds: float | None) -> str:
    """'1h 02m', '3m 05s', '42s' or '?'."""
    if seconds is None or not np.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, uirevision, height=DEFAULT_HEIGHT, **kw) -> go.Figure:
    fig.update_layout(
        title=dict(text=title),
        xaxis_title=x_title,
        yaxis_title=y_title,
        uirevision=str(uirevision),
        height=height,
        margin=dict(l=60, r=20, t=60, b=50),
        legend=dict(title=kw.pop("legend_title", None)),
        **kw,
    )
    return fig


def empty_figure(title: str, message: str = "no data yet", uirevision="sslviz") -> go.Figure:
    """An empty chart saying why (``message``): e.g. the Live page's while a run boots, which also has the
    browser load plotly.js (1-2 s of parsing on 2 cores) while the run trains to its first log step."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, "", "", uirevision)


def _x_title(x: str) -> str:
    return X_TITLES.get(x, x)


def compact(values) -> np.ndarray:
    """``values`` as a NumPy array Plotly writes compactly (base64): floats as float32, integers as int32.

    A figure's JSON is what a refresh sends to the browser; float32 keeps 7 significant digits.
    """
    a = np.asarray(values)
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.dtype.kind in "iu" and len(a) and np.abs(a).max() < 2**31:
        return a.astype(np.int32)
    return a


def bin_band(df: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(min, max) of ``column`` per step bin of a binned store frame (`RunStore._series`), or None when no row
    merges several log steps (nothing to show beyond the line)."""
    if df is None or "n_logs" not in df or f"{column}_min" not in df or not (df["n_logs"] > 1).any():
        return None
    return df[f"{column}_min"].to_numpy(float), df[f"{column}_max"].to_numpy(float)


def per_log(df: pd.DataFrame, column: str) -> np.ndarray:
    """A summed count per logging window: the bin's sum over its ``n_logs`` (the values as they are unbinned)."""
    values = df[column].to_numpy(float)
    return values / df["n_logs"].to_numpy(float) if "n_logs" in df else values


def _add_lines(fig, x, y, name, color, smoothing, dash=None, legendgroup=None, showlegend=True, row=None, col=None,
               band=None):
    """A series as a line. ``band`` (lo, hi) of binned data: the bin's min–max as a shaded band, so a spike
    merged into a bin stays visible; otherwise, with smoothing, the raw series stays as a faint line underneath."""
    add = (lambda t: fig.add_trace(t, row=row, col=col)) if row else fig.add_trace
    y = np.asarray(y, dtype=float)
    x = np.asarray(x)
    group = legendgroup or name
    if band is not None:
        lo, hi = band
        add(go.Scatter(x=compact(np.r_[x, x[::-1]]), y=compact(np.r_[hi, lo[::-1]]), fill="toself",
                       fillcolor=_rgba(color, 0.18), line=dict(width=0), name=f"{name} (min–max per bin)",
                       legendgroup=group, showlegend=False, hoverinfo="skip"))
    elif smoothing > 0:
        add(go.Scatter(x=compact(x), y=compact(y), mode="lines", name=f"{name} (raw)", legendgroup=group,
                       showlegend=False, line=dict(color=_rgba(color, 0.25), dash=dash), hoverinfo="skip"))
    if smoothing > 0:
        y = ema_smooth(y, smoothing)
    add(go.Scatter(x=compact(x), y=compact(y), mode="lines", name=name, legendgroup=group, showlegend=showlegend,
                   line=dict(color=color, dash=dash)))


def _split_rows(df: pd.DataFrame, split: str, x: str) -> pd.DataFrame:
    return df[df["split"] == split].sort_values(x)


def _add_split_series(fig, df: pd.DataFrame, x: str, column: str, name: str, color: str, smoothing: float = 0.0,
                      test_in_legend: bool = True) -> None:
    """Validation as a line, the curve to watch; test as diamond markers, since the test set is evaluated only
    at the end of a run and on demand (often a single point). ``df`` is a store frame with a ``split`` column."""
    val, test = _split_rows(df, "val", x), _split_rows(df, "test", x)
    if not val.empty:
        _add_lines(fig, val[x].to_numpy(), val[column].to_numpy(dtype=float), f"{name} ({SPLIT_LABELS['val']})",
                   color, smoothing, legendgroup=name)
    if not test.empty:
        fig.add_trace(go.Scatter(
            x=test[x].to_numpy(), y=test[column].to_numpy(dtype=float), mode="markers",
            name=f"{name} ({SPLIT_LABELS['test']})", legendgroup=name, showlegend=test_in_legend,
            marker=dict(color=color, **TEST_MARKER),
            hovertemplate=f"{name}<br>test %{{y:.3f}}<br>%{{x}}<extra></extra>"))


def has_validation(df: pd.DataFrame | None) -> bool:
    """Whether a store frame with a ``split`` column holds validation rows (runs before the split have none)."""
    return df is not None and not df.empty and (df["split"] == "val").any()


def _note_no_validation(fig: go.Figure) -> go.Figure:
    fig.add_annotation(text=NO_VAL_MESSAGE, showarrow=False, x=0.5, y=1.0, xref="paper", yref="paper",
                       yanchor="bottom", font=dict(size=12, color="#888"))
    return fig


# -- splits ---------------------------------------------------------------
def make_split_counts_figure(split: pd.DataFrame, *, title: str = "Examples per class", log_y: bool = False,
                             uirevision="split") -> go.Figure:
    """One bar panel per set (labeled, unlabeled, validation, test: those ``split`` has), bars coloured by class.

    ``split`` has columns ``class, class_name, set, count`` (`preview_split`).
    """
    if split is None or split.empty:
        return empty_figure(title, uirevision=uirevision)
    sets = [s for s in SETS if s in set(split["set"])]
    fig = make_subplots(rows=1, cols=len(sets), subplot_titles=[f"{s} ({int(split.loc[split['set'] == s, 'count'].sum())})"
                                                                 for s in sets])
    for j, s in enumerate(sets, start=1):
        part = split[split["set"] == s].sort_values("class")
        fig.add_trace(go.Bar(x=part["class_name"].astype(str).tolist(), y=part["count"].tolist(), name=s,
                             marker_color=[class_color(k) for k in part["class"]], showlegend=False,
                             hovertemplate="class %{x}<br>%{y} examples<extra>" + s + "</extra>"), row=1, col=j)
        fig.update_xaxes(title_text="class", type="category", row=1, col=j)
    fig.update_yaxes(title_text="examples", row=1, col=1)
    if log_y:
        fig.update_yaxes(type="log")
    return fig.update_layout(title=dict(text=title), uirevision=str(uirevision), height=DEFAULT_HEIGHT,
                             margin=dict(l=60, r=20, t=80, b=50))


SPLIT_BAR = "#9ecae1"


def split_counts_html(class_names: Sequence[str], counts: Mapping[str, Sequence[int]]) -> str:
    """The split as an HTML table: one row per class, one column per set (``splits.split_counts``), a bar in every
    cell scaled to its column's largest count, so each set's shape shows.

    Plain HTML from numbers, no pandas and no plotly: the Setup page draws it on its first paint, which pandas'
    import (0.25 s; its ``Styler.bar`` drew this before) and plotly.js (4.7 MB, 1-2 s to parse on 2 cores) would
    delay (``bench/live.py --browser``).

    >>> html = split_counts_html(["a", "<b>"], {"labeled": [50, 5], "test": [20, 20]})
    >>> html.count("<tr>"), "&lt;b&gt;" in html, "#9ecae1 10.0%" in html, "#9ecae1 100.0%" in html
    (3, True, True, True)
    """
    sets = list(counts)
    peak = {s: max(1, *map(int, counts[s])) for s in sets}

    def cell(s: str, n: int) -> str:
        filled = f"{100 * n / peak[s]:.1f}%"
        return (f'<td style="background: linear-gradient(90deg, {SPLIT_BAR} {filled}, transparent {filled}) '
                f'no-repeat center / 100% 70%">{n}</td>')

    head = "".join(f"<th>{s}</th>" for s in sets)
    rows = "".join(f"<tr><th>{escape(str(name))}</th>{''.join(cell(s, int(counts[s][k])) for s in sets)}</tr>"
                   for k, name in enumerate(class_names))
    style = "<style>.split-counts td, .split-counts th {padding: 1px 10px; text-align: right; font-size: 0.85rem}</style>"
    return f'{style}<table class="split-counts"><thead><tr><th>class</th>{head}</tr></thead><tbody>{rows}</tbody></table>'


# -- live run: per-class training metrics -----------------------------------
def pivot_class_step(df: pd.DataFrame, column: str, x: str = "step") -> pd.DataFrame:
    """``column`` as a (class x x-value) table: rows sorted classes, columns sorted x."""
    return df.pivot_table(index="cls", columns=x, values=column, aggfunc="mean", dropna=False).sort_index()


def make_confidence_heatmap(class_train: pd.DataFrame, column: str = "conf_pl", class_names=None, *, x: str = "step",
                            title: str | None = None, uirevision="live") -> go.Figure:
    """Heatmap of mean confidence, class (rows) by step (columns); binned frames: the bin's mean.

    ``column`` is ``"conf_pl"`` (grouped by pseudo-label) or ``"conf_true"``
    (grouped by the hidden true class of the unlabeled example).
    """
    by = {"conf_pl": "pseudo-label", "conf_true": "hidden true class"}.get(column, column)
    title = title or f"Mean confidence by {by}"
    if class_train is None or class_train.empty:
        return empty_figure(title, uirevision=uirevision)
    table = pivot_class_step(class_train, column, x)
    fig = go.Figure(go.Heatmap(
        z=compact(table.to_numpy(dtype=float)), x=compact(table.columns.to_numpy()),
        y=[class_name(class_names, k) for k in table.index],
        zmin=0, zmax=1, colorscale="Viridis", colorbar=dict(title="confidence"),
        hovertemplate="class %{y}<br>" + _x_title(x) + " %{x}<br>confidence %{z:.3f}<extra></extra>",
    ))
    fig.update_yaxes(type="category", autorange="reversed")  # head class (0) on top
    return _layout(fig, title, _x_title(x), by, uirevision)


def make_class_lines_figure(df: pd.DataFrame, column: str, class_names=None, *, x: str = "step", smoothing: float = 0.0,
                            title: str = "", y_title: str = "", y_range=None, uirevision="live") -> go.Figure:
    """One line per class of ``df[column]`` against ``x``, in the class colours; binned frames: the bin mean
    with its min–max band."""
    if df is None or df.empty or column not in df or df[column].isna().all():
        return empty_figure(title, uirevision=uirevision)
    fig = go.Figure()
    for k, part in df.sort_values(x).groupby("cls", sort=True):
        _add_lines(fig, part[x].to_numpy(), part[column].to_numpy(dtype=float), class_name(class_names, k),
                   class_color(k), smoothing, band=bin_band(part, column))
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    return _layout(fig, title, _x_title(x), y_title, uirevision, legend_title="class")


def latest_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last step, sorted by class."""
    if df is None or df.empty:
        return df
    return df[df["step"] == df["step"].max()].sort_values("cls")


def make_pseudo_counts_figure(class_train: pd.DataFrame, class_names=None, *, title: str | None = None,
                              uirevision="live") -> go.Figure:
    """Latest step: accepted pseudo-labels per class next to the hidden true count per class.

    Solid bars = pseudo-labels accepted for the class; hatched bars = unlabeled
    examples whose hidden true class it is. Hover shows precision and recall.
    """
    last = latest_rows(class_train)
    if last is None or last.empty:
        return empty_figure(title or "Pseudo-labels vs hidden truth", uirevision=uirevision)
    step = int(last["step"].iloc[0])
    title = title or f"Pseudo-labels vs hidden truth (step {step})"
    names = [class_name(class_names, k) for k in last["cls"]]
    colors = [class_color(k) for k in last["cls"]]
    custom = np.stack([last["precision"].to_numpy(float), last["recall"].to_numpy(float)], axis=1)
    fig = go.Figure([
        go.Bar(x=names, y=last["n_accepted"].tolist(), name="accepted pseudo-labels", marker_color=colors,
               customdata=custom,
               hovertemplate="class %{x}<br>%{y} accepted<br>precision %{customdata[0]:.2f}"
                             "<br>recall %{customdata[1]:.2f}<extra></extra>"),
        go.Bar(x=names, y=last["n_true"].tolist(), name="hidden true class", marker=dict(
            color=[_rgba(c, 0.35) for c in colors], line=dict(color=colors, width=1.5), pattern=dict(shape="/")),
               hovertemplate="class %{x}<br>%{y} truly of this class<extra></extra>"),
    ])
    fig.update_xaxes(type="category")
    return _layout(fig, title, "class", "unlabeled examples (last logging window)", uirevision, barmode="group")


def make_precision_recall_figure(class_train: pd.DataFrame, class_names=None, *, title: str | None = None,
                                 uirevision="live") -> go.Figure:
    """Latest step: pseudo-label precision (solid) and recall (hatched) per class."""
    last = latest_rows(class_train)
    if last is None or last.empty:
        return empty_figure(title or "Pseudo-label precision and recall", uirevision=uirevision)
    title = title or f"Pseudo-label precision and recall (step {int(last['step'].iloc[0])})"
    names = [class_name(class_names, k) for k in last["cls"]]
    colors = [class_color(k) for k in last["cls"]]
    fig = go.Figure([
        go.Bar(x=names, y=last["precision"].tolist(), name="precision", marker_color=colors,
               hovertemplate="class %{x}<br>precision %{y:.3f}<extra></extra>"),
        go.Bar(x=names, y=last["recall"].tolist(), name="recall",
               marker=dict(color=[_rgba(c, 0.35) for c in colors], line=dict(color=colors, width=1.5),
                           pattern=dict(shape="/")),
               hovertemplate="class %{x}<br>recall %{y:.3f}<extra></extra>"),
    ])
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1.05])
    return _layout(fig, title, "class", "fraction", uirevision, barmode="group")


def make_pseudo_counts_over_time_figure(class_train: pd.DataFrame, class_names=None, *, x: str = "step",
                                        smoothing: float = 0.0, title: str = "Accepted pseudo-labels (solid) vs hidden true counts (dashed)",
                                        uirevision="live") -> go.Figure:
    """Per class over time: accepted pseudo-labels (solid) and hidden true counts (dashed), per logging window.

    Binned frames (counts summed over each bin) are shown per logging window (the bin's sum over its log
    steps), the accepted count with its min–max band, so one window's burst in one class stays visible.
    """
    if class_train is None or class_train.empty:
        return empty_figure(title, uirevision=uirevision)
    fig = go.Figure()
    for k, part in class_train.sort_values(x).groupby("cls", sort=True):
        name = class_name(class_names, k)
        _add_lines(fig, part[x].to_numpy(), per_log(part, "n_accepted"), name, class_color(k), smoothing,
                   legendgroup=name, band=bin_band(part, "n_accepted"))
        _add_lines(fig, part[x].to_numpy(), per_log(part, "n_true"), f"{name} (true)", class_color(k), 0.0,
                   dash="dash", legendgroup=name, showlegend=False)
    binned = "n_logs" in class_train and (class_train["n_logs"] > 1).any()
    y_title = "unlabeled examples per logging window" + (" (bin mean; band: min–max)" if binned else "")
    return _layout(fig, title, _x_title(x), y_title, uirevision, legend_title="class")


def make_confusion_figure(matrix, class_names=None, *, normalize: bool = False, title: str = "Confusion matrix",
                          uirevision="live") -> go.Figure:
    """Heatmap of a confusion matrix: true class (rows) by predicted class (columns).

    ``normalize`` divides each row by its total (row = recall of that class).
    """
    if matrix is None:
        return empty_figure(title, uirevision=uirevision)
    m = np.asarray(matrix, dtype=float)
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    names = [class_name(class_names, k) for k in range(m.shape[0])]
    text = np.vectorize(lambda v: f"{v:.2f}" if normalize else f"{int(v)}")(m) if m.size else m
    fig = go.Figure(go.Heatmap(
        z=m, x=names, y=names, colorscale="Blues", text=text, texttemplate="%{text}", zmin=0,
        zmax=1 if normalize else None, colorbar=dict(title="fraction of row" if normalize else "count"),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>",
    ))
    fig.update_xaxes(type="category", side="bottom")
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, title, "predicted class (columns)", "true class (rows)", uirevision)


# -- scalars ----------------------------------------------------------------
def make_scalars_figure(df: pd.DataFrame, columns: Sequence[str], *, labels: Mapping[str, str] | None = None,
                        x: str = "step", smoothing: float = 0.0, title: str = "", y_title: str = "",
                        y_range=None, log_y: bool = False, uirevision="live") -> go.Figure:
    """One line per column of ``df`` against ``x`` (run-level series such as losses or accuracy)."""
    cols = [c for c in columns if df is not None and c in df and not df[c].isna().all()]
    if not cols:
        return empty_figure(title, uirevision=uirevision)
    fig = go.Figure()
    df = df.sort_values(x)
    for i, c in enumerate(cols):
        _add_lines(fig, df[x].to_numpy(), df[c].to_numpy(dtype=float), (labels or {}).get(c, c),
                   RUN_PALETTE[i % len(RUN_PALETTE)], smoothing, band=bin_band(df, c))
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    if log_y:
        fig.update_yaxes(type="log")
    return _layout(fig, title, _x_title(x), y_title, uirevision)


# -- evaluation: validation and test --------------------------------------------
def _split_figure(title: str, y_title: str, x: str, uirevision, any_rows: bool, validation: bool, add) -> go.Figure:
    """Shared frame of the validation/test figures: placeholder, series, the missing-validation note."""
    if not any_rows:
        return empty_figure(title, uirevision=uirevision)
    fig = go.Figure()
    add(fig)
    fig.update_yaxes(range=[0, 1.02])
    fig = _layout(fig, title, _x_title(x), y_title, uirevision)
    return fig if validation else _note_no_validation(fig)


def make_eval_figure(evals: pd.DataFrame, columns: Sequence[str] = ("balanced_accuracy", "accuracy"), *,
                     labels: Mapping[str, str] | None = None, x: str = "step", title: str = "Accuracy",
                     y_title: str = "accuracy", uirevision="live") -> go.Figure:
    """Accuracy-like columns of ``store.evals``: validation lines, test diamonds, one colour per column."""
    labels = {"balanced_accuracy": "balanced accuracy", "accuracy": "accuracy", **(labels or {})}

    def add(fig):
        for i, c in enumerate(columns):
            _add_split_series(fig, evals, x, c, labels.get(c, c), RUN_PALETTE[i % len(RUN_PALETTE)])
    return _split_figure(title, y_title, x, uirevision, evals is not None and not evals.empty, has_validation(evals), add)


def make_class_recall_figure(class_eval: pd.DataFrame, class_names=None, *, x: str = "step",
                             title: str = "Per-class recall: validation (lines), test (◆)",
                             uirevision="live") -> go.Figure:
    """Per-class recall of ``store.class_eval`` in the class colours: validation lines, test diamonds."""
    def add(fig):
        for k, part in class_eval.groupby("cls", sort=True):
            _add_split_series(fig, part, x, "recall", class_name(class_names, k), class_color(k), test_in_legend=False)
        fig.update_layout(legend=dict(title="class"))
    return _split_figure(title, "recall", x, uirevision, class_eval is not None and not class_eval.empty,
                         has_validation(class_eval), add)


# -- techniques' live state ----------------------------------------------------------
def make_technique_figure(technique: pd.DataFrame, name: str, class_names=None, *, x: str = "step",
                          smoothing: float = 0.0, uirevision="live") -> go.Figure:
    """One technique quantity over training: a line per class for a vector, one line for a single number.

    ``technique`` is ``store.technique`` (long: step, name, cls, value; cls = -1 for a single number);
    any name a technique reports is drawn the same way, so new techniques need no new chart.
    """
    part = technique[technique["name"] == name] if technique is not None and not technique.empty else None
    if part is None or part.empty:
        return empty_figure(name, uirevision=uirevision)
    fig = go.Figure()
    for k, series in part.sort_values(x).groupby("cls", sort=True):
        scalar = k == SCALAR_CLS
        _add_lines(fig, series[x].to_numpy(), series["value"].to_numpy(dtype=float),
                   name if scalar else class_name(class_names, k), RUN_PALETTE[0] if scalar else class_color(k),
                   smoothing, band=bin_band(series, "value"))
    per_class = (part["cls"] != SCALAR_CLS).any()
    return _layout(fig, name, _x_title(x), "value", uirevision, legend_title="class" if per_class else None,
                   showlegend=bool(per_class))


def make_estimate_vs_truth_figure(technique: pd.DataFrame, name: str, truth_counts, class_names=None,
                                  uirevision="live") -> go.Figure:
    """The latest per-class value of ``name`` (an estimate of the unlabeled class distribution, e.g. ACR's, or the
    mean pseudo-label distribution) as bars beside the hidden true unlabeled distribution (shares of
    ``truth_counts``): how far the estimate is from what the unlabeled data really holds.
    """
    part = technique[(technique["name"] == name) & (technique["cls"] != SCALAR_CLS)] if not technique.empty else None
    if part is None or part.empty or truth_counts is None or not len(truth_counts):
        return empty_figure(f"{name} vs the hidden truth", uirevision=uirevision)
    last = part[part["step"] == part["step"].max()].sort_values("cls")
    truth = np.asarray(truth_counts, dtype=float)
    labels = [class_name(class_names, int(k)) for k in range(len(truth))]
    fig = go.Figure([
        go.Bar(x=labels, y=truth / max(truth.sum(), 1), name="hidden truth (unlabeled set)", marker_color="#bbbbbb"),
        go.Bar(x=[class_name(class_names, int(k)) for k in last["cls"]], y=last["value"], name=name,
               marker_color=RUN_PALETTE[0]),
    ])
    fig.update_layout(barmode="group")
    return _layout(fig, f"{name} vs the hidden unlabeled distribution (step {int(last['step'].iloc[0])})", "class",
                   "share", uirevision)


def make_technique_comparison_figure(frames: Mapping[str, pd.DataFrame], name: str, class_names=None,
                                     uirevision="compare") -> go.Figure:
    """One technique quantity across runs (label -> ``store.technique`` frame): a vector's latest value per class as
    grouped bars, one colour per run; a single number as one line per run over steps."""
    fig = go.Figure()
    per_class = False
    for i, (label, df) in enumerate(frames.items()):
        part = df[df["name"] == name] if df is not None and not df.empty else None
        if part is None or part.empty:
            continue
        color = RUN_PALETTE[i % len(RUN_PALETTE)]
        if (part["cls"] == SCALAR_CLS).all():
            part = part.sort_values("step")
            fig.add_trace(go.Scatter(x=part["step"], y=part["value"], mode="lines", name=label, line_color=color))
        else:
            per_class = True
            last = part[part["step"] == part["step"].max()].sort_values("cls")
            fig.add_trace(go.Bar(x=[class_name(class_names, int(k)) for k in last["cls"]], y=last["value"],
                                 name=f"{label} (step {int(last['step'].iloc[0])})", marker_color=color))
    if not fig.data:
        return empty_figure(name, "none of these runs reports it", uirevision=uirevision)
    fig.update_layout(barmode="group")
    return _layout(fig, name + (" (latest, per class)" if per_class else ""), "class" if per_class else "step",
                   "value", uirevision)


# -- comparing runs -------------------------------------------------------
def run_colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per run, by its place among the runs compared, so every chart of the page colours a run alike
    (a chart that leaves a run out, or groups seeds, would otherwise shift the colours of the rest).

    >>> colors = run_colors(["#1 a", "#2 b"])
    >>> colors["#2 b"] == RUN_PALETTE[1]
    True
    """
    return {label: RUN_PALETTE[i % len(RUN_PALETTE)] for i, label in enumerate(labels)}


def _run_color(colors: Mapping[str, str] | None, label: str, i: int) -> str:
    return (colors or {}).get(label) or RUN_PALETTE[i % len(RUN_PALETTE)]


def make_runs_overlay_figure(curves: Mapping[str, pd.DataFrame], column: str, *, x: str = "step",
                             smoothing: float = 0.0, title: str = "", y_title: str = "", y_range=(0, 1.02),
                             uirevision="compare", colors: Mapping[str, str] | None = None) -> go.Figure:
    """One colour per run (label -> ``store.evals`` frame; ``colors``: label -> colour, else by position):
    validation as its line, test as diamonds."""
    fig = go.Figure()
    for i, (label, df) in enumerate(curves.items()):
        if df is None or df.empty or column not in df:
            continue
        _add_split_series(fig, df, x, column, label, _run_color(colors, label, i), smoothing)
    if not fig.data:
        return empty_figure(title, uirevision=uirevision)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    fig = _layout(fig, title, _x_title(x), y_title, uirevision, legend_title="run")
    return fig if any(has_validation(df) for df in curves.values()) else _note_no_validation(fig)


def seed_band(frames: Sequence[pd.DataFrame], column: str, split: str = "val", x: str = "step") -> pd.DataFrame:
    """Mean, min, max and count of ``column`` over runs (their ``split`` rows) at each ``x`` they share or not:
    columns x, mean, lo, hi, n (a run missing at an x does not count there).

    >>> a = pd.DataFrame({"step": [10, 20], "split": "val", "v": [0.2, 0.4]})
    >>> b = pd.DataFrame({"step": [10, 20], "split": "val", "v": [0.4, 0.8]})
    >>> seed_band([a, b], "v").round(2).values.tolist()
    [[10.0, 0.3, 0.2, 0.4, 2.0], [20.0, 0.6, 0.4, 0.8, 2.0]]
    """
    rows = [df[df["split"] == split][[x, column]] for df in frames if df is not None and not df.empty]
    if not rows:
        return pd.DataFrame(columns=[x, "mean", "lo", "hi", "n"])
    g = pd.concat(rows).dropna().groupby(x)[column]
    return pd.DataFrame({"mean": g.mean(), "lo": g.min(), "hi": g.max(), "n": g.count()}).reset_index()


def make_seed_groups_figure(groups: Mapping[str, Sequence[pd.DataFrame]], column: str, *, x: str = "step",
                            smoothing: float = 0.0, title: str = "", y_title: str = "", y_range=(0, 1.02),
                            uirevision="compare", colors: Mapping[str, str] | None = None) -> go.Figure:
    """One colour per group of runs differing only by seed (label -> their ``store.evals`` frames; ``colors``: label
    -> colour, else by position): the mean of
    their validation curves as a line with a band from the lowest to the highest seed, test as the mean diamond
    with the seeds' spread as an error bar. A group of one run is drawn as that run."""
    fig = go.Figure()
    for i, (label, frames) in enumerate(groups.items()):
        color = _run_color(colors, label, i)
        frames = [f for f in frames if f is not None and not f.empty and column in f]
        if not frames:
            continue
        name = f"{label} ({len(frames)} seeds)" if len(frames) > 1 else label
        val = seed_band(frames, column, "val", x)
        if not val.empty:
            if len(frames) > 1:
                fig.add_trace(go.Scatter(x=np.r_[val[x], val[x][::-1]], y=np.r_[val["hi"], val["lo"][::-1]],
                                         fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0),
                                         name=f"{name} min–max", legendgroup=name, showlegend=False, hoverinfo="skip"))
            _add_lines(fig, val[x].to_numpy(), val["mean"].to_numpy(float), f"{name} ({SPLIT_LABELS['val']})",
                       color, smoothing, legendgroup=name)
        test = seed_band(frames, column, "test", x)
        if not test.empty:
            last = test.iloc[[-1]]
            fig.add_trace(go.Scatter(
                x=last[x], y=last["mean"], mode="markers", name=f"{name} ({SPLIT_LABELS['test']})", legendgroup=name,
                marker=dict(color=color, **TEST_MARKER),
                error_y=dict(type="data", symmetric=False, array=last["hi"] - last["mean"],
                             arrayminus=last["mean"] - last["lo"], color=color),
                hovertemplate=f"{name}<br>test mean %{{y:.3f}}<br>%{{x}}<extra></extra>"))
    if not fig.data:
        return empty_figure(title, uirevision=uirevision)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    fig = _layout(fig, title, _x_title(x), y_title, uirevision, legend_title="runs (mean, band: min–max over seeds)")
    return fig


def make_recall_comparison_figure(recalls: Mapping[str, Sequence[float]], class_names=None, *, split: str = "test",
                                  title: str | None = None, uirevision="compare",
                                  colors: Mapping[str, str] | None = None) -> go.Figure:
    """Grouped bars of one split's recall: x = class, one bar series per run (run colours: ``colors``, label ->
    colour, else by position; classes on the axis)."""
    split_label = SPLIT_LABELS[split]
    title = title or f"Per-class {split_label} recall"
    fig = go.Figure()
    for i, (label, rec) in enumerate(recalls.items()):
        rec = np.asarray(rec, dtype=float)
        fig.add_trace(go.Bar(x=[class_name(class_names, k) for k in range(len(rec))], y=rec.tolist(), name=label,
                             marker_color=_run_color(colors, label, i),
                             hovertemplate="class %{x}<br>recall %{y:.3f}<extra>" + label + "</extra>"))
    if not fig.data:
        return empty_figure(title, uirevision=uirevision)
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1.05])
    return _layout(fig, title, "class (head → tail)", f"{split_label} recall", uirevision, barmode="group", legend_title="run")


# -- teaching: decision regions -------------------------------------------
def _discrete_colorscale(num_classes: int) -> list:
    scale = []
    for k in range(num_classes):
        c = class_color(k)
        scale += [[k / num_classes, c], [(k + 1) / num_classes, c]]
    return scale


def make_snapshot_figure(payload: dict, class_names=None, *, title: str = "Decision regions",
                         uirevision="teach") -> go.Figure:
    """Decision regions of a toy2d snapshot with its unlabeled points.

    Regions are the predicted class on a grid (faint class colours). Points are
    coloured by pseudo-label: filled when the pseudo-label was accepted,
    hollow when its confidence was below the threshold. Hover gives the
    hidden true class and the confidence.
    """
    if not payload:
        return empty_figure(title, uirevision=uirevision)
    xmin, xmax, ymin, ymax = payload["extent"]
    n = int(payload["grid"])
    regions = np.asarray(payload["regions"], dtype=float)
    points = np.asarray(payload.get("points") or np.zeros((0, 6)), dtype=float).reshape(-1, 6)
    k_max = int(max(regions.max() if regions.size else 0, points[:, [2, 5]].max() if len(points) else 0))
    num_classes = max(len(class_names) if class_names is not None else 0, k_max + 1)
    gx, gy = np.linspace(xmin, xmax, n), np.linspace(ymin, ymax, n)
    fig = go.Figure(go.Heatmap(
        x=gx, y=gy, z=regions, zmin=-0.5, zmax=num_classes - 0.5, colorscale=_discrete_colorscale(num_classes),
        opacity=0.3, showscale=False, hoverinfo="skip", name="decision regions",
    ))
    for k in range(num_classes):
        pts = points[points[:, 2] == k]
        name = class_name(class_names, k)
        accepted = pts[:, 4] > 0
        for part, filled in ((pts[accepted], True), (pts[~accepted], False)):
            if not len(part):
                continue
            fig.add_trace(go.Scatter(
                x=part[:, 0], y=part[:, 1], mode="markers", name=name if filled else f"{name} (below threshold)",
                legendgroup=name, showlegend=filled or not accepted.any(),
                marker=dict(color=class_color(k), size=7, symbol="circle" if filled else "circle-open",
                            line=dict(width=1.5, color=class_color(k))),
                customdata=part[:, 3], text=[class_name(class_names, t) for t in part[:, 5].astype(int)],
                hovertemplate=f"pseudo-label {name}<br>true %{{text}}<br>confidence %{{customdata:.3f}}<br>"
                              + ("accepted" if filled else "below threshold") + "<extra></extra>",
            ))
    fig.update_xaxes(range=[xmin, xmax], constrain="domain")
    fig.update_yaxes(range=[ymin, ymax], scaleanchor="x", scaleratio=1, constrain="domain")
    fig = _layout(fig, title, "x₁", "x₂", uirevision, height=520, legend_title="pseudo-label (hollow = below threshold)")
    # Legend below the plot: on the right it takes half of a half-width column and the
    # equal-aspect plot shrinks to a thumbnail.
    return fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0,
                                         title=dict(side="top")),
                             margin=dict(l=50, r=20, t=60, b=40))


# -- data page --------------------------------------------------------------
def image_mosaic(x: np.ndarray, y: np.ndarray, num_classes: int, per_class: int = 8, seed: int = 0,
                 pad: int = 1) -> np.ndarray:
    """Tile ``per_class`` random images of each class into one uint8 RGB image (class k = row k).

    ``x`` is uint8 ``(N, C, H, W)`` with C = 1 or 3; grey images are inverted
    (ink dark on white). Missing images leave white tiles.
    """
    rng = np.random.default_rng(seed)
    _, c, h, w = x.shape
    out = np.full((num_classes * (h + pad) + pad, per_class * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for k in range(num_classes):
        idx = np.flatnonzero(y == k)
        pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
        for j, i in enumerate(pick):
            tile = x[i].transpose(1, 2, 0)
            tile = np.repeat(255 - tile, 3, axis=2) if c == 1 else tile[:, :, :3]
            r0, c0 = pad + k * (h + pad), pad + j * (w + pad)
            out[r0:r0 + h, c0:c0 + w] = tile
    return out


def make_samples_figure(x: np.ndarray, y: np.ndarray, class_names=None, *, per_class: int = 8, seed: int = 0,
                        title: str = "Sample images per class", uirevision="data") -> go.Figure:
    """A grid of training images, one row per class (labelled on the y axis)."""
    num_classes = len(class_names) if class_names is not None else int(y.max()) + 1
    mosaic = image_mosaic(x, y, num_classes, per_class, seed)
    h = x.shape[2]
    fig = go.Figure(go.Image(z=mosaic, hoverinfo="skip"))
    fig.update_yaxes(tickvals=[1 + k * (h + 1) + h / 2 for k in range(num_classes)],
                     ticktext=[class_name(class_names, k) for k in range(num_classes)], showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    height = min(1200, max(300, 60 * num_classes))
    return _layout(fig, title, f"{per_class} random training images per class", "class", uirevision, height=height)


def make_points_figure(x: np.ndarray, y: np.ndarray, class_names=None, *, title: str = "Training points by class",
                       uirevision="data") -> go.Figure:
    """Scatter of 2-D points coloured by class."""
    fig = go.Figure()
    for k in np.unique(y):
        pts = x[y == k]
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=class_name(class_names, k),
                                 marker=dict(color=class_color(k), size=5, opacity=0.7)))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _layout(fig, title, "x₁", "x₂", uirevision, height=480, legend_title="class")


def make_bias_figure(summary: pd.DataFrame, *, title: str = "Majority bias per run", uirevision="compare") -> go.Figure:
    """Bars of the bias numbers per run (``summary`` has ``run`` plus `bias.SUMMARY_KEYS`).

    Recall panels hold a validation bar (solid) and a test bar (hatched) per run; the pseudo-label
    panels have one bar per run.
    """
    if summary is None or summary.empty:
        return empty_figure(title, uirevision=uirevision)
    runs = summary["run"].astype(str).tolist()
    colors = [RUN_PALETTE[i % len(RUN_PALETTE)] for i in range(len(summary))]
    panels = [*RECALL_KEYS, *PSEUDO_KEYS]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[LABELS[m] for m in panels])
    for j, metric in enumerate(panels, start=1):
        series = [(SPLIT_LABELS[s], f"{s}_{metric}") for s in SPLIT_LABELS] if metric in RECALL_KEYS else [(None, metric)]
        for label, col in series:
            hatched = label == SPLIT_LABELS["test"]
            fig.add_trace(go.Bar(
                x=runs, y=summary[col].tolist(), name=label or LABELS[metric], legendgroup=label,
                showlegend=bool(label) and j == 1,
                marker=dict(color=[_rgba(c, 0.35) for c in colors] if hatched else colors,
                            line=dict(color=colors, width=1.5), pattern=dict(shape="/" if hatched else "")),
                hovertemplate="%{x}<br>%{y:.3f}<extra>" + (label or "") + "</extra>"), row=1, col=j)
        fig.update_xaxes(type="category", row=1, col=j)
    fig.update_layout(title=dict(text=title), uirevision=str(uirevision), height=DEFAULT_HEIGHT, barmode="group",
                      legend=dict(title="recall of"), margin=dict(l=60, r=20, t=80, b=50))
    return fig


# -- sweeps (runs.sweep_results.results / cell_table) ---------------------------------------------------
def _sweep_axis_label(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def make_sweep_heatmap_figure(cells: pd.DataFrame, metric: str, *, rows: str, cols: str, facet: str | None = None,
                              title: str | None = None) -> go.Figure:
    """Heatmap(s) of ``metric`` over ``rows`` x ``cols`` (one panel per ``facet`` value): each cell's text is
    mean ± std and n (seeds with a value). On a validation metric the best row of each column is marked ★
    (highest, or lowest gap; rows tied at the three decimals shown share it); a test metric gets no ★: it is
    reported beside validation, never chosen on."""
    label, higher = SWEEP_METRICS[metric]
    choose = metric.startswith("val_")
    facets = list(dict.fromkeys(cells[facet])) if facet else [None]
    fig = make_subplots(rows=1, cols=len(facets), subplot_titles=[f"{facet} = {f}" for f in facets] if facet else None,
                        shared_yaxes=True, horizontal_spacing=0.06)
    row_values = list(dict.fromkeys(cells[rows])) if len(cells) else []
    col_values = sorted(dict.fromkeys(cells[cols]), key=lambda v: (isinstance(v, str), v)) if len(cells) else []
    finite = cells[f"{metric}_mean"].dropna() if len(cells) else pd.Series(dtype=float)
    zmin, zmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    for j, fv in enumerate(facets):
        sub = cells if fv is None else cells[cells[facet] == fv]
        z = np.full((len(row_values), len(col_values)), np.nan)
        text = [["" for _ in col_values] for _ in row_values]
        for r in sub.itertuples(index=False):
            d = r._asdict()
            i, k = row_values.index(d[rows]), col_values.index(d[cols])
            mean, std, n = d[f"{metric}_mean"], d[f"{metric}_std"], d[f"{metric}_n"]
            z[i, k] = mean
            text[i][k] = "—" if n == 0 else f"{mean:.3f} ± {std:.3f}<br>n={n}"
        for k in range(len(col_values) if choose else 0):  # mark the best rows per column
            column = np.round(z[:, k], 3)  # as shown
            if np.isfinite(column).any():
                for best in np.flatnonzero(column == (np.nanmax(column) if higher else np.nanmin(column))):
                    text[best][k] = "★ " + text[best][k]
        fig.add_trace(go.Heatmap(
            z=z, x=[_sweep_axis_label(v) for v in col_values], y=[_sweep_axis_label(v) for v in row_values], text=text,
            texttemplate="%{text}", zmin=zmin, zmax=zmax, colorscale="Viridis" if higher else "Viridis_r",
            showscale=j == len(facets) - 1, colorbar=dict(title=dict(text=label.split(" ")[0])),
            hovertemplate=f"{rows}=%{{y}}<br>{cols}=%{{x}}<br>%{{text}}<extra></extra>"), row=1, col=j + 1)
        fig.update_xaxes(title_text=cols, type="category", row=1, col=j + 1)
    fig.update_yaxes(title_text=rows, type="category", row=1, col=1)
    note = "★ best per column" if choose else "reported, not chosen on: ★ marks the best on validation"
    fig.update_layout(title=title or f"{label.capitalize()}: mean ± std over seeds ({note})",
                      height=max(280, 90 + 70 * len(row_values)), margin=dict(t=70, l=60, r=20, b=50))
    return fig


def make_sweep_parallel_figure(res: pd.DataFrame, metric: str, keys):
    """Parallel coordinates: one line per run across the varied knobs (categories as ticks) and ``metric``."""
    label, _ = SWEEP_METRICS[metric]
    dims = []
    for k in [*keys, "seed"]:
        values = res[k]
        if pd.api.types.is_numeric_dtype(values) and values.notna().all():
            dims.append(dict(label=k, values=values.astype(float)))
        else:
            cats = list(dict.fromkeys(values.astype(str)))
            dims.append(dict(label=k, values=[cats.index(v) for v in values.astype(str)],
                             tickvals=list(range(len(cats))), ticktext=cats))
    dims.append(dict(label=label, values=res[metric].astype(float)))
    fig = go.Figure(go.Parcoords(dimensions=dims, line=dict(color=res[metric].astype(float), colorscale="Viridis",
                                                             showscale=True)))
    fig.update_layout(title=f"Knobs against {label} (one line per run)", height=380, margin=dict(t=70, l=60, r=60))
    return fig


def sweep_figures_html(figures: dict) -> str:
    """The figures as one self-contained HTML document (plotly.js embedded once, interactive, offline)."""
    parts = []
    for i, (title, fig) in enumerate(figures.items()):
        parts.append(f"<h2>{title}</h2>" + fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    return "<!doctype html><html><head><meta charset='utf-8'><title>sslviz sweep</title></head><body>" + \
        "".join(parts) + "</body></html>"
