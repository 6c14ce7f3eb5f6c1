"""The command line, in-process: train a tiny run, then list / show / export / stop / presets / --save-config."""
import pandas as pd
import pytest
import yaml

from sslviz import cli
from sslviz.engine.config import PRESET_DESCRIPTIONS, PRESETS, TrainConfig, from_preset
from sslviz.runs.store import RunStore

TINY_FLAGS = ["--dataset", "toy2d", "--steps", "20", "--batch-size", "16", "--mu", "2", "--log-every", "5",
              "--eval-every", "10", "--checkpoint-every", "10", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run in a module-wide store (trained once for all the read-only commands)."""
    db = tmp_path_factory.mktemp("cli") / "runs.db"
    assert cli.main(["--store", str(db), "train", *TINY_FLAGS, "--name", "cli-run", "--preset", "fixmatch-da"]) == 0
    return db


def run(capsys, argv, code=0):
    assert cli.main(argv) == code
    return capsys.readouterr()


def test_train_records_a_finished_run(trained, capsys):
    store = RunStore(trained)
    row = store.run(1)
    assert row["status"] == "finished" and row["step"] == 20 and row["name"] == "cli-run"
    assert row["preset"] == "fixmatch-da" and row["config"]["dist_align"] == "labeled"
    assert store.scalars(1).step.tolist() == [5, 10, 15, 20]
    assert store.evals(1, split="val").step.tolist() == [5, 10, 20]  # first log step, then every eval_every
    assert store.evals(1, split="test").step.tolist() == [20]  # the test set only at the end
    assert row["info"]["class_names"] == list("ABCDEF")
    store.close()


def test_list_and_show(trained, capsys):
    out = run(capsys, ["--store", str(trained), "list"]).out
    assert "cli-run" in out and "finished" in out and "fixmatch-da" in out
    out = run(capsys, ["--store", str(trained), "show", "1"]).out
    assert out.startswith("run 1 [finished] preset=fixmatch-da step 20/20 device=cpu")
    assert "dist_align=labeled" in out and "balanced accuracy" in out
    for col in ("class", "labeled", "unlabeled", "test_recall", "threshold", "pl_accepted", "pl_precision"):
        assert col in out
    err = run(capsys, ["--store", str(trained), "show", "99"], code=2).err
    assert err == f"sslviz: error: There is no run 99 in {trained}.\n"


def test_list_empty_store(capsys, home):
    out = run(capsys, ["list"]).out
    assert "no runs yet" in out and str(home / "runs.db") in out  # SSLVIZ_HOME decides the default store


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(trained, capsys, tmp_path, fmt):
    out = run(capsys, ["--store", str(trained), "export", "1", "--format", fmt, "--out", str(tmp_path / "x")]).out
    store = RunStore(trained)
    expected = store.export(1)
    written = out.split()
    assert len(written) == len(expected) == 6  # scalars, class_train, evals, class_eval, technique, events
    for name, df in expected.items():
        path = tmp_path / "x" / f"run1_{name}.{fmt}"
        assert str(path) in written and path.is_file()
        back = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
        assert len(back) == len(df) and list(back.columns) == list(df.columns)
    assert len(pd.read_csv(tmp_path / "x" / "run1_scalars.csv") if fmt == "csv"
               else pd.read_parquet(tmp_path / "x" / "run1_scalars.parquet")) == 4
    store.close()
    assert run(capsys, ["--store", str(trained), "export", "7"], code=2).err.startswith("sslviz: error: There is no run 7")


def test_stop_sets_the_flag(capsys, store):
    rid = store.create_run(TrainConfig(steps=5).to_dict())
    assert run(capsys, ["--store", str(store.path), "stop", str(rid)]).out == f"stop requested for run {rid}\n"
    assert store.stop_requested(rid)


def test_resume_refuses_a_queued_run(capsys, store):
    rid = store.create_run(TrainConfig(steps=5).to_dict())
    err = run(capsys, ["--store", str(store.path), "resume", str(rid)], code=2).err
    assert err == f"sslviz: error: Run {rid} is queued; resume needs a stopped or failed run.\n"


def test_presets(capsys, home):
    out = run(capsys, ["presets"]).out
    for name, knobs in PRESETS.items():
        assert f"{name:12s} {PRESET_DESCRIPTIONS[name]}" in out
        for k, v in knobs.items():
            assert f"{k}={v}" in out


def test_save_config_round_trip(capsys, home, tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    out = run(capsys, ["train", "--preset", "balanced", "--gamma", "20", "--no-flexmatch-warmup",
                       "--threshold-schedule", "flexmatch", "--save-config", str(first)]).out
    assert out == f"wrote {first}\n"
    cfg = TrainConfig.from_yaml(first.read_text())
    assert cfg == from_preset("balanced", gamma=20, flexmatch_warmup=False, threshold_schedule="flexmatch")
    run(capsys, ["train", "--config", str(first), "--save-config", str(second)])
    assert second.read_text() == first.read_text()
    assert not (home / "runs.db").exists() or RunStore(home / "runs.db").runs().empty  # nothing was trained


def test_precedence_preset_then_yaml_then_flags(capsys, home, tmp_path):
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text(yaml.safe_dump({"gamma": 20, "threshold": 0.9, "lambda_u": 2.0}))
    out = tmp_path / "out.yaml"
    run(capsys, ["train", "--preset", "flexmatch", "--config", str(knobs), "--gamma", "30", "--save-config", str(out)])
    cfg = TrainConfig.from_yaml(out.read_text())
    assert (cfg.preset, cfg.threshold_schedule) == ("flexmatch", "flexmatch")  # from the preset
    assert (cfg.threshold, cfg.lambda_u) == (0.9, 2.0)  # from the YAML
    assert cfg.gamma == 30  # the flag wins


def test_yaml_preset_supplies_the_defaults(capsys, home, tmp_path):
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text("preset: balanced\ngamma: 20\n")
    out = tmp_path / "out.yaml"
    run(capsys, ["train", "--config", str(knobs), "--save-config", str(out)])
    assert TrainConfig.from_yaml(out.read_text()) == from_preset("balanced", gamma=20)


def test_every_field_has_a_flag():
    parser = cli.build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("train"))
    flags = {opt for action in train._actions for opt in action.option_strings}
    for name in TrainConfig().to_dict():
        assert "--" + name.replace("_", "-") in flags
