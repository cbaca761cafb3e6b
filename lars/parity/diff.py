"""`lars diff A B`: how two LARS rules differ, and by how much on the same settings.

A side is a flavor (a library's LARS) or a hyperparameter file. The rule is every field of
`lars.core.fields.RULE`; the settings (lr, momentum, weight decay, exclusions, gradient
processing) are what a training script passes, so the measurement runs both rules with the same
settings: those of `--config`, else of the side that is a file, else `COMMON`. Both run on the
NumPy reference, in float64, on the digits MLP (`lars.parity.digits`) and on the seeded
conformance cases. Identical rules give bit-identical runs; a rule that differs shows its first
step beyond `ROUNDING` and how far the weights end apart, layer by layer:

    divergence = ||w_A - w_B|| / max(||w_A||, ||w_B||)    in [0, 2]; 2 where a run blew up
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lars.conformance.cases import CASES, Case
from lars.core import reference
from lars.core.config import DEFAULT_CONFIG, Config, default_config, load_config
from lars.core.errors import HyperparameterError
from lars.core.fields import MATTERS, MEANINGS, RULE, SETTINGS
from lars.core.flavors import FLAVORS, hyperparams
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude, as_exclude
from lars.core.state import State

Array = np.ndarray
#: float64 runs whose weights lie closer than this (relative) are the same run up to rounding:
#: the conformance suite's float64 bound.
ROUNDING = 1e-12
#: The settings both rules run with when no side is a file and no `--config` is given.
COMMON: Mapping[str, Any] = {"momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 1e-4,
                             "exclude_from_weight_decay": Exclude(), "exclude_from_adaptation": Exclude(),
                             "maximize": False, "grad_rescale": 1.0, "grad_clip_value": None,
                             "grad_clip_norm": None}
DIVERGED = 2.0


@dataclass(frozen=True)
class Side:
    """One side of a diff: its label, its hyperparameters, and its file if it is one."""

    label: str
    hyperparams: Hyperparams
    config: Config | None = None

    @property
    def lr(self) -> float | str:
        """The side's own lr: a number, "required" (a flavor without a default) or its schedule."""
        if self.config is None:
            return "required" if FLAVORS[self.label].lr_required else self.hyperparams.lr
        if self.config.schedule is not None:
            kind = type(self.config.schedule).__name__
            return f"{kind} schedule to {getattr(self.config.schedule, 'base_lr', '?')}"
        return self.hyperparams.lr


def side(spec: str | Hyperparams) -> Side:
    """A flavor name, the path of a `lars.toml` (read and checked; the shipped file by its name,
    `mlperf_resnet50.toml`, where no such file is here), or a `Hyperparams` (its lr a setting)."""
    if isinstance(spec, Hyperparams):
        return Side(f"{spec.flavor} (custom)", spec, Config(spec, source="<Hyperparams>"))
    if spec in FLAVORS:
        return Side(spec, hyperparams(spec, lr=FLAVORS[spec].defaults.get("lr", 0.0)))
    if Path(spec).is_file() or (Path(spec).suffix == ".toml" and Path(spec).name != DEFAULT_CONFIG):
        return Side(spec, (config := load_config(spec)).hyperparams, config)
    if Path(spec).name == DEFAULT_CONFIG:
        return Side(spec, (config := default_config()).hyperparams, config)
    raise HyperparameterError("side", spec, "a flavor (" + ", ".join(FLAVORS) + ") or a lars.toml file")


def shown(value: Any) -> Any:
    """A field's value as JSON and as text show it."""
    return value.describe() if isinstance(value, Exclude) else value


def rule_differences(a: Hyperparams, b: Hyperparams) -> list[dict[str, Any]]:
    """Every field of the rule on which `a` and `b` differ, with what it means and when it matters."""
    return [{"field": f, "a": shown(getattr(a, f)), "b": shown(getattr(b, f)), "meaning": MEANINGS[f],
             "matters": MATTERS[f]} for f in RULE if getattr(a, f) != getattr(b, f)]


def setting_differences(a: Side, b: Side) -> list[dict[str, Any]]:
    """The settings whose defaults differ."""
    def value(s: Side, f: str) -> Any:
        return s.lr if f == "lr" else shown(getattr(s.hyperparams, f))
    return [{"field": f, "a": value(a, f), "b": value(b, f)} for f in SETTINGS if value(a, f) != value(b, f)]


def aligned(rule: Hyperparams, settings: Mapping[str, Any]) -> Hyperparams:
    """`rule`'s rule with `settings` (the same for both sides of a measurement)."""
    return rule.replace(**{f: as_exclude(v, f) if f.startswith("exclude_") else v
                           for f, v in settings.items() if f in SETTINGS})


