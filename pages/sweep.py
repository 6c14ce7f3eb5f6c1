"""Sweep: where each method helps. Heatmaps of a sweep's cells (mean ± std over seeds), knobs against a metric,
a cell's runs opened in Compare, exports; stop, resume and delete the whole sweep."""

import streamlit as st

from sslviz.dashboard import router

router.require_router()  # first, before the engine is imported: see sslviz/dashboard/router.py

from sslviz.runs import lifecycle, sweep, sweep_results, sweep_spec  # noqa: E402
from sslviz.dashboard import charts, ui  # noqa: E402

store = ui.get_store()
ui.reap(store)
st.title("Sweeps")
sweeps = store.sweeps()
if sweeps.empty:
    st.info("No sweeps yet: define one in the Sweep section of Setup, or with `python -m sslviz sweep --grid "
            "preset=fixmatch,balanced --grid gamma=10,50 --seeds 0,1,2 --steps 300`.")
    st.page_link(ui.PAGES["setup"], label="Go to Setup", icon=":material/tune:")
    st.stop()

ids = sweeps["id"].astype(int).tolist()
names = {int(r.id): f"#{int(r.id)} {r.name or 'sweep'} · {r.runs} runs · {r.executor}" for r in sweeps.itertuples()}
raw = st.query_params.get("sweep")
if raw is not None and st.session_state.get("sweep_qp") != raw:  # a link (or a changed ?sweep=) wins
    if str(raw).isdigit() and int(raw) in ids:
        st.session_state["sweep_pick"] = int(raw)
    else:
        st.error(f"There is no sweep {raw} in this store (deleted since, or another store's): pick one below.")
st.session_state["sweep_qp"] = raw
sweep_id = st.selectbox("Sweep", ids, key="sweep_pick", format_func=names.get)
if str(st.query_params.get("sweep")) != str(sweep_id):
    st.query_params["sweep"] = str(sweep_id)
row = store.sweep(sweep_id)
keys = sweep_spec.varied(row["spec"])
res = sweep_results.results(store, sweep_id)
counts = res["status"].value_counts()
done = int(counts.get(lifecycle.FINISHED, 0))
st.progress(done / max(1, len(res)), text=f"{done} of {len(res)} runs finished · "
            + ", ".join(f"{n} {s}" for s, n in counts.items()))
ui.as_of(res["status"], "sweep_refresh")
spec = row["spec"]
early = row["options"].get("early_stop")
st.caption("Grid: " + " × ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in spec["grid"].items())
           + f" × seeds {spec['seeds']}; shared: " + (", ".join(f"{k}={v}" for k, v in spec["base"].items()) or "—")
           + f". Executor: {row['executor']}"
           + (f", tuned with ASHA on validation balanced accuracy (rungs at {early['grace_period']} × "
              f"{early['reduction_factor']:g}^k steps)." if early else "."))
stopped_early = res[res["early_stop"].notna()]
if len(stopped_early):
    st.info(f"ASHA stopped {len(stopped_early)} run(s) early; their cells show the last validation before the stop "
            "and no test score:\n" + "\n".join(
                f"- #{r.run} ({sweep_spec.describe({**{k: getattr(r, k) for k in keys}, 'seed': r.seed})}): {r.early_stop}"
                for r in stopped_early.itertuples()))

# -- stop, resume, delete the whole sweep ----------------------------------------------------------
if not ui.read_only():
    for message in st.session_state.pop("sweep_messages", None) or []:
        st.info(message)
    b1, b2, b3 = st.columns(3)
    active = res["status"].isin(lifecycle.ACTIVE).any()
    ended = res["status"].isin((lifecycle.STOPPED, lifecycle.FAILED)).any()
    if b1.button("Stop sweep", key="sweep_stop", icon=":material/stop:", disabled=not active):
        st.session_state["sweep_messages"] = [f"Stop requested for {len(sweep.stop(store, sweep_id))} run(s)."]
        st.rerun()
    if b2.button("Resume sweep", key="sweep_resume", icon=":material/play_arrow:", disabled=not ended or bool(early),
                 help="A tuned sweep is not resumed: ASHA's stops are final; start a new sweep to tune again."
                 if early else "Queue its stopped and failed runs again (from their checkpoints). A Ray sweep needs "
                               "its driver: python -m sslviz sweep resume N."):
        resumed = sweep.resume(store, sweep_id)
        note = (f" Drive them with: python -m sslviz sweep resume {sweep_id}" if row["executor"] == "ray" else "")
        st.session_state["sweep_messages"] = [f"{len(resumed)} run(s) queued to resume.{note}"]
        st.rerun()
    def delete(sweep_id):
        try:
            sweep.delete(store, sweep_id)
        except ValueError as exc:
            st.session_state["sweep_messages"] = [str(exc)]
        st.session_state.pop("sweep_pick", None)
        st.query_params.pop("sweep", None)

    ui.confirm_delete("sweep_confirm", sweep_id, f"Delete sweep {sweep_id} and its {len(res)} runs with their metrics "
                      "and checkpoints?", ask=("Delete sweep…", "sweep_delete"),
                      yes=("Yes, delete the sweep", "sweep_delete_yes"), no_key="sweep_delete_no", on_yes=delete,
                      disabled=bool(active), container=b3)

if res.empty:
    st.stop()

