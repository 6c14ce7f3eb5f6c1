"""Setup: configure a run (dataset, imbalance, every TrainConfig knob), preview the split, start it."""
import streamlit as st

from sslviz.dashboard import router

router.require_router()  # first, before the engine is imported: see sslviz/dashboard/router.py

from sslviz.dashboard import charts, setup_form as form, ui  # noqa: E402
from sslviz.engine import text  # noqa: E402
from sslviz.engine.config import FIELDS, PRESET_DESCRIPTIONS, PRESETS  # noqa: E402
from sslviz.engine.registry import budget_warnings  # noqa: E402


def _widget(name: str, container) -> None:
    """The widget of a config field, all read from its declaration (sslviz.config.FIELDS)."""
    f = FIELDS[name]
    label, key = f.widget_label, form.key(name)
    if f.kind == "options":
        container.selectbox(label, f.choices, key=key, help=f.help)
    elif f.kind == "bool":
        container.checkbox(label, key=key, help=f.help)
    elif f.kind == "int":
        container.number_input(label, step=1, key=key, help=f.help, placeholder=f.placeholder)
    elif f.kind == "float":
        container.number_input(label, step=f.step or 0.01, format="%g", key=key, help=f.help,
                               placeholder=f.placeholder)
    else:
        container.text_input(label, key=key, help=f.help)


form.init_state()
if ui.read_only() and st.session_state.get("ds_choice") not in ui.BUILTIN_DATASETS:
    st.session_state["ds_choice"] = ui.BUILTIN_DATASETS[0]  # no folder loading on a read-only server (e.g. from YAML)
store = ui.get_store()
values = form.current_values()
cfg, error = form.validate(values)
error_field = error.field if error is not None else None

st.title("Set up a run")
st.caption("Configure FixMatch under class imbalance, check the split, then start it in a background process.")

# -- preset ---------------------------------------------------------------
pc1, pc2 = st.columns([1, 2])
pc1.selectbox("Preset", list(PRESETS), key=form.key("preset"), on_change=form.apply_preset,
              help="Choosing a preset resets the technique knobs (thresholds, losses, augmentation).")
preset = st.session_state[form.key("preset")]
pc2.markdown(f"**{preset}** — {PRESET_DESCRIPTIONS.get(preset, '')}")

# -- dataset --------------------------------------------------------------
st.subheader("Dataset")
dc1, dc2 = st.columns([1, 2])
choice = dc1.selectbox("Dataset", [*ui.BUILTIN_DATASETS, *([] if ui.read_only() else [form.FOLDER])], key="ds_choice",
                       help="digits: sklearn 8×8 digits (10 classes). toy2d: six overlapping 2-D blobs. "
                            "wordnet: text, WordNet noun glosses by topic (10 classes, from the wordnet-base package). "
                            "Or a CIFAR-10 pickle folder / ImageFolder tree (train/<class>/, test/<class>/), or your "
                            "own text: a CSV / TSV / JSONL file with 'text' and 'label' columns, or a folder of "
                            "<class>/*.txt.")
if choice == "wordnet" and not text.wordnet_available():
    dc2.warning(text.wordnet_missing_message())
if choice == form.FOLDER:
    dc2.text_input("Dataset folder or file", key="ds_path",
                   placeholder="/data/cifar-10-batches-py, /data/my_images, /data/reviews.csv or /data/my_texts")
    if dc2.button("Check it loads", key="check_dataset"):
        try:
            ds = ui.load_dataset((st.session_state.get("ds_path") or "").strip())
        except ui.ENGINE_ERRORS as exc:
            dc2.error(str(exc))
        else:
            dc2.success(f"Loaded {len(ds.y_train)} training and {len(ds.y_test)} test {ds.kind}s of shape "
                        f"{ds.input_shape}, {ds.num_classes} classes: {', '.join(ds.class_names)}. "
                        + ds.skipped_note())
if error_field == "dataset":
    st.error(str(error))

# -- imbalance with a live preview ----------------------------------------
st.subheader("Imbalance")
cols = st.columns(len(form.IMBALANCE))
for f, col in zip(form.IMBALANCE, cols):
    _widget(f, col)
if error_field in form.IMBALANCE:
    st.error(str(error))

split_error = None
if cfg is not None:
    try:
        class_names, counts = ui.split_counts(cfg)
    except ui.ENGINE_ERRORS as exc:
        split_error = str(exc)
        st.error(split_error)
    else:
        tc1, tc2 = st.columns([1, 5])
        as_chart = tc1.toggle("chart", key="split_as_chart", value=False,
                              help="Draw the split as a chart (per set, log scale possible) instead of a table.")
        if as_chart:
            log_y = tc2.toggle("log scale", key="split_log", value=False)
            figure = charts.make_split_counts_figure(ui.preview_split(cfg), title="Split preview: examples per class",
                                                     log_y=log_y)
            st.plotly_chart(figure, key="setup_split_chart")
        else:  # a table first: no plotly.js on the first paint (see charts.split_counts_html)
            st.caption("Split preview: examples per class (bars scaled per column)")
            st.html(charts.split_counts_html(class_names, counts))

