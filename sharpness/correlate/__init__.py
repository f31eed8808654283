"""Does sharpness predict generalization? Rank correlations of measures with the gap across a sweep.

:func:`correlate` measures every model of a :func:`sharpness.sweep.sweep` directory and ranks the measures by
Kendall's τ with the generalization gap and by the granulated Ψ of Jiang et al. (ICLR 2020, "Fantastic
Generalization Measures and Where to Find Them"); :mod:`~sharpness.correlate.ranks` holds the statistics,
:mod:`~sharpness.correlate.flatness` the PAC-Bayes σ, :mod:`~sharpness.correlate.norms` the Fisher-Rao norm, :mod:`~sharpness.correlate.output` the files and table,
:mod:`~sharpness.correlate.figure` the figure.
"""

from .flatness import pac_bayes_sigma
from .norms import fisher_rao_norm
from .ranks import bootstrap_tau, granulated_psi, kendall_tau
from .study import AXES, GAPS, MEASURES, CorrelateResult, correlate

__all__ = ["correlate", "CorrelateResult", "kendall_tau", "granulated_psi", "bootstrap_tau", "pac_bayes_sigma", "fisher_rao_norm",
           "MEASURES", "GAPS", "AXES"]
