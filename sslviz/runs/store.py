"""The run store: one SQLite file holding the run registry, the sweeps and every recorded metric.

``RunStore`` is one object over the file, assembled from what it holds: ``database.Database`` (the file,
connections, transactions, schema version), ``run_table.RunTable`` (the runs and their lifecycle),
``sweep_table.SweepTable`` (the sweeps), ``series.MetricSeries`` (the metric readers) with its
``rollups.RollupCache``. Readers return pandas DataFrames by column name.
"""
from __future__ import annotations

import os

from .database import Database, StoreError, default_store_path, home_dir  # noqa: F401  (the store's API)
from .rollups import RollupCache
from .run_table import RunTable, code_version  # noqa: F401
from .series import MAX_POINTS, VIEW_POINTS, MetricSeries  # noqa: F401
from .sweep_table import SweepTable


class RunStore(RunTable, SweepTable, MetricSeries, Database):
    """Registry of runs and their metrics in one SQLite file; readers return DataFrames."""

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__(path)
        self._rollups = RollupCache(self.path)
