"""torch and pandas, imported on first use: the declarations (config, registry, techniques) load without torch,
the dashboard's first page draws without pandas.

Why: importing torch takes 1.4 s on the 2-core reference machine, and the dashboard's first paint (the
Setup page: every knob's widget, read from the technique declarations) must come in about two seconds
on a fresh server (issue 14, ``bench/live.py --browser``). The modules that declare techniques and hold
their formulas write ``from .lazy import F, nn, torch`` and use those names only inside functions; a
process that trains pays the import at its first tensor, a page that only draws widgets never does.

The stdlib's ``importlib.util.LazyLoader`` covers a top-level module only (finding ``torch.nn``'s spec
imports ``torch``), hence this proxy. Each attribute it hands out is kept on the proxy, so after the
first use a lookup is a plain instance-dict hit (no ``__getattr__`` call in the training step).

pandas (0.25 s to import here, the last quarter of the first paint: ``bench/live.py --browser``) the same way: the
store, the split and chart helpers and the pages' helpers hold ``pd`` from here, and the Setup page draws its
split preview from numpy; the server imports pandas in the background once that page is drawn
(``ui.import_in_background``), before a Start or the Live page needs it.
"""
from __future__ import annotations

import importlib


class LazyModule:
    """Stands in for ``importlib.import_module(name)`` until an attribute is first read.

    >>> math = LazyModule("math")
    >>> "math" in repr(math)
    True
    >>> math.sqrt(4.0)
    2.0
    >>> "sqrt" in vars(math)  # kept: the next read does not go through __getattr__
    True
    """

    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(self._name), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
pd = LazyModule("pandas")
