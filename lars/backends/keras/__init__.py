"""The Keras 3 adapter on Keras's TensorFlow and JAX backends (importing it imports keras)."""
from lars.backends.keras.optimizer import LARS as LARS
from lars.backends.keras.optimizer import CoreSchedule as CoreSchedule
from lars.backends.keras.trace import TraceCallback as TraceCallback
