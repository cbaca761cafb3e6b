"""The real peer libraries as conformance drivers: library-vs-library agreement in the report.

Each peer is the installed library's own LARS (`optax.lars`, `pytorch_optimizer.LARS`,
TF Model Garden's `LARS`, `mxnet.optimizer.LARS`) run in the flavor that reproduces it. A peer
has only the arguments its library has: a case whose hyperparameters leave the flavor's defaults
on a field the library cannot express is refused up front, with the field named, and counted
as refused (not as passed). Peers expose neither trust ratios nor (in one convention) their
buffers, so only the parameters are compared, at every step.

Each framework is imported when its peer starts, never at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lars.core.errors import HyperparameterError
from lars.core.flavors import hyperparams
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude, plan
from lars.core.state import State

Array = np.ndarray


class _AnyField(Mapping[str, str]):
    """`refuses` for a peer: whatever field it cannot express, the reason is the same."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def __getitem__(self, key: str) -> str:
        return self._reason

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return True


def check_expressible(hp: Hyperparams, peer: str, flavor: str, arguments: Iterable[str]) -> None:
    """Raises `HyperparameterError` on the first field of `hp` that is not `flavor`'s default
    and is not among the peer's `arguments` (fields of `Hyperparams`)."""
    if hp.flavor != flavor:
        raise HyperparameterError("flavor", hp.flavor, f"{flavor!r} ({peer} is that flavor)")
    defaults = hyperparams(flavor, lr=hp.lr)
    free = set(arguments) | {"lr", "flavor"}
    for f in dataclasses.fields(Hyperparams):
        value, default = getattr(hp, f.name), getattr(defaults, f.name)
        if f.name not in free and value != default:
            raise HyperparameterError(f.name, value, f"{default!r}: {peer} has no argument for it")


class _Run:
    """The common part of a peer run: NumPy in, NumPy out, nothing else exposed."""

    def state(self) -> State:
        return State()

    def trust_ratios(self) -> dict[str, float]:
        return {}


class _Peer:
    name: str
    library: str
    flavor: str
    module: str
    dtypes: tuple[str, ...] = ("float64", "float32")
    #: Only the parameters: a peer's trust ratios are internal, its buffers in its own convention.
    compares: tuple[str, ...] = ("params",)
    #: Not held to lars's edge cases (`Case.edge`) in float32: no peer takes its float32 norms
    #: out of range again.
    edges = False

    @property
    def refuses(self) -> Mapping[str, str]:
        return _AnyField(f"{self.library} has no argument for it")

    def unavailable_reason(self) -> str | None:
        try:
            __import__(self.module)
        except ImportError as exc:
            return f"{self.library} is not installed here ({exc})"
        return None


# optax.lars ------------------------------------------------------------------------------------
class _OptaxRun(_Run):
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        import optax

        plans = {t.name: t for t in plan(hp, [(n, p.shape) for n, p in params.items()])}
        wd_mask = {n: hp.weight_decay == 0 or t.weight_decay != 0 for n, t in plans.items()}
        ratio_mask = {n: t.adapt for n, t in plans.items()}
        factory = optax.inject_hyperparams(optax.lars, static_args=("nesterov",))
        self._tx = factory(learning_rate=hp.lr, weight_decay=hp.weight_decay, weight_decay_mask=wd_mask,
                           trust_coefficient=hp.trust_coefficient, eps=hp.eps, trust_ratio_mask=ratio_mask,
                           momentum=hp.momentum, nesterov=hp.nesterov)
        self._jnp, self._optax = jnp, optax
        self._params = {n: jnp.asarray(p) for n, p in params.items()}
        self._state = self._tx.init(self._params)
        self._update = jax.jit(self._tx.update)

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        jnp = self._jnp
        g = {n: jnp.asarray(grads[n]) for n in self._params}
        hyper = self._state.hyperparams
        hyper["learning_rate"] = jnp.asarray(lr, hyper["learning_rate"].dtype)
        updates, self._state = self._update(g, self._state, self._params)
        self._params = self._optax.apply_updates(self._params, updates)

    def params(self) -> dict[str, Array]:
        return {n: np.asarray(p) for n, p in self._params.items()}


