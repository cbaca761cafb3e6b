"""One nox session per environment. `python3 tools/nox.py` runs the default ones.

lint       ruff over the whole tree; the import layering (import-linter)
typecheck  mypy --strict over the package
core       the core's tests, the conformance suite with the reference driver and its
           meta-tests, and with the compiled rule on NumPy (`rule`), on the newest NumPy and on
           NumPy 1.23.5 (MXNet's pin)
docs       mkdocs build --strict; the parity report's first screen in headless Chromium
parity     the parity report (the README's main job)
torch, jax, tensorflow, keras_jax, mxnet
           each adapter's tests and the conformance suite, in its framework's environment
paddle     PaddlePaddle's LARS beside its flavor (a peer library without an adapter of ours)
migration  a saved state moved between every pair of backends, each in its session's environment;
           `lars compare` of every pair's recorded runs; the one API shape (docs/api.md's
           programs run, saved and resumed in a fresh process)
bench      the benchmark: every backend's step beside its framework's anchors (bench/run.py)
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "core", "docs", "torch", "jax", "tensorflow", "keras_jax",
                        "mxnet", "paddle", "migration"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
#: Each backend's own tests run in its session, with its framework installed.
BACKEND_TESTS = ["--ignore=tests/torch", "--ignore=tests/jax", "--ignore=tests/keras",
                 "--ignore=tests/keras_jax", "--ignore=tests/mxnet",
                 # every pair of backends, and every backend's API: the `migration` session, with
                 # each backend's environment
                 "--ignore=tests/test_migration.py", "--ignore=tests/test_api.py",
                 "--ignore=tests/test_compare_pairs.py",
                 # the report's page in a browser: the docs session, which installs Chromium
                 "--ignore=tests/test_report_screen.py"]
TORCH = ["torch==2.13.0", "pytorch-optimizer==4.1.0", "scikit-learn"]
#: The libraries `lars.compat`'s torch drop-ins replace, for tests/torch/test_compat_dropins.py: their
#: LARS files import only torch and load by path; their packages' dependencies (torchvision,
#: pytorch-lightning, ...) are not wanted.
TORCH_DROPINS = ["timm==1.0.31", "pylocron==0.3.0", "lightning-bolts==0.7.0", "lightly==1.6.0"]
#: Peer libraries whose LARS is one file importing only torch (mmpretrain: a registry, stubbed;
#: fastai: fastcore's names), loaded by path (`lars.conformance.peers.load_file`), and tinygrad (no
#: dependencies).
TORCH_PEERS = ["mmpretrain==1.2.0", "solo-learn==1.0.2", "tinygrad==0.14.0", "fastai==2.8.12",
               "fastcore==2.2.41", "lightly==1.6.0"]
#: Debian's clang: tinygrad's CPU device compiles its kernels with it.
CLANG = ["clang"]
JAX = ["jax==0.10.2", "optax==0.2.8", "scikit-learn"]
TENSORFLOW = ["tensorflow-cpu==2.21.0", "keras==3.15.1", "scikit-learn", "gin-config", "pyyaml"]
#: TF Model Garden's LARS: its own dependencies would pull the full tensorflow package.
TF_MODELS = ["tf-models-official==2.20.0", "tf-keras==2.21.0"]
MXNET = ["mxnet==1.9.1", "numpy==1.23.5", "scikit-learn"]
#: PaddlePaddle's LARS, a peer with no adapter of ours: its own session (CPU build).
PADDLE = ["paddlepaddle==3.3.1"]
MATPLOTLIB = "matplotlib==3.11.2"
SELENIUM = "selenium==4.51.0"
#: Debian's Chromium and its chromedriver: the report's first screen is checked in a real browser.
CHROMIUM = ["chromium", "chromium-driver"]
RUFF = "ruff==0.17.6"
IMPORT_LINTER = "import-linter==2.17"
MYPY = "mypy==2.4.1"


def agreement(session: nox.Session, peer: str, training: str, env: dict[str, str] | None = None) -> None:
    """The shared checks of the parity report for one backend session: the installed peer
    library in its flavor (`conformance/test_peer.py`) and the digits training problem on the
    backend (`conformance/test_training.py`)."""
    session.run("pytest", "conformance/test_peer.py", "conformance/test_training.py", "--peer", peer,
                "--training", training, "-q", "-p", "no:cacheprovider", env=env)


def debian(session: nox.Session, *packages: str, binary: str) -> None:
    """Installs Debian `packages` unless `binary` is already there."""
    if not Path(binary).exists():
        session.run("apt-get", "update", "-q", external=True)
        session.run("apt-get", "install", "-y", "-q", *packages, external=True)


def torch_peers(session: nox.Session) -> None:
    """The torch session's peer libraries besides pytorch_optimizer, and what they need."""
    session.install("--no-deps", *TORCH_PEERS)
    debian(session, *CLANG, binary="/usr/bin/clang")


