"""Figures hold the data they are given, classes keep their colours, and the summaries are hand-checked."""
import math

import numpy as np
import pandas as pd
import pytest

from sslviz.runs import bias
from sslviz.dashboard import charts


def class_train_frame(steps=(0, 10, 20), k=3) -> pd.DataFrame:
    rows = []
    for s in steps:
        for c in range(k):
            rows.append(dict(step=s, cls=c, threshold=0.9 - 0.1 * c, conf_pl=0.1 * c + s / 100, conf_true=0.5,
                             n_pl=10 + c, n_accepted=8 - 2 * c, n_true=6 - c, n_correct=5 - c,
                             precision=0.5 + 0.1 * c, recall=0.4 + 0.1 * c))
    return pd.DataFrame(rows)


NAMES = ["cat", "dog", "eel"]


def evals_frame() -> pd.DataFrame:
    """``store.evals``: validation at steps 10 and 20, test once at the end."""
    return pd.DataFrame({"step": [10, 20, 20], "split": ["val", "val", "test"], "wall": [1.0, 2.0, 2.5],
                         "accuracy": [0.5, 0.6, 0.55], "balanced_accuracy": [0.3, 0.4, 0.45]})


def class_eval_frame(splits=("val", "test")) -> pd.DataFrame:
    return pd.DataFrame([dict(step=s, split=split, cls=c, recall=0.1 * c + s / 100)
                         for split in splits for s in ((10, 20) if split == "val" else (20,)) for c in range(3)])


# -- colours ------------------------------------------------------------------
def test_class_colours_are_fixed_and_shared():
    assert charts.class_color(0) == charts.PALETTE[0]
    assert charts.class_color(3) == charts.class_color(3 + len(charts.PALETTE))
    assert len(set(charts.class_colors(10))) == 10
    ct = class_train_frame()
    lines = charts.make_class_lines_figure(ct, "threshold", NAMES)
    assert [t.line.color for t in lines.data] == charts.class_colors(3)
    split = pd.DataFrame({"class": [0, 1, 2], "class_name": NAMES, "set": "labeled", "count": [9, 3, 1]})
    bars = charts.make_split_counts_figure(split)
    assert list(bars.data[0].marker.color) == charts.class_colors(3)
    now = charts.make_pseudo_counts_figure(ct, NAMES)
    assert list(now.data[0].marker.color) == charts.class_colors(3)


# -- figures hold the data ---------------------------------------------------
def test_confidence_heatmap_matches_pivot():
    ct = class_train_frame()
    fig = charts.make_confidence_heatmap(ct, "conf_pl", NAMES)
    hm = fig.data[0]
    assert list(hm.x) == [0, 10, 20]
    assert list(hm.y) == NAMES
    expected = ct.pivot(index="cls", columns="step", values="conf_pl").to_numpy()
    np.testing.assert_allclose(np.asarray(hm.z, dtype=float), expected)
    assert fig.layout.uirevision == "live"
    assert "pseudo-label" in fig.layout.title.text and fig.layout.xaxis.title.text == "training step"


def test_class_lines_hold_each_class_series():
    ct = class_train_frame()
    fig = charts.make_class_lines_figure(ct, "threshold", NAMES, title="thr", y_title="threshold")
    assert [t.name for t in fig.data] == NAMES
    for c, trace in enumerate(fig.data):
        part = ct[ct["cls"] == c]
        assert list(trace.x) == part["step"].tolist()
        np.testing.assert_allclose(trace.y, part["threshold"].to_numpy())
    smoothed = charts.make_class_lines_figure(ct, "threshold", NAMES, smoothing=0.5)
    assert len(smoothed.data) == 6  # a faint raw line under each smoothed one


def test_split_counts_hold_counts_per_set():
    split = pd.DataFrame([{"class": c, "class_name": n, "set": s, "count": (c + 1) * (i + 1)}
                          for i, s in enumerate(charts.SETS) for c, n in enumerate(NAMES)])
    fig = charts.make_split_counts_figure(split)
    assert len(fig.data) == 4 and [a.text.split(" (")[0] for a in fig.layout.annotations] == list(charts.SETS)
    assert "validation" in charts.SETS  # the preview shows every set a run splits off, validation included
    for i, trace in enumerate(fig.data):
        assert list(trace.x) == NAMES
        assert list(trace.y) == [(c + 1) * (i + 1) for c in range(3)]


