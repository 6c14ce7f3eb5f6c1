"""AppTest smoke tests of every page against a temporary run store filled with synthetic records."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from sslviz.engine.config import TrainConfig
from sslviz.runs.store import RunStore

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 60  # the first run imports sklearn (and maybe torch)


def _at():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=TIMEOUT)


@pytest.fixture()
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("SSLVIZ_HOME", str(tmp_path))
    monkeypatch.setenv("SSLVIZ_STORE", str(tmp_path / "runs.db"))
    return RunStore(tmp_path / "runs.db")


def make_run(store: RunStore, *, dataset="digits", preset="fixmatch", name="", status="running", steps=100,
             snapshots=False) -> int:
    """A run with ``info`` as the worker writes it, in the given status."""
    k = 6 if dataset == "toy2d" else 10
    info = {
        "class_names": list("ABCDEF") if k == 6 else [str(i) for i in range(k)],
        "labeled_counts": [int(60 * 50 ** (-i / (k - 1))) for i in range(k)],
        "unlabeled_counts": [int(120 * 50 ** (-i / (k - 1))) for i in range(k)],
        "test_counts": [50] * k, "kind": "points" if k == 6 else "image", "model": "mlp", "device": "cpu",
    }
    cfg = TrainConfig.from_dict(dict(dataset=dataset, steps=steps, name=name), preset=preset)
    rid = store.create_run(cfg.to_dict(), info=info)
    store.update_run(rid, status=status, started=1000.0)
    return rid


def log_steps(store: RunStore, rid: int, steps, *, k=10, snapshot=False, seed=0, splits=("val", "test"),
              technique=False) -> None:
    """Synthetic trainer records at ``steps``: an evaluation of ``splits`` at every step divisible by 20
    (``splits=None``: the flat test-only format of runs recorded before the validation split)."""
    rng = np.random.default_rng(seed)
    for step in steps:
        classes = []
        for c in range(k):
            n_true = 20 - c
            n_acc = max(0, 30 - 3 * c)
            classes.append(dict(threshold=0.95 - 0.01 * c, conf_pl=0.5 + 0.004 * step / (c + 1), conf_true=0.4,
                                n_pl=n_acc + 2, n_accepted=n_acc, n_true=n_true, n_correct=min(n_acc, n_true),
                                precision=0.8, recall=0.6))
        record = dict(step=step, wall=1000.0 + step * 0.1,
                      scalars=dict(loss=1.0 / (1 + step), loss_sup=0.5, loss_unsup=0.2, mask_rate=0.3,
                                   pl_accuracy=0.7, lr=0.03),
                      classes=classes)
        if step % 20 == 0:
            cm = rng.integers(0, 10, (k, k)) + np.eye(k, dtype=int) * 40
            e = dict(accuracy=0.5 + step / 1000, balanced_accuracy=0.4 + step / 1000,
                     recall=np.linspace(0.9, 0.1, k).tolist(), confusion=cm.tolist())
            record["eval"] = e if splits is None else {split: e for split in splits}
            record["pseudo_confusion"] = cm.tolist()
            if snapshot:
                n = 12
                regions = [[(i + j) % k for i in range(n)] for j in range(n)]
                pts = [[rng.normal(), rng.normal(), c % k, 0.9, int(c % 2 == 0), (c + 1) % k] for c in range(30)]
                record["snapshot"] = dict(extent=[-3, 3, -3, 3], grid=n, regions=regions, points=pts)
        if technique:
            record["technique"] = {"da.p_model": np.full(k, 1 / k).tolist(), "freematch.tau_t": 0.5 + step / 1000,
                                   "pseudo_label.mean": np.linspace(2, 1, k).tolist()}
        store.log(rid, record)


def open_page(page: str, **query):
    """The app opened on ``pages/<page>.py`` with ``query`` as its URL's query parameters, drawn without error."""
    at = _at().run()
    for key, value in query.items():
        at.query_params[key] = str(value)
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def values(v) -> list:
    """A trace array as a list: plotly 7 may encode numpy arrays as {'dtype', 'bdata'[, 'shape']}."""
    if isinstance(v, dict) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        if "shape" in v:
            arr = arr.reshape([int(n) for n in str(v["shape"]).split(",")])
        return arr.tolist()
    return list(v)


def plotly_specs(at) -> dict[str, dict]:
    """key -> decoded figure spec of every plotly chart on the page."""
    out = {}
    for el in at.get("plotly_chart"):
        out[el.key] = json.loads(el.proto.spec)
    return out


LIVE_TABS = ["Pseudo-labels", "Thresholds", "Confusion", "Validation & test", "Technique state", "Training"]


