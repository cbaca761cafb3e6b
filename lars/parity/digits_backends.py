"""The digits MLP in each framework: its own forward, its own gradients, its own LARS adapter.

Each function here builds a `Learner` from the core's `Hyperparams` and the problem's NumPy
weights (named `dense1/kernel`, `dense1/bias`, ...: kernels are `(fan_in, fan_out)`, so every
layer computes `x @ kernel + bias`, tanh between layers, logits out). The framework is
imported inside the function, so importing this module needs none of them. Every learner
keeps the problem's names for its tensors, so that trust ratios and parameters can be read
back by name and laid over the reference's:

- torch: `torch.nn.Parameter`s named by `LARS(list(named.items()))`, autograd, `set_lr`.
- jax: a dict pytree (its leaves are named by their keys), optax's integer-label softmax
  cross-entropy, `jax.value_and_grad`, the `lars()` transform under `optax.inject_hyperparams`,
  one jitted step; `jax_enable_x64` is switched on for the process (as the conformance driver does).
- keras: a functional `keras.Model` of `Dense` layers named `dense1`, ... (variable paths
  `dense1/kernel`), compiled with the `LARS` optimizer and trained by `train_on_batch`, as
  `model.fit` would step; `floatx` is the run's dtype while it runs. Meant for the TensorFlow
  backend: on the JAX backend Keras 3.15 computes `tanh` of float64 in float32 (its type
  promotion maps float64 to float32 off TensorFlow), so float64 lies only within ~2e-7 there.
- mxnet: `gluon.Parameter`s named as above, `autograd`, a `gluon.Trainer` over a `OneLARS`
  instance; the loss is summed and `Trainer.step(batch_size)` rescales by `1/batch_size`,
  the Gluon idiom (exact for the default batch of 128, a power of two); the softmax
  cross-entropy is written from MXNet's elementwise ops (see `digits`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from lars.core.hyperparams import Hyperparams
from lars.core.trace import QUANTITIES, Recorder

Array = np.ndarray


class Learner(Protocol):
    """One framework training the MLP."""

    framework: str

    def step(self, x: Array, y: Array, lr: float) -> float:
        """One training step on a batch at learning rate `lr`; returns the batch's loss before it."""

    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio of each tensor in the last step, by the problem's names."""

    def params(self) -> dict[str, Array]:
        """The current parameters as NumPy arrays, by the problem's names."""

    def close(self) -> None:
        """Restores any global setting the learner changed, and closes a recording."""

    def record(self, path: str) -> None:
        """Records every following step into the trace file `path` (`lars.core.trace`), with the
        framework's own recorder, until `close`."""


Factory = Callable[[Hyperparams, Mapping[str, Array]], Learner]


def adapter_arguments(hp: Hyperparams) -> tuple[str, float, dict[str, Any]]:
    """(flavor, lr, every other field) as keyword arguments of an adapter, exclusions as rules."""
    values = hp.to_dict() | {"exclude_from_weight_decay": hp.exclude_from_weight_decay,
                             "exclude_from_adaptation": hp.exclude_from_adaptation}
    return values.pop("flavor"), values.pop("lr"), values


def layer_names(params: Mapping[str, Array]) -> list[str]:
    """`dense1`, `dense2`, ... in order of the parameters."""
    return list(dict.fromkeys(name.split("/")[0] for name in params))


def torch_learner(hp: Hyperparams, params: Mapping[str, Array]) -> Learner:
    import torch
    import torch.nn.functional as F

    from lars.backends.torch import LARS

    weights = {n: torch.nn.Parameter(torch.from_numpy(np.array(p, copy=True))) for n, p in params.items()}
    optimizer = LARS(list(weights.items()), hyperparameters=hp)
    layers = layer_names(params)

    def logits(x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(layers):
            x = x @ weights[f"{layer}/kernel"] + weights[f"{layer}/bias"]
            x = x if i == len(layers) - 1 else torch.tanh(x)
        return x

    class TorchLearner:
        framework = f"torch {torch.__version__}"
        recorder: Any = None
        t = 0

        def step(self, x: Array, y: Array, lr: float) -> float:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits(torch.from_numpy(x)), torch.from_numpy(y))
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.set_lr(lr)
            optimizer.step()
            if self.recorder is not None:
                self.recorder.add_loss(self.t, loss.detach())
            self.t += 1
            return float(loss.detach())

        def record(self, path: str) -> None:
            self.recorder = optimizer.record(path)

        def trust_ratios(self) -> dict[str, float]:
            return optimizer.trust_ratios()

        def params(self) -> dict[str, Array]:
            return {n: w.detach().numpy().copy() for n, w in weights.items()}

        def close(self) -> None:
            if self.recorder is not None:
                self.recorder.close()

    return TorchLearner()