def test_pseudo_counts_now_uses_the_latest_step():
    ct = class_train_frame()
    fig = charts.make_pseudo_counts_figure(ct, NAMES)
    assert list(fig.data[0].y) == [8, 6, 4]  # n_accepted at step 20
    assert list(fig.data[1].y) == [6, 5, 4]  # n_true
    np.testing.assert_allclose(np.asarray(fig.data[0].customdata, dtype=float)[:, 0], [0.5, 0.6, 0.7])
    assert "step 20" in fig.layout.title.text
    over_time = charts.make_pseudo_counts_over_time_figure(ct, NAMES)
    assert len(over_time.data) == 6 and over_time.data[1].line.dash == "dash"


def test_confusion_counts_and_normalised():
    m = np.array([[8, 2], [1, 3]])
    fig = charts.make_confusion_figure(m, ["a", "b"])
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), m)
    assert fig.layout.yaxis.title.text == "true class (rows)"
    norm = charts.make_confusion_figure(m, ["a", "b"], normalize=True)
    np.testing.assert_allclose(np.asarray(norm.data[0].z), [[0.8, 0.2], [0.25, 0.75]])
    zero = charts.make_confusion_figure(np.zeros((2, 2)), normalize=True)
    np.testing.assert_array_equal(np.asarray(zero.data[0].z), 0)


def test_scalars_and_run_overlays():
    df = pd.DataFrame({"step": [0, 1, 2], "wall": [5.0, 6.0, 8.0], "loss": [3.0, 2.0, 1.0], "lr": [0.1, 0.1, 0.05]})
    fig = charts.make_scalars_figure(df, ["loss", "lr", "missing"], title="t")
    assert [t.name for t in fig.data] == ["loss", "lr"]
    np.testing.assert_allclose(fig.data[0].y, [3, 2, 1])
    walled = charts.make_scalars_figure(charts.attach_wall(df, df), ["loss"], x="wall")
    np.testing.assert_allclose(walled.data[0].x, [0, 1, 3])
    assert walled.layout.xaxis.title.text.startswith("wall time")
    ov = charts.make_runs_overlay_figure({"#1": evals_frame(), "#2": pd.DataFrame()}, "balanced_accuracy")
    assert [(t.name, t.mode) for t in ov.data] == [("#1 (validation)", "lines"), ("#1 (test)", "markers")]
    np.testing.assert_allclose(ov.data[0].y, [0.3, 0.4])
    np.testing.assert_allclose(ov.data[1].y, [0.45])
    assert ov.data[0].line.color == ov.data[1].marker.color  # one colour per run
    rec = charts.make_recall_comparison_figure({"#1": [0.9, 0.1], "#2": [0.5, 0.5]}, ["a", "b"], split="val")
    assert [list(t.y) for t in rec.data] == [[0.9, 0.1], [0.5, 0.5]]
    assert rec.layout.barmode == "group" and "validation" in rec.layout.title.text
    assert rec.layout.yaxis.title.text == "validation recall"


def test_eval_figure_validation_lines_test_markers():
    fig = charts.make_eval_figure(evals_frame())
    assert [(t.name, t.mode) for t in fig.data] == [
        ("balanced accuracy (validation)", "lines"), ("balanced accuracy (test)", "markers"),
        ("accuracy (validation)", "lines"), ("accuracy (test)", "markers")]
    assert list(fig.data[0].x) == [10, 20] and list(fig.data[1].x) == [20]
    np.testing.assert_allclose(fig.data[3].y, [0.55])
    assert fig.data[1].marker.symbol == "diamond" and fig.data[1].marker.color == fig.data[0].line.color
    assert not fig.layout.annotations  # validation present: no note


def test_figures_say_when_a_run_has_no_validation_data():
    old = evals_frame().query("split == 'test'")
    for fig in (charts.make_eval_figure(old), charts.make_runs_overlay_figure({"#1": old}, "accuracy"),
                charts.make_class_recall_figure(class_eval_frame(("test",)), NAMES)):
        assert [a.text for a in fig.layout.annotations] == [charts.NO_VAL_MESSAGE]
        assert [t.mode for t in fig.data] == ["markers"] * len(fig.data) and fig.data  # the test points still show
    assert charts.NO_VAL_MESSAGE == "no validation data (run recorded before the validation split)"