def live_tab(at, tab: str) -> dict[str, dict]:
    """Open ``tab`` on the Live page (its bound key, as a click would) and return the charts on the page."""
    at.session_state["tab"] = tab
    at.run()
    assert not at.exception, at.exception
    return plotly_specs(at)


def all_live_tabs(at) -> dict[str, dict]:
    """The charts of every Live tab, opened one after another (only the open tab builds its figures)."""
    specs = {}
    for tab in LIVE_TABS:
        specs.update(live_tab(at, tab))
    return specs


# -- Setup ----------------------------------------------------------------------
def test_setup_renders_and_refuses_invalid_gamma(store):
    at = _at().run()
    assert not at.exception
    # The split preview: a table first (no plotly.js on the first paint), the chart on request.
    assert "setup_split_chart" not in plotly_specs(at)
    assert any(">50<" in h.proto.body.replace(" ", "") for h in at.get("html"))  # N_1 = 50 labeled in class 0
    at.toggle(key="split_as_chart").set_value(True).run()
    assert "setup_split_chart" in plotly_specs(at)
    assert at.button(key="start").disabled is False
    at.number_input(key="cfg_gamma").set_value(0.5).run()
    assert any("'gamma' parameter of TrainConfig" in e.value for e in at.error)
    assert at.button(key="start").disabled is True
    at.number_input(key="cfg_gamma").set_value(10.0).run()
    assert not at.error and at.button(key="start").disabled is False


def test_setup_split_error_disables_start(store):
    at = _at().run()
    at.number_input(key="cfg_n1").set_value(5).run()
    assert any("0 labeled examples" in e.value for e in at.error)
    assert at.button(key="start").disabled is True


def test_setup_preset_and_yaml_import(store):
    at = _at().run()
    at.selectbox(key="cfg_preset").set_value("balanced").run()
    assert at.session_state["cfg_dist_align"] == "labeled"
    at.text_area(key="yaml_text").input("preset: freematch\ndataset: toy2d\ngamma: 20\n").run()
    at.button(key="apply_yaml").click().run()
    assert not at.exception
    assert at.session_state["cfg_threshold_schedule"] == "freematch"
    assert at.session_state["ds_choice"] == "toy2d"
    at.text_area(key="yaml_text").input("gamma: -1\n").run()
    at.button(key="apply_yaml").click().run()
    assert any("'gamma' parameter" in e.value for e in at.error)


def test_setup_start_submits_a_run(store, monkeypatch):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # no free slot: the run is recorded and queued, no process starts
    monkeypatch.setenv("SSLVIZ_GPU_SLOTS", "0")
    at = _at().run()
    at.number_input(key="cfg_steps").set_value(20).run()
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    runs = store.runs()
    assert len(runs) == 1 and runs["status"].iloc[0] == "queued"
    rid = int(runs["id"].iloc[0])
    assert store.run(rid)["config"]["steps"] == 20
    assert at.query_params.get("run") == str(rid)
    assert at.title[0].value == "Live run"  # switched to the Live page


# -- Live -----------------------------------------------------------------------
def test_live_empty_state(store):
    at = _at().run()
    at.switch_page("pages/live.py").run()
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)


def test_live_charts_update_on_rerun(store):
    rid = make_run(store, status="finished")
    log_steps(store, rid, range(0, 50, 10))
    at = open_page("live", run=str(rid))
    first = plotly_specs(at)
    assert set(first) == {"live_conf_pl", "live_conf_true", "live_pl_now", "live_pl_pr", "live_pl_time"}  # one tab built
    specs = all_live_tabs(at)
    for key in ("live_conf_pl", "live_conf_true", "live_pl_now", "live_threshold", "live_cm_val", "live_cm_test",
                "live_cm_pseudo", "live_acc", "live_recall", "live_loss", "live_lr", "live_mask"):
        assert key in specs, key
    assert "Test-set confusion matrix" in specs["live_cm_test"]["layout"]["title"]["text"]
    assert "Validation-set confusion matrix" in specs["live_cm_val"]["layout"]["title"]["text"]
    acc = {t["name"]: t for t in specs["live_acc"]["data"]}
    assert values(acc["balanced accuracy (validation)"]["x"]) == [0, 20, 40]
    assert acc["balanced accuracy (test)"]["mode"] == "markers"
    assert values(specs["live_conf_pl"]["data"][0]["x"]) == [0, 10, 20, 30, 40]
    assert specs["live_conf_pl"]["layout"]["uirevision"]

    log_steps(store, rid, range(50, 70, 10))
    specs = live_tab(at, "Pseudo-labels")
    assert values(specs["live_conf_pl"]["data"][0]["x"]) == [0, 10, 20, 30, 40, 50, 60]
    assert "step 60" in specs["live_pl_now"]["layout"]["title"]["text"]


