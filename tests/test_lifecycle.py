"""Run lifecycle: heartbeat and 'process lost', SIGKILL + resume, graceful stop, checkpoints, the CPU slot queue."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sslviz import cli
from sslviz.engine import trainer
from sslviz.runs import worker
from sslviz.engine.config import TrainConfig
from sslviz.runs.lifecycle import NoSuchRun, TransitionRefused
from sslviz.engine.techniques import cosine_lr

ROOT = Path(__file__).resolve().parent.parent


def steps_of(store, run_id, table="scalars"):
    """Steps with rows in ``table``; for "evals", the validation evaluations (test ones come at the end only)."""
    if table == "evals":
        return store.evals(run_id, split="val").step.tolist()
    return getattr(store, table)(run_id, None).step.tolist()


def expected_steps(cfg):
    return list(range(cfg.log_every, cfg.steps + 1, cfg.log_every))


def events(store, run_id):
    return store.events(run_id).kind.tolist()


# -- heartbeat / process lost (no real training) ----------------------------------------------------


def _running(store, tiny, pid, heartbeat):
    rid = store.create_run(TrainConfig(**tiny).to_dict(), pid=pid)  # start_foreground: running in ``pid``
    store.update_run(rid, device="cpu", heartbeat=heartbeat, started=heartbeat)
    return rid


def test_reap_keeps_live_runs_and_fails_silent_or_dead_ones(store, tiny):
    now = time.time()
    alive = _running(store, tiny, os.getpid(), now)
    silent = _running(store, tiny, os.getpid(), now - worker.LOST_AFTER - 1)
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = _running(store, tiny, proc.pid, now)
    store.log(dead, {"step": 5, "wall": 0.1, "scalars": {"loss": 1.0}})
    worker.reap(store, spawn=False)
    assert store.run(alive)["status"] == "running"
    for rid in (silent, dead):
        row = store.run(rid)
        assert (row["status"], row["error"]) == ("failed", worker.PROCESS_LOST) and row["finished"]
    assert steps_of(store, dead) == [5]  # metrics recorded before the death stay


def test_concurrent_reaps_start_each_queued_run_once(store, tiny, monkeypatch):
    """Two workers finishing together both call reap: no run may be spawned twice, no slot overfilled."""
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "2")
    spawned = []

    class SlowPopen:  # a process start slow enough for the reaps to interleave
        def __init__(self, args, **kwargs):
            time.sleep(0.3)
            spawned.append(int(args[-1]))
            self.pid = os.getpid()

    monkeypatch.setattr(worker.subprocess, "Popen", SlowPopen)
    ids = [store.create_run(TrainConfig(**tiny).to_dict()) for _ in range(3)]
    threads = [threading.Thread(target=worker.reap, args=(store,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(spawned) == ids[:2]
    assert [store.run(i)["status"] for i in ids] == ["running", "running", "queued"]


def test_resume_refuses_active_or_checkpointless_runs(store, tiny, monkeypatch):
    rid = store.create_run(TrainConfig(**tiny).to_dict())
    with pytest.raises(TransitionRefused, match=f"Run {rid} is queued; resume needs a stopped or failed run.$"):
        worker.resume(store, rid)
    store.request_stop(rid)
    store.update_run(rid, step=5)  # it had logged, then lost what it logged since its (missing) checkpoint
    with pytest.raises(ValueError, match="has no checkpoint to resume from"):
        worker.resume(store, rid)
    with pytest.raises(NoSuchRun, match="There is no run 999"):
        worker.resume(store, 999)


def test_a_run_stopped_before_it_logged_anything_resumes_from_step_0(store, tiny, monkeypatch):
    """Stopped while queued: nothing recorded, nothing to lose, so Resume queues it again (as a sweep's resume does),
    and the Live page says so instead of promising a checkpoint."""
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # stays queued
    rid = store.create_run(TrainConfig(**tiny).to_dict())
    store.request_stop(rid)
    assert worker.never_started(store.run(rid))
    worker.resume(store, rid)
    assert store.run(rid)["status"] == "queued"
    assert store.events(rid).message.iloc[-1] == "queued again: it had not started"


# -- in-process worker: stop, SIGTERM, resume, failures ---------------------------------------------


def test_stop_is_graceful_and_resume_continues(store, tiny):
    cfg = TrainConfig(**tiny)
    rid = store.create_run(cfg.to_dict())
    status = worker.run_worker(store, rid, progress=lambda step: step == 10 and store.request_stop(rid))  # seen at 15
    row = store.run(rid)
    assert status == row["status"] == "stopped" and row["error"] is None and row["step"] == 15
    assert steps_of(store, rid) == [5, 10, 15]  # the last interval was flushed
    ckpt = trainer.load_checkpoint(worker.checkpoint_path(store, rid))
    assert ckpt["step"] == 15 and TrainConfig.from_yaml(ckpt["config"]) == cfg

    assert cli.main(["--store", str(store.path), "resume", str(rid)]) == 0
    row = store.run(rid)
    assert row["status"] == "finished" and row["step"] == cfg.steps
    assert steps_of(store, rid) == expected_steps(cfg)  # no gap, no duplicate
    assert steps_of(store, rid, "evals") == [5, 15, 20, 40]  # first log step, the stop, then every eval_every
    walls = store.scalars(rid, None).wall
    assert walls.is_monotonic_increasing  # wall time continues across the resume
    assert "resumed" in events(store, rid)


def test_sigterm_stops_gracefully(store, tiny):
    rid = store.create_run(TrainConfig(**tiny).to_dict())
    # SIGTERM during step 10's logging; the loop sees it at the next log step, 15.
    status = worker.run_worker(store, rid, progress=lambda step: step == 10 and os.kill(os.getpid(), signal.SIGTERM))
    assert status == "stopped" and store.run(rid)["step"] == 15
    assert trainer.load_checkpoint(worker.checkpoint_path(store, rid))["step"] == 15
    assert store.evals(rid, split="test").step.tolist() == [15]  # a stopped run reports its test score


def test_checkpoints_every_n_steps_and_load_weights_only(store, tiny, monkeypatch):
    cfg = TrainConfig(**{**tiny, "checkpoint_every": 10})
    rid = store.create_run(cfg.to_dict())
    saved = []
    real_save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda path, state: (saved.append(state["step"]),
                                                                         real_save(path, state)))
    assert worker.run_worker(store, rid) == "finished"
    assert saved == [10, 20, 30, 40]
    path = worker.checkpoint_path(store, rid)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and containers only
    assert ckpt["step"] == 40 and set(ckpt) >= {"format", "model", "ema", "optimizer", "techniques", "generator", "config"}
    assert not list(path.parent.glob("*.tmp"))


class _FullDisk:
    """``open`` for :mod:`sslviz.engine.files` on a disk that fills up after ``room`` files: a file written then
    takes 100 bytes and gets ENOSPC (as a 2 MB tmpfs does); the rest of the machine's files are untouched."""

    def __init__(self, real_open, room: int = 0):
        self.real_open, self.room = real_open, room

    def __call__(self, path, mode="r", *args, **kwargs):
        f = self.real_open(path, mode, *args, **kwargs)
        self.room -= 1
        if self.room >= 0:
            return f
        write = f.write

        def full(data):
            write(bytes(data)[:100])
            raise OSError(28, "No space left on device")

        f.write = full
        return f


def test_checkpoint_write_is_atomic_and_a_full_disk_is_named(tmp_path, monkeypatch):
    from sslviz.engine import files

    path = tmp_path / "run.pt"
    trainer.save_checkpoint(path, {"step": 10, "w": torch.ones(3)})
    monkeypatch.setattr(files, "open", _FullDisk(open), raising=False)
    with pytest.raises(files.DiskFull) as info:
        trainer.save_checkpoint(path, {"step": 20, "w": torch.zeros(3)})
    assert re.fullmatch(rf"The disk is full: cannot write in {re.escape(str(tmp_path))} \([0-9.]+ MiB free\)\. "
                        r"Free some space there, then try again\.", str(info.value)), str(info.value)
    assert trainer.load_checkpoint(path)["step"] == 10  # the previous one is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary file keeps the space


def test_a_full_disk_fails_the_run_with_that_message_and_leaves_no_temporary_file(store, tiny, monkeypatch,
                                                                                  capsys):
    """The run fails with 'The disk is full ...' (not torch's 'unexpected pos', not 'process lost'); no
    ``*.tmp`` is left by the checkpoint or devices.json; resume on the full disk says the same, no traceback;
    ``delete`` removes a temporary checkpoint a killed writer left."""
    from sslviz.engine import files

    rid = store.create_run(TrainConfig(**tiny).to_dict())
    monkeypatch.setattr(files, "open", _FullDisk(open, room=2), raising=False)  # devices.json, the first checkpoint
    assert worker.run_worker(store, rid) == "failed"
    assert trainer.load_checkpoint(worker.checkpoint_path(store, rid))["step"] == tiny["checkpoint_every"]
    row = store.run(rid)
    assert row["error"].startswith(f"The disk is full: cannot write in {worker.checkpoint_path(store, rid).parent} (")
    assert not list(store.path.parent.rglob("*.tmp"))
    assert cli.main(["--store", str(store.path), "resume", str(rid)]) == 1
    out = capsys.readouterr()
    assert f"run {rid} failed: The disk is full: cannot write in" in out.out and "Traceback" not in out.out + out.err
    assert store.run(rid)["status"] == "failed"

    monkeypatch.undo()
    ckpt = worker.checkpoint_path(store, rid)
    stale = [files.temporary_name(ckpt), ckpt.with_name(ckpt.name + ".tmp")]  # this version's and an older one's
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    worker.delete(store, rid)
    assert not any(path.exists() for path in stale)


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoint_with_pickled_object_is_refused(store, tiny):
    path = worker.checkpoint_path(store, 1)
    path.parent.mkdir(parents=True)
    torch.save({"step": 5, "model": Payload()}, path)
    with pytest.raises(trainer.CheckpointMismatch, match=rf"^Checkpoint {re.escape(str(path))} cannot be loaded: it "
                       r"names Python code \(print\), which no sslviz checkpoint holds: it was not written by sslviz, or "
                       r"was altered\. Nothing in it was run\.$"):
        trainer.load_checkpoint(path)

    # The same file met by a resume: the run fails with the reason, its metrics stay.
    rid = store.create_run(TrainConfig(**tiny).to_dict())
    assert rid == 1
    store.log(rid, {"step": 5, "wall": 0.1, "scalars": {"loss": 1.0}})
    assert worker.run_worker(store, rid) == "failed"
    row = store.run(rid)
    assert row["status"] == "failed" and "names Python code (print)" in row["error"]
    assert steps_of(store, rid) == [5]


def test_divergence_fails_the_run_and_keeps_metrics(store, tiny):
    cfg = TrainConfig(**{**tiny, "lr": 10.0, "steps": 60})  # huge lr: the toy2d MLP blows up after step 5
    rid = store.create_run(cfg.to_dict())
    assert worker.run_worker(store, rid) == "failed"
    row = store.run(rid)
    assert row["error"].startswith("Training diverged at step ")
    k = int(row["error"].split("step ")[1].split(":")[0])
    assert "Lower lr or lambda_u" in row["error"]
    assert steps_of(store, rid) == list(range(5, k, 5)) and len(steps_of(store, rid)) >= 1


def test_nan_from_the_model_fails_the_run(store, tiny, monkeypatch):
    """A model that emits NaN from step 12 on: the failure names the first log step after it."""
    real_build = trainer.build_model
    calls = {"n": 0}

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        head = model.fc
        real_forward = head.forward

        def forward(x):
            calls["n"] += head.training  # evaluation forwards do not count
            out = real_forward(x)
            return out * float("nan") if calls["n"] > 2 * 12 else out  # 2 training forwards per step

        head.forward = forward
        return model

    monkeypatch.setattr(trainer, "build_model", build)
    cfg = TrainConfig(**{**tiny, "ema_decay": 0.0})
    rid = store.create_run(cfg.to_dict())
    assert worker.run_worker(store, rid) == "failed"
    assert store.run(rid)["error"].startswith("Training diverged at step 15: the loss became nan")
    assert steps_of(store, rid) == [5, 10]


def test_cuda_out_of_memory_gives_advice(store, tiny, monkeypatch):
    def oom(cfg, *, on_log, **kwargs):
        on_log({"step": 5, "wall": 0.1, "scalars": {"loss": 1.0}})
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "train", oom)  # run_worker imports it when it runs
    rid = store.create_run(TrainConfig(**tiny).to_dict())
    assert worker.run_worker(store, rid) == "failed"
    row = store.run(rid)
    assert row["error"] == ("CUDA out of memory with batch_size=16, mu=2: lower batch_size or mu, "
                            "or pick a smaller model.")
    assert steps_of(store, rid) == [5]


