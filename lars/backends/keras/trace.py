"""`TraceCallback`: per-layer traces of `fit` with the Keras adapter's `LARS` (`lars.core.trace`)."""

from __future__ import annotations

import os
from typing import Any

import keras

from lars.backends.keras import _compat
from lars.backends.keras.optimizer import LARS
from lars.core.trace import QUANTITIES, Recorder


class TraceCallback(keras.callbacks.Callback):
    """Records one step in `every` of `fit` with `LARS` into the trace file `path` (`lars.core.trace`,
    flushed every `flush` recorded steps and at the end; a later fit goes on): per variable (by
    path) what `LARS` records in its traced step, the learning rate, and the loss of `fit`'s logs
    (Keras's mean over the epoch so far). With `steps_per_execution` > 1, an execution's last step."""

    def __init__(self, path: str | os.PathLike[str], every: int = 1, flush: int = 100) -> None:
        super().__init__()
        self.path, self.every, self.flush, self.recorder = path, every, flush, Recorder(  # checks them
            path, (), (), framework="keras", dtype="", hyperparams={}, every=every, flush=flush)

    def on_train_begin(self, logs: Any = None) -> None:
        if not isinstance(opt := self.model.optimizer, LARS):
            raise TypeError(f"TraceCallback records lars's LARS, not {type(opt).__name__}")
        opt.start_recording()  # (Keras's JAX trainer has built it)
        self.model.make_train_function(force=True)
        self.opt, self.step, self.begin = opt, int(opt.iterations.numpy()), 0
        self.recorder.closed = False

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.begin = batch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        opt, self.step = self.opt, self.step + batch - self.begin + 1
        if not self.recorder.names:  # at the first step: the optimizer is built
            names, shapes = zip(*((str(t.name), t.shape) for t in opt._plans), strict=True)
            self.recorder = Recorder(self.path, names, shapes,
                                     framework="keras", dtype=keras.config.floatx(), every=self.every,
                                     hyperparams=opt.hyperparameters.to_dict(), flush=self.flush)
        if self.recorder.wants(self.step - 1):
            *values, lr = _compat.current(self, [*opt.records, opt.last_lr])
            self.recorder.add(self.step - 1, lr, dict(zip(QUANTITIES, values, strict=True)),
                              (logs or {}).get("loss"))

    def on_train_end(self, logs: Any = None) -> None:
        self.recorder.close()
        self.opt.recording, self.model.train_function = False, None  # the next fit: as before