def test_live_bins_a_long_run_and_a_step_window_reads_it_at_full_resolution(store):
    rid = make_run(store, status="finished", steps=4000)
    log_steps(store, rid, range(0, 4000, 10))  # 400 log steps: more than the page's LIVE_POINTS
    at = open_page("live", run=str(rid))
    specs = plotly_specs(at)
    x = values(specs["live_conf_pl"]["data"][0]["x"])
    assert len(x) <= 300 and x[-1] == 3990  # binned, the latest step kept
    assert any(t["name"].endswith("(min–max per bin)") for t in specs["live_pl_time"]["data"])
    at.slider(key=f"live_steps_{rid}").set_value((1000, 1500)).run()
    assert not at.exception
    specs = plotly_specs(at)
    assert values(specs["live_conf_pl"]["data"][0]["x"]) == list(range(1000, 1501, 10))  # every step of the window
    assert not any(t["name"].endswith("(min–max per bin)") for t in specs["live_pl_time"]["data"])


def test_a_step_window_narrows_the_charts_not_the_status(store):
    """The step window narrows the charts only: the status line's elapsed time stays the whole run's; a window with
    no log says so (the run is not "waiting for its first metrics"); the confusion matrices are the latest inside
    the window; on the wall-time axis the evaluations count from the same first log as the training metrics."""
    rid = make_run(store, status="finished", steps=2000)
    log_steps(store, rid, range(10, 2001, 10))  # wall = 1000 + step / 10: 199 s from the first log to the last
    at = _at().run()
    at.query_params["run"] = str(rid)
    at.switch_page("pages/live.py").run()
    status = lambda: [m.value for m in at.markdown if "elapsed" in m.value]
    whole = status()
    assert len(whole) == 1
    at.slider(key=f"live_steps_{rid}").set_value((500, 1000)).run()
    assert not at.exception and status() == whole
    titles = {k: v["layout"]["title"]["text"] for k, v in live_tab(at, "Confusion").items()}
    assert all(titles[f"live_cm_{kind}"].endswith("(step 1000)") for kind in ("val", "test", "pseudo")), titles
    at.slider(key=f"live_steps_{rid}").set_value((0, 4)).run()
    assert any("No metrics were logged between steps 0 and 4" in i.value for i in at.info)
    assert status() == whole and "live_waiting" not in plotly_specs(at)
    at.slider(key=f"live_steps_{rid}").set_value((0, 2000)).run()
    at.session_state["x"] = "wall time"
    specs = live_tab(at, "Validation & test")
    first_eval = min(min(values(t["x"])) for t in specs["live_acc"]["data"] if t.get("x") is not None)
    assert first_eval == pytest.approx(1.0)  # the evaluation at step 20, 1 s after the first log (step 10)


def test_live_technique_state_tab(store):
    rid = make_run(store, status="finished")
    log_steps(store, rid, range(0, 50, 10), technique=True)
    at = open_page("live", run=str(rid))
    specs = live_tab(at, "Technique state")
    lines = lambda key: [t for t in specs[key]["data"] if not t["name"].endswith("(raw)")]  # smoothing adds raw lines
    assert len(lines("live_tech_da.p_model")) == 10  # one line per class
    tau = lines("live_tech_freematch.tau_t")
    assert len(tau) == 1 and values(tau[0]["x"]) == [0, 10, 20, 30, 40]
    assert any("da.p_model" in c.value for c in at.caption)
    # The mean pseudo-label distribution beside the hidden truth (the run's unlabeled counts, as shares).
    truth, estimate = specs["live_truth_pseudo_label.mean"]["data"]
    counts = np.array(store.run(rid)["info"]["unlabeled_counts"], dtype=float)
    assert values(truth["y"]) == pytest.approx(counts / counts.sum()) and values(estimate["y"]) == pytest.approx(
        np.linspace(2, 1, 10))


