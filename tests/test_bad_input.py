"""Bad input: each case gives one clear message naming the field and what is allowed, and loses nothing recorded.

Every case is checked twice: through the Python API (TrainConfig / prepare.prepare / load_dataset) and
through ``cli.main`` (exit code 2, one ``sslviz: error:`` line on stderr, the store untouched).
"""
import os
import re
import sqlite3

import numpy as np
import pytest
import yaml
from PIL import Image

from sslviz import cli
from sslviz.runs import worker
from sslviz.engine.config import PRESETS, TrainConfig
from sslviz.engine.registry import THRESHOLD_SCHEDULES
from sslviz.engine.data import DatasetError, load_dataset
from sslviz.engine.params import InvalidParameterError
from sslviz.engine.splits import SplitError
from sslviz.runs.store import RunStore
from sslviz.engine.prepare import prepare

PRESET_LIST = r"among \{" + re.escape(", ".join(map(repr, PRESETS))) + r"\}"  # every preset, in order
SCHEDULES = re.escape(", ".join(map(repr, THRESHOLD_SCHEDULES)))  # 'fixed', 'flexmatch', ...

# (id, config knobs, CLI flags, error type, message regex)
CASES = [
    ("gamma-below-1", {"gamma": 0.5}, ["--gamma", "0.5"], InvalidParameterError,
     r"The 'gamma' parameter of TrainConfig must be a float in the range \[1, inf\)\. Got 0\.5 instead\."),
    ("gamma-empties-tail", {"gamma": 1000.0}, ["--gamma", "1000"], SplitError,
     r"classes 6 \('6'\), 7 \('7'\), 8 \('8'\), 9 \('9'\) would get 0 labeled examples with N_1=50 and gamma=1000; "
     r"use gamma <= 50 or N_1 >= 1000"),
    ("n1-above-available", {"n1": 500}, ["--n1", "500"], SplitError,
     r"class 0 \('0'\) has 98 training images but N_1=500 with gamma=50 needs 500 labeled; "
     r"the largest N_1 that fits is \d+"),
    ("m1-above-available", {"m1": 500}, ["--m1", "500"], SplitError,
     r"has \d+ images left after the labeled set but M_1=500 .* the largest M_1 that fits is \d+"),
    ("threshold-zero", {"threshold": 0.0}, ["--threshold", "0"], InvalidParameterError,
     r"The 'threshold' parameter of TrainConfig must be a float in the range \(0, 1\]\. Got 0\.0 instead\."),
    ("threshold-above-1", {"threshold": 1.5}, ["--threshold", "1.5"], InvalidParameterError,
     r"'threshold' parameter .* range \(0, 1\]\. Got 1\.5"),
    ("negative-lambda-u", {"lambda_u": -1.0}, ["--lambda-u", "-1"], InvalidParameterError,
     r"The 'lambda_u' parameter of TrainConfig must be a float in the range \[0, 100\]\. Got -1\.0 instead\."),
    ("negative-weight-decay", {"weight_decay": -0.1}, ["--weight-decay", "-0.1"], InvalidParameterError,
     r"'weight_decay' parameter .* range \[0, 1\]\. Got -0\.1"),
    ("negative-aug-strength", {"aug_strength": -1.0}, ["--aug-strength", "-1"], InvalidParameterError,
     r"'aug_strength' parameter .* range \[0, 5\]\. Got -1\.0"),
    ("negative-unsup-alpha", {"unsup_class_alpha": -0.5}, ["--unsup-class-alpha", "-0.5"], InvalidParameterError,
     r"'unsup_class_alpha' parameter .* range \[0, 5\]"),
    ("zero-steps", {"steps": 0}, ["--steps", "0"], InvalidParameterError, r"'steps' parameter .* \[1, 10000000\]"),
    # The CLI refuses it at parsing, listing the same choices (they come from the same declaration).
    ("unknown-schedule", {"threshold_schedule": "adamatch"}, ["--threshold-schedule", "adamatch"],
     InvalidParameterError, r"'threshold_schedule' parameter .* among \{" + SCHEDULES + r"\}|"
                            r"argument --threshold-schedule: invalid choice: 'adamatch' \(choose from " + SCHEDULES + r"\)"),
    ("unknown-preset", {"preset": "nope"}, ["--preset", "nope"], InvalidParameterError,
     r"The 'preset' parameter of TrainConfig must be a str " + PRESET_LIST + r"\. Got 'nope' instead\."),
    ("unknown-dataset", {"dataset": "mnist"}, ["--dataset", "mnist"], DatasetError,
     r"Unknown dataset 'mnist': expected one of 'digits', 'toy2d', 'wordnet' or the path of a CIFAR-10 or ImageFolder"),
]


