"""Live: one run's status and charts, refreshed every 1.5 s while it is queued or running."""
import time

import streamlit as st

from sslviz.dashboard import router

router.require_router()  # first, before the engine is imported: see sslviz/dashboard/router.py

from sslviz.dashboard import charts, ui  # noqa: E402
from sslviz.runs.records import NO_VAL_MESSAGE  # noqa: E402
from sslviz.engine.registry import UNLABELED_ESTIMATES  # noqa: E402
from sslviz.runs.store import VIEW_POINTS  # noqa: E402
from sslviz.runs.worker import never_started  # noqa: E402


REFRESH_S = 1.5
FIRST_POLL_S = 0.3  # while an active run has logged nothing yet, so its first chart shows at once
LIVE_POINTS = VIEW_POINTS  # step bins per series (store.VIEW_POINTS: the worker bins a finished run so)
TABS = ["Pseudo-labels", "Thresholds", "Confusion", "Validation & test", "Technique state", "Training"]
CONFUSION_TITLES = {"val": "Validation-set confusion matrix", "test": "Test-set confusion matrix",
                    "pseudo": "Pseudo-label confusion vs hidden truth"}  # store.confusion kind -> chart title

store, runs = ui.runs_or_empty_state("Live run")

# -- which run: ?run= wins when it changes, else the selectbox (default latest); a link names its run --
raw_run = st.query_params.get("run")
if ui.missing_run_error(store, raw_run):  # a link to a run that is not here: say so, never show another one
    st.page_link(ui.PAGES["live"], label="Show the latest run instead", icon=":material/monitoring:")
    st.stop()
qp_id = None if raw_run is None else int(raw_run)
shown = ui.run_filters(runs, "live", keep=[qp_id, st.session_state.get("live_run")])
ids = shown["id"].astype(int).tolist()
if not ids:
    st.info("No run matches these filters.")
    st.stop()
# No status in the label: the browser keeps showing the old text of the selected option after the
# run-ended rerun, so "(running)" would linger; the status line below is always current.
labels = {int(r["id"]): ui.run_label(r, status=False) for _, r in shown.iterrows()}
if qp_id is not None and st.session_state.get("live_qp") != qp_id:
    st.session_state["live_run"] = qp_id
if st.session_state.get("live_run") not in ids:
    st.session_state["live_run"] = qp_id if qp_id is not None else ids[0]
run_id = st.selectbox("Run", ids, key="live_run", format_func=lambda i: labels.get(i, f"#{i}"))
st.session_state["live_qp"] = run_id
if st.query_params.get("run") != str(run_id):
    st.query_params["run"] = str(run_id)

# -- chart controls (outside the fragment: changing them reruns the page); kept in the URL --
cc1, cc2, cc3 = st.columns([2, 1, 1])
smoothing = cc1.slider("Smoothing (EMA weight, debiased)", 0.0, 0.99, 0.6, 0.01, key="smoothing", bind="query-params",
                       help="TensorBoard-style exponential moving average; 0 shows the raw values.")
x_label = cc2.radio("x axis", ["step", "wall time"], horizontal=True, key="x", bind="query-params")
x = "step" if x_label == "step" else "wall"
normalize = cc3.toggle("Normalise confusion rows", key="live_norm", value=False)
# Plotly's zoom never reaches the server: this window re-reads the chosen steps, at full resolution when
# they hold at most LIVE_POINTS log steps (longer spans are binned: bin mean, min–max band, counts summed).
_total = int((store.run(run_id) or {}).get("total_steps") or 1)
lo_step, hi_step = st.slider("Steps shown", 0, _total, (0, _total), key=f"live_steps_{run_id}",
                             help="Charts of long runs merge steps into bins (line = bin mean, band = min–max, "
                                  "counts per logging window). Narrow the window to see its steps one by one.")
steps = None if (lo_step, hi_step) == (0, _total) else (lo_step, hi_step)

