"""specdyn: training dynamics under spectral gradient methods, in JAX."""

from specdyn import problems
from specdyn import results
from specdyn._cpu import guard_cpu
from specdyn.diagnostics import frobenius_norm
from specdyn.diagnostics import nuclear_norm
from specdyn.diagnostics import nuclear_rank
from specdyn.diagnostics import principal_angles
from specdyn.diagnostics import stable_rank
from specdyn.layerwise import incoming_activations
from specdyn.layerwise import layerwise_criterion
from specdyn.layerwise import layerwise_metrics
from specdyn.layerwise import matrix_paths
from specdyn.optimizers import OPTIMIZERS
from specdyn.optimizers import Optimizer
from specdyn.optimizers import adam
from specdyn.optimizers import gd
from specdyn.optimizers import get_optimizer
from specdyn.optimizers import matrix_labels
from specdyn.optimizers import muon
from specdyn.optimizers import normalized_gd
from specdyn.optimizers import shampoo
from specdyn.optimizers import sign_gd
from specdyn.optimizers import spectral_gd
from specdyn.optimizers import spectral_power
from specdyn.polar import polar
from specdyn.polar import polar_express_coefficients
from specdyn.problem import problem
from specdyn.problem import require
from specdyn.problem import size_mask
from specdyn.problem import static
from specdyn.problem import true_size
from specdyn.simulate import simulate
from specdyn.sweep import LearningRateRule
from specdyn.sweep import sweep
from specdyn.telemetry import Telemetry
from specdyn.telemetry import telemetry_leaves
from specdyn.transforms import bias_corrected_momentum
from specdyn.transforms import normalize_frobenius
from specdyn.transforms import scale_by_polar
from specdyn.transforms import scale_by_shampoo
from specdyn.transforms import scale_by_shape
from specdyn.transforms import scale_by_spectral_power

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS",
    "LearningRateRule",
    "Optimizer",
    "Telemetry",
    "adam",
    "bias_corrected_momentum",
    "frobenius_norm",
    "gd",
    "get_optimizer",
    "guard_cpu",
    "incoming_activations",
    "layerwise_criterion",
    "layerwise_metrics",
    "matrix_labels",
    "matrix_paths",
    "muon",
    "normalize_frobenius",
    "normalized_gd",
    "nuclear_norm",
    "nuclear_rank",
    "polar",
    "polar_express_coefficients",
    "principal_angles",
    "problem",
    "problems",
    "require",
    "results",
    "scale_by_polar",
    "scale_by_shampoo",
    "scale_by_shape",
    "scale_by_spectral_power",
    "shampoo",
    "sign_gd",
    "simulate",
    "size_mask",
    "spectral_gd",
    "spectral_power",
    "stable_rank",
    "static",
    "sweep",
    "telemetry_leaves",
    "true_size",
]
