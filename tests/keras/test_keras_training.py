"""The Keras `LARS` trains a small model with `model.fit`: scikit-learn's 8x8 digits, a Dense
network with a LayerNormalization, biases and norm parameters excluded from weight decay and
from the trust ratio. Eagerly, under `jit_compile=True` (XLA) on TensorFlow, and with a Keras
schedule and a core schedule (`CoreSchedule`), whose learning rates are checked against the
schedule's formula at chosen iterations."""

import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lars
from lars.backends.keras import LARS, CoreSchedule

EPOCHS, BATCH = 8, 64
SETTINGS = dict(momentum=0.9, weight_decay=1e-4, trust_coefficient=0.02,
                exclude_from_weight_decay="ndim<=1", exclude_from_adaptation="ndim<=1")


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y, test_size=0.25, random_state=0)


def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu", name="hidden"),
                             keras.layers.LayerNormalization(name="norm"),
                             keras.layers.Dense(10, name="out")], name="net")


class LearningRates(keras.callbacks.Callback):
    """The optimizer's learning rate at the start of every batch (at `iterations` = batch index)."""

    def on_train_begin(self, logs=None):
        self.lrs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def train(digits, optimizer, jit_compile=False, epochs=EPOCHS):
    x_train, x_test, y_train, y_test = digits
    net = model()
    net.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=jit_compile)
    initial = [np.array(w) for w in net.get_weights()]
    recorder = LearningRates()
    net.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False, callbacks=[recorder])
    _, accuracy = net.evaluate(x_test, y_test, verbose=0)
    return net, accuracy, initial, recorder.lrs


def steps_per_epoch(digits):
    return math.ceil(len(digits[0]) / BATCH)


def test_fit_reaches_ninety_percent(digits):
    net, accuracy, _, _ = train(digits, LARS(learning_rate=0.2, **SETTINGS))
    assert accuracy >= 0.9
    ratios = net.optimizer.trust_ratios()  # by variable path: "net/hidden/kernel", ...
    assert set(ratios) == {v.path for v in net.trainable_variables}
    ratios = {path.removeprefix("net/"): r for path, r in ratios.items()}
    # excluded from adaptation: ratio exactly 1; adapted kernels: a real ratio
    assert ratios["hidden/bias"] == ratios["norm/gamma"] == ratios["out/bias"] == 1.0
    assert 0 < ratios["hidden/kernel"] != 1.0
    assert int(net.optimizer.iterations) == EPOCHS * steps_per_epoch(digits)


def test_learning_rate_zero_does_not_learn(digits):
    net, accuracy, initial, _ = train(digits, LARS(learning_rate=0.0, **SETTINGS), epochs=1)
    assert accuracy < 0.5
    for before, after in zip(initial, net.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_fit_with_jit_compile(digits):
    if keras.backend.backend() != "tensorflow":
        pytest.fail("run these tests with KERAS_BACKEND=tensorflow")
    _, accuracy, _, _ = train(digits, LARS(learning_rate=0.2, **SETTINGS), jit_compile=True)
    assert accuracy >= 0.9


def test_fit_with_a_keras_schedule(digits):
    decay_steps = EPOCHS * steps_per_epoch(digits)
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=decay_steps, warmup_target=0.3,
                                                      warmup_steps=20)
    net, accuracy, _, lrs = train(digits, LARS(learning_rate=schedule, **SETTINGS))
    assert accuracy >= 0.9
    # Keras's formula: linear warm-up from 0.05 to 0.3 over 20 steps, then a cosine to 0
    for t in (0, 10, 20, 60, 120):
        expected = (0.05 + (0.3 - 0.05) * t / 20 if t < 20
                    else 0.3 * 0.5 * (1 + math.cos(math.pi * (t - 20) / decay_steps)))
        assert lrs[t] == pytest.approx(expected, rel=1e-5)
    # the last step ran with the schedule's value at its iteration
    last = len(lrs) - 1
    assert float(net.optimizer.last_lr) == pytest.approx(lrs[last], rel=1e-6)


def test_fit_with_a_core_schedule(digits):
    total = EPOCHS * steps_per_epoch(digits)
    core = lars.schedules.WarmupCosine(base_lr=0.3, warmup_steps=15, total_steps=total, end_lr=0.01)
    _, accuracy, _, lrs = train(digits, LARS(learning_rate=CoreSchedule(core), **SETTINGS))
    assert accuracy >= 0.9
    for t in (0, 7, 15, 16, 100, total - 1):
        expected = (0.3 * t / 15 if t < 15
                    else 0.01 + (0.3 - 0.01) * (1 + math.cos(math.pi * (t - 15) / (total - 15))) / 2)
        assert lrs[t] == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert expected == pytest.approx(core(t), rel=1e-12, abs=1e-15)
