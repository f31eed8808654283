"""Hessian-vector products of an :class:`~sharpness.objective.Objective`, and the dense Hessian beside them.

    H = ∇²f(θ) ∈ R^{P×P},    H @ v = ∂/∂ε ∇f(θ + εv) |_{ε=0}

summed over chunks and divided by the total sample weight once, so the product is exact for any chunk size.
Three ways to compute it, all exact (Pearlmutter 1994):

* ``"retained-graph"``: when the analysis set is one chunk, build the graph of ∇f once (``create_graph``) and
  answer each product with one backward pass through it — the cheapest per product (1.5–2.2× a gradient in
  benchmarks/README.md, one CPU thread, against 2.4–3.0× for a fresh double backward of the same batch), at the
  memory of one gradient graph, which a single chunk needs anyway;
* ``"reverse-over-reverse"``: a fresh double backward per chunk, for streamed chunks (the automatic choice:
  measured faster on CPU than forward-over-reverse, and it needs no forward-mode AD rules);
* ``"forward-over-reverse"``: ``torch.func.jvp`` of ``torch.func.grad``, chunk by chunk, by name.

Blocks: ``H @ V`` for V of shape (P, K) gives the K products exactly as K calls of ``H @ v`` would, up to
float rounding, but streamed chunks pay their forward pass and gradient graph once per chunk for all K
columns (reverse-over-reverse: K backward passes through one ``create_graph`` gradient; forward-over-reverse:
one ``vmap`` over the K tangents), which is where a fresh product spends most of its time
(benchmarks/hvp_blocks.py). The retained graph answers each column with its one backward pass already.
Hutch++ and stochastic Lanczos quadrature call ``H @ V`` with blocks; Lanczos for extreme eigenvalues is
one vector at a time.

An optional weight-decay term gives (H + λI) @ v.

:class:`HessianOperator` exposes the small operator surface every estimator in :mod:`sharpness.linalg`
takes: ``shape``, ``dtype``, ``device`` and ``H @ v`` for ``(P,)`` or ``(P, K)``.
:func:`dense_hessian` builds the full matrix for small models; tests use it as the reference.
"""

from __future__ import annotations


import torch
from torch import Tensor

from .objective import Objective

MODES = ("auto", "retained-graph", "forward-over-reverse", "reverse-over-reverse")


