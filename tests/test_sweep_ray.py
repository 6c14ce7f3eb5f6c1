"""Sweeps on a real local Ray instance: trial processes have no store, yet every record reaches it exactly once;
stop and resume go through Ray. One Ray for the whole test session (a few seconds to start)."""
from __future__ import annotations

import threading

import pytest

ray = pytest.importorskip("ray")

from sslviz import ray_executor, sweep  # noqa: E402


@pytest.fixture(scope="session")
def local_ray():
    """``ray.init(num_cpus=2)`` once per session (a cluster: set RAY_ADDRESS, the same code connects to it)."""
    if not ray.is_initialized():
        ray_executor.connect(num_cpus=2)
    yield ray
    ray.shutdown()


def test_trial_processes_have_no_store(local_ray):
    actor = ray.remote(ray_executor.Trial).options(num_cpus=1).remote()
    try:
        assert ray.get(actor.probe.remote()).startswith("no store: Run store /dev/null/")
    finally:
        ray.kill(actor)


def test_ray_sweep_streams_every_record_exactly_once(local_ray, store, tiny):
    plan = sweep.validate(sweep.SweepSpec(grid={"preset": ["fixmatch", "balanced"]}, base=tiny), store=store)
    sweep_id, run_ids, results = sweep.submit_ray(store, plan)
    assert results == {run_ids[0]: "finished", run_ids[1]: "finished"}
    n_logs = tiny["steps"] // tiny["log_every"]
    from sslviz.trainer import train

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
    res = sweep.results(store, sweep_id)
    assert res[list(sweep.METRICS)].notna().all().all()


def test_stop_and_resume_a_ray_sweep(local_ray, store, tiny, wait_for):
    long = {**tiny, "steps": 100_000, "eval_every": 50_000, "checkpoint_every": 10}  # never ends on its own here
    plan = sweep.validate(sweep.SweepSpec(grid={"gamma": [5.0, 10.0]}, base=long), store=store)
    sweep_id, run_ids = sweep.record(store, plan, executor="ray")
    out = {}
    driver = threading.Thread(target=lambda: out.update(ray_executor.drive(store, sweep_id)))
    driver.start()
    assert wait_for(lambda: all(store.run(r)["step"] >= 20 for r in run_ids), 120)
    assert all(store.run(r)["status"] == "running" for r in run_ids)
    assert sorted(sweep.stop(store, sweep_id)) == run_ids
    driver.join(120)
    assert out == {run_ids[0]: "stopped", run_ids[1]: "stopped"}
    stopped_at = {r: store.run(r)["step"] for r in run_ids}
    assert sorted(sweep.resume(store, sweep_id)) == run_ids
    assert all(store.run(r)["status"] == "queued" for r in run_ids)
    driver = threading.Thread(target=lambda: out.update(ray_executor.drive(store, sweep_id)))
    driver.start()
    assert wait_for(lambda: all(store.run(r)["step"] > stopped_at[r] for r in run_ids), 120)
    for r in run_ids:
        assert store.events(r).message.str.contains(f"resuming on Ray from step {stopped_at[r]}").any()
    sweep.stop(store, sweep_id)
    driver.join(120)
    assert set(out.values()) == {"stopped"}
    steps = store.scalars(run_ids[0], None).step
    assert steps.is_unique and steps.is_monotonic_increasing  # no record written twice across the resume
