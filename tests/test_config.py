"""TrainConfig validation: property tests, YAML round trip, safe YAML, presets, and the Streamlit bind address."""
import re
import tomllib
from numbers import Integral
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from sslviz.engine.config import CONSTRAINTS, FIELD_NAMES, PRESETS, TrainConfig, from_preset, preset_values
from sslviz.engine.params import Bool, Interval, InvalidParameterError, NoneOK, Options, Str

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = r"The '{}' parameter of TrainConfig must be .* Got .* instead\."

# Any value a YAML file or a form could hand us.
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["digits", "toy2d", "fixed", "cpu", "auto", "none", "labeled"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
HASHABLE_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(list(PRESETS)),
)


def _constraint_values(c):
    """A strategy of the values constraint ``c`` allows (dispatched on its class, never on a name that can drift)."""
    if isinstance(c, NoneOK):
        return st.none()
    if isinstance(c, Options):
        return st.sampled_from(c.options)
    if isinstance(c, Bool):
        return st.booleans()
    if isinstance(c, Str):
        return st.text(max_size=20)
    if isinstance(c, Interval):
        lo, hi = c.left, c.right
        if issubclass(c.type_, Integral):
            return st.integers(int(lo), int(hi) if hi is not None else 10**7)
        return st.floats(lo, hi if hi is not None else 1e6, exclude_min=c.closed in ("right", "neither"),
                         exclude_max=c.closed in ("left", "neither"))
    raise TypeError(f"no strategy for constraint {c!r}: teach _constraint_values its values")


def _valid_value(name: str):
    """A strategy of values satisfying ``CONSTRAINTS[name]`` (and parseable back from YAML)."""
    if name == "dataset":
        return st.sampled_from(["digits", "toy2d", "/data/cifar"])
    if name == "preset":
        return st.sampled_from(list(PRESETS))
    return st.one_of([_constraint_values(c) for c in CONSTRAINTS[name]])


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_valid_value_strategy_covers_each_field(name):
    """Every field gets a strategy of its own valid values: a bool field yields both True and False, each value
    satisfies the field's constraints. (The old strategy matched a class named "_Bool", which does not exist,
    so bool fields drew nothing valid and their YAML round trip went untested.)"""
    seen = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(_valid_value(name))
    def collect(value):
        assert any(c.is_satisfied_by(value) for c in CONSTRAINTS[name]) or name in ("dataset", "preset")
        seen.append(value)

    collect()
    if any(isinstance(c, Bool) for c in CONSTRAINTS[name]):
        assert {v for v in seen if isinstance(v, bool)} == {True, False}


@pytest.mark.parametrize("name", [n for n in FIELD_NAMES if any(isinstance(c, Bool) for c in CONSTRAINTS[n])])
@pytest.mark.parametrize("value", [True, False])
def test_bool_fields_round_trip_through_yaml(name, value):
    cfg = TrainConfig.from_dict({name: value})
    back = TrainConfig.from_yaml(cfg.to_yaml())
    assert back == cfg and getattr(back, name) is value


def _fields(value_for):
    return st.fixed_dictionaries({}, optional={n: value_for(n) for n in FIELD_NAMES})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=_fields(lambda name: st.one_of(_valid_value(name), HASHABLE_VALUE)))
def test_random_values_raise_only_invalid_parameter_error(values):
    try:
        cfg = TrainConfig.from_dict(values)
    except InvalidParameterError as exc:
        text = str(exc)
        assert exc.field is None or exc.field in FIELD_NAMES
        assert exc.field is None or exc.field in text  # the message names the field
        return
    assert TrainConfig.from_yaml(cfg.to_yaml()) == cfg


@settings(max_examples=100, deadline=None)
@given(values=_fields(lambda name: HASHABLE_VALUE if name == "preset" else ANY_VALUE))
def test_any_yaml_value_raises_only_invalid_parameter_error(values):
    try:
        TrainConfig.from_dict(values)
    except InvalidParameterError as exc:
        assert exc.field is None or exc.field in str(exc)


@pytest.mark.parametrize("preset", [["fixmatch"], {"a": 1}])
def test_unhashable_preset_value(preset):
    with pytest.raises(InvalidParameterError, match="'preset' parameter"):
        TrainConfig.from_dict({"preset": preset})


@settings(max_examples=100, deadline=None)
@given(values=_fields(_valid_value))
def test_valid_configs_round_trip_yaml(values):
    for name in ("eval_every", "checkpoint_every"):  # must be multiples of log_every
        values[name] = values.get(name, 100) * values.get("log_every", 10)
    cfg = TrainConfig.from_dict(values)
    text = cfg.to_yaml()
    again = TrainConfig.from_yaml(text)
    assert again == cfg
    assert again.to_yaml() == text


@pytest.mark.parametrize("name", [n for n in FIELD_NAMES if n not in ("dataset", "name", "preset")])
def test_each_field_rejects_a_wrong_type_with_the_template(name):
    bad = [] if name != "n1" else "many"
    with pytest.raises(InvalidParameterError, match=TEMPLATE.format(name)) as info:
        TrainConfig(**{name: bad})
    assert info.value.field == name


