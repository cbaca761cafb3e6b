"""End to end: LARS trains a small MLP on scikit-learn's digits to the accuracy a user expects,
alone, under a torch LR scheduler and under the core's warm-up cosine schedule."""

import math

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from lars.backends.torch import LARS, CoreScheduler
from lars.core import schedules

EPOCHS = 12
BATCH = 64


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.ReLU(), nn.Linear(64, 10))


def batches(x, y, epoch):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
    for start in range(0, len(x), BATCH):
        index = order[start:start + BATCH]
        yield x[index], y[index]


def train(digits, net, opt, scheduler=None, on_step=None):
    x_train, y_train, x_test, y_test = digits
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(EPOCHS):
        for xb, yb in batches(x_train, y_train, epoch):
            opt.zero_grad()
            loss_fn(net(xb), yb).backward()
            opt.step()
            if on_step is not None:
                on_step()
            if scheduler is not None:
                scheduler.step()
    with torch.no_grad():
        return (net(x_test).argmax(1) == y_test).float().mean().item()


def steps_per_epoch(digits):
    return math.ceil(len(digits[0]) / BATCH)


#: LARC-like trust coefficient: with eta = 1e-3 a small MLP needs far more steps.
OPTIONS = {"momentum": 0.9, "weight_decay": 1e-4, "trust_coefficient": 0.02,
           "exclude_from_weight_decay": "ndim<=1", "exclude_from_adaptation": "ndim<=1"}


@pytest.mark.parametrize("flavor", ["paper", "pytorch_optimizer", "optax", "timm"])
def test_lars_trains_an_mlp_on_digits(digits, flavor):
    net = model()
    untrained = train(digits, net, LARS(net.named_parameters(), lr=0.0, flavor=flavor, **OPTIONS))
    net = model()
    opt = LARS(net.named_parameters(), lr=0.1, flavor=flavor, **OPTIONS)
    accuracy = train(digits, net, opt)
    assert untrained < 0.5  # lr 0 leaves the model untrained: the data alone do not give 0.9
    assert accuracy >= 0.9, accuracy
    ratios = opt.trust_ratios()
    assert ratios["0.bias"] == ratios["1.weight"] == 1.0  # excluded from adaptation
    assert 0 < ratios["0.weight"] < 1.0


def test_lars_under_a_torch_one_cycle_scheduler(digits):
    net = model()
    opt = LARS(net.named_parameters(), lr=1.0, **OPTIONS)
    total = EPOCHS * steps_per_epoch(digits)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=total,
                                                    anneal_strategy="cos", cycle_momentum=False)
    seen = []
    accuracy = train(digits, net, opt, scheduler, on_step=lambda: seen.append(opt.param_groups[0]["lr"]))
    assert accuracy >= 0.9, accuracy
    # OneCycleLR's formula: cosine from max_lr/25 up to max_lr over 30%, then to max_lr/25/1e4.
    warm = 0.3 * total - 1
    peak = 0.3
    initial, final = peak / 25, peak / 25 / 1e4

    def one_cycle(t):
        if t <= warm:
            return peak + (initial - peak) / 2 * (1 + math.cos(math.pi * t / warm))
        p = (t - warm) / (total - 1 - warm)
        return final + (peak - final) / 2 * (1 + math.cos(math.pi * p))

    for t in (0, 10, int(warm), 100, total - 1):
        assert math.isclose(seen[t], one_cycle(t), rel_tol=1e-9), t
    assert opt.export_state().last_lr == seen[-1]


def test_lars_under_the_core_warmup_cosine_schedule(digits):
    net = model()
    opt = LARS(net.named_parameters(), lr=1.0, flavor="pytorch_optimizer", **OPTIONS)
    total = EPOCHS * steps_per_epoch(digits)
    schedule = schedules.WarmupCosine(base_lr=0.3, warmup_steps=20, total_steps=total, end_lr=0.01)
    scheduler = CoreScheduler(opt, schedule)
    assert opt.param_groups[0]["lr"] == 0.0  # the first update uses schedule(0)
    seen = []
    accuracy = train(digits, net, opt, scheduler, on_step=lambda: seen.append(opt.param_groups[0]["lr"]))
    assert accuracy >= 0.9, accuracy

    def warmup_cosine(t):  # the documented formula, written out
        if t < 20:
            return 0.3 * t / 20
        return 0.01 + (0.3 - 0.01) * (1 + math.cos(math.pi * min(1.0, (t - 20) / (total - 20)))) / 2

    for t in (0, 1, 19, 20, 21, 100, total - 1):
        assert math.isclose(seen[t], warmup_cosine(t), rel_tol=1e-12, abs_tol=1e-15), t
    assert math.isclose(opt.param_groups[0]["lr"], warmup_cosine(total), rel_tol=1e-12)