def test_compare_technique_state_side_by_side(store):
    a, b = make_run(store, name="da", status="finished"), make_run(store, name="plain", status="finished")
    log_steps(store, a, range(0, 50, 10), technique=True)
    log_steps(store, b, range(0, 50, 10))
    at = open_page("compare", runs=f"{a},{b}")
    at.selectbox(key="compare_tech_name").select("freematch.tau_t").run()
    lines = plotly_specs(at)["compare_tech_chart"]["data"]
    assert len(lines) == 1 and values(lines[0]["y"]) == pytest.approx([0.5, 0.51, 0.52, 0.53, 0.54])  # only run a
    at.selectbox(key="compare_tech_name").select("da.p_model").run()
    bars = plotly_specs(at)["compare_tech_chart"]["data"]
    assert len(bars) == 1 and bars[0]["type"] == "bar" and values(bars[0]["y"]) == pytest.approx([0.1] * 10)


def test_live_run_without_validation_data(store):
    """A run recorded before the validation split (flat test evals) still shows, and says so."""
    rid = make_run(store, status="finished")
    log_steps(store, rid, range(0, 50, 10), splits=None)
    at = open_page("live", run=str(rid))
    specs = live_tab(at, "Validation & test")
    message = "no validation data (run recorded before the validation split)"
    assert message in [a["text"] for a in specs["live_acc"]["layout"]["annotations"]]
    specs = live_tab(at, "Confusion")
    assert any(message in c.value for c in at.caption)
    assert sum(np.sum(values(t["z"])) for t in specs["live_cm_test"]["data"]) > 0
    assert not specs["live_cm_val"]["data"]
    live_tab(at, "Technique state")
    assert any("No technique state recorded" in i.value for i in at.info)


def test_live_status_and_controls(store):
    rid = make_run(store, status="stopped", steps=100)
    log_steps(store, rid, [0, 10])  # the trainer's clock reads 1001 s at step 10
    at = _at().run()
    at.switch_page("pages/live.py").run()
    assert not at.exception
    assert at.button(key="live_resume")
    assert at.progress[0].proto.value == 10  # percent: step 10 of 100
    # Elapsed is the trainer's wall clock, which survives resumes, not the time since `started`.
    assert any("elapsed 16m 41s" in m.value for m in at.markdown)
    store.update_run(rid, status="failed", error="process lost")
    at.run()
    assert any("process lost" in e.value for e in at.error)


# -- Compare --------------------------------------------------------------------
def test_compare_table_and_bias(store):
    a = make_run(store, name="plain", status="finished")
    b = make_run(store, preset="balanced", name="bal", status="finished")
    for rid in (a, b):
        log_steps(store, rid, range(0, 41, 10))
    at = _at().run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["id"]) == [a, b]
    assert table[["validation balanced acc", "test balanced acc"]].iloc[0].tolist() == pytest.approx([0.44, 0.44])
    assert table["code version"].iloc[0].startswith("0.2.0")
    assert {"compare_balanced_accuracy", "compare_recall_val", "compare_recall_test",
            "compare_bias_chart"} <= set(plotly_specs(at))
    bias_table = at.dataframe[1].value
    # recall linspace(0.9, 0.1, 10), spacing 0.8/9: head (0,1,2) mean 0.9 - 0.8/9, tail (7,8,9) mean 0.1 + 0.8/9
    for split in ("validation", "test"):
        assert bias_table[f"head − tail recall ({split})"].iloc[0] == pytest.approx(0.8 - 1.6 / 9)
        assert bias_table[f"recall of the 3 rarest ({split})"].iloc[0] == pytest.approx(0.1 + 0.8 / 9)
    # n_accepted 30 - 3c: head share 30 / 165
    assert bias_table["head share of pseudo-labels"].iloc[0] == pytest.approx(30 / 165)


def test_compare_colours_a_run_alike_in_every_chart(store):
    """A toy2d run among digits runs is left out of the recall charts (other classes): the runs after it keep the
    colour they have in the accuracy charts."""
    a = make_run(store, name="a", status="finished")
    t = make_run(store, dataset="toy2d", name="t", status="finished")
    b = make_run(store, preset="balanced", name="b", status="finished")
    for rid, k in ((a, 10), (t, 6), (b, 10)):
        log_steps(store, rid, range(0, 41, 10), k=k)
    at = _at().run()
    at.query_params["runs"] = f"{a},{t},{b}"
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    specs = plotly_specs(at)
    line = {tr["name"]: tr.get("line", {}).get("color") for tr in specs["compare_balanced_accuracy"]["data"]}
    bars = {tr["name"]: tr["marker"]["color"] for tr in specs["compare_recall_test"]["data"]}
    assert f"#{t} t" not in bars and line[f"#{b} b (validation)"] == bars[f"#{b} b"] != bars[f"#{a} a"]


