"""Teaching: two toy 2-D runs side by side — decision regions and pseudo-labels step by step."""
import numpy as np
import streamlit as st

from sslviz.dashboard import router

router.require_router()  # first, before the engine is imported: see sslviz/dashboard/router.py

from sslviz.dashboard import charts, ui  # noqa: E402
from sslviz.engine.config import PRESET_DESCRIPTIONS, TrainConfig  # noqa: E402
from sslviz.runs import doctor  # noqa: E402
from sslviz.runs.records import NO_VAL_MESSAGE, SPLIT_LABELS, SPLITS  # noqa: E402


PAIR = ("fixmatch", "balanced")  # the pair the launch button starts


def launch_pair(store) -> list[int]:
    ids = []
    for preset in PAIR:
        cfg = TrainConfig.from_dict(dict(dataset="toy2d", eval_every=50, name=f"toy2d {preset}"), preset=preset)
        rid = ui.submit(store, cfg)
        if rid is None:
            break
        ids.append(rid)
    return ids


store = ui.get_store()
ui.reap(store)
runs = ui.all_runs(store)

st.title("Teaching: majority bias on toy 2-D data")
st.caption("Six overlapping blobs with a long-tailed labeled set. Background = the model's decision regions; "
           "points = unlabeled examples coloured by their pseudo-label, **filled** when accepted, **hollow** when "
           "below the confidence threshold. Watch the head classes' regions swallow the tail.")

toy = runs[[ui.run_config(r).get("dataset") == "toy2d" for _, r in runs.iterrows()]] if not runs.empty else runs
if not toy.empty:
    toy = ui.run_filters(toy, "teach", keep=[st.session_state.get("teach_left"), st.session_state.get("teach_right")])
labels = {int(r["id"]): ui.run_label(r) for _, r in toy.iterrows()} if not toy.empty else {}

if len(toy) < 2:
    st.info(
        "Launch two toy2d runs to compare them here — for example plain FixMatch against the `balanced` preset "
        f"({PRESET_DESCRIPTIONS['balanced']}). The button starts both with the default imbalance (γ = 50)."
        + (" One toy2d run exists already." if len(toy) == 1 else ""))
    if not ui.read_only() and st.button(f"Launch {PAIR[0]} vs {PAIR[1]} on toy2d", type="primary", key="teach_launch"):
        ids = launch_pair(store)
        if len(ids) == len(PAIR):
            st.toast(f"Started runs {', '.join(f'#{i}' for i in ids)}.")
            st.session_state["teach_left"], st.session_state["teach_right"] = ids  # show the pair just launched
            st.rerun()
    if toy.empty:
        st.stop()

ids = toy["id"].astype(int).tolist()
s1, s2 = st.columns(2)  # default: the two latest toy2d runs, older on the left
picked = [
    s1.selectbox("Left run", ids, index=min(1, len(ids) - 1), key="teach_left", format_func=lambda i: labels[i]),
    s2.selectbox("Right run", ids, index=0, key="teach_right", format_func=lambda i: labels[i]),
]
snaps = {rid: store.snapshots(rid) for rid in set(picked)}
all_steps = sorted({s for rid in picked for s, _ in snaps[rid]})
if not all_steps:
    st.info("No snapshots yet: toy2d runs record one at every evaluation (eval_every steps). "
            "Refresh (R) once the runs have evaluated.")
    st.stop()

step = all_steps[0]
if len(all_steps) > 1:
    # Follow the newest snapshot while the slider sits at the end (new evals, other runs picked);
    # keep the user's step otherwise.
    if st.session_state.get("teach_step") not in all_steps or \
            st.session_state.get("teach_step") == st.session_state.get("teach_step_last"):
        st.session_state["teach_step"] = all_steps[-1]
    st.session_state["teach_step_last"] = all_steps[-1]
    step = st.select_slider("Training step", options=all_steps, key="teach_step",
                            help="Each run shows its latest snapshot at or before this step.")
else:
    st.caption(f"One snapshot so far, at step {step}.")


def eval_caption(latest: dict) -> str:
    """Balanced accuracy of the latest validation and test evaluations (`RunStore.latest_evals`), labelled."""
    parts = [f"{SPLIT_LABELS[s]} {latest[s]['balanced_accuracy']:.2f} (step {int(latest[s]['step'])})"
             for s in SPLITS if s in latest]
    text = "Balanced accuracy: " + " · ".join(parts) if parts else "Not evaluated yet."
    return text if "val" in latest or not latest else f"{text}; {NO_VAL_MESSAGE}."


def panels(step: int) -> None:
    """Both runs' snapshots at (or just before) ``step``, side by side."""
    c1, c2 = st.columns(2)
    for col, rid, side in zip((c1, c2), picked, ("left", "right")):
        run = store.run(rid)
        names = ui.class_names_of(run)
        earlier = [(s, p) for s, p in snaps[rid] if s <= step] or snaps[rid][:1]
        if not earlier:
            col.info(f"{labels[rid]}: no snapshot yet.")
            continue
        s, payload = earlier[-1]
        pts = np.asarray(payload.get("points") or np.zeros((0, 6)), dtype=float).reshape(-1, 6)
        fig = charts.make_snapshot_figure(payload, names, title=f"{labels[rid]} — step {s}", uirevision=f"teach-{side}-{rid}")
        col.plotly_chart(fig, key=f"teach_chart_{side}")
        col.caption(eval_caption(store.latest_evals(rid, s)))
        if len(pts):
            accepted = pts[:, 4] > 0
            correct = (pts[:, 2] == pts[:, 5]) & accepted
            col.caption(f"{int(accepted.sum())} of {len(pts)} shown points accepted; "
                        f"{correct.sum() / max(accepted.sum(), 1):.0%} of accepted pseudo-labels are correct.")
        diagnosis = ui.doctor_report(store, rid)  # what the picture shows, in words: the run's bias, if any
        if diagnosis is not None:
            col.markdown(f"**What this shows** (the doctor, whole run): {doctor.headline(diagnosis[0])}")
            if diagnosis[0]:
                col.text("\n".join(f"{f.title}: {f.summary}" for f in diagnosis[0]))


playing = st.toggle("Animate over training", key="teach_play",
                    help="Steps through the recorded snapshots, one per second; switch off to use the slider.")


@st.fragment(run_every=1.0 if playing else None)
def animated() -> None:
    # A frame counter of its own: the slider's value cannot be changed from inside a fragment rerun.
    shown = step
    if st.session_state.get("teach_play") and len(all_steps) > 1:
        i = st.session_state.get("teach_frame", 0) % len(all_steps)
        st.session_state["teach_frame"] = i + 1
        shown = all_steps[i]
        st.caption(f"Animating: step {shown} ({i + 1} of {len(all_steps)} snapshots)")
    panels(shown)


animated()
