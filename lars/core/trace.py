"""Per-layer traces of a training run: recorded by every adapter, lined up by `lars compare`.

A trace holds, for each recorded step, the step number (0 for the first step), the learning
rate, the loss the user handed over (NaN if none) and, per tensor by its framework's name:

    weight_norm   ||w||, before the step
    grad_norm     ||g||, the gradient as the rule takes it (after maximize and grad_rescale, which
                  is where MXNet's rescale_grad goes; before any clipping)
    trust_ratio   the ratio the step used (1 where a tensor is not adapted)
    weight_decay  the weight decay that reached the update (0 where excluded or dropped)
    adapted       1 where the rule adapts the tensor, 0 where it is excluded
    update_norm   ||Δw||, the change the step made

On disk a trace is one `.npz` file, written atomically: a JSON header (format, version,
framework, dtype, names, shapes, the hyperparameters in force) and one float64 array per
quantity, of shape (steps, tensors), beside `step`, `lr` and `loss`. float64 keeps a float64
run's values as they were; 1,000 steps of 161 tensors take about 7.8 MB.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from lars.core.errors import StateError
from lars.core.files import write_atomically

FORMAT = "lars-trace"
VERSION = 1
QUANTITIES = ("weight_norm", "grad_norm", "trust_ratio", "weight_decay", "adapted", "update_norm")
_HEADER = "header"


class TraceError(StateError):
    """A trace file that cannot be read, or a recording that does not fit its trace."""


@dataclass(frozen=True)
class Trace:
    """A recorded run: per step `step`, `lr`, `loss`; per step and tensor each of `QUANTITIES`."""

    framework: str
    dtype: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    hyperparams: Mapping[str, Any]
    step: np.ndarray
    lr: np.ndarray
    loss: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.step)


def save_trace(path: str | os.PathLike[str], trace: Trace) -> Path:
    """Writes `trace` atomically (see `lars.core.files`)."""
    header = {"format": FORMAT, "version": VERSION, "framework": trace.framework, "dtype": trace.dtype,
              "names": list(trace.names), "shapes": [list(s) for s in trace.shapes],
              "hyperparams": dict(trace.hyperparams)}
    arrays = {"step": np.asarray(trace.step, np.int64), "lr": np.asarray(trace.lr, np.float64),
              "loss": np.asarray(trace.loss, np.float64),
              **{q: np.asarray(trace.columns[q], np.float64).reshape(len(trace), len(trace.names))
                 for q in QUANTITIES}}

    payload: dict[str, Any] = {_HEADER: np.array(json.dumps(header)), **arrays}

    def write(f: IO[bytes]) -> None:
        np.savez(f, **payload)

    return write_atomically(path, write)


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Reads a trace, checked completely; `TraceError` names the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data[_HEADER]))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise TraceError(f"{path}: not a lars trace (its header is not a {FORMAT} header)")
            if header.get("version") != VERSION:
                raise TraceError(f"{path}: trace version {header.get('version')!r} is not {VERSION}: "
                                 "read it with the lars that wrote it, or upgrade lars")
            arrays = {k: data[k] for k in ("step", "lr", "loss", *QUANTITIES)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, TypeError) as exc:
        if isinstance(exc, TraceError):
            raise
        raise TraceError(f"{path}: not a lars trace ({type(exc).__name__}: {exc})") from None
    names, shapes = header.get("names"), header.get("shapes")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and isinstance(shapes, list)
            and len(shapes) == len(names) and len(set(names)) == len(names)):
        raise TraceError(f"{path}: the header's names and shapes are invalid")
    steps = len(arrays["step"])
    for key, a in arrays.items():
        want = (steps, len(names)) if key in QUANTITIES else (steps,)
        if a.shape != want or a.dtype.kind not in "fi":
            raise TraceError(f"{path}: array {key!r} has shape {a.shape} and dtype {a.dtype}: "
                             f"expected {want}")
    return Trace(str(header.get("framework")), str(header.get("dtype")), tuple(names),
                 tuple(tuple(int(d) for d in s) for s in shapes), dict(header.get("hyperparams") or {}),
                 arrays["step"], arrays["lr"], arrays["loss"], {q: arrays[q] for q in QUANTITIES})


class Recorder:
    """Collects an adapter's steps into a trace file.

    `add` keeps the values as the adapter hands them over (device arrays included: no host
    synchronisation per step); every `flush` recorded steps, and on `close`, they are read on the
    host (`host`) and the whole trace is written again, atomically. `every`: record one step in
    `every` (the others cost nothing). A context manager: leaving it closes the recorder.
    """

    def __init__(self, path: str | os.PathLike[str], names: Sequence[str],
                 shapes: Sequence[Sequence[int]], *, framework: str, dtype: str,
                 hyperparams: Mapping[str, Any], every: int = 1, flush: int = 100,
                 host: Callable[[Any], np.ndarray] = np.asarray) -> None:
        for key, value in (("every", every), ("flush", flush)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TraceError(f"{key}={value!r} is invalid: expected an int >= 1")
        self.path, self.every, self.flush_every, self.host = Path(path), every, flush, host
        self.names, self.shapes = tuple(names), tuple(tuple(int(d) for d in s) for s in shapes)
        self.meta: dict[str, Any] = {"framework": framework, "dtype": dtype, "hyperparams": dict(hyperparams)}
        self.rows: list[dict[str, np.ndarray]] = []
        self.pending: list[tuple[int, Any, Any, Mapping[str, Any]]] = []
        self.losses: dict[int, Any] = {}  # read on the host at a flush, as the steps are
        self.closed = False

    def wants(self, step: int) -> bool:
        """Whether step `step` (0 for the first) is recorded."""
        return not self.closed and step % self.every == 0

    def add(self, step: int, lr: Any, values: Mapping[str, Any], loss: Any = None) -> None:
        """One step: `values` maps each of `QUANTITIES` to one value per tensor, in `names`' order."""
        self.pending.append((step, lr, loss, values))
        if len(self.pending) >= self.flush_every:
            self.flush()

    def add_loss(self, step: int, loss: Any) -> None:
        """The loss of step `step`, known after the step (the user's), kept as it is until a flush."""
        self.losses[step] = loss

    def flush(self) -> None:
        """Reads the pending steps on the host and writes the whole trace again."""
        for step, lr, loss, values in self.pending:
            row = {"step": np.asarray(step, np.int64),
                   "lr": np.asarray(self.host(lr), np.float64).reshape(()),
                   "loss": np.asarray(np.nan if loss is None else self.host(loss), np.float64).reshape(())}
            for q in QUANTITIES:
                v = np.asarray(self.host(values[q]), np.float64).reshape(-1)
                if v.shape != (len(self.names),):
                    raise TraceError(f"{q} of step {step} has {v.size} values for {len(self.names)} tensors")
                row[q] = v
            self.rows.append(row)
        self.pending.clear()
        self.losses = {s: float(self.host(x)) for s, x in self.losses.items()}
        save_trace(self.path, self.trace())

    def trace(self) -> Trace:
        """What is recorded so far (the pending steps not included)."""
        steps, n = len(self.rows), len(self.names)
        column = {k: np.array([r[k] for r in self.rows]).reshape(steps, *((n,) if k in QUANTITIES else ()))
                  for k in ("step", "lr", "loss", *QUANTITIES)}
        loss = np.array([float(self.host(self.losses[int(s)])) if int(s) in self.losses else float(x)
                         for s, x in zip(column["step"], column["loss"], strict=True)])
        return Trace(self.meta["framework"], self.meta["dtype"], self.names, self.shapes,
                     self.meta["hyperparams"], column["step"], column["lr"], loss,
                     {q: column[q] for q in QUANTITIES})

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
