"""Bad input to the Keras `LARS` is refused with a `lars.LarsError` that names the field or tensor,
the value and what is allowed, before anything changes: a step, an import or a load happens
completely or not at all (every variable, buffer, step count and rate byte-identical after a
refusal). Runs on the backend KERAS_BACKEND names (tests/keras_jax runs it on JAX)."""

import json
import math

import keras
import numpy as np
import pytest

import lars
from lars.backends.keras import LARS

LAST_LR = r"last_lr=.* is invalid: expected None or a finite number >= 0"


def core_error(**kwargs):
    with pytest.raises(lars.HyperparameterError) as caught:
        lars.hyperparams("paper", **kwargs)
    return str(caught.value)


@pytest.mark.parametrize("bad", [np.float32(np.nan), np.float64(math.inf), np.int64(-1), np.float32(-1.0),
                                 "0.1", [0.1]], ids=repr)
def test_a_learning_rate_keras_would_judge_gets_the_cores_error(bad):
    with pytest.raises(lars.HyperparameterError) as caught:
        LARS(learning_rate=bad)
    assert str(caught.value) == core_error(lr=bad)


def test_a_numpy_learning_rate_is_a_rate():
    assert LARS(learning_rate=np.float32(0.25)).hyperparameters.lr == 0.25
    assert float(LARS(learning_rate=np.float32(0.25)).learning_rate) == 0.25


def variables(dtypes=("float32", "float32", "float32")):
    """Three variables, the last one 1-D, with distinct paths."""
    shapes = [(3, 2), (4,), (2,)]
    out = []
    for k, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
        with keras.name_scope(f"layer{k}"):
            value = np.linspace(0.5, 1.5, math.prod(shape)).reshape(shape).astype(dtype)
            out.append(keras.Variable(value, name="kernel", dtype=dtype))
    return out


def grads(vs, scale=1.0):
    return [keras.ops.convert_to_tensor(np.full(v.shape, 0.1 * scale, v.dtype)) for v in vs]


def snapshot(optimizer, vs):
    """Every number a step, an import or a load may change, as bytes."""
    tensors = [*vs, *optimizer.momentums, optimizer.iterations, optimizer.last_lr,
               optimizer.last_trust_ratios, optimizer.learning_rate]
    return [keras.ops.convert_to_numpy(t).tobytes() for t in tensors] + [optimizer.hyperparameters]


def trained(**kwargs):
    vs = variables()
    optimizer = LARS(0.1, **{"momentum": 0.9, "weight_decay": 1e-2} | kwargs)
    optimizer.build(vs)
    for scale in (1.0, 2.0):  # buffers, counts and ratios that are not their initial values
        optimizer.apply(grads(vs, scale), vs)
    return optimizer, vs


@pytest.mark.parametrize("flavor", ["paper", "timm", "holocron"])
@pytest.mark.parametrize("bad", [dict(shape=(3,)), dict(shape=(2, 1)), dict(dtype="int32"),
                                 dict(dtype="complex64")], ids=str)
def test_a_bad_gradient_for_the_last_variable_changes_nothing(flavor, bad):
    """Row 21 and the transaction: the first variables are not stepped before the last one's
    gradient turns out wrong."""
    optimizer, vs = trained(flavor=flavor)
    before = snapshot(optimizer, vs)
    good = grads(vs, 3.0)
    last = np.full(bad.get("shape", vs[-1].shape), 0.1, bad.get("dtype", "float32"))
    with pytest.raises(lars.ShapeError if "shape" in bad else lars.DtypeError) as caught:
        optimizer.apply([*good[:-1], keras.ops.convert_to_tensor(last)], vs)
    message = str(caught.value)
    assert "layer2/kernel" in message
    if "shape" in bad:
        assert f"shape {bad['shape']}" in message and "shape (2,)" in message
    else:
        assert f"dtype {bad['dtype']}" in message and "floating-point" in message
    assert snapshot(optimizer, vs) == before
    optimizer.apply(good, vs)  # and the optimizer still steps
    assert snapshot(optimizer, vs) != before


@pytest.mark.parametrize("dtype", ["int32", "complex64"])
def test_a_variable_that_is_not_floating_point_is_refused(dtype):
    """Rows 19 and 20: one message naming the variable and its dtype, before anything is built."""
    vs = variables(("float32", dtype, "float32"))
    optimizer = LARS(0.1, momentum=0.9)
    message = rf"parameter 'layer1/kernel' has dtype {dtype}: .*floating-point"
    with pytest.raises(lars.DtypeError, match=message):
        optimizer.apply(grads(vs), vs)
    assert not optimizer.built and [keras.ops.convert_to_numpy(v).tolist() for v in vs] == \
        [keras.ops.convert_to_numpy(v).tolist() for v in variables(("float32", dtype, "float32"))]


def test_a_state_with_buffers_for_some_variables_imports_and_the_others_start_at_zero():
    """A tensor has no buffer until its first step: a valid state may hold some of them only."""
    optimizer, _ = trained()
    first = str(optimizer._plans[0].name)
    optimizer.import_state(lars.State(3, 0.1, {first: np.full((3, 2), 0.25, "float32")}))
    buffers = optimizer.export_state().momentum_buffers
    np.testing.assert_array_equal(buffers[first], np.full((3, 2), 0.25, "float32"))
    assert all(not np.any(b) for n, b in buffers.items() if n != first)
    assert optimizer.export_state().step == 3