def jax_learner(hp: Hyperparams, params: Mapping[str, Array]) -> Learner:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 runs need it; float32 arrays stay float32
    import jax.numpy as jnp
    import optax

    from lars.backends.jax import lars

    tx = optax.inject_hyperparams(lars, static_args=("record",))(learning_rate=hp.lr, hyperparameters=hp,
                                                                 record=True)
    layers = layer_names(params)

    def loss_fn(w: dict[str, Any], x: Any, y: Any) -> Any:
        for i, layer in enumerate(layers):
            x = x @ w[f"{layer}/kernel"] + w[f"{layer}/bias"]
            x = x if i == len(layers) - 1 else jnp.tanh(x)
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(x, y))

    def step(w: dict[str, Any], state: Any, x: Any, y: Any) -> tuple[Any, Any, Any]:
        loss, grads = jax.value_and_grad(loss_fn)(w, x, y)
        updates, state = tx.update(grads, state, w)
        return optax.apply_updates(w, updates), state, loss

    train_step = jax.jit(step)

    class JaxLearner:
        framework = f"jax {jax.__version__}, optax {optax.__version__}"

        def __init__(self) -> None:
            self.w = {n: jnp.asarray(p) for n, p in params.items()}
            self.state = tx.init(self.w)
            self.recorder: Any = None

        def step(self, x: Array, y: Array, lr: float) -> float:
            hyper = self.state.hyperparams
            hyper["learning_rate"] = jnp.asarray(lr, hyper["learning_rate"].dtype)
            self.w, self.state, loss = train_step(self.w, self.state, jnp.asarray(x), jnp.asarray(y))
            if self.recorder is not None:
                self.recorder.add_state(self.state, loss)
            return float(loss)

        def record(self, path: str) -> None:
            self.recorder = lars(hp.lr, hyperparameters=hp, record=True).recorder(path, self.w)

        def trust_ratios(self) -> dict[str, float]:
            return {n: float(r) for n, r in self.state.inner_state.trust_ratios.items()}

        def params(self) -> dict[str, Array]:
            return {n: np.asarray(p) for n, p in self.w.items()}

        def close(self) -> None:
            if self.recorder is not None:
                self.recorder.close()

    return JaxLearner()


def keras_learner(hp: Hyperparams, params: Mapping[str, Array]) -> Learner:
    import keras

    if keras.backend.backend() == "jax":  # float64 runs need 64-bit JAX arrays
        import jax

        jax.config.update("jax_enable_x64", True)
    # Keras makes its global dtype policy from floatx at the first layer of the process: fix it
    # now, from the caller's floatx, so that our float64 layers do not make it float64 for later.
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    dtype = str(next(iter(params.values())).dtype)

    def restore() -> None:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)

    keras.config.set_floatx(dtype)  # the learning rate variable takes floatx
    try:
        model, optimizer = _keras_model(hp, params, dtype)
    except BaseException:
        restore()
        raise
    backend = keras.backend.backend()
    version = getattr(importlib.import_module(backend), "__version__", "")

    class KerasLearner:
        framework = f"keras {keras.__version__} on {backend} {version}"
        recorder: Any = None
        t = 0

        def step(self, x: Array, y: Array, lr: float) -> float:
            optimizer.learning_rate = lr
            loss = float(model.train_on_batch(x, y))
            if self.recorder is not None:  # `train_on_batch` runs no callback: the optimizer's records
                values = dict(zip(QUANTITIES, (keras.ops.convert_to_numpy(v) for v in optimizer.records),
                                  strict=True))
                self.recorder.add(self.t, lr, values, loss)
            self.t += 1
            return loss

        def record(self, path: str) -> None:
            optimizer.start_recording()
            model.make_train_function(force=True)
            self.recorder = Recorder(path, [v.path for v in model.trainable_variables],
                                     [tuple(v.shape) for v in model.trainable_variables], framework="keras",
                                     dtype=dtype, hyperparams=hp.to_dict())

        def trust_ratios(self) -> dict[str, float]:
            return optimizer.trust_ratios()  # type: ignore[no-any-return]

        def params(self) -> dict[str, Array]:
            return {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}

        def close(self) -> None:
            if self.recorder is not None:
                self.recorder.close()
            restore()

    return KerasLearner()


