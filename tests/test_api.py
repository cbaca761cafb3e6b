"""One API shape in four frameworks (`docs/api.md`): every adapter exposes the same parts under the
same names, and each page's program, run as it is written there, trains three steps, saves, and in
a fresh process resumes and trains three more, ending bit for bit where six uninterrupted steps end.

Each framework runs in its own Python (`LARS_<FRAMEWORK>_PYTHON`, as nox's `migration` session sets
them; MXNet needs NumPy 1.23), or here if it is installed here. A framework in neither fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "api.md"
HEADINGS = {"torch": "PyTorch", "jax": "JAX / optax", "keras": "Keras 3", "mxnet": "MXNet Gluon"}
#: Where each part lives, per framework: (an expression to evaluate after the page's program, names).
SHAPE = {
    "torch": [("LARS", ["from_file", "save", "load", "hyperparameters", "trust_ratios", "set_lr",
                        "clear_state"])],
    "jax": [("lars.backends.jax", ["from_file"]),
            ("lars_optax(0.1)", ["save", "load", "hyperparameters", "trust_ratios", "set_lr",
                                 "clear_state"])],
    "keras": [("LARS(0.1)", ["from_file", "save", "load", "hyperparameters", "trust_ratios", "set_lr",
                             "clear_state"])],
    "mxnet": [("lars.backends.mxnet", ["save", "load", "clear_state"]),
              ("lars.backends.mxnet.OneLARS", ["from_file", "hyperparameters", "trust_ratios", "set_lr"])],
}
SIGNATURES = {"torch": "LARS", "jax": "lars_optax", "keras": "LARS", "mxnet": "lars.backends.mxnet.OneLARS"}


def program(framework: str) -> str:
    """The page's code block under the framework's heading."""
    text = PAGE.read_text()
    section = text.split(f"### {HEADINGS[framework]}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)


def python_for(framework: str) -> str:
    if importlib.util.find_spec(framework) is not None and importlib.util.find_spec(framework).origin:
        return sys.executable
    python = os.environ.get(f"LARS_{framework.upper()}_PYTHON")
    if not python:
        pytest.fail(f"{framework} is not installed here and LARS_{framework.upper()}_PYTHON is not set")
    return python


def run(framework: str, code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([python_for(framework), "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{framework}:\n{done.stdout}\n{done.stderr}"


def train(framework: str, steps: int, folder: Path, resume: bool, out: Path) -> dict[str, np.ndarray]:
    """The page's `train` in a fresh process; its returned weights."""
    call = f"""
        import numpy as np
        from pathlib import Path
        weights = train({steps}, Path({str(folder)!r}), {resume})
        np.savez({str(out)!r}, **{{n.replace("/", "|"): w for n, w in weights.items()}})
    """
    run(framework, program(framework) + textwrap.dedent(call))
    with np.load(out) as saved:
        return {n: saved[n] for n in saved.files}


@pytest.mark.parametrize("framework", list(HEADINGS))
def test_save_then_load_in_a_fresh_process_continues_bit_for_bit(framework, tmp_path):
    (tmp_path / "resumed").mkdir()
    (tmp_path / "whole").mkdir()
    first = train(framework, 3, tmp_path / "resumed", False, tmp_path / "first.npz")
    resumed = train(framework, 3, tmp_path / "resumed", True, tmp_path / "resumed.npz")
    whole = train(framework, 6, tmp_path / "whole", False, tmp_path / "whole.npz")
    assert set(resumed) == set(whole) and len(whole) == 2
    for name in whole:
        assert not np.array_equal(first[name], whole[name]), name  # the last three steps moved it
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


@pytest.mark.parametrize("framework", list(HEADINGS))
def test_every_adapter_has_the_same_parts(framework):
    checks = [f"assert hasattr({where}, {name!r}), ({where!r}, {name!r})"
              for where, names in SHAPE[framework] for name in names]
    signature = f"""
        import inspect
        parameters = list(inspect.signature({SIGNATURES[framework]}).parameters)
        start = 1 if {framework!r} == "torch" else 0  # PyTorch takes the parameters first
        assert parameters[start:start + 2] in (["lr", "flavor"], ["learning_rate", "flavor"]), parameters
        assert "hyperparameters" in parameters, parameters
    """
    run(framework, program(framework) + f"\nimport lars.backends.{framework}\n"
        + "\n".join(checks) + textwrap.dedent(signature))


def test_no_user_facing_page_names_a_private_attribute():
    pages = [p for p in (ROOT / "docs").rglob("*.md")] + [ROOT / "README.md"]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in pages
             for m in re.finditer(r"[\w.]*[\w)\]]\._[a-z]\w*", p.read_text())]
    assert not found, found
