"""Drop-in constructors: the exact signature and defaults of another library's LARS, built as
this package's optimizer in the flavor that reproduces it, so that migrating is one import line.

Each module imports its framework when imported itself; this package imports nothing.

timm               `Lars`: timm.optim.Lars (timm 1.0.31) -> `lars.backends.torch.LARS`, flavor "timm"
pytorch_optimizer  `LARS`: pytorch_optimizer.LARS 4.1.0 -> flavor "pytorch_optimizer"
holocron           `LARS`: holocron.optim.LARS (pylocron 0.3.0) -> flavor "holocron"
lightning_bolts    `LARS`: pl_bolts.optimizers.LARS 0.7.0 (= lightly.utils.lars.LARS) -> flavor
                   "lightning_bolts"
optax              optax.lars -> flavor "optax"
tf_models          TF Model Garden's LARS -> flavor "tf_models"
mxnet              mxnet.optimizer.LARS 1.9.1 -> flavor "mxnet"

An argument of the library that the core cannot express exactly raises
`lars.HyperparameterError` naming that argument; nothing is silently ignored.
"""
