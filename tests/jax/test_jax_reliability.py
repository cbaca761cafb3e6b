"""Bad input to the JAX adapter (issue 17): refused with a `lars.LarsError` naming what is wrong,
the value and what is allowed, as the core refuses it, and before an update or an import returns
anything (the adapter is functional: a refusal leaves the caller's state and params as they were,
which the tests check byte for byte)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lars
from lars.backends.jax import import_state
from lars.backends.jax import lars as jax_lars

#: The refusal of an integer or complex tensor, worded the same in every adapter.
NOT_FLOATING = ("{kind} {name!r} has dtype {dtype}: LARS steps real floating-point tensors only "
                "(float16, bfloat16, float32, float64), not integer or complex ones")


def params_and_grads():
    params = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "last": jnp.ones(2)}
    return params, {"a": jnp.full((2, 3), 0.1), "last": jnp.full((2,), 0.2)}


def stepped(tx):
    params, grads = params_and_grads()
    state = tx.init(params)
    for _ in range(2):
        _, state = tx.update(grads, state, params)
    return state, params, grads


def as_bytes(tree):
    arrays = [np.asarray(x) for x in jax.tree.leaves(tree)]
    return [(x.dtype, x.shape, x.tobytes()) for x in arrays]


# The constructor: every value goes through the core's validation ----------------------------------
BAD_ARGUMENTS = [  # (field, value): each refused by the core as it is
    ("learning_rate", True), ("learning_rate", [0.1]), ("learning_rate", "0.1"),
    ("learning_rate", np.array([0.1])), ("learning_rate", np.array(True)),
    ("weight_decay", True), ("momentum", "0.9"), ("momentum", "abc"), ("eps", [1e-8]),
    ("trust_coefficient", np.array([1e-3, 1e-3])),
]


@pytest.mark.parametrize(("field", "value"), BAD_ARGUMENTS)
def test_a_bad_argument_gets_the_cores_error(field, value):
    core_field = "lr" if field == "learning_rate" else field
    with pytest.raises(lars.HyperparameterError) as core:
        lars.hyperparams("paper", **{"lr": 0.1, core_field: value})
    with pytest.raises(lars.HyperparameterError) as ours:
        jax_lars(**{"learning_rate": 0.1, field: value})
    assert str(ours.value) == str(core.value)


@pytest.mark.parametrize(("field", "value"), [
    ("learning_rate", np.float32(0.25)), ("learning_rate", jnp.asarray(0.25)), ("momentum", jnp.asarray(0.5)),
    ("weight_decay", np.int64(0))])
def test_numbers_as_0d_arrays_are_still_taken(field, value):
    tx = jax_lars(**{"learning_rate": 0.1, field: value})
    core_field = "lr" if field == "learning_rate" else field
    assert getattr(tx.hyperparameters, core_field) == float(value)


# Leaves that cannot be stepped ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64])
def test_an_integer_or_complex_parameter_is_refused_with_one_message(dtype):
    params, _ = params_and_grads()
    params["last"] = params["last"].astype(dtype)
    with pytest.raises(lars.LarsError) as refused:
        jax_lars(0.1).init(params)
    assert isinstance(refused.value, TypeError)
    expected = NOT_FLOATING.format(kind="parameter", name="last", dtype=np.dtype(dtype).name)
    assert str(refused.value) == expected


def bad_last_gradient(kind):
    _, grads = params_and_grads()
    grads["last"] = {"none": None, "shape": jnp.ones(1), "integer": jnp.ones(2, jnp.int32),
                     "complex": jnp.ones(2, jnp.complex64)}[kind]
    return grads


@pytest.mark.parametrize(("kind", "error", "words"), [
    ("none", lars.ShapeError, ["'last'", "None"]),
    ("shape", lars.ShapeError, ["gradient 'last' has shape (1,), but the parameter has shape (2,)"]),
    ("integer", lars.ShapeError, ["gradient 'last'", "int32"]),
    ("complex", lars.ShapeError, [NOT_FLOATING.format(kind="gradient", name="last", dtype="complex64")]),
])
def test_an_update_with_a_bad_last_gradient_is_refused_and_changes_nothing(kind, error, words):
    tx = jax_lars(0.1, momentum=0.9)
    state, params, _ = stepped(tx)
    before = as_bytes((state, params))
    with pytest.raises(error) as refused:
        tx.update(bad_last_gradient(kind), state, params)
    for word in words:
        assert word in str(refused.value)
    assert as_bytes((state, params)) == before


def test_a_wrong_shape_buffer_is_refused():
    tx = jax_lars(0.1, momentum=0.9)
    state, params, grads = stepped(tx)
    broken = state._replace(momentum={**state.momentum, "last": jnp.zeros(3)})
    with pytest.raises(lars.StateError, match="'last'"):
        tx.update(grads, broken, params)


# Imports ---------------------------------------------------------------------------------------------
BAD_IMPORTS = {
    "None": (None, ["state=None", "lars.State"]),
    "last_lr=nan": (lars.State(2, float("nan"), {}), ["last_lr=nan"]),
    "a string buffer": (lars.State(2, 0.1, {"a": np.zeros((2, 3)), "last": np.array(["x", "y"])}),
                        ["'last'", "<U1"]),
}


@pytest.mark.parametrize("case", list(BAD_IMPORTS))
def test_a_bad_import_is_refused_as_a_state_error(case, tmp_path):
    neutral, words = BAD_IMPORTS[case]
    tx = jax_lars(0.1, momentum=0.9)
    state, params, _ = stepped(tx)
    before = as_bytes((state, params))
    with pytest.raises(lars.StateError) as refused:
        import_state(neutral, state, params)
    for word in words:
        assert word in str(refused.value)
    assert as_bytes((state, params)) == before
    if neutral is None:
        return
    try:  # the same through a file
        path = lars.save_state(tmp_path / "bad.npz", neutral, tx.hyperparameters.to_dict())
    except lars.LarsError:
        return  # the core refuses to write it: there is nothing to load
    with pytest.raises(lars.StateError):
        tx.load(path, state, params)
