"""Tiny runs of the bench/ scripts so they keep working as the engine changes (a few seconds each)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_smoke(capsys):
    results = _script("throughput").main([
        "--device", "cpu,cuda", "--models", "cnn_digits", "--steps", "1", "--warmup", "1", "--batch-size", "4",
        "--mu", "1", "--log-every", "1", "--workers", "1", "--threads", "1",
    ])
    out = capsys.readouterr().out
    assert [(r["device"], r["model"]) for r in results][0] == ("cpu", "cnn_digits")
    assert all(v > 0 for r in results for v in (*r["a"], *r["b"], *r["ratio"]))
    assert "(b)/(a)" in out


def test_overhead_smoke(capsys):
    out = _script("overhead").main([
        "--steps", "2", "--warmup", "2", "--log-every", "2", "--batch-size", "4", "--mu", "1", "--runs", "1",
        "--load-steps", "200", "--repeats", "1", "--threads", "1",
    ])
    assert out["logging"]["store_log_calls"] >= 2 and 0 < out["logging"]["share"] < 1
    assert out["load"]["rows"] == {"scalars": 20, "class_train": 200, "evals": 2, "class_eval": 20, "confusion": 22}
    assert "all readers" in capsys.readouterr().out


def test_cifar10_lt_smoke(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar"
    for split, n in (("train", 9), ("test", 2)):  # 1 per class is held out for validation
        for k in range(10):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    results = _script("cifar10_lt").main([
        str(root), "--steps", "2", "--gamma", "2", "--n1", "4", "--m1", "4", "--batch-size", "4", "--mu", "1",
        "--model", "cnn32", "--device", "cpu", "--threads", "1", "--cache-dir", str(tmp_path / "cache"),
    ])
    assert [r["preset"] for r in results] == ["fixmatch", "balanced"]
    assert all(len(r[f"{s}_recall"]) == 10 and 0 <= r[f"{s}_balanced_accuracy"] <= 1 for r in results for s in ("val", "test"))
    assert "balanced acc" in capsys.readouterr().out


def test_cifar10_lt_needs_an_existing_folder(tmp_path):
    with pytest.raises(SystemExit, match="never downloads"):
        _script("cifar10_lt").main([str(tmp_path / "missing")])


def test_cpu_choices_smoke(capsys):
    _script("cpu_choices").main(["--repeats", "1", "--batch", "16"])
    out = capsys.readouterr().out
    assert "colour ops" in out and out.count("channels_last") == 2


def test_live_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the bench moves into the checkout and points the store variables at its files
    monkeypatch.setenv("SSLVIZ_STORE", str(tmp_path / "unused.db"))
    monkeypatch.setenv("SSLVIZ_HOME", str(tmp_path))
    rows = _script("live").main(["--steps", "400", "--repeats", "1", "--stores", str(tmp_path)])
    (row,) = rows
    assert set(row["live"]) == set(_script("live").TABS) and all(v["bytes"] > 0 for v in row["live"].values())
    assert row["compare"]["bytes"] > 0 and "Compare 5 runs" in capsys.readouterr().out


def test_presets_and_methods_smoke(capsys):
    _script("presets").main(["--presets", "fixmatch", "--settings", "toy2d", "--seeds", "0", "--steps", "20",
                             "--grid", "dist_align=none,labeled", "--processes", "1"])
    out = capsys.readouterr().out
    assert "| toy2d | fixmatch dist_align=none | 1 |" in out and "| toy2d | fixmatch dist_align=labeled | 1 |" in out
    _script("methods").main(["--presets", "fixmatch-abc", "--settings", "digits", "--seeds", "0", "--steps", "20",
                             "--processes", "1"])
    out = capsys.readouterr().out
    assert "| digits | fixmatch-abc | 1 | 20 |" in out  # the head-tail gap table: seeds, steps
