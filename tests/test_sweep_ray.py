"""Sweeps on a real local Ray instance: trial processes have no store, yet every record reaches it exactly once;
stop and resume go through Ray. One Ray for the whole test session (a few seconds to start)."""
from __future__ import annotations

import contextlib
import os
import threading

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from sslviz.runs import lifecycle, ray_executor, sweep, sweep_results, sweep_spec  # noqa: E402


@pytest.fixture(scope="session")
def local_ray():
    """``ray.init(num_cpus=2)`` once per session (a cluster: set RAY_ADDRESS, the same code connects to it).

    Ray runs its worker processes at nice 15: on a machine busy with anything at normal priority they get a few
    percent of a core, and trials that take seconds here take minutes (past the waits below). The local Ray of the
    tests runs them at the tests' own priority (``RAY_worker_niceness``, read by the raylet when it starts)."""
    if not ray.is_initialized():
        before = os.environ.get("RAY_worker_niceness")
        os.environ["RAY_worker_niceness"] = "0"
        try:
            ray_executor.connect(num_cpus=2)
        finally:
            if before is None:
                os.environ.pop("RAY_worker_niceness")
            else:
                os.environ["RAY_worker_niceness"] = before
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def _driving(store, sweep_id, drive):
    """A thread running ``drive`` (a sweep's driver) for the block. When the block fails before the sweep ended, the
    sweep is stopped and the driver waited for: left running, its 100k-step trials kept the test session from
    exiting (a non-daemon thread), and after the session's ray.shutdown() its next ray.get started a new Ray."""
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        yield driver
    finally:
        if driver.is_alive():
            sweep.stop(store, sweep_id)
            driver.join(120)


def test_trial_processes_have_no_store(local_ray, tiny):
    probe = ray.remote(ray_executor.probe_store).options(num_cpus=1)
    assert ray.get(probe.remote(tiny)).startswith("no store: Run store /dev/null/")


def test_ray_sweep_streams_every_record_exactly_once(local_ray, store, tiny):
    plan = sweep.validate(sweep_spec.SweepSpec(grid={"preset": ["fixmatch", "balanced"]}, base=tiny), store=store)
    sweep_id, run_ids, results = sweep.submit_ray(store, plan)
    assert results == {run_ids[0]: "finished", run_ids[1]: "finished"}
    n_logs = tiny["steps"] // tiny["log_every"]
    from sslviz.engine.trainer import train

    expected = {}
    for rid, cfg in zip(run_ids, plan.configs):  # the same configs in this process: the records Ray must deliver
        records = []
        train(cfg, on_log=records.append)
        expected[rid] = [[r["step"], split] for r in records for split in r.get("eval", {})]
    for rid in run_ids:
        row = store.run(rid)
        assert row["status"] == "finished" and row["executor"] == "ray" and row["sweep"] == sweep_id
        assert row["device"].startswith("ray:") and row["step"] == tiny["steps"]
        assert store.scalars(rid, None).step.tolist() == list(range(tiny["log_every"], tiny["steps"] + 1,
                                                                    tiny["log_every"]))
        assert len(store.class_train(rid, None)) == n_logs * 6  # toy2d: 6 classes, one row each per log step
        ev = store.evals(rid)
        assert sorted(ev[["step", "split"]].values.tolist()) == sorted(expected[rid])  # as the trainer emitted, once each
        assert store.events(rid).kind.tolist() == ["queued", "started", "finished"]
    res = sweep_results.results(store, sweep_id)
    assert res[list(sweep_results.METRICS)].notna().all().all()


def test_stop_and_resume_a_ray_sweep(local_ray, store, tiny, wait_for):
    long = {**tiny, "steps": 100_000, "eval_every": 50_000, "checkpoint_every": 10}  # never ends on its own here
    plan = sweep.validate(sweep_spec.SweepSpec(grid={"gamma": [5.0, 10.0]}, base=long), store=store)
    sweep_id, run_ids = sweep.record(store, plan, executor="ray")
    out = {}
    with _driving(store, sweep_id, lambda: out.update(ray_executor.drive(store, sweep_id))) as driver:
        assert wait_for(lambda: all(store.run(r)["step"] >= 20 for r in run_ids), 120)
        assert all(store.run(r)["status"] == "running" for r in run_ids)
        assert sorted(sweep.stop(store, sweep_id)) == run_ids
        driver.join(120)
    assert out == {run_ids[0]: "stopped", run_ids[1]: "stopped"}
    stopped_at = {r: store.run(r)["step"] for r in run_ids}
    assert sorted(sweep.resume(store, sweep_id)) == run_ids
    assert all(store.run(r)["status"] == "queued" for r in run_ids)
    with _driving(store, sweep_id, lambda: out.update(ray_executor.drive(store, sweep_id))) as driver:
        assert wait_for(lambda: all(store.run(r)["step"] > stopped_at[r] for r in run_ids), 120)
        for r in run_ids:
            assert store.events(r).message.str.contains(f"resumed from step {stopped_at[r]} (Ray)", regex=False).any()
        sweep.stop(store, sweep_id)
        driver.join(120)
    assert set(out.values()) == {"stopped"}
    steps = store.scalars(run_ids[0], None).step
    assert steps.is_unique and steps.is_monotonic_increasing  # no record written twice across the resume


