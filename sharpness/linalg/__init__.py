"""Estimators that work on any symmetric operator ``A``.

The operator contract: ``A.shape == (P, P)``, ``A.dtype``, ``A.device`` and ``A @ v`` for ``v`` of shape
``(P,)`` or ``(P, K)``. A dense :class:`torch.Tensor` satisfies it (the tests use that), and so does
:class:`sharpness.hessian.HessianOperator`. Vectors live on ``A.device`` in ``A.dtype``; the small
tridiagonal problems are solved in float64 with SciPy. Randomness comes only from ``seed=`` (an int or a
:class:`torch.Generator`). Every result is a frozen dataclass carrying its uncertainty and its cost.
"""

# Lanczos tridiagonalization with full reorthogonalization: the engine under eigen and density.
from .lanczos import LanczosProcess, LanczosResult, lanczos, tridiagonal_eigh

# Extreme eigenvalues: "top" = largest algebraic (descending), "bottom" = smallest algebraic (ascending).
from .eigen import ConvergenceWarning, EigenResult, bottom_eigenvalues, extreme_eigenvalues, top_eigenvalues

# Stochastic trace estimation: Hutchinson (1989) and Hutch++ (Meyer, Musco, Musco & Woodruff 2021).
from .trace import TraceEstimate, deflated_trace, hutchinson_trace, hutchpp_trace

# Spectral density by stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et al. 2019).
from .density import SpectralDensity, gaussian_smoothed_density, spectral_density

__all__ = [
    # lanczos
    "lanczos",
    "LanczosResult",
    "LanczosProcess",
    "tridiagonal_eigh",
    # eigen
    "extreme_eigenvalues",
    "top_eigenvalues",
    "bottom_eigenvalues",
    "EigenResult",
    "ConvergenceWarning",
    # trace
    "hutchinson_trace",
    "hutchpp_trace",
    "deflated_trace",
    "TraceEstimate",
    # density
    "spectral_density",
    "gaussian_smoothed_density",
    "SpectralDensity",
]
