"""Deterministic conformance cases: seeded problems that every driver must step identically.

A case fixes the tensors (names, shapes, scales), the initial values, the gradient source
(a fixed random stream, or a loss that depends on the parameters), the learning-rate
schedule and the hyperparameters it sets on top of each flavor's defaults. Everything comes
from a seed, so every backend sees the same numbers.

Tensor names follow MXNet's convention (`*_weight`, `*_bias`, `*_gamma`) so that the flavors'
name rules (MLPerf's `bias`/`bn` substrings, MXNet's suffixes, tensorlogic's letter `b`) apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lars.core.schedules import Constant, Schedule, WarmupCosine, WarmupPolynomial

Array = np.ndarray


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a case: name, shape, scale of its values and of its gradients."""

    name: str
    shape: tuple[int, ...]
    scale: float = 1.0
    grad_scale: float = 1.0
    zero_init: bool = False
    zero_grad: bool = False
    zero_grad_at: frozenset[int] = frozenset()


#: The standard set: 4-D convolution, matrix, bias vector, norm scale vector, scalar.
STANDARD_TENSORS = (
    TensorSpec("conv1_weight", (4, 3, 3, 3), scale=0.3, grad_scale=0.05),
    TensorSpec("dense_weight", (10, 6), scale=0.5, grad_scale=0.1),
    TensorSpec("dense_bias", (10,), scale=0.1, grad_scale=0.05),
    TensorSpec("bn_gamma", (6,), scale=1.0, grad_scale=0.02),
    TensorSpec("temperature", (), scale=2.0, grad_scale=0.1),
)


def _with(spec: TensorSpec, **changes: Any) -> TensorSpec:
    return TensorSpec(**{**spec.__dict__, **changes})


def _standard(**changes_by_name: dict[str, Any]) -> tuple[TensorSpec, ...]:
    return tuple(_with(t, **changes_by_name.get(t.name, {})) for t in STANDARD_TENSORS)


@dataclass(frozen=True)
class Case:
    """A seeded problem; `overrides` go on top of the flavor's defaults."""

    name: str
    overrides: Mapping[str, Any]
    schedule: Schedule = field(default_factory=lambda: Constant(0.1))
    tensors: tuple[TensorSpec, ...] = STANDARD_TENSORS
    gradients: str = "stream"  # or "loss"
    steps: int = 100
    seed: int = 0
    description: str = ""
    #: A case of lars's own contract for edge values (`docs/reliability.md`), which a peer
    #: library does not promise: peers (`edges = False`) are not held to it in float32.
    edge: bool = False
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def initial_params(self) -> dict[str, Array]:
        """float64 initial values (cast by the runner to the run's dtype)."""
        rng = np.random.default_rng([self.seed, 1])
        params = {}
        for t in self.tensors:
            values = rng.standard_normal(t.shape) * t.scale
            params[t.name] = np.zeros(t.shape) if t.zero_init else values
        return params

    def _stream(self) -> list[dict[str, Array]]:
        if "stream" not in self._cache:
            rng = np.random.default_rng([self.seed, 2])
            self._cache["stream"] = [
                {t.name: rng.standard_normal(t.shape) * t.grad_scale for t in self.tensors}
                for _ in range(self.steps)
            ]
        return list(self._cache["stream"])

    def _targets(self) -> dict[str, tuple[Array, Array]]:
        if "targets" not in self._cache:
            rng = np.random.default_rng([self.seed, 3])
            start = self.initial_params()
            # Targets lie far from where the weights can go in `steps` steps, so no gradient
            # crosses zero: near a zero gradient, float32 rounding of the weights would decide
            # the trust ratio, and the case would measure the problem's conditioning instead
            # of the driver.
            self._cache["targets"] = {
                t.name: (start[t.name] + 4.0 * t.scale * rng.choice([-1.0, 1.0], t.shape),
                         rng.uniform(0.5, 2.0, t.shape))
                for t in self.tensors
            }
        return dict(self._cache["targets"])

    def gradients_at(self, t: int, params: Mapping[str, Array]) -> dict[str, Array]:
        """The float64 gradients of step `t` (0-based) at the current `params`.

        "stream": a fixed random stream, independent of the parameters.
        "loss": the gradient of `sum(a/2 * (w - target)^2)` plus a smaller random stream, so
        that a driver's trajectory feeds back into its own gradients.
        """
        noise = self._stream()[t]
        grads = {}
        for spec in self.tensors:
            g = noise[spec.name]
            if self.gradients == "loss":
                target, curvature = self._targets()[spec.name]
                w = np.asarray(params[spec.name], dtype=np.float64)
                g = curvature * (w - target) / spec.scale * spec.grad_scale + 0.2 * g
            if spec.zero_grad or t in spec.zero_grad_at:
                g = np.zeros(spec.shape)
            grads[spec.name] = g
        return grads