def test_compare_says_when_what_it_shows_is_not_current(store, monkeypatch):
    """Compare does not refresh itself: with a run still active it says its statuses are as of now, with a Refresh
    button; with every run ended it says nothing."""
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # the queued run stays queued
    done = make_run(store, name="done", status="finished")
    log_steps(store, done, range(0, 41, 10))
    at = _at().run()
    at.query_params["runs"] = str(done)
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not [b for b in at.button if b.key == "compare_refresh"]
    make_run(store, name="waiting", status="queued")
    at.run()
    assert any("1 of these runs is still queued or running" in c.value for c in at.caption)
    at.button(key="compare_refresh").click().run()
    assert not at.exception


def test_compare_old_run_without_validation(store):
    old = make_run(store, name="old", status="finished")
    log_steps(store, old, range(0, 41, 10), splits=None)
    new = make_run(store, name="new", status="finished")
    log_steps(store, new, range(0, 41, 10))
    at = _at().run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("id")
    assert np.isnan(table.loc[old, "validation acc"]) and table.loc[old, "test acc"] == pytest.approx(0.54)
    assert any("no validation data (run recorded before the validation split)" in c.value and "#1 old" in c.value
               for c in at.caption)
    bias_table = at.dataframe[1].value.set_index("run")
    assert np.isnan(bias_table.loc["#1 old", "head − tail recall (validation)"])


def test_compare_delete_with_confirmation(store):
    a = make_run(store, status="finished")
    make_run(store, status="finished")
    at = _at().run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="delete_runs").set_value([a]).run()
    at.button(key="delete_ask").click().run()
    assert len(store.runs()) == 2  # nothing deleted before confirming
    at.button(key="delete_yes").click().run()
    assert not at.exception
    assert store.run(a) is None and len(store.runs()) == 1


# -- Data -------------------------------------------------------------------------
def test_data_page_digits(store):
    at = _at().run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    specs = plotly_specs(at)
    assert {"data_split_chart", "data_samples"} <= set(specs)


def test_data_page_toy2d_run(store):
    make_run(store, dataset="toy2d", status="finished")
    at = _at().run()
    at.switch_page("pages/data.py").run()
    at.selectbox(key="data_source").set_value(at.selectbox(key="data_source").options[1]).run()
    assert not at.exception
    assert "data_points" in plotly_specs(at)


@pytest.mark.skipif(not __import__("sslviz.engine.text").engine.text.wordnet_available(), reason="WordNet is not installed here "
                    "(sudo apt-get install wordnet-base)")
def test_data_page_wordnet_shows_head_and_rare_sentences_with_views(store):
    at = _at().run()
    at.selectbox(key="ds_choice").set_value("wordnet").run()
    at.selectbox(key="cfg_preset").set_value("balanced").run()
    assert not at.exception and not at.warning  # installed: no install hint
    at.switch_page("pages/data.py").run()
    assert not at.exception
    views = at.dataframe[-1].value
    assert list(views.columns) == ["class", "class_name", "strength", "sentence", "weak", "strong"]
    assert views.groupby("class_name")["strength"].first().to_dict() == {"noun.artifact": 1.0, "noun.substance": 3.0}


def test_setup_says_how_to_install_wordnet_when_it_is_absent(store, tmp_path, monkeypatch):
    monkeypatch.setenv("SSLVIZ_WORDNET", str(tmp_path / "no-wordnet"))
    at = _at().run()
    at.selectbox(key="ds_choice").set_value("wordnet").run()
    assert not at.exception
    assert any("apt-get install wordnet-base" in w.value for w in at.warning)


# -- Teaching -------------------------------------------------------------------
def test_teaching_empty_state(store):
    at = _at().run()
    at.switch_page("pages/teaching.py").run()
    assert not at.exception
    assert any("Launch two toy2d runs" in i.value for i in at.info)
    assert at.button(key="teach_launch")


def test_teaching_launch_shows_the_pair_it_started(store, monkeypatch):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # recorded and queued; nothing spawns
    old = make_run(store, dataset="toy2d", status="finished", name="old")
    at = _at().run()
    at.switch_page("pages/teaching.py").run()
    at.button(key="teach_launch").click().run()
    assert not at.exception, at.exception
    new = sorted(set(store.runs().id) - {old})
    assert [at.selectbox(key="teach_left").value, at.selectbox(key="teach_right").value] == new  # fixmatch | balanced


