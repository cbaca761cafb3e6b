"""Moves a saved optimizer state from one framework to another.

On disk, a state saved by any adapter is the core's neutral file (`lars.save_state`): step
count, last learning rate and the momentum buffers in the positive convention, each under the
tensor's name *as its framework names it* (PyTorch `fc.weight`, a JAX key path `fc/kernel`, a
Keras variable path `dense/kernel`, a Gluon name `dense0_weight`). What differs between
frameworks is therefore only the names and the layouts of the tensors (PyTorch stores a dense
kernel as (out, in), Keras and Flax as (in, out)). A migration

1. reads the source file completely (`lars.load_state`: format, version, every buffer),
2. refuses it if it records another framework than the one named as the source,
3. renames each buffer and transposes it by the name map (`{source: Rename(target, axes)}`;
   a buffer absent from the map keeps its name and layout),
4. checks the result against the target's parameters (names and shapes), if given,
5. and only then writes the target file, atomically, recording the target framework.

A failed check raises `StateError` (or `ConfigError` for a bad map file) and writes nothing.
Only the core is imported here: a migration needs no framework.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lars.core.errors import ConfigError, StateError
from lars.core.state import SavedState, State, load_state, save_state

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The frameworks whose states migrate: the four adapters and the core's NumPy reference.
FRAMEWORKS = ("torch", "jax", "keras", "mxnet", "numpy")


@dataclass(frozen=True)
class Rename:
    """Where one source tensor goes: its name in the target framework, and the permutation of
    its axes (`np.transpose(buffer, axes)`; None keeps the layout)."""

    name: str
    axes: tuple[int, ...] | None = None

    def apply(self, source_name: str, buffer: np.ndarray) -> np.ndarray:
        if self.axes is None:
            return buffer
        if sorted(self.axes) != list(range(buffer.ndim)):
            raise StateError(f"name map: axes {list(self.axes)} of {source_name!r} are not a permutation of "
                             f"the axes of its buffer, shape {tuple(buffer.shape)}")
        return np.ascontiguousarray(np.transpose(buffer, self.axes))


NameMap = Mapping[str, Rename]


def load_name_map(path: str | os.PathLike[str]) -> dict[str, Rename]:
    """Reads a name map file (TOML):

        [tensors]
        "fc.bias" = "fc/bias"                                   # a new name
        "fc.weight" = { name = "fc/kernel", axes = [1, 0] }     # a new name and layout
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(source, "file", source, "a readable name map",
                          detail=f"cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "file", source, "valid TOML", detail=f"is not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition; tomllib lets this through
        detail = f"is not UTF-8 text (byte {exc.start}: {exc.reason}): save it as UTF-8"
        raise ConfigError(source, "file", source, "UTF-8 text", detail=detail) from None
    if set(data) != {"tensors"} or not isinstance(data["tensors"], Mapping):
        raise ConfigError(source, "file", sorted(data), "one [tensors] table: source name = target name")
    return {str(k): _rename(source, str(k), v) for k, v in data["tensors"].items()}


def _rename(source: str, key: str, value: Any) -> Rename:
    allowed = 'a target name, or { name = "target", axes = [permutation of the axes] }'
    if isinstance(value, str):
        return Rename(value)
    if not isinstance(value, Mapping) or not set(value) <= {"name", "axes"} or not isinstance(
            value.get("name"), str):
        raise ConfigError(source, f"tensors.{key}", value, allowed)
    axes = value.get("axes")
    if axes is not None and not (isinstance(axes, list) and all(
            isinstance(a, int) and not isinstance(a, bool) for a in axes)):
        raise ConfigError(source, f"tensors.{key}.axes", axes, "a list of ints, a permutation of the axes")
    return Rename(value["name"], None if axes is None else tuple(axes))


def read_parameter_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the target's parameters, from an `.npz` of them (by name, as
    `np.savez(path, **params)` writes it: only the array headers are read)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, _ = read(f)
                shapes[info.filename.removesuffix(".npy")] = tuple(int(s) for s in shape)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise StateError(f"{path} cannot be read as the parameters' .npz ({reason})") from None
    return shapes


def rename(state: State, names: NameMap) -> State:
    """The state with every buffer renamed and transposed by `names`; refuses two buffers that
    would get the same name."""
    buffers: dict[str, np.ndarray] = {}
    for name, buffer in state.momentum_buffers.items():
        entry = names.get(name, Rename(name))
        if entry.name in buffers:
            raise StateError(f"name map: two buffers would be named {entry.name!r} in the target")
        buffers[entry.name] = entry.apply(name, np.asarray(buffer))
    return State(state.step, state.last_lr, buffers)


def check_framework(name: str, role: str) -> str:
    if name not in FRAMEWORKS:
        raise StateError(f"{role}={name!r} is invalid: expected one of {', '.join(FRAMEWORKS)}")
    return name


def migrate(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, source: str, target: str,
            names: NameMap | None = None, shapes: Mapping[str, Sequence[int]] | None = None) -> SavedState:
    """Converts the state file `src`, saved by `source`'s adapter, into `dst` for `target`'s.

    Every check runs before `dst` is written (atomically); on any failure nothing is written.
    Returns what was written.
    """
    check_framework(source, "source")
    check_framework(target, "target")
    saved = load_state(src)
    if saved.framework is not None and saved.framework != source:
        raise StateError(f"{src} holds a state saved by {saved.framework}, not by {source}: "
                         f"migrate it with --from {saved.framework}")
    unused = sorted(set(names or {}) - set(saved.state.momentum_buffers))
    state = rename(saved.state, names or {})
    if shapes is not None:
        try:
            state.check_fits(shapes)
        except StateError as exc:
            hint = f" (map entries that match no buffer: {unused})" if unused else ""
            raise StateError(f"{src} does not fit the target's parameters: {exc}{hint}") from None
    if Path(dst).resolve() == Path(src).resolve():
        raise StateError(f"the target {dst} is the source file: write the migrated state elsewhere")
    save_state(dst, state, saved.hyperparams, framework=target)
    return SavedState(state, saved.flavor, saved.hyperparams, target)