def _cases() -> tuple[Case, ...]:
    poly = WarmupPolynomial(base_lr=0.5, warmup_steps=10, decay_steps=91, end_lr=1e-4)
    cosine = WarmupCosine(base_lr=0.2, warmup_steps=5, total_steps=100, end_lr=0.001)
    return (
        Case("flavor_defaults", {}, description="each flavor's own defaults (lr 0.1 where required)"),
        Case("momentum_weight_decay", {"momentum": 0.9, "weight_decay": 1e-2}),
        Case("warmup_poly_schedule", {"momentum": 0.9, "weight_decay": 5e-4}, schedule=poly,
             description="MLPerf-style warm-up then power-2 decay: the lr changes every step"),
        Case("nesterov", {"momentum": 0.9, "nesterov": True, "dampening": 0.0, "weight_decay": 1e-3},
             schedule=cosine),
        Case("dampening", {"momentum": 0.9, "dampening": 0.3, "weight_decay": 1e-3}),
        # lr rises to 2 and falls to 0.1, so the clip takes both branches; the zero gradients
        # of steps 3 and 40 (a weight norm > 0) and of steps 0-3 (a zero weight norm until
        # step 4) fall where lr > 1, where clipping the fallback ratio (timm) differs from not
        # clipping it (LARC).
        Case("larc_clip", {"momentum": 0.9, "weight_decay": 1e-3, "larc_clip": True,
                           "trust_coefficient": 0.02},
             tensors=_standard(dense_weight={"zero_grad_at": frozenset({3, 40})},
                               conv1_weight={"zero_init": True, "zero_grad_at": frozenset({0, 1, 2, 3})},
                               temperature={"zero_init": True, "zero_grad_at": frozenset({0, 1, 2})}),
             schedule=WarmupCosine(base_lr=2.0, warmup_steps=5, total_steps=100, end_lr=0.1)),
        Case("zero_norms", {"momentum": 0.9, "weight_decay": 1e-2},
             tensors=_standard(conv1_weight={"zero_init": True},
                               dense_bias={"zero_grad": True},
                               dense_weight={"zero_grad_at": frozenset({5, 17})},
                               temperature={"zero_init": True, "zero_grad": True}),
             description="all-zero weights, all-zero grads, a grad zero at two steps only"),
        Case("magnitudes", {"momentum": 0.9, "weight_decay": 1e-3},
             tensors=_standard(conv1_weight={"scale": 1e12, "grad_scale": 1e9},
                               dense_weight={"scale": 1e-12, "grad_scale": 1e-10},
                               bn_gamma={"scale": 1e6, "grad_scale": 1e-6}),
             description="huge and tiny magnitudes"),
        # Normal float32 values only: XLA and TensorFlow flush float32 subnormals to zero.
        Case("float32_range", {"momentum": 0.9, "weight_decay": 1e-3},
             tensors=_standard(conv1_weight={"scale": 1e30, "grad_scale": 1e28},
                               dense_weight={"scale": 1e-25, "grad_scale": 1e-5},
                               dense_bias={"grad_scale": 1e25}, bn_gamma={"grad_scale": 1e-25}),
             description="norms whose float32 squares overflow or underflow (docs/reliability.md)",
             edge=True),
        Case("loss_gradients", {"momentum": 0.9, "weight_decay": 1e-3}, gradients="loss",
             schedule=cosine, description="gradients of a loss that depends on the parameters"),
        Case("gradient_processing", {"momentum": 0.9, "weight_decay": 1e-3, "grad_rescale": 0.5,
                                     "grad_clip_value": 0.03, "maximize": True}),
        Case("global_norm_clip", {"momentum": 0.9, "weight_decay": 1e-3, "grad_clip_norm": 0.2},
             gradients="loss"),
        Case("exclusions", {"momentum": 0.9, "weight_decay": 1e-2,
                            "exclude_from_weight_decay": "ndim<=1",
                            "exclude_from_adaptation": [r"^bn_", "conv"]},
             description="explicit exclusion rules replacing the flavor's"),
    )


CASES: Mapping[str, Case] = {c.name: c for c in _cases()}

#: The cases that take every branch of a backend's kernels (no buffer or a buffer, look-ahead,
#: a zero norm's fallback, norms rescaled out of float32's range, element-wise and global-norm
#: clipping) with every flavor: a backend's second path (torch's per-tensor loop, MXNet's
#: per-tensor updates) runs the same core and a different kernel, so it runs these; its first
#: path runs every case.
KERNEL_CASES: tuple[str, ...] = ("flavor_defaults", "nesterov", "zero_norms", "float32_range",
                                 "gradient_processing", "global_norm_clip")
