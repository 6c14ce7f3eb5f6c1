"""Compare: runs side by side, with a majority-bias summary per run; delete runs."""
import pandas as pd
import streamlit as st

from sslviz import bias, charts, ui

ui.require_router()

store, runs = ui.runs_or_empty_state("Compare runs")

configs = {int(r["id"]): ui.run_config(r) for _, r in runs.iterrows()}
labels = {int(r["id"]): ui.run_label(r) for _, r in runs.iterrows()}
table = pd.DataFrame({
    "id": runs["id"].astype(int),
    "name": runs["name"],
    "status": runs["status"],
    "preset": runs["preset"],
    "dataset": [configs[int(i)].get("dataset", "") for i in runs["id"]],
    "gamma": [configs[int(i)].get("gamma") for i in runs["id"]],
    "step": runs["step"].astype(int),
    "final balanced acc": runs["balanced_accuracy"],
    "final acc": runs["accuracy"],
})
st.dataframe(table, hide_index=True, key="compare_table",
             column_config={"final balanced acc": st.column_config.NumberColumn(format="%.3f"),
                            "final acc": st.column_config.NumberColumn(format="%.3f")})

ids = table["id"].tolist()
default = ids[: min(3, len(ids))]
chosen = st.multiselect("Runs to compare", ids, default=default, key="compare_runs",
                        format_func=lambda i: labels.get(i, f"#{i}"))
if not chosen:
    st.info("Pick one or more runs above.")
else:
    short = {i: f"#{i} {runs.loc[runs['id'] == i, 'name'].iloc[0] or runs.loc[runs['id'] == i, 'preset'].iloc[0]}"
             for i in chosen}
    c1, c2 = st.columns([3, 1])
    smoothing = c1.slider("Smoothing (EMA weight)", 0.0, 0.99, 0.0, 0.01, key="compare_smoothing")
    x_label = c2.radio("x axis", ["step", "wall time"], horizontal=True, key="compare_x")
    x = "step" if x_label == "step" else "wall"
    curves = {}
    for i in chosen:
        ev = store.evals(i)
        curves[short[i]] = charts.attach_wall(ev, ev) if x == "wall" else ev
    rev = "compare-" + "-".join(map(str, chosen)) + x
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.make_runs_overlay_figure(curves, "balanced_accuracy", x=x, smoothing=smoothing,
                                                    title="Test balanced accuracy", y_title="balanced accuracy",
                                                    uirevision=rev), key="compare_bal_acc")
    c2.plotly_chart(charts.make_runs_overlay_figure(curves, "accuracy", x=x, smoothing=smoothing, title="Test accuracy",
                                                    y_title="accuracy", uirevision=rev), key="compare_acc")

    # -- per-class recall: only runs with the same classes share a chart --
    recalls, names, skipped = {}, None, []
    for i in chosen:
        ce = store.class_eval(i)
        if ce.empty:
            continue
        last = charts.latest_rows(ce)
        run = store.run(i)
        run_names = ui.class_names_of(run, len(last))
        if names is None:
            names = run_names
        if run_names != names:
            skipped.append(short[i])
            continue
        recalls[short[i]] = last["recall"].to_numpy(float)
    st.plotly_chart(charts.make_recall_comparison_figure(recalls, names, title="Per-class test recall (latest eval)",
                                                         uirevision=rev), key="compare_recall")
    if skipped:
        st.caption(f"Not shown (different classes from the first run): {', '.join(skipped)}.")

    # -- majority bias --
    st.subheader("Majority bias")
    st.caption(
        f"**head − tail recall**: mean test recall of the {bias.HEAD_TAIL_K} most frequent labeled classes minus the "
        f"{bias.HEAD_TAIL_K} rarest (> 0 favours the head). **KL(pseudo ‖ true)**: divergence of the accepted "
        "pseudo-label distribution (latest logging window) from the true unlabeled class distribution, in nats "
        "(0 = unbiased). **head share**: fraction of accepted pseudo-labels given to the head class.")
    rows = [{"run": short[i], **bias.run_bias_summary(store, i)} for i in chosen]
    summary = pd.DataFrame(rows, columns=["run", "head_tail_gap", "kl_pseudo_true", "head_share"])
    st.dataframe(summary.rename(columns={"head_tail_gap": "head − tail recall", "kl_pseudo_true": "KL(pseudo ‖ true)",
                                         "head_share": "head share of pseudo-labels"}),
                 hide_index=True, key="compare_bias_table",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("head − tail recall", "KL(pseudo ‖ true)", "head share of pseudo-labels")})
    st.plotly_chart(charts.make_bias_figure(summary, uirevision=rev), key="compare_bias_chart")

# -- delete, with confirmation ----------------------------------------------
for message in st.session_state.pop("delete_errors", None) or []:  # from the rerun after "Yes, delete"
    st.error(message)
with st.expander("Delete runs"):
    doomed = st.multiselect("Runs to delete", ids, key="delete_runs", format_func=lambda i: labels.get(i, f"#{i}"))
    active = [i for i in doomed if ui.is_active(runs.loc[runs["id"] == i, "status"].iloc[0])]
    if active:
        st.warning(f"Stop {', '.join(f'#{i}' for i in active)} on the Live page before deleting.")
    if st.session_state.get("confirm_delete"):
        pending = st.session_state["confirm_delete"]
        st.warning(f"Delete {', '.join(f'#{i}' for i in pending)} with their metrics, checkpoints and logs? This cannot be undone.")
        d1, d2 = st.columns(2)
        if d1.button("Yes, delete", type="primary", key="delete_yes"):
            errors = [e for e in (ui.delete(store, int(i)) for i in pending) if e is not None]
            st.session_state["confirm_delete"] = None
            st.session_state["delete_errors"] = errors
            st.session_state.pop("delete_runs", None)
            st.session_state.pop("compare_runs", None)
            if len(errors) < len(pending):
                st.toast(f"Deleted {len(pending) - len(errors)} run(s).")
            st.rerun()
        if d2.button("Cancel", key="delete_no"):
            st.session_state["confirm_delete"] = None
            st.rerun()
    elif st.button("Delete selected…", key="delete_ask", disabled=not doomed or bool(active)):
        st.session_state["confirm_delete"] = list(doomed)
        st.rerun()
