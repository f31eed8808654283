"""sharpness: sharp vs flat minima analysis for PyTorch.

The public API, in the order data flows through it (the project's design notes, which are kept outside
this repository, draw the same flow; docs/design.md "Layout" maps it onto the files):

    data, models, checkpoints  →  training  →  Objective (mean loss over a fixed analysis set)
        →  HessianOperator (H @ v)  →  linalg estimators  →  analyze() → Report  →  plots

Training is ``sharpness.train.train(TrainConfig(...))`` and sweeps ``sharpness.sweep.sweep(...)``: the names
``sharpness.train`` and ``sharpness.sweep`` are the modules, never functions that hide them.
"""

__version__ = "0.2.0"

# Inputs: datasets (offline only), architectures, self-describing checkpoints.
from .checkpoint import Checkpoint, build_model_from_checkpoint, load_checkpoint, save_checkpoint
from .data import Dataset, dataset_names, load_dataset
from .errors import GateFailed, InputError
from .models import build_model, model_names

# The function of the parameters everything measures, and its curvature.
from .hessian import HessianOperator, dense_hessian
from .objective import Objective

# Estimators on any symmetric operator with `@` (a dense tensor works too).
from .linalg import (
    EigenResult,
    SpectralDensity,
    TraceEstimate,
    bottom_eigenvalues,
    deflated_trace,
    extreme_eigenvalues,
    hutchinson_trace,
    hutchpp_trace,
    spectral_density,
    top_eigenvalues,
)

# Flatness beyond the Hessian.
from .measures import average_sharpness, epsilon_sharpness, rescale_relu_layers, worst_case_sharpness

# Training at any batch size, sweeps, and sharpness followed during training. The functions are
# sharpness.train.train(config) and sharpness.sweep.sweep(...): the attributes sharpness.train and
# sharpness.sweep are their modules, so `import sharpness.train` means one thing whatever was imported first.
from . import sweep, train
from .sweep import SweepResult
from .tracking import SharpnessTracker, progressive_sharpening_summary, stability_threshold
from .train import TrainConfig, TrainResult

# Loss landscapes: directions and grids (arrays); figures live in sharpness.plots.
from .landscape import LineResult, PlaneResult, interpolate, line, plane, random_direction

# One call from a model and its data to a versioned report.
from .analysis.report import AnalysisConfig, Report, analyze

# Across a sweep: does a measure rank the models by their generalization gap? sharpness.correlate is the
# module (sharpness.correlate.correlate(sweep_dir)), as sharpness.sweep is.
from . import correlate
