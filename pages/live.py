"""Live: one run's status and charts, refreshed every 1.5 s while it is queued or running."""
import time

import streamlit as st

from sslviz.dashboard import router

router.require_router()  # first, before the engine is imported: see sslviz/dashboard/router.py

from sslviz.dashboard import charts, ui, views  # noqa: E402
from sslviz.runs import doctor  # noqa: E402
from sslviz.runs.records import NO_VAL_MESSAGE  # noqa: E402
from sslviz.runs.store import VIEW_POINTS  # noqa: E402
from sslviz.runs.worker import never_started  # noqa: E402


REFRESH_S = 1.5
FIRST_POLL_S = 0.3  # while an active run has logged nothing yet, so its first chart shows at once
LIVE_POINTS = VIEW_POINTS  # step bins per series (store.VIEW_POINTS: the worker bins a finished run so)

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

def draw(rows, frames: views.Frames, style: views.Style) -> None:
    """A tab's views (``views.rows``), each row side by side."""
    for row in rows:
        columns = st.columns(len(row)) if len(row) > 1 else [st]
        for col, view in zip(columns, row):
            col.plotly_chart(view.build(frames, style), key=f"live_{view.key}")


def technique_panel(run: dict, tech, names, style: views.Style) -> None:
    """One chart per quantity the run's techniques report, whatever their names."""
    st.caption("What each technique is tracking, as it reports it every log step (names are "
               "`technique.quantity`): per-class vectors such as distribution alignment's running class "
               "distribution `da.p_model` draw one line per class; single numbers such as FreeMatch's global "
               "threshold `freematch.tau_t` draw one line.")
    if tech.empty:
        st.info("No technique state recorded: this run's techniques report none (plain FixMatch), "
                "or it was recorded before techniques reported their state.")
        return
    figures = views.technique_figures(tech, names, (run.get("info") or {}).get("unlabeled_counts"), style)
    for i in range(0, len(figures), 2):
        for col, (key, fig) in zip(st.columns(2), figures[i:i + 2]):
            col.plotly_chart(fig, key=f"live_{key}")


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
    phases, short = ui.method_phases(run)
    for note in phases:  # which phase each method is in: warm-up, estimating, adapting
        s1.caption(f":material/timeline: {note}")
    for message in short:
        s1.caption(f":material/hourglass_top: {message}")
    diagnosis = ui.doctor_report(store, run_id)
    if diagnosis is not None:  # the bias doctor: what bias this run has, the evidence, what to try
        findings, suggestions = diagnosis
        with s1.expander(f":material/stethoscope: Doctor: {doctor.headline(findings)}", expanded=False):
            for f in findings:
                since = f", since step {f.since:,}" if f.since else ""
                span = f"steps {f.steps[0]:,}-{f.steps[1]:,}" if f.steps else "the data"
                st.markdown(f"**{f.title}** · {f.severity} · from the {f.source} over {span}{since} · "
                            f"chart: **{f.chart}**")
                st.text(f.summary)  # plain text: class names come from the user's folders
            if suggestions:
                st.markdown("**What to try**, best first, and what each rests on:")
                st.text("\n".join(f"{i}. {s.technique}: " + ", ".join(f"{k}={v}" for k, v in s.change.items())
                                   + f" — {s.rests_on}" + (f" (caution: {s.caution})" if s.caution else "")
                                   for i, s in enumerate(suggestions[:3], 1)))
            if not findings:
                st.caption("No majority-bias problem in this run's records so far.")
            elif suggestions and not ui.read_only():  # try it: the change beside this run, same data, seed, budget
                t1, t2, t3 = st.columns([3, 1, 1], vertical_alignment="bottom")
                pick = t1.selectbox("Suggestion to try", range(min(3, len(suggestions))), key="live_try_pick",
                                    format_func=lambda i: f"{i + 1}. {suggestions[i].technique}")
                more = t2.number_input("More seeds", 0, 4, 0, key="live_try_seeds",
                                       help="seeds after this run's own, for both the change and the run as it was")
                if t3.button("Try it", key="live_try", icon=":material/science:"):
                    tried = ui.try_suggestion(store, run_id, findings, suggestions[pick], int(more))
                    if tried:
                        st.switch_page(ui.PAGES["compare"], query_params={"runs": ",".join(map(str, [run_id, *tried]))})
            for verdict in doctor.verdicts(store, run_id):
                st.text(f"Tried: {verdict}")
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
    cache: dict = {}

    clock = scal  # every frame's wall time counts from the same first log (attach_wall)

    def read(what: str):
        """A store frame, read once and only by the tab that draws it (the x axis mapped to wall time if asked)."""
        if what not in cache:
            df = readers[what]()
            cache[what] = charts.attach_wall(df, clock) if x == "wall" else df
        return cache[what]

    if x == "wall":
        scal = charts.attach_wall(scal, clock)
    style = views.Style(smoothing=smoothing, x=x, normalize=normalize,
                        uirevision=f"run-{run_id}-{x}")  # keeps zoom across refreshes, resets it for another run or x
    num_classes = len((run.get("info") or {}).get("class_names") or ()) or None
    names = ui.class_names_of(run, num_classes or (int(read("ct")["cls"].max()) + 1 if not read("ct").empty else 0))
    frames = views.Frames(read=lambda what: scal if what == "scal" else read(what), names=names,
                          confusion=lambda kind: store.confusion(run_id, kind, None if steps is None else hi_step))

    # Keyed and bound to ?tab=: the server knows the open tab, so only its figures are built.
    for tab, container in zip(views.TABS, st.tabs(list(views.TABS), key="tab", bind="query-params")):
        if container.open is False:
            continue
        with container:
            if tab == views.TECHNIQUE_TAB:
                technique_panel(run, read("tech"), names, style)
                continue
            if tab in ("Confusion", "Validation & test"):
                ev = read("ev")
                no_val = not ev.empty and not charts.has_validation(ev)  # a run recorded before the validation split
                if tab == "Confusion" and no_val:
                    st.caption(NO_VAL_MESSAGE)
                elif tab == "Validation & test":
                    st.caption(f"Validation is evaluated every eval_every steps (the curve to watch); the test set at "
                               f"the end of the run and on demand. {charts.SPLIT_LEGEND}."
                               + (f" {NO_VAL_MESSAGE.capitalize()}." if no_val else ""))
            draw(views.rows(tab), frames, style)
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
