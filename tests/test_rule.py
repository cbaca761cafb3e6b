"""The compiled rule's contract, from the formulas: coefficients of known norms, the structure a
backend's kernel choice reads, the flavor quirks carried by the `Hyperparams` value, and the
schedules written once. (Every flavor x case against the reference: the conformance suite's
`rule` driver, in the core session.)"""

from __future__ import annotations

import numpy as np
import pytest

import lars
from lars.core.errors import HyperparameterError
from lars.core.flavors import FLAVORS, hyperparams, resolve
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude, plan
from lars.core.rule import Rule, refuse_partial_steps
from lars.core.schedules import Constant, WarmupCosine, WarmupPolynomial
from lars.core.xp import Ops, step_dtype

W_NORM, G_NORM, LR, WD, ETA = 2.0, 0.5, 0.1, 1e-4, 1e-3


def one_tensor(hp: Hyperparams, **kwargs):  # type: ignore[no-untyped-def]
    rule = Rule(hp, plan(hp, [("w", (3,))]))
    norms = {"w": W_NORM, "g": G_NORM, "u": 0.3}
    return rule, rule.coefficients(Ops(), [np.array([norms[n]]) for n in rule.norm_names], LR, **kwargs)


def test_heavy_ball_coefficients_are_the_papers():
    _, c = one_tensor(hyperparams("paper", lr=LR, weight_decay=WD))
    r = ETA * W_NORM / (G_NORM + WD * W_NORM)
    a, bk, bl = c.buffer_terms()
    assert (a, c.step, c.weight_terms()) == (0.9, 1.0, (1.0, 0.0, 0.0))  # w -= v, statically
    assert bk[0] == pytest.approx(LR * r, rel=1e-15) and bl[0] == pytest.approx(LR * r * WD, rel=1e-15)
    assert c.trust_ratio[0] == pytest.approx(r, rel=1e-15)


def test_sgd_style_copy_start_skips_dampening_on_the_first_step_only():
    hp = hyperparams("torchlars", lr=LR, momentum=0.9, dampening=0.5, weight_decay=WD)
    r = ETA * W_NORM / (G_NORM + WD * W_NORM + 1e-8)
    _, first = one_tensor(hp, first=True)
    _, later = one_tensor(hp, first=False)
    assert first.increment[0] == pytest.approx(r, rel=1e-15)
    assert later.increment[0] == pytest.approx(0.5 * r, rel=1e-15)
    assert later.step == LR and later.weight_terms() == (LR, 0.0, 0.0)


def test_nesterov_and_no_momentum_have_direct_gradient_terms():
    _, c = one_tensor(hyperparams("paper", lr=LR, weight_decay=WD, nesterov=True))
    d, e, f = c.weight_terms()
    r = ETA * W_NORM / (G_NORM + WD * W_NORM)
    assert d == 0.9 and e[0] == pytest.approx(LR * r, rel=1e-15)
    assert f[0] == pytest.approx(LR * r * WD, rel=1e-15)
    _, plain = one_tensor(hyperparams("paper", lr=LR, weight_decay=WD, momentum=0.0))
    assert plain.momentum is None and plain.weight_terms()[0] == 0.0


def test_combined_ratio_uses_the_norm_of_the_decayed_gradient_and_guards_on_it():
    rule, c = one_tensor(hyperparams("optax", lr=LR, weight_decay=WD))
    assert rule.norm_names == ("w", "u")  # ||g|| is not taken: nothing reads it
    assert c.trust_ratio[0] == pytest.approx(ETA * W_NORM / 0.3, rel=1e-15)


def test_larc_clip_and_dropped_weight_decay_on_the_fallback():
    hp = hyperparams("larc", lr=LR, weight_decay=WD)
    rule = Rule(hp, plan(hp, [("w", (3,)), ("zero_grad", (3,))]))
    c = rule.coefficients(Ops(), [np.array([2.0, 2.0]), np.array([0.5, 0.0])], LR)
    r = 0.02 * W_NORM / (G_NORM + WD * W_NORM + 1e-8)
    np.testing.assert_allclose(c.trust_ratio, [min(r / LR, 1.0), 1.0], rtol=1e-15)
    np.testing.assert_array_equal(c.decay, [WD, 0.0])  # LARC drops weight decay on the fallback