def relative_divergence(a: Array, b: Array) -> float:
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return DIVERGED
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)))
    return float(np.linalg.norm(a - b)) / scale if scale > 0 else 0.0


@dataclass
class Run:
    """One rule's run: per step, the weights after it, the trust ratios and (if any) the loss."""

    params: list[dict[str, Array]] = field(default_factory=list)
    trust_ratios: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def run(hp: Hyperparams, params: Mapping[str, Array], steps: int, lr_at: Callable[[int], float],
        gradients: Callable[[int, Mapping[str, Array]], tuple[float | None, Mapping[str, Array]]]) -> Run:
    """`steps` reference steps from `params`; `gradients(t, w)` gives step `t`'s loss and gradients."""
    out, w, state = Run(), dict(params), State()
    with np.errstate(all="ignore"):  # a rule may blow up: that is a finding, not an error
        for t in range(steps):
            loss, grads = gradients(t, w)
            result = reference.step(w, grads, state, hp, lr_at(t))
            w, state = result.params, result.state
            out.params.append(w)
            out.trust_ratios.append(result.trust_ratios)
            if loss is not None:
                out.losses.append(loss)
    return out


def compare(a: Run, b: Run) -> dict[str, Any]:
    """Per layer, the divergence after the last step; the first step (1-based) beyond rounding."""
    per_step = [max((relative_divergence(x[n], y[n]) for n in x), default=0.0)
                for x, y in zip(a.params, b.params, strict=True)]
    first = next((t + 1 for t, d in enumerate(per_step) if d > ROUNDING), None)
    layers = {n: relative_divergence(a.params[-1][n], b.params[-1][n]) for n in a.params[-1]}
    return {"worst": max(layers.values(), default=0.0), "first_step": first, "layers": layers}


def training_run(hp: Hyperparams, steps: int, lr_at: Callable[[int], float]) -> Run:
    """The digits MLP (`lars.parity.digits`) trained `steps` steps by the reference, in float64."""
    from lars.parity import digits

    problem = digits.Problem(steps=steps)
    batches = problem.batches()
    return run(hp, problem.initial_params(), steps, lr_at, lambda t, w: digits.loss_and_grads(w, *batches[t]))


def case_run(hp: Hyperparams, case: Case, steps: int) -> Run:
    steps = min(steps, case.steps)
    return run(hp, case.initial_params(), steps, lambda t: float(case.schedule(t)),
               lambda t, w: (None, case.gradients_at(t, w)))