def _api(values):
    cfg = TrainConfig.from_dict({**values})
    return prepare(cfg)


@pytest.fixture
def recorded(store):
    """A store holding one finished run with metrics: bad input must not lose it."""
    rid = store.create_run(TrainConfig(dataset="toy2d", steps=10).to_dict(), pid=os.getpid())  # running here
    store.log(rid, {"step": 5, "wall": 0.1, "scalars": {"loss": 1.0},
                    "eval": {"accuracy": 0.5, "balanced_accuracy": 0.5, "recall": [0.5] * 6,
                             "confusion": np.eye(6, dtype=int).tolist()}})
    store.finish_run(rid, "finished")
    return store, rid


def assert_intact(store, rid):
    again = RunStore(store.path)
    assert again.runs().id.tolist() == [rid]
    assert again.run(rid)["status"] == "finished"
    assert again.scalars(rid).step.tolist() == [5] and again.evals(rid).balanced_accuracy.tolist() == [0.5]
    again.close()


def cli_error(capsys, argv) -> str:
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse refuses a value outside a flag's choices before main runs
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sslviz: error: "), err
    return lines[0]


@pytest.mark.parametrize("values, flags, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_api(values, flags, error, message):
    with pytest.raises(error, match=message) as info:
        _api(values)
    if isinstance(info.value, InvalidParameterError) and "preset" not in values:
        assert info.value.field == next(iter(values))


@pytest.mark.parametrize("values, flags, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_cli(recorded, capsys, values, flags, error, message):
    store, rid = recorded
    line = cli_error(capsys, ["--store", str(store.path), "train", "--steps", "5", *flags])
    assert re.search(message, line), line
    assert_intact(store, rid)


@pytest.mark.parametrize("values", [c[1] for c in CASES if c[3] is not InvalidParameterError],
                         ids=[c[0] for c in CASES if c[3] is not InvalidParameterError])
def test_submit_refuses_bad_data_before_recording(recorded, values):
    store, rid = recorded
    with pytest.raises((SplitError, DatasetError)):
        worker.submit(store, TrainConfig(**values))
    assert_intact(store, rid)


# -- YAML files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("gamma: 10\ngama: 3\n", r"Unknown config key 'gama'\. Did you mean 'gamma'\? Valid keys are: dataset, n1, gamma, "),
    ("gamma: fifty\n", r"The 'gamma' parameter of TrainConfig must be a float in the range \[1, inf\)\. "
                       r"Got 'fifty' instead\."),
    ("steps: 10.5\n", r"The 'steps' parameter of TrainConfig must be an int in the range"),
    ("compile: yes please\n", r"The 'compile' parameter of TrainConfig must be a bool\. Got 'yes please'"),
    ("[1, 2]\n", r"must be a mapping of field: value, got list"),
    ("gamma: [1,\n", r"is not valid YAML \(line 2, column 1\): expected the node content, but found '<stream end>'"),
    ("gamma: 10\nsteps: 300\ngamma: 100\n", r"^sslviz: error: Config file \S+bad\.yaml is not valid YAML \(line 3, "
                                           r"column 1\): the key 'gamma' is given twice \(first on line 1\)$"),
    (b"name: caf\xe9\n", r"^sslviz: error: Config file \S+bad\.yaml is not UTF-8 text: byte 0xe9 on line 1; save it as "
                         r"UTF-8\.$"),
    ("gamma: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
     r"is not valid YAML \(line 1, column 8\): could not determine a constructor for the tag "
     r"'tag:yaml.org,2002:python/object/apply:os.system'"),
])
def test_bad_yaml_file(recorded, capsys, tmp_path, text, message):
    store, rid = recorded
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = cli_error(capsys, ["--store", str(store.path), "train", "--config", str(path)])
    assert re.search(message, line), line
    assert_intact(store, rid)


