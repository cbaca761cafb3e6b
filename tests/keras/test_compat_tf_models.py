"""`lars.compat.tf_models.LARS`, the drop-in for TF Model Garden's `LARS` (tf-models-official
2.20.0), against the installed one called with the very same arguments: 120 steps side by side
from the same weights with the same gradients, compared at every step, in float32 only (Model
Garden's tf_keras keeps its hyperparameters in float32 variables), to 1e-5.

Model Garden searches its regexes in `variable.name` ("dense/kernel:0"), ours in the Keras
variable path ("dense/kernel"): the variables are named so that the two differ by ":0" only,
which no regex below anchors on.
"""

import functools
import inspect

import pytest
import tensorflow as tf
import tf_keras
from keras_reference import SHAPES, apply, gradient_stream, initial, keras_variables, relative_error, values
from official.modeling.optimization.lars import LARS as ModelGardenLARS

from lars import HyperparameterError
from lars.backends.keras import LARS as OurKerasLARS
from lars.compat.tf_models import LARS, POPULAR
from lars.conformance.peers import POPULAR as PEERS_POPULAR

STEPS = 120
TOLERANCE = 1e-5
NORM_AND_BIAS = ["batch_normalization", "bias"]


def tf_keras_schedule():
    return tf_keras.optimizers.schedules.PiecewiseConstantDecay([30, 70], [0.6, 0.3, 0.1])


#: The same keyword arguments go to Model Garden's LARS and to the drop-in (a schedule is made
#: afresh for each: a schedule object holds no state, but each optimizer gets its own).
CASES = {
    "learning-rate-only": dict(learning_rate=0.5),
    "classic-nesterov-two-lists": dict(learning_rate=0.5, weight_decay_rate=1e-2, eeta=2e-3, nesterov=True,
                                       exclude_from_weight_decay=["batch_norm.*gamma", "bias"],
                                       exclude_from_layer_adaptation=["bias"]),
    "classic-adaptation-follows-wd": dict(learning_rate=0.5, momentum=0.8, weight_decay_rate=1e-2,
                                          exclude_from_weight_decay=NORM_AND_BIAS),
    "popular-nesterov": dict(learning_rate=0.5, weight_decay_rate=1e-2, classic_momentum=False,
                             nesterov=True, exclude_from_weight_decay=NORM_AND_BIAS,
                             exclude_from_layer_adaptation=["dense/b"]),
    "popular-empty-adaptation-list": dict(learning_rate=0.5, weight_decay_rate=1e-3, classic_momentum=False,
                                          exclude_from_weight_decay=["bias"],
                                          exclude_from_layer_adaptation=[]),
    "clipvalue": dict(learning_rate=0.5, weight_decay_rate=1e-2, clipvalue=0.5),
    "clipnorm-popular": dict(learning_rate=0.5, classic_momentum=False, clipnorm=1.5),
    "global-clipnorm": dict(learning_rate=0.5, weight_decay_rate=1e-2, global_clipnorm=3.0, nesterov=True),
    "inverse-time-decay": dict(learning_rate=0.8, decay=0.02, weight_decay_rate=1e-2),
    "tf-keras-schedule": dict(learning_rate=tf_keras_schedule, eeta=5e-3, exclude_from_weight_decay=["bias"]),
    "no-momentum-nesterov": dict(learning_rate=2.0, momentum=0.0, nesterov=True, weight_decay_rate=1e-2),
}


def arguments(case):
    return {k: v() if callable(v) else v for k, v in CASES[case].items()}


def model_garden_trajectory(kwargs):
    variables = [tf.Variable(value, name=name) for name, value in initial().items()]
    assert [v.name for v in variables] == [f"{n}:0" for n in SHAPES]  # the names it searches
    optimizer = ModelGardenLARS(**kwargs)

    @tf.function
    def step(grads):
        optimizer.apply_gradients(zip(grads, variables, strict=True))

    trajectory = []
    for g in gradient_stream(STEPS):
        step([tf.constant(g[n]) for n in SHAPES])
        trajectory.append({n: v.numpy() for n, v in zip(SHAPES, variables, strict=True)})
    return trajectory


def our_trajectory(optimizer):
    variables = keras_variables(initial())
    trajectory = []
    for g in gradient_stream(STEPS):
        apply(optimizer, variables, g)
        trajectory.append(values(variables))
    return trajectory


