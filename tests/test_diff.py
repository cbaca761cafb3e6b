"""`lars diff` and the atlas: an axis is reported exactly where the flavor table differs, the same
rule with the same settings measures 0, and one axis alone moves the weights where its
documentation says it matters (and not where it says it does not)."""

import itertools
import json

import pytest

from lars.cli import main
from lars.conformance.cases import CASES
from lars.core.fields import MATTERS, RULE, SETTINGS
from lars.core.flavors import FLAVORS, hyperparams
from lars.parity.atlas import atlas
from lars.parity.diff import COMMON, ROUNDING, case_run, compare, diff, rule_differences, side


def effective(flavor, field):
    """A field of a flavor's row as the step uses it: an eps of 0 becomes `eps_when_zero`."""
    row = FLAVORS[flavor].defaults
    if field == "eps" and row["eps"] == 0 and row["eps_when_zero"] is not None:
        return row["eps_when_zero"]
    return row[field]


@pytest.mark.parametrize("a,b", list(itertools.combinations(FLAVORS, 2)))
def test_an_axis_is_reported_exactly_where_the_table_differs(a, b):
    reported = {d["field"] for d in rule_differences(side(a).hyperparams, side(b).hyperparams)}
    assert reported == {f for f in RULE if effective(a, f) != effective(b, f)}


def test_settings_and_rule_split_every_field():
    assert set(RULE) | set(SETTINGS) | {"flavor"} == set(FLAVORS["paper"].defaults) | {"flavor", "lr"}
    assert not set(RULE) & set(SETTINGS)


@pytest.fixture(scope="module")
def paper_yscv():
    return diff("paper", "yscv", steps=30)


def test_the_same_rule_with_the_same_settings_measures_zero(paper_yscv):
    assert paper_yscv["same_rule"] and paper_yscv["rule"] == []
    assert {d["field"] for d in paper_yscv["settings"]} == {"momentum", "weight_decay"}  # defaults only
    assert paper_yscv["training"]["worst"] == 0.0 and paper_yscv["training"]["first_step"] is None
    for name, case in paper_yscv["cases"].items():
        assert case["worst"] == 0.0 and case["first_step"] is None, name


def test_timm_and_optax_differ_in_the_rule_and_in_the_weights():
    result = diff("timm", "optax", steps=30)
    fields = {d["field"]: (d["a"], d["b"]) for d in result["rule"]}
    assert fields["trust_denominator"] == ("split", "combined")
    assert fields["momentum_style"] == ("sgd", "heavy_ball")
    assert fields["buffer_start"] == ("copy", "zero")
    assert fields["eps"] == (1e-8, 0.0)
    assert result["training"]["worst"] > 1e-3 and result["training"]["first_step"] <= 2
    losses = result["training"]["losses"]
    assert len(losses["a"]) == len(losses["b"]) == 30 and losses["a"] != losses["b"]


# One axis alone: `paper` (plus `base`, on both sides) under the common settings, against the same
# with `change`; measured on a case where the field's documentation (lars.core.fields.MATTERS)
# says it matters and, where it names a condition, on one where that condition does not hold.
ONE_AXIS = {  # field: (base, change, a case where it matters, one where it does not)
    "trust_coefficient": ({}, {"trust_coefficient": 1.0}, "flavor_defaults", None),
    "eps": ({}, {"eps": 1e-8}, "magnitudes", "flavor_defaults"),  # tiny weights: eps ~ the denominator
    "larc_clip": ({"trust_coefficient": 0.02}, {"larc_clip": True}, "larc_clip", None),
    "trust_denominator": ({}, {"trust_denominator": "combined"}, "momentum_weight_decay", None),
    "momentum_style": ({}, {"momentum_style": "sgd"}, "warmup_poly_schedule", None),
    "buffer_start": ({}, {"buffer_start": "copy"}, "dampening", "flavor_defaults"),  # 1-d = 1 there
    "zero_norm_rule": ({}, {"zero_norm_rule": "weight_and_denominator"}, "zero_norms", "flavor_defaults"),
    "weight_decay_on_fallback": ({}, {"weight_decay_on_fallback": False}, "zero_norms", "flavor_defaults"),
    "adapt_requires_weight_decay": ({}, {"adapt_requires_weight_decay": True}, "exclusions",
                                    "flavor_defaults"),
    "larc_clip_on_fallback": ({"larc_clip": True, "trust_coefficient": 0.02}, {"larc_clip_on_fallback": True},
                              "larc_clip", "flavor_defaults"),
    "trust_ratio_max": ({}, {"trust_ratio_max": 0.5}, "magnitudes", None),  # r up to eta/wd = 1 there
    "decoupled_weight_decay": ({}, {"decoupled_weight_decay": True}, "momentum_weight_decay", None),
    "clip_before_norms": ({}, {"clip_before_norms": True}, "gradient_processing", "flavor_defaults"),
    "momentum_correction": ({}, {"momentum_correction": True}, "warmup_poly_schedule", "flavor_defaults"),
    "momentum_correction_tensors": ({"momentum_correction": True}, {"momentum_correction_tensors": 1},
                                    "warmup_poly_schedule", "flavor_defaults"),
    "eps_when_zero": ({}, {"eps_when_zero": 1e-7}, "magnitudes", None),
    "adaptation_exclusion_follows_weight_decay": (
        {"exclude_from_weight_decay": "ndim<=1"}, {"adaptation_exclusion_follows_weight_decay": True},
        "flavor_defaults", "exclusions"),  # there the adaptation rule is not empty
}