def technique_panel(run: dict, tech, names, smoothing: float, kw: dict) -> None:
    """One chart per quantity the run's techniques report, whatever their names."""
    st.caption("What each technique is tracking, as it reports it every log step (names are "
               "`technique.quantity`): per-class vectors such as distribution alignment's running class "
               "distribution `da.p_model` draw one line per class; single numbers such as FreeMatch's global "
               "threshold `freematch.tau_t` draw one line.")
    if tech.empty:
        st.info("No technique state recorded: this run's techniques report none (plain FixMatch), "
                "or it was recorded before techniques reported their state.")
        return
    quantities = sorted(tech["name"].unique())
    # Estimates of the unlabeled class distribution, beside the hidden truth (which the run never sees).
    truth = (run.get("info") or {}).get("unlabeled_counts")
    estimates = [n for n in UNLABELED_ESTIMATES if n in quantities]
    for i in range(0, len(estimates), 2):
        for col, name in zip(st.columns(2), estimates[i:i + 2]):
            col.plotly_chart(charts.make_estimate_vs_truth_figure(tech, name, truth, names, uirevision=kw.get(
                "uirevision", "live")), key=f"live_truth_{name}")
    for i in range(0, len(quantities), 2):
        for col, name in zip(st.columns(2), quantities[i:i + 2]):
            col.plotly_chart(charts.make_technique_figure(tech, name, names, smoothing=smoothing, **kw),
                             key=f"live_tech_{name}")


_at_start = store.run(run_id) or {}
started_active = ui.is_active(_at_start.get("status", ""))
first_wait = started_active and not int(_at_start.get("step") or 0)  # no metrics yet: poll faster until they come