def worst(ours, peer):
    return max(relative_error(ours[t][n], peer[t][n]) for t in range(STEPS) for n in SHAPES)


@functools.cache
def peer(case):
    return model_garden_trajectory(arguments(case))


def test_the_signature_is_model_gardens():
    ours = inspect.signature(LARS).parameters.values()
    theirs = list(inspect.signature(ModelGardenLARS.__init__).parameters.values())[1:]  # no self
    assert [(p.name, p.kind, p.default) for p in ours] == [(p.name, p.kind, p.default) for p in theirs]


def test_popular_momentum_is_the_documented_translation():
    assert dict(POPULAR) == PEERS_POPULAR


@pytest.mark.parametrize("case", list(CASES))
def test_the_drop_in_matches_model_garden_at_every_step(case):
    optimizer = LARS(**arguments(case))
    assert isinstance(optimizer, OurKerasLARS) and optimizer.hyperparameters.flavor == "tf_models"
    expected = peer(case)
    assert worst(our_trajectory(optimizer), expected) <= TOLERANCE
    start = initial()  # the run went somewhere: the weights moved well beyond the tolerance
    assert max(relative_error(expected[-1][n], start[n]) for n in SHAPES) > 0.1


def test_wrong_mappings_are_caught():
    """The comparison can fail: the popular case on classic axes, a case without its regexes and a
    case without its clipping each end measurably off Model Garden."""
    popular = arguments("popular-nesterov")
    as_classic = OurKerasLARS(0.5, "tf_models", weight_decay=1e-2, nesterov=True,
                              exclude_from_weight_decay=NORM_AND_BIAS, exclude_from_adaptation=["dense/b"])
    assert worst(our_trajectory(as_classic), peer("popular-nesterov")) > 100 * TOLERANCE
    no_lists = {k: v for k, v in popular.items() if not k.startswith("exclude")}
    assert worst(our_trajectory(LARS(**no_lists)), peer("popular-nesterov")) > 100 * TOLERANCE
    unclipped = {k: v for k, v in arguments("global-clipnorm").items() if k != "global_clipnorm"}
    assert worst(our_trajectory(LARS(**unclipped)), peer("global-clipnorm")) > 100 * TOLERANCE
    undecayed = {k: v for k, v in arguments("inverse-time-decay").items() if k != "decay"}
    assert worst(our_trajectory(LARS(**undecayed)), peer("inverse-time-decay")) > 100 * TOLERANCE


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(lr=0.5), "lr"),  # Model Garden accepts it and keeps learning_rate: ours says so
    (dict(gradient_transformers=[lambda pairs: pairs]), "gradient_transformers"),
    (dict(gradient_aggregator=lambda pairs: pairs), "gradient_aggregator"),
    (dict(learning_rate=tf_keras_schedule(), decay=0.1), "decay"),
    (dict(exclude_from_weight_decay="bias"), "exclude_from_weight_decay"),
    (dict(exclude_from_layer_adaptation="bias"), "exclude_from_layer_adaptation"),
    (dict(weight_decay_rate=-1e-3), "weight_decay_rate"),
    (dict(eeta=0.0), "eeta"),
    (dict(momentum=1.0), "momentum"),
    (dict(classic_momentum="no"), "classic_momentum"),
])
def test_what_ours_cannot_take_raises_naming_the_argument(kwargs, field):
    with pytest.raises(HyperparameterError) as error:
        LARS(**kwargs)
    assert error.value.field == field


def test_model_garden_ignores_lr_which_is_why_ours_refuses_it():
    assert float(ModelGardenLARS(lr=0.5)._get_hyper("learning_rate")) == pytest.approx(0.01)


def test_an_unknown_keyword_is_a_type_error_in_both():
    with pytest.raises(TypeError):
        ModelGardenLARS(epsilon=1e-3)
    with pytest.raises(TypeError):
        LARS(epsilon=1e-3)


def test_our_tools_work_on_the_drop_in():
    optimizer = LARS(learning_rate=0.5, exclude_from_weight_decay=["bias"])
    our_trajectory(optimizer)
    ratios = optimizer.trust_ratios()
    assert ratios["dense/bias"] == 1.0 and ratios["dense/kernel"] != 1.0
    assert optimizer.export_state().step == STEPS