def one_axis_divergence(field, case_name):
    base_fields, change, _, _ = ONE_AXIS[field]
    case = CASES[case_name]
    settings = {**COMMON, **{k: v for k, v in case.overrides.items() if k in SETTINGS}}
    base = hyperparams("paper", lr=0.1, **{**settings, **base_fields})
    changed = base.replace(**change)
    quirk = ["eps"] if field == "eps_when_zero" else []  # it sets the eps of 0 in force
    assert [d["field"] for d in rule_differences(base, changed)] == [*quirk, field]
    return compare(case_run(base, case, 100), case_run(changed, case, 100))["worst"]


def test_every_axis_of_the_rule_has_a_one_axis_check():
    assert set(ONE_AXIS) == set(MATTERS) == set(RULE)


@pytest.mark.parametrize("field", list(ONE_AXIS))
def test_one_axis_alone_moves_the_weights_where_its_documentation_says(field):
    _, _, matters, not_there = ONE_AXIS[field]
    assert one_axis_divergence(field, matters) > 1e3 * ROUNDING, MATTERS[field]
    if not_there is not None:  # eps moves weights by about eps / denominator (~1e-8 / 1e-2) there
        bound = 1e-6 if field == "eps" else ROUNDING
        assert one_axis_divergence(field, not_there) <= bound, MATTERS[field]


def test_the_atlas_is_symmetric_and_zero_only_for_the_same_rule():
    found = atlas(steps=20)
    names, d, axes = found["flavors"], found["divergence"], found["axes"]
    assert names == list(FLAVORS)
    for i, j in itertools.product(range(len(names)), repeat=2):
        assert d[i][j] == d[j][i] and sorted(axes[i][j]) == sorted(axes[j][i])
        if not axes[i][j]:
            assert d[i][j] == 0.0, (names[i], names[j])
    k = names.index
    assert d[k("paper")][k("yscv")] == 0.0
    assert d[k("paper")][k("holocron")] > 0.5  # no trust coefficient: steps 1,000 times larger


@pytest.mark.parametrize("a,b,expect", [
    ("timm", "optax", "trust_denominator: 'split' vs 'combined'"),
    ("paper", "yscv", "the same rule"),
    ("moco", "pytorch_optimizer", "trust_denominator: 'combined' vs 'split'"),
    ("mlperf_resnet50.toml", "optax", "trust_denominator: 'split' vs 'combined'"),
])
def test_the_command_prints_the_rule_the_measurement_and_the_advice(capsys, a, b, expect):
    assert main(["diff", a, b, "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert expect in out
    assert "digits MLP: weights" in out and "seeded cases" in out
    assert f"To keep {a}'s behaviour in every framework" in out


def test_the_shipped_file_is_measured_with_its_own_settings(capsys):
    assert main(["diff", "mlperf_resnet50.toml", "optax", "--steps", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "mlperf_resnet50.toml" in result["measured_with"]["source"]
    assert result["measured_with"]["settings"]["exclude_from_weight_decay"] != "nothing"
    assert "from_file" in result["advice"]["PyTorch"]


@pytest.mark.parametrize("argv,field", [(["diff", "nosuch", "optax"], "side"),
                                        (["diff", "paper", "optax", "--steps", "0"], "steps")])
def test_bad_input_is_refused_naming_the_field(capsys, argv, field):
    assert main(argv) == 2
    assert f"lars diff: {field}=" in capsys.readouterr().err
