"""Every flavor x case x dtype of the selected driver, against the reference; and mixtures of
axis values that no flavor ships, which reach every backend through the core alone."""

from __future__ import annotations

import pytest

from lars.conformance.cases import CASES
from lars.conformance.runner import CaseResult, run_case, run_hyperparams
from lars.core.errors import HyperparameterError
from lars.core.flavors import FLAVORS, hyperparams
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude


def check(driver, result: CaseResult) -> None:  # type: ignore[no-untyped-def]
    if result.refused:  # the backend documents that it cannot do this exactly, and says so up front
        assert result.error is not None and "HyperparameterError" in result.error
        return
    assert result.passed, result.summary() + f"; per tensor after the last step: {result.final_deviation}"


def test_matches_reference(conformance_case):  # type: ignore[no-untyped-def]
    driver, flavor, case, dtype = conformance_case
    reason = driver.unavailable_reason()
    assert reason is None, f"driver {driver.name} cannot run here: {reason}"
    check(driver, run_case(driver, flavor, case, dtype))


#: Hyperparams built from axis values as no public implementation combines them. Each one is
#: a plain `Hyperparams`: no backend has heard of it, so matching the reference shows that a new
#: combination (or a new axis value) needs the core only.
MIXTURES: dict[str, Hyperparams] = {
    # gradient-only ratio, SGD-style momentum from a copy, dampening, LARC clip on the fallback
    # too, weight decay dropped on the fallback, a guard on the denominator, maximize, rescale
    "grad_sgd_copy_larc": hyperparams("paper", lr=0.1).replace(
        trust_denominator="grad", momentum_style="sgd", buffer_start="copy", dampening=0.25,
        larc_clip=True, larc_clip_on_fallback=True, zero_norm_rule="weight_and_denominator",
        weight_decay_on_fallback=False, eps=1e-6, trust_coefficient=0.02, weight_decay=1e-2,
        maximize=True, grad_rescale=2.0, grad_clip_value=0.1, clip_before_norms=True,
        exclude_from_adaptation=Exclude.ndim_at_most(0)),
    # the ratio from the momentum output, with nesterov, MXNet's momentum correction on the
    # first two tensors and element-wise clipping
    "update_nesterov_corrected": hyperparams("paper", lr=0.1).replace(
        trust_denominator="update", momentum_style="ratio_outside", nesterov=True,
        momentum_correction=True, momentum_correction_tensors=2, weight_decay=1e-2,
        grad_clip_value=0.03, exclude_from_weight_decay=Exclude.regex("bias")),
    # combined norm, heavy-ball from a copy, adaptation only with weight decay (excluded for
    # vectors), eps from the MLPerf quirk, and the global-norm clip seen by the norms
    "combined_copy_clipped": hyperparams("paper", lr=0.1).replace(
        trust_denominator="combined", buffer_start="copy", adapt_requires_weight_decay=True,
        exclude_from_weight_decay=Exclude.ndim_in(1), eps=0.0, eps_when_zero=1e-3, weight_decay=5e-3,
        grad_clip_norm=0.3, clip_before_norms=True, momentum=0.8),
    # decoupled weight decay with SGD-style nesterov momentum, a gradient-only denominator, no
    # zero-norm rule (a zero gradient gives eta*||w||/eps) and the ratio capped
    "decoupled_nesterov_unguarded": hyperparams("paper", lr=0.1).replace(
        momentum_style="sgd", nesterov=True, decoupled_weight_decay=True, trust_denominator="grad",
        zero_norm_rule="none", eps=1e-6, trust_ratio_max=0.05, weight_decay=1e-2,
        exclude_from_weight_decay=Exclude.ndim_at_most(0)),
}


@pytest.mark.parametrize("case", ["loss_gradients", "zero_norms", "warmup_poly_schedule"])
@pytest.mark.parametrize("mixture", list(MIXTURES))
def test_a_mixture_never_shipped_as_a_flavor(conformance_driver, mixture, case):  # type: ignore[no-untyped-def]
    for dtype in conformance_driver.dtypes:
        check(conformance_driver, run_hyperparams(conformance_driver, MIXTURES[mixture], case, dtype))


#: MLPerf's `eps = 0` means 1e-7 (its `epsilon or 1e-7`): a `Hyperparams` carries that meaning.
MLPERF_EPS_ZERO = hyperparams("mlperf", lr=0.1).replace(eps=0.0)


@pytest.mark.parametrize("name", [*FLAVORS, *MIXTURES, "mlperf_eps_zero"])
def test_the_adapter_keeps_the_hyperparameters_it_is_given(conformance_driver, name):  # type: ignore[no-untyped-def]
    hp = MIXTURES.get(name) or (MLPERF_EPS_ZERO if name == "mlperf_eps_zero" else hyperparams(name, lr=0.1))
    params = CASES["flavor_defaults"].initial_params()
    try:
        dtype = conformance_driver.dtypes[0]
        run = conformance_driver.start(hp, {n: p.astype(dtype) for n, p in params.items()})
    except HyperparameterError as exc:
        assert exc.field in getattr(conformance_driver, "refuses", {}), exc
        return
    assert run.hyperparameters() == hp


def test_mlperf_eps_replaced_by_zero_steps_as_the_reference(conformance_driver):  # type: ignore[no-untyped-def]
    for dtype in conformance_driver.dtypes:
        check(conformance_driver, run_hyperparams(conformance_driver, MLPERF_EPS_ZERO, "zero_norms", dtype))
