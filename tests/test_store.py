"""RunStore: WAL, one transaction per record, downsampling, truncate/delete, and clear StoreErrors."""
import os
import pickle
import sqlite3
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sslviz
from sslviz.runs import records, run_table, series
from sslviz.runs.lifecycle import TransitionRefused
from sslviz.runs.store import RunStore, StoreError

K = 3


def evaluation(acc: float = 0.5) -> dict:
    """One split's evaluation for K classes."""
    return {"accuracy": acc, "balanced_accuracy": acc - 0.1, "recall": [0.1, 0.2, 0.3],
            "confusion": np.eye(K, dtype=int).tolist()}


def record(step: int, *, eval_: bool = False, loss: float = 1.0) -> dict:
    """A trainer-shaped record for K classes; ``eval_`` adds a validation and a test evaluation."""
    cls = dict(threshold=0.9, conf_pl=0.5, conf_true=0.5, n_pl=4, n_accepted=2, n_true=4, n_correct=1,
               precision=0.5, recall=0.25)
    rec = {"step": step, "wall": step / 10, "scalars": {"loss": loss, "loss_sup": loss, "loss_unsup": 0.0,
                                                         "mask_rate": 0.5, "pl_accuracy": 0.5, "lr": 0.03},
           "classes": [dict(cls) for _ in range(K)], "pseudo_confusion": np.eye(K, dtype=int).tolist()}
    if eval_:
        rec["eval"] = {"val": evaluation(0.6), "test": evaluation(0.5)}
    return rec


def new_run(store, steps=100, **extra) -> int:
    return store.create_run({"steps": steps, "name": "r", "preset": "fixmatch", **extra})


def counts(store, run_id) -> dict:
    conn = store._conn()
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0]
            for t in (*run_table.METRIC_TABLES, "events")}


def test_wal_mode_and_busy_timeout(store):
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000


def test_log_writes_every_table_and_runs_row(store):
    rid = new_run(store)
    store.log(rid, record(10, eval_=True) | {"snapshot": {"points": [[0, 0]]}})
    c = counts(store, rid)
    assert c["scalars"] == 1 and c["class_train"] == K and c["evals"] == 2 and c["class_eval"] == 2 * K
    assert c["confusion"] == 3 and c["snapshots"] == 1  # val + test + pseudo confusion
    assert store.run(rid)["step"] == 10
    assert store.confusion(rid, "pseudo")[1].tolist() == np.eye(K).tolist()


def test_log_is_one_transaction(store, monkeypatch):
    """A failure on the last table leaves no row from the earlier tables (and runs.step unchanged)."""
    rid = new_run(store)
    store.log(rid, record(5))
    calls = []
    real_write = RunStore._write
    monkeypatch.setattr(RunStore, "_write", lambda self, stmts: (calls.append(len(stmts)), real_write(self, stmts)))
    store.log(rid, record(10, eval_=True))
    assert len(calls) == 1  # every table in one _write call

    store._conn().execute("CREATE TRIGGER boom BEFORE INSERT ON class_eval BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(StoreError, match="boom"):
        store.log(rid, record(15, eval_=True))
    assert store.scalars(rid).step.tolist() == [5, 10]
    assert 15 not in store.class_train(rid).step.tolist()
    assert store.evals(rid, "test").step.tolist() == [10]
    assert store.run(rid)["step"] == 10
    assert not store._conn().in_transaction


@pytest.mark.parametrize("n, max_points", [(10, 3), (1000, 7), (100, 100), (101, 100), (5, 1), (2, 2), (50, 49)])
def test_downsampling_caps_points_and_keeps_last(store, n, max_points):
    rid = new_run(store, steps=n * 5)
    store._write([("INSERT INTO scalars (run_id, step, wall, loss) VALUES (?, ?, ?, ?)",
                   [(rid, 5 * (i + 1), float(i), float(i)) for i in range(n)])])
    df = store.scalars(rid, max_points=max_points)
    assert 1 <= len(df) <= max_points
    assert df.step.iloc[-1] == 5 * n  # the latest point is always shown
    assert df.step.is_monotonic_increasing and df.step.is_unique
    assert len(store.scalars(rid, max_points=None)) == n


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), max_points=st.integers(1, 60))
def test_downsampling_property(tmp_path_factory, n, max_points):
    s = RunStore(tmp_path_factory.mktemp("ds") / "runs.db")
    rid = new_run(s)
    s._write([("INSERT INTO class_eval (run_id, step, split, cls, recall) VALUES (?, ?, ?, ?, ?)",
               [(rid, i, split, c, 0.5) for i in range(n) for split in ("val", "test") for c in range(2)])])
    df = s.class_eval(rid, "val", max_points=max_points)
    steps = df.step.unique()
    assert len(steps) <= max_points and steps[-1] == n - 1
    assert len(df) == 2 * len(steps)  # every class of a kept step
    s.close()


