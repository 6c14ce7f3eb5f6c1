"""The "Download report" HTML: content equal to the store's numbers, escaping, size, and offline rendering.

Two real tiny runs are trained once (as `test_cli.py` does); the browser tests open the reports from a
``file://`` URL in Debian's Chromium with every other request aborted, and check that the Plotly charts hold
data and that nothing but the file itself was requested. One browser for the whole file; the browser tests
skip where /usr/bin/chromium or playwright is missing.
"""
import html
import os
import re
import time

import numpy as np
import pytest
import yaml
from plotly.offline import get_plotlyjs

from sslviz.runs import bias
from sslviz import cli
from sslviz.dashboard import report
from sslviz.engine.config import TrainConfig
from sslviz.runs.store import RunStore, code_version

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TINY_FLAGS = ["--dataset", "toy2d", "--steps", "40", "--batch-size", "16", "--mu", "2", "--log-every", "5",
              "--eval-every", "20", "--checkpoint-every", "10", "--device", "cpu"]
NAME = '<b>tiny</b> & "da"'  # a run name that is also HTML
HOSTILE = "</script><script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>"
# [title, number of data traces] of every Plotly chart on the page, read from Plotly's own objects.
PLOT_DATA_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd =>
  [(gd.layout && gd.layout.title && (gd.layout.title.text || gd.layout.title)) || '', (gd.data || []).length])"""
# In the Live page's tab order (dashboard/views.py: one list of a run's views for both).
RUN_TITLES = ["Pseudo-labels vs hidden truth (step 40)",
              "Accepted pseudo-labels (solid) vs hidden true counts (dashed)",
              "Per-class threshold τ_c", "Mask rate and pseudo-label accuracy",
              "Validation-set confusion matrix (step 40)", "Test-set confusion matrix (step 40)",
              "Pseudo-label confusion vs hidden truth (step 40)",
              "Accuracy: validation (lines), test (◆)", "Per-class recall: validation (lines), test (◆)",
              "<technique state>", "Losses", "Learning rate"]


def _technique_titles(store, run_id: int) -> list[str]:
    """The technique section's charts: each unlabeled-distribution estimate beside the truth, then every quantity."""
    from sslviz.engine.registry import UNLABELED_ESTIMATES

    tech = store.technique(run_id)
    names = sorted(tech["name"].unique())
    last = int(tech["step"].max())
    return [*(f"{n} vs the hidden unlabeled distribution (step {last})" for n in UNLABELED_ESTIMATES if n in names),
            *names]
