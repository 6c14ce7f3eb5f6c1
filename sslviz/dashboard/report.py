"""Shareable reports: one self-contained HTML file for a run (Live) or a comparison (Compare).

``run_report(store, run_id)`` and ``compare_report(store, run_ids)`` read a `RunStore` and return one HTML
document: title, dates and the code version of each run, the config (knobs that differ from the defaults,
the full YAML folded away), the split per class, the latest validation and test numbers, the majority-bias
summary and the key charts as interactive Plotly figures built by `sslviz.charts`. plotly.js is embedded once,
so the file opens offline and makes no network request. Series are thinned to at most `REPORT_POINTS`
evenly spaced steps (the last one always kept) so a long run stays a few MB, most of it plotly.js.
No Streamlit here; every user-provided string (run names, dataset paths, class names) is escaped.
"""
from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from ..runs import bias
from . import charts, views
from ..engine.config import TrainConfig
from ..runs.records import NO_VAL_MESSAGE, SPLIT_LABELS, SPLITS
from ..runs.store import RunStore, code_version

SECTION_NOTES = {"Confusion": ('<p class="note">True class (rows) by predicted class (columns).</p>',)}
NO_TECHNIQUE_STATE = ("No technique state recorded (plain FixMatch, or a run recorded before techniques reported "
                      "their state).")
