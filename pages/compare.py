"""Compare: runs side by side (runs differing only by seed grouped into one line with a band), with a
majority-bias summary per run; delete runs."""
import pandas as pd
import streamlit as st

from sslviz.dashboard import router

router.require_router()  # first, before the engine is imported: see sslviz/dashboard/router.py

from sslviz.runs import bias, doctor, sweep_spec  # noqa: E402
from sslviz.dashboard import charts, ui  # noqa: E402
from sslviz.runs.records import NO_VAL_MESSAGE, SPLIT_LABELS, SPLITS  # noqa: E402
from sslviz.runs.store import VIEW_POINTS  # noqa: E402

COMPARE_POINTS = VIEW_POINTS  # step bins per series (store.VIEW_POINTS: the worker bins a finished run so)


def latest_recalls(store, short: dict, split: str) -> tuple[dict, list | None, list]:
    """Latest per-class ``split`` recall of each run in ``short`` (id -> label) that has one, by label; the
    class names they share; and the runs left out because their classes differ from the first run's."""
    recalls, names, skipped = {}, None, []
    for i in short:
        last = charts.latest_rows(store.class_eval(i, split, max_points=1))  # max_points=1: the last step only
        if last.empty:
            continue
        run_names = ui.class_names_of(store.run(i), len(last))
        names = run_names if names is None else names
        if run_names != names:
            skipped.append(short[i])
            continue
        recalls[short[i]] = last["recall"].to_numpy(float)
    return recalls, names, skipped


store, all_runs = ui.runs_or_empty_state("Compare runs")
url_runs = ui.ids_param(st.query_params.get("runs"))  # ?runs=3,5: a copied link opens the same comparison
runs = ui.run_filters(all_runs, "compare", keep=url_runs + list(st.session_state.get("compare_runs") or []))

configs = {int(r["id"]): ui.run_config(r) for _, r in runs.iterrows()}
labels = {int(r["id"]): ui.run_label(r) for _, r in runs.iterrows()}
METRICS = {f"{s}_{m}": f"{SPLIT_LABELS[s]} {label}" for s in SPLITS
           for m, label in (("balanced_accuracy", "balanced acc"), ("accuracy", "acc"))}  # runs() column -> header
table = pd.DataFrame({
    "id": runs["id"].astype(int),
    "name": runs["name"],
    "status": runs["status"],
    "preset": runs["preset"],
    "dataset": [configs[int(i)].get("dataset", "") for i in runs["id"]],
    "gamma": [configs[int(i)].get("gamma") for i in runs["id"]],
    "step": runs["step"].astype(int),
    **{header: runs[col] for col, header in METRICS.items()},
    "code version": runs["code_version"],
})
st.dataframe(table, hide_index=True, key="compare_table",
             column_config={h: st.column_config.NumberColumn(format="%.3f") for h in METRICS.values()})
ui.as_of(table["status"], "compare_refresh")
st.caption("Latest evaluation of each run: validation every eval_every steps, test at the end of the run. "
           f"Empty validation columns: {NO_VAL_MESSAGE}. **code version** is the sslviz version and commit that "
           "computed the run, so runs from different code are told apart.")

ids = table["id"].tolist()
if url_runs and url_runs != st.session_state.get("compare_qp"):  # a link (or a changed ?runs=) wins
    st.session_state["compare_runs"] = [i for i in url_runs if i in ids]
    missing = [i for i in url_runs if i not in ids]
    if missing:  # said once, when the link is opened: it names runs this store does not hold (deleted, or another's)
        st.error(f"There is no run {', '.join(map(str, missing))} in this store: the link names "
                 f"{'a run' if len(missing) == 1 else 'runs'} deleted since, or another store's.")
elif "compare_runs" not in st.session_state:
    st.session_state["compare_runs"] = ids[: min(3, len(ids))]
st.session_state["compare_runs"] = [i for i in st.session_state["compare_runs"] if i in ids]
chosen = st.multiselect("Runs to compare", ids, key="compare_runs", format_func=lambda i: labels.get(i, f"#{i}"))
st.session_state["compare_qp"] = list(chosen)
if ui.ids_param(st.query_params.get("runs")) != list(chosen):
    st.query_params["runs"] = ",".join(map(str, chosen))
if not chosen:
    st.info("Pick one or more runs above.")
