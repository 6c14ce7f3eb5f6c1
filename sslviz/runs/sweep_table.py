"""The ``sweeps`` table: a grid of runs defined together (``sweep_spec.SweepSpec``); its runs carry its id in
``runs.sweep``."""
from __future__ import annotations

import json
import time

from . import lifecycle
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py


class SweepTable:
    """The sweeps' reads and writes (a part of ``RunStore``)."""

    def create_sweep(self, spec: dict, *, name: str = "", executor: str = lifecycle.DEFAULT_EXECUTOR,
                     options: dict | None = None) -> int:
        """Record a sweep (its grid ``spec`` and how it executes; ``options``: Ray address, storage_path ...);
        its runs are created with ``create_run(..., sweep=id)``. Returns its id."""
        row = dict(name=name, created=time.time(), spec=json.dumps(spec), executor=executor,
                   options=json.dumps(options or {}))
        with self._transaction() as conn:
            cur = conn.execute(f"INSERT INTO sweeps ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row)
        return int(cur.lastrowid)

    def sweeps(self) -> pd.DataFrame:
        """Every sweep, newest first: id, name, created, spec, executor, options (JSON text), runs (its run count)."""
        return self._read("SELECT s.*, (SELECT COUNT(*) FROM runs WHERE sweep = s.id) AS runs FROM sweeps s "
                          "ORDER BY s.id DESC")

    def sweep(self, sweep_id: int) -> dict | None:
        """One sweep's row with ``spec`` and ``options`` decoded, or None."""
        row = self._one("SELECT * FROM sweeps WHERE id = ?", (int(sweep_id),))
        if row is None:
            return None
        out = dict(row)
        out["spec"], out["options"] = json.loads(out["spec"]), json.loads(out["options"])
        return out

    def delete_sweep(self, sweep_id: int) -> None:
        """Remove a sweep's row once it has no runs left (``sweep.delete`` deletes them first)."""
        with self._transaction() as conn:
            left = conn.execute("SELECT COUNT(*) FROM runs WHERE sweep = ?", (int(sweep_id),)).fetchone()[0]
            if left:
                raise ValueError(f"Sweep {sweep_id} still has {left} run(s); delete them first.")
            conn.execute("DELETE FROM sweeps WHERE id = ?", (int(sweep_id),))