def test_missing_yaml_file(capsys, home):
    line = cli_error(capsys, ["train", "--config", str(home / "nope.yaml")])
    assert "Cannot read config file" in line and "nope.yaml" in line


def test_yaml_python_tag_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    text = f"gamma: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(InvalidParameterError, match="not valid YAML"):
        TrainConfig.from_yaml(text)
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(text)
    assert not marker.exists()


# -- dataset folders ---------------------------------------------------------------------------------


def _png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


def _folder(root, classes=("cat", "dog"), test_classes=None, n=3):
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for c in names:
            for i in range(n):
                _png(root / split / c / f"{i}.png", 40 * i)
    return root


def _missing(tmp_path):
    return tmp_path / "does-not-exist"


def _one_class(tmp_path):
    return _folder(tmp_path / "d", classes=("cat",))


def _corrupt(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "train" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated PNG
    return root


def _not_image(tmp_path):
    # An image extension on a file that is not one (files without an image extension are skipped, see test_data).
    root = _folder(tmp_path / "d")
    (root / "train" / "cat" / "notes.png").write_text("not an image")
    return root


def _test_differs(tmp_path):
    return _folder(tmp_path / "d", classes=("cat", "dog"), test_classes=("cat", "owl"))


FOLDERS = [
    (_missing, r"Dataset path '.*does-not-exist' does not exist"),
    (_one_class, r"has only one class \(cat\) in train/; need at least 2"),
    (_corrupt, r"File '.*train/dog/1\.png' is not a readable image"),
    (_not_image, r"File '.*train/cat/notes\.png' is not a readable image"),
    (_test_differs, r"test/ classes differ from train/ \(missing in test: \['dog'\]; extra in test: \['owl'\]\)"),
]


@pytest.mark.parametrize("make, message", FOLDERS, ids=[f[0].__name__[1:] for f in FOLDERS])
def test_bad_folder(recorded, capsys, tmp_path, make, message):
    store, rid = recorded
    root = make(tmp_path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root, tmp_path / "cache")
    with pytest.raises(DatasetError, match=message):
        worker.submit(store, TrainConfig(dataset=str(root)))
    line = cli_error(capsys, ["--store", str(store.path), "train", "--dataset", str(root)])
    assert re.search(message, line), line
    assert_intact(store, rid)


# -- the store itself --------------------------------------------------------------------------------


def test_read_only_store_via_cli(recorded, capsys, monkeypatch):
    """SQLite's read-only open flag stands in for chmod 444, which root (the test user) ignores."""
    store, rid = recorded
    store.close()
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda path, *a, **k: real(f"file:{path}?mode=ro", *a, uri=True, **k))
    line = cli_error(capsys, ["--store", str(store.path), "train", "--dataset", "toy2d", "--steps", "5"])
    assert f"Run store {store.path} is read-only; point SSLVIZ_HOME (or --store) at a writable folder." in line
    assert cli.main(["--store", str(store.path), "list"]) == 0  # earlier runs are still listed
    assert "finished" in capsys.readouterr().out
    monkeypatch.undo()
    assert_intact(store, rid)


def test_full_disk_via_cli(recorded, capsys, monkeypatch):
    """A real SQLITE_FULL: every new connection may not grow the file (PRAGMA max_page_count)."""
    store, rid = recorded
    store.close()
    real_conn = RunStore._conn

    def capped(self):
        conn = real_conn(self)
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        return conn

    monkeypatch.setattr(RunStore, "_conn", capped)
    line = cli_error(capsys, ["--store", str(store.path), "train", "--dataset", "toy2d", "--steps", "5",
                              "--name", "x" * 200_000])
    assert "cannot grow: the disk is full; free space or move the store with SSLVIZ_HOME" in line
    monkeypatch.undo()
    assert_intact(store, rid)


