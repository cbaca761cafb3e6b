"""Exclusion rules (`Exclude`), `as_exclude` and the per-tensor `plan`."""

import pytest

from lars.core import Exclude, ExclusionError, HyperparameterError, as_exclude, hyperparams, plan


@pytest.mark.parametrize("shape, excluded", [((), True), ((5,), True), ((2, 2), False), ((1, 1, 3), False)])
def test_ndim_at_most(shape, excluded):
    assert Exclude.ndim_at_most(1).excludes(None, shape) is excluded


@pytest.mark.parametrize("shape, excluded", [((), False), ((5,), True), ((2, 2), False)])
def test_ndim_in(shape, excluded):
    assert Exclude.ndim_in(1).excludes(None, shape) is excluded


@pytest.mark.parametrize("name, excluded", [
    ("layer1.bn2.weight", True),        # re.search: anywhere in the name
    ("bn0", True),
    ("bnx", False),
    ("conv.weight", False),
])
def test_regex_uses_search(name, excluded):
    assert Exclude.regex(r"bn\d").excludes(name, (3,)) is excluded


def test_regex_dot_is_a_wildcard_but_substrings_are_literal():
    assert Exclude.regex("batch.norm").excludes("batch_norm/gamma", (3,))
    assert not Exclude.substrings("batch.norm").excludes("batch_norm/gamma", (3,))
    assert Exclude.substrings("batch.norm").excludes("model/batch.norm/gamma", (3,))


@pytest.mark.parametrize("name, excluded", [("fc.bias", True), ("bias_scale", False), ("fcbias", True),
                                            ("bn_gamma", True), ("gamma_bn", False)])
def test_suffixes(name, excluded):
    assert Exclude.suffixes("bias", "gamma").excludes(name, (3,)) is excluded


def test_mask_matches_exact_names_only():
    rule = Exclude.mask(["a.weight", "b"])
    assert rule.excludes("a.weight", (2, 2)) and rule.excludes("b", (2,))
    assert not rule.excludes("a.weight2", (2, 2)) and not rule.excludes("bb", (2,))


def test_where_receives_name_and_shape():
    seen = []

    def predicate(name, shape):
        seen.append((name, shape))
        return shape[-1] == 7

    rule = Exclude.where(predicate)
    assert rule.excludes("x", [3, 7]) and not rule.excludes("y", (7, 3))
    assert seen == [("x", (3, 7)), ("y", (7, 3))]


def test_union_excludes_what_either_part_excludes():
    rule = (Exclude.ndim_in(0) | Exclude.suffixes("bias") | Exclude.mask(["emb"])
            | Exclude.where(lambda n, s: n.startswith("head")) | Exclude.where(lambda n, s: s == (9, 9)))
    for name, shape in [("s", ()), ("fc.bias", (2,)), ("emb", (4, 4)), ("head.w", (2, 2)), ("x", (9, 9))]:
        assert rule.excludes(name, shape), (name, shape)
    assert not rule.excludes("fc.weight", (2, 2))


def test_empty_rule_and_needs_names():
    assert Exclude().is_empty and Exclude.nothing().is_empty
    assert not Exclude().excludes(None, (3,))
    assert not Exclude.ndim_at_most(1).needs_names
    assert Exclude.substrings("b").needs_names and Exclude.mask(["x"]).needs_names


def test_to_dict_round_trip_and_callables_cannot_be_restored():
    rule = Exclude.ndim_at_most(1) | Exclude.regex("bias") | Exclude.mask(["emb"])
    assert Exclude.from_dict(rule.to_dict()) == rule
    with pytest.raises(ExclusionError, match="cannot be restored"):
        Exclude.from_dict(Exclude.where(lambda n, s: True).to_dict())


def plans(flavor, tensors, **kw):
    lr = {"lr": 0.1} if flavor in ("paper", "mlperf", "optax", "lightning_bolts", "yscv") else {}
    return {p.name: (p.weight_decay, p.adapt) for p in plan(hyperparams(flavor, **lr, **kw), tensors)}


def test_plan_pytorch_optimizer_small_rank_gets_neither():
    got = plans("pytorch_optimizer", [("w", (3, 3)), ("b", (3,)), ("s", ())], weight_decay=0.05)
    assert got == {"w": (0.05, True), "b": (0.0, False), "s": (0.0, False)}


def test_plan_mxnet_name_rules():
    tensors = [("fc_weight", (2, 2)), ("fc_bias", (2,)), ("bn_gamma", (2,)), ("conv_kernel", (2, 2))]
    got = plans("mxnet", tensors, weight_decay=0.01)
    assert got == {"fc_weight": (0.01, True), "fc_bias": (0.0, False), "bn_gamma": (0.0, False),
                   "conv_kernel": (0.0, True)}


def test_plan_tensorlogic_keeps_weight_decay_on_unadapted_names():
    got = plans("tensorlogic", [("embedding", (2, 2)), ("dense", (2, 2))])
    assert got == {"embedding": (0.01, False), "dense": (0.01, True)}


@pytest.mark.parametrize("flavor", ["timm", "lightning_bolts"])
def test_plan_adapt_requires_weight_decay(flavor):
    tensors = [("fc.weight", (2, 2)), ("fc.bias", (2,))]
    assert plans(flavor, tensors) == {"fc.weight": (0.0, False), "fc.bias": (0.0, False)}
    got = plans(flavor, tensors, weight_decay=0.01, exclude_from_weight_decay=["bias"])
    assert got == {"fc.weight": (0.01, True), "fc.bias": (0.0, False)}
    # without the gate the wd-excluded bias is still adapted
    got = plans(flavor, tensors, weight_decay=0.01, exclude_from_weight_decay=["bias"],
                adapt_requires_weight_decay=False)
    assert got["fc.bias"] == (0.0, True)


def test_plan_keeps_order_and_shapes():
    out = plan(hyperparams("paper", lr=0.1), [("b", [3]), ("a", (2, 2))])
    assert [(p.name, p.shape) for p in out] == [("b", (3,)), ("a", (2, 2))]


def test_as_exclude_accepted_forms():
    rule = Exclude.suffixes("bias")
    assert as_exclude(None, "f").is_empty and as_exclude(False, "f").is_empty
    assert as_exclude(rule, "f") is rule
    assert as_exclude("ndim<=1", "f") == Exclude.ndim_at_most(1)
    assert as_exclude("bias$", "f").excludes("fc.bias", (2,))
    assert as_exclude(["bias", "bn"], "f") == Exclude.regex("bias", "bn")
    assert as_exclude(("bias",), "f") == Exclude.regex("bias")
    assert as_exclude(lambda n, s: len(s) == 4, "f").excludes("conv", (1, 2, 3, 4))


@pytest.mark.parametrize("value", [3, 1.5, True, {"a": 1}, ["ok", 1]])
def test_as_exclude_refuses_other_values(value):
    with pytest.raises(HyperparameterError) as info:
        as_exclude(value, "exclude_from_adaptation")
    assert info.value.field == "exclude_from_adaptation"
    assert f"exclude_from_adaptation={value!r} is invalid" in str(info.value)


@pytest.mark.parametrize("bad", [dict(patterns=("(",)), dict(patterns=(3,)), dict(ndims=frozenset({-1})),
                                 dict(predicate=42)])
def test_malformed_rules_are_exclusion_errors(bad):
    with pytest.raises(ExclusionError):
        Exclude(**bad)
