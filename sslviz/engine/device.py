"""Where a run trains and on which model: ``auto`` device is a CUDA GPU when torch sees one, else the CPU;
``auto`` model is the default for the data and that device. Torch only on first use (``resolve_device``): the
server that records a run at Start picks the model name without it."""
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


def model_name(name: str, input_shape: tuple, device: str) -> str:
    """The model a run builds: the config's ``model``, or for ``auto`` the default for its data and device.

    >>> model_name("auto", (2,), "cpu"), model_name("mlp", (1, 8, 8), "cpu")
    ('mlp', 'mlp')
    """
    return default_model_name(input_shape, device) if name == "auto" else name


def default_model_name(input_shape: tuple, device: str) -> str:
    """Pick a model for the data: MLP for points, small CNN for tiny images, WRN-28-2 and the text CNN only on CUDA.

    >>> default_model_name((2,), "cpu"), default_model_name((1, 8, 8), "cpu")
    ('mlp', 'cnn_digits')
    >>> default_model_name((3, 32, 32), "cpu"), default_model_name((3, 32, 32), "cuda:0")
    ('cnn32', 'wrn28_2')
    >>> default_model_name((32, 20002), "cpu"), default_model_name((32, 20002), "cuda")
    ('text_bow', 'text_cnn')
    """
    if len(input_shape) == 2:  # text: (tokens, vocabulary)
        return "text_cnn" if str(device).startswith("cuda") else "text_bow"
    if len(input_shape) == 1:
        return "mlp"
    if max(input_shape[1:]) <= 16:
        return "cnn_digits"
    # WRN-28-2 takes seconds per step on a CPU; the small CNN keeps CPU runs interactive.
    return "wrn28_2" if str(device).startswith("cuda") else "cnn32"
