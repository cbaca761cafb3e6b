"""MkDocs hook: generates the reference tables of the docs from the code, at build time.

One fact, one place: the flavor table, the axes table and the hyperparameter table are built
from `lars.core.flavors.FLAVORS`, `lars.core.hyperparams.AXES` and `lars.core.hyperparams.Hyperparams`
and replace these placeholders in any page:

    <!-- axes-table -->          the allowed values of each variant axis, with their meaning
    <!-- flavor-table -->        every flavor: what it reproduces and its defaults
    <!-- flavor-axes-table -->   every flavor: its value on each axis and its default exclusions
    <!-- hyperparams-table -->   every `Hyperparams` field, its allowed values and its meaning

The allowed values come from the validation itself (the `allowed` text of the
`HyperparameterError` raised for NaN), so the page shows exactly what the code enforces.
The meanings come from `lars.core.fields.MEANINGS`. The build fails if a field has no meaning
there, if a meaning names no field, or if the
specification page lacks a quirks section (`### `name``) for a flavor.

Imports `lars` only (NumPy); run mkdocs with the repository root on PYTHONPATH.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from lars.core.errors import HyperparameterError
from lars.core.fields import MEANINGS as FIELD_MEANINGS
from lars.core.flavors import DEFAULT_FLAVOR, FLAVORS, Flavor
from lars.core.hyperparams import AXES, Hyperparams
from lars.core.policy import Exclude

NUMBERS = ("momentum", "dampening", "weight_decay", "trust_coefficient", "eps")
CHOICES = tuple(AXES)
EXCLUSIONS = ("exclude_from_weight_decay", "exclude_from_adaptation")


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _code(value: Any) -> str:
    # Python-Markdown's tables do not split on a pipe inside a code span: no escaping here.
    return "`" + str(value).replace("\n", " ") + "`"


def _number(value: Any) -> str:
    return "none" if value is None else re.sub(r"e([+-])0(\d)", r"e\1\2", f"{float(value):g}")


def _check_fields() -> None:
    fields = set(Hyperparams.field_names())
    missing, extra = fields - set(FIELD_MEANINGS), set(FIELD_MEANINGS) - fields
    if missing or extra:
        raise RuntimeError(f"docs/hooks/tables.py: FIELD_MEANINGS out of date: "
                           f"missing {sorted(missing)}, unknown {sorted(extra)}")


def _allowed(field_name: str) -> str:
    try:
        Hyperparams(**{field_name: math.nan})
    except HyperparameterError as exc:
        if exc.field == field_name:
            return exc.allowed
    raise RuntimeError(f"docs/hooks/tables.py: NaN is accepted for {field_name}; cannot read "
                       "its allowed values")


def _class_defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(Hyperparams):
        out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return out


def axes_table() -> str:
    rows = ["| axis (field) | value | meaning |", "|---|---|---|"]
    for axis, values in AXES.items():
        for i, (value, meaning) in enumerate(values.items()):
            rows.append(f"| {_code(axis) if i == 0 else ''} | {_code(repr(value))} | {_code(meaning)} |")
    return "\n".join(rows)


def _lr(flavor: Flavor) -> str:
    return "required" if flavor.lr_required else _number(flavor.defaults["lr"])


def _eps(flavor: Flavor) -> str:
    eps, when_zero = flavor.defaults["eps"], flavor.defaults["eps_when_zero"]
    if when_zero is not None and eps == 0:
        return f"0 → {_number(when_zero)}"
    return _number(eps)


def flavor_table() -> str:
    head = "| flavor | reproduces | lr | momentum | dampening | weight_decay | trust_coefficient | eps |"
    rows = [head, "|---|---|---|---|---|---|---|---|"]
    for name, f in FLAVORS.items():
        label = _code(name) + (" (default)" if name == DEFAULT_FLAVOR else "")
        nums = " | ".join(_number(f.defaults[k]) for k in NUMBERS[:-1])
        rows.append(f"| {label} | {_cell(f.reproduces)} | {_lr(f)} | {nums} | {_eps(f)} |")
    return "\n".join(rows)


def _exclusion(rule: Exclude) -> str:
    return "nothing" if rule.is_empty else _code(rule.describe())


def flavor_axes_table() -> str:
    class_defaults = _class_defaults()
    quirks = ("eps_when_zero", "adaptation_exclusion_follows_weight_decay")
    shown = {"lr", *NUMBERS, *CHOICES, *EXCLUSIONS, *quirks}
    head = ("| flavor | " + " | ".join(f"`{c}`" for c in CHOICES)
            + " | other settings | no weight decay for | not adapted |")
    rows = [head, "|" + "---|" * (len(CHOICES) + 4)]
    for name, f in FLAVORS.items():
        d = f.defaults
        other = [f"{k}={d[k]!r}" for k in d if k not in shown and d[k] != class_defaults[k]]
        if d["eps_when_zero"] is not None:
            other.append(f"eps 0 → {_number(d['eps_when_zero'])}")
        adapt = _exclusion(d["exclude_from_adaptation"])
        if d["adaptation_exclusion_follows_weight_decay"]:
            adapt += " (an empty rule takes the weight-decay rule)"
        cells = [_code(name), *(_code(d[c]) for c in CHOICES),
                 ", ".join(_code(o) for o in other) or "—",
                 _exclusion(d["exclude_from_weight_decay"]), adapt]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def hyperparams_table() -> str:
    _check_fields()
    class_defaults = _class_defaults()
    rows = ["| field | `Hyperparams()` default | allowed | meaning |", "|---|---|---|---|"]
    for name in Hyperparams.field_names():
        default = class_defaults[name]
        shown = "nothing" if isinstance(default, Exclude) else repr(default)
        rows.append(f"| {_code(name)} | {_code(shown)} | {_cell(_allowed(name))} | "
                    f"{_cell(FIELD_MEANINGS[name])} |")
    return "\n".join(rows)


TABLES = {
    "<!-- axes-table -->": axes_table,
    "<!-- flavor-table -->": flavor_table,
    "<!-- flavor-axes-table -->": flavor_axes_table,
    "<!-- hyperparams-table -->": hyperparams_table,
}


def _check_flavor_notes(markdown: str, src: str) -> None:
    noted = set(re.findall(r"^### `([a-z_]+)`", markdown, flags=re.MULTILINE))
    missing, extra = set(FLAVORS) - noted, noted - set(FLAVORS)
    if missing or extra:
        raise RuntimeError(f"{src}: per-flavor notes out of date: missing {sorted(missing)}, "
                           f"unknown {sorted(extra)}")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for placeholder, build in TABLES.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, build())
    if page.file.src_uri == "specification.md":
        _check_flavor_notes(markdown, page.file.src_uri)
    return markdown
