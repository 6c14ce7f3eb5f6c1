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


def probe() -> dict:
    """``{"cuda": number of CUDA devices torch can use}`` (imports torch)."""
    import torch

    return {"cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0}


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
        return write(folder) if gpu_driver_present() else {"cuda": 0}


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
