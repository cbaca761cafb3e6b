"""Keras 3 on TensorFlow: `lars.backends.keras.LARS` beside `keras.optimizers.SGD(momentum=0.9)`
and TF Model Garden's LARS, each step `optimizer.apply(grads, variables)` inside one
`tf.function` (traced once, no XLA), as `model.fit` runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np
import tensorflow as tf

from bench.common import Backend, Step, Target, Tensors, checked
from lars.backends.keras import LARS


def keras_runner(optimizer: keras.optimizers.Optimizer, tensors: Tensors, dtype: str) -> Step:
    return built(optimizer, tensors, dtype)[0]


def built(optimizer: keras.optimizers.Optimizer, tensors: Tensors, dtype: str,
          ) -> tuple[Step, Callable[[], list[np.ndarray]]]:
    """The step, and a reader of the weights it leaves."""
    variables = [keras.Variable(w, dtype=dtype, name=name.replace(".", "_")) for name, w, _ in tensors]
    grads = [tf.constant(g, dtype=dtype) for _, _, g in tensors]
    optimizer.build(variables)
    step = tf.function(lambda: optimizer.apply(grads, variables))
    return lambda: step(), lambda: [np.asarray(keras.ops.convert_to_numpy(v), np.float32) for v in variables]


sgd = checked(lambda tensors, dtype: built(keras.optimizers.SGD(0.1, momentum=0.9), tensors, dtype),
              lr=0.1, momentum=0.9, weight_decay=0.0)


def ours(tensors: Tensors, dtype: str) -> Step:
    return keras_runner(LARS(0.1, "paper", momentum=0.9, weight_decay=1e-4), tensors, dtype)


def model_garden(tensors: Tensors, dtype: str) -> Step:
    from official.modeling.optimization.lars import LARS as ModelGardenLARS

    variables = [tf.Variable(w, dtype=dtype, name=name.replace(".", "_")) for name, w, _ in tensors]
    grads = [tf.constant(g, dtype=dtype) for _, _, g in tensors]
    optimizer = ModelGardenLARS(learning_rate=0.1, momentum=0.9, weight_decay_rate=1e-4)

    @tf.function
    def step() -> None:
        optimizer.apply_gradients(zip(grads, variables, strict=True))
    return lambda: step()


def backend() -> Backend:
    return Backend(
        name="keras",
        versions={"keras": keras.__version__, "tensorflow": tf.__version__},
        variants={"keras SGD": sgd, "TF Model Garden LARS": model_garden, "lars paper": ours},
        targets=(Target("lars paper", "keras SGD", 1.5), Target("lars paper", "TF Model Garden LARS", 0.4)),
        sgd=("keras SGD",),
    )
