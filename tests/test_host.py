"""The run host alone, with no executor: claim, logs, stop, resume point and end, against a real store and real
training steps (toy2d), as the local worker, the Ray driver and the Tune writer each drive it."""
import pytest

from sslviz.engine.config import TrainConfig
from sslviz.engine.trainer import CheckpointMismatch, train
from sslviz.runs.host import RunHost
from sslviz.runs.store import RunStore

CFG = TrainConfig(dataset="toy2d", steps=40, log_every=5, eval_every=20, device="cpu", batch_size=16, mu=2)


@pytest.fixture()
def store(tmp_path):
    s = RunStore(tmp_path / "runs.db")
    yield s
    s.close()


def _kinds(store, rid):
    return store.events(rid).kind.tolist()


def test_claim_log_stop_resume_and_end(store, tmp_path):
    rid = store.create_run(CFG.to_dict())
    ckpt = tmp_path / "run.pt"
    host = RunHost(store, rid)
    assert host.resume_point(ckpt, CFG) == 0 and _kinds(store, rid) == []  # nothing to resume, nothing logged
    assert host.claim("cpu") and store.run(rid)["status"] == "running"
    host.started("cpu")
    store.request_stop(rid)  # Stop pressed after 10 steps: the trainer polls should_stop at each log step
    summary = train(CFG, on_log=host.log, should_stop=lambda: host.stop_requested(), checkpoint_path=ckpt)
    assert summary["status"] == "stopped" and store.run(rid)["step"] == 5
    assert host.end("stopped") == "stopped" and store.run(rid)["status"] == "stopped"

    store.resume(rid)  # queued again; a new process's host picks it up from the checkpoint
    again = RunHost(store, rid)
    assert again.resume_point(ckpt, CFG) == 5
    assert again.claim("cpu")
    summary = train(CFG, on_log=again.log, should_stop=again.stop_requested, checkpoint_path=ckpt, resume=True)
    assert again.end(summary["status"]) == "finished"
    row = store.run(rid)
    assert row["status"] == "finished" and row["step"] == 40
    assert store.scalars(rid, None).step.tolist() == list(range(5, 41, 5))  # one row a log step, none twice
    assert _kinds(store, rid) == ["started", "stopped", "resumed", "finished"]
    assert "resumed from step 5" in store.events(rid).message.tolist()


def test_a_verdict_given_meanwhile_stays(store):
    rid = store.create_run(CFG.to_dict())
    host = RunHost(store, rid)
    store.request_stop(rid)  # stopped while queued: the claim is refused, and ending it keeps "stopped"
    assert not host.claim("cpu")
    assert host.end("finished") == "stopped" and store.run(rid)["status"] == "stopped"
    with pytest.raises(ValueError):
        host.claim("cpu", strict=True)


def test_a_run_that_fails_before_it_starts_ends_with_its_own_reason(store, tmp_path):
    rid = store.create_run(CFG.to_dict())
    ckpt = tmp_path / "other.pt"
    other = TrainConfig(dataset="toy2d", steps=10, log_every=5, device="cpu", batch_size=16, mu=2, seed=3)
    train(other, checkpoint_path=ckpt)  # another config's checkpoint under this run's name
    host = RunHost(store, rid, where=" (Ray)", placeholder="ray")
    with pytest.raises(CheckpointMismatch):
        host.resume_point(ckpt, CFG)
    assert host.end("failed", "cannot resume: another config's checkpoint") == "failed"
    row = store.run(rid)
    assert row["status"] == "failed" and row["error"] == "cannot resume: another config's checkpoint"


def test_a_run_that_logged_but_left_no_checkpoint_restarts_from_scratch(store, tmp_path):
    rid = store.create_run(CFG.to_dict())
    host = RunHost(store, rid, where=" (Ray)")
    assert host.claim("cpu")
    train(CFG, on_log=host.log, should_stop=lambda: True)  # logged step 5, no checkpoint kept
    host.end("stopped")
    store.resume(rid)
    again = RunHost(store, rid, where=" (Ray)")
    assert again.resume_point(tmp_path / "absent.pt", CFG, hint=" (keep one)") == 0
    assert store.scalars(rid, None).empty and store.run(rid)["step"] == 0
    assert store.events(rid).message.iloc[-1] == "no checkpoint reachable (Ray) (keep one): restarted from step 0"


def test_keep_alive_beats_and_notices_a_run_taken_from_it(store, monkeypatch):
    from sslviz.runs import host as host_mod

    monkeypatch.setattr(host_mod, "HEARTBEAT_EVERY", 0.05)
    rid = store.create_run(CFG.to_dict())
    host = RunHost(store, rid)
    assert host.claim("cpu")
    claimed_at = store.run(rid)["heartbeat"]
    beat = host.keep_alive()
    try:
        for _ in range(100):
            if store.run(rid)["heartbeat"] > claimed_at:
                break
            beat.done.wait(0.02)
        assert store.run(rid)["heartbeat"] > claimed_at and not host.lost.is_set()
        store.lose(rid, "a reader gave up on it")
        assert host.lost.wait(5)
    finally:
        beat.done.set()
    assert host.end("finished") == "failed" and store.run(rid)["status"] == "failed"
