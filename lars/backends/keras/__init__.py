"""The Keras 3 adapter (`LARS`, `CoreSchedule`) on Keras's TensorFlow and JAX backends; importing
it imports keras. See `lars.backends.keras.optimizer`."""

from lars.backends.keras.optimizer import LARS, CoreSchedule

__all__ = ["LARS", "CoreSchedule"]
