"""Balancers: the registry and every balancing method (importing this module registers them).

Defaults follow the paper's CREMA-D ResNet settings where reference/paper.md §4.7 states them;
pass the per-dataset values of the run.sh table explicitly.
"""
from __future__ import annotations

import inspect

from mmbal.balancers.agm import AGM
from mmbal.balancers.base import ACTS_ON, Balancer, EpochContext, true_class_probability
from mmbal.balancers.mlb import (MLB, VARIANT_OBJECTIVE, VARIANTS, FixedCoefficients, mlb_coefficients,
                                 mlb_ratios)
from mmbal.balancers.mmcosine import MMCosine
from mmbal.balancers.mslr import MSLR, mslr_rates
from mmbal.balancers.ogm import OGM, ogm_coefficients
from mmbal.balancers.pmr import PMR
from mmbal.registry import Registry

BALANCERS = Registry("balancer")

# The objective each method is defined with in its paper (used when none is given explicitly).
PAPER_OBJECTIVE = {"mlb": "multi_loss", "mlb_stopgrad": "multi_loss", "mlb_fused": "joint",
                   "fixed": "multi_loss"}


def paper_objective(balancer: str, options: dict | None = None) -> str:
    """Objective a balancer is paired with by default: multi_loss for MLB (and its fixed-k
    control), joint for the baselines; an MLB ``variant`` option picks that variant's objective."""
    if balancer == "mlb" and options and "variant" in options:
        return VARIANT_OBJECTIVE.get(options["variant"], "multi_loss")
    return PAPER_OBJECTIVE.get(balancer, "joint")


class NoBalancer(Balancer):
    """No modulation; still traces each unimodal head's confidence s_m (the imbalance itself)."""

    def after_backward(self, model, outputs, labels):
        return {f"score/{m}": true_class_probability(outputs["logits"][m], labels) for m in model.modalities}


@BALANCERS.register("none")
def none(acts_on: str = "gradient") -> Balancer:
    """No balancing (plain training under the chosen objective); traces the heads' scores s_m."""
    return NoBalancer(acts_on=acts_on)


@BALANCERS.register("ogm")
def ogm(alpha: float = 0.8, acts_on: str = "gradient") -> Balancer:
    """OGM: slow the dominant modality's encoder by 1 - tanh(alpha * rho) (fused-head scores)."""
    return OGM(alpha=alpha, noise=False, acts_on=acts_on)


@BALANCERS.register("ogm_ge")
def ogm_ge(alpha: float = 0.8, acts_on: str = "gradient") -> Balancer:
    """OGM-GE: OGM plus Gaussian gradient noise with the gradient's own std (generalisation)."""
    return OGM(alpha=alpha, noise=True, acts_on=acts_on)


@BALANCERS.register("mlb")
def mlb(alpha: float = 0.5, beta_max: float | None = None, variant: str = "heads",
        acts_on: str = "gradient") -> Balancer:
    """MLB: k = 1 + tanh(alpha (r - 1)) from the unimodal heads (beta_max caps acceleration)."""
    return MLB(alpha=alpha, beta_max=beta_max, variant=variant, acts_on=acts_on)


@BALANCERS.register("mlb_stopgrad")
def mlb_stopgrad(alpha: float = 0.5, beta_max: float | None = None, acts_on: str = "gradient") -> Balancer:
    """MLB ablation: unimodal heads on detached features (their losses do not train encoders)."""
    return MLB(alpha=alpha, beta_max=beta_max, variant="stopgrad", acts_on=acts_on)


@BALANCERS.register("mlb_fused")
def mlb_fused(alpha: float = 0.5, beta_max: float | None = None, acts_on: str = "gradient") -> Balancer:
    """MLB ablation: scores from the split fused linear head, no unimodal losses (joint)."""
    return MLB(alpha=alpha, beta_max=beta_max, variant="fused", acts_on=acts_on)


@BALANCERS.register("fixed")
def fixed(coefficients: dict[str, float] | None = None, acts_on: str = "gradient") -> Balancer:
    """Constant per-modality k_m, e.g. coefficients={"audio": 0.8, "video": 1.5} (fixed-k control)."""
    if coefficients is None:
        raise ValueError('fixed: give coefficients, e.g. coefficients={"audio": 0.8, "video": 1.5}')
    return FixedCoefficients(coefficients=coefficients, acts_on=acts_on)


@BALANCERS.register("agm")
def agm(alpha: float = 1.5, acts_on: str = "gradient") -> Balancer:
    """AGM: k_m = exp(alpha (r*_m - r_m)) on the gradients of Shapley modality outputs."""
    return AGM(alpha=alpha, acts_on=acts_on)


@BALANCERS.register("pmr")
def pmr(alpha: float = 1.75, refresh_fraction: float = 0.1, entropy_weight: float = 0.0,
        entropy_epochs: int = 0, acts_on: str = "gradient") -> Balancer:
    """PMR: prototypical cross-entropy (weight alpha) for the modality that lags on prototypes."""
    return PMR(alpha=alpha, refresh_fraction=refresh_fraction, entropy_weight=entropy_weight,
               entropy_epochs=entropy_epochs, acts_on=acts_on)


@BALANCERS.register("mslr")
def mslr(init_scale: dict[str, float] | None = None, keep_memory: int = 5,
         acts_on: str = "update") -> Balancer:
    """MSLR: per-modality learning rates init_m * (val acc / its recent mean), set per epoch."""
    return MSLR(init_scale=init_scale, keep_memory=keep_memory, acts_on=acts_on)


@BALANCERS.register("mmcosine")
def mmcosine(scaling: float = 10.0, acts_on: str = "gradient") -> Balancer:
    """MMCosine: fused logits = s * sum_m cos(z_m, W_m) (normalised features and class weights)."""
    return MMCosine(scaling=scaling, acts_on=acts_on)


def build_balancer(name: str, **options) -> Balancer:
    """Create a registered balancer; unknown names or options fail with a clear message."""
    factory = BALANCERS.get(name)
    try:
        return factory(**options)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            valid = ", ".join(inspect.signature(factory).parameters)
            raise ValueError(f"balancer {name!r}: {err}; valid options: {valid}") from None
        raise


__all__ = ["ACTS_ON", "AGM", "BALANCERS", "Balancer", "EpochContext", "FixedCoefficients", "MLB", "MMCosine",
           "MSLR", "NoBalancer", "OGM", "PMR", "VARIANTS", "build_balancer", "mlb_coefficients", "mlb_ratios",
           "mslr_rates", "ogm_coefficients", "paper_objective", "true_class_probability"]
