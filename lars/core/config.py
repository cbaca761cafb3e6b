"""The hyperparameter file: one TOML file describes the same optimizer in every framework.

    flavor = "mlperf"
    momentum = 0.9
    weight_decay = 2e-4
    exclude_from_weight_decay = { ndims = [0, 1] }

    [schedule]                      # or a constant `lr = 0.1` at the top level
    kind = "warmup_polynomial"
    base_lr = 8.5
    warmup_steps = 3125
    decay_steps = 22501

Every top-level key is a field of `Hyperparams`, under its own name, applied on top of the
flavor's defaults exactly as `lars.hyperparams(flavor, **keys)` does. A file is checked
completely when it is read, before any optimizer is made: an unknown key (with the closest
known one), a wrong type or an invalid value raises `ConfigError`, the core's message prefixed
by the file's path.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lars.core.errors import ConfigError, ExclusionError, HyperparameterError
from lars.core.flavors import DEFAULT_FLAVOR, FLAVORS, hyperparams
from lars.core.hyperparams import AXES, Hyperparams
from lars.core.policy import Exclude, as_exclude
from lars.core.schedules import Constant, Schedule, WarmupCosine, WarmupPolynomial

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: `kind` in a `[schedule]` table -> the core's schedule.
SCHEDULES: Mapping[str, type[Schedule]] = {
    "constant": Constant, "warmup_polynomial": WarmupPolynomial, "warmup_cosine": WarmupCosine}
#: Fields whose value may be None: TOML has no null, so the file writes the string "none".
NONE_ALLOWED = tuple(f.name for f in dataclasses.fields(Hyperparams) if "None" in str(f.type))
RULES = ("exclude_from_weight_decay", "exclude_from_adaptation")
RULE_KEYS = ("ndims", "patterns", "names")
RULE_FORMS = ("false, 'ndim<=N', 'ndim==N', a regex, a list of regexes, or a table "
              "{ ndims = [int, ...], patterns = [regex, ...], names = [name, ...] }")
#: The MLPerf ResNet-50 LARS hyperparameters, shipped with the package.
DEFAULT_CONFIG = "mlperf_resnet50.toml"


@dataclass(frozen=True)
class Config:
    """What a hyperparameter file says: validated hyperparameters and an optional schedule.

    With a schedule, `hyperparams.lr` is the schedule's first rate, `schedule(0)`.
    """

    hyperparams: Hyperparams
    schedule: Schedule | None = None
    source: str = "<dict>"

    @property
    def flavor(self) -> str:
        return self.hyperparams.flavor

    def lr_schedule(self) -> Schedule:
        """The schedule, or the constant learning rate as a `Constant` schedule."""
        return self.schedule if self.schedule is not None else Constant(self.hyperparams.lr)

    def arguments(self) -> dict[str, Any]:
        """Every hyperparameter except `flavor` and `lr`, as keyword arguments for an adapter."""
        names = [f for f in Hyperparams.field_names() if f not in ("flavor", "lr")]
        return {f: getattr(self.hyperparams, f) for f in names}

    def to_toml(self) -> str:
        """The file that reads back as this config (every field written out)."""
        lines = [f"flavor = {_toml(self.flavor)}"]
        for name in Hyperparams.field_names():
            if name == "flavor" or (name == "lr" and self.schedule is not None):
                continue
            lines.append(f"{name} = {_toml(getattr(self.hyperparams, name), name)}")
        if self.schedule is not None:
            kind = next(k for k, cls in SCHEDULES.items() if isinstance(self.schedule, cls))
            lines += ["", "[schedule]", f"kind = {_toml(kind)}"]
            lines += [f"{f.name} = {_toml(getattr(self.schedule, f.name))}"
                      for f in dataclasses.fields(self.schedule)]
        return "\n".join(lines) + "\n"


def _toml(value: Any, name: str = "") -> str:
    """One TOML value: the types a config holds (JSON strings are valid TOML basic strings)."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Exclude):
        if value.predicate is not None:
            raise ConfigError("<to_toml>", name, value, "a rule without a callable (a file cannot hold one)")
        return (f"{{ ndims = {_toml(sorted(value.ndims))}, patterns = {_toml(list(value.patterns))}, "
                f"names = {_toml(sorted(value.names))} }}")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"{name}: {value!r} has no TOML form")


# Reading -----------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike[str]) -> Config:
    """Reads and checks a TOML hyperparameter file."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(source, "file", source, "a readable TOML file",
                          detail=f"cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "file", source, "valid TOML", detail=f"is not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition; tomllib lets this through
        detail = f"is not UTF-8 text (byte {exc.start}: {exc.reason}): save it as UTF-8"
        raise ConfigError(source, "file", source, "UTF-8 text", detail=detail) from None
    return config_from_dict(data, source)


def loads_config(text: str, source: str = "<string>") -> Config:
    """Reads and checks hyperparameters from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "file", source, "valid TOML", detail=f"is not valid TOML ({exc})") from None
    return config_from_dict(data, source)


