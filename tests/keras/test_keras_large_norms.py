"""The trust ratio of a large float32 variable is the exact one (TensorFlow's reductions are
tree-shaped, so Keras needs no help here; the check is the same as for the other backends)."""

import numpy as np
from keras_reference import apply, keras_variables

from lars.backends.keras import LARS

SHAPE = (2000, 1000)  # 2M elements


def exact_norm(x):
    return float(np.linalg.norm(x.astype(np.float64)))


def test_the_trust_ratio_of_a_large_tensor_is_the_exact_one():
    rng = np.random.default_rng(0)
    # unlike weights and gradients: the errors of their norms would partly cancel if drawn alike
    w = rng.standard_normal(SHAPE).astype(np.float32)
    g = ((rng.random(SHAPE) + 0.5) * 1e-3).astype(np.float32)
    wd = 1e-4
    exact = 1e-3 * exact_norm(w) / (exact_norm(g) + wd * exact_norm(w))  # the paper's ratio
    optimizer = LARS(0.1, "paper", momentum=0.9, weight_decay=wd, trust_coefficient=1e-3, eps=0.0)
    variables = keras_variables({"dense/kernel": w})
    apply(optimizer, variables, {"dense/kernel": g})
    assert abs(optimizer.trust_ratios()["dense/kernel"] - exact) <= 1e-6 * exact
