"""lars: one definition of the LARS optimizer for PyTorch, Keras, JAX/optax and MXNet.

`import lars` needs only NumPy; a backend is imported when asked for
(`import lars.backends.torch`).
"""

from lars.core import (
    AXES,
    DEFAULT_FLAVOR,
    FLAVORS,
    Config,
    ConfigError,
    DtypeError,
    Exclude,
    ExclusionError,
    HyperparameterError,
    Hyperparams,
    LarsError,
    ShapeError,
    ShardingError,
    State,
    StateError,
    config_from_dict,
    default_config,
    hyperparams,
    load_config,
    load_state,
    loads_config,
    plan,
    reference,
    save_state,
    schedules,
)

__version__ = "0.1.0"

__all__ = [
    "AXES", "DEFAULT_FLAVOR", "FLAVORS", "Config", "ConfigError", "DtypeError", "Exclude", "ExclusionError",
    "HyperparameterError", "Hyperparams", "LarsError", "ShapeError", "ShardingError", "State", "StateError",
    "__version__", "config_from_dict", "default_config", "hyperparams", "load_config", "load_state",
    "loads_config", "plan", "reference", "save_state", "schedules",
]