class OptaxPeer(_Peer):
    name, library, flavor, module = "optax.lars", "optax.lars", "optax", "optax"
    #: Masks say where weight decay and the ratio apply: any exclusion rule translates to them.
    ARGUMENTS = ("momentum", "nesterov", "weight_decay", "trust_coefficient", "eps",
                 "exclude_from_weight_decay", "exclude_from_adaptation")

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        return _OptaxRun(hp, params)


# pytorch_optimizer.LARS ------------------------------------------------------------------------
class _PytorchOptimizerRun(_Run):
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        import pytorch_optimizer
        import torch

        self._torch = torch
        self._params = {n: torch.tensor(p).requires_grad_() for n, p in params.items()}
        self._optimizer = pytorch_optimizer.LARS(
            list(self._params.values()), lr=hp.lr, weight_decay=hp.weight_decay, momentum=hp.momentum,
            dampening=hp.dampening, trust_coefficient=hp.trust_coefficient, nesterov=hp.nesterov,
            maximize=hp.maximize)

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        for n, p in self._params.items():
            g = grads.get(n)
            p.grad = None if g is None else self._torch.tensor(g)
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        self._optimizer.step()

    def params(self) -> dict[str, Array]:
        return {n: p.detach().numpy().copy() for n, p in self._params.items()}


class PytorchOptimizerPeer(_Peer):
    name, library, flavor, module = ("pytorch_optimizer.LARS", "pytorch_optimizer.LARS",
                                     "pytorch_optimizer", "pytorch_optimizer")
    ARGUMENTS = ("momentum", "dampening", "nesterov", "weight_decay", "trust_coefficient", "maximize")

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        return _PytorchOptimizerRun(hp, params)


# TF Model Garden's LARS ------------------------------------------------------------------------
#: Model Garden's `classic_momentum=False` on the core's axes.
POPULAR = {"momentum_style": "ratio_outside", "trust_denominator": "update", "buffer_start": "zero"}


def regex_list(rule: Exclude, field: str) -> list[str] | None:
    """A rule as Model Garden's list of regexes (`re.search` on the name), if it is one."""
    if rule.ndims or rule.names or rule.predicate is not None:
        raise HyperparameterError(field, rule, "regular expressions only (TF Model Garden's LARS)")
    return list(rule.patterns) or None


class _ModelGardenRun(_Run):
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        import tensorflow as tf
        from official.modeling.optimization.lars import LARS

        popular = all(getattr(hp, k) == v for k, v in POPULAR.items())
        clipping = {"clipvalue": hp.grad_clip_value, "global_clipnorm": hp.grad_clip_norm}
        self._optimizer = LARS(
            learning_rate=hp.lr, momentum=hp.momentum, weight_decay_rate=hp.weight_decay,
            eeta=hp.trust_coefficient, nesterov=hp.nesterov, classic_momentum=not popular,
            exclude_from_weight_decay=regex_list(hp.exclude_from_weight_decay, "exclude_from_weight_decay"),
            exclude_from_layer_adaptation=regex_list(hp.exclude_from_adaptation, "exclude_from_adaptation"),
            **{k: v for k, v in clipping.items() if v is not None})
        self._tf = tf
        # The peer matches its regexes against `variable.name` ("conv1_weight:0").
        self._variables = {n: tf.Variable(p, name=n) for n, p in params.items()}

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        self._optimizer.learning_rate = lr
        pairs = [(self._tf.constant(g), v) for n, v in self._variables.items()
                 if (g := grads.get(n)) is not None]
        self._optimizer.apply_gradients(pairs)

    def params(self) -> dict[str, Array]:
        return {n: v.numpy() for n, v in self._variables.items()}