def test_momentum_correction_reaches_the_first_tensors_of_a_step():
    hp = hyperparams("mxnet", lr=LR, momentum=0.9, momentum_correction_tensors=2)
    rule = Rule(hp, plan(hp, [(f"t{i}_weight", (3,)) for i in range(3)]))
    norms = [np.full(3, 2.0), np.full(3, 0.5)]
    c = rule.coefficients(Ops(), norms, 0.05, last_lr=0.1, first=False, position=1)
    np.testing.assert_allclose(c.momentum, [0.45, 0.9, 0.9], rtol=1e-15)  # positions 1, 2, 3
    assert rule.coefficients(Ops(), norms, 0.05, last_lr=None, first=True).momentum == 0.9
    assert not rule.constant_momentum


def test_the_update_denominator_takes_two_phases():
    hp = hyperparams("paper", lr=LR, trust_denominator="update", momentum_style="ratio_outside")
    rule, c = one_tensor(hp)
    assert rule.two_phase and rule.norm_names == () and c.pending
    done = rule.finish(Ops(), c, [np.array([2.0]), np.array([0.5])], LR)
    assert done.trust_ratio[0] == pytest.approx(ETA * W_NORM / G_NORM, rel=1e-15)
    assert done.step[0] == pytest.approx(LR * ETA * W_NORM / G_NORM, rel=1e-15)


def test_global_clip_factor():
    rule = Rule(hyperparams("paper", lr=LR, grad_clip_norm=2.0), [])
    assert rule.clip_factor(Ops(), np.float64(4.0)) == 0.5
    assert rule.clip_factor(Ops(), np.float64(1.0)) == 1.0
    with pytest.raises(HyperparameterError, match="grad_clip_norm"):
        refuse_partial_steps(rule.hp, "one call sees some of the gradients")


def test_low_precision_parameters_step_in_float32_and_others_in_their_own_dtype():
    assert [step_dtype(n) for n in ("float16", "bfloat16", "float32", "float64")] == \
        ["float32", "float32", "float32", "float64"]


def test_a_low_precision_gradient_is_rescaled_and_clipped_in_the_steps_dtype():
    hp = hyperparams("paper", lr=LR, grad_rescale=0.3, grad_clip_value=0.1)
    g = np.array([0.1235, -0.2471, 0.3333, 0.5, -1.0, 0.01], np.float16)
    (prepared,) = Rule(hp, plan(hp, [("w", g.shape)])).prepare(Ops(np.float32), [g])
    expected = np.clip(np.float32(0.3) * g.astype(np.float32), np.float32(-0.1), np.float32(0.1))
    assert prepared.dtype == np.float32
    assert np.array_equal(prepared, expected)  # not 0.3·g rounded to float16 first
    assert not np.array_equal(expected, np.clip(np.float16(0.3) * g, -0.1, 0.1).astype(np.float32))


def test_mlperf_eps_quirk_lives_in_the_value():
    hp = hyperparams("mlperf", lr=0.1).replace(eps=0.0)
    assert hp.eps == 1e-7 and Hyperparams.from_dict(hp.to_dict()) == hp
    assert lars.loads_config(lars.Config(hp).to_toml()).hyperparams == hp


def test_tf_models_adaptation_follows_a_replaced_weight_decay_rule():
    hp = hyperparams("tf_models", lr=0.1, weight_decay=WD)
    hp = hp.replace(exclude_from_weight_decay=Exclude.regex("bias"))
    (bias,) = plan(hp, [("dense/bias", (4,))])
    assert not bias.adapt and bias.weight_decay == 0.0


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_every_flavor_round_trips_as_a_dict(flavor):
    hp = hyperparams(flavor, lr=0.1)
    assert Hyperparams.from_dict(hp.to_dict()) == hp


def test_resolve_takes_a_flavor_or_a_value():
    hp = hyperparams("mlperf", lr=0.1).replace(eps=0.0)
    assert resolve(hyperparameters=hp) is hp and resolve("mlperf", hp, lr=None) is hp
    assert resolve(hyperparameters=hp, momentum=0.8).momentum == 0.8
    assert resolve("optax", lr=0.2) == hyperparams("optax", lr=0.2)
    with pytest.raises(HyperparameterError, match="flavor"):
        resolve("timm", hp)
    with pytest.raises(HyperparameterError, match="hyperparameters"):
        resolve(hyperparameters=hp.to_dict())  # type: ignore[arg-type]


