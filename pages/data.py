"""Data: per-class counts of a split and what the examples look like."""
import streamlit as st

from sslviz.dashboard import router

router.require_router()  # first, before the engine is imported: see sslviz/dashboard/router.py

from sslviz.dashboard import charts, ui  # noqa: E402
from sslviz.engine.config import TrainConfig  # noqa: E402
from sslviz.engine.params import InvalidParameterError  # noqa: E402


store = ui.get_store()
runs = store.runs()

st.title("Data")
SETUP = "The config on the Setup page"
sources = {SETUP: None}
for _, r in runs.iterrows():
    sources[ui.run_label(r)] = int(r["id"])
source = st.selectbox("Split of", list(sources), key="data_source",
                      help="The split the Setup page would draw now, or the split of a stored run.")

try:
    if sources[source] is None:
        values = st.session_state.get("setup_values")
        cfg = TrainConfig(**values) if values else TrainConfig()
    else:
        cfg = TrainConfig.from_dict((store.run(sources[source]) or {}).get("config") or {})
except (InvalidParameterError, TypeError) as exc:
    st.error(f"That config is not valid: {exc}")
    st.stop()

st.caption(f"dataset **{cfg.dataset}** · γ = {cfg.gamma:g} · N₁ = {cfg.n1 or 'default'} · M₁ = {cfg.m1 or 'default'} · "
           f"γ_u = {'γ' if cfg.gamma_u is None else f'{cfg.gamma_u:g}'} · unlabeled profile {cfg.unlabeled_shape} · "
           f"seed {cfg.seed}")

try:
    split = ui.preview_split(cfg)
    ds = ui.load_dataset(cfg.dataset)
except ui.ENGINE_ERRORS as exc:
    st.error(str(exc))
    st.stop()

log_y = st.toggle("log scale", key="data_log", value=False)
st.plotly_chart(charts.make_split_counts_figure(split, title="Examples per class and set", log_y=log_y),
                key="data_split_chart")
with st.expander("Counts table"):
    st.dataframe(split.pivot_table(index=["class", "class_name"], columns="set", values="count").reset_index(),
                 hide_index=True)

st.subheader("Examples")
if ds.kind == "image":
    c1, c2 = st.columns([3, 1])
    per_class = c1.slider("Images per class", 4, 16, 8, key="data_per_class")
    seed = int(c2.number_input("Sample seed", value=0, step=1, min_value=0, key="data_seed"))
    st.plotly_chart(charts.make_samples_figure(ds.x_train, ds.y_train, list(ds.class_names), per_class=per_class,
                                               seed=seed, title=f"Training images of {cfg.dataset}"),
                    key="data_samples")
elif ds.kind == "text":
    c1, c2 = st.columns([3, 1])
    per_class = c1.slider("Sentences per class", 1, 8, 3, key="data_per_class_text")
    seed = int(c2.number_input("Sample seed", value=0, step=1, min_value=0, key="data_seed"))
    views = ui.text_views(cfg, per_class, seed)
    st.caption(f"Labeled sentences of the head class and of the rarest, as the model sees them (lower case, "
               f"<unk> outside the vocabulary of {len(ds.vocab):,} tokens), with a weak view (a few words dropped) "
               f"and a strong view (EDA: synonym replacement, insertion, swap, deletion) at the strength the run's "
               f"techniques give the class: aug_strength {cfg.aug_strength:g}, aug_class_alpha "
               f"{cfg.aug_class_alpha:g}.")
    st.dataframe(views, hide_index=True, key="data_text_views",
                 column_config={"strength": st.column_config.NumberColumn(format="%.2f")})
else:
    st.plotly_chart(charts.make_points_figure(ds.x_train, ds.y_train, list(ds.class_names),
                                              title=f"All training points of {cfg.dataset} (before the split)"),
                    key="data_points")
