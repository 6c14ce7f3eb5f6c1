"""A method's budget and phases, declared once by each technique, reach every place a run is started or watched:
Setup, the CLI and sweep validation warn before a run too short for a method to be itself; the Live page marks
the phase a method is in."""
from pathlib import Path

import pytest

from sslviz import cli
from sslviz.engine import registry
from sslviz.engine.config import from_preset
from sslviz.runs import sweep, sweep_spec

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TINY = ["--dataset", "toy2d", "--batch-size", "16", "--mu", "2", "--log-every", "5", "--device", "cpu"]


def test_every_declared_minimum_warns_below_it_and_not_at_it():
    for t in registry.TECHNIQUES:
        preset = next((p for p in ("fixmatch-acr", "fixmatch-saw", "fixmatch-adsh", "freematch", "fixmatch-debiaspl",
                                   "fixmatch-da") if t.active(from_preset(p))), None)
        if preset is None or not t.min_steps(from_preset(preset)):
            continue
        need = t.min_steps(from_preset(preset))
        assert any(m.startswith(t.title) for m in registry.budget_warnings(from_preset(preset, steps=need - 1)))
        assert not any(m.startswith(t.title) for m in registry.budget_warnings(from_preset(preset, steps=need)))
    assert registry.budget_warnings(from_preset("fixmatch", steps=10)) == []


def test_cli_train_warns_before_a_short_run(capsys, home):
    assert cli.main(["train", *TINY, "--preset", "fixmatch-saw", "--steps", "10"]) == 0
    err = capsys.readouterr().err
    assert "sslviz: warning: SAW: needs about 2,048 steps to be itself, and this run has 10" in err
    assert cli.main(["train", *TINY, "--preset", "fixmatch", "--steps", "10"]) == 0
    assert "needs about" not in capsys.readouterr().err


def test_sweep_validation_counts_the_cells_a_warning_concerns(home):
    spec = sweep_spec.SweepSpec(grid={"preset": ["fixmatch", "fixmatch-acr"]}, seeds=(0, 1),
                                base={"dataset": "toy2d", "steps": 100})
    plan = sweep.validate(spec)
    assert len(plan.warnings) == 1 and plan.warnings[0].startswith("2 of 4 cells: ACR (adaptive consistency")


def test_setup_warns_before_start_and_live_marks_the_phase(store):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not [w for w in at.warning if "needs about" in w.value]
    at.selectbox(key="cfg_preset").set_value("fixmatch-acr").run()
    assert any(w.value.startswith("ACR (adaptive consistency regularizer): needs about 4,000 steps") for w in at.warning)
    # A stored ACR run at step 3,200 of 6,000: estimating, adapting from 3,501; long enough, so no budget warning.
    cfg = from_preset("fixmatch-acr", steps=6000)
    rid = store.create_run(cfg.to_dict(), info={"class_names": [str(i) for i in range(10)]})
    store.update_run(rid, status="stopped", step=3200)
    at.query_params["run"] = str(rid)
    at.switch_page("pages/live.py").run()
    assert not at.exception
    notes = [c.value for c in at.caption if ":material/timeline:" in c.value]
    assert notes == [":material/timeline: ACR (adaptive consistency regularizer): estimating the unlabeled "
                     "distribution (since step 3,001; adapting tau1 every epoch from the estimate from step 3,501)"]
    assert not [c for c in at.caption if "needs about" in c.value]


@pytest.mark.parametrize("step, expected", [(1, "warm-up"), (3000, "warm-up"), (3001, "estimating"),
                                            (3501, "adapting")])
def test_phase_notes_follow_the_step(step, expected):
    note, = registry.phase_notes(from_preset("fixmatch-acr"), step)
    assert note.split(": ", 1)[1].startswith(expected)
