"""Flatness measures beyond the Hessian; each takes an :class:`~sharpness.objective.Objective`.

* :func:`epsilon_sharpness` — Keskar et al. (ICLR 2017): largest relative loss increase in a box, full space
  or a random subspace, maximized by projected sign ascent from box corners (default) or by the paper's
  10 L-BFGS-B iterations (``method="paper"``), with the budget's outcome, each start's stopping status and
  the spread of the starts (and whether their local maxima disagree) in every result.
* :func:`worst_case_sharpness`, :func:`average_sharpness` — Andriushchenko et al. (ICML 2023): worst-case
  (projected ascent) and average-case (uniform on the same sphere by default) sharpness on one radius
  convention, plain or adaptive (scaled by |w|), m-sharpness.
* :func:`rescale_relu_layers` — Dinh et al. (ICML 2017): a function-preserving rescaling that changes raw
  sharpness but not adaptive sharpness.
"""

from .adaptive import AverageSharpness, WorstCaseSharpness, average_sharpness, worst_case_sharpness
from .epsilon import EpsilonSearch, EpsilonSharpness, epsilon_sharpness, random_subspace, search_epsilon_box
from .reparam import rescale_relu_layers

__all__ = [
    "EpsilonSharpness",
    "EpsilonSearch",
    "epsilon_sharpness",
    "search_epsilon_box",
    "random_subspace",
    "WorstCaseSharpness",
    "AverageSharpness",
    "worst_case_sharpness",
    "average_sharpness",
    "rescale_relu_layers",
]
