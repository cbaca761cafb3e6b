"""`LARS.record` (issue 19): per step and tensor, by torch's names, what the step did, checked
against the formulas on copies of the tensors; one step in `every`; the loss; the file read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lars.backends.torch import LARS
from lars.core.trace import QUANTITIES, load_trace

NAMES = ["fc.weight", "fc.bias", "out.weight", "out.bias"]
SHAPES = [(5, 4), (5,), (3, 5), (3,)]


def optimizer(dtype: torch.dtype = torch.float64, flavor: str = "paper", **options):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in SHAPES]
    groups = [{"params": params[0::2], "param_names": NAMES[0::2]},  # the biases without weight decay
              {"params": params[1::2], "param_names": NAMES[1::2], "weight_decay": 0.0}]
    return params, LARS(groups, lr=0.1, flavor=flavor, momentum=0.9, weight_decay=1e-2, **options)


@pytest.mark.parametrize("dtype,foreach,rtol", [(torch.float64, None, 1e-10), (torch.float32, None, 1e-5),
                                                 (torch.float32, True, 1e-5), (torch.float32, False, 1e-5)])
def test_a_recorded_step_holds_the_norms_ratios_and_change_of_every_tensor(tmp_path, dtype, foreach, rtol):  # type: ignore
    params, opt = optimizer(dtype, foreach=foreach)
    rows = []
    with opt.record(tmp_path / "run.npz", flush=2) as rec:
        for t in range(5):
            opt.set_lr(0.1 * (t + 1))
            for p in params:
                p.grad = torch.randn_like(p)
            before = [p.detach().clone() for p in params]
            opt.step()
            rec.add_loss(t, torch.tensor(1.0 / (t + 1)))
            rows.append({"weight_norm": [b.norm().item() for b in before],
                         "grad_norm": [p.grad.norm().item() for p in params],  # type: ignore[union-attr]
                         "update_norm": [(p - b).norm().item() for p, b in zip(params, before, strict=True)],
                         "trust_ratio": opt.trust_ratios()})
            if t == 2:  # two steps flushed, the third pending
                assert len(load_trace(tmp_path / "run.npz")) == 2
    trace = load_trace(tmp_path / "run.npz")
    order = NAMES[0::2] + NAMES[1::2]
    assert trace.names == tuple(order) and trace.framework == "torch"
    assert trace.shapes == tuple(SHAPES[NAMES.index(n)] for n in order)
    assert trace.dtype == str(dtype).removeprefix("torch.") and trace.hyperparams["flavor"] == "paper"
    np.testing.assert_array_equal(trace.step, range(5))
    np.testing.assert_allclose(trace.lr, [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(trace.loss, [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    for t, row in enumerate(rows):
        for q in ("weight_norm", "grad_norm", "update_norm"):
            # w' - w has the roundings of w' in it: half an ulp of each element, under eps·||w'||
            atol = torch.finfo(dtype).eps * trace.columns["weight_norm"][t].max() if q == "update_norm" else 0
            want = [row[q][NAMES.index(n)] for n in order]
            np.testing.assert_allclose(trace.columns[q][t], want, rtol=rtol, atol=atol)
        np.testing.assert_allclose(trace.columns["trust_ratio"][t], [row["trust_ratio"][n] for n in order],
                                   rtol=1e-6)
        decays = np.array([1e-2, 1e-2, 0, 0], trace.dtype)  # as the step holds it
        np.testing.assert_array_equal(trace.columns["weight_decay"][t], decays)
        np.testing.assert_array_equal(trace.columns["adapted"][t], [1.0] * 4)
    assert opt._recorder is None or opt._recorder.closed


def test_an_excluded_tensor_is_recorded_as_not_adapted_without_weight_decay(tmp_path):  # type: ignore
    params, opt = optimizer(flavor="mxnet")  # MXNet excludes the biases (1-d) from both
    for p in params:
        p.grad = torch.randn_like(p)
    with opt.record(tmp_path / "t.npz"):
        opt.step()
    trace = load_trace(tmp_path / "t.npz")
    np.testing.assert_array_equal(trace.columns["adapted"][0], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(trace.columns["trust_ratio"][0][2:], [1.0, 1.0])


def test_every_k_records_one_step_in_k_and_closing_detaches(tmp_path):  # type: ignore[no-untyped-def]
    params, opt = optimizer()
    rec = opt.record(tmp_path / "t.npz", every=3)
    for t in range(8):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        if t == 6:
            rec.close()
    assert opt._recorder is None  # the step after closing let it go
    trace = load_trace(tmp_path / "t.npz")
    np.testing.assert_array_equal(trace.step, [0, 3, 6])
    assert np.isnan(trace.loss).all()


def test_a_tensor_without_a_gradient_is_recorded_as_nan(tmp_path):  # type: ignore[no-untyped-def]
    params, opt = optimizer()
    params[0].grad = torch.randn_like(params[0])
    with opt.record(tmp_path / "t.npz"):
        opt.step()
    trace = load_trace(tmp_path / "t.npz")
    for q in QUANTITIES:
        assert not np.isnan(trace.columns[q][0, 0]) and np.isnan(trace.columns[q][0, 1:]).all(), q


@pytest.mark.parametrize("foreach", [None, True, False])
def test_recording_leaves_the_steps_exactly_as_they_were(tmp_path, foreach):  # type: ignore[no-untyped-def]
    (plain, a), (recorded, b) = (optimizer(torch.float32, foreach=foreach) for _ in range(2))
    with b.record(tmp_path / "t.npz", every=2):
        for _ in range(4):
            for p, q in zip(plain, recorded, strict=True):
                p.grad = torch.randn_like(p)
                q.grad = p.grad.clone()
            a.step()
            b.step()
    for p, q in zip(plain, recorded, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert a.trust_ratios() == b.trust_ratios()
