"""What each `Hyperparams` field means, and which fields make the rule.

One place for these facts: the docs' hyperparameter table, `lars diff` and the atlas all read
them. A field is either part of the **rule** (what a library decides for its users: the axes,
eps, the trust coefficient, the quirks) or a **setting** (what a training script passes
explicitly: lr, momentum, weight decay, exclusions, gradient processing). Comparing two
libraries' LARS means running both rules with the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lars.core.hyperparams import Hyperparams

#: What each field means (the hyperparameter table of the docs shows this column).
MEANINGS: Mapping[str, str] = MappingProxyType({
    "flavor": "The name of the flavor these hyperparameters were built from (informational; "
              "recorded in saved state).",
    "lr": "Learning rate. The step's lr (after a schedule) can be passed to each step instead.",
    "momentum": "Momentum `m`. 0 means no buffer at all (and `dampening` is then ignored).",
    "dampening": "Dampening `d`: the buffer adds `(1-d)` times the increment.",
    "nesterov": "Nesterov momentum: the weights move by `increment + m*v` instead of `v`. "
                "Needs `momentum > 0` and `dampening == 0`.",
    "weight_decay": "Weight decay `wd`, added to the gradient as `wd*w` (and to the split "
                    "denominator) for tensors not excluded from weight decay.",
    "trust_coefficient": "Trust coefficient `eta` that multiplies the trust ratio.",
    "eps": "Added to the trust-ratio denominator.",
    "larc_clip": "LARC clip: `r = min(r/lr, 1)`, so the effective rate `lr*r` never exceeds `lr`.",
    "maximize": "Ascend instead of descend: the gradient is negated first.",
    "grad_rescale": "Multiplies the gradient (MXNet's `rescale_grad`); the norms see it too.",
    "grad_clip_value": "Clip every gradient element to `[-c, c]` (after rescaling). None: off.",
    "grad_clip_norm": "Scale all gradients together so that their global L2 norm is at most "
                      "`c`. None: off.",
    "trust_denominator": "Which denominator the trust ratio uses (see the axes table).",
    "momentum_style": "Where `lr` and the ratio sit relative to the momentum buffer.",
    "buffer_start": "The buffer's first value: zero, or a copy of the first increment.",
    "zero_norm_rule": "When the trust ratio falls back to 1.",
    "weight_decay_on_fallback": "Whether weight decay is still applied to a tensor whose ratio "
                                "fell back to 1 at a zero norm.",
    "adapt_requires_weight_decay": "Adapt a tensor only if its effective weight decay is not 0.",
    "larc_clip_on_fallback": "Apply the LARC clip also to the fallback ratio 1 (timm).",
    "trust_ratio_max": "Cap the computed trust ratio at this value (fastai's clip `min(lr, lr*r)` is "
                       "1; not the fallback ratio 1). None: off.",
    "decoupled_weight_decay": "Decay the weights themselves, `w *= 1 - lr*wd`, before the norms are "
                              "taken (fastai's `weight_decay`), instead of adding `wd*w` to the "
                              "gradient; the split denominator still reads `wd*||w||`.",
    "clip_before_norms": "Whether the trust-ratio norms see the clipped gradient (tensorlogic) "
                         "or the unclipped one (MXNet).",
    "momentum_correction": "MXNet 1.9.1's momentum correction `m*lr_t/lr_{t-1}`.",
    "momentum_correction_tensors": "How many tensors (the first ones of each step) get the "
                                   "momentum correction; None: every tensor.",
    "exclude_from_weight_decay": "Tensors that get no weight decay (see Exclusions).",
    "exclude_from_adaptation": "Tensors whose trust ratio is 1 (see Exclusions).",
    "eps_when_zero": "An `eps` of 0 becomes this (MLPerf TF2's `epsilon or 1e-7`); kept by "
                     "`replace`, so the quirk survives every copy. None: off.",
    "adaptation_exclusion_follows_weight_decay": "An empty `exclude_from_adaptation` takes the "
                                                 "weight-decay rule (TF Model Garden's default).",
})

#: The fields a training script sets explicitly; every other field but `flavor` is the rule.
SETTINGS: tuple[str, ...] = (
    "lr", "momentum", "dampening", "nesterov", "weight_decay", "exclude_from_weight_decay",
    "exclude_from_adaptation", "maximize", "grad_rescale", "grad_clip_value", "grad_clip_norm")

#: For each field of the rule: when a difference in it changes the weights, and by how much.
MATTERS: Mapping[str, str] = MappingProxyType({
    "trust_coefficient": "always: every adapted step scales with it (1.0 against 1e-3 makes "
                         "steps 1,000 times larger)",
    "eps": "in proportion to eps / denominator: much only when a denominator is near zero or "
           "comparable to eps (tiny gradients or weights, zero-initialised tensors)",
    "larc_clip": "whenever lr*r would exceed lr (r/lr > 1): it caps the step at plain SGD's",
    "trust_denominator": "always with weight decay: the split and combined norms differ by the "
                         "angle between g and w, most when the gradient is as small as wd*w; "
                         "'grad' leaves weight decay out of the ratio altogether",
    "momentum_style": "whenever the lr or the ratio changes between steps (a schedule, moving "
                      "norms): heavy-ball keeps old steps at their old lr*r, SGD-style rescales "
                      "the whole buffer by today's lr, ratio-outside by today's lr*r",
    "buffer_start": "on the first step with momentum: 'copy' starts the buffer at the full "
                    "increment, 'zero' at (1-d) times it; the same without dampening",
    "zero_norm_rule": "only when the denominator is zero while ||g|| is not (or the reverse): "
                      "zero gradients with weight decay, zero-initialised tensors; with no rule, "
                      "a zero tensor never moves and a zero gradient gives eta*||w||/eps",
    "weight_decay_on_fallback": "only at a zero norm (ratio 1): whether that step still decays "
                                "the weights",
    "adapt_requires_weight_decay": "for tensors with weight decay 0 (excluded ones, or wd 0 "
                                   "overall): they take plain SGD steps instead of adapted ones",
    "larc_clip_on_fallback": "only with the LARC clip at a zero norm when lr > 1",
    "trust_ratio_max": "whenever the computed ratio exceeds the cap: small gradients against "
                       "large weights, zero gradients without a zero-norm rule",
    "decoupled_weight_decay": "always with weight decay: the decay leaves the momentum buffer and "
                              "the trust ratio (it moves the weights by lr*wd*w, not lr*r*wd*w)",
    "clip_before_norms": "only with gradient clipping that bites: the ratio sees the clipped "
                         "or the raw gradient",
    "momentum_correction": "only when the lr changes between steps (a schedule): the buffer is "
                           "scaled by lr_t/lr_(t-1)",
    "momentum_correction_tensors": "only with the momentum correction and a changing lr: which "
                                   "tensors it reaches",
    "eps_when_zero": "only when eps is 0, and then as eps itself does",
    "adaptation_exclusion_follows_weight_decay": "only when the weight-decay exclusion is not "
                                                 "empty and the adaptation one is: those tensors "
                                                 "are then not adapted either",
})

#: The fields of the rule, in the dataclass's order.
RULE: tuple[str, ...] = tuple(f for f in Hyperparams.field_names() if f not in (*SETTINGS, "flavor"))
