"""The shared conformance suite: `pytest conformance --driver NAME` checks one backend."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--driver",
        default=os.environ.get("LARS_DRIVER", "reference"),
        help="the conformance driver to check (reference, torch, jax, keras, mxnet)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_case" in metafunc.fixturenames:
        from lars.conformance.cases import CASES
        from lars.conformance.drivers import get_driver
        from lars.core.flavors import FLAVORS

        driver = get_driver(metafunc.config.getoption("--driver"))
        params = [
            pytest.param((driver, flavor, case, dtype), id=f"{driver.name}-{flavor}-{case}-{dtype}")
            for dtype in driver.dtypes
            for flavor in FLAVORS
            for case in CASES
        ]
        metafunc.parametrize("conformance_case", params)
