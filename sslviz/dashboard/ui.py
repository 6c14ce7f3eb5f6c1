"""Streamlit helpers shared by the pages: the store singleton, cached data, run pickers.

With ``router`` (navigation, read-only setting) and ``setup_form`` (the Setup page's form
state), the only modules besides ``app.py`` and ``pages/`` that import Streamlit.
"""
from __future__ import annotations

import importlib
import os
import threading
import time
from pathlib import Path

import streamlit as st

from ..engine import config as cfgmod
from ..engine import data, prepare, splits
from ..runs import worker
from . import runfilter
from .charts import format_seconds
from ..engine.lazy import pd  # imported on first use: see sslviz/engine/lazy.py
from .router import PAGES, read_only  # noqa: F401  (PAGES and read_only are part of this module's API)
from ..runs.lifecycle import present  # noqa: F401  (the pages' ui.present)
from ..runs.lifecycle import ACTIVE
from ..runs.store import RunStore, StoreError, default_store_path

STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/play_circle:", "finished": ":material/check_circle:",
                "failed": ":material/error:", "stopped": ":material/stop_circle:"}
BUILTIN_DATASETS = data.BUILTIN


# -- store -------------------------------------------------------------------
FIRST_PAINT_S = 1.5  # after the store opens, about when the first page has drawn (bench/live.py: 1.7-2.0 s after the request)


def store_path() -> Path:
    """``$SSLVIZ_STORE`` or the default store under ``$SSLVIZ_HOME``."""
    return Path(os.environ.get("SSLVIZ_STORE") or default_store_path())


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> RunStore:
    store = RunStore(path)  # one connection per thread inside; safe to share across sessions
    if not read_only() and worker.warm_enabled():  # decided now, not when the timer fires
        # A warm worker for the first Start (SSLVIZ_WARM_WORKER=0: none), started FIRST_PAINT_S after the store
        # opens: on 2 cores its 3-4 s of imports took 0.2-0.5 s from the first paint (bench/live.py --browser:
        # 2.04-2.44 s with, 1.84-1.90 s without). A Start before then goes to a cold worker.
        timer = threading.Timer(FIRST_PAINT_S, worker.ensure_spare, args=(store,), kwargs={"owner": os.getpid()})
        timer.daemon = True
        timer.start()
    return store


BACKGROUND_IMPORTS = ("pandas", "pyarrow")  # not on the first paint; a Start and the Live page use them


@st.cache_resource(show_spinner=False)
def import_in_background() -> threading.Thread:
    """Import ``BACKGROUND_IMPORTS`` in a daemon thread, once per server process; ``app.py`` calls this after each
    page, so the first page is drawn before it starts: the Setup page needs neither, and pandas' 0.25 s of imports
    (pyarrow with it) held the first paint back by about 0.2 s (``bench/live.py --paints``). The browser spends
    that time loading the widgets' code; the first Start or Live page then finds them loaded (an import still
    under way is waited for by Python's per-module import lock, never repeated)."""
    thread = threading.Thread(target=lambda: [importlib.import_module(m) for m in BACKGROUND_IMPORTS],
                              name="sslviz-imports", daemon=True)
    thread.start()
    return thread


def get_store() -> RunStore:
    """The shared RunStore; a StoreError is shown and stops the page."""
    try:
        return _open_store(str(store_path()))
    except StoreError as exc:
        st.error(str(exc))
        st.stop()


# -- engine calls ------------------------------------------------------------
# Exceptions whose messages are meant for the user: DatasetError, SplitError and
# InvalidParameterError are ValueErrors, as are the worker's refusals ("cannot resume",
# "stop it before deleting it", "no CUDA here").
ENGINE_ERRORS = (ValueError, StoreError)


def reap(store: RunStore) -> None:
    """Let the worker mark dead runs failed and start queued ones (a read-only server only marks: it starts nothing)."""
    try:
        worker.reap(store, spawn=not read_only(), owner=os.getpid())  # its warm worker leaves with this server
    except ENGINE_ERRORS as exc:
        st.warning(str(exc))


READ_ONLY_REFUSAL = "This server is read-only: it shows runs but does not start, stop or change them."


def _refuse_if_read_only() -> str | None:
    """The refusal to show when this server is read-only (the pages draw no such buttons; this is the backstop)."""
    return READ_ONLY_REFUSAL if read_only() else None


def _attempt(action, *args) -> str | None:
    """Run an engine action that changes the store; the reason as text when it refuses (read-only server, a
    refused transition), else None."""
    if _refuse_if_read_only():
        return READ_ONLY_REFUSAL
    try:
        action(*args)
    except ENGINE_ERRORS as exc:
        return str(exc)
    return None


