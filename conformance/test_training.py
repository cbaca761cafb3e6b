"""The parity report's digits MLP, trained by one backend (`--training BACKEND`: torch autograd,
`jax.value_and_grad`, Keras `train_on_batch`, MXNet autograd with a `gluon.Trainer`) with its
LARS adapter, lies on the NumPy reference's curve: every step's loss and trust ratios and the
final weights, by name, in float64 and float32, within the problem's tolerance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lars.parity import digits


@pytest.fixture(scope="module", params=["float64", "float32"])
def traces(request: pytest.FixtureRequest, training_backend: str) -> Any:
    dtype = request.param
    return digits.train("reference", dtype=dtype), digits.train(training_backend, dtype=dtype)


def test_the_backend_lies_on_the_reference_curve(traces: Any) -> None:
    reference, trace = traces
    result = digits.compare(trace, reference)
    tolerance = digits.TOLERANCES[trace.dtype]
    assert result["loss_deviation"] <= tolerance, result
    assert result["param_deviation"] <= tolerance, result
    assert result["ratio_deviation"] <= tolerance, result
    assert trace.test_accuracy >= 0.9


def test_the_backend_keeps_the_names_and_the_dtype(traces: Any, training_backend: str) -> None:
    reference, trace = traces
    assert all(set(r) == set(digits.Problem().shapes) for r in trace.trust_ratios)
    assert {n: (p.shape, p.dtype) for n, p in trace.final_params.items()} == {
        n: (p.shape, np.dtype(trace.dtype)) for n, p in reference.final_params.items()}
    assert digits.available([training_backend]) == {training_backend: None}