@pytest.mark.parametrize("field, value, allowed", [
    ("gamma", 0.5, r"a float in the range \[1, inf\)"),
    ("gamma", float("nan"), r"a float in the range \[1, inf\)"),
    ("threshold", 0.0, r"a float in the range \(0, 1\]"),
    ("threshold", 1.01, r"a float in the range \(0, 1\]"),
    ("lambda_u", -1.0, r"a float in the range \[0, 100\]"),
    ("weight_decay", -1e-4, r"a float in the range \[0, 1\]"),
    ("aug_strength", -0.5, r"a float in the range \[0, 5\]"),
    ("steps", 0, r"an int in the range \[1, 10000000\]"),
    ("steps", 10.0, r"an int in the range"),
    ("steps", True, r"an int in the range"),
    ("threshold_schedule", "adamatch", r"a str among \{'fixed', 'flexmatch', 'freematch', 'adsh'\}"),
])
def test_bad_values_name_field_and_allowed(field, value, allowed):
    with pytest.raises(InvalidParameterError, match=TEMPLATE.format(field)) as info:
        TrainConfig(**{field: value})
    assert info.value.field == field
    assert re.search(allowed, str(info.value))


def test_threshold_min_above_threshold_is_allowed_and_never_raises_a_threshold():
    # e.g. the balanced preset (floor 0.8) with tau lowered to 0.6: the floor is capped at tau.
    import torch

    from sslviz.engine.techniques import frequency_scaled_thresholds

    cfg = from_preset("balanced", threshold=0.6)
    assert cfg.threshold_min == 0.8
    tau = frequency_scaled_thresholds(torch.full((3,), cfg.threshold), torch.tensor([100.0, 10.0, 1.0]),
                                      cfg.threshold_class_alpha, cfg.threshold_min)
    assert torch.allclose(tau, torch.full((3,), 0.6))


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(InvalidParameterError, match=r"'preset' parameter .* among \{'fixmatch', .*'balanced'.*\}. "
                                                    r"Got 'nope' instead"):
        from_preset("nope")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build_and_only_change_their_knobs(name):
    cfg = from_preset(name)
    assert cfg.preset == name
    changed = {k: v for k, v in cfg.to_dict().items() if TrainConfig().to_dict()[k] != v}
    assert changed == {**PRESETS[name], **({"preset": name} if name != "fixmatch" else {})}
    assert preset_values(name)["preset"] == name


def test_flags_override_the_preset():
    cfg = from_preset("balanced", dist_align="none", gamma=10)
    assert cfg.dist_align == "none" and cfg.gamma == 10 and cfg.class_weighting == "effective"


@pytest.mark.parametrize("text, match", [
    ("gama: 10\n", r"Unknown config key 'gama'. Did you mean 'gamma'\? Valid keys are: dataset, n1, gamma"),
    ("lamda_u: 1\n", r"Unknown config key 'lamda_u'. Did you mean 'lambda_u'\?"),
    ("gamma: ten\n", TEMPLATE.format("gamma")),
    ("steps: 1.5\n", TEMPLATE.format("steps")),
    ("flexmatch_warmup: 3\n", TEMPLATE.format("flexmatch_warmup")),
    ("- 1\n- 2\n", r"The config must be a mapping of field: value, got list"),
    ("gamma: [\n", r"The config is not valid YAML"),
    ("preset: nope\n", r"'preset' parameter .* among"),
])
def test_bad_yaml(text, match):
    with pytest.raises(InvalidParameterError, match=match):
        TrainConfig.from_yaml(text)


def test_yaml_python_tags_are_rejected():
    evil = "gamma: !!python/object/apply:os.system ['echo pwned']\nname: !!python/object:builtins.object {}\n"
    with pytest.raises(InvalidParameterError, match="not valid YAML.*python/object"):
        TrainConfig.from_yaml(evil)
    with pytest.raises(yaml.YAMLError):  # and yaml.safe_load is what rejects it
        yaml.safe_load(evil)


def test_streamlit_binds_localhost_only():
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] == "127.0.0.1"
    assert conf["browser"]["gatherUsageStats"] is False


def test_eval_and_checkpoint_intervals_must_be_multiples_of_log_every():
    with pytest.raises(InvalidParameterError, match=r"'eval_every' parameter .* multiple of log_every \(10\)\. Got 15"):
        TrainConfig(eval_every=15)
    with pytest.raises(InvalidParameterError, match=r"'checkpoint_every' .* multiple of log_every \(20\)"):
        TrainConfig(log_every=20, eval_every=100, checkpoint_every=250)


def test_non_finite_numbers_are_refused():
    with pytest.raises(InvalidParameterError, match=r"'gamma' parameter .* Got inf instead"):
        TrainConfig.from_yaml("gamma: .inf\n")


def test_yaml_exponent_without_dot_gets_a_hint():
    with pytest.raises(InvalidParameterError, match=r"YAML reads 3e-2 as text; write it with a dot, e.g. 0.03"):
        TrainConfig.from_yaml("lr: 3e-2\n")


def test_model_choices_are_the_registry():
    from sslviz.engine.config import MODEL_NAMES
    from sslviz.engine.models import MODELS

    assert MODEL_NAMES == ("auto", *MODELS)


def test_retired_key_loads_with_a_warning_in_api_and_cli(tmp_path, capsys):
    from sslviz import cli
    from sslviz.engine.config import RetiredKeyWarning

    with pytest.warns(RetiredKeyWarning, match=r"'dist_align_momentum' is retired: .*dist_align_window"):
        cfg = TrainConfig.from_yaml("dist_align: labeled\ndist_align_momentum: 0.99\n")
    assert cfg.dist_align == "labeled" and "dist_align_momentum" not in cfg.to_dict()
    old = tmp_path / "old.yaml"
    old.write_text("dist_align_momentum: 0.99\n")
    out = tmp_path / "new.yaml"
    assert cli.main(["--store", str(tmp_path / "runs.db"), "train", "--config", str(old), "--save-config", str(out)]) == 0
    assert capsys.readouterr().err.startswith("sslviz: warning: Config key 'dist_align_momentum' is retired")
    assert TrainConfig.from_yaml(out.read_text()) == TrainConfig()
