"""`TraceCallback` (issue 19): a `model.fit` with `LARS` recorded, checked against formulas computed
here from the weights before and after each step and the gradients of a linear model's squared
error (NumPy, float64), the learning rate of the schedule, the trust ratios `LARS` reports and the
loss of `fit`'s logs; one step in `every`; the file read back; training the same with or without
it. On Keras's JAX backend: tests/keras_jax/test_keras_jax_trace.py."""

import warnings

import keras
import numpy as np
import pytest

from lars.backends.keras import LARS, TraceCallback
from lars.core.trace import QUANTITIES, TraceError, load_trace

BATCH, SAMPLES, EPOCHS = 8, 32, 2
STEPS = EPOCHS * SAMPLES // BATCH
WEIGHT_DECAY = 1e-2
RTOL = 2e-5  # float32 training, float64 formulas


def data():
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal((SAMPLES, n)).astype("float32") for n in (4, 2))


def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"),
                             keras.layers.Dense(2, name="out")], name="net")


def optimizer():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9)
    return LARS(schedule, momentum=0.9, weight_decay=WEIGHT_DECAY, trust_coefficient=0.02,
                exclude_from_weight_decay="ndim<=1", exclude_from_adaptation="ndim<=1")


class Watch(keras.callbacks.Callback):
    """The weights before and after each step, the trust ratios `LARS` reports and the loss of the logs."""

    def on_train_begin(self, logs=None):
        self.before, self.after, self.ratios, self.losses = [], [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.before.append([np.array(w, np.float64) for w in self.model.get_weights()])

    def on_train_batch_end(self, batch, logs=None):
        self.after.append([np.array(w, np.float64) for w in self.model.get_weights()])
        self.ratios.append(self.model.optimizer.trust_ratios())
        self.losses.append(logs["loss"])


def fit(callbacks=(), epochs=EPOCHS, net=None):
    net = net or model()
    if getattr(net, "optimizer", None) is None:
        net.compile(optimizer=optimizer(), loss="mse")
    x, y = data()
    net.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    return net


def gradients(weights, x, y):
    """The gradients of `mean((x·W1 + b1)·W2 + b2 - y)²` (Keras's "mse"), in `get_weights()`'s order."""
    w1, b1, w2, b2 = weights
    h = x @ w1 + b1
    d = 2.0 * (h @ w2 + b2 - y) / y.size
    dh = d @ w2.T
    return [x.T @ dh, dh.sum(0), h.T @ d, d.sum(0)]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "run.npz"
    watch = Watch()
    net = fit([watch, TraceCallback(path, flush=3)])  # the watch reads the weights before the recorder runs
    return net, watch, load_trace(path)


def test_the_trace_holds_the_formulas_of_each_step(traced):
    net, watch, trace = traced
    names = tuple(v.path for v in net.trainable_variables)
    assert trace.names == names and trace.shapes == ((4, 3), (3,), (3, 2), (2,))
    assert trace.framework == "keras"
    assert trace.hyperparams == net.optimizer.hyperparameters.to_dict() and trace.dtype == "float32"
    np.testing.assert_array_equal(trace.step, range(STEPS))
    np.testing.assert_allclose(trace.lr, 0.1 * 0.9 ** np.arange(STEPS), rtol=1e-6)
    x, y = (a.astype(np.float64) for a in data())
    for t in range(STEPS):
        before, after, k = watch.before[t], watch.after[t], t % (SAMPLES // BATCH) * BATCH
        grads = gradients(before, x[k:k + BATCH], y[k:k + BATCH])
        row = {q: trace.columns[q][t] for q in QUANTITIES}
        np.testing.assert_allclose(row["weight_norm"], [np.linalg.norm(w) for w in before], rtol=RTOL)
        np.testing.assert_allclose(row["grad_norm"], [np.linalg.norm(g) for g in grads], rtol=RTOL)
        np.testing.assert_allclose(row["update_norm"], [np.linalg.norm(a - b) for a, b in
                                                        zip(after, before, strict=True)], rtol=1e-4)
        np.testing.assert_array_equal(row["trust_ratio"], [watch.ratios[t][n] for n in names])
        np.testing.assert_array_equal(row["adapted"], [1, 0, 1, 0])  # the biases are excluded
        np.testing.assert_allclose(row["weight_decay"], [WEIGHT_DECAY, 0, WEIGHT_DECAY, 0], rtol=1e-6)
    assert trace.columns["trust_ratio"][0, 0] != 1.0
    np.testing.assert_allclose(trace.loss, watch.losses, rtol=1e-7)


def test_every_k_records_one_step_in_k_the_same_values(traced, tmp_path):
    _, _, full = traced
    fit([TraceCallback(tmp_path / "every.npz", every=3)])
    trace = load_trace(tmp_path / "every.npz")
    np.testing.assert_array_equal(trace.step, [0, 3, 6])
    for q in QUANTITIES:
        np.testing.assert_array_equal(trace.columns[q], full.columns[q][[0, 3, 6]])
    np.testing.assert_array_equal(trace.lr, full.lr[[0, 3, 6]])


def test_recording_leaves_training_bit_identical(traced, tmp_path):
    """The same weights and optimizer state with or without the callback; and a fit after a
    recorded one records nothing and trains as a second plain fit does."""
    net, _, _ = traced
    plain = fit()
    for a, b in zip(net.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(net.optimizer.variables, plain.optimizer.variables, strict=False):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    again, twice = fit([TraceCallback(tmp_path / "first.npz")], epochs=1), fit(epochs=1)
    assert again.optimizer.records and not plain.optimizer.records
    steps = load_trace(tmp_path / "first.npz").step
    fit(net=again, epochs=1)
    fit(net=twice, epochs=1)
    np.testing.assert_array_equal(load_trace(tmp_path / "first.npz").step, steps)
    for a, b in zip(again.get_weights(), twice.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_recorded_fit_after_a_plain_one_goes_on_counting_and_so_does_the_next(traced, tmp_path):
    _, _, full = traced
    net, callback = fit(epochs=1), TraceCallback(tmp_path / "second.npz")
    fit([callback], net=net, epochs=1)
    np.testing.assert_array_equal(load_trace(tmp_path / "second.npz").step, range(4, 8))
    fit([callback], net=net, epochs=1)  # the same callback: the trace goes on
    trace = load_trace(tmp_path / "second.npz")
    np.testing.assert_array_equal(trace.step, range(4, 12))
    np.testing.assert_array_equal(trace.columns["grad_norm"][:4], full.columns["grad_norm"][4:])


def test_a_saved_model_is_the_same_with_or_without_recording(traced, tmp_path):
    net, _, _ = traced
    net.save(tmp_path / "net.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Skipping variable loading")
        loaded = keras.models.load_model(tmp_path / "net.keras")
        net.load_weights(tmp_path / "net.keras")  # into the optimizer that has recorded
    assert not loaded.optimizer.records and int(loaded.optimizer.iterations.numpy()) == STEPS
    for a, b in zip(loaded.optimizer.momentums, net.optimizer.momentums, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bad_arguments_are_refused_before_training(tmp_path):
    with pytest.raises(TraceError, match="every=0 is invalid"):
        TraceCallback(tmp_path / "t.npz", every=0)
    net = model()
    net.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TypeError, match="TraceCallback records lars's LARS, not SGD"):
        net.fit(*data(), verbose=0, callbacks=[TraceCallback(tmp_path / "t.npz")])
