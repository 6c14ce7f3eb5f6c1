"""A run's metric series: readers by column name, binned above ``max_points`` steps, windows of steps.

More steps than ``max_points`` are merged into power-of-two step bins by each column's aggregator
(``records.bin_aggregator``: counts summed, the rest averaged) with ``<col>_min`` / ``<col>_max`` and ``n_logs``;
the latest step is never merged. The finished bins are kept by the store's ``rollups.RollupCache``.
"""
from __future__ import annotations

import json

import numpy as np

from . import records
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from .records import CONFUSION_KINDS, SPLITS

MAX_POINTS = 2000  # default cap on steps returned per series
VIEW_POINTS = 300  # step bins per series on the Live and Compare pages: a refresh stays light at any run length


class MetricSeries:
    """The metric readers (a part of ``RunStore``; ``self._rollups`` is its ``RollupCache``)."""

    def _bin_width(self, table: str, where: str, params: tuple, max_points: int | None) -> tuple[int, int, int] | None:
        """(first step, last step, bin width in steps) when the rows ``where`` selects hold more than ``max_points``
        steps, else None (read them as they are). Bins are ``step // width``, aligned to step 0 and a power of two
        wide, so the finished bins of a growing run stay the same; the last step keeps a bin of its own, so at
        most ``max_points`` bins are returned."""
        if not max_points:
            return None
        # Two subqueries: SQLite reads a lone MIN or MAX off the index; both in one SELECT scan every row.
        lo, hi = self._one(f"SELECT (SELECT MIN(step) FROM {table} WHERE {where}), "
                           f"(SELECT MAX(step) FROM {table} WHERE {where})", params * 2)
        if lo is None or hi - lo + 1 <= max_points:
            return None
        # Sparse steps (a narrow window, evaluations) may fit although their span does not; counting stops early.
        n = self._one(f"SELECT COUNT(*) FROM (SELECT DISTINCT step FROM {table} WHERE {where} LIMIT ?)",
                      (*params, max_points + 1))[0]
        if n <= max_points:
            return None
        budget = max_points - 1  # bins before the last step
        width = 1
        while budget and (hi - 1) // width - lo // width + 1 > budget:
            width *= 2
        return lo, hi, (width if budget else 0)

    def _series(self, row: type, run_id: int, max_points: int | None = None, steps: tuple | None = None,
                **equal) -> pd.DataFrame:
        """One run's rows of ``row`` kind in key order, by column name; ``equal`` filters (None = any); ``steps``:
        only ``(first, last)`` (either None = open). More than ``max_points`` steps are merged into step bins
        (`_bin_width`): each measured column by its aggregator (`records.bin_aggregator`: counts summed, the
        rest averaged) plus ``<col>_min`` / ``<col>_max`` and ``n_logs`` (log steps merged); ``step`` is the
        bin's last step and ``wall`` its last wall time. The latest step is always returned as it is."""
        equal = {k: v for k, v in equal.items() if v is not None}
        where = " AND ".join(["run_id = ?", *(f"{k} = ?" for k in equal)])
        params = (run_id, *equal.values())
        for op, bound in zip((">=", "<="), steps or (None, None)):
            if bound is not None:
                where += f" AND step {op} ?"
                params += (int(bound),)
        order = ", ".join(k for k in row.KEY if k != "run_id")
        cols = records.value_columns(row)
        floats = records.float_columns(row)

        def typed(df: pd.DataFrame) -> pd.DataFrame:  # REAL columns as floats, all-NULL ones (and their bins) too
            return df.astype({c: float for c in df.columns if c.removesuffix("_min").removesuffix("_max") in floats})

        binned = self._bin_width(row.TABLE, where, params, max_points)
        if binned is None:
            return typed(self._read(f"SELECT {', '.join(cols)} FROM {row.TABLE} WHERE {where} ORDER BY {order}", params))
        _, hi, width = binned
        keys = [k for k in row.KEY if k not in ("run_id", "step")]
        measures = records.measure_columns(row)
        agg = {"sum": "SUM", "mean": "AVG"}
        bin_cols = ["MAX(step) AS step", *keys, *(["MAX(wall) AS wall"] if "wall" in cols else []),
                    *(f"{agg[records.bin_aggregator(row, c)]}({c}) AS {c}" for c in measures),
                    *(f"{f}({c}) AS {c}_{f.lower()}" for c in measures for f in ("MIN", "MAX")),
                    "COUNT(*) AS n_logs"]
        last_cols = ["step", *keys, *(["wall"] if "wall" in cols else []), *measures,
                     *(f"{c} AS {c}_{f}" for c in measures for f in ("min", "max")), "1 AS n_logs"]
        group = f"GROUP BY step / {int(width)}{''.join(', ' + k for k in keys)}" if width else ""

        def bins(first: int, stop: int) -> pd.DataFrame:  # the bins of the rows first <= step < stop
            return self._read(f"SELECT {', '.join(bin_cols)} FROM {row.TABLE} WHERE {where} AND step >= ? "
                              f"AND step < ? {group}", (*params, first, stop))

        parts = []
        if width:
            # Bins below the one holding the latest step are complete: kept (a rollup, in memory and on disk) and
            # extended as the run grows, so a refresh reads only the rows of the newest bin, and a server started
            # afresh reads the file instead of every row. A restart (resume) changes ``started``, hence the key.
            cut = hi // width * width
            token = self._one("SELECT started FROM runs WHERE id = ?", (run_id,))
            key = (row.TABLE, where, params, width, None if token is None else token[0])
            done, frame = self._rollups.take(run_id, key)
            kept = done
            if done is None or done > cut:
                done, frame = cut, bins(-1, cut)
            elif done < cut:
                done, frame = cut, pd.concat([frame, bins(done, cut)], ignore_index=True)
            self._rollups.keep(run_id, key, done, frame, save=kept != done)
            parts += [frame, bins(cut, hi)]
        parts.append(self._read(f"SELECT {', '.join(last_cols)} FROM {row.TABLE} WHERE {where} AND step = ?",
                                (*params, hi)))
        out = pd.concat([p for p in parts if not p.empty] or parts[-1:], ignore_index=True)
        return typed(out.sort_values([k for k in row.KEY if k != "run_id"], ignore_index=True))

    def roll_up(self, run_id: int, max_points: int = VIEW_POINTS) -> None:
        """Bin every series of a run as the Live and Compare pages read it (whole run, ``max_points``), so their
        first view of it reads the rollup files instead of every row (a finished 500k-step run: 0.8 s Live,
        1.5 s Compare of five, first ever; 150 / 225 ms from the files, bench/live.py). The worker calls it when a
        run ends."""
        self.scalars(run_id, max_points)
        self.class_train(run_id, max_points)
        self.class_eval(run_id, max_points=max_points)
        self.evals(run_id, max_points=max_points)
        self.technique(run_id, max_points)

    def scalars(self, run_id: int, max_points: int | None = MAX_POINTS, steps: tuple | None = None) -> pd.DataFrame:
        """Columns step, wall, loss, loss_sup, loss_unsup, mask_rate, pl_accuracy, lr (binned above ``max_points``
        steps, see `_series`; ``steps``: a (first, last) window)."""
        return self._series(records.Scalars, run_id, max_points, steps)

    def class_train(self, run_id: int, max_points: int | None = MAX_POINTS, steps: tuple | None = None) -> pd.DataFrame:
        """Long format: one row per (step, cls) with thresholds, confidences and pseudo-label counts (binned above
        ``max_points`` steps: counts summed over the bin, the rest averaged; see `_series`)."""
        return self._series(records.ClassTrain, run_id, max_points, steps)

    def evals(self, run_id: int, split: str | None = None, steps: tuple | None = None,
              max_points: int | None = None) -> pd.DataFrame:
        """Columns step, split ('val' | 'test'), wall, accuracy, balanced_accuracy; every split when ``split`` is None.
        Every evaluation unless ``max_points`` is given (then binned as `_series`)."""
        return self._series(records.Eval, run_id, max_points, steps, split=_checked(split, SPLITS, "split"))

    def latest_evals(self, run_id: int, step: int | None = None) -> dict[str, dict]:
        """``{split: {step, wall, accuracy, balanced_accuracy}}`` of each split's latest evaluation (at or before
        ``step``); a split never evaluated is absent (validation in runs recorded before the split)."""
        ev = self.evals(run_id)
        if step is not None:
            ev = ev[ev["step"] <= step]
        return {split: rows.iloc[-1].drop("split").to_dict() for split, rows in ev.groupby("split")}

    def class_eval(self, run_id: int, split: str | None = None, max_points: int | None = MAX_POINTS,
                   steps: tuple | None = None) -> pd.DataFrame:
        """Long format: step, split, cls, recall; one split, or every split when ``split`` is None."""
        return self._series(records.ClassEval, run_id, max_points, steps, split=_checked(split, SPLITS, "split"))

    def technique(self, run_id: int, max_points: int | None = MAX_POINTS, steps: tuple | None = None) -> pd.DataFrame:
        """Techniques' live state, long format: step, name, cls (-1 for a single number), value."""
        return self._series(records.Technique, run_id, max_points, steps)

    def confusion(self, run_id: int, kind: str = "test", step: int | None = None) -> tuple[int, np.ndarray] | None:
        """The (step, matrix) of the latest (or given) confusion matrix of ``kind`` 'val', 'test' or 'pseudo'."""
        sql = "SELECT step, matrix FROM confusion WHERE run_id = ? AND kind = ?"
        params: tuple = (run_id, _checked(kind, CONFUSION_KINDS, "kind"))
        if step is not None:
            sql += " AND step <= ?"
            params += (step,)
        row = self._one(sql + " ORDER BY step DESC LIMIT 1", params)
        return None if row is None else (int(row["step"]), np.array(json.loads(row["matrix"])))

    def snapshots(self, run_id: int) -> list[tuple[int, dict]]:
        rows = self._conn().execute("SELECT step, payload FROM snapshots WHERE run_id = ? ORDER BY step", (run_id,))
        return [(int(r["step"]), json.loads(r["payload"])) for r in rows.fetchall()]

    def events(self, run_id: int) -> pd.DataFrame:
        return self._read("SELECT wall, kind, message FROM events WHERE run_id = ? ORDER BY id", (run_id,))

    def export(self, run_id: int) -> dict[str, pd.DataFrame]:
        """Every metric table of a run, unsampled, for CSV/Parquet export."""
        return {
            "scalars": self.scalars(run_id, None),
            "class_train": self.class_train(run_id, None),
            "evals": self.evals(run_id),
            "class_eval": self.class_eval(run_id, max_points=None),
            "technique": self.technique(run_id, None),
            "events": self.events(run_id),
        }


def _checked(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    """``value`` if it is one of ``allowed`` (or None); a ValueError naming them otherwise."""
    if value is not None and value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; expected one of {list(allowed)}.")
    return value