def test_import_state_refuses_what_is_not_a_state():
    optimizer, vs = trained()
    before = snapshot(optimizer, vs)
    with pytest.raises(lars.StateError, match=r"state=None is invalid: expected a lars\.State"):
        optimizer.import_state(None)
    assert snapshot(optimizer, vs) == before


@pytest.mark.parametrize("last_lr", [math.nan, math.inf, -0.1, "0.1"])
def test_import_state_refuses_a_last_lr_that_is_not_a_rate(last_lr):
    optimizer, vs = trained()
    before, state = snapshot(optimizer, vs), optimizer.export_state()
    with pytest.raises(lars.StateError, match=LAST_LR):
        optimizer.import_state(lars.State(state.step, last_lr, state.momentum_buffers))
    assert snapshot(optimizer, vs) == before


def test_import_and_load_of_a_string_buffer_change_nothing(tmp_path):
    """Row 16: the first buffers are not assigned before the last one turns out not to be numbers."""
    optimizer, vs = trained()
    before, state = snapshot(optimizer, vs), optimizer.export_state()
    buffers = dict(state.momentum_buffers)
    buffers["layer2/kernel"] = np.array(["a", "b"])
    bad = lars.State(5, 0.3, buffers)
    with pytest.raises(lars.StateError, match=r"'layer2/kernel' has dtype <U1: expected a floating-point"):
        optimizer.import_state(bad)
    assert snapshot(optimizer, vs) == before
    hyperparams = optimizer.hyperparameters.to_dict()
    save_with_a_string_buffer(tmp_path / "bad.npz", state, hyperparams, "layer2/kernel")
    with pytest.raises(lars.StateError, match="layer2/kernel"):
        optimizer.load(tmp_path / "bad.npz")
    assert snapshot(optimizer, vs) == before


def test_a_bad_gradient_is_refused_inside_a_traced_step():
    """Keras traces its train step (tf.function, jax.jit): the check reads static shapes, so the
    trace fails with the same error and message, and nothing runs. (TF's AutoGraph re-raises an
    exception as its own type only if its `__init__` is `Exception.__init__`, as the core's
    errors from a message are; any other as its StagingError.)"""
    optimizer, vs = trained()
    before = snapshot(optimizer, vs)
    bad = [*grads(vs)[:-1], keras.ops.ones((3,))]
    message = r"ShapeError: gradient 'layer2/kernel' has shape \(3,\)"
    if keras.backend.backend() == "jax":
        import jax

        with pytest.raises(lars.ShapeError, match=message.removeprefix("ShapeError: ")):
            jax.jit(optimizer.stateless_apply)([v.value for v in optimizer.variables], bad,
                                               [v.value for v in vs])
    else:
        import tensorflow as tf

        with pytest.raises(lars.ShapeError, match=message.removeprefix("ShapeError: ")):
            tf.function(lambda: optimizer.apply(bad, vs))()
    assert snapshot(optimizer, vs) == before


def test_import_state_before_build_says_to_build_first():
    with pytest.raises(lars.StateError, match=r"build it first"):
        LARS(0.1, momentum=0.9).import_state(lars.State())


@pytest.mark.parametrize("bad", [np.float32(np.nan), -1.0, math.inf, "0.1", [0.1], True], ids=repr)
def test_setting_learning_rate_is_validated_like_set_lr(bad):
    """Keras's own setter (which its LearningRateScheduler and ReduceLROnPlateau callbacks use)
    goes through the core's validation too, and keeps the hyperparameters' lr in step."""
    optimizer, vs = trained()
    before = snapshot(optimizer, vs)
    with pytest.raises(lars.HyperparameterError) as caught:
        optimizer.learning_rate = bad
    assert str(caught.value) == core_error(lr=bad)
    assert snapshot(optimizer, vs) == before
    optimizer.learning_rate = np.float32(0.25)
    assert optimizer.hyperparameters.lr == 0.25 and float(optimizer.learning_rate) == 0.25
    optimizer.learning_rate = keras.ops.convert_to_tensor(0.5)  # a scalar tensor is a rate
    assert optimizer.hyperparameters.lr == 0.5 and float(optimizer.learning_rate) == 0.5


def test_a_schedules_optimizer_refuses_a_rate_and_keeps_its_hyperparameters():
    optimizer = LARS(keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5))
    hp = optimizer.hyperparameters
    with pytest.raises(TypeError, match="not settable"):
        optimizer.learning_rate = 0.3
    assert optimizer.hyperparameters == hp


def save_with_a_string_buffer(path, state, hyperparams, name):
    """A state file whose buffer `name` holds strings (`save_state` refuses to write one)."""
    lars.save_state(path, state, hyperparams)
    with np.load(path) as archive:
        arrays = dict(archive)
    header = json.loads(bytes(arrays["header"]).decode())
    for i, entry in enumerate(header["buffers"]):
        if entry["name"] == name:
            arrays[f"buffer_{i}"] = np.full(entry["shape"], "a")
            entry["dtype"] = "<U1"
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)
