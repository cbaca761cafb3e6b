"""The reference's norms of large low-precision tensors are the exact norm, rounded.

NumPy sums a float32 array's squares in float32: at 3M normal values its norm is off by 2e-6
(NumPy 2) to 7e-6 (NumPy 1.23) relative, 1e-4 at 25M, more than the frameworks the reference
is compared with (positive values, the worst case of a running sum, happen to fare better in
NumPy's blocked sums: 2e-8 to 1e-6, depending on the draw).
The reference sums in float64 and rounds once, so it is within one float32 unit (2**-23
relative) of the exact norm; float64 tensors keep NumPy's norm bit for bit.
"""

import numpy as np
import pytest

from lars.core import hyperparams, reference
from lars.core.state import State

FLOAT32_UNIT = 2.0**-23  # relative: one unit in the last place of float32, at most


def positive(n, dtype, seed=0):
    """Values in [0.5, 1.5): every rounding error of a running sum of squares has the same sign."""
    return (np.random.default_rng(seed).random(n) + 0.5).astype(dtype)


def normal(n, dtype, seed=0):
    return np.random.default_rng(seed).normal(size=n).astype(dtype)


def exact_norm(x):
    return float(np.linalg.norm(x.astype(np.float64)))


@pytest.mark.parametrize("values", [positive, normal])
def test_float32_norm_of_a_large_tensor_is_the_exact_norm_rounded(values):
    x = values(3_000_000, np.float32)
    norm = reference.l2_norm(x)
    assert norm.dtype == np.float32
    assert abs(float(norm) - exact_norm(x)) <= FLOAT32_UNIT * exact_norm(x)


def test_numpys_own_float32_norm_would_miss_that_bound():
    x = normal(3_000_000, np.float32)
    assert abs(float(np.linalg.norm(x)) - exact_norm(x)) > FLOAT32_UNIT * exact_norm(x)


def test_float16_norm_does_not_overflow():
    # the sum of squares (about 1.1e5) is past float16's largest value, 65504; the norm is not
    x = positive(100_000, np.float16)
    norm = reference.l2_norm(x)
    assert norm.dtype == np.float16
    assert abs(float(norm) - exact_norm(x)) <= 2**-11 * exact_norm(x)  # half a float16 ulp


@pytest.mark.parametrize("shape", [(3_000_000,), (300, 7), (5,), ()])
def test_float64_norm_is_numpys_bit_for_bit(shape):
    x = np.random.default_rng(1).normal(size=shape)
    assert reference.l2_norm(x).tobytes() == np.float64(np.linalg.norm(x.reshape(-1))).tobytes()


def test_the_float32_trust_ratio_of_a_large_tensor_is_the_exact_one():
    # the errors of two norms of like values would partly cancel in the ratio: unlike ones do not
    w, g = normal(3_000_000, np.float32, 1), positive(3_000_000, np.float32, 2) * np.float32(1e-3)
    wd = 1e-4
    exact = 1e-3 * exact_norm(w) / (exact_norm(g) + wd * exact_norm(w))  # the paper's ratio
    hp = hyperparams("paper", lr=0.1, weight_decay=wd, trust_coefficient=1e-3, eps=0.0)
    ratio = reference.step({"w": w}, {"w": g}, State(), hp).trust_ratios["w"]
    assert abs(ratio - exact) <= 1e-6 * exact
