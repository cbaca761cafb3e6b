"""The pure-math core: NumPy only, no framework import, ever."""

from lars.core import reference, rule, schedules
from lars.core.config import Config, config_from_dict, default_config, load_config, loads_config
from lars.core.errors import (
    ConfigError,
    DtypeError,
    ExclusionError,
    HyperparameterError,
    LarsError,
    ShapeError,
    ShardingError,
    StateError,
)
from lars.core.flavors import DEFAULT_FLAVOR, FLAVORS, Flavor, get_flavor, hyperparams, resolve
from lars.core.hyperparams import AXES, Hyperparams
from lars.core.policy import Exclude, TensorPlan, as_exclude, plan
from lars.core.reference import StepResult
from lars.core.state import SavedState, State, load_state, save_state

__all__ = [
    "AXES", "DEFAULT_FLAVOR", "FLAVORS", "Config", "ConfigError", "DtypeError", "Exclude", "ExclusionError",
    "Flavor",
    "HyperparameterError", "Hyperparams", "LarsError", "SavedState", "ShapeError", "ShardingError", "State",
    "StateError", "StepResult", "TensorPlan", "as_exclude", "config_from_dict", "default_config",
    "get_flavor", "hyperparams", "load_config", "load_state", "loads_config", "plan", "reference",
    "resolve", "rule", "save_state", "schedules",
]