def test_unexpected_error_is_reported_with_traceback(store, tiny, monkeypatch):
    def boom(cfg, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer, "train", boom)
    rid = store.create_run(TrainConfig(**tiny).to_dict())
    assert worker.run_worker(store, rid) == "failed"
    assert store.run(rid)["error"] == "RuntimeError: boom"
    assert "traceback" in events(store, rid)


# -- real worker processes ---------------------------------------------------------------------------


def test_sigkill_is_reported_lost_and_resume_matches_an_unbroken_run(store, tiny, wait_for):
    # Long enough (~2-3 s of toy2d steps) that the kill always lands mid-run, even on a loaded machine.
    cfg = TrainConfig(**{**tiny, "steps": 2000, "eval_every": 400, "checkpoint_every": 20})
    rid = worker.submit(store, cfg)
    assert store.run(rid)["status"] == "running"
    row = wait_for(lambda: (r := store.run(rid))["step"] >= 25 and r, timeout=90)
    assert row, f"worker never got going: {worker.log_path(store, rid).read_text()}"
    assert row["status"] == "running"
    os.kill(int(row["pid"]), signal.SIGKILL)
    killed = time.monotonic()

    def lost():
        worker.reap(store, spawn=False)
        return store.run(rid)["status"] == "failed"

    assert wait_for(lost, timeout=10, every=0.2)
    lost_after = time.monotonic() - killed
    row = store.run(rid)
    assert row["error"] == worker.PROCESS_LOST and lost_after < 10
    before = steps_of(store, rid)
    assert before == list(range(5, before[-1] + 1, 5)) and before[-1] >= 25  # kept

    ckpt = torch.load(worker.checkpoint_path(store, rid), map_location="cpu", weights_only=True)
    assert ckpt["step"] % 20 == 0 and ckpt["step"] >= 20

    # `python -m sslviz --store X resume RUN`, in-process (a second interpreter would only add ~5 s of imports;
    # the worker above already ran through `python -m sslviz worker`).
    assert cli.main(["--store", str(store.path), "resume", str(rid)]) == 0
    row = store.run(rid)
    assert row["status"] == "finished" and row["error"] is None and row["step"] == 2000
    assert steps_of(store, rid) == expected_steps(cfg)  # every log step exactly once
    assert steps_of(store, rid, "evals") == [5, 400, 800, 1200, 1600, 2000]  # the first log step too
    assert len(store.class_train(rid, None)) == 400 * 6
    assert f"resumed from step {ckpt['step']}" in store.events(rid).message.tolist()

    # The same config trained without interruption, on one thread like the worker.
    torch.set_num_threads(1)
    unbroken = trainer.train(cfg)
    resumed_bacc = store.evals(rid, split="val").balanced_accuracy.iloc[-1]
    assert abs(resumed_bacc - unbroken["val_balanced_accuracy"]) <= 0.1
    print(f"\nSIGKILL -> 'process lost' in {lost_after:.2f} s; validation balanced accuracy resumed "
          f"{resumed_bacc:.4f} vs unbroken {unbroken['val_balanced_accuracy']:.4f}")


