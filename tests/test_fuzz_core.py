"""Issue 17, "Done when" 2 (the core): hypothesis draws invalid hyperparameters, TOML files and
state files, and the core answers every one with a value or one of its own errors
(`lars.LarsError` subclasses), never a `TypeError`, `OverflowError`, `KeyError` ... from inside."""

import json
import math
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lars
from lars import Exclude, Hyperparams, LarsError, State, hyperparams, load_state, loads_config, reference

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])
FIELDS = Hyperparams.field_names()
GOOD = hyperparams("paper", lr=0.1)

# Values a hostile user (or a broken file) hands over: every JSON type, nested, and Python's extras.
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(10**300, 10**400) | st.floats()
           | st.text(max_size=12) | st.sampled_from(["split", "ndim<=1", "ndim<=-1", "ndim==99", "none",
                                                      "paper", "bias", "a{99999999999}"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["ndims", "patterns", "names"]),
                                      inner, max_size=3), max_leaves=8)
ANY = JSON | st.complex_numbers() | st.binary(max_size=4) | st.tuples(SCALARS) | st.frozensets(SCALARS)


def refused_or_valid(call):
    """Runs `call`; returns what it returns, or None if it raised one of the project's errors."""
    try:
        return call()
    except LarsError:
        return None


@SETTINGS
@given(st.sampled_from(FIELDS), ANY, st.sampled_from([*lars.FLAVORS, "nosuch"]))
def test_one_bad_field_in_every_way_of_making_hyperparams(field, value, flavor):
    if field == "flavor":  # the positional argument itself
        flavor, field, value = value, "lr", 0.1
    made = [refused_or_valid(lambda: hyperparams(flavor, **{field: value})),
            refused_or_valid(lambda: Hyperparams(**{field: value})),
            refused_or_valid(lambda: GOOD.replace(**{field: value})),
            refused_or_valid(lambda: Hyperparams.from_dict({**GOOD.to_dict(), field: value})),
            refused_or_valid(lambda: lars.core.resolve(flavor, **{field: value}))]
    for hp in made:
        if hp is not None:  # whatever was accepted is valid: it survives its own round trip
            assert isinstance(hp, Hyperparams) and math.isfinite(hp.lr) and hp.lr >= 0
            assert Hyperparams.from_dict(hp.to_dict()) == hp or hp.exclude_from_weight_decay.predicate


@SETTINGS
@given(st.dictionaries(st.sampled_from([*FIELDS, "nosuch"]), ANY, max_size=4))
def test_a_drawn_dict_of_hyperparameters(data):
    refused_or_valid(lambda: Hyperparams.from_dict(data))
    refused_or_valid(lambda: Exclude.from_dict(data))
    refused_or_valid(lambda: lars.config_from_dict(data))


@SETTINGS
@given(ANY)
def test_a_drawn_step_lr_or_exclusion(value):
    params, grads = {"w": np.ones(3)}, {"w": np.full(3, 0.5)}
    refused_or_valid(lambda: reference.step(params, grads, State(), GOOD, lr=value))
    refused_or_valid(lambda: lars.core.as_exclude(value, "exclude_from_weight_decay"))
    refused_or_valid(lambda: lars.schedules.Constant(value))
    refused_or_valid(lambda: lars.schedules.WarmupPolynomial(value, value, value))
    np.testing.assert_array_equal(params["w"], np.ones(3))


def toml_value(value):
    """A TOML literal for a JSON-like value (what a hand-written file could say)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return '"none"'  # None has no TOML form: the file's spelling of it


@SETTINGS
@given(st.dictionaries(st.sampled_from([*FIELDS, "schedule", "nosuch"]), JSON, max_size=4))
def test_a_drawn_toml_file(table):
    text = "\n".join(f"{key} = {toml_value(value)}" for key, value in table.items())
    refused_or_valid(lambda: loads_config(text))


@SETTINGS
@given(st.text(max_size=60))
def test_any_text_as_a_toml_file(text):
    refused_or_valid(lambda: loads_config(text))


HEADER_KEYS = ("format", "version", "step", "last_lr", "flavor", "hyperparams", "framework", "buffers")
ENTRY = st.fixed_dictionaries({}, optional={"name": JSON | st.just("w"), "shape": JSON | st.just([3]),
                                            "dtype": JSON | st.just("float64")})
DTYPES = st.sampled_from(["float64", "float32", "float16", "int8", "int64", "bool", "complex64", "<U2",
                          "uint8"])


def good_header():
    return {"format": "lars-state", "version": 1, "step": 3, "last_lr": 0.1, "flavor": "paper",
            "hyperparams": GOOD.to_dict(), "framework": None,
            "buffers": [{"name": "w", "shape": [3], "dtype": "float64"}]}


@SETTINGS
@given(st.dictionaries(st.sampled_from(HEADER_KEYS), JSON | st.lists(ENTRY, max_size=3), max_size=3),
       st.lists(st.tuples(DTYPES, st.lists(st.integers(0, 3), max_size=2)), max_size=3),
       st.booleans())
def test_a_drawn_state_header_and_buffers(tmp_path_factory, changes, arrays, drop):
    header = good_header() | changes
    if drop and changes:  # a header without one of its keys
        header.pop(next(iter(changes)))
    path = tmp_path_factory.mktemp("state") / "s.npz"
    buffers = {f"buffer_{i}": np.zeros(shape, dtype) for i, (dtype, shape) in enumerate(arrays)}
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        np.savez(f, header=np.frombuffer(text, dtype=np.uint8), **buffers)
    saved = refused_or_valid(lambda: load_state(path, {"w": (3,)}))
    if saved is not None:  # what loads is a state every adapter can import
        saved.state.check_fits({"w": (3,)})
        assert isinstance(saved.flavor, str) and isinstance(saved.hyperparams, dict)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_as_a_state_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("state") / "s.npz"
    path.write_bytes(data)
    assert refused_or_valid(lambda: load_state(path)) is None


def as_array(value):
    """The drawn value as a NumPy array where NumPy makes one (a ragged list it does not)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy 1.23 warns on a ragged list (NumPy 2 raises)
            return np.asarray(value)
    except ValueError:
        return value


@SETTINGS
@given(JSON, JSON, st.dictionaries(JSON.filter(lambda k: isinstance(k, str)) | st.integers(), ANY,
                                   max_size=2))
def test_a_drawn_state_to_save(tmp_path_factory, step, last_lr, buffers):
    path = tmp_path_factory.mktemp("state") / "s.npz"
    state = State(step, last_lr, {k: as_array(v) for k, v in buffers.items()})
    if refused_or_valid(lambda: lars.save_state(path, state, GOOD.to_dict())) is not None:
        assert load_state(path).state.step == step  # what was written reads back
    else:
        assert not path.exists()