class ModelGardenPeer(_Peer):
    name, library, flavor, module = ("tf_models.LARS", "TF Model Garden's LARS", "tf_models",
                                     "official.modeling.optimization.lars")
    #: tf_keras keeps an optimizer's hyperparameters in float32 variables (lr 0.1 is read back
    #: as 0.10000000149): a float64 run is off by ~1e-9 from the first step, by construction.
    dtypes = ("float32",)
    ARGUMENTS = ("momentum", "nesterov", "weight_decay", "trust_coefficient", "grad_clip_value",
                 "grad_clip_norm", "exclude_from_weight_decay", "exclude_from_adaptation", *POPULAR)

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        axes = {k: getattr(hp, k) for k in POPULAR}
        classic = {k: getattr(hyperparams(self.flavor, lr=hp.lr), k) for k in POPULAR}
        if axes != classic and axes != POPULAR:
            field = next(k for k in POPULAR if axes[k] != classic[k])
            raise HyperparameterError(field, axes[field], f"{classic[field]!r} (classic_momentum=True) or "
                                      f"{POPULAR[field]!r} with the other axes of classic_momentum=False")
        return _ModelGardenRun(hp, params)


# mxnet.optimizer.LARS --------------------------------------------------------------------------
class _MxnetRun(_Run):
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        import mxnet as mx

        # MXNet 1.x users hold a scalar as shape (1,): its LARS kernels (`multi_sum_sq`) refuse
        # 0-d arrays. The norm and the update of a one-element vector are the scalar's.
        self._mx, self._names = mx, list(params)
        self._shapes = {n: p.shape for n, p in params.items()}
        self._weights = [mx.nd.array(np.atleast_1d(params[n]), dtype=params[n].dtype) for n in self._names]
        options: dict[str, Any] = {"rescale_grad": hp.grad_rescale}
        if hp.grad_clip_value is not None:
            options["clip_gradient"] = hp.grad_clip_value
        self.optimizer = mx.optimizer.LARS(
            learning_rate=hp.lr, momentum=hp.momentum, wd=hp.weight_decay, eta=hp.trust_coefficient,
            eps=hp.eps, momentum_correction=hp.momentum_correction,
            param_idx2name=dict(enumerate(self._names)), **options)
        self._updater = mx.optimizer.get_updater(self.optimizer)

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        given = {i: g for i, n in enumerate(self._names) if (g := grads.get(n)) is not None}
        self.optimizer.set_learning_rate(lr)
        arrays = [self._mx.nd.array(np.atleast_1d(g), dtype=g.dtype) for g in given.values()]
        self._updater(list(given), arrays, [self._weights[i] for i in given])

    def params(self) -> dict[str, Array]:
        weights = zip(self._names, self._weights, strict=True)
        return {n: w.asnumpy().reshape(self._shapes[n]) for n, w in weights}


class MxnetPeer(_Peer):
    name, library, flavor, module = "mxnet.LARS", "mxnet.optimizer.LARS", "mxnet", "mxnet"
    #: MXNet's update kernels take lr, momentum and wd as C++ `float` attributes: a float64 run
    #: is off by ~1e-8 from the first step, by construction.
    dtypes = ("float32",)
    ARGUMENTS = ("momentum", "weight_decay", "trust_coefficient", "eps", "grad_rescale", "grad_clip_value",
                 "momentum_correction")

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        return _MxnetRun(hp, params)


#: peer name -> "module:attribute", imported lazily, as `lars.conformance.drivers.DRIVERS`.
PEERS: Mapping[str, str] = {
    "optax.lars": "lars.conformance.peers:OptaxPeer",
    "pytorch_optimizer.LARS": "lars.conformance.peers:PytorchOptimizerPeer",
    "tf_models.LARS": "lars.conformance.peers:ModelGardenPeer",
    "mxnet.LARS": "lars.conformance.peers:MxnetPeer",
}