def test_three_concurrent_runs_share_two_cpu_slots(store, tiny, wait_for, monkeypatch):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "2")
    cfgs = [TrainConfig(**{**tiny, "steps": s, "lr": lr, "seed": i, "name": f"run{i}", "eval_every": 10})
            for i, (s, lr) in enumerate([(20, 0.03), (25, 0.02), (30, 0.01)])]
    ids = [worker.submit(store, cfg) for cfg in cfgs]
    assert [store.run(i)["status"] for i in ids] == ["running", "running", "queued"]
    statuses = []

    def done():
        # One query: three store.run calls could see run 0 running, then run 2 started after run 0 finished.
        now = store.runs().set_index("id").loc[ids, "status"].tolist()
        statuses.append(now)
        assert now.count("running") <= 2
        return all(s in ("finished", "failed", "stopped") for s in now)

    assert wait_for(done, timeout=150, every=0.2), [worker.log_path(store, i).read_text() for i in ids]
    assert [store.run(i)["status"] for i in ids] == ["finished"] * 3
    assert any(s[2] == "running" for s in statuses)  # the queued run was started by a finishing worker
    for rid, cfg in zip(ids, cfgs):
        sc = store.scalars(rid, None)
        assert len(sc) == cfg.steps // cfg.log_every
        assert sc.step.tolist() == expected_steps(cfg)
        # Each run's lr column follows its own schedule: nobody wrote into another run's rows.
        np.testing.assert_allclose(sc.lr, [cosine_lr(s - 1, cfg.steps, cfg.lr) for s in sc.step])
        assert len(store.class_train(rid, None)) == len(sc) * 6
        evals = sorted({cfg.log_every, *range(cfg.eval_every, cfg.steps + 1, cfg.eval_every), cfg.steps})  # first log step, last step
        assert steps_of(store, rid, "evals") == evals
        assert store.run(rid)["config"]["name"] == cfg.name
        log = worker.log_path(store, rid).read_text()
        assert "locked" not in log and "Traceback" not in log, log
    assert len({store.run(i)["pid"] for i in ids}) == 3


