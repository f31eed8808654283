"""Curvature of the objective: Hessian-vector products H @ v (and blocks H @ V), and the dense Hessian.

    H = ∇²f(θ),    f = the :class:`~sharpness.objective.Objective`'s mean loss over its analysis set

* :mod:`~sharpness.hessian.operator`: :class:`HessianOperator`, an object with ``@`` that the ``linalg``
  estimators take like a matrix (exact products by retained graph, double backward or forward-over-reverse,
  summed over chunks), and :func:`dense_hessian` for small models and for checking;
* :mod:`~sharpness.hessian.conv_double_backward`: the autodiff detail beside it, second derivatives through
  convolutions without the gradient of the data that PyTorch's own double backward computes and throws away
  (``HessianOperator(convolutions=...)`` chooses the route).
"""

from __future__ import annotations

from .operator import HessianOperator, dense_hessian

__all__ = ["HessianOperator", "dense_hessian"]
