"""Balancers: every balancing method, registered in ``BALANCERS`` by the module that defines it.

``BALANCERS.create(name, **options)`` builds one; its ``objective`` attribute names the objective
the method is defined with (multi_loss for MLB and its fixed-k control, joint for the rest).
Defaults follow the paper's CREMA-D ResNet settings where its §4.7 states them;
pass the per-dataset values of the run.sh table explicitly.
"""
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