# -- found in review: queued stop, stale checkpoints, a worker given up on -------------------------


def test_stopping_a_queued_run_stops_it_and_it_never_starts(store, tiny, monkeypatch):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # nothing may start
    rid = worker.submit(store, TrainConfig(**tiny))
    assert store.run(rid)["status"] == "queued"
    assert store.request_stop(rid) is True
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "2")
    worker.reap(store)
    assert store.run(rid)["status"] == "stopped"
    with pytest.raises(TransitionRefused, match="is stopped; stop needs a queued or running run"):
        store.request_stop(rid)  # nothing left to stop


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-only host's refusal")
def test_a_run_that_cannot_start_here_fails_with_its_own_reason_and_never_blocks_the_queue(store, tiny, monkeypatch,
                                                                                         capsys):
    """A 'device: cuda' run queued on a CPU-only host (the store moved, or another host queued it) fails with its
    own reason, and the run behind it starts; submitting one, in the background or the foreground, is refused
    before anything is recorded; a bad SSLVIZ_CPU_SLOTS is named, not a CUDA error."""
    spawned = []
    monkeypatch.setattr(worker, "_spawn", lambda s, rid, device: spawned.append(rid))
    blocked = store.create_run(TrainConfig(**{**tiny, "device": "cuda"}).to_dict())  # queued as by another host
    behind = store.create_run(TrainConfig(**tiny).to_dict())
    assert worker.start_queued(store) == [behind] and spawned == [behind]
    row = store.run(blocked)
    assert row["status"] == "failed"
    assert row["error"] == ("cannot start here: The 'device' parameter is 'cuda' but no CUDA GPU is available here; "
                            "use 'auto' or 'cpu'.")
    assert store.events(blocked).message.iloc[-1] == row["error"]

    for background in (["--background"], []):
        code = cli.main(["--store", str(store.path), "train", "--preset", "fixmatch", "--dataset", "toy2d",
                         "--device", "cuda", "--steps", "20", *background])
        assert code == 2
        assert "'device' parameter is 'cuda' but no CUDA GPU" in capsys.readouterr().err
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "abc")
    assert cli.main(["--store", str(store.path), "train", "--dataset", "toy2d", "--steps", "20", "--background"]) == 2
    assert "SSLVIZ_CPU_SLOTS must be a whole number >= 0 (simultaneous runs); got 'abc'" in capsys.readouterr().err
    assert sorted(store.runs().id) == [blocked, behind]  # nothing more was recorded
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "2")
    with pytest.raises(ValueError, match=f"Run {blocked} cannot resume here: The 'device' parameter is 'cuda'"):
        worker.resume(store, blocked)


def test_a_run_handed_to_a_warm_worker_that_died_goes_on_at_the_next_cli_command(store, tiny, monkeypatch, capsys):
    """The warm worker dies after the hand-over, before forking: the next CLI command (``list`` here, with no
    dashboard open) starts the run in a cold worker and removes the hand-over file, instead of the run reading
    "running, step 0" until its start-up grace runs out and then "process lost"."""
    monkeypatch.setenv(worker.WARM_ENV, "1")
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "2")
    spare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker.spare_dir(store).mkdir(parents=True)
    (worker.spare_dir(store) / str(spare.pid)).touch()  # a ready warm worker
    spawned, real_popen = [], subprocess.Popen

    def popen(args, **kwargs):  # a cold worker is recorded, not started (git, asked for the code version, runs)
        if "worker" not in args:
            return real_popen(args, **kwargs)
        spawned.append(int(args[-1]))
        return type("Started", (), {"pid": os.getpid()})

    monkeypatch.setattr(worker.subprocess, "Popen", popen)
    rid = store.create_run(TrainConfig(**tiny).to_dict())
    assert worker.start_queued(store) == [rid] and spawned == []  # handed over, not spawned
    handed = worker.handed_dir(store) / str(rid)
    assert handed.exists()
    spare.kill()
    spare.wait()
    assert cli.main(["--store", str(store.path), "list"]) == 0
    assert spawned == [rid] and not handed.exists()
    row = store.run(rid)
    assert (row["status"], row["pid"]) == ("running", os.getpid())


