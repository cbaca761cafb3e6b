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
import types
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


# torch peers: pytorch_optimizer.LARS, and the LARS files of mmpretrain and solo-learn ----------
class _TorchRun(_Run):
    """A torch optimizer built by `make(hp, groups)` from the parameters grouped by their plan
    (weight decay, adapted): libraries express exclusions as parameter groups."""

    def __init__(self, hp: Hyperparams, params: Mapping[str, Array], make: Any) -> None:
        import torch

        self._torch = torch
        self._params = {n: torch.tensor(p).requires_grad_() for n, p in params.items()}
        self._optimizer = make(hp, plan_groups(hp, self._params))

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        for n, p in self._params.items():
            g = grads.get(n)
            p.grad = None if g is None else self._torch.tensor(g)
        self.set_lr(lr)
        self._optimizer.step()

    def set_lr(self, lr: float) -> None:
        for group in self._optimizer.param_groups:
            group["lr"] = lr

    def params(self) -> dict[str, Array]:
        return {n: p.detach().numpy().copy() for n, p in self._params.items()}


def plan_groups(hp: Hyperparams, tensors: Mapping[str, Any], shapes: Mapping[str, Any] | None = None,
                ) -> dict[tuple[float, bool], list[Any]]:
    """The framework's `tensors` grouped by their plan, `(weight decay, adapted)`: how a library
    without per-tensor rules is given the exclusions (`shapes`: the tensors' own, if they differ)."""
    groups: dict[tuple[float, bool], list[Any]] = {}
    for t in plan(hp, [(n, (shapes or {}).get(n, np.shape(x))) for n, x in tensors.items()]):
        groups.setdefault((t.weight_decay, t.adapt), []).append(tensors[str(t.name)])
    return groups


def load_file(dist: str, version: str, path: str, stubs: Mapping[str, Mapping[str, Any]] | None = None,
              package: str | None = None) -> Any:
    """The module of one file of an installed distribution (installed with `--no-deps`: its
    package `__init__` imports what LARS does not need), loaded by path; `stubs`: modules it
    imports, as {name: attributes}, in place while it loads; `package`: the package its relative
    imports start from (stub it)."""
    import importlib.util
    import sys
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        found = distribution(dist)
    except PackageNotFoundError:
        raise ImportError(f"{dist}=={version} is not installed: pip install --no-deps "
                          f"{dist}=={version}") from None
    if found.version != version:
        raise ImportError(f"{dist} {found.version} is installed; the flavor reproduces {version}")
    file = str(found.locate_file(path))
    name = f"{package}.{path.rsplit('/', 1)[-1].removesuffix('.py')}" if package else \
        f"_peer_{dist.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = {name: sys.modules.get(name) for name in stubs or {}}
    for name, attrs in (stubs or {}).items():
        sys.modules[name] = types.ModuleType(name)
        vars(sys.modules[name]).update(attrs)
    try:
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                del sys.modules[name]
            else:
                sys.modules[name] = old
    return module


class _TorchPeer(_Peer):
    ARGUMENTS: tuple[str, ...] = ()

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        return _TorchRun(hp, params, self.make)

    def make(self, hp: Hyperparams, groups: Mapping[tuple[float, bool], list[Any]]) -> Any:
        raise NotImplementedError


class _FilePeer(_TorchPeer):
    """A peer whose LARS class `load()` reads from one file of its installed wheel."""

    def unavailable_reason(self) -> str | None:
        try:
            self.load()
        except ImportError as exc:
            return str(exc)
        return None

    def load(self) -> Any:
        raise NotImplementedError


class PytorchOptimizerPeer(_TorchPeer):
    name, library, flavor, module = ("pytorch_optimizer.LARS", "pytorch_optimizer.LARS",
                                     "pytorch_optimizer", "pytorch_optimizer")
    ARGUMENTS = ("momentum", "dampening", "nesterov", "weight_decay", "trust_coefficient", "maximize")

    def make(self, hp: Hyperparams, groups: Mapping[tuple[float, bool], list[Any]]) -> Any:
        import pytorch_optimizer

        return pytorch_optimizer.LARS(
            [p for ps in groups.values() for p in ps], lr=hp.lr, weight_decay=hp.weight_decay,
            momentum=hp.momentum, dampening=hp.dampening, trust_coefficient=hp.trust_coefficient,
            nesterov=hp.nesterov, maximize=hp.maximize)


class MmpretrainPeer(_FilePeer):
    """mmpretrain's LARS: a group with `lars_exclude` keeps its weight decay, without the ratio."""

    name, library, flavor, module = "mmpretrain.LARS", "mmpretrain's LARS 1.2.0", "mmpretrain", "torch"
    ARGUMENTS = ("momentum", "dampening", "nesterov", "weight_decay", "trust_coefficient", "eps",
                 "exclude_from_weight_decay", "exclude_from_adaptation")

    def load(self) -> Any:
        registry = {"OPTIMIZERS": types.SimpleNamespace(register_module=lambda: (lambda cls: cls))}
        return load_file("mmpretrain", "1.2.0", "mmpretrain/engine/optimizers/lars.py",
                         {"mmpretrain": {}, "mmpretrain.registry": registry}).LARS

    def make(self, hp: Hyperparams, groups: Mapping[tuple[float, bool], list[Any]]) -> Any:
        return self.load()([{"params": ps, "weight_decay": wd, "lars_exclude": not adapt}
                            for (wd, adapt), ps in groups.items()], lr=hp.lr, momentum=hp.momentum,
                           weight_decay=hp.weight_decay, dampening=hp.dampening, eta=hp.trust_coefficient,
                           nesterov=hp.nesterov, eps=hp.eps)


