"""Shared fixtures for the lifecycle / store / CLI tests: a tmp store and a tiny toy2d budget."""
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from sslviz.runs.store import RunStore

# No warm worker processes in the tests (and the servers they start): each would outlive its test's store.
# tests/test_lifecycle.py turns them on where it tests them.
os.environ["SSLVIZ_WARM_WORKER"] = "0"

# A few hundred milliseconds of CPU per run: toy2d points, MLP, small batches.
TINY = dict(dataset="toy2d", steps=40, batch_size=16, mu=2, log_every=5, eval_every=20, checkpoint_every=10,
            device="cpu", ema_decay=0.9)


def _warm_workers() -> set[int]:
    """Pids of the warm workers alive on this machine (``python -m sslviz ... spare``)."""
    out = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:
            continue
        if b"sslviz" in cmdline and b"spare" in cmdline:
            out.add(int(proc.name))
    return out


@pytest.fixture(scope="session", autouse=True)
def _no_stray_warm_worker():
    """The suite leaves no warm worker behind (one held ~800 MB for up to 15 minutes): checked at the end."""
    before = _warm_workers()
    yield
    deadline = time.time() + 10
    while time.time() < deadline and _warm_workers() - before:
        time.sleep(0.2)
    stray = _warm_workers() - before
    for pid in stray:
        os.kill(pid, signal.SIGKILL)
    if stray:
        pytest.fail(f"the tests left warm workers running: {sorted(stray)}")


@pytest.fixture(autouse=True)
def _restore_process_state():
    """run_worker sets torch's thread count in the calling process; undo it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """SSLVIZ_HOME in tmp_path, so nothing touches ~/.sslviz."""
    monkeypatch.setenv("SSLVIZ_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def store(home):
    s = RunStore(home / "runs.db")
    yield s
    s.close()


@pytest.fixture
def tiny():
    """Config knobs of a tiny CPU run (copy; tests override freely)."""
    return dict(TINY)


def _wait_for(predicate, timeout: float, every: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds pass (None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


@pytest.fixture
def wait_for():
    return _wait_for
