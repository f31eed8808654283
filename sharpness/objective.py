"""The objective every measure in the toolkit shares: mean loss over a fixed analysis set.

    f(θ) = Σ_i w_i ℓ(model(x_i; θ), y_i) / Σ_i w_i        (w_i = 1 unless weights are given)

evaluated with :func:`torch.func.functional_call` on a parameter dictionary, so the user's ``nn.Module`` is
never touched: the objective works on a private copy of the model (moved to the requested device and dtype)
and on detached copies of its parameters and buffers. The sum over samples is accumulated chunk by chunk and
divided by the total weight once, so every value, gradient and Hessian-vector product is identical whatever the
chunk size (a short last chunk cannot tilt the average, the bug that makes batch-mean averaging wrong).

Evaluation policy (recorded in :attr:`Objective.config`):

* ``bn_mode="eval"`` (default): the copy runs in eval mode, BatchNorm uses its running statistics and
  dropout is off, so f is a deterministic function of θ;
* ``bn_mode="train"``: BatchNorm layers normalize with the statistics of each chunk (their running statistics
  are neither used nor updated); everything else, dropout included, stays in eval mode. f then depends on the
  chunk size, which is recorded with it.

Losses: ``"cross-entropy"`` for integer class labels, ``"mse"`` for float targets (per-sample mean over output
dimensions, so a scalar-output linear model has the textbook Hessian H = 2/N·XᵀX), ``"auto"`` picks by the
target dtype.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .errors import InputError

LOSSES = ("cross-entropy", "mse")
BN_MODES = ("eval", "train")


@dataclass(frozen=True)
class Evaluation:
    """Loss and accuracy of one parameter point over the analysis set (accuracy is None for regression)."""

    loss: float
    accuracy: float | None


def per_sample_loss(kind: str, output: Tensor, target: Tensor) -> Tensor:
    """ℓ_i for each sample: ``"cross-entropy"`` −log softmax(z_i)[y_i], or ``"mse"`` mean_j (z_ij − t_ij)².

    Cross-entropy of logits z ∈ R^C and label y, with d = z − z_y (so d_y = 0) and any constant m:

        ℓ = logsumexp(z) − z_y = logsumexp(d) = m + log1p(Σ_{j≠y} exp(d_j − m) + expm1(−m)),

    an identity in d for every m; m = max_j d_j ≥ 0 at the point, then held constant (detached), so every
    exponent is ≤ 0 (no overflow, no inf in any value or derivative) and the derivatives of the formula are the
    exact derivatives of ℓ. Why it keeps its digits in float32:

    * correctly classified (m = 0): expm1(0) = 0 exactly and ℓ = log1p(S), S = Σ_{j≠y} exp(d_j), keeps all
      its digits however small ℓ is. The textbook logsumexp(z) − z_y computes log(1 + S) and cancels: in
      float32 it loses the whole loss below S ≈ 6e-8 (−24 % at a mean loss of 1e-6, measured;
      F.cross_entropy in float32 is off by a median 9 % per sample there);
    * misclassified (m > 0): ℓ ≥ m + log(1 + e^{−m}) > log 2 and both terms are ≥ 0: nothing cancels;
    * the gradient: ∂ℓ/∂d_j = p_j for j ≠ y, and ∂ℓ/∂z_y = −Σ_{j≠y} p_j is a sum of the small p_j rather than
      1 − p_y, which would round to 0 (the pitfall of a max-based form whose ∂/∂z_y is (1 − …) − 1).

    Shapes: ``output`` ``(N, C)``, ``target`` ``(N,)`` long → ``(N,)``. No ``torch.where`` over branches: one
    formula, so no discarded branch can feed inf·0 = NaN into a gradient. Cost, measured on a CPU (one thread,
    N = 1000, C = 10, float32): the loss alone takes 1.5–1.9× the cancelling formula for value, gradient and
    HVP, and 0.8–1.7× F.cross_entropy (which cancels too); through a 40-32-32-10 MLP the whole value, gradient
    or HVP costs 1.14–1.26× the old formula, through 40-256-256-10 0.95–1.06×. Every value, gradient and grid
    point of the toolkit goes through here.
    """
    check_loss_shapes(kind, output, target)
    if kind == "cross-entropy":
        return cross_entropy_and_argmax(output, target)[0]
    diff = output.reshape(output.shape[0], -1) - target.reshape(target.shape[0], -1)
    return diff.pow(2).mean(dim=1)


def check_loss_shapes(kind: str, output: Tensor, target: Tensor) -> None:
    """Refuse outputs and targets that do not pair up sample by sample, whatever the loss.

    Broadcasting would otherwise turn a mistake into a number: ``(N, 10)`` logits minus ``(N,)`` float labels
    is an ``(N, 10)`` difference, and its mean squared error is reported as if it meant something."""
    n = output.shape[0] if output.ndim else None
    if kind == "cross-entropy":
        if output.ndim != 2 or target.shape != (n,) or target.is_floating_point():
            raise InputError(
                f"cross-entropy expects outputs of shape (N, classes) and N integer labels, got outputs of shape "
                f"{tuple(output.shape)} and {'float' if target.is_floating_point() else 'integer'} targets of shape "
                f"{tuple(target.shape)}")
        return
    if target.ndim == 0 or n != target.shape[0] or output[0].numel() != target[0].numel():
        hint = " (class labels? store them as integers for cross-entropy)" if target.ndim == 1 and output.ndim == 2 else ""
        raise InputError(
            f"mse expects targets with the model's output shape {tuple(output.shape[1:])} per sample, got targets "
            f"of shape {tuple(target.shape[1:])} per sample{hint}")


def cross_entropy_and_argmax(output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(ℓ_i, k_i) for ``(N, C)`` logits: the loss of :func:`per_sample_loss` and an index of the largest logit.

    The index comes free with the max the stable formula needs, so a caller that also counts hits (the loss
    landscape's grid) needs neither a second reduction nor a formula of its own. It is the first maximal index
    of d = z − z_y, and ``k_i == y_i`` exactly when ``torch.argmax(z_i) == y_i`` (d_j = 0 iff z_j = z_y, since a
    difference of distinct floats never rounds to zero; d preserves the order of z up to rounding ties that
    never involve y).
    """
    d = output - output.gather(-1, target.unsqueeze(-1))
    m, k = d.detach().max(dim=-1, keepdim=True)  # m ≥ 0 because d_y = 0; a constant, see per_sample_loss
    # The y term leaves the sum by masking (exp(−inf) = 0, with zero derivatives), never by subtracting 1.
    rest = torch.exp((d - m).scatter(-1, target.unsqueeze(-1), -math.inf)).sum(dim=-1, keepdim=True)
    losses = m + torch.log1p(rest + torch.expm1(-m))
    return losses.squeeze(-1), k.squeeze(-1)