def conformance(session: nox.Session, driver: str, env: dict[str, str] | None = None,
                cases: str = "all") -> None:
    """The shared conformance suite with one driver, the table of invalid inputs and the fuzz
    test, on both cores: one worker per core, each with one thread (the cases' tensors are tiny; two threads
    per worker only wait on each other). `cases="kernel"`: a backend's second path, on the
    cases that take every branch of its kernels."""
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
    tests = ("conformance/test_conformance.py", "conformance/test_errors.py", "conformance/test_fuzz.py")
    session.run("pytest", *tests, "--driver", driver, "--cases", cases, "-q",
                "-p", "no:cacheprovider", "-n", "2", env={**threads, **(env or {})})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, and the layering contracts of pyproject.toml (`lint-imports`)."""
    session.install(RUFF, IMPORT_LINTER)
    session.run("ruff", "check", ".")
    session.run("lint-imports", env={"PYTHONPATH": os.getcwd()})


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install(MYPY, *TORCH, *JAX, "-e", ".[test]")
    session.run("mypy")


@nox.session(python=PYTHON)
@nox.parametrize("numpy", ["1.23.5", "2"])
def core(session: nox.Session, numpy: str) -> None:
    spec = f"numpy=={numpy}" if numpy.count(".") == 2 else f"numpy>={numpy}"
    session.install("-e", ".[test]", spec)
    session.run("python", "-c", "import numpy; print('numpy', numpy.__version__)")
    session.run("pytest", "tests", "conformance", "--driver", "reference", "-q",
                "-p", "no:cacheprovider", "-n", "2", *BACKEND_TESTS, *session.posargs)
    conformance(session, "rule")  # the compiled rule on NumPy: its algebra, before any framework


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """mkdocs build --strict, and the parity report's first screen in headless Chromium
    (tests/test_report_screen.py; the screenshot in reports/screens/)."""
    # PyTorch and scikit-learn: the parity page's plots come from a real run at build time.
    session.install("torch==2.13.0", SELENIUM, "-e", ".[docs,report,test]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site",
                env={"NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": os.getcwd()})
    debian(session, *CHROMIUM, binary="/usr/bin/chromium")
    debian(session, *CHROMIUM, binary="/usr/bin/chromedriver")
    session.run("pytest", "tests/test_report_screen.py", "-q", "-p", "no:cacheprovider")


@nox.session(python=PYTHON)
def parity_main(session: nox.Session) -> None:
    """The parity report's part from PyTorch, JAX and Keras (TensorFlow), in one environment."""
    session.install(*TORCH, *JAX, *TENSORFLOW, "-e", ".")
    session.install("--no-deps", *TF_MODELS)
    torch_peers(session)
    session.run("lars", "parity", "--peers", "--out", "reports/parts/main", *session.posargs,
                env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"})


@nox.session(python=PYTHON)
def parity_mxnet(session: nox.Session) -> None:
    """The parity report's part from MXNet, in its own environment (NumPy 1.23.5)."""
    session.install(*MXNET, "-e", ".")
    session.run("lars", "parity", "--peers", "--out", "reports/parts/mxnet", *session.posargs)


@nox.session(python=PYTHON)
def migration(session: nox.Session) -> None:
    """State migration between every ordered pair of backends (tests/test_migration.py) and
    `lars compare` of every pair's recorded runs (tests/test_compare_pairs.py), each backend run
    by a worker in its own session's environment: the torch, jax, tensorflow and
    mxnet sessions run first (they do in the default order), so nothing is installed twice."""
    envs = Path(session.virtualenv.location).parent
    pythons = {"torch": "torch", "jax": "jax", "keras": "tensorflow", "mxnet": "mxnet"}
    env = {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
           "LARS_EXPECT_BACKENDS": ",".join(pythons)}
    for backend, name in pythons.items():
        python = envs / name / "bin" / "python"
        if not python.exists():
            session.error(f"the {name} session's environment is missing: run `python3 tools/nox.py -s {name}`"
                          " first (the default run does)")
        env[f"LARS_{backend.upper()}_PYTHON"] = str(python)
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_migration.py", "tests/test_migrate_cli.py", "tests/test_api.py",
                "tests/test_compare_pairs.py", "-q",
                "-p", "no:cacheprovider", "-n", "2", *session.posargs, env=env)


@nox.session(python=PYTHON)
def parity_paddle(session: nox.Session) -> None:
    """The parity report's part from PaddlePaddle's LARS, in its own environment: imported after
    TensorFlow in one process, PaddlePaddle 3.3.1 crashes it."""
    session.install(*PADDLE, "-e", ".")
    session.run("lars", "parity", "--peers", "--flavor", "paddle_cpu", "--no-training",
                "--out", "reports/parts/paddle", *session.posargs)


@nox.session(python=PYTHON, requires=["parity_main", "parity_mxnet", "parity_paddle"])
def parity(session: nox.Session) -> None:
    """The main job: every backend in its own environment, merged into one report."""
    session.install("-e", ".[report]")
    session.run("lars", "merge", "reports/parts/main", "reports/parts/mxnet", "reports/parts/paddle",
                "--out", "reports")


