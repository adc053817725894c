"""Balancers: the registry and every balancing method (importing this module registers them)."""
from __future__ import annotations

from mmbal.balancers.base import ACTS_ON, Balancer, EpochContext, true_class_probability
from mmbal.balancers.mlb import MLB, mlb_coefficients, mlb_ratios
from mmbal.balancers.ogm import OGM, ogm_coefficients
from mmbal.registry import Registry

BALANCERS = Registry("balancer")

# The objective each method is defined with in its paper (used when none is given explicitly).
PAPER_OBJECTIVE = {"mlb": "multi_loss"}


def paper_objective(balancer: str) -> str:
    """Objective a balancer is paired with by default: multi_loss for MLB, else joint."""
    return PAPER_OBJECTIVE.get(balancer, "joint")


@BALANCERS.register("none")
def none(acts_on: str = "gradient") -> Balancer:
    """No balancing (plain training under the chosen objective)."""
    return Balancer(acts_on=acts_on)


@BALANCERS.register("ogm")
def ogm(alpha: float = 0.8, acts_on: str = "gradient") -> Balancer:
    """OGM: slow the dominant modality's encoder by 1 - tanh(alpha * rho) (fused-head scores)."""
    return OGM(alpha=alpha, noise=False, acts_on=acts_on)


@BALANCERS.register("ogm_ge")
def ogm_ge(alpha: float = 0.8, acts_on: str = "gradient") -> Balancer:
    """OGM-GE: OGM plus Gaussian gradient noise with the gradient's own std (generalisation)."""
    return OGM(alpha=alpha, noise=True, acts_on=acts_on)


@BALANCERS.register("mlb")
def mlb(alpha: float = 0.5, beta_max: float | None = None, acts_on: str = "gradient") -> Balancer:
    """MLB: k = 1 + tanh(alpha (r - 1)) from the unimodal heads (beta_max caps acceleration)."""
    return MLB(alpha=alpha, beta_max=beta_max, acts_on=acts_on)


def build_balancer(name: str, **options) -> Balancer:
    """Create a registered balancer; unknown names or options fail with a clear message."""
    factory = BALANCERS.get(name)
    try:
        return factory(**options)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ValueError(f"balancer {name!r}: {err}") from None
        raise


__all__ = ["ACTS_ON", "BALANCERS", "Balancer", "EpochContext", "MLB", "OGM", "build_balancer",
           "mlb_coefficients", "mlb_ratios", "paper_objective", "ogm_coefficients", "true_class_probability"]