def _keras_model(hp: Hyperparams, params: Mapping[str, Array], dtype: str) -> tuple[Any, Any]:
    """The compiled model and its optimizer; every layer gets `dtype` explicitly, not from the
    global dtype policy."""
    import keras

    from lars.backends.keras import LARS

    layers = layer_names(params)
    inputs = keras.Input((params[f"{layers[0]}/kernel"].shape[0],), dtype=dtype)
    h = inputs
    for i, layer in enumerate(layers):
        activation = None if i == len(layers) - 1 else "tanh"
        h = keras.layers.Dense(params[f"{layer}/kernel"].shape[1], activation, name=layer, dtype=dtype)(h)
    model = keras.Model(inputs, h)
    for v in model.trainable_variables:
        v.assign(params[v.path])
    optimizer = LARS(hyperparameters=hp)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
    model.compile(optimizer=optimizer, loss=loss)
    return model, optimizer


def mxnet_learner(hp: Hyperparams, params: Mapping[str, Array]) -> Learner:
    import mxnet as mx
    from mxnet import autograd, gluon, nd

    from lars.backends.mxnet import OneLARS

    dtype = str(next(iter(params.values())).dtype)
    weights = {n: gluon.Parameter(n, shape=p.shape, dtype=dtype) for n, p in params.items()}
    for name, w in weights.items():
        w.initialize(mx.init.Zero())
        w.set_data(nd.array(params[name], dtype=dtype))
    trainer = gluon.Trainer(list(weights.values()), OneLARS(hyperparameters=hp))
    layers = layer_names(params)

    def loss_fn(x: Any, y: Any) -> Any:
        """Softmax cross-entropy from elementwise ops: Gluon's `SoftmaxCrossEntropyLoss` has 25
        times NumPy's float32 error (`digits`), which the MLPerf schedule's chaotic regime grows
        past ten times the reference's own rounding; the problem compares optimizers, not losses."""
        shifted = nd.broadcast_sub(x, nd.max(x, axis=1, keepdims=True))
        return nd.log(nd.sum(nd.exp(shifted), axis=1)) - nd.pick(shifted, y, axis=1)

    def logits(x: Any) -> Any:
        for i, layer in enumerate(layers):
            kernel, bias = weights[f"{layer}/kernel"].data(), weights[f"{layer}/bias"].data()
            x = nd.broadcast_add(nd.dot(x, kernel), bias)
            x = x if i == len(layers) - 1 else nd.tanh(x)
        return x

    class MxnetLearner:
        framework = f"mxnet {mx.__version__}"
        recorder: Any = None
        t = 0

        def step(self, x: Array, y: Array, lr: float) -> float:
            xb, yb = nd.array(x, dtype=dtype), nd.array(y, dtype=dtype)
            with autograd.record():
                losses = loss_fn(logits(xb), yb)
            losses.backward()
            trainer.set_learning_rate(lr)
            trainer.step(len(x))
            if self.recorder is not None:
                self.recorder.add_loss(self.t, losses.mean())
            self.t += 1
            return float(losses.mean().asscalar())

        def record(self, path: str) -> None:
            from lars.backends.mxnet import record

            self.recorder = record(trainer, path)

        def trust_ratios(self) -> dict[str, float]:
            return trainer.optimizer.trust_ratios()  # type: ignore[no-any-return]

        def params(self) -> dict[str, Array]:
            return {n: w.data().asnumpy() for n, w in weights.items()}

        def close(self) -> None:
            if self.recorder is not None:
                self.recorder.close()

    return MxnetLearner()


#: backend -> (its adapter module, which imports the framework; its learner factory).
FRAMEWORKS: Mapping[str, tuple[str, Factory]] = {
    "torch": ("lars.backends.torch", torch_learner),
    "jax": ("lars.backends.jax", jax_learner),
    "keras": ("lars.backends.keras", keras_learner),
    "mxnet": ("lars.backends.mxnet", mxnet_learner),
}