def test_class_recall_figure_per_class_colours_and_splits():
    fig = charts.make_class_recall_figure(class_eval_frame(), NAMES)
    assert [t.name for t in fig.data] == [f"{n} ({s})" for n in NAMES for s in ("validation", "test")]
    for c in range(3):
        val, test = fig.data[2 * c], fig.data[2 * c + 1]
        assert val.line.color == test.marker.color == charts.class_color(c)
        np.testing.assert_allclose(val.y, [0.1 * c + 0.1, 0.1 * c + 0.2])
        assert list(test.x) == [20] and test.showlegend is False
    assert "validation" in fig.layout.title.text and "test" in fig.layout.title.text


def test_technique_figure_vector_and_scalar():
    tech = pd.DataFrame([dict(step=s, name="da.p_model", cls=c, value=0.1 * c + s) for s in (5, 10) for c in range(3)]
                        + [dict(step=s, name="freematch.tau_t", cls=-1, value=0.7) for s in (5, 10)])
    vec = charts.make_technique_figure(tech, "da.p_model", NAMES)
    assert [t.name for t in vec.data] == NAMES and vec.layout.title.text == "da.p_model"
    assert [t.line.color for t in vec.data] == charts.class_colors(3)
    np.testing.assert_allclose(vec.data[2].y, [5.2, 10.2])
    one = charts.make_technique_figure(tech, "freematch.tau_t")
    assert len(one.data) == 1 and list(one.data[0].y) == [0.7, 0.7] and one.layout.showlegend is False
    assert not charts.make_technique_figure(tech, "missing").data


def test_bias_figure_shows_validation_and_test_recall():
    summary = pd.DataFrame({"run": ["#1", "#2"], "val_head_tail_gap": [0.5, 0.2], "test_head_tail_gap": [0.4, 0.1],
                            "val_tail_recall": [0.1, 0.3], "test_tail_recall": [0.2, 0.4],
                            "kl_pseudo_true": [0.3, 0.1], "head_share": [0.6, 0.3]})
    fig = charts.make_bias_figure(summary)
    assert [(t.name, list(t.y)) for t in fig.data[:4]] == [
        ("validation", [0.5, 0.2]), ("test", [0.4, 0.1]), ("validation", [0.1, 0.3]), ("test", [0.2, 0.4])]
    assert [a.text for a in fig.layout.annotations][:2] == ["head − tail recall", "recall of the 3 rarest"]
    assert len(fig.data) == 6


def test_empty_inputs_give_titled_placeholders():
    for fig in (charts.make_confidence_heatmap(pd.DataFrame(), "conf_pl"),
                charts.make_confusion_figure(None, title="Test set"),
                charts.make_scalars_figure(pd.DataFrame({"step": []}), ["loss"], title="Losses")):
        assert fig.layout.title.text and not fig.data


def test_attach_wall_interpolates_steps():
    scal = pd.DataFrame({"step": [0, 10], "wall": [100.0, 120.0]})
    ct = pd.DataFrame({"step": [0, 5, 10], "cls": [0, 0, 0]})
    np.testing.assert_allclose(charts.attach_wall(ct, scal)["wall"], [0, 10, 20])


def test_snapshot_figure_marks_rejected_points_hollow():
    payload = {"extent": [-1, 1, -2, 2], "grid": 3, "regions": [[0, 0, 1], [0, 1, 1], [1, 1, 1]],
               "points": [[0.1, 0.2, 0, 0.99, 1, 0], [0.3, -0.4, 0, 0.6, 0, 1], [-0.5, 0.5, 1, 0.97, 1, 1]]}
    fig = charts.make_snapshot_figure(payload, ["A", "B"])
    regions, a_ok, a_low, b_ok = fig.data
    np.testing.assert_array_equal(np.asarray(regions.z), payload["regions"])
    np.testing.assert_allclose(regions.x, [-1, 0, 1])
    np.testing.assert_allclose(regions.y, [-2, 0, 2])
    assert (a_ok.name, a_ok.marker.symbol, a_ok.showlegend) == ("A", "circle", True)
    assert a_low.marker.symbol == "circle-open" and a_low.showlegend is False and a_low.legendgroup == "A"
    np.testing.assert_allclose(a_ok.x, [0.1])
    np.testing.assert_allclose(a_low.y, [-0.4])
    assert b_ok.marker.color == charts.class_color(1) and a_ok.marker.color == charts.class_color(0)
    # legend below the plot, so the equal-aspect plot keeps the column's width
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0