else:
    short = {i: f"#{i} {runs.loc[runs['id'] == i, 'name'].iloc[0] or runs.loc[runs['id'] == i, 'preset'].iloc[0]}"
             for i in chosen}
    diagnoses = {i: ui.doctor_report(store, i) for i in chosen}
    st.markdown("**The doctor**: what bias each run has (Live shows the evidence)")
    st.text("\n".join(f"{short[i]}: {doctor.headline(d[0]) if d else 'its records cannot be read'}"
                       for i, d in diagnoses.items()))  # plain text: run names are the user's
    tried = [f"#{i}: {v}" for i in chosen for v in doctor.verdicts(store, i)]
    if tried:  # suggestions of the doctor tried beside a run: did the finding they were for get better?
        st.markdown("**The doctor's verdicts** (validation only; \"worked\" only beyond the seeds' spread)")
        st.text("\n".join(tried))  # plain text: run names are the user's
    c1, c2 = st.columns([3, 1])
    smoothing = c1.slider("Smoothing (EMA weight)", 0.0, 0.99, 0.0, 0.01, key="smoothing", bind="query-params")
    x_label = c2.radio("x axis", ["step", "wall time"], horizontal=True, key="x", bind="query-params")
    x = "step" if x_label == "step" else "wall"
    # Plotly's zoom never reaches the server: this window re-reads the chosen steps (at full resolution when they
    # hold at most COMPARE_POINTS evaluations; longer spans are binned: bin mean with its min–max).
    longest = max(int(runs.loc[runs["id"] == i, "total_steps"].iloc[0]) for i in chosen) if "total_steps" in runs else 0
    steps = None
    if longest > 0:
        window = st.slider("Steps shown", 0, longest, (0, longest), key="compare_steps",
                           help="Long runs are binned (bin mean); narrow the window to see its evaluations one by one.")
        steps = None if window == (0, longest) else window
    curves = {}
    for i in chosen:
        ev = store.evals(i, steps=steps, max_points=COMPARE_POINTS)
        curves[short[i]] = charts.attach_wall(ev, ev) if x == "wall" else ev
    # Runs that differ only by seed (a sweep's cell, or repeated single runs) as one line with a band.
    seed_groups = [g for g in sweep_spec.seed_groups({i: configs[i] for i in chosen}).values()]
    grouped = x == "step" and any(len(g) > 1 for g in seed_groups) and st.toggle(
        "Group seeds", value=True, key="compare_group_seeds",
        help="Runs whose configs differ only by seed become one line: the mean over seeds, with a band from the "
             "lowest to the highest seed (test: mean ◆ with the spread as an error bar).")
    rev = "compare-" + "-".join(map(str, chosen)) + x + ("-grouped" if grouped else "")
    colors = charts.run_colors([short[i] for i in chosen])  # a run's colour in every chart below
    c1, c2 = st.columns(2)
    for col, metric, label in ((c1, "balanced_accuracy", "balanced accuracy"), (c2, "accuracy", "accuracy")):
        title = f"{label.capitalize()}: validation (lines), test (◆)"
        if grouped:
            labels_of = {(short[g[0]] if len(g) == 1 else
                          f"{sweep_spec.without_seed(short[g[0]])} · seeds {', '.join(str(configs[i].get('seed')) for i in g)}"):
                         g for g in seed_groups}
            groups = {name: [curves[short[i]] for i in g] for name, g in labels_of.items()}
            fig = charts.make_seed_groups_figure(groups, metric, x=x, smoothing=smoothing, title=title, y_title=label,
                                                 uirevision=rev,
                                                 colors={name: colors[short[g[0]]] for name, g in labels_of.items()})
        else:
            fig = charts.make_runs_overlay_figure(curves, metric, x=x, smoothing=smoothing, title=title, y_title=label,
                                                  uirevision=rev, colors=colors)
        col.plotly_chart(fig, key=f"compare_{metric}")

    # -- per-class recall per split: only runs with the same classes share a chart --
    for col, split in zip(st.columns(len(SPLITS)), SPLITS):
        recalls, names, skipped = latest_recalls(store, short, split)
        col.plotly_chart(charts.make_recall_comparison_figure(
            recalls, names, split=split, title=f"Per-class {SPLIT_LABELS[split]} recall (latest)", uirevision=rev,
            colors=colors),
            key=f"compare_recall_{split}")
        if skipped:
            col.caption(f"Not shown (different classes from the first run): {', '.join(skipped)}.")
        missing = [short[i] for i in chosen if short[i] not in recalls and short[i] not in skipped]
        if missing:
            col.caption(f"{', '.join(missing)}: " + (NO_VAL_MESSAGE if split == "val" else "no test evaluation yet") + ".")

    # -- technique state: what each run's techniques tracked, side by side --
    frames = {short[i]: store.technique(i, COMPARE_POINTS, steps) for i in chosen}
    reported = sorted({n for df in frames.values() if not df.empty for n in df["name"].unique()})
    if reported:
        st.subheader("Technique state")
        picked = st.selectbox("Quantity", reported, key="compare_tech_name",
                              help="Any quantity a technique reports (per-class vectors: the latest value per class; "
                                   "single numbers: over steps). Runs that do not report it are left out.")
        names = ui.class_names_of(store.run(chosen[0]))
        st.plotly_chart(charts.make_technique_comparison_figure(frames, picked, names, uirevision=rev),
                        key="compare_tech_chart")

    # -- majority bias --
    st.subheader("Majority bias")
    st.caption(
        f"**head − tail recall**: mean recall of the {bias.HEAD_TAIL_K} most frequent labeled classes minus the "
        f"{bias.HEAD_TAIL_K} rarest (> 0 favours the head). **recall of the {bias.HEAD_TAIL_K} rarest**: their mean "
        "recall. Both from the latest validation and the latest test evaluation. **KL(pseudo ‖ true)**: divergence "
        "of the accepted pseudo-label distribution (latest logging window) from the true unlabeled class "
        "distribution, in nats (0 = unbiased). **head share**: fraction of accepted pseudo-labels given to the "
        "head class.")
    summary = pd.DataFrame([{"run": short[i], **bias.run_bias_summary(store, i)} for i in chosen],
                           columns=["run", *bias.SUMMARY_KEYS])
    headers = {k: bias.column_label(k) for k in bias.SUMMARY_KEYS}
    st.dataframe(summary.rename(columns=headers), hide_index=True, key="compare_bias_table",
                 column_config={h: st.column_config.NumberColumn(format="%.3f") for h in headers.values()})
    st.plotly_chart(charts.make_bias_figure(summary, uirevision=rev), key="compare_bias_chart")

    def _compare_report(ids=tuple(chosen)) -> str:  # built when the button is clicked, not on every rerun
        from sslviz.dashboard.report import compare_report

        return compare_report(store, ids)

    # Share: one self-contained HTML file, readable offline. It only reads, so read-only mode keeps it.
    st.download_button("Download report", data=_compare_report, mime="text/html",
                       file_name=f"sslviz-compare-{'-'.join(map(str, chosen))}.html", key="compare_report", icon=":material/download:", on_click="ignore",
                       help="These runs' configs, splits, overlays, recall and bias charts (interactive) as one HTML "
                            "file that opens offline.")

