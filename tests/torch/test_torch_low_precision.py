"""float16/bfloat16 parameters on the fused CPU path, and the accuracy of norms of large tensors.

A low-precision step goes through the float32 fused kernel in chunks (`low_precision`): it must
be exactly the float32 fused step of the up-cast values, rounded, including across chunk
boundaries. Norms of large CPU tensors are summed in pieces: they must be within a few units of
float32 rounding of the exact norm, which torch's own float32 norm is not.
"""

import numpy as np
import pytest
import torch

import lars
from lars.backends.torch import LARS, functional, low_precision
from lars.backends.torch.functional import TensorGroup
from lars.core.policy import TensorPlan

# a tensor over two chunks with a partial third, a matrix, a vector
SHAPES = [(2 * low_precision.CHUNK + 1000,), (300, 7), (64,)]
# heavy-ball, SGD-style, ratio outside, clip, the combined norm (its u = g + wd*w made in float32),
# and a gradient rescaled and clipped element-wise (in float32, not rounded again to its own dtype)
FLAVORS = [("paper", {}), ("timm", {}), ("holocron", {}), ("larc", {}), ("optax", {}),
           ("paper", {"grad_rescale": 0.3, "grad_clip_value": 0.003})]


def draw(shape, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=gen)


def group(params, grads, buffers, hp, adapt=(True, True, False)):
    plans = [TensorPlan(None, tuple(p.shape), hp.weight_decay, a) for p, a in zip(params, adapt, strict=True)]
    return TensorGroup(params=params, grads=grads, buffers=buffers, plans=plans)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("flavor", "more"), FLAVORS)
def test_a_low_precision_step_is_the_float32_fused_step_rounded(dtype, flavor, more):
    hp = lars.hyperparams(flavor, lr=0.5, momentum=0.9, weight_decay=1e-3, **more)
    params = [draw(s, i, 0.1).to(dtype) for i, s in enumerate(SHAPES)]
    buffers: list = [None] * len(SHAPES)
    for step in range(3):
        grads = [draw(s, 100 * step + i, 0.01).to(dtype) for i, s in enumerate(SHAPES)]
        params32 = [p.float() for p in params]
        buffers32 = [None if b is None else b.clone() for b in buffers]
        expected = group(params32, [g.float() for g in grads], buffers32, hp)
        ours = group(params, grads, buffers, hp)
        expected_ratio = functional.lars(hp, expected, hp.lr, fused=True)
        ratio = functional.lars(hp, ours, hp.lr)  # the default path
        assert torch.equal(ratio, expected_ratio), step
        for p, p32, b, b32 in zip(params, params32, ours.buffers, expected.buffers, strict=True):
            assert p.dtype == dtype and b.dtype == torch.float32
            assert torch.equal(p, p32.to(dtype)), step
            assert torch.equal(b, b32), step
        buffers = ours.buffers


def test_the_low_precision_step_agrees_with_the_multi_tensor_path():
    hp = lars.hyperparams("paper", lr=0.5, momentum=0.9, weight_decay=1e-3)
    fused = [draw(s, i, 0.1).bfloat16() for i, s in enumerate(SHAPES)]
    multi = [p.clone() for p in fused]
    fused_buffers: list = [None] * 3
    multi_buffers: list = [None] * 3
    for step in range(3):
        grads = [draw(s, 100 * step + i, 0.01).bfloat16() for i, s in enumerate(SHAPES)]
        a, b = group(fused, grads, fused_buffers, hp), group(multi, grads, multi_buffers, hp)
        functional.lars(hp, a, hp.lr)
        functional.lars(hp, b, hp.lr, foreach=True)
        fused_buffers, multi_buffers = a.buffers, b.buffers
    for p, q, u, v in zip(fused, multi, fused_buffers, multi_buffers, strict=True):
        ulp = 2.0 ** -7 * q.float().abs()  # one unit in the last place of bfloat16
        assert torch.all((p.float() - q.float()).abs() <= ulp)
        assert torch.allclose(u, v, rtol=1e-5, atol=1e-9)


def test_master_weights_with_bfloat16_gradients_take_the_fused_path():
    hp = lars.hyperparams("paper", lr=0.1, momentum=0.9)
    w = torch.nn.Parameter(draw((3000, 100), 0, 0.1).bfloat16())
    opt = LARS([w], lr=0.1, momentum=0.9, master_weights=True, fused=True)
    w.grad = draw((3000, 100), 1, 0.01).bfloat16()
    master = w.detach().float()
    opt.step()
    expected = group([master], [w.grad.float()], [None], hp, adapt=[True])
    functional.lars(hp, expected, hp.lr, fused=True)
    assert torch.equal(opt.state[w]["master_weight"], master)
    assert torch.equal(w.detach(), master.bfloat16())


def exact_norm(x):
    return float(np.linalg.norm(x.detach().double().numpy()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norms_of_large_tensors_are_accurate(dtype):
    # Positive values: every rounding error of a running sum has the same sign.
    x = (torch.rand(3_000_000, generator=torch.Generator().manual_seed(0)) + 0.5).to(dtype)
    small = draw((100,), 1, 1.0).to(dtype)
    ours = functional.norms([x, small], torch.float32)
    assert abs(ours[0].item() - exact_norm(x)) <= 3e-7 * exact_norm(x)
    assert ours[1].item() == torch.linalg.vector_norm(small, dtype=torch.float32).item()  # torch's own


def test_torchs_own_float32_norm_would_miss_that_bound():
    x = torch.rand(3_000_000, generator=torch.Generator().manual_seed(0)) + 0.5
    assert abs(torch.linalg.vector_norm(x).item() - exact_norm(x)) > 3e-7 * exact_norm(x)


def test_the_trust_ratio_of_a_large_tensor_is_the_exact_one():
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.rand(2_000_000, generator=gen) + 0.5)
    w.grad = (torch.rand(2_000_000, generator=gen) + 0.5) * 1e-3
    wd = 1e-4
    exact = 0.001 * exact_norm(w) / (exact_norm(w.grad) + wd * exact_norm(w))  # the paper's ratio
    opt = LARS([w], lr=0.1, flavor="paper", trust_coefficient=0.001, weight_decay=wd, eps=0.0)
    opt.step()
    assert abs(opt.trust_ratios()["0.0"] - exact) <= 1e-6 * exact
