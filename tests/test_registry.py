"""Walk the declarations: every technique and every knob reaches the README, the CLI and the Setup page.

A new ``Field`` or ``Technique`` that is missing a help text, a flag, a widget or a README row fails here.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from sslviz import cli
from sslviz.engine import config, registry
from sslviz.dashboard import setup_form
from sslviz.engine.config import FIELDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
APP = str(ROOT / "app.py")
REGENERATE = ".venv/bin/python -m sslviz docs --readme README.md"
# Fields the Setup page shows with hand-made widgets outside IMBALANCE and GROUPS.
HAND_MADE = ("dataset", "preset", "name")
WIDGET_OF_KIND = {"options": "selectbox", "bool": "checkbox", "int": "number_input", "float": "number_input",
                  "str": "text_input"}


def _readme_block(name: str) -> str:
    text = README.read_text()
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert m, f"README.md has no <!-- {name}:begin --> ... <!-- {name}:end --> block"
    return m.group(1).strip()


def _train_flags() -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt: a for a in sub.choices["train"]._actions for opt in a.option_strings}


# -- (a) the README tables are the generated ones ---------------------------------------
@pytest.mark.parametrize("name", ["techniques", "knobs"])
def test_readme_tables_are_generated(name):
    assert _readme_block(name) == config.doc_tables()[name], (
        f"README.md's {name} table differs from the declarations; regenerate it with: {REGENERATE}")


def test_readme_tables_have_a_row_per_technique_and_knob():
    techniques, knobs = _readme_block("techniques"), _readme_block("knobs")
    for t in registry.TECHNIQUES:
        assert f"| {t.title} |" in techniques
    for name in FIELDS:
        assert f"| `{name}` |" in knobs


def test_fill_doc_tables_rewrites_only_the_blocks():
    text = ("intro\n<!-- techniques:begin -->\nSTALE ROW\n<!-- techniques:end -->\nmid\n"
            "<!-- knobs:begin --><!-- knobs:end -->\nend\n")
    out = config.fill_doc_tables(text)
    assert out.startswith("intro\n<!-- techniques:begin -->\n\n| technique |")
    assert out.endswith("<!-- knobs:end -->\nend\n")
    assert "STALE ROW" not in out and "\nmid\n" in out
    assert config.fill_doc_tables(out) == out
    with pytest.raises(ValueError, match="knobs:begin"):
        config.fill_doc_tables("<!-- techniques:begin --><!-- techniques:end -->")


def test_docs_command_prints_both_tables(capsys, tmp_path):
    assert cli.main(["docs"]) == 0
    out = capsys.readouterr().out
    assert registry.markdown_techniques() in out and config.markdown_knobs() in out
    readme = tmp_path / "README.md"
    readme.write_text("<!-- techniques:begin -->\n<!-- techniques:end -->\n<!-- knobs:begin -->\n<!-- knobs:end -->\n")
    assert cli.main(["docs", "--readme", str(readme)]) == 0
    assert readme.read_text() == config.fill_doc_tables(readme.read_text())
    assert "| `gamma` |" in readme.read_text()


# -- (b) every field: help, CLI flag, one Setup section, a widget ---------------------
@pytest.mark.parametrize("name", list(FIELDS))
def test_field_has_help_and_cli_flag(name):
    f = FIELDS[name]
    assert f.help.strip(), f"field {name!r} has no help text"
    flags = _train_flags()
    flag = "--" + name.replace("_", "-")
    assert flag in flags, f"`train` has no {flag} flag for field {name!r}"
    action = flags[flag]
    assert action.dest == name
    if name == "preset":  # its own flag: validated against PRESETS, which its help lists
        assert all(p in action.help for p in config.PRESETS)
        return
    expected = None if f.choices is None else list(f.choices)
    assert (None if action.choices is None else list(action.choices)) == expected, (
        f"{flag} must offer exactly the choices of field {name!r}: {f.choices}")
    assert f.help.replace("%", "%%") in action.help, f"{flag}'s help does not say the field's help text"


@pytest.mark.parametrize("name", list(FIELDS))
def test_field_is_in_exactly_one_setup_section(name):
    sections = {"Imbalance": setup_form.IMBALANCE, **setup_form.GROUPS, "hand-made widgets": HAND_MADE}
    found = [title for title, fields in sections.items() if name in fields]
    assert len(found) == 1, f"field {name!r} is in Setup sections {found}, not exactly one"


def test_setup_page_has_a_widget_per_field(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SSLVIZ_HOME", str(tmp_path))
    monkeypatch.setenv("SSLVIZ_STORE", str(tmp_path / "runs.db"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    widgets = {el.key: kind for kind in set(WIDGET_OF_KIND.values()) for el in at.get(kind) if el.key}
    assert widgets.get("ds_choice") == "selectbox"  # the dataset: a built-in or a folder (ds_path)
    missing = [n for n in FIELDS if n != "dataset" and setup_form.key(n) not in widgets]
    assert not missing, f"the Setup page has no widget for fields {missing}"
    wrong = {n: widgets[setup_form.key(n)] for n, f in FIELDS.items()  # hand-made ones choose their own
             if n not in HAND_MADE and widgets[setup_form.key(n)] != WIDGET_OF_KIND[f.kind]}
    assert not wrong, f"fields shown with the wrong widget: {wrong}"
    at.selectbox(key="ds_choice").set_value(setup_form.FOLDER).run()
    assert "ds_path" in {el.key for el in at.text_input}


# -- (c) every technique declaration is complete ------------------------------------------
@pytest.mark.parametrize("tech", registry.TECHNIQUES, ids=lambda t: t.name)
def test_technique_declaration_is_complete(tech):
    for attr in ("name", "title", "paper", "implemented", "differs"):
        assert str(getattr(tech, attr, "")).strip(), f"{tech.__name__}.{attr} is empty"
    assert tech.fields or tech.acts_at(), f"{tech.__name__} declares no field and acts at no phase"
    assert set(tech.acts_at()) <= set(registry.PHASES)
    for f in tech.fields:
        assert f.group in registry.GROUPS, f"{f.name}: group {f.group!r} is not one of registry.GROUPS"


def test_acts_at_follows_phase_order():
    assert len(set(registry.PHASES)) == len(registry.PHASES)
    for phase in registry.PHASES:
        assert callable(getattr(registry.Technique, phase, None)), f"PHASES names {phase!r}, not a Technique method"
    methods = {n for n, v in vars(registry.Technique).items() if callable(v) and not n.startswith("_")}
    assert methods - {"load_state", "head", "epoch_steps"} == set(registry.PHASES), \
        "a Technique phase method is missing from PHASES"
    for t in registry.TECHNIQUES:
        assert list(t.acts_at()) == sorted(t.acts_at(), key=registry.PHASES.index)


def test_names_are_unique_across_declarations():
    declared = [f.name for f in (*config.DATA_FIELDS, *registry.TECHNIQUE_FIELDS, *config.BUDGET_FIELDS)]
    assert len(declared) == len(set(declared)), sorted({n for n in declared if declared.count(n) > 1})
    assert list(FIELDS) == declared
    names = [t.name for t in registry.TECHNIQUES]
    assert len(names) == len(set(names))
    assert not set(declared) & set(config.RETIRED_KEYS), "a retired key is declared again"


# -- (d) threshold schedules -----------------------------------------------------------------
def test_threshold_schedule_choices_are_the_registry_schedules():
    assert FIELDS["threshold_schedule"].choices == tuple(registry.THRESHOLD_SCHEDULES)
    for name, tech in registry.THRESHOLD_SCHEDULES.items():
        if tech is not None:
            assert tech.schedule == name and tech in registry.TECHNIQUES


def test_every_pair_of_techniques_that_would_override_each_other_is_refused_naming_both(capsys, tmp_path):
    """Every pair of techniques switched on together (each as the doctor would switch it on, ``try_with``, or its
    first knob's non-default value): refused exactly when both override an exclusive phase (ABC and ACR both pick
    the logits a prediction is read from), with a message naming both, in worker.check (CLI, Setup, sweeps)."""
    import itertools

    from sslviz import cli
    from sslviz.engine.config import TrainConfig
    from sslviz.engine.params import InvalidParameterError
    from sslviz.engine.registry import EXCLUSIVE_PHASES, TECHNIQUES, check_combination

    extra = {"threshold_warmup": {"threshold_warmup_steps": 100}, "class_aug": {"aug_class_alpha": 0.5},
             "unsup_scale": {"unsup_class_alpha": 0.5}}
    switch = {t.name: t.try_with or extra.get(t.name) for t in TECHNIQUES if t.name != "fixmatch"}
    assert all(switch.values()), switch
    refused = set()
    for a, b in itertools.combinations(sorted(switch), 2):
        if set(switch[a]) & set(switch[b]):  # one knob (threshold_schedule): they cannot both be on
            continue
        cfg = TrainConfig(**switch[a], **switch[b])
        by = {t.name: t for t in TECHNIQUES}
        assert by[a].active(cfg) and by[b].active(cfg), (a, b)
        clash = any(p in by[a].acts_at() and p in by[b].acts_at() for p in EXCLUSIVE_PHASES)
        if clash:
            with pytest.raises(InvalidParameterError, match=f"{re.escape(by[a].title)}|{re.escape(by[b].title)}") as e:
                check_combination(cfg)
            assert by[a].title in str(e.value) and by[b].title in str(e.value)
            refused.add((a, b))
        else:
            check_combination(cfg)
    assert refused == {("abc", "acr")}
    code = cli.main(["--store", str(tmp_path / "runs.db"), "train", "--dataset", "toy2d", "--abc", "--acr"])
    assert code == 2 and "ABC (auxiliary balanced classifier) and ACR (adaptive consistency regularizer) both " \
                         "decide the logits a prediction is read from" in capsys.readouterr().err
