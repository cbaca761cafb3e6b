"""`lars compare` across frameworks (issue 19): the digits MLP trained by every backend with the
shipped MLPerf file and recorded by its own recorder (`python -m lars.parity.traces`), each
backend in its own environment (LARS_<BACKEND>_PYTHON, as tests/test_migration.py); every pair of
traces agrees, and a port's mistakes in one framework are found at the first step with their
cause. Backends not installed and not given are skipped, unless LARS_EXPECT_BACKENDS lists them."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lars.core.trace import load_trace
from lars.parity.compare import compare

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("numpy", "torch", "jax", "keras", "mxnet")
MODULES = {"torch": "torch", "jax": "jax", "keras": "keras", "mxnet": "mxnet"}
STEPS = 30


def installed(module: str) -> bool:
    """A real install: pytest puts tests/ on sys.path, where tests/torch passes for a namespace package."""
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin is not None


def python_for(backend: str) -> str | None:
    if backend == "numpy" or installed(MODULES[backend]):
        return sys.executable
    return os.environ.get(f"LARS_{backend.upper()}_PYTHON")


def record(backend: str, out: Path, *options: str) -> Path:
    python = python_for(backend)
    if python is None:
        variable = f"LARS_{backend.upper()}_PYTHON"
        if backend in os.environ.get("LARS_EXPECT_BACKENDS", "").split(","):
            pytest.fail(f"{backend} is expected but neither installed nor given ({variable})")
        pytest.skip(f"{backend} is not installed here; set {variable}")
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    command = [python, "-m", "lars.parity.traces", backend, str(out), "--steps", str(STEPS), *options]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, f"{backend} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pairs")
    return {b: folder / f"{b}.npz" for b in BACKENDS}


@pytest.fixture(scope="module")
def recorded(traces: dict[str, Path]) -> dict[str, Path]:
    out = {}
    for backend, path in traces.items():
        if python_for(backend) is not None:
            out[backend] = record(backend, path)
    return out


PAIRS = list(itertools.combinations(BACKENDS, 2))


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_every_pair_of_frameworks_agrees(recorded: dict[str, Path], pair: tuple[str, str]) -> None:
    missing = [b for b in pair if b not in recorded]
    for b in missing:
        record(b, Path(os.devnull))  # skips, or fails when expected
    a, b = (load_trace(recorded[x]) for x in pair)
    result = compare(a, b, label_a=pair[0], label_b=pair[1])
    assert result.agree, result.divergence
    assert len(result.steps) == STEPS and len(result.tensors) == 6


@pytest.mark.parametrize("mistake,tensor,cause", [
    (("--exclude-nothing",), "dense1/bias", "exclusions"),
    (("--flavor", "optax"), "dense1/kernel", "settings"),
    (("--init-seed", "1"), "dense1/kernel", "initialisation"),
])
def test_a_ports_mistake_is_found_at_the_first_step(recorded: dict[str, Path], tmp_path: Path,
                                                     mistake: tuple[str, ...], tensor: str,
                                                     cause: str) -> None:
    """torch as the original, JAX (or the first other backend here) as the port with a mistake."""
    port = next(b for b in ("jax", "keras", "mxnet", "numpy") if python_for(b) is not None)
    original = recorded.get("torch") or recorded["numpy"]
    wrong = record(port, tmp_path / "port.npz", *mistake)
    d = compare(load_trace(original), load_trace(wrong)).divergence
    assert d is not None and (d["step"], d["tensor"], d["cause"]) == (0, tensor, cause), d