def test_store_path_that_cannot_exist(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    line = cli_error(capsys, ["--store", str(tmp_path / "file" / "runs.db"), "list"])
    assert "cannot be created" in line


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--steps", "many"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "sslviz: error: argument --steps: invalid int value: 'many'\n"


# -- the CLI's other inputs: ids, sweep files and grids, checkpoints ----------------------------------------------


@pytest.mark.parametrize("argv", [["show"], ["resume"], ["stop"], ["archive"], ["unarchive"], ["delete"],
                                  ["evaluate"], ["export"], ["sweep", "show"], ["sweep", "delete"]])
def test_an_id_past_64_bits_is_one_line_naming_the_range(recorded, capsys, argv):
    store, rid = recorded
    line = cli_error(capsys, ["--store", str(store.path), *argv, "99999999999999999999"])
    assert line.endswith("an id is a whole number from 1 to 9223372036854775807; got '99999999999999999999'"), line
    assert_intact(store, rid)


@pytest.mark.parametrize("text, message", [
    ("grid: 5\n", r"^sslviz: error: The sweep's grid is a mapping of field: \[values\] \(e\.g\. gamma: \[10, 50\]\); "
                  r"got 5\.$"),
    ("grid: {gamma: [10, 50]}\nbase: [1]\n", r"The sweep's base is a mapping of field: value shared by every cell"),
    ("grid: {gamma: [10, 50]}\nseeds: [0, one]\n", r"The sweep's seeds are whole numbers >= 0 \(e\.g\. \[0, 1, 2\]\); "
                                                    r"got \[0, 'one'\]\.$"),
    ("grid: {gamma: [10, 50]}\ngrid: {gamma: [20]}\n", r"^sslviz: error: Sweep file \S+sweep\.yaml is not valid YAML "
                                                      r"\(line 2, column 1\): the key 'grid' is given twice"),
    (b"name: caf\xe9\ngrid: {gamma: [10]}\n", r"^sslviz: error: Sweep file \S+sweep\.yaml is not UTF-8 text: byte 0xe9 "
                                            r"on line 1; save it as UTF-8\.$"),
])
def test_a_bad_sweep_file_is_one_line_naming_it(recorded, capsys, tmp_path, text, message):
    store, rid = recorded
    path = tmp_path / "sweep.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = cli_error(capsys, ["--store", str(store.path), "sweep", "--file", str(path), "--dry-run"])
    assert re.search(message, line), line
    assert_intact(store, rid)


@pytest.mark.parametrize("grid, message", [
    (["model=mlp,cnn32"], r"^sslviz: error: Cell 2 of 2 \(model=cnn32, seed=0\): model: Model 'cnn32' needs input "
                          r"shape \(C, 32, 32\)\. Got \(2,\) instead\.$"),
    (["gamma=10,50", "gamma=100"], r"^sslviz: error: The grid axis 'gamma' is given twice; list all its values in "
                                   r"one --grid gamma=V1,V2,\.\.\.$"),
])
def test_a_bad_grid_blames_the_field_it_is_about(recorded, capsys, grid, message):
    store, rid = recorded
    flags = [f for g in grid for f in ("--grid", g)]
    line = cli_error(capsys, ["--store", str(store.path), "sweep", *flags, "--dataset", "toy2d", "--dry-run"])
    assert re.search(message, line), line
    assert_intact(store, rid)


class _Code:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sslviz-checkpoint-ran",))


@pytest.mark.parametrize("content, message", [
    ("code", r"names Python code \(posix\.system\), which no sslviz checkpoint holds: it was not written by sslviz, "
             r"or was altered\. Nothing in it was run\.$"),
    (b"PK\x03\x04 half a zip", r"it is damaged or not a checkpoint \("),
    (b"", r"it is damaged or not a checkpoint \(EOFError\)\.$"),
])
def test_evaluate_on_a_malicious_or_damaged_checkpoint_is_one_line(recorded, capsys, tmp_path, content, message):
    import torch

    store, rid = recorded
    path = worker.checkpoint_path(store, rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "code":
        torch.save({"step": 5, "model": _Code()}, path)
    else:
        path.write_bytes(content)
    line = cli_error(capsys, ["--store", str(store.path), "evaluate", str(rid)])
    assert line.startswith(f"sslviz: error: Checkpoint {path} cannot be loaded: ") and re.search(message, line), line
    assert not os.path.exists("/tmp/sslviz-checkpoint-ran")
    assert_intact(store, rid)
