"""The golden values of the specification (group 2, section 10): outputs of the real libraries.

torch 2.13.0+cpu, float64, W0 = [[1, 2], [3, 4]], b0 = [0.5, -0.25], three steps; lr 0.1,
momentum 0.9, weight decay 0.01 unless the row says otherwise. Step 3's W gradient is zero,
which separates flavors that drop weight decay on the zero-norm branch from those that keep it.
"""

import numpy as np
import pytest

from lars.core import State, hyperparams, reference

W0 = [[1.0, 2.0], [3.0, 4.0]]
B0 = [0.5, -0.25]
W_GRADS = [[[0.1, -0.2], [0.3, 0.05]], [[-0.05, 0.1], [0.2, -0.1]], [[0.0, 0.0], [0.0, 0.0]]]
B_GRADS = [[0.01, -0.02], [0.03, 0.0], [-0.01, 0.02]]
COMMON = dict(lr=0.1, momentum=0.9, weight_decay=0.01)

TORCHLARS_W = [0.9987590530595459, 1.9982081314739875, 2.9950827265952897, 3.995895934263006]
DROP_WD_W = [0.9997588601211377, 2.0002083491685614, 2.998081518800295, 3.9998958254157193]
SHARED_B = [0.4998242566190964, -0.24990558581847797]

GOLDEN = {
    "larc(eta=0.02, clip)": (
        ("larc", dict(trust_coefficient=0.02, larc_clip=True)),
        [0.9778108999999999, 2.0259458, 2.8669327, 3.9870271], [0.4897941985, -0.24518629775]),
    "larc(eta=0.001, no clip)": (
        ("larc", dict(trust_coefficient=0.001, larc_clip=False)), DROP_WD_W, SHARED_B),
    "torchlars": (("torchlars", {}), TORCHLARS_W, SHARED_B),
    "lightning_bolts": (("lightning_bolts", {}), DROP_WD_W, SHARED_B),
    "pytorch_optimizer(d=0.1)": (
        ("pytorch_optimizer", dict(dampening=0.1)),
        [0.9996929897733194, 2.0000074959148426, 2.9980034607267183, 3.9995462520425784],
        [0.49333099999999996, -0.246922]),
    "moco": (
        ("moco", {}),
        [0.9996483279959348, 2.00000103067446, 2.997592374772905, 3.99949948466277], [0.49259, -0.24658]),
    "holocron": (
        ("holocron", {}),
        [0.1662439609742697, 2.424699657296515, -3.197217059194724, 3.2876501713517428],
        [0.33874149573241824, -0.16952452446385308]),
    "timm": (("timm", {}), TORCHLARS_W, SHARED_B),
    # BYOL's own optax chain (jax 0.10.2, x64; `jax.tree_map`, gone from JAX, as `jax.tree_util.tree_map`):
    # its default filters adapt and decay the bias too, so W follows moco and b does not
    "byol": (
        ("byol", {}),
        [0.9996483279959348, 2.00000103067446, 2.997592374772905, 3.99949948466277],
        [0.49982538819284694, -0.24992012058616678]),
}

STEP1_W = {
    "larc(eta=0.001, no clip)": [0.9998606187814255, 2.0002280783576674, 2.9995818563442764,
                                 3.9998859608211665],
    "moco": [0.99985007741936, 2.000245327859229, 2.99955023225808, 3.9998773360703854],
}
for _key in ("torchlars", "lightning_bolts", "timm"):
    STEP1_W[_key] = STEP1_W["larc(eta=0.001, no clip)"]


def trajectory(flavor, overrides):
    """The reference's (W, b) after each of the three golden steps."""
    hp = hyperparams(flavor, **COMMON, **overrides)
    params = {"W": np.array(W0), "b": np.array(B0)}
    state, out = State(), []
    for g_w, g_b in zip(W_GRADS, B_GRADS, strict=True):
        res = reference.step(params, {"W": np.array(g_w), "b": np.array(g_b)}, state, hp)
        params, state = res.params, res.state
        out.append((params["W"].ravel(), params["b"]))
    return out


@pytest.mark.parametrize("case", list(GOLDEN))
def test_three_steps_match_the_real_library(case):
    (flavor, overrides), w3, b3 = GOLDEN[case]
    w_final, b_final = trajectory(flavor, overrides)[-1]
    np.testing.assert_allclose(w_final, w3, rtol=1e-12, atol=0)
    np.testing.assert_allclose(b_final, b3, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", list(STEP1_W))
def test_first_step_matches_the_real_library(case):
    (flavor, overrides), _, _ = GOLDEN[case]
    w1, b1 = trajectory(flavor, overrides)[0]
    np.testing.assert_allclose(w1, STEP1_W[case], rtol=1e-12, atol=0)
    if case == "moco":
        np.testing.assert_allclose(b1, [0.499, -0.248], rtol=1e-12, atol=0)


def test_first_two_steps_agree_and_step_three_separates_weight_decay_on_fallback():
    runs = {name: trajectory(*GOLDEN[name][0])
            for name in ("larc(eta=0.001, no clip)", "torchlars", "lightning_bolts", "timm")}
    first = runs["torchlars"]
    for run in runs.values():
        for step in (0, 1):
            np.testing.assert_allclose(run[step][0], first[step][0], rtol=1e-12, atol=0)
    # the step-3 W gradient is zero: larc/bolts leave W alone, torchlars/timm still decay it
    assert not np.allclose(runs["torchlars"][2][0], runs["lightning_bolts"][2][0], rtol=1e-9, atol=0)