def test_checkpoint_of_another_config_is_not_resumed(store, tiny):
    """A checkpoint of another config under a run's name is never continued from: a stale one (left by an
    older store file of the same name, at the id the next run gets) is deleted when the run is recorded, and
    one that appears later fails the run with CheckpointMismatch, never a silent restart from step 0."""
    first = store.create_run(TrainConfig(**tiny).to_dict())
    assert worker.run_worker(store, first) == "finished"
    foreign = worker.checkpoint_path(store, first).read_bytes()  # step 40 of seed 0
    other = TrainConfig(**{**tiny, "seed": 7})

    # (1) stale: the next id's checkpoint path already holds the foreign checkpoint when the run is recorded.
    stale = worker.checkpoint_path(store, first + 1)
    stale.write_bytes(foreign)
    rid = worker.record(store, other)
    assert rid == first + 1 and not stale.exists()
    assert worker.run_worker(store, rid) == "finished"
    assert "resumed" not in events(store, rid) and "started" in events(store, rid)
    assert steps_of(store, rid) == expected_steps(other)  # trained from step 0, not continued from step 40

    # (2) foreign: it appears under a recorded run's name before its worker starts; the run fails saying why.
    rid = worker.record(store, other)
    worker.checkpoint_path(store, rid).write_bytes(foreign)
    assert worker.run_worker(store, rid) == "failed"
    row = store.run(rid)
    assert row["error"].startswith("The checkpoint belongs to another config (seed=7 (checkpoint: 0))")
    assert steps_of(store, rid) == [] and "resumed" not in events(store, rid)
    # and resuming it refuses with the same reason, before touching its status
    with pytest.raises(trainer.CheckpointMismatch, match=f"Run {rid} cannot resume: The checkpoint belongs to another"):
        worker.resume(store, rid)
    assert store.run(rid)["status"] == "failed"


def test_a_worker_marked_lost_stops_and_keeps_the_verdict(store, tiny, monkeypatch):
    monkeypatch.setattr(worker, "HEARTBEAT_EVERY", 0.05)
    cfg = TrainConfig(**{**tiny, "steps": 100_000, "eval_every": 100_000})
    rid = store.create_run(cfg.to_dict())

    def give_up(step):  # a reaper on another machine decided this run was lost
        if step == 20:
            store.finish_run(rid, "failed", worker.PROCESS_LOST)

    assert worker.run_worker(store, rid, progress=give_up) == "failed"
    row = store.run(rid)
    assert row["status"] == "failed" and row["error"] == worker.PROCESS_LOST and row["step"] < 100_000


def test_cli_stop_of_unknown_or_finished_run_is_an_error(store, tiny, capsys):
    from sslviz import cli

    assert cli.main(["--store", str(store.path), "stop", "999"]) == 2
    assert "There is no run 999" in capsys.readouterr().err
    rid = store.create_run(TrainConfig(**tiny).to_dict(), pid=os.getpid())
    store.finish_run(rid, "finished")
    assert cli.main(["--store", str(store.path), "stop", str(rid)]) == 2
    assert capsys.readouterr().err == f"sslviz: error: Run {rid} is finished; stop needs a queued or running run.\n"


# -- issue 12: one state machine, walked pair by pair, for the store, the CLI and the UI alike -------

import sqlite3  # noqa: E402

from sslviz.runs import lifecycle  # noqa: E402
from sslviz.runs.store import RunStore  # noqa: E402

STATUSES = ("queued", "running", "finished", "failed", "stopped")
# The expected machine, written out here rather than read from lifecycle.TRANSITIONS (so a wrong table fails):
# (status, action) -> status after it ("deleted" when the run is gone); a pair not listed is refused.
MACHINE = {
    ("queued", "claim"): "running",
    **{("running", a): s for a, s in (("finish", "finished"), ("stop", "stopped"), ("fail", "failed"),
                                      ("lose", "failed"))},
    ("queued", "request_stop"): "stopped", ("running", "request_stop"): "running", ("queued", "refuse"): "failed",
    ("stopped", "resume"): "queued", ("failed", "resume"): "queued",
    ("stopped", "resume_foreground"): "running", ("failed", "resume_foreground"): "running",
    **{(s, a): "deleted" if a == "delete" else s for s in ("finished", "failed", "stopped")
       for a in ("delete", "archive", "unarchive")},
}
NEEDS = {"claim": "start needs a queued run", "finish": "finish needs a running run", "stop": "stop needs a running run",
         "fail": "fail needs a running run", "lose": None, "refuse": None, "request_stop": "stop needs a queued or running run",
         "resume": "resume needs a stopped or failed run", "resume_foreground": "resume needs a stopped or failed run",
         "delete": "delete needs a finished, failed or stopped run", "archive": "archive needs a finished, failed or "
         "stopped run", "unarchive": "unarchive needs a finished, failed or stopped run"}


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    """A checkpoint of the tiny config (trained once), copied under each run that may resume."""
    from tests.conftest import TINY

    s = RunStore(tmp_path_factory.mktemp("ckpt") / "runs.db")
    rid = s.create_run(TrainConfig(**TINY).to_dict())
    assert worker.run_worker(s, rid) == "finished"
    data = worker.checkpoint_path(s, rid).read_bytes()
    s.close()
    return data


def in_status(store, tiny, status, checkpoint=None) -> int:
    """A run brought into ``status`` through the transitions themselves (a running one runs in this process)."""
    cfg = TrainConfig(**tiny).to_dict()
    if status == "queued":
        rid = store.create_run(cfg)
    else:
        rid = store.create_run(cfg, pid=os.getpid())
        if status != "running":
            store.finish_run(rid, status, "boom" if status == "failed" else None)
    if checkpoint is not None:
        path = worker.checkpoint_path(store, rid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(checkpoint)
    return rid


def raw_row(store, rid) -> dict | None:
    """The runs row as the file holds it (no liveness check); ``store`` is a RunStore or a path."""
    conn = sqlite3.connect(getattr(store, "path", store))
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (rid,)).fetchone()
        return None if row is None else dict(row)
    finally:
        conn.close()


def raw_status(store, rid):
    row = raw_row(store, rid)
    return "deleted" if row is None else row["status"]


