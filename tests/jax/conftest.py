"""float64 for the JAX tests (the reference comparisons are to 1e-12); float32 tests make float32
arrays explicitly. Set at import, before any array is made."""

import jax

jax.config.update("jax_enable_x64", True)
