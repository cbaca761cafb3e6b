"""The `tf_models` flavor of the Keras `LARS` against TF Model Garden's own `LARS`
(`official.modeling.optimization.lars`, a `tf_keras` legacy optimizer), run side by side for
120 steps in float32 on the same variables and the same gradients, compared at every step.

The peer matches its exclusion regexes with `re.search` on `param.name` ("dense/kernel:0"); our
adapter matches them on the Keras variable path ("dense/kernel"). The variables are named so
that the two differ only by the ":0" suffix, which none of the regexes below anchor on.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
from keras_reference import SHAPES, apply, gradient_stream, initial, keras_variables, relative_error, values
from official.modeling.optimization.lars import LARS as ModelGardenLARS

from lars.backends.keras import LARS

STEPS = 100
TOLERANCE = 1e-5
LR = 0.5
#: Keras's "popular" momentum of Model Garden (classic_momentum=False) on our axes.
POPULAR = {"momentum_style": "ratio_outside", "trust_denominator": "update", "buffer_start": "zero"}

CASES = {
    # weight decay off for norms and biases, the trust ratio off for biases only
    "classic-nesterov-two-lists": dict(
        classic_momentum=True, nesterov=True, exclude_from_weight_decay=["batch_norm.*gamma", "bias"],
        exclude_from_layer_adaptation=["bias"]),
    # no adaptation list: Model Garden (and the flavor) take the weight-decay list
    "classic-adaptation-follows-wd": dict(
        classic_momentum=True, nesterov=False, exclude_from_weight_decay=["batch_normalization", "bias"],
        exclude_from_layer_adaptation=None),
    "popular-nesterov": dict(
        classic_momentum=False, nesterov=True, exclude_from_weight_decay=["batch_normalization", "bias"],
        exclude_from_layer_adaptation=["dense/b"]),
    "popular-heavy-ball": dict(
        classic_momentum=False, nesterov=False, exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=None),
}


def peer_trajectory(case):
    variables = [tf.Variable(value, name=name) for name, value in initial().items()]
    assert [v.name for v in variables] == [f"{n}:0" for n in SHAPES]  # the names the peer matches
    peer = ModelGardenLARS(learning_rate=LR, momentum=0.9, weight_decay_rate=1e-2, eeta=2e-3, **case)

    @tf.function
    def step(grads):
        peer.apply_gradients(zip(grads, variables, strict=True))

    trajectory = []
    for g in gradient_stream(STEPS):
        step([tf.constant(g[n]) for n in SHAPES])
        trajectory.append({n: v.numpy() for n, v in zip(SHAPES, variables, strict=True)})
    return trajectory


def translate(case):
    """Model Garden's arguments as ours: the documented translation."""
    axes = {} if case["classic_momentum"] else POPULAR
    return dict(momentum=0.9, weight_decay=1e-2, trust_coefficient=2e-3, nesterov=case["nesterov"],
                exclude_from_weight_decay=case["exclude_from_weight_decay"],
                exclude_from_adaptation=case["exclude_from_layer_adaptation"], **axes)


def our_trajectory(flavor, kwargs):
    variables = keras_variables(initial())
    optimizer = LARS(learning_rate=LR, flavor=flavor, **kwargs)
    trajectory = []
    for g in gradient_stream(STEPS):
        apply(optimizer, variables, g)
        trajectory.append(values(variables))
    return trajectory


def worst(ours, peer):
    return max(relative_error(ours[t][n], peer[t][n]) for t in range(STEPS) for n in SHAPES)


@functools.cache
def peer_for(name):
    return peer_trajectory(CASES[name])


@pytest.mark.parametrize("name", list(CASES))
def test_tf_models_flavor_matches_model_garden_at_every_step(name):
    peer = peer_for(name)
    assert worst(our_trajectory("tf_models", translate(CASES[name])), peer) <= TOLERANCE
    # the run went somewhere: the weights moved well beyond the tolerance
    start = initial()
    assert max(relative_error(peer[-1][n], start[n]) for n in SHAPES) > 0.1


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n]["classic_momentum"]])
def test_paper_flavor_does_not_match_model_garden(name):
    """With the same numbers, the paper's rule (split denominator `||g|| + wd*||w||`, adaptation
    list independent of the weight-decay list) is measurably off the peer: the comparison above
    can fail. (With the popular axes spelled out, paper and tf_models coincide: no eps, and the
    zero-norm guard is the update's norm in both, so the classic cases are the ones to check.)"""
    assert worst(our_trajectory("paper", translate(CASES[name])), peer_for(name)) > 20 * TOLERANCE


def test_exclusion_regexes_see_the_same_names():
    """A regex that only matches the dense bias excludes it here and in the peer: the two runs
    agree, and differ from a run with no exclusion (so the regex did something)."""
    arguments = dict(classic_momentum=True, nesterov=False, exclude_from_weight_decay=[r"dense/b.as"],
                     exclude_from_layer_adaptation=None)
    peer = peer_trajectory(arguments)
    assert worst(our_trajectory("tf_models", translate(arguments)), peer) <= TOLERANCE
    no_rule = translate(arguments) | {"exclude_from_weight_decay": None}
    assert worst(our_trajectory("tf_models", no_rule), peer) > 1e-3
    assert np.any(peer[-1]["dense/bias"] != 0)