REPORT_POINTS = 400  # steps kept per series: plenty for a static chart, ~10x smaller than the dashboard's cap
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
SPLIT_SETS = (("labeled_counts", "labeled"), ("unlabeled_counts", "unlabeled"), ("val_counts", "validation"),
              ("test_counts", "test"))  # run info key -> column header
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1.5rem; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
.meta { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.differs { background: #fff8c5; } tr.total td { font-weight: 600; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .85rem; }
details { margin: .4rem 0; } summary { cursor: pointer; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1rem; }
.grid.one { grid-template-columns: 1fr; }
.figure { min-width: 0; } .note { color: #59636e; font-size: .9rem; }
"""


# -- small pure helpers ---------------------------------------------------------
def esc(value) -> str:
    """``value`` as text safe inside HTML content and attribute values.

    >>> esc('<b>"a" & b</b>')
    '&lt;b&gt;&quot;a&quot; &amp; b&lt;/b&gt;'
    """
    return html.escape("" if value is None else str(value), quote=True)


def thin(df: pd.DataFrame, max_points: int = REPORT_POINTS, x: str = "step") -> pd.DataFrame:
    """Rows of at most ``max_points`` evenly spaced distinct ``x`` values, counted back from the last (always kept).

    >>> thin(pd.DataFrame({"step": range(10)}), 4)["step"].tolist()
    [0, 3, 6, 9]
    """
    if df is None or df.empty or not max_points:
        return df
    steps = np.unique(df[x].to_numpy())
    if len(steps) <= max_points:
        return df
    stride = -(-len(steps) // max_points)
    keep = steps[::-1][::stride]
    return df[df[x].isin(keep)]


def thin_evals(df: pd.DataFrame, max_points: int = REPORT_POINTS) -> pd.DataFrame:
    """`thin` applied per split (a run has many validation evaluations and a few test ones)."""
    if df is None or df.empty:
        return df
    return pd.concat([thin(part, max_points) for _, part in df.groupby("split", sort=False)]).sort_values(
        ["step", "split"], kind="stable")


def fmt_time(t) -> str:
    """A Unix time as local 'YYYY-MM-DD HH:MM', or '—' when missing."""
    if t is None or (isinstance(t, float) and not np.isfinite(t)):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(t)))


def fmt_num(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals, '—' when missing (None or NaN)."""
    if value is None:
        return "—"
    value = float(value)
    return "—" if not np.isfinite(value) else f"{value:.{digits}f}"


def num_cell(value, digits: int = 3) -> str:
    """A right-aligned table cell showing ``value`` rounded; ``data-value`` keeps the stored number."""
    exact = "" if value is None or not np.isfinite(float(value)) else f' data-value="{float(value)!r}"'
    return f'<td class="num"{exact}>{fmt_num(value, digits)}</td>'


def config_changes(config: dict) -> dict:
    """The knobs of a stored config whose value differs from `TrainConfig`'s defaults (unknown keys included)."""
    defaults = TrainConfig().to_dict()
    return {k: v for k, v in config.items() if k not in defaults or defaults[k] != v}


def class_names_of(run: dict, num_classes: int = 0) -> list[str]:
    """The run's class names (its ``info``), or '0'..'K-1'."""
    names = (run.get("info") or {}).get("class_names")
    return [str(n) for n in names] if names else [str(k) for k in range(num_classes)]


def plot_text(value) -> str:
    """``value`` for a Plotly label: plotly.js reads labels as a small HTML subset, so a name such as
    ``<b>x</b>`` is escaped to show as typed (plotly.js decodes the entities).

    >>> plot_text("a<b>&")
    'a&lt;b&gt;&amp;'
    """
    return html.escape(str(value), quote=False)


def short_label(run: dict) -> str:
    """'#3 name' (or the preset when unnamed), as the Compare page labels a run."""
    return f"#{int(run['id'])} {run.get('name') or run.get('preset') or 'run'}"


def _table(headers: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    """An HTML table; ``headers`` are escaped here, ``rows`` are ready ``<tr>`` strings."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


# -- the document ------------------------------------------------------------------
class _Figures:
    """Renders figures as ``<div>``s with plotly.js left out (the document embeds it once) and stable ids."""

    def __init__(self):
        self.count = 0

    def __call__(self, fig: go.Figure) -> str:
        self.count += 1
        body = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                           div_id=f"sslviz-figure-{self.count}", default_width="100%")
        return f'<div class="figure">{body}</div>'


def _grid(divs: Iterable[str]) -> str:
    # auto-fill, not auto-fit: each figure is drawn as soon as its <script> is parsed, before the next one
    # exists, so the columns must already have their final width then.
    divs = list(divs)
    return f'<div class="grid{" one" if len(divs) == 1 else ""}">{"".join(divs)}</div>'


def _document(title: str, subtitle: str, body: str) -> str:
    generated = time.strftime("%Y-%m-%d %H:%M %Z")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<meta name=\"generator\" content=\"sslviz {esc(code_version())}\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n"
        # plotly.js once, inline: the report opens offline and fetches nothing.
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        "</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n"
        f'<p class="meta">{subtitle} · report generated {esc(generated)} by sslviz {esc(code_version())}</p>\n'
        f"{body}\n</body>\n</html>\n"
    )


def _run(store: RunStore, run_id: int) -> dict:
    run = store.run(int(run_id))
    if run is None:
        raise ValueError(f"There is no run {run_id} in {store.path}.")
    return run


# -- sections shared by both reports ------------------------------------------------
def _split_table(run: dict) -> str:
    """Per-class labeled / unlabeled / validation / test counts from the run's info, with totals."""
    info = run.get("info") or {}
    columns = [(header, info.get(key)) for key, header in SPLIT_SETS]
    k = max([len(v) for _, v in columns if v] or [0])
    if k == 0:
        return '<p class="note">No split recorded for this run.</p>'
    names = class_names_of(run, k)
    rows = []
    for c in range(k):
        cells = "".join(f'<td class="num">{int(v[c])}</td>' if v and c < len(v) else '<td class="num">—</td>'
                        for _, v in columns)
        rows.append(f"<tr><td>{esc(names[c] if c < len(names) else c)}</td>{cells}</tr>")
    totals = "".join(f'<td class="num">{int(sum(v))}</td>' if v else '<td class="num">—</td>' for _, v in columns)
    rows.append(f'<tr class="total"><td>total</td>{totals}</tr>')
    note = ("" if info.get("val_counts") else
            f'<p class="note">Validation: {esc(NO_VAL_MESSAGE)}.</p>')
    return _table(["class (head → tail)", *(h for h, _ in columns)], rows, "split") + note


def _latest_table(store: RunStore, run: dict) -> str:
    """The latest validation and test evaluation: step, accuracy, balanced accuracy."""
    latest = store.latest_evals(int(run["id"]))
    rows = []
    for split in SPLITS:
        e = latest.get(split)
        if e is None:
            why = NO_VAL_MESSAGE if split == "val" and latest else "not evaluated yet"
            rows.append(f'<tr data-split="{split}"><td>{SPLIT_LABELS[split]}</td><td colspan="3">{esc(why)}</td></tr>')
        else:
            rows.append(f'<tr data-split="{split}"><td>{SPLIT_LABELS[split]}</td><td class="num">{int(e["step"])}</td>'
                        f'{num_cell(e["accuracy"])}{num_cell(e["balanced_accuracy"])}</tr>')
    return _table(["evaluation set", "step", "accuracy", "balanced accuracy"], rows, "results")


def _bias_table(summaries: dict[str, dict]) -> str:
    """Rows = runs (label -> `bias.run_bias_summary`), columns = `bias.SUMMARY_KEYS` with split labels."""
    rows = [f"<tr><td>{esc(label)}</td>{''.join(num_cell(s[k]) for k in bias.SUMMARY_KEYS)}</tr>"
            for label, s in summaries.items()]
    return _table(["run", *(bias.column_label(k) for k in bias.SUMMARY_KEYS)], rows, "bias")


BIAS_NOTE = (
    f"<b>head − tail recall</b>: mean recall of the {bias.HEAD_TAIL_K} most frequent labeled classes minus the "
    f"{bias.HEAD_TAIL_K} rarest (&gt; 0 favours the head). <b>recall of the {bias.HEAD_TAIL_K} rarest</b>: their "
    "mean recall. Both from the latest validation and the latest test evaluation. <b>KL(pseudo ‖ true)</b>: "
    "divergence of the accepted pseudo-label distribution (latest logging window) from the true unlabeled class "
    "distribution, in nats (0 = unbiased). <b>head share</b>: fraction of accepted pseudo-labels given to the "
    "head class.")


def _yaml(config: dict) -> str:
    return f"<pre>{esc(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))}</pre>"


def _value(v) -> str:
    return "empty" if v is None else str(v)


# -- one run -----------------------------------------------------------------------
def doctor_section(store: RunStore, run_id: int) -> str:
    """The bias doctor's findings (with their evidence), suggestions and verdicts of a run, as HTML."""
    from ..runs import doctor

    rep = doctor.report(store, run_id)
    rows = [f"<tr><td>{esc(f['title'])}</td><td>{esc(f['severity'])}</td><td>{esc(f['summary'])}</td>"
            f"<td>{esc(f['source'])}</td><td>{esc(f['chart'])}</td></tr>" for f in rep["findings"]]
    parts = [f"<p>{esc(doctor.headline(rep['findings']))}</p>"]
    if rows:
        parts.append(_table(("finding", "severity", "evidence", "from", "chart"), rows))
    if rep["suggestions"]:
        parts.append("<p>What to try, best first:</p><ol>" + "".join(
            f"<li>{esc(s['technique'])} ({esc(', '.join(f'{k}={v}' for k, v in s['change'].items()))}): "
            f"{esc(s['rests_on'])}{esc('; caution: ' + s['caution']) if s['caution'] else ''}</li>"
            for s in rep["suggestions"][:5]) + "</ol>")
    parts += [f"<p>Tried: {esc(v)}</p>" for v in rep["verdicts"]]
    return "\n".join(parts) + '<p class="note">Read from validation and training records, never test.</p>'


def run_report(store: RunStore, run_id: int) -> str:
    """One run as a self-contained HTML document (what the Live page's "Download report" saves)."""
    run = _run(store, run_id)
    rid = int(run["id"])
    cfg = run["config"] or {}
    fig = _Figures()
    scal = thin(store.scalars(rid, None))
    ct = thin(store.class_train(rid, None))
    ev = thin_evals(store.evals(rid))
    ce = thin(store.class_eval(rid, max_points=None))
    tech = thin(store.technique(rid, None))
    k = int(ct["cls"].max()) + 1 if not ct.empty else (int(ce["cls"].max()) + 1 if not ce.empty else 0)
    names = [plot_text(n) for n in class_names_of(run, k)]  # for the figures; tables escape with esc()

    title = f"sslviz report · run #{rid} {run.get('name') or run.get('preset') or ''}".rstrip()
    subtitle = (f"{esc(run['status'])} · step {int(run['step'])} / {int(run['total_steps'])} · dataset "
                f"<code>{esc(cfg.get('dataset', '?'))}</code>")

    meta_rows = [
        ("run", f"#{rid}"), ("name", run.get("name") or "—"), ("preset", run.get("preset") or "—"),
        ("status", run["status"] + (f" ({run['error']})" if isinstance(run.get("error"), str) and run["error"]
                                    else "")),
        ("steps", f"{int(run['step'])} / {int(run['total_steps'])}"), ("dataset", cfg.get("dataset", "?")),
        ("model", (run.get("info") or {}).get("model", cfg.get("model", "?"))),
        ("device", run.get("device") or (run.get("info") or {}).get("device") or "—"),
        ("created", fmt_time(run.get("created"))), ("started", fmt_time(run.get("started"))),
        ("finished", fmt_time(run.get("finished"))),
        ("sslviz code version", run.get("code_version") or "unknown (recorded before code versions were stored)"),
    ]
    meta = _table(["", ""], (f"<tr><th>{esc(a)}</th><td>{esc(b)}</td></tr>" for a, b in meta_rows), "meta")

    changes, defaults = config_changes(cfg), TrainConfig().to_dict()
    config_rows = (f"<tr><td><code>{esc(key)}</code></td><td>{esc(_value(v))}</td>"
                   f"<td>{esc(_value(defaults.get(key, '—')))}</td></tr>" for key, v in changes.items())
    config = (_table(["knob", "value", "default"], config_rows, "config") if changes else
              '<p class="note">Every knob at its default.</p>')
    config += _details("Full config (YAML)", _yaml(cfg))

    summary = bias.run_bias_summary(store, rid)
    frames = views.Frames(read={"scal": scal, "ct": ct, "ev": ev, "ce": ce, "tech": tech}.__getitem__,
                          confusion=lambda kind: store.confusion(rid, kind), names=names)
    style = views.Style()

    def section(tab: str) -> list[str]:  # a Live tab's views that the report draws, as one grid
        if tab == views.TECHNIQUE_TAB:
            figures = views.technique_figures(tech, names, (run.get("info") or {}).get("unlabeled_counts"), style)
            return [_grid(fig(f) for _, f in figures) if figures else f'<p class="note">{NO_TECHNIQUE_STATE}</p>']
        return [_grid(fig(v.build(frames, style)) for v in views.views(tab, report=True) if v.shown(frames))]

    body = [
        meta,
        "<h2>Results</h2>",
        _latest_table(store, run),
        f'<p class="note">{esc(charts.SPLIT_LEGEND)}. Validation is evaluated every eval_every steps; the test set '
        "at the end of the run and on demand.</p>",
        "<h2>Majority bias</h2>", _bias_table({short_label(run): summary}), f'<p class="note">{BIAS_NOTE}</p>',
        "<h2>The doctor</h2>", doctor_section(store, run_id),
        "<h2>Config</h2>", '<p class="note">Knobs that differ from the defaults (plain FixMatch on digits).</p>',
        config,
        "<h2>Split</h2>", '<p class="note">Examples per class (class 0 is the head of the long tail).</p>',
        _split_table(run),
        *(part for tab in views.TABS for part in (f"<h2>{esc(tab)}</h2>", *SECTION_NOTES.get(tab, ()),
                                                  *section(tab))),
        f'<p class="note">Charts are unsmoothed, at most {REPORT_POINTS} evenly spaced logged steps per series '
        "(the last always kept).</p>",
    ]
    return _document(title, subtitle, "\n".join(body))


# -- several runs -----------------------------------------------------------------
def latest_recalls(store: RunStore, runs: dict[int, dict], split: str) -> tuple[dict, list | None, list]:
    """Latest per-class ``split`` recall of each run (id -> run) that has one, by short label; the class names
    they share; and the labels left out because their classes differ from the first such run's."""
    recalls, names, skipped = {}, None, []
    for rid, run in runs.items():
        last = charts.latest_rows(store.class_eval(rid, split))
        if last.empty:
            continue
        run_names = class_names_of(run, len(last))
        names = run_names if names is None else names
        if run_names != names:
            skipped.append(short_label(run))
            continue
        recalls[plot_text(short_label(run))] = last["recall"].to_numpy(float)
    return recalls, [plot_text(n) for n in names or []] or None, skipped


def compare_report(store: RunStore, run_ids: Sequence[int]) -> str:
    """Several runs side by side as one self-contained HTML document (the Compare page's "Download report")."""
    if not run_ids:
        raise ValueError("A comparison report needs at least one run.")
    runs = {int(i): _run(store, i) for i in dict.fromkeys(int(i) for i in run_ids)}
    fig = _Figures()
    kw = dict(uirevision="report")
    labels = {rid: short_label(run) for rid, run in runs.items()}
    latest = {rid: store.latest_evals(rid) for rid in runs}
    title = "sslviz report · compare runs " + ", ".join(f"#{rid}" for rid in runs)
    subtitle = esc(" vs ".join(labels.values()))

    metric_headers = [f"{SPLIT_LABELS[s]} {m}" for s in SPLITS for m in ("accuracy", "balanced accuracy")]
    run_rows = []
    for rid, run in runs.items():
        cfg = run["config"] or {}
        nums = "".join(num_cell((latest[rid].get(s) or {}).get(m)) for s in SPLITS
                       for m in ("accuracy", "balanced_accuracy"))
        run_rows.append(
            f'<tr data-run="{rid}"><td>#{rid}</td><td>{esc(run.get("name") or "—")}</td><td>{esc(run["status"])}</td>'
            f'<td>{esc(run.get("preset") or "—")}</td><td><code>{esc(cfg.get("dataset", "?"))}</code></td>'
            f'<td class="num">{int(run["step"])} / {int(run["total_steps"])}</td>{nums}'
            f'<td>{esc(fmt_time(run.get("created")))}</td>'
            f'<td>{esc(run.get("code_version") or "unknown")}</td></tr>')
    runs_table = _table(["id", "name", "status", "preset", "dataset", "steps", *metric_headers, "created",
                         "sslviz code version"], run_rows, "runs")

    # Config: every knob that differs from the defaults in any run; highlighted where the runs disagree.
    changed = list(dict.fromkeys(key for run in runs.values() for key in config_changes(run["config"] or {})))
    defaults = TrainConfig().to_dict()
    config_rows = []
    for key in changed:
        values = [(run["config"] or {}).get(key, defaults.get(key)) for run in runs.values()]
        differs = len({repr(v) for v in values}) > 1
        cells = "".join(f'<td{" class=differs" if differs else ""}>{esc(_value(v))}</td>' for v in values)
        config_rows.append(f"<tr><td><code>{esc(key)}</code></td>{cells}"
                           f"<td>{esc(_value(defaults.get(key, '—')))}</td></tr>")
    config = (_table(["knob", *labels.values(), "default"], config_rows, "config") if config_rows else
              '<p class="note">Every knob at its default in every run.</p>')
    config += "".join(_details(f"Full config of {labels[rid]} (YAML)", _yaml(run["config"] or {}))
                      for rid, run in runs.items())

    split_rows = []
    for rid, run in runs.items():
        info = run.get("info") or {}
        cells = "".join(f'<td class="num">{int(sum(info[key]))}</td>' if info.get(key) else '<td class="num">—</td>'
                        for key, _ in SPLIT_SETS)
        split_rows.append(f"<tr><td>{esc(labels[rid])}</td>{cells}</tr>")
    split = (_table(["run", *(h for _, h in SPLIT_SETS)], split_rows, "split-totals")
             + "".join(_details(f"Per class: {labels[rid]}", _split_table(run)) for rid, run in runs.items()))

    curves = {plot_text(labels[rid]): thin_evals(store.evals(rid)) for rid in runs}
    overlays = [fig(charts.make_runs_overlay_figure(curves, metric, title=f"{label.capitalize()}: validation "
                                                    "(lines), test (◆)", y_title=label, **kw))
                for metric, label in (("balanced_accuracy", "balanced accuracy"), ("accuracy", "accuracy"))]
    recall_figs, notes = [], []
    for s in SPLITS:
        recalls, names, skipped = latest_recalls(store, runs, s)
        recall_figs.append(fig(charts.make_recall_comparison_figure(
            recalls, names, split=s, title=f"Per-class {SPLIT_LABELS[s]} recall (latest)", **kw)))
        if skipped:
            notes.append(f"{SPLIT_LABELS[s]} recall not shown for {', '.join(skipped)} (different classes from "
                         "the first run).")
        missing = [labels[rid] for rid in runs if plot_text(labels[rid]) not in recalls and labels[rid] not in skipped]
        if missing:
            notes.append(f"{', '.join(missing)}: " + (NO_VAL_MESSAGE if s == "val" else "no test evaluation yet") + ".")

    summaries = {labels[rid]: bias.run_bias_summary(store, rid) for rid in runs}
    bias_frame = pd.DataFrame([{"run": plot_text(label), **s} for label, s in summaries.items()],
                              columns=["run", *bias.SUMMARY_KEYS])
    body = [
        runs_table,
        f'<p class="note">Latest evaluation of each run: validation every eval_every steps, test at the end of the '
        f"run. {esc(charts.SPLIT_LEGEND)}.</p>",
        "<h2>Majority bias</h2>", _bias_table(summaries), f'<p class="note">{BIAS_NOTE}</p>',
        _grid([fig(charts.make_bias_figure(bias_frame, **kw))]),
        "<h2>Accuracy</h2>", _grid(overlays),
        "<h2>Per-class recall</h2>", _grid(recall_figs),
        "".join(f'<p class="note">{esc(n)}</p>' for n in notes),
        "<h2>Config</h2>", '<p class="note">Knobs that differ from the defaults in any run; highlighted where the '
        "runs disagree.</p>", config,
        "<h2>Split</h2>", '<p class="note">Examples per set; per class below.</p>', split,
        f'<p class="note">Curves are unsmoothed, at most {REPORT_POINTS} evenly spaced evaluations per series '
        "(the last always kept).</p>",
    ]
    return _document(title, subtitle, "\n".join(body))