def test_teaching_two_runs_with_snapshots(store):
    a = make_run(store, dataset="toy2d", status="finished", name="fm")
    b = make_run(store, dataset="toy2d", preset="balanced", status="finished", name="bal")
    for rid in (a, b):
        log_steps(store, rid, range(0, 41, 20), k=6, snapshot=True)
    at = _at().run()
    at.switch_page("pages/teaching.py").run()
    assert not at.exception
    specs = plotly_specs(at)
    assert {"teach_chart_left", "teach_chart_right"} <= set(specs)
    assert "step 40" in specs["teach_chart_left"]["layout"]["title"]["text"]
    assert any(c.value == "Balanced accuracy: validation 0.44 (step 40) · test 0.44 (step 40)" for c in at.caption)
    from sslviz.runs import doctor

    said = [m.value for m in at.markdown if m.value.startswith("**What this shows**")]  # the doctor, in words
    assert said == [f"**What this shows** (the doctor, whole run): "
                    f"{doctor.headline(doctor.diagnose(doctor.read(store, rid)))}" for rid in (a, b)]
    at.select_slider(key="teach_step").set_value(20).run()
    assert "step 20" in plotly_specs(at)["teach_chart_left"]["layout"]["title"]["text"]
    # Animation: each (fragment) rerun shows the next snapshot, from the first one.
    at.toggle(key="teach_play").set_value(True).run()
    assert "step 0" in plotly_specs(at)["teach_chart_left"]["layout"]["title"]["text"]
    at.run()
    assert "step 20" in plotly_specs(at)["teach_chart_left"]["layout"]["title"]["text"]
    assert any("Animating: step 20 (2 of 3 snapshots)" in c.value for c in at.caption)


# -- Many runs: filters and the archive; links to missing runs; read-only -------------------------------------
def test_pickers_filter_and_archive(store, monkeypatch):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # the queued run stays queued: no process starts
    monkeypatch.setenv("SSLVIZ_GPU_SLOTS", "0")
    plain = make_run(store, status="finished", name="plain")
    toy = make_run(store, dataset="toy2d", preset="balanced", status="stopped", name="toy")
    running = make_run(store, status="queued", name="busy")
    at = _at().run()
    at.switch_page("pages/live.py").run()
    assert at.selectbox(key="live_run").options == [f"#{running} busy · digits", f"#{toy} toy · toy2d",
                                                    f"#{plain} plain · digits"]
    at.multiselect(key="live_filter_dataset").set_value(["digits"]).run()
    at.text_input(key="live_filter_text").input("pla").run()
    # The run on screen stays in the list (the view never jumps); the filter leaves one other.
    assert at.selectbox(key="live_run").options == [f"#{running} busy · digits", f"#{plain} plain · digits"]
    at.selectbox(key="live_run").set_value(plain).run()
    assert at.query_params["run"] == [str(plain)] or at.query_params["run"] == str(plain)
    assert at.button(key="live_archive").label == "Archive"
    at.button(key="live_archive").click().run()
    assert not at.exception, at.exception
    assert store.runs()["id"].tolist() == [running, toy]  # hidden from the default list, not deleted
    assert store.run(plain) is not None

    at = _at().run()  # a new session: the archived run is gone from every picker until asked for
    at.switch_page("pages/compare.py").run()
    assert sorted(at.dataframe[0].value["id"]) == [toy, running]
    assert at.multiselect(key="compare_runs").value == [running, toy]
    at.toggle(key="compare_filter_archived").set_value(True).run()
    assert sorted(at.dataframe[0].value["id"]) == [plain, toy, running]
    at.multiselect(key="delete_runs").set_value([plain]).run()
    at.button(key="unarchive_selected").click().run()
    assert not at.exception, at.exception
    assert sorted(store.runs()["id"]) == [plain, toy, running]
    at.multiselect(key="delete_runs").set_value([running]).run()
    assert at.button(key="archive_selected").disabled  # queued and running runs cannot be archived
    at.multiselect(key="compare_runs").set_value([]).run()  # runs already picked stay whatever the filters say
    at.multiselect(key="compare_filter_status").set_value(["stopped"]).run()
    assert at.dataframe[0].value["id"].tolist() == [toy]

    make_run(store, dataset="toy2d", status="finished", name="toy2")
    at = _at().run()
    at.switch_page("pages/teaching.py").run()
    assert len(at.selectbox(key="teach_left").options) == 2
    assert at.multiselect(key="teach_filter_status").options == ["finished", "stopped"]
    assert at.toggle(key="teach_filter_archived").value is False


def test_live_link_to_a_missing_run_says_so(store):
    make_run(store, status="finished")
    at = open_page("live", run="42")
    assert [e.value for e in at.error] == ["There is no run 42 in this store."]
    assert not at.get("selectbox") or not any(s.key == "live_run" for s in at.selectbox)  # no other run shown
    assert not plotly_specs(at)