@nox.session(python=PYTHON)
def bench_main(session: nox.Session) -> None:
    """The benchmark's parts from PyTorch, JAX and Keras (TensorFlow), in one environment.

    Each backend runs in its own process; `nox -s bench -- --quick` is a smoke run of every part."""
    session.install(*TORCH, *JAX, *TENSORFLOW, "-e", ".")
    session.install("--no-deps", *TF_MODELS)
    session.run("python", "-m", "bench.run", "--backend", "torch", "jax", "keras",
                "--parts", "bench/results/parts/main", *session.posargs,
                env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"})


@nox.session(python=PYTHON)
def bench_mxnet(session: nox.Session) -> None:
    """The benchmark's part from MXNet, in its own environment (NumPy 1.23.5)."""
    session.install(*MXNET, "-e", ".")
    session.run("python", "-m", "bench.run", "--backend", "mxnet", "--parts", "bench/results/parts/mxnet",
                *session.posargs)


@nox.session(python=PYTHON, requires=["bench_main", "bench_mxnet"])
def bench(session: nox.Session) -> None:
    """The benchmark: the parts merged into one table, bench/results/bench.json and the plots."""
    session.install(MATPLOTLIB, "-e", ".")
    session.run("python", "-m", "bench.merge", "bench/results/parts/main", "bench/results/parts/mxnet",
                "--out", "bench/results")


@nox.session(python=PYTHON)
def torch(session: nox.Session) -> None:
    """The PyTorch adapter's tests and the conformance suite on its three paths."""
    session.install(*TORCH, "-e", ".[test]")
    session.install("--no-deps", *TORCH_DROPINS)
    session.run("pytest", "tests/torch", "-q", "-p", "no:cacheprovider", "-n", "2", *session.posargs)
    conformance(session, "torch")
    for driver in ("torch-foreach", "torch-single"):
        conformance(session, driver, cases="kernel")
    agreement(session, "pytorch_optimizer.LARS", "torch")
    torch_peers(session)
    peers = ("mmpretrain.LARS", "solo_learn.LARS", "lightly.LARS", "fastai.Larc", "tinygrad.LARS",
             "tinygrad.LARS(classic=False)")
    session.run("pytest", "conformance/test_peer.py", *(f"--peer={p}" for p in peers), "-q",
                "-p", "no:cacheprovider", "-n", "2")


@nox.session(python=PYTHON)
def jax(session: nox.Session) -> None:
    """The JAX adapter's tests (8 virtual CPU devices for sharding) and the conformance suite."""
    session.install(*JAX, "-e", ".[test]")
    session.run("pytest", "tests/jax", "-q", "-p", "no:cacheprovider", "-n", "2", *session.posargs,
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    conformance(session, "jax")
    agreement(session, "optax.lars", "jax")


@nox.session(python=PYTHON)
def tensorflow(session: nox.Session) -> None:
    """The Keras adapter on TensorFlow: its tests, TF Model Garden's LARS, the conformance suite."""
    session.install(*TENSORFLOW, "-e", ".[test]")
    session.install("--no-deps", *TF_MODELS)
    env = {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    session.run("pytest", "tests/keras", "-q", "-p", "no:cacheprovider", "-n", "2", *session.posargs, env=env)
    conformance(session, "keras", env=env)
    agreement(session, "tf_models.LARS", "keras", env=env)


@nox.session(python=PYTHON)
def keras_jax(session: nox.Session) -> None:
    """The Keras adapter on Keras's JAX backend: keras.distribution, the conformance suite on the
    cases that take each branch of a kernel."""
    session.install("keras==3.15.1", *JAX, "-e", ".[test]")
    session.run("pytest", "tests/keras_jax", "-q", "-p", "no:cacheprovider", "-n", "2", *session.posargs,
                env={"KERAS_BACKEND": "jax"})
    # The Keras adapter's second path (its `keras.ops` kernels on JAX; the tensorflow session
    # runs every case through the same adapter): the cases that take each branch of a kernel.
    conformance(session, "keras", env={"KERAS_BACKEND": "jax"}, cases="kernel")


@nox.session(python=PYTHON)
def mxnet(session: nox.Session) -> None:
    """The MXNet 1.9.1 adapter (NumPy 1.23.5): its tests and the conformance suite, both paths."""
    session.install(*MXNET, "-e", ".[test]")
    session.run("pytest", "tests/mxnet", "-q", "-p", "no:cacheprovider", "-n", "2", *session.posargs)
    conformance(session, "mxnet")
    conformance(session, "mxnet-single", cases="kernel")
    agreement(session, "mxnet.LARS", "mxnet")


@nox.session(python=PYTHON)
def paddle(session: nox.Session) -> None:
    """PaddlePaddle's LarsMomentumOptimizer (its CPU kernel) beside the `paddle_cpu` flavor."""
    session.install(*PADDLE, "-e", ".[test]")
    session.run("pytest", "conformance/test_peer.py", "--peer", "paddle.LarsMomentumOptimizer", "-q",
                "-p", "no:cacheprovider")