def submit(store: RunStore, cfg) -> int | None:
    """``worker.submit``; user-facing errors are shown with st.error and give None."""
    if _refuse_if_read_only():
        st.error(READ_ONLY_REFUSAL)
        return None
    try:
        with st.spinner("Checking the data and starting the run…"):
            return int(worker.submit(store, cfg, dataset=load_dataset(cfg.dataset)))
    except ENGINE_ERRORS as exc:
        st.error(str(exc))
        return None


def resume(store: RunStore, run_id: int) -> bool:
    """``worker.resume``; False (after st.error) when the run cannot resume."""
    error = _attempt(worker.resume, store, run_id)
    if error:
        st.error(error)
    return error is None


def delete(store: RunStore, run_id: int) -> str | None:
    """``worker.delete`` (rows, checkpoint and log file); the reason as text when it refuses (a queued or running run)."""
    return _attempt(worker.delete, store, run_id)


def stop(store: RunStore, run_id: int) -> str | None:
    """``RunStore.request_stop``; the reason as text when it refuses (the run ended a moment before the click)."""
    return _attempt(store.request_stop, int(run_id))


def evaluate_now(store: RunStore, run_id: int) -> str:
    """``worker.evaluate_now`` on the test set: what to tell the user (the numbers, or why not)."""
    if _refuse_if_read_only():
        return READ_ONLY_REFUSAL
    try:
        with st.spinner("Evaluating the latest checkpoint on the test set…"):
            record = worker.evaluate_now(store, int(run_id), ("test",))
    except ENGINE_ERRORS as exc:
        return str(exc)
    m = record["eval"]["test"]
    return (f"Test set at step {record['step']} (latest checkpoint): balanced accuracy "
            f"{m['balanced_accuracy']:.3f}, accuracy {m['accuracy']:.3f}. Choose on validation; this is for reporting.")


ARCHIVABLE = ("finished", "stopped", "failed")  # ended runs; the store refuses queued and running ones


def set_archived(store: RunStore, run_id: int, archived: bool) -> str | None:
    """``RunStore.set_archived``: hide an ended run from the pickers (or show it again), nothing deleted; the reason
    as text when it refuses."""
    return _attempt(store.set_archived, int(run_id), bool(archived))


def confirm_delete(state: str, subject, question: str, *, ask: tuple[str, str], yes: tuple[str, str], no_key: str,
                   on_yes, disabled: bool = False, container=None) -> None:
    """A delete that asks first. ``ask`` (label, key) is a button, in ``container``, that keeps ``subject`` in
    ``st.session_state[state]``; while it is kept, ``question`` is shown with ``yes`` (label, key), which calls
    ``on_yes(subject)``, and Cancel (``no_key``). Either reruns the page with the question gone."""
    if st.session_state.get(state) is not None and st.session_state[state] == subject:
        st.warning(question)
        d1, d2 = st.columns(2)
        if d1.button(yes[0], type="primary", key=yes[1]):
            st.session_state[state] = None
            on_yes(subject)
            st.rerun()
        if d2.button("Cancel", key=no_key):
            st.session_state[state] = None
            st.rerun()
    elif (container or st).button(ask[0], key=ask[1], icon=":material/delete:", disabled=disabled):
        st.session_state[state] = subject
        st.rerun()


def all_runs(store: RunStore) -> pd.DataFrame:
    """Every run, archived ones too (``archived`` 0/1), newest first; the pickers filter them (``run_filters``)."""
    return store.runs(include_archived=True)


def runs_or_empty_state(title: str) -> tuple[RunStore, pd.DataFrame]:
    """Page header for the run pages: reap, show ``title``, and stop with a link to Setup if there are no runs.

    The runs include archived ones; pass them through ``run_filters`` before offering them."""
    store = get_store()
    reap(store)
    runs = all_runs(store)
    st.title(title)
    if runs.empty:
        st.info("No runs yet — start one on Setup.")
        st.page_link(PAGES["setup"], label="Go to Setup", icon=":material/tune:")
        st.stop()
    return store, runs


# -- datasets and split previews -------------------------------------------
def dataset_cache_dir() -> Path:
    """Where decoded ImageFolder arrays are cached: the worker's cache next to the store."""
    return worker.cache_dir(get_store())


@st.cache_resource(show_spinner="Loading dataset…", max_entries=4)
def _load_dataset(source: str, cache_dir: str) -> data.Dataset:
    return data.load_dataset(source, cache_dir)  # shared, not copied: callers must not modify the arrays


