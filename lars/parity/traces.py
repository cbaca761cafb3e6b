"""Traces of the digits MLP (`lars.parity.digits`) recorded with the core's rule on NumPy: the
"numpy" side of a comparison, and the runs the tests and `docs/migration-check.md` compare.

The forward and backward pass are the reference learner's (`digits.loss_and_grads`); the step
is `lars.core.step` with a NumPy kernel (`lars.conformance.rule_driver.NumpyBackend`) and
`record=True`, so every recorded quantity comes from the same code path as in the adapters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lars.conformance.rule_driver import NumpyBackend
from lars.core.hyperparams import Hyperparams
from lars.core.policy import plan
from lars.core.rule import Rule
from lars.core.step import Batch, step
from lars.core.trace import QUANTITIES, Recorder
from lars.core.xp import Ops
from lars.parity.digits import Problem, default_hyperparams, default_schedule, loss_and_grads

Array = np.ndarray


def record_numpy(path: str | os.PathLike[str], hp: Hyperparams | None = None, problem: Problem | None = None,
                 dtype: str = "float64", *, params: dict[str, Array] | None = None,
                 batches: Sequence[tuple[Array, Array]] | None = None,
                 lr_at: Callable[[int], float] | None = None, every: int = 1) -> Path:
    """Trains the digits MLP with the compiled rule on NumPy and writes its trace to `path`.

    `params` and `batches` replace the problem's (another initialisation, another data order).
    """
    hp = default_hyperparams() if hp is None else hp
    problem = Problem() if problem is None else problem
    lr_at = default_schedule(problem) if lr_at is None else lr_at
    w = {n: np.array(p, dtype=dtype) for n, p in (params or problem.initial_params(dtype)).items()}
    names = list(w)
    rule = Rule(hp, plan(hp, [(n, w[n].shape) for n in names]))
    buffers: list[Array | None] = [None] * len(names)
    last_lr: float | None = None
    with Recorder(path, names, [w[n].shape for n in names], framework="numpy", dtype=dtype,
                  hyperparams=hp.to_dict(), every=every) as recorder:
        for t, (x, y) in enumerate(batches if batches is not None else problem.batches()):
            loss, grads = loss_and_grads(w, x.astype(dtype), y)
            lr = float(lr_at(t))
            first = tuple(v is None for v in buffers)
            b = Batch(rule, Ops(dtype), [w[n] for n in names], [grads[n] for n in names],
                      [np.zeros_like(w[n]) if v is None else v for n, v in zip(names, buffers, strict=True)],
                      lr, last_lr=last_lr, first=first, record=recorder.wants(t))
            step([b], NumpyBackend())
            w = dict(zip(names, b.weights, strict=True))
            if rule.has_buffer:
                buffers = list(b.buffers)
            last_lr = lr
            if b.record:
                recorder.add(t, lr, {q: b.recorded[q] for q in QUANTITIES}, loss=loss)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lars.parity.traces BACKEND OUT`: the digits MLP trained by BACKEND (numpy: the
    core's rule; torch, jax, keras, mxnet: their adapters) with the shipped MLPerf file's
    hyperparameters and schedule (or `--config`), recorded into the trace file OUT."""
    import argparse

    from lars.core.config import default_config, load_config
    from lars.core.fields import SETTINGS
    from lars.core.flavors import hyperparams
    from lars.core.policy import Exclude
    from lars.parity.digits import train
    from lars.parity.training import compressed

    parser = argparse.ArgumentParser(prog="python -m lars.parity.traces")
    parser.add_argument("backend", choices=["numpy", "torch", "jax", "keras", "mxnet"])
    parser.add_argument("out", help="the trace file to write")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--config", help="a hyperparameter file (default: the shipped MLPerf one)")
    parser.add_argument("--flavor", help="a port's mistake: this flavor's rule, the file's settings")
    parser.add_argument("--exclude-nothing", action="store_true",
                        help="a port's mistake: no tensor excluded from weight decay or adaptation")
    parser.add_argument("--init-seed", type=int, help="a port's mistake: the weights drawn with this seed")
    args = parser.parse_args(argv)
    config = default_config() if args.config is None else load_config(args.config)
    hp = config.hyperparams
    if args.flavor:
        hp = hyperparams(args.flavor, **{k: getattr(hp, k) for k in SETTINGS})
    if args.exclude_nothing:
        hp = hp.replace(exclude_from_weight_decay=Exclude(), exclude_from_adaptation=Exclude())
    problem = Problem(steps=args.steps)
    lr_at = compressed(config.lr_schedule(), problem.steps)
    params = None if args.init_seed is None else Problem(seed=args.init_seed).initial_params(args.dtype)
    if args.backend == "numpy":
        record_numpy(args.out, hp, problem, args.dtype, params=params, lr_at=lr_at)
    else:
        train(args.backend, hp, problem, args.dtype, lr_at, trace=args.out, params=params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