def test_ctrl_c_halfway_through_writing_a_batch_loses_no_record(local_ray, store, tiny, monkeypatch):
    """Ctrl-C lands in the driver while it writes the third record: the trial is asked to stop and ends stopped,
    and its records are in the store without a gap (the mailbox keeps a record until it is written)."""
    plan = sweep.validate(sweep_spec.SweepSpec(grid={"lr": [0.05]}, base={**tiny, "steps": 100_000, "eval_every": 50_000}),
                          store=store)
    log, calls = store.log, []

    def log_until_ctrl_c(run_id, record):
        calls.append(record["step"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived before this write
        log(run_id, record)

    monkeypatch.setattr(store, "log", log_until_ctrl_c)
    sweep_id, (run_id,), results = sweep.submit_ray(store, plan)
    assert results == {run_id: "stopped"}
    steps = store.scalars(run_id, None).step.tolist()
    assert steps == list(range(tiny["log_every"], store.run(run_id)["step"] + 1, tiny["log_every"]))
    assert calls[2] in steps and len(steps) >= 3  # the interrupted record came again and was written


# -- tuning with early stopping (Ray Tune's ASHA) -------------------------------------------------------------
def _needs_tune():
    # Ray Tune fails to import without its extra's packages (pydantic) with an ImportError, not ModuleNotFoundError.
    pytest.importorskip("ray.tune", exc_type=ImportError,
                        reason="needs Ray Tune: pip install -r requirements-dev.txt (ray[tune])")


def _writes(store, monkeypatch) -> list[tuple[int, int]]:
    """(run id, step) of every record the driver writes into ``store`` from now on, in order."""
    writes = []
    log = store.log
    monkeypatch.setattr(store, "log", lambda run_id, record: (writes.append((run_id, record["step"])),
                                                               log(run_id, record))[-1])
    return writes


def test_asha_stops_the_bad_knob_early_and_the_store_gets_every_record_once(local_ray, store, tiny, monkeypatch):
    """lr=1e-6 barely moves the model: ASHA stops it at its first rung, behind the two working rates. Whether the
    weaker of those two survives depends on which reaches a rung first (they run side by side), so it may be
    stopped too; every trial's records reach the store exactly once, up to the step it ended at. lr=10 diverges
    after its first report: failed, with the trainer's error and the records it logged after that report (they
    travel with the error: Tune takes no result without the metric)."""
    _needs_tune()
    from sslviz.engine.trainer import Diverged, train

    base = {**tiny, "steps": 80, "eval_every": 20, "log_every": 2}
    plan = sweep.validate(sweep_spec.SweepSpec(grid={"lr": [0.1, 0.05, 1e-6, 10.0]}, base=base), store=store)
    early = sweep_spec.EarlyStop(grace_period=20, reduction_factor=2).options("ray", plan.configs)
    writes = _writes(store, monkeypatch)
    sweep_id, run_ids, results = sweep.submit_ray(store, plan, early_stop=early)
    good, bad, diverged = run_ids[:2], run_ids[2], run_ids[3]
    assert results[bad] == "stopped" and lifecycle.FINISHED in {results[r] for r in good}
    assert {results[r] for r in good} <= {"finished", "stopped"} and sorted(results) == run_ids
    assert len(writes) == len(set(writes))  # no record written twice
    res = sweep_results.results(store, sweep_id).set_index("run")
    for rid, cfg in zip(run_ids[:3], plan.configs):
        row, events = store.run(rid), store.events(rid)
        assert row["status"] == results[rid] and row["executor"] == "ray" and row["device"].startswith("ray:")
        assert events.kind.tolist() == ["queued", "started", results[rid]]
        end = row["step"]
        if results[rid] == "stopped":
            assert events.message.iloc[-1].startswith(f"stopped early by ASHA at step {end} (validation balanced "
                                                      "accuracy ")
            assert res.loc[rid, "early_stop"] == events.message.iloc[-1]
        else:
            assert end == base["steps"] and pd.isna(res.loc[rid, "early_stop"])
        records = []
        train(cfg, on_log=records.append)  # the same config here: the records the trial must have delivered
        delivered = [r for r in records if r["step"] <= end]
        assert [s for r, s in writes if r == rid] == [r["step"] for r in delivered]
        assert store.scalars(rid, None).step.tolist() == [r["step"] for r in delivered]
        assert sorted(store.evals(rid)[["step", "split"]].values.tolist()) == sorted(
            [r["step"], split] for r in delivered for split in r.get("eval", {}))
    assert store.events(bad).message.iloc[-1].startswith("stopped early by ASHA at step 20 ")
    assert pd.isna(res.loc[bad, "test_balanced_accuracy"])  # a trial ASHA stopped never saw the test set
    row, logged = store.run(diverged), []
    with pytest.raises(Diverged) as raised:
        train(plan.configs[3], on_log=logged.append)  # what it logs before diverging, here: steps 2 (validated), 4, 6
    assert results[diverged] == "failed" and row["error"] == f"Diverged: {raised.value}"
    assert store.events(diverged).kind.tolist() == ["queued", "started", "failed"]
    assert [r["step"] for r in logged] == [2, 4, 6] and "eval" not in logged[-1]
    assert [s for r, s in writes if r == diverged] == [2, 4, 6]  # its one report (step 2), then what its error carried
    assert store.scalars(diverged, None).step.tolist() == [2, 4, 6]
    with pytest.raises(sweep_spec.SweepError, match="tuned with early stopping"):  # ASHA's stops are final
        sweep.resume(store, sweep_id)


# -- folder datasets: a path every node sees ------------------------------------------------------------------
def test_a_folder_dataset_is_checked_on_every_ray_node_before_anything_is_recorded(local_ray, store, tmp_path):
    """Trials load a folder dataset where they run: a folder the driver validated but a node cannot read refuses
    the sweep, naming the node and the path, before any run is recorded. A folder every node reads passes."""
    from tests.test_data import make_folder

    folder = make_folder(tmp_path / "images", train_per_class=20, test_per_class=2)
    spec = sweep_spec.SweepSpec(grid={"gamma": [1.0, 2.0]}, base={"dataset": str(folder), "steps": 10, "n1": 4, "m1": 8,
                                                             "device": "cpu"})
    plan = sweep.validate(spec, tmp_path / "cache", store=store)
    sweep.check_folders_on_ray(plan.configs)  # the one node of the local Ray reads it
    image = folder / "train" / "cat" / "000.png"
    node = next(n for n in ray.nodes() if n["Alive"])
    where = f"node {node['NodeID'][:12]} ({node['NodeManagerAddress']})"
    assert ray_executor.unreadable_on_nodes([folder, image]) == [f"{where}: {str(image)!r} is not a folder"]

    folder.rename(tmp_path / "moved")  # validated here, gone where the trials run
    with pytest.raises(sweep_spec.SweepError) as err:
        sweep.submit_ray(store, plan)
    assert str(err.value).startswith("A folder dataset must be readable at the same path on every Ray node")
    assert f"{where}: {str(folder)!r} does not exist" in str(err.value) and err.value.field == "dataset"
    assert store.sweeps().empty and store.runs().empty


def test_stopping_a_tuned_sweep_stops_its_trials_through_tune(local_ray, store, tiny, wait_for):
    """Stop (the store's flag, as `sweep stop` and the page set it) reaches Tune trials through Tune's stopper: each
    ends as stopped on request at its next validation report, with its records up to there."""
    _needs_tune()
    from sslviz.runs import ray_asha

    long = {**tiny, "steps": 100_000, "eval_every": 20}  # never ends on its own here
    plan = sweep.validate(sweep_spec.SweepSpec(grid={"lr": [0.1, 0.05]}, base=long), store=store)
    early = sweep_spec.EarlyStop(grace_period=50_000).options("ray", plan.configs)
    sweep_id, run_ids = sweep.record(store, plan, executor="ray", options={"early_stop": early})
    out = {}
    with _driving(store, sweep_id, lambda: out.update(ray_asha.tune(store, sweep_id))) as driver:
        assert wait_for(lambda: all(store.run(r)["step"] >= 40 for r in run_ids), 120)
        assert sorted(sweep.stop(store, sweep_id)) == run_ids
        driver.join(120)
    assert out == {run_ids[0]: "stopped", run_ids[1]: "stopped"}
    for rid in run_ids:
        row, events = store.run(rid), store.events(rid)
        assert events.kind.tolist() == ["queued", "started", "stopped"]
        assert events.message.iloc[-1] == f"stopped on request at step {row['step']}" and row["step"] % 20 == 0
        steps = store.scalars(rid, None).step.tolist()
        assert steps == list(range(tiny["log_every"], row["step"] + 1, tiny["log_every"]))
