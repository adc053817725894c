"""Balancers, each registered in ``BALANCERS`` by the module that defines it; the ``objective`` of
``BALANCERS.create(name, **options)`` names the objective it is defined with (multi_loss for MLB and
its fixed-k control, joint for the rest). Defaults: the paper's CREMA-D ResNet settings (§4.7)."""
from mmbal.balancers.agm import AGM
from mmbal.balancers.base import ACTS_ON, BALANCERS, Balancer, EpochContext, NoBalancer, true_class_probability
from mmbal.balancers.mlb import MLB, VARIANTS, FixedCoefficients, mlb_coefficients, mlb_ratios
from mmbal.balancers.mmcosine import MMCosine
from mmbal.balancers.mslr import MSLR, mslr_rates
from mmbal.balancers.ogm import OGM, OGMGE, ogm_coefficients
from mmbal.balancers.pmr import PMR

__all__ = ["ACTS_ON", "AGM", "BALANCERS", "Balancer", "EpochContext", "FixedCoefficients", "MLB", "MMCosine",
           "MSLR", "NoBalancer", "OGM", "OGMGE", "PMR", "VARIANTS", "mlb_coefficients", "mlb_ratios", "mslr_rates",
           "ogm_coefficients", "true_class_probability"]