def test_read_only_mode_offers_no_actions(store, monkeypatch):
    monkeypatch.setenv("SSLVIZ_READ_ONLY", "1")
    stopped = make_run(store, status="stopped")
    log_steps(store, stopped, [0, 10])
    active = make_run(store, status="running")
    make_run(store, dataset="toy2d", status="finished")
    queued = make_run(store, status="queued")
    at = _at().run()
    assert not at.exception
    assert not any(b.key == "start" for b in at.button)
    assert "Local folder…" not in at.selectbox(key="ds_choice").options
    assert [c.value for c in at.sidebar.caption if "read-only" in c.value] == [":material/visibility: read-only: viewing only"]
    for rid in (stopped, active):
        at.query_params["run"] = str(rid)
        at.switch_page("pages/live.py").run()
        assert not at.exception
        keys = {b.key for b in at.button}
        assert not keys & {"live_stop", "live_resume", "live_archive"}, keys
        assert plotly_specs(at) or rid == active  # still shows the run
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert not any(b.key in ("delete_ask", "archive_selected", "unarchive_selected") for b in at.button)
    assert not any(m.key == "delete_runs" for m in at.multiselect)
    at.switch_page("pages/teaching.py").run()
    assert not any(b.key == "teach_launch" for b in at.button)
    assert store.run(queued)["status"] == "queued"  # viewing a read-only server starts nothing


def test_a_run_id_past_64_bits_is_no_run_not_a_traceback(store):
    make_run(store, status="finished")
    at = _at()
    at.query_params["run"] = "99999999999999999999"
    at.switch_page("pages/live.py").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["There is no run 99999999999999999999 in this store."]


def test_the_served_app_shows_no_tracebacks_and_no_deploy_button():
    import tomllib

    client = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())["client"]
    assert client["showErrorDetails"] == "none" and client["toolbarMode"] == "viewer"


def _page_text(at) -> str:
    """Everything a page shows as text (messages, markdown, captions, tables' cells)."""
    parts = [e.value for kind in ("error", "warning", "info", "success", "markdown", "caption", "text", "code")
             for e in getattr(at, kind)]
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(map(str, parts))


def test_read_only_server_opens_no_path_whatever_a_page_is_given(store, tmp_path, monkeypatch):
    """The attack: a read-only server showed the first line of any CSV as 'columns', told whether a folder exists and
    what it holds, and decoded image folders into its cache, from Setup's sweep grid, YAML, or a stored run's config.
    The engine now refuses every non-built-in source before touching the path."""
    monkeypatch.setenv("SSLVIZ_READ_ONLY", "1")
    secret = tmp_path / "secrets.csv"
    secret.write_text("password,hunter2\nalice,s3cret\n")
    private = tmp_path / "private"
    (private / "id_rsa_folder").mkdir(parents=True)
    (private / "id_rsa").write_text("KEY")
    paths = {str(secret): ("password", "hunter2", "s3cret"), str(private): ("id_rsa",),
             str(tmp_path / "absent"): ("does not exist",)}
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    at = _at().run()
    for path, leaks in paths.items():
        at.text_area(key="sweep_grid").set_value(f"dataset={path}\ngamma=10,20").run()  # the sweep grid
        assert not at.exception, at.exception
        shown = _page_text(at)
        assert "read-only" in shown and not any(word in shown for word in leaks), shown
        at.text_area(key="sweep_grid").set_value("").run()
        at.text_area(key="yaml_text").input(f"dataset: {path}\n").run()  # YAML names the path
        at.button(key="apply_yaml").click().run()
        assert not at.exception, at.exception
        shown = _page_text(at)
        assert not any(word in shown for word in leaks), shown
        at.switch_page("pages/data.py").run()  # the Data page previews the Setup form's split
        shown = _page_text(at)
        assert not at.exception and not any(word in shown for word in leaks), shown
        at.switch_page("pages/setup.py").run()
    rid = make_run(store, dataset=str(secret), status="finished")  # a stored run's config names the path
    at.switch_page("pages/data.py").run()
    at.selectbox(key="data_source").set_value(next(o for o in at.selectbox(key="data_source").options
                                                   if o.startswith(f"#{rid} "))).run()
    shown = _page_text(at)
    assert "read-only" in shown and "hunter2" not in shown and "password" not in shown, shown
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "runs.db" not in p.name)
    assert [p for p in after if p not in before] == [], "a read-only server wrote a dataset cache"


