"""Shared helpers of the torch tests: the core's NumPy reference run on torch-made inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from lars.core import Hyperparams, State, reference

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
NUMPY = {torch.float64: np.float64, torch.float32: np.float32}


def tensors(shapes: Sequence[tuple[int, ...]], seed: int, dtype: torch.dtype = torch.float64,
            scale: float = 1.0) -> list[torch.Tensor]:
    """Reproducible normal tensors (drawn in float64, then cast)."""
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(s, generator=gen, dtype=torch.float64)).to(dtype) for s in shapes]


def gradient_stream(shapes: Sequence[tuple[int, ...]], steps: int, dtype: torch.dtype = torch.float64,
                    ) -> list[list[torch.Tensor]]:
    return [tensors(shapes, 1000 + t, dtype, scale=1.0 + t % 3) for t in range(steps)]


def run_torch(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
              grads: Sequence[Sequence[torch.Tensor | None]],
              lrs: Callable[[int], float] | None = None) -> None:
    """Steps `opt` once per entry of `grads`, giving each parameter a fresh copy."""
    for t, step_grads in enumerate(grads):
        if lrs is not None:
            opt.set_lr(lrs(t))  # type: ignore[attr-defined]
        for p, g in zip(params, step_grads, strict=True):
            p.grad = None if g is None else g.clone()
        opt.step()


def run_reference(hp: Hyperparams, names: Sequence[str], initial: Sequence[torch.Tensor],
                  grads: Sequence[Sequence[torch.Tensor | None]],
                  lrs: Callable[[int], float] | None = None,
                  ) -> tuple[dict[str, np.ndarray], State, list[dict[str, float]]]:
    """The reference trajectory: final params, final state and each step's trust ratios."""
    params = {n: p.detach().numpy().copy() for n, p in zip(names, initial, strict=True)}
    state, ratios = State(), []
    for t, step_grads in enumerate(grads):
        g = {n: None if x is None else x.numpy().copy() for n, x in zip(names, step_grads, strict=True)}
        result = reference.step(params, g, state, hp, lr=None if lrs is None else lrs(t))
        params, state = result.params, result.state
        ratios.append(result.trust_ratios)
    return params, state, ratios


def relative_error(ours: torch.Tensor, expected: np.ndarray) -> float:
    expected_t = torch.as_tensor(expected)
    scale = expected_t.abs().max().item()
    return (ours.detach().to(expected_t.dtype) - expected_t).abs().max().item() / scale


def assert_matches(params: Sequence[torch.Tensor], names: Sequence[str], expected: dict[str, np.ndarray],
                   dtype: torch.dtype) -> None:
    for name, p in zip(names, params, strict=True):
        error = relative_error(p, expected[name])
        assert error <= TOLERANCE[dtype], f"{name}: relative error {error:.3g}"