STORE_ACTIONS = {
    "claim": lambda s, rid: s.claim_run(rid, pid=os.getpid() + 10**6, device="cpu"),  # a worker process taking it
    "finish": lambda s, rid: s.finish_run(rid, "finished"),
    "stop": lambda s, rid: s.finish_run(rid, "stopped"),
    "fail": lambda s, rid: s.finish_run(rid, "failed", "boom"),
    "lose": lambda s, rid: s.lose(rid, "test") or None,
    "refuse": lambda s, rid: s.refuse_queued(rid, "test") or None,
    "request_stop": lambda s, rid: s.request_stop(rid),
    "resume": lambda s, rid: worker.resume(s, rid),
    "resume_foreground": lambda s, rid: s.resume(rid, pid=os.getpid()),
    "delete": lambda s, rid: worker.delete(s, rid),
    "archive": lambda s, rid: s.set_archived(rid, True),
    "unarchive": lambda s, rid: s.set_archived(rid, False),
}


def test_the_machine_is_the_table():
    """lifecycle.TRANSITIONS says exactly what MACHINE says, pair by pair."""
    actual = {(s, a): ("deleted" if t.moves[s] is None else lifecycle.target(a, s))
              for a, t in lifecycle.TRANSITIONS.items() for s in t.sources}
    assert actual == MACHINE


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", list(STORE_ACTIONS))
def test_every_status_action_pair_through_the_store(store, tiny, checkpoint_bytes, monkeypatch, status, action):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # a queued run stays queued: nothing is spawned
    rid = in_status(store, tiny, status, checkpoint_bytes)
    before = raw_row(store, rid)
    expected = MACHINE.get((status, action))
    if action in ("lose", "refuse") and expected is None:  # no error: another reader got there first
        assert STORE_ACTIONS[action](store, rid) is None and raw_row(store, rid) == before
        return
    if expected is None:
        with pytest.raises(lifecycle.TransitionRefused) as info:
            STORE_ACTIONS[action](store, rid)
        assert str(info.value).startswith(f"Run {rid} is {status}; {NEEDS[action]}")
        assert raw_row(store, rid) == before  # refused: nothing changed
        return
    STORE_ACTIONS[action](store, rid)
    assert raw_status(store, rid) == expected
    if action == "request_stop":
        assert store.stop_requested(rid)
    if action in ("archive", "unarchive"):
        assert store.run(rid)["archived"] == (action == "archive")
        assert (rid in store.runs().id.tolist()) == (action == "unarchive")
        assert rid in store.runs(include_archived=True).id.tolist()


CLI_ACTIONS = {"stop": ["stop"], "resume": ["resume", "--background"], "resume_foreground": ["resume"],
               "archive": ["archive"], "unarchive": ["unarchive"], "delete": ["delete"]}
CLI_NEEDS = {"stop": "request_stop"}  # the CLI command -> the action of the machine


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("command", list(CLI_ACTIONS))
def test_every_status_action_pair_through_the_cli(store, tiny, checkpoint_bytes, monkeypatch, capsys, status, command):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")
    rid = in_status(store, tiny, status, checkpoint_bytes)
    before = raw_row(store, rid)
    action = CLI_NEEDS.get(command, command)
    expected = MACHINE.get((status, action))
    code = cli.main(["--store", str(store.path), *CLI_ACTIONS[command][:1], str(rid), *CLI_ACTIONS[command][1:]])
    err = capsys.readouterr().err
    if expected is None:
        assert code == 2 and err.startswith(f"sslviz: error: Run {rid} is {status}; {NEEDS[action]}")
        assert raw_row(store, rid) == before
        return
    assert code == 0, err
    if command == "resume_foreground":  # it ran here, from the checkpoint of its last step, to the end
        expected = "finished"
        assert f"resumed from step {tiny['steps']}" in store.events(rid).message.tolist()
    assert raw_status(store, rid) == expected
    if command == "delete":
        assert not worker.checkpoint_path(store, rid).exists()


UI_ACTIONS = {"resume": "resume", "delete": "delete", "request_stop": "stop", "archive": "archive",
              "unarchive": "unarchive"}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", list(UI_ACTIONS))
def test_every_status_action_pair_through_the_ui(store, tiny, checkpoint_bytes, monkeypatch, status, action):
    """The pages' entry points: ui.resume (Resume), ui.delete (Compare's Delete), store.request_stop (Stop),
    ui.set_archived (Archive / Unarchive)."""
    from sslviz.dashboard import ui

    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")
    shown = []
    monkeypatch.setattr(ui.st, "error", lambda text, *a, **k: shown.append(str(text)))
    rid = in_status(store, tiny, status, checkpoint_bytes)
    before = raw_row(store, rid)
    expected = MACHINE.get((status, action))
    message = f"Run {rid} is {status}; {NEEDS[action]}"
    if action == "resume":
        assert ui.resume(store, rid) is (expected is not None)
        assert [m[:len(message)] for m in shown] == ([] if expected else [message])
    elif action in ("delete", "archive", "unarchive"):
        out = ui.delete(store, rid) if action == "delete" else ui.set_archived(store, rid, action == "archive")
        assert (out is None) if expected else out.startswith(message)
    else:
        if expected is None:
            with pytest.raises(lifecycle.TransitionRefused, match=re.escape(message)):
                store.request_stop(rid)
        else:
            assert store.request_stop(rid) is True
    if expected is None:
        assert raw_row(store, rid) == before
    else:
        assert raw_status(store, rid) == expected


def test_ui_submit_records_a_queued_run(store, tiny, monkeypatch):
    from sslviz.dashboard import ui

    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")
    rid = ui.submit(store, TrainConfig(**tiny))
    assert raw_status(store, rid) == "queued" and store.run(rid)["executor"] == "local"


def test_missing_run_id_is_one_message_for_every_command(store, capsys):
    for command in ("show", "stop", "resume", "archive", "unarchive", "delete", "export", "worker"):
        assert cli.main(["--store", str(store.path), command, "42"]) == 2, command
        assert capsys.readouterr().err == f"sslviz: error: There is no run 42 in {store.path}.\n", command


# -- liveness: every reader, the same function ------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _read_cli(store, rid, capsys, command):
    assert cli.main(["--store", str(store.path), *command]) == 0
    return capsys.readouterr().out


