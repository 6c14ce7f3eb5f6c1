"""The Setup page's form state: widget keys, preset and YAML loading, validation.

Each TrainConfig field has a widget keyed ``cfg_<field>``; the dataset is split
over ``ds_choice`` (a built-in or FOLDER) and ``ds_path``. Streamlit forgets the
keys of widgets that are not on screen, so ``setup_values`` keeps a copy of the
whole form that survives visits to other pages (the Data page reads it too).
"""
from __future__ import annotations

import warnings

import streamlit as st

from ..engine.config import FIELD_NAMES, FIELDS, RetiredKeyWarning, TrainConfig, preset_values
from ..engine.params import InvalidParameterError
from ..engine import registry
from ..engine.registry import TECHNIQUE_FIELDS
from .ui import BUILTIN_DATASETS

FOLDER = "Local folder…"  # the dataset choice that reveals the folder path input
IMBALANCE = tuple(f.name for f in FIELDS.values() if f.group == "Imbalance")
# Expander title -> fields: the technique groups, then model and budget. Dataset, imbalance and the run's name
# and preset have sections of their own.
GROUPS = {g: tuple(f.name for f in FIELDS.values() if f.group == g)
          for g in (*registry.GROUPS, "Model and optimiser", "Budget, batches, seed and device")}
# What choosing a preset resets; data, model and budget stay as they are.
TECHNIQUE_FIELD_NAMES = tuple(f.name for f in TECHNIQUE_FIELDS)
# Fields with a section of their own on the page; errors about any other field are shown by Start.
SECTION_FIELDS = frozenset(("dataset", *IMBALANCE, *(f for fields in GROUPS.values() for f in fields)))


def key(field: str) -> str:
    """The widget key of a TrainConfig field."""
    return f"cfg_{field}"


def set_widgets(values: dict) -> None:
    """Copy a full field dict into the widget keys and into ``setup_values``."""
    st.session_state["setup_values"] = dict(values)
    for f in FIELD_NAMES:
        if f != "dataset":
            st.session_state[key(f)] = FIELDS[f].coerce(values[f])
    ds = values["dataset"]
    st.session_state["ds_choice"] = ds if ds in BUILTIN_DATASETS else FOLDER
    st.session_state["ds_path"] = "" if ds in BUILTIN_DATASETS else ds


def current_values() -> dict:
    """The field dict the widgets hold now."""
    values = {f: st.session_state.get(key(f)) for f in FIELD_NAMES if f != "dataset"}
    choice = st.session_state.get("ds_choice", "digits")
    values["dataset"] = (st.session_state.get("ds_path") or "").strip() if choice == FOLDER else choice
    return values


def init_state() -> None:
    """Fill the widgets from ``setup_values`` (the fixmatch preset at first) when Streamlit has dropped them."""
    if "setup_values" not in st.session_state:
        st.session_state["setup_values"] = preset_values("fixmatch")
    if "ds_choice" not in st.session_state or any(key(f) not in st.session_state for f in FIELD_NAMES if f != "dataset"):
        set_widgets(st.session_state["setup_values"])


def save() -> None:
    """Remember the form for the next visit; call after the last widget."""
    st.session_state["setup_values"] = current_values()


def apply_preset() -> None:
    """on_change of the preset box: reset the technique knobs to the chosen preset."""
    name = st.session_state[key("preset")]
    base = preset_values(name)
    values = current_values()
    values.update({f: base[f] for f in TECHNIQUE_FIELD_NAMES}, preset=name)
    set_widgets(values)


def apply_yaml() -> None:
    """on_click of "Apply YAML": load the uploaded file (or else the pasted text) into the form.

    Sets ``yaml_error`` or ``yaml_ok`` in session state for the page to show.
    """
    upload = st.session_state.get("yaml_file")
    text = upload.getvalue().decode("utf-8", errors="replace") if upload is not None else st.session_state.get("yaml_text", "")
    st.session_state["yaml_error"] = None
    st.session_state["yaml_ok"] = None
    if not (text or "").strip():
        st.session_state["yaml_error"] = "Upload a YAML file or paste YAML text first."
        return
    try:
        with warnings.catch_warnings(record=True) as retired:
            warnings.simplefilter("always", RetiredKeyWarning)
            cfg = TrainConfig.from_yaml(text)
    except InvalidParameterError as exc:
        st.session_state["yaml_error"] = str(exc)
        return
    set_widgets(cfg.to_dict())
    notes = " ".join(str(w.message) for w in retired)
    st.session_state["yaml_ok"] = f"Loaded a {cfg.preset!r} config on {cfg.dataset!r}." + (f" {notes}" if notes else "")


def validate(values: dict) -> tuple[TrainConfig | None, InvalidParameterError | None]:
    """``(config, None)`` for valid values, else ``(None, error)``; ``error.field`` says where to show it."""
    if not values["dataset"]:
        return None, InvalidParameterError("Enter the path of a dataset folder (CIFAR-10 pickles or an ImageFolder tree).",
                                           field="dataset")
    try:
        return TrainConfig(**values), None
    except InvalidParameterError as exc:
        return None, exc
