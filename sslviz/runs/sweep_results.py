"""What a sweep's runs did: one row per run (:func:`results`), one per cell over seeds (:func:`cell_table`), exports.

The Sweep page draws them (``dashboard.charts.make_sweep_heatmap_figure`` and ``make_sweep_parallel_figure``);
validation metrics are the ones to choose on, test ones are reported beside them.
"""
from __future__ import annotations

import numpy as np

from . import lifecycle
from .ray_asha import ASHA_EVENT
from .sweep import sweep_runs
from .sweep_spec import varied
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py


# metric key -> (label, higher is better); per run from RunStore.runs() and bias.run_bias_summary
METRICS = {
    "val_balanced_accuracy": ("validation balanced accuracy", True),
    "test_balanced_accuracy": ("test balanced accuracy", True),
    "val_tail_recall": ("validation recall of the 3 rarest", True),
    "test_tail_recall": ("test recall of the 3 rarest", True),
    "val_head_tail_gap": ("validation head − tail recall", False),
    "test_head_tail_gap": ("test head − tail recall", False),
}


def results(store, sweep_id: int) -> pd.DataFrame:
    """One row per run of the sweep: id, status, the varied knobs, seed, and every :data:`METRICS` column
    (latest validation / test; NaN where not evaluated yet)."""
    from . import bias

    spec = store.sweep(sweep_id)["spec"]
    keys = varied(spec)
    rows = []
    for r in sweep_runs(store, sweep_id).itertuples():
        cfg = r.config
        summary = bias.run_bias_summary(store, int(r.id))
        rows.append({"run": int(r.id), "status": r.status, "step": int(r.step), **{k: cfg.get(k) for k in keys},
                     "seed": cfg.get("seed"), "val_balanced_accuracy": r.val_balanced_accuracy,
                     "test_balanced_accuracy": r.test_balanced_accuracy,
                     **{k: summary[k] for k in METRICS if k in summary},
                     "early_stop": _early_stop_event(store, int(r.id)) if r.status == lifecycle.STOPPED else None})
    return pd.DataFrame(rows, columns=["run", "status", "step", *keys, "seed", *METRICS, "early_stop"])


def _early_stop_event(store, run_id: int) -> str | None:
    """The message of the event that says ASHA stopped the run ("stopped early by ASHA at step 20 (...)"), or None."""
    events = store.events(run_id)
    hits = events[events.message.str.startswith(ASHA_EVENT, na=False)]
    return str(hits.message.iloc[-1]) if len(hits) else None


def cell_table(res: pd.DataFrame, keys) -> pd.DataFrame:
    """Mean, std and number of seeds with a value per cell (``keys``: the varied knobs), plus its run ids:
    columns ``<metric>_mean``, ``<metric>_std``, ``<metric>_n``, ``runs``."""
    keys = list(keys)
    if res.empty:
        return pd.DataFrame(columns=[*keys, "seeds", "runs"])
    out = []
    for values, group in res.groupby(keys, sort=False, dropna=False) if keys else [((), res)]:
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values), seeds=len(group), runs=",".join(map(str, group.run)))
        for m in METRICS:
            v = group[m].dropna().astype(float)
            row[f"{m}_mean"] = v.mean() if len(v) else np.nan
            row[f"{m}_std"] = v.std(ddof=1) if len(v) > 1 else (0.0 if len(v) else np.nan)
            row[f"{m}_n"] = len(v)
        out.append(row)
    return pd.DataFrame(out)


def export_table(cells: pd.DataFrame, fmt: str) -> bytes:
    """The cell table as CSV or Parquet bytes."""
    if fmt == "csv":
        return cells.to_csv(index=False).encode()
    import io

    buf = io.BytesIO()
    cells.to_parquet(buf, index=False)
    return buf.getvalue()
