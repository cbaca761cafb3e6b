"""One thin adapter per framework, each imported only when asked for (`lars.backends.torch`,
`.jax`, `.keras`, `.mxnet`): `import lars` needs no framework."""