COMPARE_TITLES = ["Majority bias per run", "Balanced accuracy: validation (lines), test (◆)",
                  "Accuracy: validation (lines), test (◆)", "Per-class validation recall (latest)",
                  "Per-class test recall (latest)"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two finished tiny runs in one store: #1 with distribution alignment (technique state), #2 FreeMatch."""
    db = tmp_path_factory.mktemp("report") / "runs.db"
    assert cli.main(["--store", str(db), "train", *TINY_FLAGS, "--name", NAME, "--preset", "fixmatch-da"]) == 0
    assert cli.main(["--store", str(db), "train", *TINY_FLAGS, "--name", "free", "--threshold-schedule",
                     "freematch", "--gamma", "20"]) == 0
    store = RunStore(db)
    yield store
    store.close()


@pytest.fixture(scope="module")
def reports(trained, tmp_path_factory):
    """The run report of #1 and the comparison of #1 and #2, written to files."""
    out = tmp_path_factory.mktemp("html")
    paths = {"run": out / "sslviz-run1.html", "compare": out / "sslviz-compare-1-2.html"}
    paths["run"].write_text(report.run_report(trained, 1), encoding="utf-8")
    paths["compare"].write_text(report.compare_report(trained, [1, 2]), encoding="utf-8")
    return paths


def _text(path) -> str:
    return path.read_text(encoding="utf-8")


def _cells(doc: str, table_class: str) -> list[list[str]]:
    """The rows of the first ``<table class="...">`` as lists of unescaped cell texts (tags stripped)."""
    body = re.search(rf'<table class="{table_class}">(.*?)</table>', doc, re.S).group(1)
    cells = r"<t[dh][^>]*>(.*?)</t[dh]>"
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(cells, row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def _data_values(doc: str, attr_row: str) -> list[float]:
    """``data-value`` numbers of the table row whose opening tag contains ``attr_row``."""
    row = re.search(rf"<tr {attr_row}>(.*?)</tr>", doc, re.S).group(1)
    return [float(v) for v in re.findall(r'data-value="([^"]+)"', row)]


# -- content ----------------------------------------------------------------------
def test_run_report_holds_title_config_split_and_the_stores_numbers(trained, reports):
    doc = _text(reports["run"])
    run = trained.run(1)
    assert doc.startswith("<!DOCTYPE html>")
    assert f"<title>sslviz report · run #1 {html.escape(NAME)}</title>" in doc
    assert NAME not in doc  # escaped everywhere, also in the figures' JSON
    assert run["code_version"] == code_version() and html.escape(run["code_version"]) in doc
    assert time.strftime("%Y-%m-%d", time.localtime(run["created"])) in doc

    config = {r[0]: r[1] for r in _cells(doc, "config")[1:]}
    assert config["dist_align"] == "labeled" and config["preset"] == "fixmatch-da" and config["steps"] == "40"
    assert config["dataset"] == "toy2d" and "threshold" not in config  # only knobs that differ from the defaults
    yaml_block = re.search(r"<summary>Full config \(YAML\)</summary><pre>(.*?)</pre>", doc, re.S).group(1)
    assert yaml.safe_load(html.unescape(yaml_block)) == run["config"]

    info = run["info"]
    split = _cells(doc, "split")
    assert split[0] == ["class (head → tail)", "labeled", "unlabeled", "validation", "test"]
    for k, row in enumerate(split[1:-1]):
        assert row == [info["class_names"][k], *(str(info[key][k]) for key in
                                                 ("labeled_counts", "unlabeled_counts", "val_counts", "test_counts"))]
    assert split[-1] == ["total", *(str(sum(info[key])) for key in
                                    ("labeled_counts", "unlabeled_counts", "val_counts", "test_counts"))]

    latest = trained.latest_evals(1)
    for split_name, label in (("val", "validation"), ("test", "test")):
        e = latest[split_name]
        assert _data_values(doc, f'data-split="{split_name}"') == [e["accuracy"], e["balanced_accuracy"]]
        row = next(r for r in _cells(doc, "results") if r[0] == label)
        assert row == [label, str(int(e["step"])), f"{e['accuracy']:.3f}", f"{e['balanced_accuracy']:.3f}"]

    summary = bias.run_bias_summary(trained, 1)
    bias_rows = _cells(doc, "bias")
    assert bias_rows[0][1:] == [bias.column_label(k) for k in bias.SUMMARY_KEYS]
    assert "head − tail recall (validation)" in bias_rows[0] and "recall of the 3 rarest (test)" in bias_rows[0]
    assert bias_rows[1] == [f"#1 {NAME}", *(f"{summary[k]:.3f}" for k in bias.SUMMARY_KEYS)]
    from sslviz.runs import doctor

    rep = doctor.report(trained, 1)  # the doctor's section: its headline and each finding's evidence, escaped
    assert f"<h2>The doctor</h2>\n<p>{html.escape(doctor.headline(rep['findings']))}</p>" in doc
    assert all(html.escape(f["summary"]) in doc for f in rep["findings"])
    n_tech = len(_technique_titles(trained, 1))
    assert n_tech >= 2  # distribution alignment reports its state, and the mean pseudo-label beside the truth
    assert doc.count('class="plotly-graph-div"') == len(RUN_TITLES) - 1 + n_tech  # their titles: in Chromium below


def test_compare_report_holds_both_runs(trained, reports):
    doc = _text(reports["compare"])
    assert "<title>sslviz report · compare runs #1, #2</title>" in doc
    runs = _cells(doc, "runs")
    assert [r[0] for r in runs[1:]] == ["#1", "#2"] and runs[1][1] == NAME and runs[2][1] == "free"
    for rid in (1, 2):
        latest = trained.latest_evals(rid)
        assert _data_values(doc, f'data-run="{rid}"') == [latest[s][m] for s in ("val", "test")
                                                         for m in ("accuracy", "balanced_accuracy")]
        assert html.escape(trained.run(rid)["code_version"]) in doc
    config = {r[0]: r[1:] for r in _cells(doc, "config")[1:]}
    assert config["threshold_schedule"] == ["fixed", "freematch", "fixed"]  # run 1, run 2, default
    assert config["gamma"] == ["50.0", "20.0", "50.0"]
    assert 'class=differs' in doc
    totals = _cells(doc, "split-totals")
    assert totals[1][1] != totals[2][1]  # gamma 50 vs 20: different labeled totals
    bias_rows = _cells(doc, "bias")
    for row, rid in zip(bias_rows[1:], (1, 2)):
        summary = bias.run_bias_summary(trained, rid)
        assert row[1:] == [f"{summary[k]:.3f}" for k in bias.SUMMARY_KEYS]
    assert doc.count('class="plotly-graph-div"') == len(COMPARE_TITLES)


def test_plotly_is_embedded_once_and_nothing_is_linked(reports):
    start = get_plotlyjs()[:300]
    for path in reports.values():
        doc = _text(path)
        assert doc.count(start) == 1
        assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", doc, re.I)  # no external resource
        assert "cdn.plot.ly" not in doc.replace(get_plotlyjs(), "")  # only plotly.js's own (unused) map URLs


def test_user_strings_are_escaped(store):
    cfg = {**TrainConfig(steps=10).to_dict(), "name": HOSTILE, "dataset": f"/data/{HOSTILE}"}
    names = [HOSTILE, "a&b", "c"]
    rid = store.create_run(cfg, info={"class_names": names, "labeled_counts": [5, 2, 1],
                                      "unlabeled_counts": [9, 4, 2], "val_counts": [3, 3, 3], "test_counts": [4, 4, 4]})
    m = [[3, 0, 0], [1, 2, 0], [0, 1, 2]]
    store.log(rid, {"step": 5, "wall": 1.0, "scalars": {"loss": 1.0},
                    "classes": [dict(threshold=0.95, conf_pl=0.9, conf_true=0.8, n_pl=3, n_accepted=2, n_true=3,
                                     n_correct=2, precision=1.0, recall=0.6) for _ in names],
                    "eval": {s: {"accuracy": 0.7, "balanced_accuracy": 0.6, "recall": [1.0, 0.6, 0.6],
                                 "confusion": m} for s in ("val", "test")}})
    for doc in (report.run_report(store, rid), report.compare_report(store, [rid])):
        assert HOSTILE not in doc and "<script><script" not in doc
        assert "<script>window.__pwned" not in doc and "<img" not in doc
        assert html.escape(HOSTILE) in doc  # shown, as text
        assert "a&amp;b" in doc
    with pytest.raises(ValueError, match="There is no run 99"):
        report.run_report(store, 99)


def _long_run(store, steps=50_000, log_every=10, eval_every=100, k=10) -> int:
    """A synthetic 50k-step, 10-class run with the density of a real one (every kind of record), written fast."""
    rng = np.random.default_rng(0)
    rid = store.create_run({**TrainConfig(steps=steps).to_dict(), "name": "long"},
                           info={"class_names": [f"class {c}" for c in range(k)], "labeled_counts": [50] * k,
                                 "unlabeled_counts": [40] * k, "val_counts": [30] * k, "test_counts": [50] * k})
    m = rng.integers(0, 30, (k, k)).tolist()
    for step in range(log_every, steps + 1, log_every):
        rec = {"step": step, "wall": step / 100, "scalars": dict(loss=rng.random(), loss_sup=rng.random(),
                                                                  loss_unsup=rng.random(), mask_rate=rng.random(),
                                                                  pl_accuracy=rng.random(), lr=0.03),
               "classes": [dict(threshold=0.95, conf_pl=rng.random(), conf_true=rng.random(), n_pl=20,
                                n_accepted=int(rng.integers(0, 20)), n_true=20, n_correct=10, precision=rng.random(),
                                recall=rng.random()) for _ in range(k)],
               "technique": {"da.p_model": rng.random(k).tolist(), "freematch.tau_t": rng.random()},
               "pseudo_confusion": m}
        if step % eval_every == 0:
            splits = ("val", "test") if step == steps else ("val",)
            rec["eval"] = {s: {"accuracy": rng.random(), "balanced_accuracy": rng.random(),
                               "recall": rng.random(k).tolist(), "confusion": m} for s in splits}
        store.log(rid, rec)
    return rid


def test_a_long_run_stays_a_few_mb(store):
    rid = _long_run(store)
    doc = report.run_report(store, rid)
    size = len(doc.encode())
    figures_only = size - len(get_plotlyjs().encode())
    print(f"50k-step run report: {size / 1e6:.2f} MB ({figures_only / 1e6:.2f} MB besides plotly.js)")
    assert size < 6e6 and figures_only < 1e6
    assert len(report.compare_report(store, [rid, rid]).encode()) < 6e6


# -- in Chromium, offline ----------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_offline(browser, path) -> tuple[list[int], list[str], list[str]]:
    """Open ``path`` from its file URL with every other request aborted.

    Returns [title, number of data traces] of each Plotly chart, every URL the page requested (allowed or not)
    and the page's script errors.
    """
    url = path.resolve().as_uri()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: requests.append(ws.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    context.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
    try:
        page.goto(url, wait_until="load")
        page.wait_for_timeout(300)  # any late request (fonts, map tiles) would show up here
        charts = page.evaluate(PLOT_DATA_JS)
        pwned = page.evaluate("() => window.__pwned || null")
    finally:
        context.close()
    assert pwned is None
    return charts, requests, errors


@pytest.mark.browser
@pytest.mark.parametrize("kind, titles", [("run", RUN_TITLES), ("compare", COMPARE_TITLES)])
def test_report_renders_its_charts_offline(browser, trained, reports, kind, titles):
    if "<technique state>" in titles:  # one chart per quantity the run's techniques report
        at = titles.index("<technique state>")
        titles = [*titles[:at], *_technique_titles(trained, 1), *titles[at + 1:]]
    charts, requests, errors = open_offline(browser, reports[kind])
    assert requests == [reports[kind].resolve().as_uri()]  # nothing but the file itself
    assert errors == []
    assert [title for title, _ in charts] == titles
    assert all(n > 0 for _, n in charts), charts  # every chart drew data


@pytest.mark.browser
def test_the_offline_check_catches_a_cdn_script(browser, reports, tmp_path):
    """The check above fails for a report that loads plotly.js from a CDN instead of embedding it."""
    doc = _text(reports["run"]).replace(f"<script type=\"text/javascript\">{get_plotlyjs()}</script>",
                                        '<script src="https://cdn.plot.ly/plotly-3.0.1.min.js"></script>')
    cdn = tmp_path / "cdn.html"
    cdn.write_text(doc, encoding="utf-8")
    charts, requests, _ = open_offline(browser, cdn)
    assert "https://cdn.plot.ly/plotly-3.0.1.min.js" in requests
    assert charts == []  # without plotly.js no chart is drawn