class SoloLearnPeer(_FilePeer):
    """solo-learn's LARSWrapper around torch SGD: exclusion from adaptation is only its
    `exclude_bias_n_norm` (1-d tensors, which then lose their weight decay too)."""

    name, library, flavor, module = "solo_learn.LARS", "solo-learn's LARSWrapper 1.0.2", "solo_learn", "torch"
    ARGUMENTS = ("momentum", "dampening", "nesterov", "weight_decay", "trust_coefficient", "eps",
                 "larc_clip", "exclude_from_weight_decay")

    def load(self) -> Any:
        return load_file("solo-learn", "1.0.2", "solo/utils/lars.py").LARSWrapper

    def make(self, hp: Hyperparams, groups: Mapping[tuple[float, bool], list[Any]]) -> Any:
        import torch

        sgd = torch.optim.SGD([{"params": ps, "weight_decay": wd} for (wd, _), ps in groups.items()],
                              lr=hp.lr, momentum=hp.momentum, dampening=hp.dampening, nesterov=hp.nesterov)
        return self.load()(sgd, eta=hp.trust_coefficient, clip=hp.larc_clip, eps=hp.eps)


class LightlyPeer(_FilePeer):
    """lightly's LARS, Lightning Bolts' rule copied: a group with weight decay 0 is not adapted."""

    name, library, flavor, module = "lightly.LARS", "lightly's LARS 1.6.0", "lightning_bolts", "torch"
    ARGUMENTS = ("momentum", "dampening", "nesterov", "weight_decay", "trust_coefficient", "eps",
                 "exclude_from_weight_decay")

    def load(self) -> Any:
        return load_file("lightly", "1.6.0", "lightly/utils/lars.py").LARS

    def make(self, hp: Hyperparams, groups: Mapping[tuple[float, bool], list[Any]]) -> Any:
        return self.load()([{"params": ps, "weight_decay": wd} for (wd, _), ps in groups.items()], lr=hp.lr,
                           momentum=hp.momentum, dampening=hp.dampening, weight_decay=hp.weight_decay,
                           nesterov=hp.nesterov, trust_coefficient=hp.trust_coefficient, eps=hp.eps)


# tinygrad.nn.optim.LARS --------------------------------------------------------------------------
class _TinygradRun(_Run):
    """One tinygrad LARS per group of the plan (it has no parameter groups): `tcoef=0` is its
    ratio 1, `weight_decay=0` its exclusion from weight decay."""

    def __init__(self, hp: Hyperparams, params: Mapping[str, Array], classic: bool) -> None:
        from tinygrad import Context, Tensor
        from tinygrad.nn.optim import LARS

        # A 0-d parameter is held as shape (1,), as its users do: its lr is a (1,) tensor, and
        # the update of a 0-d buffer fails to broadcast.
        self._tensor, self._context = Tensor, Context
        self._shapes = {n: np.shape(p) for n, p in params.items()}
        self._params = {n: Tensor(np.atleast_1d(p)) for n, p in params.items()}
        for p in self._params.values():
            p.requires_grad = True
        groups = plan_groups(hp, self._params, self._shapes)
        self._optimizers = [LARS(ps, lr=hp.lr, momentum=hp.momentum, weight_decay=wd, nesterov=hp.nesterov,
                                 classic=classic, tcoef=hp.trust_coefficient if adapt else 0.0)
                            for (wd, adapt), ps in groups.items()]

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        for n, p in self._params.items():
            p.grad = self._tensor(np.atleast_1d(np.asarray(grads[n])))
        with self._context(TRAINING=1):
            for opt in self._optimizers:
                opt.lr.assign(self._tensor([lr], dtype=opt.lr.dtype, device=opt.lr.device)).realize()
                opt.step()

    def params(self) -> dict[str, Array]:
        return {n: p.numpy().reshape(self._shapes[n]) for n, p in self._params.items()}


class TinygradPeer(_Peer):
    name, library, flavor = "tinygrad.LARS", "tinygrad's LARS 0.14.0 (classic)", "tinygrad"
    module = "tinygrad"
    #: Its learning rate and buffers are float32 tensors whatever the parameters' dtype.
    dtypes = ("float32",)
    ARGUMENTS = ("momentum", "nesterov", "weight_decay", "trust_coefficient", "exclude_from_weight_decay",
                 "exclude_from_adaptation")

    def unavailable_reason(self) -> str | None:
        import shutil

        if shutil.which("clang") is None:  # its CPU device compiles its kernels with clang
            return "tinygrad's CPU device needs clang (Debian's package clang)"
        return super().unavailable_reason()

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        return _TinygradRun(hp, params, classic=self.flavor == "tinygrad")


class TinygradPopularPeer(TinygradPeer):
    name, library, flavor = "tinygrad.LARS(classic=False)", "tinygrad's LARS 0.14.0 (classic=False)", \
        "tinygrad_popular"


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
    "mmpretrain.LARS": "lars.conformance.peers:MmpretrainPeer",
    "solo_learn.LARS": "lars.conformance.peers:SoloLearnPeer",
    "lightly.LARS": "lars.conformance.peers:LightlyPeer",
    "tinygrad.LARS": "lars.conformance.peers:TinygradPeer",
    "tinygrad.LARS(classic=False)": "lars.conformance.peers:TinygradPopularPeer",
    "tf_models.LARS": "lars.conformance.peers:ModelGardenPeer",
    "mxnet.LARS": "lars.conformance.peers:MxnetPeer",
    "paddle.LarsMomentumOptimizer": "lars.conformance.paddle_peer:PaddlePeer",
    "fastai.Larc": "lars.conformance.fastai_peer:FastaiPeer",
}
