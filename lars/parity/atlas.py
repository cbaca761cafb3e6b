"""The LARS atlas: every flavor against every other, on the digits MLP under one set of settings.

Each flavor's rule runs once on the NumPy reference (float64) with the same settings
(`lars.parity.diff.measurement`); each pair is then measured as `lars diff` measures it (the
relative divergence of the weights after the last step, the first step beyond rounding), beside
the fields of the rule on which the pair differs. Flavors with the same rule measure exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lars.core.config import Config
from lars.core.flavors import FLAVORS
from lars.parity.diff import aligned, compare, finite, measurement, rule_differences, side, training_run


def atlas(config: Config | None = None, steps: int = 100, flavors: Sequence[str] | None = None,
          ) -> dict[str, Any]:
    """The matrices of the atlas, JSON-able: `divergence[i][j]`, `first_step[i][j]` (None:
    identical up to rounding) and `axes[i][j]` (the fields of the rule that differ)."""
    names = list(FLAVORS if flavors is None else flavors)
    settings, lr_at, source = measurement(config, steps)
    rules = {n: side(n).hyperparams for n in names}
    runs = {n: training_run(aligned(rules[n], settings), steps, lr_at) for n in names}
    pairs = {(a, b): compare(runs[a], runs[b]) for i, a in enumerate(names) for b in names[i + 1:]}

    def cell(a: str, b: str, key: str) -> Any:
        if a == b:
            return 0.0 if key == "worst" else None
        return pairs[(a, b) if (a, b) in pairs else (b, a)][key]

    return {"flavors": names, "reproduces": {n: FLAVORS[n].reproduces for n in names},
            "measured_with": {"source": source, "steps": steps}, "problem": "digits MLP 64-64-32-10 (tanh)",
            "divergence": [[cell(a, b, "worst") for b in names] for a in names],
            "first_step": [[cell(a, b, "first_step") for b in names] for a in names],
            "axes": [[[d["field"] for d in rule_differences(rules[a], rules[b])] for b in names]
                     for a in names],
            "final_loss": dict(zip(names, finite([runs[n].losses[-1] for n in names]), strict=True))}