def test_image_mosaic_places_each_class_in_its_row():
    x = np.zeros((4, 1, 2, 2), dtype=np.uint8)
    x[2:] = 255  # class 1 all ink
    y = np.array([0, 0, 1, 1])
    mosaic = charts.image_mosaic(x, y, num_classes=2, per_class=2, pad=1)
    assert mosaic.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    assert (mosaic[1:3, 1:3] == 255).all()  # class 0 is blank -> white after inversion
    assert (mosaic[4:6, 1:3] == 0).all()  # class 1 is ink -> black
    fig = charts.make_samples_figure(x, y, ["zero", "one"], per_class=2)
    assert list(fig.layout.yaxis.ticktext) == ["zero", "one"]


# -- smoothing and ETA -----------------------------------------------------------
def test_ema_smooth_matches_hand_computed_debiased_values():
    # w = 0.5: last = 0.5, 1.25, 2.125; debias 0.5, 0.75, 0.875 -> 1, 5/3, 17/7
    np.testing.assert_allclose(charts.ema_smooth([1.0, 2.0, 3.0], 0.5), [1.0, 5 / 3, 17 / 7])
    # w = 0.9, constant input stays constant thanks to the debias
    np.testing.assert_allclose(charts.ema_smooth([4.0] * 5, 0.9), [4.0] * 5)
    np.testing.assert_allclose(charts.ema_smooth([1.0, 2.0], 0.0), [1.0, 2.0])
    out = charts.ema_smooth([1.0, np.nan, 3.0], 0.5)
    assert math.isnan(out[1]) and out[2] == pytest.approx(7 / 3)  # NaN skipped: last = 0.5 then 1.75, /0.75
    with pytest.raises(ValueError):
        charts.ema_smooth([1.0], 1.0)


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.99])
def test_ema_smooth_equals_the_tensorboard_loop(weight):
    rng = np.random.default_rng(0)
    values = rng.normal(size=3000).cumsum()
    values[rng.choice(3000, 60, replace=False)] = np.nan
    values[[5, 700]] = [np.inf, -np.inf]
    fast, loop = charts.ema_smooth(values, weight), charts.ema_smooth_loop(values, weight)
    np.testing.assert_allclose(fast, loop, rtol=0, atol=1e-9)
    assert np.array_equal(np.isfinite(fast), np.isfinite(values))  # non-finite values pass through
    assert charts.ema_smooth([], weight).size == 0


def test_binned_frames_keep_a_one_interval_spike_in_the_figures(tmp_path):
    from sslviz.runs.store import RunStore

    s = RunStore(tmp_path / "runs.db")
    rid = s.create_run({"steps": 10_000})
    for step in range(10, 10_001, 10):
        burst = step == 5550
        s.log(rid, {"step": step, "wall": step / 100, "scalars": {"loss": 9.0 if burst else 1.0},
                    "classes": [dict(threshold=0.9, conf_pl=0.8, conf_true=0.7, n_pl=5, n_accepted=80 if burst and c == 2
                                     else 3, n_true=5, n_correct=2, precision=0.5, recall=0.4) for c in range(3)]})
    ct, scal = s.class_train(rid, max_points=50), s.scalars(rid, max_points=50)
    assert ct.step.nunique() <= 50
    fig = charts.make_pseudo_counts_over_time_figure(ct, ["a", "b", "c"])
    band = next(t for t in fig.data if t.name == "c (min–max per bin)")
    assert max(band.y) == 80 and all(max(t.y) <= 3 for t in fig.data
                                    if t.name.startswith(("a", "b")) and "true" not in t.name)
    line = next(t for t in fig.data if t.name == "a")
    assert np.allclose(line.y, 3)  # summed counts shown per logging window: the unbinned scale
    loss = charts.make_scalars_figure(scal, ["loss"], smoothing=0.6)
    assert max(loss.data[0].y) == 9.0  # the band holds the spike, smoothing or not
    s.close()


def test_eta_and_time_format():
    assert charts.estimate_eta([0, 10, 20], [0.0, 1.0, 2.0], 100) == pytest.approx(8.0)
    assert charts.estimate_eta([5], [1.0], 100) is None
    assert charts.format_seconds(42) == "42s" and charts.format_seconds(185) == "3m 05s"
    assert charts.format_seconds(3720) == "1h 02m" and charts.format_seconds(None) == "?"


