"""The flavor table: one row of data per public LARS implementation.

Each row gives every variant axis and every default of the implementation it reproduces
(see the specification page of the docs for the sources). A flavor's names are public API.
`hyperparams(flavor, **overrides)` builds validated `Hyperparams` from a row; a user's explicit
arguments override the row's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from lars.core.errors import HyperparameterError
from lars.core.hyperparams import Hyperparams, check_field_names
from lars.core.policy import Exclude, as_exclude

_NO = Exclude()
_BN_AND_BIAS = Exclude.substrings("batch_normalization", "bias", "bn")
_SMALL_RANK = Exclude.ndim_at_most(1)


@dataclass(frozen=True)
class Flavor:
    """One public implementation as data.

    Attributes:
      name: the public flavor name.
      reproduces: the implementation (and version) it reproduces.
      defaults: a value for every hyperparameter field except `flavor` (its quirks,
        `eps_when_zero` and `adaptation_exclusion_follows_weight_decay`, included); `lr` is
        absent where the implementation requires one.
    """

    name: str
    reproduces: str
    defaults: Mapping[str, Any]

    @property
    def lr_required(self) -> bool:
        return "lr" not in self.defaults


def _row(name: str, reproduces: str, *, lr: float | None, momentum: float, weight_decay: float,
         trust_coefficient: float, eps: float, trust_denominator: str, zero_norm_rule: str,
         weight_decay_on_fallback: bool, momentum_style: str, buffer_start: str,
         exclude_wd: Exclude = _NO, exclude_adapt: Exclude = _NO, larc_clip: bool = False,
         larc_clip_on_fallback: bool = False, adapt_requires_weight_decay: bool = False,
         trust_ratio_max: float | None = None, decoupled_weight_decay: bool = False,
         clip_before_norms: bool = False, momentum_correction: bool = False,
         momentum_correction_tensors: int | None = None, eps_when_zero: float | None = None,
         adaptation_exclusion_follows_weight_decay: bool = False) -> Flavor:
    defaults: dict[str, Any] = dict(
        momentum=momentum, dampening=0.0, nesterov=False, weight_decay=weight_decay,
        trust_coefficient=trust_coefficient, eps=eps, larc_clip=larc_clip, maximize=False,
        grad_rescale=1.0, grad_clip_value=None, grad_clip_norm=None,
        trust_denominator=trust_denominator, momentum_style=momentum_style,
        buffer_start=buffer_start, zero_norm_rule=zero_norm_rule,
        weight_decay_on_fallback=weight_decay_on_fallback,
        adapt_requires_weight_decay=adapt_requires_weight_decay,
        larc_clip_on_fallback=larc_clip_on_fallback, clip_before_norms=clip_before_norms,
        trust_ratio_max=trust_ratio_max, decoupled_weight_decay=decoupled_weight_decay,
        momentum_correction=momentum_correction,
        momentum_correction_tensors=momentum_correction_tensors,
        exclude_from_weight_decay=exclude_wd, exclude_from_adaptation=exclude_adapt,
        eps_when_zero=eps_when_zero,
        adaptation_exclusion_follows_weight_decay=adaptation_exclusion_follows_weight_decay,
    )
    if lr is not None:
        defaults["lr"] = lr
    return Flavor(name, reproduces, MappingProxyType(defaults))


#: The flavor table. Keys are public API.
FLAVORS: Mapping[str, Flavor] = MappingProxyType({f.name: f for f in (
    _row("paper", "You, Gitman, Ginsburg 2017, Algorithm 1, as MLPerf's MLPERF_LARSOptimizer",
         lr=None, momentum=0.9, weight_decay=1e-4, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero"),
    _row("mlperf", "MLPerf ResNet-50 TF2 reference LARSOptimizer (skip list, eps 0 -> 1e-7)",
         lr=None, momentum=0.9, weight_decay=1e-4, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero",
         exclude_wd=_BN_AND_BIAS, exclude_adapt=_BN_AND_BIAS, eps_when_zero=1e-7),
    _row("optax", "optax.lars 0.2.8",
         lr=None, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="combined", zero_norm_rule="weight_and_denominator",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero"),
    _row("mxnet", "mxnet.optimizer.LARS 1.9.1 (momentum correction on its first update call)",
         lr=0.01, momentum=0.0, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero",
         exclude_wd=Exclude.regex(r"\A(?!.*_weight\Z)"),
         exclude_adapt=Exclude.suffixes("gamma", "beta", "bias"),
         momentum_correction=True, momentum_correction_tensors=4),
    _row("tf_models", "TF Model Garden official.modeling.optimization.lars.LARS (= SimCLR), classic",
         lr=0.01, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="combined", zero_norm_rule="weight_and_denominator",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero",
         clip_before_norms=True, adaptation_exclusion_follows_weight_decay=True),
    _row("timm", "timm.optim.Lars 1.0.31 (trust_clip = larc_clip, always_adapt = not "
         "adapt_requires_weight_decay)",
         lr=1.0, momentum=0.0, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="sgd", buffer_start="copy",
         adapt_requires_weight_decay=True, larc_clip_on_fallback=True),
    _row("larc", "NVIDIA apex LARC wrapping torch.optim.SGD",
         lr=1e-3, momentum=0.0, weight_decay=0.0, trust_coefficient=0.02, eps=1e-8,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=False, momentum_style="sgd", buffer_start="copy",
         larc_clip=True),
    _row("torchlars", "kakaobrain torchlars 0.1.2 wrapping torch.optim.SGD",
         lr=1e-3, momentum=0.0, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="sgd", buffer_start="copy"),
    _row("lightning_bolts", "pl_bolts.optimizers.LARS 0.7.0",
         lr=None, momentum=0.0, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=False, momentum_style="sgd", buffer_start="copy",
         adapt_requires_weight_decay=True),
    _row("pytorch_optimizer", "pytorch_optimizer.LARS 4.1.0",
         lr=1e-3, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_denominator",
         weight_decay_on_fallback=True, momentum_style="sgd", buffer_start="zero",
         exclude_wd=_SMALL_RANK, exclude_adapt=_SMALL_RANK),
    _row("moco", "MoCo v3 / MAE LARS",
         lr=0.0, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="combined", zero_norm_rule="weight_and_denominator",
         weight_decay_on_fallback=True, momentum_style="sgd", buffer_start="zero",
         exclude_wd=_SMALL_RANK, exclude_adapt=_SMALL_RANK),
    _row("dino", "DINO LARS (as moco, but only ndim == 1 is excluded)",
         lr=0.0, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="combined", zero_norm_rule="weight_and_denominator",
         weight_decay_on_fallback=True, momentum_style="sgd", buffer_start="zero",
         exclude_wd=Exclude.ndim_in(1), exclude_adapt=Exclude.ndim_in(1)),
    _row("holocron", "Holocron LARS (pylocron 0.3.0): no trust coefficient, ratio outside",
         lr=1e-3, momentum=0.0, weight_decay=0.0, trust_coefficient=1.0, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_denominator",
         weight_decay_on_fallback=True, momentum_style="ratio_outside", buffer_start="copy"),
    _row("tensorlogic", "tensorlogic-train LarsOptimizer (Rust): gradient-only denominator",
         lr=1e-3, momentum=0.9, weight_decay=0.01, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="grad", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero",
         exclude_adapt=Exclude.substrings("b"), clip_before_norms=True),
    _row("yscv", "yscv-optim Lars (Rust): paper without eps",
         lr=None, momentum=0.0, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero"),
    _row("mmpretrain", "mmpretrain.engine.optimizers.LARS 1.2.0 (OpenMMLab): heavy-ball from a copy",
         lr=None, momentum=0.0, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="copy"),
    _row("solo_learn", "solo-learn 1.0.2 LARSWrapper around torch.optim.SGD (as its later LARS class)",
         lr=None, momentum=0.0, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=False, momentum_style="sgd", buffer_start="copy"),
    _row("tinygrad", "tinygrad.nn.optim.LARS 0.14.0, classic=True",
         lr=1e-3, momentum=0.9, weight_decay=1e-4, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero"),
    _row("tinygrad_popular", "tinygrad.nn.optim.LARS 0.14.0, classic=False: the ratio outside",
         lr=1e-3, momentum=0.9, weight_decay=1e-4, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="ratio_outside", buffer_start="zero"),
    _row("paddle", "paddle.incubate.optimizer.LarsMomentumOptimizer 3.3.1, its GPU kernel",
         lr=None, momentum=0.9, weight_decay=5e-4, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero"),
    _row("paddle_cpu", "paddle.incubate.optimizer.LarsMomentumOptimizer 3.3.1, its CPU kernel: "
         "adapts only where the weight decay is > 0",
         lr=None, momentum=0.9, weight_decay=5e-4, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="split", zero_norm_rule="weight_and_grad",
         weight_decay_on_fallback=True, momentum_style="heavy_ball", buffer_start="zero",
         adapt_requires_weight_decay=True),
    _row("byol", "BYOL's lars (google-deepmind/deepmind-research byol/utils/optimizers.py, 82a3474): "
         "its default filters exclude nothing",
         lr=None, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
         trust_denominator="combined", zero_norm_rule="weight_and_denominator",
         weight_decay_on_fallback=True, momentum_style="sgd", buffer_start="zero"),
    _row("fastai", "fastai.optimizer.Larc 2.8.12 (clip=True, decouple_wd=True)",
         lr=None, momentum=0.9, weight_decay=0.0, trust_coefficient=0.02, eps=1e-8,
         trust_denominator="split", zero_norm_rule="none",
         weight_decay_on_fallback=True, momentum_style="ratio_outside", buffer_start="zero",
         trust_ratio_max=1.0, decoupled_weight_decay=True),
)})

DEFAULT_FLAVOR = "paper"


def get_flavor(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except (KeyError, TypeError):
        raise HyperparameterError("flavor", name, "one of " + ", ".join(FLAVORS)) from None


def hyperparams(flavor: str = DEFAULT_FLAVOR, **overrides: Any) -> Hyperparams:
    """Validated `Hyperparams`: the flavor's defaults, overridden by `overrides`.

    Exclusion rules may be given in any form `lars.core.policy.as_exclude` accepts.

    >>> hyperparams("optax", lr=0.1).trust_denominator
    'combined'
    """
    row = get_flavor(flavor)
    check_field_names(overrides)
    values = dict(row.defaults)
    # lr=None means "the flavor's default", as the adapters' constructors read it.
    values.update({k: v for k, v in overrides.items() if not (k == "lr" and v is None)})
    if "lr" not in values:
        raise HyperparameterError("lr", None, f"a learning rate: flavor {flavor!r} has no default")
    for name in ("exclude_from_weight_decay", "exclude_from_adaptation"):
        values[name] = as_exclude(values[name], name)
    return Hyperparams(flavor=flavor, **values)


def resolve(flavor: str | None = None, hyperparameters: Hyperparams | None = None,
            **overrides: Any) -> Hyperparams:
    """What every adapter's constructor takes: a flavor and overrides of its defaults, or a
    `Hyperparams` as it is (with overrides on top). An override of None is no override.

    >>> resolve(hyperparameters=hyperparams("mlperf", lr=0.1), lr=0.2).lr
    0.2
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if hyperparameters is None:
        return hyperparams(DEFAULT_FLAVOR if flavor is None else flavor, **overrides)
    if not isinstance(hyperparameters, Hyperparams):
        raise HyperparameterError("hyperparameters", hyperparameters, "None or a lars.Hyperparams")
    if flavor is not None and flavor != hyperparameters.flavor:
        raise HyperparameterError("flavor", flavor, f"None or {hyperparameters.flavor!r}, the flavor "
                                  "of the hyperparameters given")
    check_field_names(overrides)
    for name in ("exclude_from_weight_decay", "exclude_from_adaptation"):
        if name in overrides:
            overrides[name] = as_exclude(overrides[name], name)
    return hyperparameters.replace(**overrides) if overrides else hyperparameters