# -- every other knob, grouped ---------------------------------------------
st.subheader("Training knobs")
for title, fields in form.GROUPS.items():
    with st.expander(title, expanded=error_field in fields):
        if error_field in fields:
            st.error(str(error))
        cols = st.columns(3)
        for i, f in enumerate(fields):
            _widget(f, cols[i % 3])

# -- YAML import / export ---------------------------------------------------
with st.expander("Import / export YAML"):
    st.file_uploader("YAML config file", type=["yaml", "yml"], key="yaml_file")
    st.text_area("…or paste YAML", key="yaml_text", height=150, placeholder="preset: balanced\ndataset: toy2d\ngamma: 20")
    st.button("Apply YAML", key="apply_yaml", on_click=form.apply_yaml)
    if st.session_state.get("yaml_error"):
        st.error(st.session_state["yaml_error"])
    elif st.session_state.get("yaml_ok"):
        st.success(st.session_state["yaml_ok"])
    st.download_button("Download this config as YAML", data=cfg.to_yaml() if cfg is not None else "",
                       file_name=f"sslviz-{values.get('preset') or 'config'}.yaml", mime="application/x-yaml",
                       disabled=cfg is None, on_click="ignore", key="export_yaml")

# -- sweep: this config over a grid ---------------------------------------------------------
with st.expander("Sweep: run this config over a grid", icon=":material/grid_on:"):
    st.caption("One axis per line, FIELD=V1,V2 over any knob (preset, gamma, unlabeled_shape, lr, …); every cell "
               "runs with each seed, the rest of this form shared. Every cell is checked before anything starts.")
    st.text_area("Grid", key="sweep_grid", height=100, placeholder="preset=fixmatch,balanced\ngamma=10,50\n"
                 "unlabeled_shape=consistent,reversed")
    gc1, gc2 = st.columns(2)
    gc1.text_input("Seeds", key="sweep_seeds", value="0,1,2", help="comma-separated, e.g. 0,1,2")
    gc2.text_input("Sweep name", key="sweep_name", placeholder="optional")
    sweep_plan, sweep_error = None, None
    grid_lines = [ln for ln in (st.session_state.get("sweep_grid") or "").splitlines() if ln.strip()]
    if grid_lines and cfg is not None:
        from sslviz.runs import sweep as sw, sweep_spec

        try:
            grid = sweep_spec.parse_grid(grid_lines)
            seeds = sweep_spec.parse_seeds(st.session_state.get("sweep_seeds") or "0")
            base = sweep_spec.shared_base(cfg.to_dict(), grid)
            spec = sweep_spec.SweepSpec(grid=grid, seeds=seeds, base=base, name=st.session_state.get("sweep_name") or "")
            sweep_plan = sw.validate(spec, ui.dataset_cache_dir(), store=store)
            parallel = sw.local_parallelism(sweep_plan.configs, store)
            seconds, _ = sw.estimate_seconds(sweep_plan.configs, parallel=parallel, store=store)
            st.info(f"**{len(sweep_plan.configs)} runs**, about **{charts.format_seconds(seconds)}** with {parallel} "
                    f"at once on the local worker queue ({sweep_plan.basis}).")
            for message in sweep_plan.warnings:
                st.warning(message, icon=":material/hourglass_top:")
        except ui.ENGINE_ERRORS as exc:
            sweep_error = str(exc)
            st.error(sweep_error)
    if not ui.read_only() and st.button("Start sweep", key="start_sweep", disabled=sweep_plan is None,
                                        icon=":material/play_arrow:"):
        sweep_id, _ = sw.submit_local(store, sweep_plan)
        st.switch_page(ui.PAGES["sweep"], query_params={"sweep": str(sweep_id)})

# -- start ---------------------------------------------------------------------
st.divider()
sc1, sc2 = st.columns([2, 1])
sc1.text_input(FIELDS["name"].widget_label, key=form.key("name"), placeholder="e.g. fixmatch γ=50")
if error is not None and error_field not in form.SECTION_FIELDS:
    st.error(str(error))
for message in budget_warnings(cfg) if cfg is not None else ():  # before Start: the method's early phase only
    st.warning(message, icon=":material/hourglass_top:")
if ui.read_only():
    pass  # viewing only: no Start
elif error is not None:
    sc2.caption("Fix the highlighted setting to enable Start.")
elif split_error is not None:
    sc2.caption("Fix the split to enable Start.")
start = not ui.read_only() and sc2.button("Start run", type="primary", key="start",
                                          disabled=cfg is None or split_error is not None)
form.save()

if start and cfg is not None:
    run_id = ui.submit(store, cfg)
    if run_id is not None:
        st.switch_page(ui.PAGES["live"], query_params={"run": str(run_id)})