# -- majority-bias summary -----------------------------------------------------
def test_head_tail_gap_hand_computed():
    recall = [0.9, 0.8, 0.7, 0.5, 0.3, 0.2, 0.1]
    counts = [64, 32, 16, 8, 4, 2, 1]
    # head (0,1,2) mean 0.8, tail (4,5,6) mean 0.2
    assert bias.head_tail_recall_gap(recall, counts) == pytest.approx(0.6)
    # head / tail follow the labeled counts, not the index
    assert bias.head_tail_recall_gap(recall[::-1], counts[::-1]) == pytest.approx(0.6)
    # 4 classes: k shrinks to 2 -> (0.9 + 0.8) / 2 - (0.7 + 0.5) / 2
    assert bias.head_tail_recall_gap(recall[:4], counts[:4]) == pytest.approx(0.25)
    head, tail = bias.head_tail_classes([5] * 6)
    assert head.tolist() == [0, 1, 2] and tail.tolist() == [3, 4, 5]


def test_kl_and_head_share_hand_computed():
    # p = (1/2, 1/2), q = (1/4, 3/4): 0.5 ln 2 + 0.5 ln(2/3)
    assert bias.kl_divergence([5, 5], [1, 3]) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert bias.kl_divergence([3, 1], [3, 1]) == pytest.approx(0.0)
    assert bias.kl_divergence([1, 0], [1, 1]) == pytest.approx(math.log(2))  # p = 0 terms vanish
    assert math.isnan(bias.kl_divergence([0, 0], [1, 1]))
    assert bias.head_share([6, 3, 1], [40, 10, 4]) == pytest.approx(0.6)
    assert bias.head_share([1, 3], [2, 10]) == pytest.approx(0.75)  # head = most labeled class (1)
    assert math.isnan(bias.head_share([0, 0], [2, 1]))


def test_bias_summary_combines_the_numbers():
    s = bias.bias_summary(recall=[1.0, 0.5, 0.0, 0.0, 0.2, 0.4], n_accepted=[8, 2, 0, 0, 0, 0],
                          labeled_counts=[50, 25, 12, 6, 3, 1], unlabeled_counts=[4, 4, 4, 4, 4, 4])
    assert s["head_tail_gap"] == pytest.approx(0.5 - 0.2)
    assert s["tail_recall"] == pytest.approx(0.2)  # classes 3, 4, 5
    assert s["kl_pseudo_true"] == pytest.approx(0.8 * math.log(0.8 * 6) + 0.2 * math.log(0.2 * 6))
    assert s["head_share"] == pytest.approx(0.8)
    empty = bias.bias_summary(None, None, None, None)
    assert all(math.isnan(v) for v in empty.values())


def test_run_bias_summary_per_split(tmp_path):
    from sslviz.runs.store import RunStore

    store = RunStore(tmp_path / "runs.db")
    rid = store.create_run({"steps": 10}, info={"labeled_counts": [50, 25, 12, 6, 3, 1],
                                               "unlabeled_counts": [4] * 6})
    ev = lambda recall: {"accuracy": 0.5, "balanced_accuracy": 0.5, "recall": recall, "confusion": np.eye(6).tolist()}
    store.log(rid, {"step": 5, "wall": 0.0, "eval": {"test": ev([1.0, 0.5, 0.0, 0.0, 0.2, 0.4])}})
    old = bias.run_bias_summary(store, rid)
    assert list(old) == list(bias.SUMMARY_KEYS)
    assert old["test_head_tail_gap"] == pytest.approx(0.3) and math.isnan(old["val_head_tail_gap"])
    store.log(rid, {"step": 10, "wall": 1.0, "eval": {"val": ev([0.9, 0.9, 0.9, 0.3, 0.3, 0.3])}})
    s = bias.run_bias_summary(store, rid)
    assert s["val_head_tail_gap"] == pytest.approx(0.6) and s["val_tail_recall"] == pytest.approx(0.3)
    assert s["test_tail_recall"] == pytest.approx(0.2)  # the latest test evaluation, from step 5
    assert bias.column_label("val_tail_recall") == "recall of the 3 rarest (validation)"
    store.close()