# -- the map: rows x columns (x facet), one panel per metric ------------------------------------------
st.subheader("Where each method helps")
axes = keys or ["seed"]
default_rows = "preset" if "preset" in axes else axes[0]
default_cols = "gamma" if "gamma" in axes and default_rows != "gamma" else (
    [k for k in axes if k != default_rows] or [default_rows])[0]
a1, a2, a3 = st.columns(3)
rows_key = a1.selectbox("Rows", axes, index=axes.index(default_rows), key="sweep_rows")
ONE_COLUMN = "sweep"  # one knob swept: its values as rows of one column, not knob x knob
col_choices = [k for k in axes if k != rows_key] or [ONE_COLUMN]
cols_key = a2.selectbox("Columns", col_choices, index=col_choices.index(default_cols) if default_cols in col_choices
                        else 0, key="sweep_cols")
facet_choices = ["(none)", *[k for k in axes if k not in (rows_key, cols_key)]]
facet_pick = a3.selectbox("Panels", facet_choices, key="sweep_facet",
                          index=facet_choices.index("unlabeled_shape") if "unlabeled_shape" in facet_choices else 0)
facet = None if facet_pick == "(none)" else facet_pick
shown = res
for k in keys:  # any other varied knob is fixed to one value
    if k not in (rows_key, cols_key, facet):
        values = list(dict.fromkeys(res[k]))
        pick = st.selectbox(f"{k}", values, key=f"sweep_fix_{k}")
        shown = shown[shown[k] == pick]
cells = sweep_results.cell_table(shown, [k for k in keys if k in (rows_key, cols_key, facet)] if keys else [])
if cols_key == ONE_COLUMN:
    cells = cells.assign(**{ONE_COLUMN: "all runs"})
st.caption("Each cell: mean ± std over seeds of the latest evaluation, n = seeds with a value; on the validation "
           "tabs ★ marks the best row of each column (highest, or the smallest head − tail gap; ties share it), and "
           "the test tabs have none: choose on validation, report test beside it. Balanced accuracy on the "
           "validation set (every eval_every steps) and the test set (end of each run); 3-rarest recall and head − "
           "tail gap from sslviz.bias.")
figures = {}
tabs = st.tabs([sweep_results.METRICS[m][0] for m in sweep_results.METRICS])
for tab, metric in zip(tabs, sweep_results.METRICS):
    fig = charts.make_sweep_heatmap_figure(cells, metric, rows=rows_key, cols=cols_key, facet=facet) if keys else None
    if fig is not None:
        figures[sweep_results.METRICS[metric][0]] = fig
        tab.plotly_chart(fig, key=f"sweep_heatmap_{metric}")

st.subheader("Knobs against the metric")
par_metric = st.selectbox("Metric", list(sweep_results.METRICS), format_func=lambda m: sweep_results.METRICS[m][0], key="sweep_par")
par = charts.make_sweep_parallel_figure(res, par_metric, keys)
figures["parallel coordinates"] = par
st.plotly_chart(par, key="sweep_parallel")

# -- the cells as a table; pick one to open its runs in Compare ----------------------------------------------
st.subheader("Cells")
all_cells = sweep_results.cell_table(res, keys)
table_cols = [*keys, "seeds", *(c for m in sweep_results.METRICS for c in (f"{m}_mean", f"{m}_std")), "runs"]
event = st.dataframe(all_cells[table_cols], hide_index=True, key="sweep_table", on_select="rerun",
                     selection_mode="single-row",
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table_cols
                                    if c.endswith(("_mean", "_std"))})
labels = [sweep_spec.describe({k: r[k] for k in keys}) or "all" for _, r in all_cells.iterrows()]
selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
if selected and st.session_state.get("sweep_table_pick") != selected[0]:
    st.session_state["sweep_table_pick"] = selected[0]
    st.session_state["sweep_cell"] = labels[selected[0]]
c1, c2 = st.columns([3, 1])
cell = c1.selectbox("Cell (or select a table row)", labels, key="sweep_cell")
cell_runs = [int(i) for i in all_cells.iloc[labels.index(cell)]["runs"].split(",")]
c2.write("")
if c2.button("Open in Compare", key="sweep_open_compare", icon=":material/compare_arrows:"):
    st.session_state.pop("compare_runs", None)
    st.switch_page(ui.PAGES["compare"], query_params={"runs": ",".join(map(str, cell_runs))})
st.caption(f"Runs of this cell: {', '.join(f'#{i}' for i in cell_runs)}.")

# -- exports -------------------------------------------------------------------------------------------------
e1, e2, e3 = st.columns(3)
e1.download_button("Table as CSV", data=sweep_results.export_table(all_cells, "csv"), file_name=f"sweep{sweep_id}.csv",
                   mime="text/csv", key="sweep_csv", on_click="ignore", icon=":material/download:")
e2.download_button("Table as Parquet", data=lambda: sweep_results.export_table(all_cells, "parquet"),
                   file_name=f"sweep{sweep_id}.parquet", mime="application/octet-stream", key="sweep_parquet",
                   on_click="ignore", icon=":material/download:")
e3.download_button("Figures as HTML", data=lambda: charts.sweep_figures_html(figures), file_name=f"sweep{sweep_id}.html",
                   mime="text/html", key="sweep_html", on_click="ignore", icon=":material/download:")
with st.expander("Runs of the sweep"):
    st.dataframe(res, hide_index=True, key="sweep_runs_table")
