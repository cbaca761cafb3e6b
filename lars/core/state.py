"""The framework-neutral optimizer state and its versioned file format.

`State` is what LARS carries between steps: the step count, the last learning rate (MXNet's
momentum correction needs it) and one momentum buffer per tensor name, in the positive
convention of `Hyperparams` (heavy-ball: `w -= v`). A tensor has no buffer until its first
step with a gradient (the copy-start flavors need to know the first step) and none at all
without momentum.

On disk a state is one `.npz` file: a JSON header (format, version, step, last lr, flavor,
hyperparameters, the framework that wrote it if known, name/shape/dtype of every buffer) and
one array per buffer. Files are written
atomically (temporary file, then rename) and checked completely before anything is returned.
"""

from __future__ import annotations

import json
import numbers
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lars.core.errors import HyperparameterError, StateError
from lars.core.files import write_atomically
from lars.core.hyperparams import check_lr

FORMAT = "lars-state"
VERSION = 1
_HEADER = "header"


@dataclass(frozen=True)
class State:
    """Step count, last learning rate and momentum buffers by tensor name."""

    step: int = 0
    last_lr: float | None = None
    momentum_buffers: Mapping[str, np.ndarray] = field(default_factory=dict)

    def cleared(self) -> State:
        """A fresh state: what `clear_state` gives on every backend."""
        return State()

    def check_fits(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Raises `StateError` unless the state is valid (`check_state`) and every buffer names a
        known tensor of the same shape. Every adapter calls this before it changes anything."""
        check_state(self)
        unknown = sorted(set(self.momentum_buffers) - set(shapes))
        if unknown:
            raise StateError(f"state has buffers for unknown parameters {unknown}; "
                             f"known: {sorted(shapes)}")
        for name, buffer in self.momentum_buffers.items():
            if tuple(buffer.shape) != tuple(shapes[name]):
                raise StateError(f"state buffer {name!r} has shape {tuple(buffer.shape)}, "
                                 f"but the parameter has shape {tuple(shapes[name])}")


def _is_float_dtype(dtype: np.dtype[Any]) -> bool:
    # bfloat16 (ml_dtypes, as JAX hands it over) is a float whose NumPy kind is 'V'.
    return dtype.kind == "f" or dtype.name == "bfloat16"


def _step_error(step: Any) -> str | None:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        return f"step={step!r} is invalid: expected an int >= 0"
    return None


def _last_lr_error(last_lr: Any) -> str | None:
    if last_lr is None:
        return None
    try:
        check_lr(last_lr)
    except HyperparameterError:
        return f"last_lr={last_lr!r} is invalid: expected None or a finite number >= 0"
    return None


def check_last_lr(value: Any, where: str = "state") -> None:
    """Raises `StateError` unless a saved last learning rate is None or what `lr` may be."""
    if (problem := _last_lr_error(value)) is not None:
        raise StateError(f"{where}: {problem}")


def check_state(state: Any, shapes: Mapping[str, Sequence[int]] | None = None) -> None:
    """Raises `StateError` unless `state` is a `State` that could have come from a run: step an
    int >= 0, last lr None or a finite number >= 0 (what `Hyperparams.lr` allows), buffers named
    by strings, each a floating-point array, and none at step 0 (a buffer exists only after a
    step: an adapter that imported them would otherwise drop or misuse them). With `shapes`,
    also `State.check_fits`. Cheap: no array is read, only its dtype.
    """
    if not isinstance(state, State):
        raise StateError(f"state={state!r} is invalid: expected a lars.State")
    for problem in (_step_error(state.step), _last_lr_error(state.last_lr)):
        if problem is not None:
            raise StateError(f"state {problem}")
    buffers = state.momentum_buffers
    if not isinstance(buffers, Mapping):
        raise StateError(f"state momentum_buffers={buffers!r} is invalid: expected a mapping of "
                         "names to arrays")
    for name, buffer in buffers.items():
        if not isinstance(name, str):
            raise StateError(f"state buffer name {name!r} is invalid: expected a string")
        dtype = getattr(buffer, "dtype", None)
        if not isinstance(dtype, np.dtype) or not _is_float_dtype(dtype):
            raise StateError(f"state buffer {name!r} has dtype {dtype}: expected a floating-point "
                             "dtype (a NumPy array of float16, float32 or float64)")
    if buffers and state.step == 0:
        raise StateError(f"state step=0 with buffers {sorted(buffers)} is invalid: expected step >= 1 "
                         "(a buffer exists only after a step) or no buffers")
    if shapes is not None:
        state.check_fits(shapes)


@dataclass(frozen=True)
class SavedState:
    """A state read from a file, with the flavor and hyperparameters it was saved with, and the
    framework whose tensor names it uses (None if the writer did not say)."""

    state: State
    flavor: str
    hyperparams: dict[str, Any]
    framework: str | None = None


def save_state(path: str | os.PathLike[str], state: State, hyperparams: Mapping[str, Any], *,
               framework: str | None = None) -> Path:
    """Writes `state` and the hyperparameters (`Hyperparams.to_dict()`) to `path`, atomically.

    `framework` records whose tensor names the buffers carry ("torch", "jax", ...): a migration
    to another framework checks it (an optional header key; version-1 readers ignore it).
    Everything `load_state` would refuse is refused here, with `StateError`, before anything is
    written; the file keeps the mode of the one it replaces and a symlink is written through
    (`lars.core.files.write_atomically`).
    """
    check_state(state)
    if not isinstance(hyperparams, Mapping):
        raise StateError(f"hyperparams={hyperparams!r} is invalid: expected a mapping "
                         "(Hyperparams.to_dict())")
    flavor = hyperparams.get("flavor")
    if not isinstance(flavor, str):
        raise StateError(f"hyperparams flavor={flavor!r} is invalid: expected a string (the flavor's name)")
    if framework is not None and not isinstance(framework, str):
        raise StateError(f"framework={framework!r} is invalid: expected None or a string")
    names = list(state.momentum_buffers)
    buffers = {n: np.asarray(state.momentum_buffers[n]) for n in names}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(state.step),
        "last_lr": None if state.last_lr is None else float(state.last_lr),
        "flavor": flavor,
        "hyperparams": dict(hyperparams),
        "framework": framework,
        "buffers": [{"name": n, "shape": list(buffers[n].shape), "dtype": str(buffers[n].dtype)}
                    for n in names],
    }
    try:  # allow_nan=False: a NaN would make a header that is not JSON
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(f"hyperparams cannot be written as JSON ({exc}): expected the values of "
                         "Hyperparams.to_dict()") from None
    arrays = {f"buffer_{i}": buffers[n] for i, n in enumerate(names)}
    arrays[_HEADER] = np.frombuffer(text.encode(), dtype=np.uint8)
    return write_atomically(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def _read_header(archive: Any, path: Path) -> dict[str, Any]:
    if _HEADER not in archive.files:
        raise StateError(f"{path} is not a lars state file (no header)")
    try:
        header = json.loads(bytes(archive[_HEADER]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StateError(f"{path}: the header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise StateError(f"{path} is not a lars state file (the header is a JSON "
                         f"{type(header).__name__}, not an object)")
    if header.get("format") != FORMAT:
        raise StateError(f"{path} is not a lars state file (format {header.get('format')!r})")
    version = header.get("version")
    if version != VERSION:
        raise StateError(f"{path} has state format version {version!r}; this lars reads version "
                         f"{VERSION}" + (" (the file is newer: upgrade lars)"
                                         if isinstance(version, int) and version > VERSION else ""))
    for key in ("step", "last_lr", "flavor", "hyperparams", "buffers"):
        if key not in header:
            raise StateError(f"{path}: the header has no {key!r}")
    problems = [_step_error(header["step"]), _last_lr_error(header["last_lr"])]
    if not isinstance(header["flavor"], str):
        problems.append(f"flavor={header['flavor']!r} is invalid: expected a string")
    if not isinstance(header["hyperparams"], dict):
        problems.append(f"hyperparams={header['hyperparams']!r} is invalid: expected a JSON object")
    if header.get("framework") is not None and not isinstance(header["framework"], str):
        problems.append(f"framework={header['framework']!r} is invalid: expected None or a string")
    if not isinstance(header["buffers"], list):
        problems.append(f"buffers={header['buffers']!r} is invalid: expected a list of "
                        "{name, shape, dtype}")
    for problem in problems:
        if problem is not None:
            raise StateError(f"{path}: the header's {problem}")
    names: set[str] = set()
    for i, entry in enumerate(header["buffers"]):
        _check_entry(path, i, entry)
        if entry["name"] in names:
            raise StateError(f"{path}: the header has two buffers named {entry['name']!r}: expected "
                             "one per tensor")
        names.add(entry["name"])
    return header


def _check_entry(path: Path, i: int, entry: Any) -> None:
    where = f"{path}: the header's buffers[{i}]"
    if not isinstance(entry, dict) or not {"name", "shape", "dtype"} <= set(entry):
        raise StateError(f"{where}={entry!r} is invalid: expected an object with name, shape and dtype")
    if not isinstance(entry["name"], str):
        raise StateError(f"{where}.name={entry['name']!r} is invalid: expected a string")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise StateError(f"{where}.shape={shape!r} is invalid: expected a list of ints >= 0")
    if not isinstance(entry["dtype"], str):
        raise StateError(f"{where}.dtype={entry['dtype']!r} is invalid: expected a dtype's name")


def load_state(path: str | os.PathLike[str],
               shapes: Mapping[str, Sequence[int]] | None = None) -> SavedState:
    """Reads a state file; checks format, version, every header field, every buffer and, if
    given, names and shapes.

    Raises `StateError` before returning anything if a check fails, so a caller that applies
    the result only after this returns never applies half a state.
    """
    path = Path(path)
    try:
        return _load(path, shapes)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, StateError):
            raise
        reason = f"{type(exc).__name__}: {exc}"
        raise StateError(f"{path} cannot be read as a lars state file ({reason})") from None


def _load(path: Path, shapes: Mapping[str, Sequence[int]] | None) -> SavedState:
    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file is one bare array
        raise StateError(f"{path} is not a lars state file (one array, not an .npz archive)")
    with archive:
        header = _read_header(archive, path)
        buffers: dict[str, np.ndarray] = {}
        for i, entry in enumerate(header["buffers"]):
            key = f"buffer_{i}"
            if key not in archive.files:
                raise StateError(f"{path}: buffer {entry['name']!r} is missing")
            array = archive[key]
            if list(array.shape) != list(entry["shape"]) or str(array.dtype) != entry["dtype"]:
                raise StateError(f"{path}: buffer {entry['name']!r} is {array.dtype}{list(array.shape)}, "
                                 f"the header says {entry['dtype']}{entry['shape']}")
            buffers[entry["name"]] = array
    last_lr = header["last_lr"]
    state = State(header["step"], None if last_lr is None else float(last_lr), buffers)
    try:
        check_state(state, shapes)
    except StateError as exc:
        raise StateError(f"{path}: {exc}") from None
    return SavedState(state, header["flavor"], dict(header["hyperparams"]), header.get("framework"))