def test_readers_see_committed_data_while_a_writer_holds_the_lock(store):
    rid = new_run(store)
    for step in (5, 10):
        store.log(rid, record(step))
    writer = sqlite3.connect(store.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # hold the write lock with an uncommitted row
    writer.execute("INSERT INTO scalars (run_id, step, wall) VALUES (?, 15, 0)", (rid,))
    reader = RunStore(store.path)
    t = time.perf_counter()
    assert reader.scalars(rid).step.tolist() == [5, 10]
    assert reader.runs().id.tolist() == [rid]
    assert time.perf_counter() - t < 2.0  # no waiting on the writer
    writer.execute("COMMIT")
    assert reader.scalars(rid).step.tolist() == [5, 10, 15]
    writer.close()
    reader.close()


def test_concurrent_writer_and_reader_threads(store):
    rid = new_run(store, steps=1000)
    errors, seen = [], {0: [], 1: []}

    def write():
        try:
            for step in range(1, 201):
                store.log(rid, record(step, eval_=step % 20 == 0))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def read(i):
        reader = RunStore(store.path)
        try:
            while w.is_alive():
                seen[i].append(len(reader.scalars(rid, None)))
                reader.class_train(rid)
                reader.runs()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            reader.close()

    w = threading.Thread(target=write)
    readers = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    w.start()
    for r in readers:
        r.start()
    w.join(60)
    for r in readers:
        r.join(10)
    assert not errors, errors
    for counts_seen in seen.values():  # each reader sees whole records, and counts only grow
        assert counts_seen and counts_seen == sorted(counts_seen)
    assert len(store.scalars(rid, None)) == 200 and len(store.class_train(rid, None)) == 200 * K


def test_truncate_after(store):
    rid, other = new_run(store), new_run(store)
    for step in range(5, 55, 5):
        store.log(rid, record(step, eval_=step % 20 == 0) | {"snapshot": {"s": step}})
        store.log(other, record(step))
    store.truncate_after(rid, 25)
    assert store.scalars(rid).step.tolist() == [5, 10, 15, 20, 25]
    assert store.class_train(rid).step.max() == 25 and store.evals(rid, "val").step.tolist() == [20]
    assert [s for s, _ in store.snapshots(rid)] == [5, 10, 15, 20, 25]
    assert store.confusion(rid, "pseudo")[0] == 25
    assert store.scalars(other).step.max() == 50  # other runs untouched


def test_delete_run(store):
    rid, other = new_run(store), new_run(store)
    for r in (rid, other):
        store.log(r, record(10, eval_=True))
        store.add_event(r, "started", "x")
    with pytest.raises(TransitionRefused, match=f"Run {rid} is queued; delete needs a finished, failed or stopped run"):
        store.delete_run(rid)
    assert counts(store, rid)["scalars"] == 1  # refused: nothing deleted
    store.request_stop(rid)
    store.delete_run(rid)
    assert store.run(rid) is None
    assert all(v == 0 for v in counts(store, rid).values())
    assert store.runs().id.tolist() == [other]
    assert counts(store, other)["scalars"] == 1 and len(store.events(other)) == 1


def test_val_test_and_technique_round_trip(store):
    rid = new_run(store)
    rec = record(10, eval_=True) | {"technique": {"da.p_model": [0.5, 0.3, 0.2], "freematch.tau_t": 0.7}}
    rec["eval"]["val"]["confusion"] = [[2, 0, 0], [1, 1, 0], [0, 0, 3]]
    store.log(rid, rec)
    ev = store.evals(rid)
    assert list(ev.columns) == ["step", "split", "wall", "accuracy", "balanced_accuracy"]
    assert dict(zip(ev.split, ev.accuracy)) == {"val": 0.6, "test": 0.5}
    assert store.evals(rid, "val").balanced_accuracy.tolist() == [pytest.approx(0.5)]
    assert store.class_eval(rid, "test").recall.tolist() == [0.1, 0.2, 0.3]
    assert list(store.class_eval(rid).columns) == ["step", "split", "cls", "recall"]
    assert store.confusion(rid, "val")[1].tolist() == [[2, 0, 0], [1, 1, 0], [0, 0, 3]]
    assert store.confusion(rid, "test")[1].tolist() == np.eye(K).tolist()
    tech = store.technique(rid)
    assert list(tech.columns) == ["step", "name", "cls", "value"]
    assert tech[tech.name == "da.p_model"].value.tolist() == [0.5, 0.3, 0.2]
    assert tech[tech.name == "freematch.tau_t"][["cls", "value"]].values.tolist() == [[-1, 0.7]]
    row = store.runs().iloc[0]
    assert (row.val_accuracy, row.val_balanced_accuracy, row.test_accuracy) == (0.6, pytest.approx(0.5), 0.5)
    with pytest.raises(ValueError, match="Unknown kind 'train'"):
        store.confusion(rid, "train")


def test_old_flat_eval_logs_as_test(store):
    rid = new_run(store)
    store.log(rid, record(10) | {"eval": evaluation(0.7)})
    assert store.evals(rid).split.tolist() == ["test"]
    assert store.class_eval(rid, "val").empty and len(store.class_eval(rid, "test")) == K
    assert store.confusion(rid, "test")[0] == 10 and store.confusion(rid, "val") is None
    row = store.runs().iloc[0]
    assert row.test_accuracy == 0.7 and np.isnan(row.val_accuracy)  # no validation data


def test_runs_show_the_latest_evaluation_of_each_split(store):
    rid = new_run(store)
    store.log(rid, record(10) | {"eval": {"val": evaluation(0.3)}})
    store.log(rid, record(20) | {"eval": {"val": evaluation(0.4)}})
    store.log(rid, record(30) | {"eval": {"test": evaluation(0.9)}})
    row = store.runs().iloc[0]
    assert (row.val_accuracy, row.test_accuracy) == (0.4, 0.9)
    assert store.latest_evals(rid)["val"]["step"] == 20 and store.latest_evals(rid)["test"]["accuracy"] == 0.9
    assert list(store.latest_evals(rid, step=15)) == ["val"]
    with pytest.raises(ValueError, match="Unknown evaluation split"):
        store.log(rid, record(40) | {"eval": {"train": evaluation()}})


def test_runs_record_the_code_version(store):
    rid = new_run(store)
    version = store.runs().set_index("id").code_version[rid]
    assert version == run_table.code_version() and version.startswith(sslviz.__version__)
    assert store.run(rid)["code_version"] == version


def test_code_version_without_git(monkeypatch):
    run_table.code_version.cache_clear()
    monkeypatch.setattr(run_table.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("git")))
    try:
        assert run_table.code_version() == sslviz.__version__
    finally:
        run_table.code_version.cache_clear()


