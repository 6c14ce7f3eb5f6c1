"""Which devices runs may use here, known to the dashboard's process without importing torch.

A process that imports torch anyway (every worker, the warm worker as it boots) writes what torch sees
(``probe``) to ``devices.json`` beside the store; the server reads that file to pick a queued run's device
and its slots. When no worker has written it yet, a machine without a GPU driver has no CUDA device for
certain; only with a driver does the reader import torch and probe itself (1.4 s once, the cost this file
saves the first Start). A new GPU shows up at the next worker's boot.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..engine import files

FILE = "devices.json"


FOOTPRINTS = "gpu_footprints.json"  # measured GPU memory of a run, by footprint_key
USABLE = 0.85  # of a GPU's memory the runs may fill together (the rest: fragmentation, other processes)
CONTEXT_BYTES = 600 * 2**20  # a CUDA context per process, which torch's allocator does not count
MAX_AUTO_SLOTS = 8  # runs per GPU at most when chosen from memory: each also needs a CPU core for its host work


def probe() -> dict:
    """``{"cuda": number of CUDA devices torch can use, "memory": [total bytes of each]}`` (imports torch)."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": 0, "memory": []}
    count = torch.cuda.device_count()
    return {"cuda": count, "memory": [torch.cuda.get_device_properties(i).total_memory for i in range(count)]}


def footprint_key(cfg) -> str:
    """What a run's GPU memory depends on, from its config: the model (as configured: 'auto' resolves the same on
    the same data), the data, the batch and mu.

    >>> from types import SimpleNamespace as C
    >>> footprint_key(C(model="auto", dataset="digits", batch_size=64, mu=7))
    'auto|digits|B64|mu7'
    """
    return f"{cfg.model}|{cfg.dataset}|B{cfg.batch_size}|mu{cfg.mu}"


def footprints(folder: str | os.PathLike) -> dict:
    """``{footprint_key: bytes}`` measured by the runs of this store's workers so far ({} before the first)."""
    try:
        return json.loads((Path(folder) / FOOTPRINTS).read_text())
    except (OSError, ValueError):
        return {}


def record_footprint(folder: str | os.PathLike, key: str, peak_bytes: int) -> None:
    """Remember the most GPU memory a run of ``key`` used (its process's peak plus a CUDA context), keeping the
    largest seen; a full or read-only disk costs only the sharing."""
    known_ = footprints(folder)
    known_[key] = max(int(peak_bytes) + CONTEXT_BYTES, int(known_.get(key, 0)))
    try:
        files.write_atomically(Path(folder) / FOOTPRINTS, lambda f: f.write(json.dumps(known_).encode()))
    except OSError:
        pass


def auto_gpu_slots(memory: list, footprint: int | None, cpus: int | None = None) -> int:
    """Runs of one footprint that share a GPU: as many as fit in ``USABLE`` of the smallest GPU's ``memory``, at
    most ``MAX_AUTO_SLOTS`` and the machine's CPU cores; 1 before the footprint has been measured.

    >>> auto_gpu_slots([80e9], 2.5e9, cpus=16), auto_gpu_slots([80e9], 30e9, cpus=16), auto_gpu_slots([80e9], None)
    (8, 2, 1)
    """
    if not memory or not footprint:
        return 1
    fit = int(USABLE * min(memory) // footprint)
    return max(1, min(fit, MAX_AUTO_SLOTS, cpus or os.cpu_count() or 1))


def write(folder: str | os.PathLike) -> dict:
    """Probe and record the result in ``folder`` (atomically: readers never see half a file)."""
    found = probe()
    try:
        files.write_atomically(Path(folder) / FILE, lambda f: f.write(json.dumps(found).encode()))
    except OSError:
        pass  # a cache for the server's queue: a full or read-only disk costs it a probe, never the run that wrote it
    return found


def gpu_driver_present() -> bool:
    """Whether this machine has a GPU driver torch could use (NVIDIA's, or ROCm's ``/dev/kfd``). Without one,
    ``torch.cuda.is_available()`` is False for certain, and nothing needs importing to know it."""
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists() or Path("/dev/kfd").exists()


def known(folder: str | os.PathLike) -> dict:
    """What the last worker in ``folder`` found; when none has written it yet: no GPU if there is no GPU driver,
    else probe (and record) it here."""
    try:
        return json.loads((Path(folder) / FILE).read_text())
    except (OSError, ValueError):
        return write(folder) if gpu_driver_present() else {"cuda": 0, "memory": []}


def resolve_type(name: str, cuda_count: int) -> str:
    """The device type a run configured with device ``name`` gets on a machine with ``cuda_count`` GPUs.

    >>> resolve_type("auto", 0), resolve_type("auto", 2), resolve_type("cpu", 2)
    ('cpu', 'cuda', 'cpu')
    >>> resolve_type("cuda", 0)
    Traceback (most recent call last):
    ...
    ValueError: The 'device' parameter is 'cuda' but no CUDA GPU is available here; use 'auto' or 'cpu'.
    """
    if name == "auto":
        return "cuda" if cuda_count else "cpu"
    if name == "cuda" and not cuda_count:
        raise ValueError("The 'device' parameter is 'cuda' but no CUDA GPU is available here; use 'auto' or 'cpu'.")
    return name


def least_loaded(busy: list[str], cuda_count: int) -> str:
    """The GPU for the next run: ``cuda:i`` with the fewest of the ``busy`` runs' devices on it (one run per
    GPU when there are several; ties go to the lowest index).

    >>> least_loaded([], 2), least_loaded(["cuda:0"], 2), least_loaded(["cuda:0", "cuda:1", "cuda:1"], 2)
    ('cuda:0', 'cuda:1', 'cuda:0')
    >>> least_loaded(["cuda"], 1)  # a run recorded before device indices counts as cuda:0
    'cuda:0'
    """
    load = [0] * max(1, cuda_count)
    for device in busy:
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            if index < len(load):
                load[index] += 1
    return f"cuda:{load.index(min(load))}"
