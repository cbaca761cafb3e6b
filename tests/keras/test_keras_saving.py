"""Saving the Keras `LARS`: its config round-trips (hyperparameters, exclusion rules, Keras's own
arguments, schedules); a model saved to `.keras` loads back with the optimizer's state and then
trains bit-identically to a run that was never interrupted; a saved optimizer state that does not
fit the optimizer it is loaded into is skipped with Keras's warning."""

import copy
import warnings

import keras
import numpy as np
import pytest

import lars
from lars.backends.keras import LARS, CoreSchedule

X = np.random.default_rng(0).standard_normal((32, 6)).astype("float32")
Y = np.random.default_rng(1).standard_normal((32, 3)).astype("float32")


def round_trip(optimizer):
    """Through Keras's registry (the class is registered as "lars>LARS"), as `.keras` files do."""
    config = keras.optimizers.serialize(optimizer)
    assert config["registered_name"] == "lars>LARS"
    again = keras.optimizers.deserialize(copy.deepcopy(config))  # Keras's from_config edits it
    assert type(again) is LARS
    assert keras.optimizers.serialize(again) == config
    return again


def test_config_round_trip_keeps_every_hyperparameter():
    optimizer = LARS(learning_rate=0.2, flavor="tf_models", momentum=0.8, weight_decay=1e-3, nesterov=True,
                     trust_coefficient=0.02, exclude_from_weight_decay=["bias", r"norm/(gamma|beta)\Z"],
                     exclude_from_adaptation="ndim<=1", clipnorm=1.5)
    again = round_trip(optimizer)
    assert again.hyperparameters == optimizer.hyperparameters
    assert again.hyperparameters.exclude_from_weight_decay.excludes("dense/bias", (3,))
    assert not again.hyperparameters.exclude_from_weight_decay.excludes("dense/kernel", (3, 3))
    assert again.hyperparameters.exclude_from_adaptation == lars.Exclude.ndim_at_most(1)
    assert again.clipnorm == 1.5 and again.weight_decay is None
    assert LARS.from_config(optimizer.get_config()).hyperparameters == optimizer.hyperparameters


def test_config_round_trip_of_schedules():
    core = lars.schedules.WarmupCosine(base_lr=0.3, warmup_steps=5, total_steps=50, end_lr=0.01)
    again = round_trip(LARS(learning_rate=CoreSchedule(core)))
    assert isinstance(again._learning_rate, CoreSchedule)
    assert again._learning_rate.schedule == core
    keras_schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    again = round_trip(LARS(learning_rate=keras_schedule))
    assert float(again._learning_rate(20)) == pytest.approx(0.025)


def test_a_callable_rule_refuses_to_serialize():
    optimizer = LARS(learning_rate=0.1, exclude_from_adaptation=lambda name, shape: "bias" in name)
    with pytest.raises(ValueError, match="exclude_from_adaptation uses a callable, which cannot be seri"):
        optimizer.get_config()


def model(optimizer):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh", name="hidden"),
                            keras.layers.BatchNormalization(name="norm"), keras.layers.Dense(3, name="out")])
    net.compile(optimizer=optimizer, loss="mse")
    return net


def make_optimizer(momentum=0.9):
    return LARS(learning_rate=0.5, momentum=momentum, weight_decay=1e-3, trust_coefficient=0.02,
                exclude_from_weight_decay=["bias", "norm"], exclude_from_adaptation="ndim<=1")


def fit(net, epochs):
    net.fit(X, Y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)


def test_saved_model_continues_bit_identically(tmp_path):
    uninterrupted = model(make_optimizer())
    fit(uninterrupted, 2)
    fit(uninterrupted, 2)

    first = model(make_optimizer())
    fit(first, 2)
    first.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is LARS
    assert loaded.optimizer.hyperparameters == first.optimizer.hyperparameters
    assert int(loaded.optimizer.iterations) == int(first.optimizer.iterations) == 8
    for saved, restored in zip(first.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    fit(loaded, 2)

    for a, b in zip(uninterrupted.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # the momentum buffers mattered: a fresh optimizer on the saved weights ends elsewhere
    fresh = model(make_optimizer())
    fresh.set_weights(first.get_weights())
    fit(fresh, 2)
    pairs = zip(fresh.get_weights(), loaded.get_weights(), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)


def test_optimizer_state_that_does_not_fit_is_skipped_with_a_warning(tmp_path):
    """Saved with momentum (a buffer per variable), loaded into a LARS without momentum: Keras
    warns and loads none of the optimizer's variables; the model's weights still load."""
    saved = model(make_optimizer(momentum=0.9))
    fit(saved, 1)
    saved.save(tmp_path / "momentum.keras")

    target = model(make_optimizer(momentum=0.0))
    target.optimizer.build(target.trainable_variables)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target.load_weights(tmp_path / "momentum.keras")
    messages = [str(w.message) for w in caught]
    assert any("Skipping variable loading for optimizer 'lars'" in m for m in messages), messages
    assert int(target.optimizer.iterations) == 0
    assert target.optimizer.momentums == []
    for a, b in zip(saved.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