# -- archive, or delete with confirmation (none of it on a read-only server) -------------
if not ui.read_only():
    for message in st.session_state.pop("delete_errors", None) or []:  # from the rerun after "Yes, delete"
        st.error(message)
    with st.expander("Archive or delete runs"):
        doomed = st.multiselect("Runs", ids, key="delete_runs", format_func=lambda i: labels.get(i, f"#{i}"))
        ended = [i for i in doomed if runs.loc[runs["id"] == i, "status"].iloc[0] in ui.ARCHIVABLE]
        a1, a2 = st.columns(2)
        for col, archive, label, icon in ((a1, True, "Archive", ":material/archive:"),
                                          (a2, False, "Unarchive", ":material/unarchive:")):
            if col.button(label, key=f"{label.lower()}_selected", icon=icon, disabled=not ended,
                          help="Archived runs are hidden from the run pickers (Show archived brings them back), not deleted."):
                st.session_state["delete_errors"] = [e for e in (ui.set_archived(store, i, archive) for i in ended) if e]
                st.session_state.pop("delete_runs", None)
                st.rerun()
        active = [i for i in doomed if ui.is_active(runs.loc[runs["id"] == i, "status"].iloc[0])]
        if active:
            st.warning(f"Stop {', '.join(f'#{i}' for i in active)} on the Live page before deleting.")
        def delete(pending):
            errors = [e for e in (ui.delete(store, int(i)) for i in pending) if e is not None]
            st.session_state["delete_errors"] = errors
            st.session_state.pop("delete_runs", None)
            st.session_state.pop("compare_runs", None)
            if len(errors) < len(pending):
                st.toast(f"Deleted {len(pending) - len(errors)} run(s).")

        ui.confirm_delete("confirm_delete", list(doomed), f"Delete {', '.join(f'#{i}' for i in doomed)} with their "
                          "metrics, checkpoints and logs? This cannot be undone.", ask=("Delete selected…", "delete_ask"),
                          yes=("Yes, delete", "delete_yes"), no_key="delete_no", on_yes=delete,
                          disabled=not doomed or bool(active))