def finite(values: Sequence[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def measurement(config: Config | None, steps: int) -> tuple[dict[str, Any], Callable[[int], float], str]:
    """The settings every rule runs with, the lr of each step, and where they come from: the
    file's settings and schedule, else `COMMON` with the digits problem's schedule."""
    from lars.parity import digits
    from lars.parity.training import compressed

    if config is None:
        settings, base = dict(COMMON), 3.0
        return settings | {"lr": base}, digits.default_schedule(digits.Problem(steps=steps), base), (
            "common settings, the digits problem's warm-up cosine schedule to lr 3.0")
    settings = {f: getattr(config.hyperparams, f) for f in SETTINGS}
    return settings, compressed(config.lr_schedule(), steps), (
        f"the settings and schedule of {config.source} (compressed to {steps} steps)")


def advice(s: Side) -> dict[str, str]:
    """How to keep this side's rule in each framework with this package's adapters."""
    if s.config is not None and s.config.source == "<Hyperparams>":
        return {"PyTorch": "lars.backends.torch.LARS(model.named_parameters(), hyperparameters=hp)",
                "JAX / optax": "lars.backends.jax.lars(hyperparameters=hp)",
                "Keras 3": "lars.backends.keras.LARS(hyperparameters=hp)",
                "MXNet Gluon": "gluon.Trainer(params, OneLARS(hyperparameters=hp))"}
    if s.config is not None:
        path = "lars.default_config()" if Path(s.label).name == DEFAULT_CONFIG and not Path(
            s.label).is_file() else f'"{s.label}"'
        return {"PyTorch": f"lars.backends.torch.LARS.from_file(model.named_parameters(), {path})",
                "JAX / optax": f"lars.backends.jax.from_file({path})",
                "Keras 3": f"lars.backends.keras.LARS.from_file({path})",
                "MXNet Gluon": f"gluon.Trainer(params, OneLARS.from_file({path}))"}
    f = s.label
    return {"PyTorch": f'lars.backends.torch.LARS(model.named_parameters(), lr=LR, flavor="{f}")',
            "JAX / optax": f'lars.backends.jax.lars(LR, flavor="{f}")',
            "Keras 3": f'lars.backends.keras.LARS(LR, flavor="{f}")',
            "MXNet Gluon": f'gluon.Trainer(params, "onelars", {{"flavor": "{f}", "learning_rate": LR}})'}


def diff(a_spec: str | Hyperparams, b_spec: str | Hyperparams, config: Config | None = None,
         steps: int = 100) -> dict[str, Any]:
    """Everything `lars diff` prints, as JSON-able data: the rule's differences, the defaults',
    the measurement (`training`, `cases`: `worst`, `first_step`, `layers`) and the advice."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise HyperparameterError("steps", steps, "an int >= 1")
    a, b = side(a_spec), side(b_spec)
    settings, lr_at, source = measurement(config or a.config or b.config, steps)
    hp_a, hp_b = aligned(a.hyperparams, settings), aligned(b.hyperparams, settings)
    run_a, run_b = training_run(hp_a, steps, lr_at), training_run(hp_b, steps, lr_at)
    training = compare(run_a, run_b) | {
        "losses": {"a": finite(run_a.losses), "b": finite(run_b.losses)},
        "trust_ratios": {k: {n: finite([r[n] for r in x.trust_ratios]) for n in x.trust_ratios[0]}
                         for k, x in (("a", run_a), ("b", run_b))}}
    cases = {}
    for name, case in CASES.items():
        overrides = {f: v for f, v in case.overrides.items() if f in SETTINGS and f != "lr"}
        pair = [aligned(hp, overrides) for hp in (hp_a, hp_b)]
        cases[name] = compare(*(case_run(hp, case, steps) for hp in pair))
    rule = rule_differences(a.hyperparams, b.hyperparams)
    return {"a": a.label, "b": b.label, "rule": rule, "same_rule": not rule,
            "settings": setting_differences(a, b),
            "measured_with": {"source": source, "steps": steps,
                              "settings": {f: shown(v) for f, v in settings.items()}},
            "rounding": ROUNDING, "training": training, "cases": cases,
            "advice": advice(a)}


def _value(v: Any, field: str) -> str:
    return v if field == "lr" and isinstance(v, str) else repr(v)  # "required", or a schedule


def text(result: Mapping[str, Any]) -> str:
    """`diff`'s result for a terminal."""
    a, b = result["a"], result["b"]
    lines = [f"lars diff {a} {b}", "", "The rule"]
    if result["same_rule"]:
        lines.append(f"  the same rule: {a} and {b} differ at most in their defaults")
    for d in result["rule"]:
        lines += [f"  {d['field']}: {d['a']!r} vs {d['b']!r}", f"      {d['meaning']}",
                  f"      matters: {d['matters']}"]
    lines += ["", "Defaults (settings a training script usually passes)"]
    lines += [f"  {d['field']}: {_value(d['a'], d['field'])} vs {_value(d['b'], d['field'])}"
              for d in result["settings"]] or ["  the same"]
    m, t = result["measured_with"], result["training"]
    lines += ["", f"Measured: both rules with {m['source']}, {m['steps']} steps, float64 reference",
              f"  digits MLP: weights {_divergence(t['worst'])} apart after the last step; "
              + _first(t["first_step"], result["rounding"])]
    ratios = t["trust_ratios"]
    lines.append(f"    {'layer':<16} {'divergence':<12} last trust ratio: {a} vs {b}")
    lines += [f"    {n:<16} {_divergence(v):<12} {_last(ratios['a'][n])} vs {_last(ratios['b'][n])}"
              for n, v in t["layers"].items()]
    losses = t["losses"]
    lines.append(f"    final loss: {_last(losses['a'])} ({a}) vs {_last(losses['b'])} ({b})")
    lines.append("  seeded cases (case: divergence after the last step, first step beyond rounding):")
    lines += [f"    {n:<22} {_divergence(c['worst']):<12} {c['first_step'] or '-'}"
              for n, c in result["cases"].items()]
    lines += ["", f"To keep {a}'s behaviour in every framework:"]
    lines += [f"  {k:<12} {v}" for k, v in result["advice"].items()]
    return "\n".join(lines)


def _divergence(v: float) -> str:
    return "diverged" if v >= DIVERGED else f"{v:.3g}"


def _last(values: Sequence[float | None]) -> str:
    return "diverged" if not values or values[-1] is None else f"{values[-1]:.4g}"


def _first(step: int | None, rounding: float) -> str:
    return (f"identical up to rounding ({rounding:g}) at every step" if step is None
            else f"first beyond rounding ({rounding:g}) at step {step}")
