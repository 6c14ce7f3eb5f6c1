"""The server-wide read-only setting, read by the dashboard (what it draws) and the engine (what it loads).

Stdlib only: the router reads it before anything heavy is imported. The engine enforces it where a dataset is
loaded (``data.load_dataset``), so no widget, URL or YAML a page accepts can make a read-only server open a file
of its own choosing; the pages only hide what it would refuse.
"""
from __future__ import annotations

import os

READ_ONLY_ENV = "SSLVIZ_READ_ONLY"


def switched_on(value: str | None) -> bool:
    """Whether an environment setting's text means on: 1 / true / yes / on, any case and spacing.

    >>> [switched_on(v) for v in (" Yes", "1", "0", "off", "", None)]
    [True, True, False, False, False, False]
    """
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def read_only() -> bool:
    """Whether this process only shows runs: ``SSLVIZ_READ_ONLY`` switched on."""
    return switched_on(os.environ.get(READ_ONLY_ENV))
