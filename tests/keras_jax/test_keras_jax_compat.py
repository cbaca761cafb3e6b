"""The private Keras hooks of `lars.backends.keras._compat` on Keras's JAX backend (checked on
keras 3.15.1): Keras's JAX optimizer calls `_clip_gradients`, then `_backend_update_step` with
every gradient of a step, eagerly and in `stateless_apply` under `jax.jit`. Run in the
`keras_jax` nox session."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import jax
import keras
import numpy as np

from lars.backends.keras import LARS, _compat


def variables():
    return [keras.Variable(np.full((3, 2), 0.5, "float32"), name="kernel"),
            keras.Variable(np.zeros(2, "float32"), name="bias")]


def grads():
    return [jax.numpy.full((3, 2), 3.0), jax.numpy.full(2, -3.0)]


def test_keras_hands_every_gradient_of_a_step_to_backend_update_step(monkeypatch):
    assert keras.backend.backend() == "jax" and not _compat.TENSORFLOW
    calls = []
    monkeypatch.setattr(LARS, "lars_step", lambda self, g, v, lr: calls.append(("step", len(g), len(v))))
    monkeypatch.setattr(LARS, "_clip_gradients", lambda self, g: calls.append(("clip", len(g))) or g)
    optimizer, vs = LARS(0.1), variables()
    optimizer.apply(grads(), vs)
    jax.jit(lambda o, g, t: optimizer.stateless_apply(o, g, t))(
        [v.value for v in optimizer.variables], grads(), [v.value for v in vs])
    assert calls == [("clip", 2), ("step", 2, 2)] * 2


def test_clip_gradients_and_the_variable_index():
    optimizer, vs = LARS(0.1, clipvalue=0.5), variables()
    optimizer.build(vs)
    clipped, indices = _compat.gradients(optimizer, grads()[::-1], vs[::-1])
    np.testing.assert_array_equal(np.asarray(clipped[1]), np.full((3, 2), 0.5))
    assert indices == [1, 0]
