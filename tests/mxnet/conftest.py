"""MXNet 1.9.1 on NumPy 1.23 and current SciPy warns on every array conversion (deprecated
`scipy.sparse.csr`, `distutils` versions): silence those in these tests, keep the rest."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/mxnet/" in item.nodeid:
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
