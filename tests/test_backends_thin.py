"""The adapters translate; the core decides. No adapter names a variant axis in its code (its
docstrings may), so no flavor's rule can be re-decided in a backend's dialect, and the adapters
stay small (the rule lives once, in `lars.core.rule`)."""

from __future__ import annotations

import ast
from pathlib import Path

BACKENDS = Path(__file__).resolve().parent.parent / "lars" / "backends"
#: The fields of `Hyperparams` that choose a variant of the rule (not the framework's own
#: numbers, such as momentum or weight decay, nor the exclusion rules users pass natively).
AXES = ("trust_denominator", "momentum_style", "larc_clip", "larc_clip_on_fallback", "buffer_start",
        "zero_norm_rule", "clip_before_norms", "grad_clip_norm", "momentum_correction",
        "momentum_correction_tensors", "weight_decay_on_fallback", "adapt_requires_weight_decay",
        "trust_ratio_max", "decoupled_weight_decay")
#: Issue 15 aimed at 1,500 lines (from 2,686); the rewrite measured 1,817 (the rule gone, the
#: frameworks' plumbing left: sharding, low precision, state, schedules, their private APIs), and
#: issue 16's one API shape added ~100 (save/load/trust_ratios/set_lr/clear_state in JAX and
#: MXNet, Keras's save/load and weight-decay hook), issue 17's refusals before any change ~120
#: (state dicts, options, dtypes, shapes), and ~25 for float32's range (norms taken again, the
#: fused kernels' limits for tiny coefficients); issue 19's per-layer traces ~90 in Keras (the
#: callback, variables made only when recording, which `.keras` files leave out, JAX's state
#: between syncs), ~60 in MXNet (a step's update calls collected per device), ~30 in torch
#: (`record`, the step's values placed by name) and ~45 in JAX (`record=k` gated on the device,
#: a recorder fed by the state); issue 21's ~25 for JAX's bfloat16 (rounded on the bits, the
#: norms' conversion kept apart from the update's: XLA:CPU's conversions were most of the step),
#: and ~10 for each library's `Ops.widen` (a low-precision gradient prepared in float32 by the
#: core, where JAX had done it alone), ~20 for Keras's float16/bfloat16 variables stepped in
#: float32 with float32 buffers as in torch and JAX (they had stepped in their own dtype), and 13
#: for Keras's `TraceCallback` moved to a module of its own, ~30 for their update on TF as one XLA
#: kernel per variable, rounded to bfloat16 on the bits (TF's op-by-op passes made that step 2.8x
#: Keras SGD's), 3 for torch's `compute_dtype`, now asked of the core (`step_dtype`), ~14 for
#: that XLA kernel reading and assigning the variables itself, the gradient widened in it (the
#: copies of its outputs and of the float32 gradient were a fifth to a third of the step), with
#: keras.ops kept under a tf.distribute strategy, and 2 for why torch's chunks are 2^20. A guard
#: against the rule growing back.
LINES = 2471


def code_words(path: Path) -> set[str]:
    """Every identifier, attribute, keyword and string constant of a module, docstrings aside."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif (isinstance(node, ast.keyword) and node.arg) or isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.update(node.value.replace(".", " ").replace(",", " ").split())
    return words


def test_no_backend_names_a_variant_axis():
    found = {f"{path.relative_to(BACKENDS)}: {word}" for path in BACKENDS.rglob("*.py")
             for word in code_words(path) & set(AXES)}
    assert not found, f"variant axes decided in a backend: {sorted(found)}"


def test_the_backends_stay_small():
    lines = {str(p.relative_to(BACKENDS)): len(p.read_text().splitlines()) for p in BACKENDS.rglob("*.py")}
    assert sum(lines.values()) <= LINES, f"{sum(lines.values())} lines in lars/backends: {lines}"