def test_tables_are_the_record_declarations(store):
    """Every declared field is a column of its table, with the primary key declared."""
    conn = store._conn()
    for row in records.ROWS:
        info = conn.execute(f"PRAGMA table_info({row.TABLE})").fetchall()
        assert [c["name"] for c in info if c["name"] != "id"] == list(records.columns(row))
        assert [c["name"] for c in sorted((c for c in info if c["pk"]), key=lambda c: c["pk"])] == list(row.KEY or ["id"])
    assert set(run_table.METRIC_TABLES) == {r.TABLE for r in records.ROWS} - {"events"}


def test_meter_produces_the_declared_columns():
    """The meter's flush (the trainer's scalars and classes) fills exactly the declared columns."""
    torch = pytest.importorskip("torch")
    from sslviz.engine.meter import LOSS_NAMES, IntervalMeter

    meter = IntervalMeter(2, "cpu")
    meter.update(torch.ones(len(LOSS_NAMES)), torch.tensor([0, 1]), torch.tensor([0.9, 0.8]), torch.tensor([1.0, 0.0]),
                 torch.tensor([0, 0]), torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    out = meter.flush(torch.tensor([0.9, 0.9]))
    assert set(out["scalars"]) | {"lr"} == set(records.measure_columns(records.Scalars))
    assert all(set(c) == set(records.measure_columns(records.ClassTrain)) for c in out["classes"])


def test_export_is_unsampled(store, monkeypatch):
    monkeypatch.setattr(series, "MAX_POINTS", 3)
    rid = new_run(store)
    for step in range(1, 11):
        store.log(rid, record(step))
    out = store.export(rid)
    assert set(out) == {"scalars", "class_train", "evals", "class_eval", "technique", "events"}
    assert len(out["scalars"]) == 10 and len(out["class_train"]) == 10 * K


# -- store failures: clear StoreError, earlier runs still readable -----------------------------------


def _read_only_connect(real):
    """sqlite3.connect opening the file with SQLite's read-only flag.

    Tests run as root, which ignores file permission bits, so chmod cannot make the
    store read-only here; mode=ro makes SQLite itself refuse writes with the same
    "attempt to write a readonly database" error a chmod 444 file gives a normal user.
    """
    def connect(path, *args, **kwargs):
        return real(f"file:{os.fspath(path)}?mode=ro", *args, uri=True, **kwargs)
    return connect


def test_read_only_store_gives_clear_error_and_stays_readable(store, monkeypatch):
    rid = new_run(store)
    store.log(rid, record(10, eval_=True))
    store.close()
    monkeypatch.setattr(sqlite3, "connect", _read_only_connect(sqlite3.connect))
    ro = RunStore(store.path)  # opening and reading still work
    assert ro.runs().id.tolist() == [rid] and ro.evals(rid, "test").step.tolist() == [10]
    with pytest.raises(StoreError, match=r"is read-only; point SSLVIZ_HOME \(or --store\) at a writable folder"):
        ro.create_run({"steps": 5})
    with pytest.raises(StoreError, match="read-only"):
        ro.log(rid, record(20))
    assert ro.scalars(rid).step.tolist() == [10]
    ro.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_chmod_read_only_store(store):
    rid = new_run(store)
    store.close()
    for p in store.path.parent.glob("runs.db*"):
        p.chmod(0o444)
    ro = RunStore(store.path)
    with pytest.raises(StoreError, match="read-only"):
        ro.create_run({"steps": 5})
    assert ro.run(rid) is not None


@pytest.mark.parametrize("make_parent", ["file", "proc"])
def test_store_in_unwritable_place(tmp_path, make_parent):
    if make_parent == "file":
        (tmp_path / "notadir").write_text("x")
        path = tmp_path / "notadir" / "runs.db"
    else:
        path = "/proc/sslviz-no-such/runs.db"  # /proc refuses new folders even for root
    with pytest.raises(StoreError, match="cannot be created"):
        RunStore(path)


def test_full_disk_gives_clear_error_and_rolls_back(store):
    """A real SQLITE_FULL: cap the file at its current size with PRAGMA max_page_count."""
    rid = new_run(store)
    store.log(rid, record(5, eval_=True))
    conn = store._conn()
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    big = record(10, eval_=True) | {"snapshot": {"blob": "x" * 300_000}}
    with pytest.raises(StoreError, match="cannot grow: the disk is full"):
        store.log(rid, big)
    with pytest.raises(StoreError, match="disk is full"):
        store.create_run({"steps": 5, "name": "y" * 300_000})
    assert not conn.in_transaction
    assert store.scalars(rid).step.tolist() == [5] and store.run(rid)["step"] == 5
    assert store.runs().id.tolist() == [rid]
    store.log(rid, record(10))  # small writes that fit still work afterwards
    assert store.scalars(rid).step.tolist() == [5, 10]


def test_full_disk_simulated_on_commit(store, monkeypatch):
    """The error raised by any statement in a write maps to the disk-full text."""
    rid = new_run(store)
    store.log(rid, record(5))
    real_conn = store._conn()

    class Full:
        def __getattr__(self, name):
            return getattr(real_conn, name)

        def executemany(self, *a):
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_conn", lambda: Full() if threading.current_thread() is threading.main_thread() else real_conn)
    with pytest.raises(StoreError, match="disk is full; free space or move the store with SSLVIZ_HOME"):
        store.log(rid, record(10))
    monkeypatch.undo()
    assert store.scalars(rid).step.tolist() == [5] and not real_conn.in_transaction


def test_not_a_database(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        RunStore(path)


# -- binning: many steps merged per bin, by each column's aggregator ---------------------------------------
def _long_run(store, n: int = 1000, every: int = 10, spike_at: int | None = None) -> int:
    """``n`` log steps every ``every`` steps; class 1 accepts 100 pseudo-labels in the one interval ``spike_at``."""
    rid = new_run(store, steps=n * every)
    rows = [(rid, every * (i + 1), c, 0.9, 0.5 + 0.001 * (i % 7), 0.5, 7, 100 if spike_at == every * (i + 1) and c == 1
             else 2 + i % 3, 4, 1, 0.5, 0.25) for i in range(n) for c in range(K)]
    store._write([("INSERT INTO class_train (run_id, step, cls, threshold, conf_pl, conf_true, n_pl, n_accepted, n_true, "
                   "n_correct, precision, recall) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows),
                  ("INSERT INTO scalars (run_id, step, wall, loss) VALUES (?, ?, ?, ?)",
                   [(rid, every * (i + 1), float(i), 5.0 if spike_at == every * (i + 1) else 1.0) for i in range(n)])])
    return rid


def test_binned_counts_add_up_to_the_raw_totals(store):
    rid = _long_run(store)
    raw, binned = store.class_train(rid, None), store.class_train(rid, max_points=50)
    assert 1 < binned.step.nunique() <= 50 and binned.step.iloc[-1] == raw.step.max()
    for c in ("n_pl", "n_accepted", "n_true", "n_correct"):  # summed: per class totals unchanged
        assert binned.groupby("cls")[c].sum().tolist() == raw.groupby("cls")[c].sum().tolist()
    assert binned.groupby("cls").n_logs.sum().tolist() == [1000] * K
    assert np.allclose(binned.conf_pl, binned.conf_pl.clip(0.5, 0.506))  # averaged, not summed
    assert (binned.conf_pl_min <= binned.conf_pl).all() and (binned.conf_pl <= binned.conf_pl_max).all()
    last = binned[binned.step == binned.step.max()]  # the latest step is its own, unmerged
    assert last.n_logs.tolist() == [1] * K and last.n_accepted.tolist() == raw[raw.step == raw.step.max()].n_accepted.tolist()


def test_a_one_interval_spike_survives_binning(store):
    rid = _long_run(store, spike_at=5550)
    ct = store.class_train(rid, max_points=40)
    c1 = ct[ct.cls == 1]
    assert c1.n_accepted_max.max() == 100 and (ct[ct.cls != 1].n_accepted_max <= 4).all()
    assert store.scalars(rid, max_points=40).loss_max.max() == 5.0  # a one-interval loss spike too


def test_a_step_window_returns_full_resolution(store):
    rid = _long_run(store, spike_at=5550)
    window = store.class_train(rid, max_points=40, steps=(5000, 5390))  # 40 log steps fit in 40 points
    assert window.step.unique().tolist() == list(range(5000, 5391, 10)) and "n_logs" not in window
    assert window.equals(store.class_train(rid, None, steps=(5000, 5390)))
    assert store.scalars(rid, 40, steps=(5500, None)).step.min() == 5500
    wide = store.scalars(rid, 40, steps=(100, 9000))
    assert len(wide) <= 40 and wide.step.min() >= 100 and wide.step.max() == 9000


def test_binned_reads_keep_finished_bins_and_match_a_fresh_read_as_the_run_grows(store):
    rid = _long_run(store, n=500)
    first = store.class_train(rid, max_points=40)
    assert store._rollups  # finished bins kept
    more = [(rid, 10 * i, c, 0.9, 0.5, 0.5, 7, 9, 4, 1, 0.5, 0.25) for i in range(501, 530) for c in range(K)]
    store._write([("INSERT INTO class_train (run_id, step, cls, threshold, conf_pl, conf_true, n_pl, n_accepted, "
                   "n_true, n_correct, precision, recall) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", more)])
    grown = store.class_train(rid, max_points=40)
    fresh = RunStore(store.path).class_train(rid, max_points=40)  # no kept bins
    assert grown.step.max() == 5290 and not grown.equals(first)
    assert np.allclose(grown.drop(columns="cls").to_numpy(float), fresh.drop(columns="cls").to_numpy(float))
    assert grown.groupby("cls").n_accepted.sum().tolist() == store.class_train(rid, None).groupby("cls").n_accepted.sum().tolist()
    # A resume cuts the metrics back and writes new ones: the kept bins are dropped with them.
    store.truncate_after(rid, 1000)
    assert store.class_train(rid, max_points=40).step.max() == 1000


def test_finished_bins_are_kept_on_disk_for_a_store_opened_afresh(store, monkeypatch):
    """A server started afresh reads a long run's finished bins from the rollup file, not every row again."""
    rid = _long_run(store, n=1000, spike_at=5550)
    first = store.class_train(rid, max_points=40)
    files = list((store.path.parent / "cache" / "rollups").glob(f"{store.path.stem}-run{rid}-*.parquet"))
    assert len(files) == 1
    fresh = RunStore(store.path)
    reads = []
    real_read = fresh._read
    monkeypatch.setattr(fresh, "_read", lambda sql, params=(): reads.append(params) or real_read(sql, params))
    again = fresh.class_train(rid, max_points=40)
    assert again.equals(first) and again[again.cls == 1].n_accepted_max.max() == 100
    assert not [p for p in reads if -1 in p]  # no read from the first step: the finished bins came from the file
    fresh.close()
    # Deleting the run removes its rollups with its rows.
    store.update_run(rid, status="finished")
    store.delete_run(rid)
    assert not list((store.path.parent / "cache" / "rollups").glob(f"{store.path.stem}-run{rid}-*"))


class _Planted:
    """A pickle that runs a command when loaded (``__reduce__`` -> os.system), as an attacker would plant it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_pickle_in_the_rollup_cache_runs_no_code(store, tmp_path):
    # The cache may sit on a shared SSLVIZ_HOME that a read-only server reads: its files must not execute.
    rid = _long_run(store, n=1000)
    first = store.class_train(rid, max_points=40)
    folder = store.path.parent / "cache" / "rollups"
    marker = tmp_path / "pwned"
    payload = pickle.dumps((10**9, _Planted(marker)))
    for path in list(folder.glob(f"{store.path.stem}-run{rid}-*")):
        path.write_bytes(payload)  # in place of the real rollup, under the name the store reads
        path.with_suffix(".pkl").write_bytes(payload)  # and under the name older versions read
    fresh = RunStore(store.path)
    again = fresh.class_train(rid, max_points=40)
    assert not marker.exists()
    assert again.equals(first)  # rebuilt from the rows: the planted file was ignored
    fresh.close()


def test_queue_lists_only_the_active_runs_of_an_executor(store):
    """The queue pump runs on every dashboard refresh: it reads the queued and running runs, never the finished."""
    ids = [new_run(store) for _ in range(4)]
    store.update_run(ids[0], status="finished")
    store.update_run(ids[1], status="running", device="cpu")
    store.update_run(ids[3], executor="ray")
    q = store.queue("local")
    assert q.id.tolist() == [ids[1], ids[2]] and q.status.tolist() == ["running", "queued"]
    assert store.queue("ray").id.tolist() == [ids[3]]


def test_roll_up_bins_every_series_the_pages_read(store, monkeypatch):
    """The worker rolls a finished run up: the pages' first view (whole run, VIEW_POINTS) then reads the files."""
    from sslviz.runs.store import VIEW_POINTS

    rid = _long_run(store, n=VIEW_POINTS + 200)
    store.roll_up(rid)
    assert len(list((store.path.parent / "cache" / "rollups").glob(f"{store.path.stem}-run{rid}-*.parquet"))) == 2
    fresh = RunStore(store.path)
    reads = []
    real_read = fresh._read
    monkeypatch.setattr(fresh, "_read", lambda sql, params=(): reads.append(params) or real_read(sql, params))
    fresh.class_train(rid, VIEW_POINTS), fresh.scalars(rid, VIEW_POINTS)
    assert reads and not [p for p in reads if -1 in p]  # no read from the first step
    fresh.close()


@pytest.mark.parametrize("max_points", [None, 2])
def test_a_float_column_of_nothing_but_nulls_reads_as_floats(store, max_points):
    """A window where no pseudo-label was accepted has no precision in any class: SQLite gives pandas None for every
    row, which it kept as objects (``round`` then raised in ``sslviz show``); read and binned, it is NaN."""
    rid = new_run(store)
    for step in (5, 10, 15):
        rec = record(step)
        for c in rec["classes"]:
            c.update(precision=None, threshold=None)
        store.log(rid, rec)
    ct = store.class_train(rid, max_points)
    assert ct.precision.dtype == float and ct.precision.isna().all() and ct.threshold.dtype == float
    assert (ct.conf_pl == 0.5).all()
    if max_points:
        assert ct.precision_min.dtype == float and ct.precision_max.isna().all()
    assert ct.precision.round(3).isna().all()