READERS = {
    "RunStore.run": lambda store, rid, capsys: "{status} · {error}".format(**store.run(rid)),
    "RunStore.runs": lambda store, rid, capsys: "{status} · {error}".format(**store.runs().iloc[0].to_dict()),
    "cli list": lambda store, rid, capsys: _read_cli(store, rid, capsys, ["list"]),
    "cli show": lambda store, rid, capsys: _read_cli(store, rid, capsys, ["show", str(rid)]).replace(" - ", " · "),
    "worker.mark_lost": lambda store, rid, capsys: "failed · process lost" if rid in worker.mark_lost(store) else "",
}


@pytest.mark.parametrize("reader", list(READERS))
def test_each_reader_alone_sees_a_dead_process_as_lost(store, tiny, capsys, monkeypatch, reader):
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")
    queued = store.create_run(TrainConfig(**tiny).to_dict())  # reading must never start it
    rid = store.create_run(TrainConfig(**tiny).to_dict(), pid=dead_pid())
    assert raw_status(store, rid) == "running"
    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "2")  # a slot is free now: still, reading starts nothing
    assert "failed · process lost" in READERS[reader](store, rid, capsys)
    assert raw_status(store, rid) == "failed" and store.events(rid).message.iloc[-1].endswith("; process lost")
    assert raw_status(store, queued) == "queued"


@pytest.mark.parametrize("reader", list(READERS))
def test_a_run_that_ends_while_it_is_read_is_not_lost(store, tiny, capsys, monkeypatch, reader):
    """The worker finishes and exits between a reader's SELECT (it read "running") and its liveness check (the pid
    is gone): the run finished; no reader may call it lost, not even in what it returns."""
    rid = store.create_run(TrainConfig(**tiny).to_dict(), pid=dead_pid())
    real = lifecycle.lost_runs

    def ended_meanwhile(rows, now=None):  # the worker's finish_run commits, then its process exits
        if any(int(r["id"]) == rid and r["status"] == "running" for r in rows) and raw_status(store, rid) == "running":
            RunStore(store.path).finish_run(rid, "finished")
        return real(rows, now)

    monkeypatch.setattr(lifecycle, "lost_runs", ended_meanwhile)
    seen = READERS[reader](store, rid, capsys)  # what it read: running (its snapshot) or finished, never lost
    assert "failed" not in seen and "process lost" not in seen and raw_status(store, rid) == "finished"
    assert "failed" not in store.events(rid).kind.tolist()


def test_liveness_dispatches_on_the_executor(store, tiny, monkeypatch):
    """A run executed elsewhere is judged by its executor's check, registered once; readers do not change."""
    verdicts = {}
    monkeypatch.setitem(lifecycle.LIVENESS, "ray", lambda row, now: verdicts.get(int(row["id"])))
    rid = store.create_run(TrainConfig(**tiny).to_dict(), pid=dead_pid(), executor="ray")  # pid means nothing there
    assert store.run(rid)["status"] == "running"
    verdicts[rid] = "trial actor died"
    row = store.runs().iloc[0]
    assert (row.status, row.error, row.executor) == ("failed", "process lost", "ray")
    assert store.events(rid).message.iloc[-1] == "trial actor died; process lost"


def test_no_sslviz_module_writes_a_status_outside_the_transitions():
    """``update_run(status=...)`` is the fixtures' unguarded setter; the package itself never uses it."""
    import ast

    for path in (ROOT / "sslviz").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update_run":
                assert "status" not in {k.arg for k in node.keywords}, f"{path.name}:{node.lineno}"


# -- issue 12, done when: kill -9 a foreground CLI run; list, show and the Live page say so --------