@pytest.mark.parametrize("schedule", [
    Constant(0.3), WarmupPolynomial(8.5, 10, 91), WarmupPolynomial(0.5, 0, 91, offset=1),
    WarmupCosine(0.2, 5, 100, end_lr=1e-3), WarmupCosine(0.2, 0, 100)])
def test_a_schedule_on_an_array_of_steps_is_its_python_values(schedule):
    steps = np.arange(0, 120)
    expected = [schedule(int(t)) for t in steps]
    # to float64 rounding of the peak: `1 + cos(pi·p)` near p = 1 turns NumPy's SIMD cos, one unit
    # in the last place from `math.cos` on some CPUs (AVX-512), into 1e-14 of the smallest rates
    np.testing.assert_allclose(schedule.value(steps, Ops()), expected, rtol=1e-15, atol=1e-15 * max(expected))


class Float32Sums:
    """A backend whose sums of squares are float32 sums of float32 squares, as fast kernels take them."""

    def sums_of_squares(self, requests):  # type: ignore[no-untyped-def]
        out = []
        for _, rs in requests:
            row = []
            for r in rs:
                v = np.zeros(r.size, np.float32)
                for i in r.only:
                    x = sum(np.float32(1.0 if c is None else np.asarray(c).reshape(-1)[i]
                                       if np.ndim(c) else c) * t[i] for c, t in r.terms)
                    with np.errstate(over="ignore", under="ignore"):
                        v[i] = np.sum(np.square(x.astype(np.float32)), dtype=np.float32)
                row.append(v)
            out.append(row)
        return out


@pytest.mark.parametrize("scale", [1e30, 1e20, 1e-20, 1e-30, 1e-37, 0.0])
def test_float32_norms_out_of_range_are_taken_again_scaled(scale):  # type: ignore[no-untyped-def]
    from lars.core.rule import Request
    from lars.core.step import Batch, take_norms

    x = (np.linspace(0.5, 1.5, 300) * scale).astype(np.float32)
    plain = np.ones(3, np.float32)
    hp = hyperparams("paper", lr=LR)
    rule = Rule(hp, plan(hp, [("a", (3,)), ("x", (300,))]))
    batch = Batch(rule, Ops(np.float32), [plain, x], [plain, x], [None, None], LR)
    (norms,) = take_norms([(batch, [Request(((None, [plain, x]),), (0, 1), 2)])], Float32Sums())[0]
    expected = np.linalg.norm(x.astype(np.float64))  # the reference's float64 sum
    assert norms[1] == pytest.approx(expected, rel=1e-6, abs=0.0)
    assert norms[0] == pytest.approx(np.sqrt(3.0), rel=1e-7)


def test_the_global_norm_of_float32_norms_does_not_overflow():
    from lars.core.step import global_norm

    norms = [np.array([3e30, 0.0], np.float32), np.array([4e30], np.float32)]
    assert global_norm(Ops(np.float32), norms) == pytest.approx(5e30, rel=1e-7)
    assert global_norm(Ops(np.float32), [np.zeros(2, np.float32)]) == 0.0


class TracedLike(Ops):
    """NumPy, but as a traced backend: no host indices, and the branch's predicate remembered."""

    traced = True

    def __init__(self) -> None:
        super().__init__(np.float32)
        self.predicates: list[bool] = []

    def cond(self, predicate, then, otherwise):  # type: ignore[no-untyped-def]
        self.predicates.append(bool(predicate))
        return then() if predicate else otherwise()


def test_a_traced_step_takes_its_norms_once_while_they_are_in_range():
    """Tensors outside a request (an excluded bias) are zeros of the vector, not sums out of range:
    they must not send every step through the branch that takes the norms again."""
    from lars.core.rule import Request
    from lars.core.step import Batch, take_norms

    w, bias = np.ones(4, np.float32), np.zeros(3, np.float32)
    hp = hyperparams("mlperf", lr=LR)
    ops = TracedLike()
    batch = Batch(Rule(hp, plan(hp, [("fc_weight", (4,)), ("fc_bias", (3,))])), ops, [w, bias], [w, bias],
                  [None, None], LR)
    take_norms([(batch, [Request(((None, [w, bias]),), (0,), 2)])], Float32Sums())
    assert ops.predicates == [False]
    take_norms([(batch, [Request(((None, [w * 1e30, bias]),), (0,), 2)])], Float32Sums())
    assert ops.predicates == [False, True]