def load_dataset(source: str) -> data.Dataset:
    """``engine.data.load_dataset``, loaded once per source and cache dir."""
    return _load_dataset(source, str(dataset_cache_dir()))


@st.cache_data(show_spinner=False, max_entries=64)
def _preview(source: str, cache_dir: str, n1, gamma: float, m1, gamma_u, shape: str, seed: int):
    cfg = cfgmod.TrainConfig(dataset=source, n1=n1, gamma=gamma, m1=m1, gamma_u=gamma_u, unlabeled_shape=shape,
                             seed=seed)
    return prepare.preview_counts(cfg, cache_dir, dataset=_load_dataset(source, cache_dir))


def split_counts(cfg) -> tuple[list[str], dict]:
    """Class names and examples per class in each set of the split ``cfg`` would draw (``prepare.preview_counts``;
    numpy, for the Setup page's first paint).

    Cached on the split's own fields, so changing other knobs does not recompute it.
    Raises DatasetError / SplitError with the engine's message.
    """
    return _preview(cfg.dataset, str(dataset_cache_dir()), cfg.n1, float(cfg.gamma), cfg.m1,
                    None if cfg.gamma_u is None else float(cfg.gamma_u), cfg.unlabeled_shape, int(cfg.seed))


def preview_split(cfg) -> pd.DataFrame:
    """``split_counts`` in long format: ``class, class_name, set, count`` (``splits.counts_frame``)."""
    names, counts = split_counts(cfg)
    return splits.counts_frame(counts, names)


def text_views(cfg, per_class: int, seed: int) -> pd.DataFrame:
    """``previews.preview_text_views`` of ``cfg``'s split (a text dataset): head and rarest class, weak and strong."""
    from ..engine.previews import preview_text_views  # torch: only for a text dataset's Data page

    return pd.DataFrame(preview_text_views(cfg, prepare.prepare(cfg, dataset=load_dataset(cfg.dataset)), per_class, seed))


# -- runs ------------------------------------------------------------------
def run_label(row, status: bool = True) -> str:
    """'#3 balanced · toy2d (running)' for a runs() row or run() dict; without the status if ``status`` is False."""
    name = row.get("name") or row.get("preset") or "run"
    dataset = runfilter.dataset_label(run_config(row).get("dataset"))
    label = f"#{int(row['id'])} {name} · {dataset}"
    if row.get("archived") in (1, True):
        label += " · archived"
    return f"{label} ({row.get('status', '?')})" if status else label


def run_config(row) -> dict:
    """A ``runs()`` row's or ``run()`` dict's config (the store decodes it), {} when there is none."""
    cfg = row.get("config") if hasattr(row, "get") else None
    return cfg if isinstance(cfg, dict) else {}


def class_names_of(run: dict, num_classes: int | None = None) -> list[str]:
    names = (run.get("info") or {}).get("class_names")
    if names:
        return [str(n) for n in names]
    return [str(k) for k in range(num_classes or 0)]


def is_active(status: str) -> bool:
    return status in ACTIVE


def method_phases(run: dict) -> tuple[list[str], list[str]]:
    """Where a stored run stands in its techniques' phases (``registry.phase_notes`` at its step), and the budget
    warnings its config draws (``registry.budget_warnings``); empty for a config this version cannot read."""
    import warnings

    from ..engine.registry import budget_warnings, phase_notes

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cfgmod.RetiredKeyWarning)
            cfg = cfgmod.TrainConfig.from_dict(run_config(run))
    except (ValueError, TypeError):
        return [], []
    return phase_notes(cfg, int(run.get("step") or 0)), budget_warnings(cfg)


@st.cache_data(max_entries=4, show_spinner=False)
def _evidence_runs(path: str, finished: tuple) -> list:
    """The store's finished runs as the doctor's evidence, read once per set of ``finished`` run ids."""
    from ..runs import doctor

    return doctor.stored_runs(_open_store(path))


def doctor_report(store: RunStore, run_id: int):
    """(the bias doctor's findings, its suggestions) for a stored run (``runs/doctor.py``), on binned records past
    2,000 logged steps so a long run's page stays quick; None when its records cannot be read."""
    from ..runs import doctor

    try:
        records = doctor.read(store, run_id, max_points=2000)
    except (ValueError, TypeError, KeyError):
        return None
    findings = doctor.diagnose(records)
    runs = store.runs(include_archived=True)
    finished = tuple(sorted(runs.loc[runs.status == "finished", "id"].astype(int)))
    return findings, doctor.suggest(findings, records.cfg, _evidence_runs(str(store.path), finished))