def default_config() -> Config:
    """The shipped MLPerf ResNet-50 hyperparameters (`lars/configs/mlperf_resnet50.toml`)."""
    file = resources.files("lars").joinpath("configs").joinpath(DEFAULT_CONFIG)
    return loads_config(file.read_text(encoding="utf-8"), f"lars/configs/{DEFAULT_CONFIG}")


def as_config(config: Config | str | os.PathLike[str]) -> Config:
    """A `Config` as it is, or the file at a path read (what every adapter's constructor takes)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError(f"config={config!r} is invalid: expected a lars Config or the path of a TOML file")


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Checks a parsed file (or any mapping of the same keys) and builds the `Config`."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "file", data, "a table of hyperparameters")
    _check_keys(source, data, (*Hyperparams.field_names(), "schedule"), "")
    values = {k: v for k, v in data.items() if k != "schedule"}
    flavor = values.pop("flavor", DEFAULT_FLAVOR)
    schedule = _schedule(source, data["schedule"]) if "schedule" in data else None
    if schedule is not None:
        if "lr" in values:
            raise ConfigError(source, "lr", values["lr"], "no top-level lr when a [schedule] table is given "
                              "(the schedule gives every step's lr)")
        values["lr"] = schedule(0)
    for name in NONE_ALLOWED:
        if values.get(name) == "none":
            values[name] = None
    for name in RULES:
        if name in values:
            values[name] = _rule(source, name, values[name])
    try:
        hp = hyperparams(flavor, **values)
    except HyperparameterError as exc:
        raise ConfigError(source, exc.field, exc.value, _allowed(exc)) from None
    return Config(hp, schedule, source)


def _allowed(exc: HyperparameterError) -> str:
    """The core's allowed values, in the file's terms, with the closest one for a misspelt name."""
    if exc.field in NONE_ALLOWED:
        return exc.allowed.replace("None", '"none"')
    names = list(FLAVORS) if exc.field == "flavor" else list(AXES.get(exc.field, ()))
    close = difflib.get_close_matches(exc.value, names, n=1) if isinstance(exc.value, str) else []
    return exc.allowed + (f" (did you mean {close[0]!r}?)" if close else "")


def _check_keys(source: str, data: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(source, prefix + str(key), data[key],
                              f"a known key{hint}: " + ", ".join(known))


def _schedule(source: str, table: Any) -> Schedule:
    if not isinstance(table, Mapping):
        raise ConfigError(source, "schedule", table, "a [schedule] table whose kind is one of "
                          + ", ".join(SCHEDULES))
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in SCHEDULES:
        raise ConfigError(source, "schedule.kind", kind, "one of " + ", ".join(repr(k) for k in SCHEDULES))
    cls = SCHEDULES[kind]
    fields = dataclasses.fields(cls)
    _check_keys(source, table, ("kind", *(f.name for f in fields)), "schedule.")
    missing = [f.name for f in fields if f.name not in table and f.default is dataclasses.MISSING]
    if missing:
        raise ConfigError(source, f"schedule.{missing[0]}", None,
                          f"a value: a {kind!r} schedule needs " + ", ".join(missing))
    try:
        return cls(**{k: v for k, v in table.items() if k != "kind"})
    except HyperparameterError as exc:
        raise ConfigError(source, f"schedule.{exc.field}", exc.value, exc.allowed) from None


def _rule(source: str, name: str, value: Any) -> Exclude:
    """An exclusion rule as a file writes it: a shorthand string or list, false, or a table."""
    try:
        if isinstance(value, Mapping):
            return _rule_table(source, name, value)
        if value is False or isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return as_exclude(value, name)
    except ExclusionError as exc:
        detail = f"{name}={value!r} is invalid: {exc}"
        raise ConfigError(source, name, value, RULE_FORMS, detail=detail) from None
    except ConfigError:
        raise
    except HyperparameterError as exc:  # a malformed shorthand ('ndim<=-1'): the core's message
        raise ConfigError(source, name, value, exc.allowed) from None
    raise ConfigError(source, name, value, RULE_FORMS)


def _rule_table(source: str, name: str, table: Mapping[str, Any]) -> Exclude:
    _check_keys(source, table, RULE_KEYS, name + ".")
    kinds = {"ndims": (int, "a list of ints >= 0"), "patterns": (str, "a list of regexes"),
             "names": (str, "a list of names")}
    for key, items in table.items():
        kind, allowed = kinds[key]
        if not isinstance(items, list) or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in items):
            raise ConfigError(source, f"{name}.{key}", items, allowed)
    return Exclude(ndims=frozenset(table.get("ndims", ())), patterns=tuple(table.get("patterns", ())),
                   names=frozenset(table.get("names", ())))