def test_live_test_now_evaluates_the_latest_checkpoint_and_stop_after_the_end_is_explained(store, tiny):
    import os
    import time

    from sslviz.runs import worker

    cfg = TrainConfig(**tiny)
    rid = store.create_run(cfg.to_dict())
    assert worker.run_worker(store, rid, progress=lambda step: step == 10 and store.request_stop(rid)) == "stopped"
    # Pretend it is still training in this process (alive pid, fresh heartbeat): Test now must not touch it.
    store.update_run(rid, status="running", pid=os.getpid(), heartbeat=time.time(), stop_requested=0)
    at = _at()
    at.query_params["run"] = str(rid)
    at.switch_page("pages/live.py").run()
    assert not at.exception
    at.button(key="live_test_now").click().run()
    assert not at.exception
    assert any("Test set at step 15 (latest checkpoint): balanced accuracy" in i.value for i in at.info)
    assert store.run(rid)["status"] == "running" and store.run(rid)["step"] == 15
    at.run()  # the next refresh keeps the result on the page (it names its step)
    assert any("Test set at step 15 (latest checkpoint): balanced accuracy" in i.value for i in at.info)
    # The run ends between the page's draw and the click on Stop: the page gets a reason to show, not a traceback.
    store.update_run(rid, status="finished")
    from sslviz.dashboard import ui

    assert "finished" in ui.stop(store, rid)


def log_starved_tail(store: RunStore, rid: int, steps, *, evaluate_every: int | None = None) -> None:
    """Pseudo-label windows of a 10-class run whose 3 rarest classes are predicted but never pass the threshold
    (their confidence 0.5 under 0.95); with ``evaluate_every``, a validation evaluation at those steps."""
    for step in steps:
        classes = [dict(threshold=0.95, conf_pl=0.97 if c < 7 else 0.5, conf_true=0.5, n_pl=40 - 3 * c,
                        n_accepted=20 - c if c < 7 else 0, n_true=40 - 3 * c, n_correct=20 - c if c < 7 else 0,
                        precision=1.0, recall=0.5) for c in range(10)]
        record = dict(step=step, wall=1000.0 + step, scalars=dict(loss=1.0), classes=classes)
        if evaluate_every and step % evaluate_every == 0:
            record["eval"] = {"val": dict(accuracy=0.5, balanced_accuracy=0.5, recall=[0.7] * 7 + [0.0] * 3,
                                          confusion=(np.eye(10, dtype=int) * 30).tolist())}
        store.log(rid, record)


def test_live_shows_the_doctors_findings_in_one_line_that_opens_into_the_evidence(store):
    """A run whose three rarest classes never get a pseudo-label accepted (the model predicts them, below their
    threshold): the Live page's doctor line names tail and threshold starvation; a healthy run says no finding."""
    rid = make_run(store, status="finished")
    log_starved_tail(store, rid, range(10, 210, 10))
    at = open_page("live", run=str(rid))
    doctor_line = [e for e in at.expander if "Doctor:" in e.label]
    assert len(doctor_line) == 1, [e.label for e in at.expander]
    assert "tail starvation — severe" in doctor_line[0].label and "threshold starvation — severe" in doctor_line[0].label
    texts = [t.value for t in doctor_line[0].text]
    assert any(t.startswith("7, 8, 9: not one pseudo-label accepted in 20 logging windows") for t in texts), texts

    healthy = make_run(store, status="finished", dataset="toy2d")
    at = open_page("live", run=str(healthy))
    assert [e.label for e in at.expander if "Doctor:" in e.label] == [":material/stethoscope: Doctor: no finding"]


def test_live_try_it_launches_the_suggestion_beside_the_run_and_opens_compare(store, monkeypatch):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # recorded and queued, not trained
    rid = make_run(store, status="finished")
    log_starved_tail(store, rid, range(10, 210, 10))
    at = open_page("live", run=str(rid))
    at.number_input(key="live_try_seeds").set_value(1)
    at.button(key="live_try").click().run()
    assert not at.exception, at.exception
    new = sorted(set(store.runs().id) - {rid})
    assert len(new) == 3  # the change with seeds 0 and 1, the run as it was with seed 1
    trials = [store.run(i)["info"]["trial"] for i in new]
    assert {t["of"] for t in trials} == {rid} and sorted(t["arm"] for t in trials) == ["control", "treatment", "treatment"]
    assert at.query_params["runs"] == ",".join(map(str, [rid, *new]))  # Compare opened on the four runs
    assert any("The doctor's verdicts" in m.value for m in at.markdown)
    headlines = next(t.value for t in at.text if t.value.startswith(f"#{rid} "))  # which findings each run has
    assert "threshold starvation" in headlines.splitlines()[0] and len(headlines.splitlines()) == 4
    assert any("waiting for run(s)" in t.value for t in at.text)
