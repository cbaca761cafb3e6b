"""JAX's undocumented attributes, in one place; `tests/jax/test_jax_compat.py` fails if they change."""

import jax


def varying(x: object) -> frozenset[str]:
    """The manual mesh axes JAX knows `x` to vary over inside `jax.shard_map` with `check_vma`
    (empty where it tracks none): `jax.typeof(x).manual_axis_type.varying` (checked on jax
    0.10.2), or the `vma` of earlier releases (not installed here)."""
    aval = jax.typeof(x) if hasattr(jax, "typeof") else None
    kind = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(kind, "varying", None) or getattr(aval, "vma", None) or ())
