"""The JAX internals `lars.backends.jax._compat` reads (checked on jax 0.10.2): this fails loudly if
JAX renames or drops them, instead of the sharding checks silently checking nothing."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lars.backends.jax._compat import varying


def test_inside_shard_map_jax_says_which_axes_an_array_varies_over():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    seen = {}

    def body(split, replicated):
        seen["split"], seen["replicated"] = varying(split), varying(replicated)
        seen["index"] = varying(jax.lax.axis_index("data"))
        return split

    jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data"))(jnp.ones(8), jnp.ones(3))
    assert seen == {"split": {"data"}, "replicated": frozenset(), "index": {"data"}}


def test_outside_shard_map_nothing_varies():
    assert varying(jnp.ones(3)) == frozenset()
