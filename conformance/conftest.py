"""The shared conformance suite: `pytest conformance --driver NAME` checks one backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--driver",
        default=os.environ.get("LARS_DRIVER", "reference"),
        help="the conformance driver to check (reference, torch, jax, keras, mxnet)",
    )
    parser.addoption("--cases", default="all", choices=("all", "kernel"),
                     help="test_conformance.py: every case, or the cases that take each branch of a "
                          "kernel (lars.conformance.cases.KERNEL_CASES), for a second path of one backend")
    parser.addoption("--peer", action="append", default=[],
                     help="test_peer.py: an installed peer library to check in its flavor (optax.lars, ...); "
                          "repeat for several")
    parser.addoption("--training", default=None,
                     help="test_training.py: the backend that trains the report's digits problem")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`test_peer.py` and `test_training.py` check one named library or backend: they are
    collected only when it is named (`--peer`, `--training`), as each backend's session does."""
    option = {"test_peer.py": "--peer", "test_training.py": "--training"}.get(collection_path.name)
    return True if option and not config.getoption(option) else None


@pytest.fixture(scope="session")
def training_backend(request: pytest.FixtureRequest) -> str:
    name = request.config.getoption("--training")
    assert name, "give --training BACKEND (one of lars.parity.digits's backends)"
    return str(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_case" in metafunc.fixturenames:
        from lars.conformance.cases import CASES, KERNEL_CASES
        from lars.conformance.drivers import get_driver
        from lars.core.flavors import FLAVORS

        driver = get_driver(metafunc.config.getoption("--driver"))
        cases = KERNEL_CASES if metafunc.config.getoption("--cases") == "kernel" else tuple(CASES)
        params = [
            pytest.param((driver, flavor, case, dtype), id=f"{driver.name}-{flavor}-{case}-{dtype}")
            for dtype in driver.dtypes
            for flavor in FLAVORS
            for case in cases
        ]
        metafunc.parametrize("conformance_case", params)
    if "peer_name" in metafunc.fixturenames:
        metafunc.parametrize("peer_name", metafunc.config.getoption("--peer"), scope="module")


@pytest.fixture(scope="session")
def conformance_driver(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The driver named by `--driver`, checked to run here."""
    from lars.conformance.drivers import get_driver

    driver = get_driver(request.config.getoption("--driver"))
    reason = driver.unavailable_reason()
    assert reason is None, f"driver {driver.name} cannot run here: {reason}"
    return driver