def _cli(store_path, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "sslviz", "--store", str(store_path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_sigkilled_foreground_cli_run_reads_lost_everywhere(tmp_path, wait_for, monkeypatch):
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, "-m", "sslviz", "--store", str(db), "train", "--dataset", "toy2d",
                             "--steps", "100000", "--eval-every", "100000", "--log-every", "5", "--batch-size", "16",
                             "--mu", "2", "--device", "cpu"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        def training():
            try:
                row = raw_row(db, 1) if db.exists() else None
            except sqlite3.OperationalError:  # the file is still being created
                return None
            return row is not None and row["step"] >= 10 and row

        assert wait_for(training, timeout=120, every=0.2), proc.stderr.read() if proc.poll() is not None else ""
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = time.monotonic()
    assert raw_status(db, 1) == "running"  # nobody has looked yet

    out = _cli(db, "list")
    assert out.returncode == 0 and "failed · process lost" in out.stdout, out
    show = _cli(db, "show", "1")
    assert show.returncode == 0 and show.stdout.startswith("run 1 [failed - process lost]"), show
    assert time.monotonic() - killed < 10

    # The Live page reads the same store: its status line and error say the same.
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SSLVIZ_HOME", str(tmp_path))
    monkeypatch.setenv("SSLVIZ_STORE", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/live.py").run()
    assert not at.exception
    assert any("**failed**" in m.value for m in at.markdown)
    assert any("process lost" in e.value for e in at.error)


def test_design_shows_the_transition_table():
    assert lifecycle.markdown_table() in (ROOT / "docs" / "DESIGN.md").read_text()


def test_evaluate_on_demand_reproduces_the_runs_own_numbers_without_moving_it(store, tiny, capsys):
    cfg = TrainConfig(**tiny)
    rid = store.create_run(cfg.to_dict())
    assert worker.run_worker(store, rid, progress=lambda step: step == 10 and store.request_stop(rid)) == "stopped"
    recorded = store.evals(rid, split="test").iloc[-1]
    record = worker.evaluate_now(store, rid, ("val", "test"))
    assert record["step"] == store.run(rid)["step"] == 15
    assert record["eval"]["test"]["balanced_accuracy"] == pytest.approx(recorded.balanced_accuracy)
    assert cli.main(["--store", str(store.path), "evaluate", str(rid)]) == 0
    assert "step 15 test: accuracy" in capsys.readouterr().out
    assert store.run(rid)["step"] == 15 and store.run(rid)["status"] == "stopped"  # the run itself is untouched
    assert "evaluated" in events(store, rid)


def test_a_warm_worker_forks_each_run_its_own_process_and_a_dead_one_is_replaced(store, tiny, wait_for, monkeypatch):
    monkeypatch.setenv(worker.WARM_ENV, "1")
    started = []
    try:
        first = worker.ensure_spare(store)
        started.append(first)
        assert worker.ensure_spare(store) == first  # one is enough, even while it starts

        pids = []
        for seed in (0, 1):  # two runs in a row, both forked by the same warm worker: one process per run
            # The first is handed over while the warm worker still imports: it waits for it, Start does not.
            rid = worker.submit(store, TrainConfig(**{**tiny, "seed": seed}))
            assert wait_for(lambda: store.run(rid)["status"] == "finished", timeout=60), worker.log_path(store, rid).read_text()
            assert steps_of(store, rid) == expected_steps(TrainConfig(**tiny))
            assert "started" in events(store, rid)
            pids.append(store.run(rid)["pid"])
            assert worker.spares(store) == [first]  # still there, for the next run
        assert len(set(pids)) == 2 and first not in pids

        # A run handed over just before the warm worker died goes to a cold worker at the next pump.
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: not lifecycle_alive(first), timeout=10)
        orphan = store.create_run(TrainConfig(**tiny).to_dict())
        assert store.claim_queued(orphan, "cpu", 2)
        worker.handed_dir(store).mkdir(parents=True, exist_ok=True)
        (worker.handed_dir(store) / str(orphan)).touch()
        monkeypatch.setenv(worker.WARM_ENV, "0")
        assert worker.start_queued(store) == []  # nothing queued; the orphan is cold-started before that
        assert wait_for(lambda: store.run(orphan)["status"] == "finished", timeout=60), worker.log_path(store, orphan).read_text()
        monkeypatch.setenv(worker.WARM_ENV, "1")
        worker.reap(store)  # the dashboard's pump: the dead warm worker is replaced
        second = worker.ensure_spare(store)
        started.append(second)
        assert second != first and lifecycle_alive(second)
        assert worker.ensure_spare(store) == second  # the pump does not start a second one
        names = {p.name for p in worker.spare_dir(store).iterdir()} - {"spares.log", "queue"}
        assert names <= {str(second), f"{second}.starting"} and names  # the dead one's files are gone
    finally:
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_warm_worker_leaves_with_the_server_that_started_it(store, wait_for, monkeypatch):
    # The dashboard passes its own pid (ui.py); a stopped server left its warm worker idle for 15 minutes before.
    monkeypatch.setenv(worker.WARM_ENV, "1")
    owner = subprocess.Popen(["sleep", "120"])
    spare = worker.ensure_spare(store, owner=owner.pid)
    try:
        assert wait_for(lambda: worker.spares(store) == [spare], timeout=60)  # imported, waiting for runs
        owner.kill()
        owner.wait()
        assert wait_for(lambda: not lifecycle_alive(spare), timeout=5)
        assert worker.spares(store) == []
    finally:
        owner.kill()
        if lifecycle_alive(spare):
            os.kill(spare, signal.SIGKILL)


def lifecycle_alive(pid):
    from sslviz.runs.lifecycle import pid_alive

    return pid_alive(pid)


def test_small_runs_share_a_gpu_as_their_measured_memory_allows(store, tiny, monkeypatch):
    """A faked 80 GB GPU (devices.json) and a measured footprint of 2.5 GB for these runs: the queue starts as many
    on cuda:0 as fit (at most devices.MAX_AUTO_SLOTS and the CPU cores); before a footprint is measured, one;
    SSLVIZ_GPU_SLOTS still overrides."""
    from sslviz.runs import devices

    monkeypatch.delenv("SSLVIZ_GPU_SLOTS", raising=False)
    (store.path.parent / devices.FILE).write_text('{"cuda": 1, "memory": [80000000000]}')
    spawned = []
    monkeypatch.setattr(worker, "_spawn", lambda s, rid, device: spawned.append((rid, device)))
    cfg = TrainConfig(**{**tiny, "device": "cuda"})
    ids = [store.create_run(cfg.to_dict()) for _ in range(12)]
    assert worker.start_queued(store) == ids[:1]  # nothing measured yet: one at a time
    devices.record_footprint(store.path.parent, devices.footprint_key(cfg), 2_500_000_000 - devices.CONTEXT_BYTES)
    expected = devices.auto_gpu_slots([80e9], 2.5e9)
    assert expected == min(devices.MAX_AUTO_SLOTS, os.cpu_count())
    assert worker.start_queued(store) == ids[1:expected]  # the GPU fills up to its slots
    assert {d for _, d in spawned} == {"cuda:0"}
    monkeypatch.setenv("SSLVIZ_GPU_SLOTS", str(expected + 2))
    assert worker.start_queued(store) == ids[expected:expected + 2]
    assert devices.auto_gpu_slots([80e9], 30e9, cpus=16) == 2  # a big model: two fit


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_run_records_its_footprint(store, tiny):
    """A run on the GPU records its peak memory (plus a CUDA context) under its footprint key."""
    from sslviz.runs import devices

    cfg = TrainConfig(**{**tiny, "device": "cuda"})
    rid = store.create_run(cfg.to_dict())
    assert worker.run_worker(store, rid) == "finished"
    assert devices.footprints(store.path.parent)[devices.footprint_key(cfg)] > devices.CONTEXT_BYTES