class HessianOperator:
    """The Hessian of ``objective`` at its point θ as a linear operator.

    Args:
        objective: the loss over the analysis set, with the parameters that vary.
        weight_decay: λ ≥ 0; the operator is H + λI (the Hessian of f + λ/2‖θ‖²).
        mode: ``"auto"`` (retained graph for a single chunk, double backward for streamed chunks), or a
            method by name (module docstring).

    Attributes:
        num_matvecs: Hessian-vector products computed so far (a column of a block counts as one).

    Example:
        Mean squared error of a linear model, whose Hessian is known in closed form, H = 2/N·XᵀX:

        >>> import torch
        >>> from torch import nn
        >>> from sharpness import Objective, dense_hessian
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(8, 3, generator=g, dtype=torch.float64)
        >>> y = torch.randn(8, 1, generator=g, dtype=torch.float64)
        >>> objective = Objective(nn.Linear(3, 1, bias=False).double(), x, y)   # float targets → "mse"
        >>> H = HessianOperator(objective)
        >>> H.shape, H.mode                        # one chunk: "auto" keeps the gradient graph
        ((3, 3), 'retained-graph')
        >>> v = torch.randn(3, generator=g, dtype=torch.float64)
        >>> torch.allclose(H @ v, 2 / 8 * x.T @ (x @ v))                      # v: (P,)
        True
        >>> torch.allclose(H @ torch.eye(3, dtype=torch.float64), dense_hessian(objective))  # a block (P, K)
        True
        >>> H.num_matvecs                          # 1 vector + 3 columns
        4
    """

    def __init__(self, objective: Objective, *, weight_decay: float = 0.0, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
        self.objective = objective
        self.weight_decay = float(weight_decay)
        self.mode = mode
        self.num_matvecs = 0
        self._point = objective.unflatten(objective.theta)
        self._graph: tuple[list[Tensor], list[Tensor], list[int]] | None = None
        if mode == "auto":
            # benchmarks/results: a streamed double backward costs 4.1× a gradient, jvp-of-grad 5.3× (MLP,
            # 85k parameters, 2 CPU cores); one chunk reuses its gradient graph (2.0×).
            one_chunk = objective.chunk_size >= objective.n_samples
            self.mode = "retained-graph" if one_chunk else "reverse-over-reverse"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.objective.numel, self.objective.numel)

    @property
    def dtype(self) -> torch.dtype:
        return self.objective.dtype

    @property
    def device(self) -> torch.device:
        return self.objective.device

    def __matmul__(self, v: Tensor) -> Tensor:
        P = self.objective.numel
        if v.ndim not in (1, 2) or v.shape[0] != P:
            raise ValueError(f"expected a vector of shape ({P},) or a block ({P}, K), got {tuple(v.shape)}")
        v = v.to(self.device, self.dtype)
        if v.ndim == 1:
            sums = self._hvp_sum(v)
        elif v.shape[1] == 1:
            sums = self._hvp_sum(v[:, 0])[:, None]
        else:
            sums = self._block_sum(v)
        # Σ over the local samples → objective.reduce (across ranks; one call for a whole block) → mean.
        out = self.objective.reduce(sums) / self.objective.total_weight
        if self.weight_decay:
            out = out + self.weight_decay * v
        return out

    def _hvp_sum(self, v: Tensor) -> Tensor:
        """Σ_i w_i ∇²ℓ_i(θ) v over the local samples (not yet reduced or divided)."""
        if self.mode == "retained-graph":
            out = self._retained_graph(v)
        elif self.mode == "forward-over-reverse":
            out = self._forward_over_reverse(v)
        else:
            out = self._reverse_over_reverse(v)
        self.num_matvecs += 1
        return out

    def _block_sum(self, V: Tensor) -> Tensor:
        """Σ_i w_i ∇²ℓ_i(θ) V for a (P, K) block, (P, K), with each chunk's forward pass and gradient graph
        built once for all K columns (module docstring, "Blocks")."""
        K = V.shape[1]
        if self.mode == "retained-graph":
            out = torch.stack([self._retained_graph(c) for c in V.unbind(dim=1)], dim=1)
        elif self.mode == "forward-over-reverse":
            out = self._forward_over_reverse_block(V)
        else:
            out = self._reverse_over_reverse_block(V)
        self.num_matvecs += K
        return out

    def _reverse_over_reverse_block(self, V: Tensor) -> Tensor:
        obj = self.objective
        K = V.shape[1]
        total = torch.zeros(K, obj.numel, dtype=self.dtype, device=self.device)
        columns = V.T.contiguous()  # (K, P): row k is the k-th vector
        for chunk in obj.chunks():
            with torch.enable_grad():
                theta = obj.theta.detach().clone().requires_grad_(True)
                loss = obj.chunk_loss_sum(obj.unflatten(theta), *chunk)
                (g,) = torch.autograd.grad(loss, theta, create_graph=True)
                if not g.requires_grad:  # the gradient does not depend on θ: a zero Hessian
                    continue
                for k in range(K):  # K backward passes through one gradient graph
                    (hv,) = torch.autograd.grad(g, theta, grad_outputs=columns[k], retain_graph=k < K - 1)
                    total[k] += hv.detach()
        return total.T

    def _forward_over_reverse_block(self, V: Tensor) -> Tensor:
        # vmap over the K tangents of jvp(grad): the primal forward and backward run once per chunk.
        obj = self.objective
        K = V.shape[1]
        tangents = {k: t.T.reshape(K, *s) for k, t, s in zip(obj.names, V.split(obj.sizes, dim=0), obj.shapes)}
        grad_fn = torch.func.grad(obj.chunk_loss_sum)
        total = torch.zeros(K, obj.numel, dtype=self.dtype, device=self.device)
        for chunk in obj.chunks():
            def column(t, chunk=chunk):
                return torch.func.jvp(lambda p: grad_fn(p, *chunk), (self._point,), (t,))[1]

            hv = torch.func.vmap(column)(tangents)
            total += torch.cat([hv[k].reshape(K, -1) for k in obj.names], dim=1)
        return total.T

    def _forward_over_reverse(self, v: Tensor) -> Tensor:
        obj = self.objective
        tangent = obj.unflatten(v)
        grad_fn = torch.func.grad(obj.chunk_loss_sum)
        total = torch.zeros(obj.numel, dtype=self.dtype, device=self.device)
        for chunk in obj.chunks():
            _, hv = torch.func.jvp(lambda p: grad_fn(p, *chunk), (self._point,), (tangent,))
            total += obj.flatten(hv)
        return total

    def _retained_graph(self, v: Tensor) -> Tensor:
        obj = self.objective
        if self._graph is None:
            leaves = [t.detach().clone().requires_grad_(True) for t in self._point.values()]
            with torch.enable_grad():
                (chunk,) = obj.chunks()
                loss = obj.chunk_loss_sum(dict(zip(obj.names, leaves)), *chunk)
                grads = torch.autograd.grad(loss, leaves, create_graph=True, materialize_grads=True)
            # A gradient entry that does not depend on θ has a zero Hessian row; only the others are kept.
            keep = [i for i, g in enumerate(grads) if g.requires_grad]
            self._graph = (leaves, [grads[i] for i in keep], keep)
        leaves, grads, keep = self._graph
        if not grads:
            return torch.zeros_like(v)
        tangent = list(obj.unflatten(v).values())
        hv = torch.autograd.grad(
            grads, leaves, grad_outputs=[tangent[i] for i in keep], retain_graph=True, materialize_grads=True
        )
        return torch.cat([h.reshape(-1) for h in hv])

    def _reverse_over_reverse(self, v: Tensor) -> Tensor:
        obj = self.objective
        total = torch.zeros(obj.numel, dtype=self.dtype, device=self.device)
        for chunk in obj.chunks():
            with torch.enable_grad():
                theta = obj.theta.detach().clone().requires_grad_(True)
                loss = obj.chunk_loss_sum(obj.unflatten(theta), *chunk)
                (g,) = torch.autograd.grad(loss, theta, create_graph=True)
                (hv,) = torch.autograd.grad(g, theta, grad_outputs=v)
            total += hv.detach()
        return total

    def __repr__(self) -> str:
        return f"HessianOperator(P={self.objective.numel}, dtype={self.dtype}, device={self.device}, mode={self.mode})"


