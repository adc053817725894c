"""Balancers, each registered in ``BALANCERS`` by the module that defines it; the ``objective`` of
``BALANCERS.create(name, **options)`` names the objective it is defined with (multi_loss for MLB, its fixed-k
control, MMPareto, ReconBoost and G-Blending; joint for the rest). Defaults: the CREMA-D ResNet settings of the MLB
code's run.sh where it has them, else the method's authors'."""
from mmbal.balancers.agm import AGM
from mmbal.balancers.base import ACTS_ON, BALANCERS, Balancer, EpochContext, NoBalancer, true_class_probability
from mmbal.balancers.dnr import DnR
from mmbal.balancers.gblending import GBlending, blend_weights
from mmbal.balancers.mlb import MLB, VARIANTS, FixedCoefficients, mlb_coefficients, mlb_ratios
from mmbal.balancers.mmcosine import MMCosine
from mmbal.balancers.mmpareto import MMPareto, pareto_grads, pareto_weight
from mmbal.balancers.mslr import MSLR, mslr_rates
from mmbal.balancers.ogm import OGM, OGMGE, ogm_coefficients
from mmbal.balancers.pmr import PMR
from mmbal.balancers.reconboost import ReconBoost, boosting_loss, stage_of

__all__ = ["ACTS_ON", "AGM", "BALANCERS", "Balancer", "DnR", "EpochContext", "FixedCoefficients", "GBlending", "MLB",
           "MMCosine", "MMPareto", "MSLR", "NoBalancer", "OGM", "OGMGE", "PMR", "ReconBoost", "VARIANTS",
           "blend_weights", "boosting_loss", "mlb_coefficients", "mlb_ratios", "mslr_rates", "ogm_coefficients",
           "pareto_grads", "pareto_weight", "stage_of", "true_class_probability"]
