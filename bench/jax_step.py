"""JAX: `lars.backends.jax.lars` beside `optax.lars` and optax SGD (momentum + weight decay).

Each variant is one jitted function `(params, state, grads) -> (params, state)` (update and
apply_updates), timed to `block_until_ready`: the anchor, optax's fastest SGD, and the adapter
donate the params and state (updated in place); optax.lars does not (donation slows it on CPU).
`recording(k)` is the adapter made with `record=k`, its recorder fed by the state after every
update (measured by `bench.recording` beside `ours(..., donate=False)`: a recorder keeps arrays
of the state, which a donated step would free).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.common import Backend, Factory, Step, Target, Tensors, checked
from lars.backends.jax import lars

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
#: Where the recording variants write their traces (removed when the process ends).
TRACES, NUMBER = tempfile.TemporaryDirectory(prefix="lars-bench-traces-"), itertools.count()


def runner(tx: optax.GradientTransformation, tensors: Tensors, dtype: str,
           after: Callable[[Any], None] = lambda state: None, donate: bool = True) -> Step:
    return built(tx, tensors, dtype, after, donate)[0]


def built(tx: optax.GradientTransformation, tensors: Tensors, dtype: str,
          after: Callable[[Any], None] = lambda state: None, donate: bool = True,
          ) -> tuple[Step, Callable[[], list[np.ndarray]]]:
    """The step, and a reader of the weights it leaves."""
    params = {name: jnp.asarray(w, DTYPES[dtype]) for name, w, _ in tensors}
    grads = {name: jnp.asarray(g, DTYPES[dtype]) for name, _, g in tensors}

    def update(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    step = jax.jit(update, donate_argnums=(0, 1) if donate else ())

    box = {"p": params, "s": tx.init(params)}

    def run() -> None:
        box["p"], box["s"] = step(box["p"], box["s"], grads)
        after(box["s"])
        jax.block_until_ready(box["p"])
    return run, lambda: [np.asarray(box["p"][name], np.float32) for name, _, _ in tensors]


def sgd_built(tensors: Tensors, dtype: str) -> tuple[Step, Callable[[], list[np.ndarray]]]:
    return built(optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9)), tensors, dtype)


sgd = checked(sgd_built, lr=0.1, momentum=0.9, weight_decay=1e-4)


def peer(tensors: Tensors, dtype: str) -> Step:
    return runner(optax.lars(0.1, weight_decay=1e-4, momentum=0.9), tensors, dtype, donate=False)


def ours(tensors: Tensors, dtype: str, donate: bool = True) -> Step:
    return runner(lars(0.1, "paper", weight_decay=1e-4, momentum=0.9), tensors, dtype, donate=donate)


def recording(every: int) -> Factory:
    """The adapter recording one update in `every` (flushed every 100 recorded updates)."""
    def factory(tensors: Tensors, dtype: str) -> Step:
        tx = lars(0.1, "paper", weight_decay=1e-4, momentum=0.9, record=every)
        params = {name: jnp.zeros(w.shape, DTYPES[dtype]) for name, w, _ in tensors}
        recorder = tx.recorder(Path(TRACES.name) / f"{next(NUMBER)}.npz", params)
        return runner(tx, tensors, dtype, recorder.add_state, donate=False)
    return factory


def backend() -> Backend:
    return Backend(
        name="jax",
        versions={"jax": jax.__version__, "optax": optax.__version__, "device": jax.devices()[0].platform},
        variants={"optax sgd+wd, donated": sgd, "optax.lars": peer, "lars paper": ours},
        targets=(Target("lars paper", "optax sgd+wd, donated", 1.5), Target("lars paper", "optax.lars", 0.4)),
        sgd=("optax sgd+wd, donated",),
    )