def dense_hessian(objective: Objective, *, weight_decay: float = 0.0, block_size: int = 64) -> Tensor:
    """The full ``(P, P)`` Hessian, built ``block_size`` columns at a time — for small models and as the
    tests' reference.

    Each block is H·[e_j … e_{j+b−1}], forward-over-reverse (``jvp`` of ``grad``) vmapped over the b basis
    vectors and summed over the objective's chunks, so the working memory is b tangent copies of one chunk's
    activations on top of the P² result. ``torch.func.hessian`` vmaps all P directions at once: on the
    README's 2 410-parameter MLP over 1 438 samples (float64) the process peaked at 5.5 GB of RSS for a 46 MB
    matrix; in blocks of 64 it peaks at 0.75 GB, 0.32 GB of which the interpreter, torch and the data held
    before the call (``/usr/bin/time -v``; 25 s against 21 s on 2 CPU threads). Costs P Hessian-vector products; refuse
    it for large P yourself.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    obj = objective
    theta = obj.theta
    P = obj.numel
    grad_fn = torch.func.grad(obj.chunk_loss_sum)
    point = obj.unflatten(theta)
    H = torch.empty(P, P, dtype=theta.dtype, device=theta.device)
    for start in range(0, P, block_size):
        stop = min(start + block_size, P)
        basis = torch.zeros(stop - start, P, dtype=theta.dtype, device=theta.device)
        basis[:, start:stop] = torch.eye(stop - start, dtype=theta.dtype, device=theta.device)
        block = torch.zeros_like(basis)
        for chunk in obj.chunks():
            def hvp(v: Tensor, chunk=chunk) -> Tensor:
                tangent = obj.unflatten(v)
                _, hv = torch.func.jvp(lambda p: grad_fn(p, *chunk), (point,), (tangent,))
                return obj.flatten(hv)

            block += torch.func.vmap(hvp)(basis)
        H[start:stop] = block  # rows = columns: H is symmetric
    # The Hessian of the local sum, reduced across ranks outside the transforms (a collective cannot be traced).
    H = obj.reduce(H) / obj.total_weight
    if weight_decay:
        H = H + weight_decay * torch.eye(P, dtype=H.dtype, device=H.device)
    return H
