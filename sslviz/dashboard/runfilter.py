"""Which runs a run picker offers: filters over ``RunStore.runs()`` for stores holding hundreds of runs.

Pure pandas, no Streamlit: ``ui.run_filters`` draws the widgets, this decides. A filter on a column the
table lacks is ignored (``sweep`` appears once runs record one), and archived runs are hidden unless asked
for; nothing is ever deleted here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py

BUILTIN_DATASETS = ("digits", "toy2d", "wordnet")  # data.BUILTIN, spelled out: this module stays pandas only
CHOICE_COLUMNS = ("preset", "dataset", "status", "sweep")  # filters that pick among a column's values


def dataset_label(dataset) -> str:
    """'digits' for a built-in dataset, the folder's name for a path ('/data/cifar-10-batches-py' -> its last part)."""
    dataset = str(dataset or "")
    return dataset if dataset in BUILTIN_DATASETS else Path(dataset).name


def with_dataset(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``dataset`` column (the label of each run's config dataset), added when missing."""
    if "dataset" in runs.columns:
        return runs
    labels = [dataset_label((c or {}).get("dataset")) for c in runs["config"]] if "config" in runs.columns else []
    return runs.assign(dataset=pd.Series(labels, index=runs.index, dtype=object))


def choices(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Values to offer per filter column that the table has: {'preset': [...], 'dataset': [...], ...}, sorted.

    ``sweep`` is offered only when some run has one."""
    runs = with_dataset(runs)
    out = {}
    for col in CHOICE_COLUMNS:
        if col not in runs.columns:
            continue
        values = sorted({str(v) for v in runs[col].dropna() if str(v) != ""})
        if values or col != "sweep":
            out[col] = values
    return out


@dataclass(frozen=True)
class RunFilter:
    """What the user picked: empty selections mean "any"; ``text`` matches name, preset, dataset or '#id'."""
    preset: tuple = ()
    dataset: tuple = ()
    status: tuple = ()
    sweep: tuple = ()
    text: str = ""
    show_archived: bool = False

    @property
    def active(self) -> bool:
        """Whether anything beyond the defaults is set (archived runs shown counts)."""
        return bool(self.preset or self.dataset or self.status or self.sweep or self.text.strip() or self.show_archived)


def filter_runs(runs: pd.DataFrame, f: RunFilter = RunFilter(), keep=()) -> pd.DataFrame:
    """The rows of ``runs`` (``RunStore.runs(include_archived=True)``) that ``f`` lets through, in their order.

    Archived rows (``archived`` = 1) only with ``f.show_archived``. Ids in ``keep`` (the run a link names,
    the runs already picked) stay whatever the filter says, so a picker never loses its current value.
    """
    runs = with_dataset(runs)
    mask = pd.Series(True, index=runs.index)
    if not f.show_archived and "archived" in runs.columns:
        mask &= runs["archived"].fillna(0).astype(int) == 0
    for col in CHOICE_COLUMNS:
        picked = getattr(f, col)
        if picked and col in runs.columns:
            mask &= runs[col].astype(str).isin([str(p) for p in picked])
    text = f.text.strip().lower()
    if text:
        hay = ("#" + runs["id"].astype(int).astype(str))
        for col in ("name", "preset", "dataset"):
            if col in runs.columns:
                hay = hay + " " + runs[col].fillna("").astype(str)
        mask &= hay.str.lower().str.contains(text, regex=False)
    if keep and "id" in runs.columns:
        mask |= runs["id"].astype(int).isin([int(k) for k in keep])
    return runs[mask]