def try_suggestion(store: RunStore, run_id: int, findings, suggestion, more_seeds: int = 0) -> list[int]:
    """Launch ``suggestion`` beside run ``run_id`` (``doctor.launch_trial``), with ``more_seeds`` seeds after the run's
    own for both arms; the new run ids ([] when a submit was refused: its message is shown)."""
    from ..runs import doctor

    seed = int(run_config(store.run(run_id)).get("seed", 0))
    return doctor.launch_trial(store, run_id, suggestion, doctor.target_finding(findings, suggestion),
                               [seed + i for i in range(1, more_seeds + 1)], submit=lambda cfg: submit(store, cfg))


def status_line(run: dict, wall: float | None = None) -> str:
    """'▶️ **running** · step 340 / 1000 · device `cpu` · elapsed 1m 05s'.

    ``wall`` is the trainer's clock at its latest log row; it keeps counting across
    resumes, unlike ``started``, so it is the elapsed time when given.
    """
    status = run["status"]
    parts = [f"{STATUS_ICONS.get(status, '')} **{status}**", f"step {int(run['step'])} / {int(run['total_steps'])}"]
    if present(run.get("device")):
        parts.append(f"device `{run['device']}`")
    if present(wall):
        parts.append(f"elapsed {format_seconds(wall)}")
    elif present(run.get("started")):
        end = run["finished"] if status not in ACTIVE and present(run.get("finished")) else time.time()
        parts.append(f"elapsed {format_seconds(end - run['started'])}")
    return " · ".join(parts)


# -- run pickers for stores with hundreds of runs ------------------------------
FILTER_LABELS = {"preset": "Preset", "dataset": "Dataset", "status": "Status", "sweep": "Sweep"}


def run_filters(runs: pd.DataFrame, prefix: str, keep=()) -> pd.DataFrame:
    """Filter widgets in a collapsed expander and the runs they let through (``runfilter.filter_runs``).

    Preset, dataset, status (and sweep when runs have one), a name search and "show archived"; keyed
    ``<prefix>_filter_*``. Ids in ``keep`` (the run a link names, runs already picked) always stay.
    """
    keep = [int(k) for k in keep if k is not None and str(k).lstrip("-").isdigit()]
    options = runfilter.choices(runs)
    k = lambda name: f"{prefix}_filter_{name}"
    picked = runfilter.RunFilter(
        **{col: tuple(v for v in st.session_state.get(k(col)) or () if v in options.get(col, ()))
           for col in runfilter.CHOICE_COLUMNS},
        text=str(st.session_state.get(k("text")) or ""),
        show_archived=bool(st.session_state.get(k("archived"))),
    )
    shown = runfilter.filter_runs(runs, picked, keep=keep)
    n_archived = int(runs["archived"].fillna(0).astype(int).sum()) if "archived" in runs.columns else 0
    label = f"Filter runs · {len(shown)} of {len(runs)}" + (f" ({n_archived} archived)" if n_archived else "")
    with st.expander(label, expanded=picked.active, icon=":material/filter_list:"):
        cols = st.columns(len(options) + 1)
        for col, (name, values) in zip(cols, options.items()):
            col.multiselect(FILTER_LABELS[name], values, key=k(name), placeholder="any")
        cols[-1].text_input("Name contains", key=k("text"), placeholder="name, preset or #id")
        st.toggle("Show archived", key=k("archived"), help="Archived runs are hidden from the pickers, not deleted.")
    return shown


def as_of(statuses, key: str) -> None:
    """Under a view that does not refresh itself (Compare, Sweeps): when some of its runs are still queued or
    running, say that what it shows is as of now, with a Refresh button (``key``), so a status never passes for
    current when it is not."""
    active = sum(status in ACTIVE for status in statuses)
    if active:
        c1, c2 = st.columns([5, 1])
        c1.caption(f"{active} of these runs {'is' if active == 1 else 'are'} still queued or running: statuses, steps "
                   f"and metrics here are as of {time.strftime('%H:%M:%S')}.")
        c2.button("Refresh", key=key, icon=":material/refresh:")  # a click reruns the page


def ids_param(raw) -> list[int]:
    """Run ids from a ``?runs=3,5`` query parameter, in order; anything that is not an id is skipped."""
    return [int(t) for t in str(raw or "").split(",") if t.strip().isdigit()]


def missing_run_error(store: RunStore, raw) -> bool:
    """When ``?run=`` names no stored run, say so (st.error naming the id) and return True."""
    if raw is None or raw == "":
        return False
    try:
        found = store.run(int(raw)) is not None
    except (TypeError, ValueError, OverflowError):  # not a number, or past SQLite's 64-bit ids
        found = False
    if not found:
        st.error(f"There is no run {raw} in this store.")
    return not found