def _local(total: Tensor) -> Tensor:
    """The default reduction: this process holds the whole analysis set, so a local sum is the sum."""
    return total


def select_parameters(names: Sequence[str], patterns: str | Sequence[str] | None) -> list[str]:
    """Parameter names matching any of the comma-separated glob ``patterns`` (all names when None)."""
    if patterns is None:
        return list(names)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise InputError(
            f"--params {','.join(patterns)!s} matched no parameter; expected a glob over names such as "
            f"{', '.join(list(names)[:4])}"
        )
    return chosen


class Objective:
    """Mean loss over an analysis set as a function of a flat parameter vector θ ∈ R^P.

    Args:
        model: the user's module; it is copied, never modified.
        inputs, targets: the analysis set, ``(N, ...)`` and ``(N,)`` (labels) or ``(N, ...)`` (regression).
        loss: ``"cross-entropy"``, ``"mse"`` or ``"auto"`` (integer targets → cross-entropy).
        chunk_size: samples per forward pass; a memory knob only (default: all N at once).
        bn_mode: ``"eval"`` or ``"train"`` (see the module docstring).
        params: glob(s) selecting the parameters θ that vary (comma-separated string or list); the others
            are held fixed at their values. Default: every parameter.
        weights: optional non-negative per-sample weights ``(N,)``.
        dtype, device: where and in which floating type to compute (default: the model's).
        check_determinism: evaluate the first chunk twice and refuse a model whose outputs differ.
        reduce: the hook that makes the objective span several processes. Every sum over the local samples
            (the loss sum, the gradient sum, the correct count, the Hessian-vector product sum, the total
            weight) passes through ``reduce`` *before* it is divided by the total weight, so with the
            analysis set sharded across ranks and ``reduce=sharpness.distributed.all_reduce_sum`` each rank
            computes ``Σ_ranks Σ_{i∈shard} w_i ℓ_i / Σ_ranks Σ_{i∈shard} w_i`` — the same f(θ), ∇f and H @ v
            as one process over the whole set (up to summation order). It must not modify its argument in
            place; it is a collective, so every rank must make the same calls in the same order.
            Default: identity (one process). The determinism check stays local.

    Shapes: :attr:`numel` is P; flat vectors are ``(P,)`` in the order of :attr:`names`.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        *,
        loss: str = "auto",
        chunk_size: int | None = None,
        bn_mode: str = "eval",
        params: str | Sequence[str] | None = None,
        weights: Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        check_determinism: bool = True,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise InputError(f"expected as many targets as inputs, got {targets.shape[0]} and {inputs.shape[0]}")
        n = int(inputs.shape[0])
        if n == 0:
            raise InputError("expected a non-empty analysis set, got 0 samples")
        if loss == "auto":
            loss = "mse" if targets.is_floating_point() else "cross-entropy"
        if loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if bn_mode not in BN_MODES:
            raise InputError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        if chunk_size is not None and chunk_size < 1:
            raise InputError(f"chunk_size must be a positive integer, got {chunk_size}")

        first = next(iter(model.parameters()), None)
        if first is None:
            raise InputError("expected a model with parameters, got one with none")
        self.dtype = dtype or first.dtype
        self.device = torch.device(device) if device is not None else first.device
        self.loss_kind = loss
        self.bn_mode = bn_mode
        self.n_samples = n
        self.chunk_size = min(chunk_size or n, n)
        self.reduce: Callable[[Tensor], Tensor] = reduce or _local

        # A private copy: moving, casting or switching mode here can never leak into the user's model.
        module = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        module.eval()
        if bn_mode == "train":
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
                    m.track_running_stats = False
                    m.running_mean = None
                    m.running_var = None
                    m.num_batches_tracked = None
        for p in module.parameters():
            p.requires_grad_(False)
        self._module = module

        all_params = {k: v.detach().clone() for k, v in module.named_parameters()}
        self.names: list[str] = select_parameters(list(all_params), params)
        self.param_patterns = params
        self._fixed = {k: v for k, v in all_params.items() if k not in self.names}
        self._fixed.update({k: v.detach().clone() for k, v in module.named_buffers()})
        self.shapes = [all_params[k].shape for k in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.numel = sum(self.sizes)
        self.theta = torch.cat([all_params[k].reshape(-1) for k in self.names])

        self.inputs = inputs.to(self.device, dtype=self.dtype if inputs.is_floating_point() else None)
        if loss == "cross-entropy":
            if targets.is_floating_point():
                raise InputError("cross-entropy expects integer class labels, got floating-point targets")
            self.targets = targets.to(self.device, dtype=torch.long)
        else:
            self.targets = targets.to(self.device, dtype=self.dtype)
        if weights is None:
            self.weights = None
            local_weight = float(n)
        else:
            if weights.shape != (n,) or bool((weights < 0).any()):
                raise InputError(f"expected non-negative weights of shape ({n},), got shape {tuple(weights.shape)}")
            self.weights = weights.to(self.device, dtype=self.dtype)
            local_weight = float(self.weights.sum())
        # float64 whatever the compute dtype: a float32 count is inexact beyond 2^24 samples.
        self.total_weight = float(self.reduce(torch.tensor(local_weight, dtype=torch.float64, device=self.device)))
        if check_determinism:
            self._check_determinism()

    # --- flat vectors ------------------------------------------------------------------------------------
    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``(P,)`` → ``{name: tensor}`` views for the varying parameters."""
        if flat.shape != (self.numel,):
            raise ValueError(f"expected a flat vector of shape ({self.numel},), got {tuple(flat.shape)}")
        return {k: t.view(s) for k, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        """``{name: tensor}`` → ``(P,)`` in the order of :attr:`names`."""
        return torch.cat([tensors[k].reshape(-1) for k in self.names])

    @property
    def config(self) -> dict:
        """The evaluation policy, as recorded in reports."""
        return {
            "loss": self.loss_kind,
            "bn_mode": self.bn_mode,
            "chunk_size": self.chunk_size,
            "params": self.param_patterns,
            "num_params": self.numel,
            "n_samples": self.n_samples,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }

    def restrict(self, params: str | Sequence[str]) -> "Objective":
        """The same objective with only the parameters matching ``params`` varying (shares the data)."""
        new = copy.copy(self)
        names = select_parameters(self.names, params)
        current = self.unflatten(self.theta)
        new.names = names
        new.param_patterns = params
        new._fixed = {**self._fixed, **{k: v for k, v in current.items() if k not in names}}
        new.shapes = [current[k].shape for k in names]
        new.sizes = [math.prod(s) for s in new.shapes]
        new.numel = sum(new.sizes)
        new.theta = torch.cat([current[k].reshape(-1) for k in names])
        return new

    # --- evaluation ---------------------------------------------------------------------------------------
    def chunks(self) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """``(inputs, targets, weights)`` chunks of at most :attr:`chunk_size` samples, in order."""
        for start in range(0, self.n_samples, self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            yield self.inputs[sl], self.targets[sl], None if self.weights is None else self.weights[sl]

    def forward(self, params: dict[str, Tensor], inputs: Tensor) -> Tensor:
        """Model outputs for ``inputs`` with the varying parameters set to ``params``."""
        return functional_call(self._module, {**self._fixed, **params}, (inputs,))

    def chunk_loss_sum(self, params: dict[str, Tensor], inputs: Tensor, targets: Tensor, weights: Tensor | None) -> Tensor:
        """Σ_i w_i ℓ_i over one chunk (not divided by anything: chunks add up exactly)."""
        losses = per_sample_loss(self.loss_kind, self.forward(params, inputs), targets)
        return losses.sum() if weights is None else (losses * weights).sum()

    def _point(self, theta: Tensor | None) -> dict[str, Tensor]:
        return self.unflatten(self.theta if theta is None else theta.to(self.device, self.dtype))

    def value(self, theta: Tensor | None = None) -> Tensor:
        """f(θ) as a 0-dim tensor (θ defaults to the point the objective was built at)."""
        params = self._point(theta)
        with torch.no_grad():
            total = sum(self.chunk_loss_sum(params, *c) for c in self.chunks())
        return self.reduce(total) / self.total_weight

    def value_and_grad(self, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(f(θ), ∇f(θ)) with the gradient as a flat ``(P,)`` vector."""
        leaves = {k: t.detach().requires_grad_(True) for k, t in self._point(theta).items()}
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        grad = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        for chunk in self.chunks():
            # Plain reverse mode on leaf tensors: measurably less overhead per call than torch.func.grad.
            with torch.enable_grad():
                loss = self.chunk_loss_sum(leaves, *chunk)
                g = torch.autograd.grad(loss, list(leaves.values()), materialize_grads=True)
            total += loss.detach()
            grad += torch.cat([t.reshape(-1) for t in g])
        # One reduction of [loss sum, gradient sum] rather than two: one round trip between ranks.
        sums = self.reduce(torch.cat([total.reshape(1), grad])) / self.total_weight
        return sums[0], sums[1:]

    def evaluate(self, theta: Tensor | None = None) -> Evaluation:
        """Loss and (for classification) weighted accuracy at θ."""
        params = self._point(theta)
        # [loss sum, correct count], accumulated in float64 and reduced together in one call.
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for x, y, w in self.chunks():
                out = self.forward(params, x)
                losses = per_sample_loss(self.loss_kind, out, y)
                sums[0] += (losses.sum() if w is None else (losses * w).sum()).to(torch.float64)
                if self.loss_kind == "cross-entropy":
                    hits = (out.argmax(dim=1) == y).to(self.dtype)
                    sums[1] += (hits.sum() if w is None else (hits * w).sum()).to(torch.float64)
        loss_sum, correct = self.reduce(sums).tolist()
        accuracy = correct / self.total_weight if self.loss_kind == "cross-entropy" else None
        return Evaluation(loss=loss_sum / self.total_weight, accuracy=accuracy)

    def _check_labels(self, output: Tensor) -> None:
        if output.ndim != 2:
            raise InputError(f"cross-entropy expects model outputs of shape (N, classes), got {tuple(output.shape)}")
        classes = output.shape[1]
        low, high = int(self.targets.min()), int(self.targets.max())
        if low < 0 or high >= classes:
            raise InputError(
                f"expected class labels in [0, {classes}) for a model with {classes} outputs, got labels in [{low}, {high}]"
            )

    def _check_determinism(self) -> None:
        x, y, w = next(self.chunks())
        x, y = x[:256], y[:256]
        w = None if w is None else w[:256]
        params = self._point(None)
        try:
            with torch.no_grad():
                out = self.forward(params, x)
                if self.loss_kind == "cross-entropy":
                    self._check_labels(out)
                a = self.chunk_loss_sum(params, x, y, w)
                b = self.chunk_loss_sum(params, x, y, w)
        except InputError:
            raise
        except (RuntimeError, IndexError, ValueError) as err:
            # The first contact of model and data: a shape or label mismatch is the user's input, not a bug.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"the model could not be evaluated on the analysis set (samples of shape {tuple(x.shape[1:])}, "
                f"targets of shape {tuple(y.shape[1:])}): {first}"
            ) from None
        if not torch.isfinite(a):
            raise InputError(f"expected a finite loss at the checkpoint, got {float(a)}")
        if not torch.equal(a, b):
            raise InputError(
                f"the model is not deterministic under bn_mode={self.bn_mode!r}: two evaluations of the same "
                f"samples differ ({float(a)!r} vs {float(b)!r}); curvature of a random function is undefined"
            )
