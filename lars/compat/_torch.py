"""What the torch drop-ins share: a library's arguments and param-group keys as core fields.

A drop-in is a `lars.backends.torch.LARS` in the flavor that reproduces its library; it takes the
library's names everywhere a user writes them (the constructor, param-group dicts, a state dict
saved by the library itself) and turns them into the core's fields. Errors from the core are
re-raised under the library's name for the argument, so a migrating user reads their own code.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from lars.backends.torch import LARS
from lars.core.config import Config
from lars.core.errors import HyperparameterError

Convert = Callable[[Any], Any]
#: library argument -> (core field, conversion)
Arguments = Mapping[str, tuple[str, Convert]]


def same(value: Any) -> Any:
    return value


def truth(value: Any) -> bool:
    """The libraries test their flags for truth (`if group["nesterov"]`); the core wants a bool."""
    return bool(value)


def negated(value: Any) -> bool:
    return not value


class DropIn(LARS):
    """A `LARS` built from a library's arguments (see `lars.compat`).

    Subclasses give `LIBRARY` (the library and version reproduced), `FLAVOR` and `ARGUMENTS`:
    library argument -> (core field, conversion), for every argument whose name or type differs;
    the others (lr, momentum, dampening, weight_decay, eps, foreach) are core fields already.
    """

    LIBRARY: ClassVar[str]
    FLAVOR: ClassVar[str]
    ARGUMENTS: ClassVar[Arguments] = {}
    #: param-group keys the library keeps that mean nothing to the step (dropped on load).
    BOOKKEEPING: ClassVar[tuple[str, ...]] = ()

    def _build(self, params: Iterable[Any], arguments: Mapping[str, Any]) -> None:
        """`LARS.__init__` with the library's `arguments` (all of them, defaults included)."""
        values = self.translate(arguments)
        lr, foreach = values.pop("lr"), values.pop("foreach", None)
        with self._named_as_library():
            LARS.__init__(self, params, lr, self.FLAVOR, foreach=foreach, **values)

    @classmethod
    def from_file(cls, params: Iterable[Any], config: Config | str | os.PathLike[str],
                  **options: Any) -> LARS:
        """A plain `LARS` from a config (`LARS.from_file`): a config file is in the core's
        terms already, so there is nothing of the library's to translate."""
        return LARS.from_file(params, config, **options)

    @classmethod
    def translate(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Library names and values -> core fields (other keys unchanged)."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            field, convert = cls.ARGUMENTS.get(key, (key, same))
            out[field] = convert(value)
        return out

    @contextlib.contextmanager
    def _named_as_library(self) -> Iterator[None]:
        library_names = {field: name for name, (field, _) in self.ARGUMENTS.items()}
        try:
            yield
        except HyperparameterError as error:
            name = library_names.get(error.field, error.field)
            if name == error.field:
                raise
            raise HyperparameterError(name, error.value, f"{error.allowed} (the core's {error.field}; "
                                      f"{self.LIBRARY} names it {name})") from error

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with self._named_as_library():
            super().add_param_group(self.translate(param_group))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict of this optimizer, or one saved by the library itself (its group
        keys are translated; its momentum buffers mean what ours mean in this flavor)."""
        groups = []
        for group in state_dict.get("param_groups", []):
            translated = self.translate({k: v for k, v in group.items() if k not in self.BOOKKEEPING})
            for key, value in self.defaults.items():
                translated.setdefault(key, value)  # keys of ours the library does not store
            groups.append(translated)
        super().load_state_dict({**state_dict, "param_groups": groups})


def refuse_group_keys(param_group: Mapping[str, Any], keys: Mapping[str, str]) -> None:
    """Raises on a param-group key the library accepts but never reads (`keys`: key -> why)."""
    for key, why in keys.items():
        if key in param_group:
            raise HyperparameterError(key, param_group[key], why)


def warn_ignored(library: str, kwargs: Mapping[str, Any]) -> None:
    """A library that swallows unknown keyword arguments: so do we, but not silently."""
    if kwargs:
        warnings.warn(f"{library} ignores the keyword arguments {sorted(kwargs)}; so does this drop-in",
                      UserWarning, stacklevel=3)
