"""Schema versions: a store written by older code opens upgraded and keeps its runs; a newer one is refused untouched."""
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from sslviz.runs import database, records, schema as schema_mod
from sslviz.runs.schema import SCHEMA_VERSION
from sslviz.runs.store import RunStore, StoreError

FIXTURE = Path(__file__).parent / "fixtures" / "store_v0"  # written by main f2d1b0a; see its README.md
V0_TABLES = ("scalars", "class_train", "evals", "class_eval", "confusion", "snapshots", "events")


@pytest.fixture
def v0_path(tmp_path) -> Path:
    """A copy of the version-0 fixture (never open the committed file: opening upgrades it)."""
    shutil.copytree(FIXTURE, tmp_path / "home")
    return tmp_path / "home" / "runs.db"


def raw(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def row_counts(path: Path) -> dict:
    return {t: raw(path, f"SELECT run_id, COUNT(*) FROM {t} GROUP BY run_id ORDER BY run_id") for t in V0_TABLES}


def schema(path: Path) -> dict:
    """table -> [(column, type, not null, primary-key position)] of every table but SQLite's own."""
    tables = [t for (t,) in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {t: sorted(tuple(c[1:4]) + (c[5],) for c in raw(path, f"PRAGMA table_info({t})")) for t in tables}


def test_v0_fixture_opens_upgraded_with_its_runs_and_metrics(v0_path):
    assert raw(v0_path, "PRAGMA user_version") == [(0,)]
    before = row_counts(v0_path)
    old_evals = raw(v0_path, "SELECT run_id, step, accuracy, balanced_accuracy FROM evals ORDER BY run_id, step")
    s = RunStore(v0_path)
    assert raw(v0_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(3,)]  # 0 -> 1 -> 2 -> 3
    assert row_counts(v0_path) == before  # every row kept

    runs = s.runs()
    assert sorted(runs.id) == [1, 2, 3]
    assert runs.set_index("id").status.to_dict() == {1: "finished", 2: "finished", 3: "stopped"}
    assert runs.val_accuracy.isna().all() and runs.test_accuracy.notna().all()  # old evaluations were the test set
    assert runs.code_version.isna().all()  # unknown for runs computed before it was recorded
    assert runs.executor.tolist() == ["local"] * 3 and runs.archived.tolist() == [0] * 3  # v2's columns
    assert runs.sweep.isna().all() and s.sweeps().empty  # v3: no old run belongs to a sweep
    new_evals = [(rid, *row) for rid in (1, 2, 3)
                 for row in s.evals(rid)[["step", "accuracy", "balanced_accuracy"]].itertuples(index=False)]
    assert new_evals == old_evals
    assert all(set(s.evals(rid).split) == {"test"} for rid in (1, 2, 3))
    assert s.evals(3, "val").empty and not s.class_eval(3, "test").empty and s.class_eval(3, "val").empty
    assert s.confusion(3, "test") is not None and s.confusion(3, "pseudo") is not None
    assert s.confusion(3, "val") is None
    assert len(s.snapshots(2)) == before["snapshots"][0][1] and s.technique(1).empty
    assert s.run(3)["step"] == 780 and not s.events(3).empty

    # the upgraded file takes new records and behaves like a fresh one
    s.log(3, {"step": 790, "wall": 1.0, "eval": {"val": {"accuracy": 0.5, "balanced_accuracy": 0.4,
                                                          "recall": [0.4] * 10, "confusion": [[0] * 10] * 10}},
              "technique": {"da.p_model": [0.1] * 10}})
    assert s.evals(3, "val").step.tolist() == [790] and len(s.technique(3)) == 10
    s.truncate_after(3, 780)
    assert s.evals(3, "val").empty and s.technique(3).empty
    s.close()


def test_upgraded_schema_equals_a_fresh_one(v0_path, tmp_path):
    RunStore(v0_path).close()
    RunStore(tmp_path / "fresh.db").close()
    assert schema(v0_path) == schema(tmp_path / "fresh.db")
    assert raw(v0_path, "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL") == \
        raw(tmp_path / "fresh.db", "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")


def test_fresh_file_starts_at_the_current_version(tmp_path):
    RunStore(tmp_path / "runs.db").close()
    assert raw(tmp_path / "runs.db", "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert set(schema(tmp_path / "runs.db")) == {"runs", "sweeps", *(r.TABLE for r in records.ROWS)}


def test_a_broken_upgrade_leaves_the_file_at_its_old_version(v0_path, monkeypatch):
    """The upgrade is one transaction: a failure half-way rolls every step back."""
    def half_then_fail(conn):
        conn.execute("ALTER TABLE runs ADD COLUMN code_version TEXT")
        raise sqlite3.OperationalError("boom")

    monkeypatch.setattr(database, "UPGRADES", (half_then_fail,))
    before = schema(v0_path)
    with pytest.raises(StoreError, match="boom"):
        RunStore(v0_path)
    assert raw(v0_path, "PRAGMA user_version") == [(0,)] and schema(v0_path) == before
    monkeypatch.undo()
    assert sorted(RunStore(v0_path).runs().id) == [1, 2, 3]  # and it upgrades later


def test_a_newer_file_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "runs.db"
    RunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # one file, so its bytes say whether it was touched
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, but this sslviz .* reads versions "
                                         rf"up to {SCHEMA_VERSION}; upgrade sslviz"):
        RunStore(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not Path(f"{path}-wal").exists()


def test_an_upgrade_keeps_a_copy_of_the_file_as_it_was(v0_path):
    """A plain ``list`` upgrades a v0 file; ``runs.db.v0.bak`` beside it is the file as it was (version 0, every row)."""
    from sslviz import cli

    before = row_counts(v0_path)
    old_schema = schema(v0_path)
    assert cli.main(["--store", str(v0_path), "list"]) == 0
    assert raw(v0_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    kept = v0_path.with_name("runs.db.v0.bak")
    assert raw(kept, "PRAGMA user_version") == [(0,)]
    assert schema(kept) == old_schema and row_counts(kept) == before


def test_an_old_store_that_cannot_be_written_is_read_without_touching_it(v0_path, monkeypatch, capsys):
    """On read-only media (as root, whom file modes do not stop, the check is patched) a v0 store lists and shows
    its runs from an upgraded private copy; the file's bytes are unchanged, nothing is written beside it, and a write
    is refused with a message that says why."""
    from sslviz import cli

    monkeypatch.setattr(database, "writable", lambda path: False)
    conn = sqlite3.connect(v0_path)
    conn.execute("PRAGMA journal_mode = DELETE")  # one file, so its bytes say whether it was touched
    conn.close()
    digest = hashlib.sha256(v0_path.read_bytes()).hexdigest()
    files = sorted(p.name for p in v0_path.parent.iterdir())
    assert cli.main(["--store", str(v0_path), "list"]) == 0
    listed = capsys.readouterr().out
    assert sorted(line.split()[0] for line in listed.splitlines()[1:]) == ["1", "2", "3"]
    assert cli.main(["--store", str(v0_path), "show", "3"]) == 0
    assert "run 3 [stopped]" in capsys.readouterr().out
    assert cli.main(["--store", str(v0_path), "archive", "1"]) == 2
    assert "has schema version 0 and cannot be written here" in capsys.readouterr().err
    assert hashlib.sha256(v0_path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in v0_path.parent.iterdir()) == files


def test_one_upgrade_step_per_version():
    assert len(schema_mod.UPGRADES) == SCHEMA_VERSION


def test_v0_run_cannot_resume_and_says_why_keeping_its_metrics(v0_path, monkeypatch, capsys):
    """Run 3 of the fixture stopped at step 780 with a checkpoint written before the validation split: it cannot
    resume (its split is no longer reproducible), and says so in API and CLI alike, never restarting at step 0."""
    from sslviz import cli
    from sslviz.runs import worker
    from sslviz.engine.config import RetiredKeyWarning, TrainConfig
    from sslviz.engine.trainer import CheckpointMismatch

    monkeypatch.setenv("SSLVIZ_HOME", str(v0_path.parent))
    s = RunStore(v0_path)
    assert worker.checkpoint_path(s, 3).exists()
    before = len(s.scalars(3, None))
    with pytest.raises(CheckpointMismatch, match=r"Run 3 cannot resume: .*older sslviz \(checkpoint format 1.*"
                                                 r"predates the validation split"):
        worker.resume(s, 3)
    assert cli.main(["--store", str(v0_path), "resume", "3"]) == 2
    assert "older sslviz" in capsys.readouterr().err
    row = s.run(3)
    assert row["status"] == "stopped" and row["step"] == 780 and len(s.scalars(3, None)) == before
    # Its stored config still loads: the retired DA momentum key is reported, not an error.
    with pytest.warns(RetiredKeyWarning, match="dist_align_momentum"):
        cfg = TrainConfig.from_dict(row["config"])
    assert cfg.preset == "fixmatch-da" and cfg.dist_align == "labeled"


def test_v1_file_upgrades_to_v2_with_local_unarchived_runs(v0_path, tmp_path, monkeypatch):
    """A version-1 file (the v0 fixture taken through v0->v1 only, as sslviz 1 left it) gains ``executor`` and
    ``archived``: every old run executed locally and none is archived; the lifecycle works on it."""
    monkeypatch.setattr(database, "SCHEMA_VERSION", 1)
    RunStore(v0_path).close()
    monkeypatch.undo()
    assert raw(v0_path, "PRAGMA user_version") == [(1,)]
    assert "executor" not in [c for c, *_ in schema(v0_path)["runs"]]
    before = row_counts(v0_path)
    s = RunStore(v0_path)
    assert raw(v0_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] and row_counts(v0_path) == before
    RunStore(tmp_path / "fresh.db").close()
    assert schema(v0_path) == schema(tmp_path / "fresh.db")
    assert raw(v0_path, "SELECT id, executor, archived FROM runs ORDER BY id") == [(1, "local", 0), (2, "local", 0),
                                                                                   (3, "local", 0)]
    s.set_archived(3, True)
    assert sorted(s.runs().id) == [1, 2] and sorted(s.runs(include_archived=True).id) == [1, 2, 3]
    s.close()


def test_v2_file_upgrades_to_v3_with_sweeps(v0_path, tmp_path, monkeypatch):
    """A version-2 file gains the ``sweeps`` table and ``runs.sweep`` (NULL: no old run belongs to a sweep); a sweep
    can then be recorded and its runs tagged, and the schema equals a fresh one."""
    monkeypatch.setattr(database, "SCHEMA_VERSION", 2)
    RunStore(v0_path).close()
    monkeypatch.undo()
    assert raw(v0_path, "PRAGMA user_version") == [(2,)] and "sweeps" not in schema(v0_path)
    before = row_counts(v0_path)
    s = RunStore(v0_path)
    assert raw(v0_path, "PRAGMA user_version") == [(3,)] and row_counts(v0_path) == before
    RunStore(tmp_path / "fresh.db").close()
    assert schema(v0_path) == schema(tmp_path / "fresh.db")
    assert raw(v0_path, "SELECT id, sweep FROM runs ORDER BY id") == [(1, None), (2, None), (3, None)]
    sweep_id = s.create_sweep({"grid": {"gamma": [10, 50]}}, name="g", options={"address": None})
    run_id = s.create_run({"steps": 10, "preset": "fixmatch"}, sweep=sweep_id)
    assert s.sweep(sweep_id)["spec"] == {"grid": {"gamma": [10, 50]}} and s.sweeps().runs.tolist() == [1]
    assert s.runs().set_index("id").sweep[run_id] == sweep_id
    with pytest.raises(ValueError, match="still has 1 run"):
        s.delete_sweep(sweep_id)
    s.close()
