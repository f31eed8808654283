"""Follow the curvature of the loss during training: λ_max (and more) every k steps, cheaply, without side effects.

Cohen et al. (ICLR 2021, "Gradient descent on neural networks typically occurs at the edge of stability")
found that under full-batch gradient descent with step η the top Hessian eigenvalue λ_max first rises
(*progressive sharpening*) until it reaches the stability threshold 2/η and then hovers there while the loss
keeps falling non-monotonically (the *edge of stability*); Keskar et al. (ICLR 2017, Fig. 6) saw large-batch
sharpness climb as the loss falls while small-batch sharpness stays flat. :class:`SharpnessTracker` measures
that series during any training run:

* **A fixed analysis batch.** ``analysis_samples`` training samples are drawn *once* with the tracker's own
  seeded generator (:func:`sharpness.analysis.report.select_analysis_set`, the same rule ``sharpness analyze`` uses),
  so every measurement is of the same function f(θ) = mean loss over that batch and the values are
  comparable across steps. Its SHA-256 is recorded.
* **Cheap measurements.** Lanczos (:func:`sharpness.linalg.extreme_eigenvalues`) is warm-started from the
  previous measurement's Ritz vectors: between two measurements the Hessian moves a little, so the old top
  eigenvector is already close to the new one and a few Hessian-vector products (HVPs) converge it. The start
  vector is v₀ = Σ_j u_j over the previous top-k (and bottom) Ritz vectors u_j, so one Krylov space serves
  every requested eigenvalue. The stopping rule (relative eigenvalue error ≤ ``tol``) is that of a cold start;
  a warm start also gets a random component and must take k + 5 steps (a cold one k + 10, or fewer when its
  miss certificate holds) before it may stop, which is what keeps it from stopping at λ₂ when the top two
  eigenvalues cross between measurements and v₀ is the old top eigenvector, now the second (see "Warm starts"
  in :mod:`sharpness.linalg.eigen`).
* **Verified.** Ritz values are lower bounds of λ_max, and either start can still stop at λ₂ when the top
  two are within a few per cent (a warm start at a close crossing; a cold start by chance: at tol = 1e-3 on
  the edge-of-stability run, η = 2, 2 of 201 cold measurements came out 1–5 % low). So every ``verify_every``-th
  warm-started measurement in a row (default 10; 0 or ``None``: never) also runs a cold start from an
  independent random vector at the same ``tol`` and records ``verified``, ``cold_lambda_max`` and its HVPs
  (``verify_matvecs``, included in ``lanczos_matvecs`` and ``num_matvecs``). Each eigenvalue keeps the more
  extreme of the two values (the larger at the top, the smaller at the bottom: both are inner bounds by
  Cauchy interlacing), with that run's error estimate and converged flag. When they differ by more than
  their error estimates allow (each floored at ``tol``·|λ|), ``verify_disagreed`` is True, ``verify_note``
  says which values and what was kept, a warning is logged, and both runs' vectors seed the next warm
  start. A warm start with a check every 10 costs fewer products than cold starts throughout; the products
  per measurement on experiments/edge_of_stability.py's run are in benchmarks/README.md.
* **No side effects on training.** Every measurement goes through :class:`sharpness.objective.Objective`,
  which evaluates a deep copy of the model in eval mode via ``torch.func.functional_call`` (BatchNorm running
  statistics, dropout off): the model's parameters, buffers, ``.grad``, ``requires_grad`` and train mode and
  the optimizer are never touched. The torch (CPU and CUDA), NumPy and Python global RNG states are saved
  before and restored after each measurement (the Objective should not draw from them, but a user's model
  might in its ``forward``); all of the tracker's own randomness comes from seeds derived from
  (``seed``, step). Training with the tracker therefore ends with the same weights, bit for bit, as without.

Each measurement appends a plain dict to :attr:`SharpnessTracker.records` (see :data:`RECORD_FIELDS`).

Stability threshold (recorded per measurement as ``eos_threshold`` with the formula in ``eos_formula``): on a
quadratic with curvature λ along a direction,

* gradient descent θ ← θ − η∇f is stable iff λ < 2/η;
* heavy-ball momentum as in ``torch.optim.SGD`` (v ← βv + g, θ ← θ − ηv): the characteristic polynomial
  z² − (1 + β − ηλ)z + β has a root at −1 when ηλ = 2 + 2β, so it is stable iff λ < (2 + 2β)/η (the
  threshold Cohen et al. 2021 use for momentum);
* Nesterov momentum as in ``torch.optim.SGD(nesterov=True)`` (v ← βv + g, θ ← θ − η(g + βv)): the
  iteration's characteristic polynomial z² − (1+β)(1−ηλ)z + β(1−ηλ) has a root at −1 when
  ηλ = (2 + 2β)/(1 + 2β), so the threshold is (2 + 2β)/((1 + 2β)η);
* ``dampening`` d scales the gradient by (1 − d), i.e. η → η(1 − d); L2 ``weight_decay`` w adds w·I to the
  Hessian, so the threshold on λ_max of the loss is the above minus w;
* Adam and other adaptive methods: no threshold on λ_max of H is recorded (``None``). Their "adaptive edge of
  stability" (Cohen et al. 2022) concerns the *preconditioned* Hessian P⁻¹H, which this tracker does not
  measure.

``two_over_lr`` (2/η) is recorded too, as the plain-GD reference.

Modules: :mod:`~sharpness.tracking.tracker` (:class:`SharpnessTracker`), :mod:`~sharpness.tracking.threshold`
(:func:`stability_threshold`), :mod:`~sharpness.tracking.rng` (RNG isolation and derived seeds),
:mod:`~sharpness.tracking.records` (the record's fields, :func:`record_scalars`) and
:mod:`~sharpness.tracking.summary` (:func:`progressive_sharpening_summary`). Every name is importable from
``sharpness.tracking``.
"""

from __future__ import annotations

# Re-exports: the names of the single-file sharpness/tracking.py (tests use the private stream and helpers).
from .records import RECORD_FIELDS, SCALAR_FIELDS, SCHEMA, record_scalars  # noqa: F401
from .rng import _LANCZOS_STREAM, _TRACE_STREAM, _VERIFY_STREAM, _seed_for, preserved_rng  # noqa: F401
from .summary import SharpeningSummary, progressive_sharpening_summary
from .threshold import stability_threshold
from .tracker import SharpnessTracker, _reconcile  # noqa: F401

__all__ = [
    "SharpnessTracker",
    "SharpeningSummary",
    "RECORD_FIELDS",
    "progressive_sharpening_summary",
    "stability_threshold",
    "preserved_rng",
    "record_scalars",
]