@st.fragment(run_every=(FIRST_POLL_S if first_wait else REFRESH_S) if started_active else None)
def live_panel():
    ui.reap(store)
    run = store.run(run_id)
    if run is None:
        st.warning(f"Run #{run_id} was deleted.")
        return
    if started_active and not ui.is_active(run["status"]):
        st.rerun()  # the run ended: rerun the page so the fragment stops polling
    # The first metrics are in: draw them now, then rerun the page to poll at the normal pace again.
    back_to_normal_pace = first_wait and int(run["step"] or 0)
    status = run["status"]

    # -- status, progress, stop / resume: the whole run, whatever the steps shown --
    scal = store.scalars(run_id, LIVE_POINTS)
    s1, s2 = st.columns([4, 1])
    s1.markdown(ui.status_line(run, wall=None if scal.empty else float(scal["wall"].iloc[-1])))
    total = max(int(run["total_steps"]), 1)
    eta = charts.estimate_eta(scal["step"], scal["wall"], total) if status == "running" and not scal.empty else None
    text = f"{int(run['step'])} / {total} steps"
    if status == "running":
        text += f" · ETA {charts.format_seconds(eta)}"
    s1.progress(min(1.0, int(run["step"]) / total), text=text)
    if status == "failed":
        st.error(f"Run failed: {run['error'] if ui.present(run.get('error')) else 'unknown error'}")
    elif status == "stopped":
        st.warning("Run stopped before it logged anything: Resume queues it again, from step 0." if
                   never_started(run) else "Run stopped. Resume continues from its last checkpoint.")
    elif status == "queued":
        st.info("Queued: it starts when a device slot is free.")
    if ui.read_only():
        pass  # viewing only: no Stop, Resume or Archive
    elif ui.is_active(status):
        if run.get("stop_requested"):
            s2.caption("Stop requested…")
        elif s2.button("Stop", key="live_stop", icon=":material/stop:"):
            error = ui.stop(store, run_id)
            st.error(error) if error else st.toast(f"Asked run #{run_id} to stop.")
        if status == "running" and s2.button("Test now", key="live_test_now", icon=":material/science:",
                                             help="Evaluate the latest checkpoint on the test set and record it; "
                                                  "the run keeps training. (It is evaluated at the end anyway.)"):
            st.session_state[f"live_tested_{run_id}"] = ui.evaluate_now(store, run_id)
    else:
        if status in ("stopped", "failed"):
            if s2.button("Resume", key="live_resume", icon=":material/play_arrow:") and ui.resume(store, run_id):
                st.rerun()
        archived = bool(run.get("archived"))
        if status in ui.ARCHIVABLE and s2.button("Unarchive" if archived else "Archive", key="live_archive",
                                                 icon=":material/unarchive:" if archived else ":material/archive:",
                                                 help="Archived runs are hidden from the run pickers, not deleted."):
            error = ui.set_archived(store, run_id, not archived)
            if error:
                st.error(error)
            else:
                st.toast(f"Run #{run_id} {'unarchived' if archived else 'archived'}.")
                st.rerun(scope="app")
    if f"live_tested_{run_id}" in st.session_state:  # Test now's result, kept across the refreshes: it names its step
        st.info(st.session_state[f"live_tested_{run_id}"])

    if scal.empty:
        st.plotly_chart(charts.empty_figure("Live charts", "waiting for the first metrics…"), key="live_waiting")
        return
    if steps is not None:  # the status line and ETA above stay on the whole run
        scal = store.scalars(run_id, LIVE_POINTS, steps)
        if scal.empty:
            st.info(f"No metrics were logged between steps {lo_step:,} and {hi_step:,}: widen the steps shown.")
            return
    readers = {"ct": lambda: store.class_train(run_id, LIVE_POINTS, steps),
               "ce": lambda: store.class_eval(run_id, max_points=LIVE_POINTS, steps=steps),
               "ev": lambda: store.evals(run_id, steps=steps, max_points=LIVE_POINTS),
               "tech": lambda: store.technique(run_id, LIVE_POINTS, steps)}
    frames: dict = {}

    clock = scal  # every frame's wall time counts from the same first log (attach_wall)

    def read(what: str):
        """A store frame, read once and only by the tab that draws it (the x axis mapped to wall time if asked)."""
        if what not in frames:
            df = readers[what]()
            frames[what] = charts.attach_wall(df, clock) if x == "wall" else df
        return frames[what]

    if x == "wall":
        scal = charts.attach_wall(scal, clock)
    rev = f"run-{run_id}-{x}"  # keeps zoom across refreshes, resets it for another run or x axis
    kw = dict(x=x, uirevision=rev)
    num_classes = len((run.get("info") or {}).get("class_names") or ()) or None
    names = ui.class_names_of(run, num_classes or (int(read("ct")["cls"].max()) + 1 if not read("ct").empty else 0))

    # Keyed and bound to ?tab=: the server knows the open tab, so only its figures are built.
    tabs = st.tabs(TABS, key="tab", bind="query-params")
    t_pl, t_thr, t_conf, t_eval, t_tech, t_train = (t if t.open is not False else None for t in tabs)
    if t_pl is not None:
        with t_pl:
            ct = read("ct")
            c1, c2 = st.columns(2)
            c1.plotly_chart(charts.make_confidence_heatmap(ct, "conf_pl", names, **kw), key="live_conf_pl")
            c2.plotly_chart(charts.make_confidence_heatmap(ct, "conf_true", names, **kw), key="live_conf_true")
            c1, c2 = st.columns(2)
            c1.plotly_chart(charts.make_pseudo_counts_figure(ct, names, uirevision=rev), key="live_pl_now")
            c2.plotly_chart(charts.make_precision_recall_figure(ct, names, uirevision=rev), key="live_pl_pr")
            st.plotly_chart(charts.make_pseudo_counts_over_time_figure(ct, names, smoothing=smoothing, **kw),
                            key="live_pl_time")
    if t_thr is not None:
        with t_thr:
            ct = read("ct")
            c1, c2 = st.columns(2)
            c1.plotly_chart(charts.make_class_lines_figure(ct, "threshold", names, smoothing=0.0, title="Per-class threshold τ_c",
                                                           y_title="threshold", y_range=(0, 1.02), **kw), key="live_threshold")
            c2.plotly_chart(charts.make_scalars_figure(scal, ["mask_rate", "pl_accuracy"], smoothing=smoothing,
                                                       labels={"mask_rate": "mask rate (accepted share)",
                                                               "pl_accuracy": "pseudo-label accuracy"},
                                                       title="Mask rate and pseudo-label accuracy", y_title="fraction",
                                                       y_range=(0, 1.02), **kw), key="live_mask")
            st.plotly_chart(charts.make_class_lines_figure(ct, "precision", names, smoothing=smoothing,
                                                           title="Pseudo-label precision per class", y_title="precision",
                                                           y_range=(0, 1.02), **kw), key="live_precision_time")
    if t_conf is not None:
        with t_conf:
            ev = read("ev")
            no_val = not ev.empty and not charts.has_validation(ev)  # a run recorded before the validation split
            if no_val:
                st.caption(NO_VAL_MESSAGE)
            for col, (kind, label) in zip(st.columns(3), CONFUSION_TITLES.items()):
                got = store.confusion(run_id, kind, None if steps is None else hi_step)  # the latest shown
                title = f"{label} (step {got[0]})" if got else label
                col.plotly_chart(charts.make_confusion_figure(got[1] if got else None, names, normalize=normalize,
                                                              title=title, uirevision=rev), key=f"live_cm_{kind}")
    if t_eval is not None:
        with t_eval:
            ev, ce = read("ev"), read("ce")
            no_val = not ev.empty and not charts.has_validation(ev)
            st.caption(f"Validation is evaluated every eval_every steps (the curve to watch); the test set at the end "
                       f"of the run and on demand. {charts.SPLIT_LEGEND}." + (f" {NO_VAL_MESSAGE.capitalize()}." if no_val else ""))
            c1, c2 = st.columns(2)
            c1.plotly_chart(charts.make_eval_figure(ev, title="Accuracy: validation (lines), test (◆)", **kw), key="live_acc")
            c2.plotly_chart(charts.make_class_recall_figure(ce, names, **kw), key="live_recall")
    if t_tech is not None:
        with t_tech:
            technique_panel(run, read("tech"), names, smoothing, kw)
    if t_train is not None:
        with t_train:
            c1, c2 = st.columns(2)
            c1.plotly_chart(charts.make_scalars_figure(scal, ["loss", "loss_sup", "loss_unsup"], smoothing=smoothing,
                                                       labels={"loss": "total", "loss_sup": "supervised",
                                                               "loss_unsup": "unsupervised"},
                                                       title="Losses", y_title="loss (cross-entropy)", **kw), key="live_loss")
            c2.plotly_chart(charts.make_scalars_figure(scal, ["lr"], smoothing=0.0, labels={"lr": "learning rate"},
                                                       title="Learning rate", y_title="learning rate", **kw), key="live_lr")
    events = store.events(run_id)
    if not events.empty:
        with st.expander(f"Events ({len(events)})"):
            # st.table, a static table: st.dataframe would load 1.2 MB of grid code with the Live page's first chart
            st.table(events.assign(wall=events["wall"].map(lambda t: time.strftime("%H:%M:%S", time.localtime(t))))
                     .set_index("wall"))
    if back_to_normal_pace:
        st.rerun()


live_panel()


def _run_report() -> str:  # built when the button is clicked, not on every rerun
    from sslviz.dashboard.report import run_report

    return run_report(store, run_id)


# Share: one self-contained HTML file, readable offline. It only reads, so read-only mode keeps it.
st.download_button("Download report", data=_run_report, file_name=f"sslviz-run{run_id}.html", mime="text/html",
                   key="live_report", icon=":material/download:", on_click="ignore",
                   help="This run's config, split, key charts (interactive) and bias summary as one HTML file "
                        "that opens offline.")
