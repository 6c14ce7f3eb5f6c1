"""Sweeps: grid expansion and validation, a local sweep end to end, stop and resume, seed grouping, the pages."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st_

from sslviz.dashboard import charts, setup_form as form
from sslviz.runs import lifecycle, sweep, sweep_results, sweep_spec
from sslviz.engine.config import preset_values
from sslviz.runs.store import RunStore

APP = str(Path(__file__).resolve().parents[1] / "app.py")

# -- definition -----------------------------------------------------------------------------------------
AXES = {"gamma": st_.floats(1, 100, allow_nan=False), "lr": st_.floats(0.001, 1), "mu": st_.integers(0, 8),
        "preset": st_.sampled_from(["fixmatch", "balanced", "fixmatch-da"]),
        "unlabeled_shape": st_.sampled_from(["consistent", "uniform", "reversed"])}


@st_.composite
def grids(draw):
    names = draw(st_.lists(st_.sampled_from(sorted(AXES)), min_size=0, max_size=3, unique=True))
    grid = {n: draw(st_.lists(AXES[n], min_size=1, max_size=3, unique=True)) for n in names}
    seeds = tuple(draw(st_.lists(st_.integers(0, 99), min_size=1, max_size=3, unique=True)))
    return grid, seeds


@given(grids())
@settings(max_examples=60, deadline=None)
def test_grid_expands_to_every_combination_times_every_seed(g):
    grid, seeds = g
    spec = sweep_spec.SweepSpec(grid=grid, seeds=seeds, base={"steps": 30})
    cells = spec.cells()
    assert len(cells) == spec.size == math.prod(len(v) for v in grid.values()) * len(seeds)
    assert len({tuple(sorted(c.items())) for c in cells}) == len(cells)  # all distinct
    for c in cells:
        assert set(c) == {*grid, "seed"} and all(c[k] in grid[k] for k in grid) and c["seed"] in seeds
    assert sweep_spec.SweepSpec.from_dict(spec.to_dict()) == spec  # what the store keeps reads back the same


@given(grids())
@settings(max_examples=25, deadline=None)
def test_every_cell_of_a_valid_grid_validates_to_its_config(g):
    grid, seeds = g
    spec = sweep_spec.SweepSpec(grid=grid, seeds=seeds, base={"dataset": "toy2d", "steps": 30})
    plan = sweep.validate(spec)
    assert len(plan.configs) == spec.size and plan.seconds > 0
    for cell, cfg in zip(plan.cells, plan.configs):
        assert all(getattr(cfg, k) == v for k, v in cell.items())
        assert cfg.steps == 30 and cfg.dataset == "toy2d"


@given(st_.integers(0, 3), st_.integers(2, 4))
@settings(max_examples=10, deadline=None)
def test_an_impossible_split_names_its_cell_and_field(bad_at, n):
    gammas = [float(2 + i) for i in range(n)]
    gammas[min(bad_at, n - 1)] = 5000.0  # toy2d N_1 = 8 cannot give every class a labeled example at gamma 5000
    spec = sweep_spec.SweepSpec(grid={"gamma": gammas}, base={"dataset": "toy2d", "n1": 8})
    with pytest.raises(sweep_spec.SweepError, match=rf"^Cell {min(bad_at, n - 1) + 1} of {n} \(gamma=5000, seed=0\): "
                                               r"gamma: .*would get 0 labeled") as err:
        sweep.validate(spec)
    assert err.value.field == "gamma" and err.value.cell == min(bad_at, n - 1)


def test_bad_values_and_specs_are_refused_before_anything_is_recorded(store):
    with pytest.raises(sweep_spec.SweepError, match=r"Cell 2 of 2 \(lr=-1, seed=0\): lr: The 'lr' parameter"):
        sweep.validate(sweep_spec.SweepSpec(grid={"lr": [0.1, -1.0]}, base={"dataset": "toy2d"}))
    with pytest.raises(sweep_spec.SweepError, match="Unknown sweep field 'gama'"):
        sweep_spec.parse_grid(["gama=1,2"])
    with pytest.raises(sweep_spec.SweepError, match="must be ints"):
        sweep_spec.parse_grid(["mu=1,x"])
    with pytest.raises(sweep_spec.SweepError, match="--seeds"):
        sweep_spec.SweepSpec(grid={"seed": [1, 2]})
    with pytest.raises(sweep_spec.SweepError, match="repeats"):
        sweep_spec.SweepSpec(grid={"gamma": [10.0, 10.0]})
    assert sweep_spec.parse_grid(["gamma=10,50", "preset=fixmatch,balanced", "n1=none,5"]) == {
        "gamma": [10.0, 50.0], "preset": ["fixmatch", "balanced"], "n1": [None, 5]}
    assert store.sweeps().empty and store.runs().empty


def test_yaml_sweep_file():
    spec = sweep_spec.SweepSpec.from_yaml("name: map\ngrid:\n  preset: [fixmatch, balanced]\n  gamma: [10, 50]\n"
                                     "seeds: [0, 1]\nbase:\n  steps: 300\n")
    assert spec.size == 8 and spec.base == {"steps": 300} and spec.name == "map"


def test_early_stop_needs_ray_and_checks_its_knobs(store, capsys):
    """--early-stop asha is refused with the local executor and out-of-range knobs name their field; nothing is
    recorded. The tune itself runs in test_sweep_ray.py."""
    from sslviz import cli
    from sslviz.engine.params import InvalidParameterError

    base = {"dataset": "toy2d", "steps": 50, "log_every": 5, "eval_every": 20}
    configs = sweep.validate(sweep_spec.SweepSpec(grid={"threshold": [0.8, 0.9]}, base=base)).configs
    assert sweep_spec.EarlyStop().options("ray", configs) == {"scheduler": "asha", "metric": "val_balanced_accuracy",
                                                         "grace_period": 20, "reduction_factor": 3.0, "max_t": 50}
    with pytest.raises(sweep_spec.SweepError, match="needs --executor ray, not 'local'"):
        sweep_spec.EarlyStop().options("local", configs)
    for field, value, allowed in (("grace_period", 0, r"an int in the range \[1, inf\) or None"),
                                  ("grace_period", 60, r"an int in the range \[1, 50\] \(the cells' steps\)"),
                                  ("reduction_factor", 1.0, r"a float in the range \(1, inf\)"),
                                  ("scheduler", "median", r"a str among \{'asha'\}")):
        with pytest.raises(InvalidParameterError, match=rf"^The '{field}' parameter of EarlyStop must be {allowed}\. "
                                                        rf"Got {value!r} instead\.$") as err:
            sweep_spec.EarlyStop(**{field: value}).options("ray", configs)
        assert err.value.field == field
    argv = ["--store", str(store.path), "sweep", "--grid", "threshold=0.8,0.9", "--dataset", "toy2d", "--steps", "50"]
    assert cli.main([*argv, "--early-stop", "asha"]) == 2
    assert "needs --executor ray" in capsys.readouterr().err
    assert cli.main([*argv, "--executor", "ray", "--grace-period", "5"]) == 2
    assert "need --early-stop asha" in capsys.readouterr().err
    assert store.sweeps().empty and store.runs().empty


# -- local executor ---------------------------------------------------------------------------------------
def _wait_ended(store, sweep_id, wait_for, timeout=180):
    def ended():
        runs = sweep.sweep_runs(store, sweep_id)
        return not runs.status.isin(lifecycle.ACTIVE).any()
    assert wait_for(ended, timeout, every=0.5), sweep.sweep_runs(store, sweep_id)[["id", "status", "error"]]


def test_heatmap_stars_the_best_on_validation_only_and_shares_it_on_a_tie():
    cells = pd.DataFrame({"preset": ["a", "b", "c"], "gamma": [10.0] * 3, "seeds": 2})
    for m in sweep_results.METRICS:
        cells[f"{m}_mean"], cells[f"{m}_std"], cells[f"{m}_n"] = [0.7104, 0.7096, 0.65], 0.01, 2
    starred = lambda metric: [r[0].startswith("★") for r in
                              charts.make_sweep_heatmap_figure(cells, metric, rows="preset", cols="gamma").data[0].text]
    assert starred("val_balanced_accuracy") == [True, True, False]  # 0.710 and 0.710 as shown: a tie
    assert starred("val_head_tail_gap") == [False, False, True]  # lower is better
    assert starred("test_balanced_accuracy") == [False] * 3  # never choose on test
    title = charts.make_sweep_heatmap_figure(cells, "test_balanced_accuracy", rows="preset", cols="gamma").layout.title.text
    assert "not chosen on" in title


def test_local_sweep_2x2x2_end_to_end_through_the_store(store, tiny, wait_for):
    spec = sweep_spec.SweepSpec(grid={"preset": ["fixmatch", "balanced"], "gamma": [5.0, 20.0]}, seeds=(0, 1), base=tiny,
                           name="tiny map")
    plan = sweep.validate(spec, store=store, parallel=2)
    sweep_id, run_ids = sweep.submit_local(store, plan)
    assert len(run_ids) == 8 and store.sweep(sweep_id)["spec"] == spec.to_dict()
    _wait_ended(store, sweep_id, wait_for)
    runs = sweep.sweep_runs(store, sweep_id)
    assert runs.status.tolist() == ["finished"] * 8 and (runs.executor == "local").all()
    res = sweep_results.results(store, sweep_id)
    assert len(res) == 8 and res[list(sweep_results.METRICS)].notna().all().all()
    cells = sweep_results.cell_table(res, ["preset", "gamma"])
    assert len(cells) == 4 and (cells.seeds == 2).all() and (cells.val_balanced_accuracy_n == 2).all()
    fig = charts.make_sweep_heatmap_figure(cells, "val_balanced_accuracy", rows="preset", cols="gamma")
    text = fig.data[0].text
    best = cells.assign(v=cells.val_balanced_accuracy_mean.round(3)).groupby("gamma").v.transform("max")
    assert sum(t.startswith("★") for r in text for t in r) == int((cells.val_balanced_accuracy_mean.round(3) == best).sum())
    assert sum(t.startswith("★") for r in text for t in r) >= 2  # at least one best per gamma column
    assert all("±" in t and "n=2" in t for r in text for t in r)
    html = charts.sweep_figures_html({"map": fig, "par": charts.make_sweep_parallel_figure(res, "test_tail_recall", ["preset", "gamma"])})
    assert html.count("<h2>") == 2 and "plotly" in html
    assert sweep_results.export_table(cells, "parquet")[:4] == b"PAR1"
    # the page and the CLI read the same sweep
    from sslviz import cli
    assert cli.main(["--store", str(store.path), "sweep", "show", str(sweep_id)]) == 0
    assert sweep.delete(store, sweep_id) == run_ids and store.sweeps().empty and store.runs(include_archived=True).empty


def test_stop_and_resume_a_whole_sweep(store, tiny, wait_for, monkeypatch):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "1")  # one runs, two wait queued
    long = {**tiny, "steps": 2000, "eval_every": 1000, "checkpoint_every": 10}
    plan = sweep.validate(sweep_spec.SweepSpec(grid={"gamma": [5.0, 10.0, 20.0]}, base=long), store=store)
    sweep_id, run_ids = sweep.submit_local(store, plan)
    wait_for(lambda: store.run(run_ids[0])["step"] >= 10, 90)
    with pytest.raises(sweep_spec.SweepError, match="stop it first"):
        sweep.delete(store, sweep_id)
    request_stop = store.request_stop

    def stop_and_let_it_end(rid):  # the slowest caller: a running run honours its stop before the next is asked
        running = store.run(rid)["status"] == "running"
        request_stop(rid)
        assert not running or wait_for(lambda: store.run(rid)["status"] not in lifecycle.ACTIVE, 60)
        return True

    monkeypatch.setattr(store, "request_stop", stop_and_let_it_end)
    assert sorted(sweep.stop(store, sweep_id)) == run_ids  # the queued runs never start: stopped before run 0 ends
    monkeypatch.setattr(store, "request_stop", request_stop)
    _wait_ended(store, sweep_id, wait_for)
    runs = sweep.sweep_runs(store, sweep_id)
    assert runs.status.tolist() == ["stopped"] * 3 and runs.step.iloc[0] > 0 and (runs.step.iloc[1:] == 0).all()
    stopped_at = int(runs.step.iloc[0])
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "2")
    assert sorted(sweep.resume(store, sweep_id)) == run_ids
    assert wait_for(lambda: store.run(run_ids[0])["step"] > stopped_at, 90)
    events = store.events(run_ids[0])
    assert events.message.str.startswith(f"resumed from step {stopped_at}").any()
    sweep.stop(store, sweep_id)
    _wait_ended(store, sweep_id, wait_for)
    assert set(sweep.sweep_runs(store, sweep_id).status) == {"stopped"}


# -- seed grouping (Compare) ------------------------------------------------------------------------------
def test_runs_differing_only_by_seed_form_one_group():
    a = {"preset": "fixmatch", "gamma": 10.0, "seed": 0, "name": "x s0"}
    configs = {1: a, 2: {**a, "seed": 1, "name": "x s1"}, 3: {**a, "gamma": 50.0}, 4: {**a, "seed": 2}}
    assert list(sweep_spec.seed_groups(configs).values()) == [[1, 2, 4], [3]]


def test_seed_groups_figure_draws_a_mean_line_and_a_band():
    import pandas as pd

    def ev(vals):
        return pd.DataFrame({"step": [10, 20, 20], "split": ["val", "val", "test"], "balanced_accuracy": vals,
                             "accuracy": vals, "wall": [1, 2, 2]})
    fig = charts.make_seed_groups_figure({"cell": [ev([0.2, 0.4, 0.5]), ev([0.4, 0.8, 0.7])], "one": [ev([0.1] * 3)]},
                                         "balanced_accuracy")
    band = [t for t in fig.data if t.fill == "toself"]
    assert len(band) == 1 and list(band[0].y) == [0.4, 0.8, 0.4, 0.2]  # hi forward, lo back
    line = next(t for t in fig.data if t.name == "cell (2 seeds) (validation)")
    assert list(line.y) == pytest.approx([0.3, 0.6])
    test = next(t for t in fig.data if t.name == "cell (2 seeds) (test)")
    assert list(test.y) == pytest.approx([0.6])
    assert any(t.name == "one (validation)" for t in fig.data)


# -- liveness of Ray runs is judged by their driver ----------------------------------------------------------
def test_ray_runs_are_lost_when_their_driver_is_gone(tmp_path):
    import time
    row = {"status": "running", "executor": "ray", "pid": 2 ** 22 + 12345, "heartbeat": time.time(), "id": 1}
    assert "Ray driver" in lifecycle.lost_reason(row)
    import os
    assert lifecycle.lost_reason({**row, "pid": os.getpid()}) is None
    assert "no heartbeat from the Ray driver" in lifecycle.lost_reason({**row, "pid": os.getpid(), "heartbeat": 0})


# -- pages --------------------------------------------------------------------------------------------------
def _at():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=90)


def test_sweep_page_and_compare_grouping_under_apptest(home, monkeypatch):
    """A sweep of synthetic runs: the page draws the heatmaps, picks a cell and opens its runs grouped in Compare."""
    from tests.test_app_pages import log_steps, make_run

    monkeypatch.setenv("SSLVIZ_STORE", str(home / "runs.db"))
    store = RunStore(home / "runs.db")
    spec = sweep_spec.SweepSpec(grid={"preset": ["fixmatch", "balanced"], "gamma": [10.0, 50.0]}, seeds=(0, 1),
                           base={"dataset": "digits", "steps": 100})
    sweep_id = store.create_sweep(spec.to_dict(), name="synthetic")
    for i, cell in enumerate(spec.cells()):
        rid = make_run(store, preset=cell["preset"], status="finished")
        cfg = {**sweep_spec.cell_config(spec, i, cell).to_dict()}
        store.update_run(rid, sweep=sweep_id, config=json.dumps(cfg), name=cfg["name"])
        log_steps(store, rid, range(10, 101, 10), seed=i)
    at = _at()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Sweeps" and len(at.get("plotly_chart")) == len(sweep_results.METRICS) + 1
    cell = at.selectbox(key="sweep_cell")
    assert cell.options == ["preset=fixmatch, gamma=10", "preset=fixmatch, gamma=50", "preset=balanced, gamma=10",
                            "preset=balanced, gamma=50"]
    cell.set_value("preset=balanced, gamma=50").run()
    at.button(key="sweep_open_compare").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Compare runs" and at.query_params["runs"] == ["7,8"] or at.query_params["runs"] == "7,8"
    assert at.toggle(key="compare_group_seeds").value is True
    assert not at.exception
    from tests.test_app_pages import plotly_specs

    names = {t.get("name") for t in plotly_specs(at)["compare_balanced_accuracy"]["data"]}
    assert "#7 sweep · preset=balanced, gamma=50 · seeds 0, 1 (2 seeds) (validation)" in names, names  # less its seed
    # stop / delete buttons act on the whole sweep
    at.switch_page("pages/sweep.py").run()
    assert at.button(key="sweep_stop").disabled  # nothing active
    at.button(key="sweep_delete").click().run()
    at.button(key="sweep_delete_yes").click().run()
    assert store.sweeps().empty and store.runs().empty
    assert "No sweeps yet" in at.info[0].value


def test_a_sweep_over_one_knob_is_one_column_not_knob_by_knob(home, monkeypatch):
    from tests.test_app_pages import log_steps, make_run, plotly_specs

    monkeypatch.setenv("SSLVIZ_STORE", str(home / "runs.db"))
    store = RunStore(home / "runs.db")
    spec = sweep_spec.SweepSpec(grid={"gamma": [10.0, 50.0]}, seeds=(0, 1), base={"dataset": "digits", "steps": 100})
    sweep_id = store.create_sweep(spec.to_dict(), name="one knob")
    for i, cell in enumerate(spec.cells()):
        rid = make_run(store, status="finished")
        store.update_run(rid, sweep=sweep_id, config=json.dumps(sweep_spec.cell_config(spec, i, cell).to_dict()))
        log_steps(store, rid, range(10, 101, 10), seed=i)
    at = _at()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception, at.exception
    heat = plotly_specs(at)["sweep_heatmap_val_balanced_accuracy"]["data"][0]
    assert heat["x"] == ["all runs"] and heat["y"] == ["10", "50"]
    assert all("n=2" in row[0] for row in heat["text"])  # each gamma: both seeds, no empty cell


def test_a_link_to_a_missing_sweep_or_run_says_so(home, monkeypatch):
    """?sweep= and ?runs= naming what the store does not hold (deleted since, another store's) say so, naming it,
    instead of silently showing another sweep or dropping the run."""
    from tests.test_app_pages import make_run

    monkeypatch.setenv("SSLVIZ_STORE", str(home / "runs.db"))
    store = RunStore(home / "runs.db")
    store.create_sweep(sweep_spec.SweepSpec(grid={"gamma": [10.0, 50.0]}).to_dict(), name="one")
    rid = make_run(store, status="finished")
    at = _at()
    at.query_params["sweep"] = "99"
    at.switch_page("pages/sweep.py").run()
    assert not at.exception, at.exception
    assert any("There is no sweep 99 in this store" in e.value for e in at.error), [e.value for e in at.error]
    at.run()
    assert not at.error  # said once, for the link
    at = _at()
    at.query_params["runs"] = f"{rid},999"
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["There is no run 999 in this store: the link names a run deleted since, or "
                                           "another store's."]
    assert at.multiselect(key="compare_runs").value == [rid]


def test_setup_sweep_section_counts_runs_and_estimates_before_start(home, monkeypatch):
    monkeypatch.setenv("SSLVIZ_STORE", str(home / "runs.db"))
    at = _at().run()
    at.text_area(key="sweep_grid").set_value("preset=fixmatch,balanced\ngamma=10,50").run()
    assert not at.exception, at.exception
    assert any("**12 runs**" in i.value for i in at.info), [i.value for i in at.info]
    at.text_area(key="sweep_grid").set_value("gamma=10,9999").run()
    assert any("Cell 4 of 6 (gamma=9999, seed=0): gamma:" in e.value for e in at.error), [e.value for e in at.error]
    assert at.button(key="start_sweep").disabled
    at.text_area(key="sweep_grid").set_value("gamma=10,50").run()
    at.text_input(key="sweep_seeds").set_value("a,b").run()
    assert [e.value for e in at.error] == ["Seeds must be whole numbers separated by commas, e.g. 0,1,2; got 'a,b'."]
    assert at.button(key="start_sweep").disabled


def test_a_setup_sweep_over_presets_trains_each_cells_preset(home, monkeypatch):
    """The form holds fixmatch's knobs; a grid over preset must not share them, or the balanced cells train
    fixmatch (the Sweep page then compares fixmatch with itself). A knob changed in the form stays shared."""
    monkeypatch.setenv("SSLVIZ_STORE", str(home / "runs.db"))
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # recorded, none starts
    at = _at().run()
    at.number_input(key=form.key("lr")).set_value(0.05).run()
    at.text_area(key="sweep_grid").set_value("preset=fixmatch,balanced").run()
    at.text_input(key="sweep_seeds").set_value("0").run()
    at.button(key="start_sweep").click().run()
    assert not at.exception, at.exception
    configs = {c["preset"]: c for c in RunStore(home / "runs.db").runs().config}
    assert configs["balanced"] | {"preset": "x", "name": "", "lr": 0} == preset_values("balanced") | {
        "preset": "x", "name": "", "lr": 0}
    assert configs["balanced"]["threshold_class_alpha"] == 0.5 and configs["fixmatch"]["threshold_class_alpha"] == 0.0
    assert configs["balanced"]["lr"] == configs["fixmatch"]["lr"] == 0.05


def test_sweep_page_says_which_runs_asha_stopped(home, monkeypatch):
    """A tuned sweep: the page lists the runs ASHA stopped with its verdict, and offers no resume."""
    import json

    from tests.test_app_pages import log_steps, make_run

    monkeypatch.setenv("SSLVIZ_STORE", str(home / "runs.db"))
    store = RunStore(home / "runs.db")
    spec = sweep_spec.SweepSpec(grid={"lr": [0.03, 1e-6]}, base={"dataset": "digits", "steps": 100})
    configs = sweep.validate(spec).configs
    sweep_id = store.create_sweep(spec.to_dict(), name="tuned", executor="ray",
                                  options={"early_stop": sweep_spec.EarlyStop(grace_period=20).options("ray", configs)})
    verdict = ("stopped early by ASHA at step 20 (validation balanced accuracy 0.120, below the cutoff 0.300 of the "
               "rung at step 20)")
    for cfg, status, last in zip(configs, ("finished", "stopped"), (100, 20)):
        rid = make_run(store, status=status)
        store.update_run(rid, sweep=sweep_id, config=json.dumps(cfg.to_dict()))
        log_steps(store, rid, range(10, last + 1, 10))
    store.add_event(rid, "stopped", verdict)
    at = _at()
    at.switch_page("pages/sweep.py").run()
    assert not at.exception, at.exception
    assert any("ASHA stopped 1 run(s) early" in i.value and f"#{rid} (lr=1e-06, seed=0): {verdict}" in i.value
               for i in at.info), [i.value for i in at.info]
    assert "tuned with ASHA" in " ".join(c.value for c in at.caption)
    assert at.button(key="sweep_resume").disabled


def test_asha_verdict_names_the_rung_that_took_the_result_and_never_fails():
    """ASHA may stop a trial on a rung it filled earlier: the verdict then names the highest rung holding it, with
    no cutoff when that rung has no other trial (a None cutoff once raised inside Tune's callback, aborting the tune)."""
    from sslviz.runs.ray_asha import _verdict
    from sslviz.runs.ray_asha import TUNE_METRIC

    class Bracket:  # the two things _verdict reads of Ray's _Bracket
        def __init__(self, rungs):
            self._rungs = rungs

        def cutoff(self, recorded):
            return sorted(recorded.values())[len(recorded) // 2] if recorded else None

    result = {"step": 200, TUNE_METRIC: 0.2}
    rungs = [(90, {"x": 0.2}), (30, {"x": 0.2, "y": 0.5, "z": 0.6}), (10, {"x": 0.1, "y": 0.4})]
    before = {m: set(r) for m, r in rungs}  # nothing new: the decision came from a rung filled earlier
    assert _verdict(Bracket(rungs), "x", result, before).endswith("(validation balanced accuracy 0.200, at the rung "
                                                                  "at step 90)")
    before[30] = {"y", "z"}  # this result put x into rung 30: its cutoff over y and z
    assert "below the cutoff 0.600 of the rung at step 30" in _verdict(Bracket(rungs), "x", result, before)
