"""The dashboard's process imports no torch and no sklearn to draw Setup and to Start a run, and no pandas to draw
Setup (issue 14).

Importing torch costs 1.4 s, sklearn's datasets 0.8 s and pandas 0.25 s on the 2-core reference machine, against
a 2-second first paint; the model is built by the worker process, and the server imports pandas in the background
once the first page is drawn (``ui.import_in_background``). Checked in a fresh interpreter (this test
process has torch loaded already): Setup drawn under AppTest, then Start pressed, then ``sys.modules``.
The timing itself lives in ``bench/live.py --browser``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sslviz.runs import devices, worker
from sslviz.engine.config import TrainConfig
from sslviz.runs.store import RunStore

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
from streamlit.testing.v1 import AppTest
from sslviz.dashboard import ui
ui.BACKGROUND_IMPORTS = ()  # what the page itself imports, not what the server preloads after it
at = AppTest.from_file("app.py", default_timeout=60).run()
assert not at.exception, at.exception
assert [b for b in at.button if b.key == "start"], "no Start button"
assert "split-counts" in at.get("html")[0].proto.body, "no split preview"
heavy = sorted(m for m in ("torch", "sklearn", "torchvision", "pandas") if m in sys.modules)
at.button(key="start").click().run()
assert not at.exception, at.exception
print(json.dumps({"after_setup": heavy,
                  "after_start": sorted(m for m in ("torch", "sklearn", "torchvision") if m in sys.modules)}))
"""


def test_setup_and_start_import_no_torch_or_sklearn_and_setup_no_pandas(tmp_path):
    env = {**os.environ, "SSLVIZ_HOME": str(tmp_path), "SSLVIZ_STORE": str(tmp_path / "runs.db"),
           "SSLVIZ_WARM_WORKER": "0", "SSLVIZ_CPU_SLOTS": "0"}  # no slot: the run stays queued, nothing spawns
    if devices.gpu_driver_present():  # what a worker would have recorded; without a driver nothing is needed
        (tmp_path / devices.FILE).write_text(json.dumps(devices.probe()))
    out = subprocess.run([sys.executable, "-c", "import json\n" + SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"after_setup": [], "after_start": []}
    runs = RunStore(tmp_path / "runs.db").runs()
    assert list(runs.status) == ["queued"]  # Start did record the run (validated against the data)


def test_server_reads_devices_file_and_workers_write_it(tmp_path):
    assert devices.known(tmp_path) == devices.probe()  # none written yet: no driver means no GPU, else probed
    assert devices.write(tmp_path) == devices.probe()
    (tmp_path / devices.FILE).write_text(json.dumps({"cuda": 3}))
    assert devices.known(tmp_path) == {"cuda": 3}  # read, not probed


def test_queued_runs_spread_over_gpus_one_per_gpu(tmp_path, monkeypatch):
    """With 2 GPUs and 1 slot per GPU, three queued 'auto' runs: one on cuda:0, one on cuda:1, one waits."""
    store = RunStore(tmp_path / "runs.db")
    (tmp_path / devices.FILE).write_text(json.dumps({"cuda": 2}))
    spawned = []
    monkeypatch.setattr(worker, "_spawn", lambda s, run_id, device: spawned.append((run_id, device)))
    monkeypatch.setenv("SSLVIZ_GPU_SLOTS", "1")
    ids = [store.create_run(TrainConfig(dataset="toy2d", device="auto", seed=i).to_dict()) for i in range(3)]
    assert worker.start_queued(store) == ids[:2]
    assert spawned == [(ids[0], "cuda:0"), (ids[1], "cuda:1")]
    assert store.run(ids[2])["status"] == "queued"
    store.close()


@pytest.mark.parametrize("name", ["cpu", "auto"])
def test_a_worker_fills_in_model_and_device(store, name):
    """Start records no model or device (no torch in the server); the worker that trains fills them in."""
    from tests.conftest import TINY

    run_id = worker.record(store, TrainConfig(**{**TINY, "device": name, "steps": 5}))
    assert store.run(run_id)["info"]["model"] is None and store.run(run_id)["info"]["device"] is None
    assert worker.run_worker(store, run_id) == "finished"
    info = store.run(run_id)["info"]
    assert info["model"] == "mlp" and info["device"] == "cpu"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_forked_by_the_warm_worker_can_use_cuda(tmp_path):
    """The warm worker probes the devices before it forks; a child must still be able to initialise CUDA."""
    script = f"""
import os, sys
from pathlib import Path
os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # as run_spare sets it
from sslviz.runs import devices, worker
devices.write(Path({str(tmp_path)!r}))
worker.warm_up()
pid = os.fork()
if pid == 0:
    import torch
    os._exit(0 if float(torch.ones(3, device="cuda").sum()) == 3.0 else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
