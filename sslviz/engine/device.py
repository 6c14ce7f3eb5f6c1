"""The torch device a run trains on: ``auto`` is a CUDA GPU when torch sees one, else the CPU."""
from __future__ import annotations

from .lazy import torch  # torch on first use: see sslviz/engine/lazy.py


def resolve_device(name: str) -> torch.device:
    """``torch.device`` of a config's ``device`` ("auto", "cpu", "cuda", "cuda:i"); ValueError for "cuda" on a
    machine without one (the same message as ``runs.devices.resolve_type``, which answers without torch).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("The 'device' parameter is 'cuda' but no CUDA GPU is available here; use 'auto' or 'cpu'.")
    return torch.device(name)
