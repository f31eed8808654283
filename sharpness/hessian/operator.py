"""Hessian-vector products of an :class:`~sharpness.objective.Objective`, and the dense Hessian beside them.

    H = ∇²f(θ) ∈ R^{P×P},    H @ v = ∂/∂ε ∇f(θ + εv) |_{ε=0}

summed over chunks and divided by the total sample weight once, so the product is exact for any chunk size.
Three ways to compute it, all exact (Pearlmutter 1994):

* ``"retained-graph"``: when the analysis set is one chunk, build the graph of ∇f once (``create_graph``) and
  answer each product with one backward pass through it — a product then skips the forward pass and the
  first backward that a fresh double backward repeats (the measured ratios to a gradient are in
  benchmarks/README.md), at the memory of one gradient graph, which a single chunk needs anyway;
* ``"reverse-over-reverse"``: a fresh double backward per chunk;
* ``"forward-over-reverse"``: ``torch.func.jvp`` of ``torch.func.grad``, chunk by chunk.

``"auto"`` (the default) is a fixed rule, so an analysis reruns bit for bit: the retained graph for one chunk,
a fresh double backward (reverse-over-reverse) for streamed chunks, singles and blocks alike. ``"fastest"``
(opt-in) chooses by measurement instead, separately for single products and for blocks, because
the fastest mode depends on the model: for (P, K) blocks over streamed chunks forward-over-reverse wins
on a convnet and reverse-over-reverse on an MLP (benchmarks/hvp_blocks.py; numbers in benchmarks/README.md).
Single products: the first one per candidate
mode (:data:`SINGLE_CANDIDATES`, in order) is computed by that candidate and timed — except that for one
chunk a fresh double backward is the retained graph's build plus one backward through it, so its time is
that sum, measured on the first retained product, and never costs a product of its own. Blocks: the first block
calls are cut into contiguous pieces that go to the candidates (:data:`BLOCK_CANDIDATES`) in turn until each
has :data:`MEASURE_ROUNDS` timings per column (two: a first one-column piece, which absorbs one-time setup
such as torch.func's first vmapped call, then a piece as wide as the block allows, so a vmapped mode is timed
near the width it will be used at; the minimum counts); the rest of the block goes to the winner. Wall clock; on CUDA
with a synchronize before and after each timed piece — a handful of host syncs in all, none afterwards. The
timed products are the answers asked for, not extra work. Every mode computes the same exact product, so the
choice changes results only at float rounding — but it does change them between runs, as the clock decides,
which is why it is not the default (tests/test_hessian.py checks all modes against each other and
the dense Hessian in float64). :attr:`HessianOperator.selection` records the candidates, the best measured
seconds per product (per column for blocks) and the choice; ``analyze`` copies it to
``report.hessian["mode_selection"]``. Before measurement, :attr:`HessianOperator.mode` and
:attr:`~HessianOperator.block_mode` hold the prior defaults (retained graph for one chunk, reverse-over-reverse for streamed chunks).

Blocks: ``H @ V`` for V of shape (P, K) gives the K products exactly as K calls of ``H @ v`` would, up to
float rounding, but streamed chunks pay their forward pass and gradient graph once per chunk for all K
columns (reverse-over-reverse: K backward passes through one ``create_graph`` gradient; forward-over-reverse:
one ``vmap`` over the K tangents, in sub-blocks of at most :attr:`HessianOperator.max_vmap_columns`
columns, since each column carries its own tangent activations), which is where a fresh product spends most
of its time (benchmarks/hvp_blocks.py). The retained graph answers each column with its one backward pass.
Hutchinson, Hutch++, the deflated trace's residual probes and stochastic Lanczos quadrature call ``H @ V``
with blocks; Lanczos for extreme eigenvalues is one vector at a time.

For a model with convolutions, both double-backward modes build their gradient graphs under
:class:`~sharpness.hessian.conv_double_backward.rerouted_convolutions`: PyTorch's second derivative of a
convolution also computes the gradient of its input, which at a network's first convolution is the data's and
is thrown away (the saving is measured in benchmarks/README.md, "First-convolution shortcut").

An optional weight-decay term gives (H + λI) @ v.

:class:`HessianOperator` exposes the small operator surface every estimator in :mod:`sharpness.linalg`
takes: ``shape``, ``dtype``, ``device`` and ``H @ v`` for ``(P,)`` or ``(P, K)``.
:func:`dense_hessian` builds the full matrix for small models; tests use it as the reference.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any, Callable

import torch
from torch import Tensor

from .conv_double_backward import has_convolutions, rerouted_convolutions
from ..errors import InputError
from ..objective import Objective

MODES = ("auto", "fastest", "retained-graph", "forward-over-reverse", "reverse-over-reverse")
#: How the double-backward modes differentiate convolutions (HessianOperator's ``convolutions``; a model without
#: convolution modules always takes PyTorch's own path, "pytorch", which costs it no dispatch).
CONVOLUTION_ROUTES = ("rerouted", "first", "pytorch")

#: Modes ``"fastest"`` times for single products, by (one chunk?). For one chunk the retained graph's first
#: product is timed and a fresh double backward's time is taken as that graph's build plus that product
#: (which is what it computes), so no product is spent on it.
SINGLE_CANDIDATES = {True: ("retained-graph", "reverse-over-reverse"), False: ("reverse-over-reverse", "forward-over-reverse")}
#: Modes ``"fastest"`` times for (P, K) blocks, by (one chunk?).
BLOCK_CANDIDATES = {True: ("forward-over-reverse", "retained-graph"), False: ("reverse-over-reverse", "forward-over-reverse")}
#: Default cap on the columns of one vmapped forward-over-reverse sub-block (each column holds a tangent copy
#: of the chunk's activations); benchmarks/hvp_blocks.py measured K = 16 as past the knee on both problems.
MAX_VMAP_COLUMNS = 16
#: Timings per candidate before ``"fastest"`` chooses: singles once (each costs a whole product, and the slower
#: candidate is usually much slower); blocks twice, on pieces of a block (the first vmapped call carries
#: torch.func's one-time setup, which a second timing leaves out of the minimum).
MEASURE_ROUNDS = {"single": 1, "block": 2}


def vmap_columns_within_budget(objective: Objective) -> int:
    """How many vmapped forward-over-reverse columns fit the objective's memory budget beside one chunk's graph.

    Each column carries its own tangent copy of a chunk's activations, about one chunk's second-order graph
    (``objective.chunk_policy["graph_bytes_per_sample"]`` × chunk size, safety factor included), and the
    chunk's own graph is held too (the retained graph, or the primal of jvp-of-grad). So the cap is
    ⌊budget / chunk graph⌋ − 1, at least 1; unbounded (a large int) when the objective did not measure its
    graph (``chunk_size`` given, a streamed loader, the probe failed).
    """
    policy = getattr(objective, "chunk_policy", None) or {}
    per_sample, budget = policy.get("graph_bytes_per_sample"), policy.get("memory_budget_bytes")
    if not per_sample or not budget:
        return 2**31
    chunk_graph = per_sample * min(objective.chunk_size, objective.n_samples)
    return max(1, int(budget // chunk_graph) - 1)


def no_second_derivative(err: RuntimeError) -> InputError | None:
    """The one-line refusal for autograd's "derivative for aten::OP is not implemented" (an op whose backward
    has no derivative: no Hessian-vector product exists through it); None for any other error."""
    match = re.search(r"derivative for (\S+) is not implemented", str(err))
    if match is None:
        return None
    op = match.group(1)
    hint = ("an attention kernel chosen inside the model (sdpa_kernel, flash_attention_2) overrides the math kernel "
            "the analysis selects: use the default scaled_dot_product_attention (Hugging Face: "
            "attn_implementation='sdpa' or 'eager')" if "attention" in op else
            "write that part of the model or loss from differentiable ops")
    return InputError(f"the model or loss calls {op}, which has no second derivative in PyTorch, so the Hessian "
                      f"cannot be applied; expected differentiable ops: {hint}")


class HessianOperator:
    """The Hessian of ``objective`` at its point θ as a linear operator.

    Args:
        objective: the loss over the analysis set, with the parameters that vary.
        weight_decay: λ ≥ 0; the operator is H + λI (the Hessian of f + λ/2‖θ‖²).
        mode: ``"auto"`` (the fixed rule of the module docstring: bit-identical reruns), ``"fastest"`` (chosen
            by timing the candidates on the first products), or a method by name for singles and blocks.
        max_vmap_columns: columns per vmapped forward-over-reverse sub-block (a memory cap; default 16), further
            capped by :func:`vmap_columns_within_budget` when the objective measured its graph's size.
        convolutions: how the double-backward modes differentiate convolutions (:data:`CONVOLUTION_ROUTES`):
            ``"rerouted"`` (default) first convolutions without the data's gradient and plain inner ones on a
            CPU as forward convolutions, ``"first"`` the first ones only, ``"pytorch"`` PyTorch's own
            double backward. All three are exact; they differ in speed (benchmarks/conv_shortcut.py).

    Attributes:
        mode: the method single products use (under ``"fastest"``: the ``"auto"`` rule's until measured).
        block_mode: the method (P, K) blocks use (likewise).
        selection: under ``"fastest"``, ``{"single": {...}, "block": {...}}``, each with the ``candidates``, the
            ``samples`` (seconds per product, per column for blocks, of each timing), their minimum as
            ``seconds``, and the ``chosen`` mode (``None`` until every candidate has its timings), plus
            ``failed`` (mode → error line) for a candidate that could not run on the model and was dropped;
            ``None`` otherwise.
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

    def __init__(self, objective: Objective, *, weight_decay: float = 0.0, mode: str = "auto",
                 max_vmap_columns: int = MAX_VMAP_COLUMNS, convolutions: str = "rerouted") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if convolutions not in CONVOLUTION_ROUTES:
            raise ValueError(f"convolutions must be one of {', '.join(CONVOLUTION_ROUTES)}, got {convolutions!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
        if isinstance(max_vmap_columns, bool) or not isinstance(max_vmap_columns, int) or max_vmap_columns < 1:
            raise ValueError(f"max_vmap_columns must be an int >= 1, got {max_vmap_columns!r}")
        self.objective = objective
        self.convolutions = convolutions if has_convolutions(objective.module) else "pytorch"
        self.weight_decay = float(weight_decay)
        self.max_vmap_columns = min(max_vmap_columns, vmap_columns_within_budget(objective))
        self.num_matvecs = 0
        self._point = objective.unflatten(objective.theta)
        self._graph: tuple[list[Tensor], list[Tensor], list[int]] | None = None
        self._build_seconds: float | None = None  # under "fastest": how long the retained graph took to build
        one_chunk = objective.chunk_size >= objective.n_samples
        if mode in ("auto", "fastest"):
            # The fixed rule (and "fastest"'s until measured): one chunk reuses its gradient graph; streamed
            # chunks a fresh double backward (benchmarks/results: 4.1× a gradient against jvp-of-grad's 5.3× on the MLP).
            self.mode = "retained-graph" if one_chunk else "reverse-over-reverse"
            self.block_mode = self.mode
        if mode == "auto":
            self.selection: dict[str, dict[str, Any]] | None = None
        elif mode == "fastest":
            self.selection = {
                kind: {"candidates": list(c[one_chunk]), "seconds": {}, "samples": {m: [] for m in c[one_chunk]},
                       "chosen": None}
                for kind, c in (("single", SINGLE_CANDIDATES), ("block", BLOCK_CANDIDATES))
            }
        else:
            self.mode = self.block_mode = mode
            self.selection = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.objective.numel, self.objective.numel)

    @property
    def dtype(self) -> torch.dtype:
        return self.objective.dtype

    @property
    def device(self) -> torch.device:
        return self.objective.device

    #: Every product is a new tensor the caller owns (Lanczos updates it in place instead of copying it).
    fresh_products = True

    def __matmul__(self, v: Tensor) -> Tensor:
        return self._product(v, None)

    def matvec_into(self, v: Tensor, out: Tensor) -> Tensor:
        """``H @ v`` for one vector ``v`` (P,), written into ``out`` (P,) and returned.

        ``out`` is a buffer the caller owns, of the operator's dtype and device, that shares no memory with
        ``v``; whatever it held is overwritten. An estimator that recycles a few such buffers makes no new
        P-vector per product: on a CPU a fresh tensor of 10⁷–10⁸ entries costs more in page faults than
        the arithmetic that fills it (benchmarks/README.md, "Scale").
        """
        P = self.objective.numel
        if out.shape != (P,) or out.dtype != self.dtype or out.device != self.device:
            raise ValueError(f"expected out of shape ({P},), dtype {self.dtype} on {self.device}, "
                             f"got shape {tuple(out.shape)}, dtype {out.dtype} on {out.device}")
        if v.ndim != 1 or v.data_ptr() == out.data_ptr():
            raise ValueError("matvec_into takes one vector (P,) and an out buffer that is not that vector")
        return self._product(v, out)

    def _product(self, v: Tensor, out: Tensor | None) -> Tensor:
        P = self.objective.numel
        if v.ndim not in (1, 2) or v.shape[0] != P:
            raise ValueError(f"expected a vector of shape ({P},) or a block ({P}, K), got {tuple(v.shape)}")
        v = v.to(self.device, self.dtype)
        try:
            if v.ndim == 1:
                sums = self._hvp_sum(v, out)
            elif v.shape[1] == 1:
                sums = self._hvp_sum(v[:, 0])[:, None]
            else:
                sums = self._block_sum(v)
        except RuntimeError as err:
            refusal = no_second_derivative(err)
            if refusal is None:
                raise
            raise refusal from None
        # Σ over the local samples → objective.reduce (across ranks; one call for a whole block) → mean.
        # In place: sums is this call's own tensor (or reduce's fresh output), and at P = 10⁸ every extra
        # vector is 0.4 GB.
        reduced = self.objective.reduce(sums)
        if out is not None and reduced is not out:
            reduced = out.copy_(reduced)
        reduced.div_(self.objective.total_weight)
        if self.weight_decay:
            reduced.add_(v, alpha=self.weight_decay)
        return reduced

    def _second_order(self):
        """The context of a graph built to be differentiated twice (module docstring, first convolutions)."""
        if self.convolutions == "pytorch":
            return contextlib.nullcontext()
        return rerouted_convolutions(inner=self.convolutions == "rerouted")

    def _clock(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize(self.device)
        return out, time.perf_counter() - start

    def _timed(self, mode: str, compute: Callable[[str], Tensor]) -> tuple[Tensor, float]:
        if mode == "retained-graph":
            self._retained_graph_leaves()  # a one-time cost, not the per-product one being compared
        return self._clock(lambda: compute(mode))

    def _pending(self, kind: str) -> str | None:
        """The candidate of ``kind`` to time next (fewest timings so far, in candidate order), or ``None``."""
        if self.selection is None or self.selection[kind]["chosen"] is not None:
            return None
        sel = self.selection[kind]
        return min(sel["candidates"], key=lambda m: len(sel["samples"][m]))

    def _try(self, kind: str, mode: str, compute: Callable[[str], Tensor]) -> tuple[Tensor, float] | None:
        """A timed candidate product, or ``None`` when the candidate cannot run on this model (e.g. ``vmap``
        refuses a forward that draws random numbers): it is dropped, with the reason in ``selection``, and the
        others stay. The last candidate's error propagates, as it would with the mode given by name."""
        sel = self.selection[kind]
        if len(sel["candidates"]) == 1:
            return self._timed(mode, compute)
        try:
            return self._timed(mode, compute)
        except RuntimeError as err:
            sel["candidates"].remove(mode)
            del sel["samples"][mode]
            sel["seconds"].pop(mode, None)
            sel.setdefault("failed", {})[mode] = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            self._settle(kind)
            return None

    def _record(self, kind: str, mode: str, seconds: float) -> None:
        sel = self.selection[kind]
        sel["samples"][mode].append(seconds)
        sel["seconds"][mode] = min(sel["samples"][mode])
        self._settle(kind)

    def _settle(self, kind: str) -> None:
        sel = self.selection[kind]
        if all(len(t) >= MEASURE_ROUNDS[kind] for t in sel["samples"].values()):
            sel["chosen"] = min(sel["candidates"], key=lambda m: sel["seconds"][m])
            if kind == "single":
                self.mode = sel["chosen"]
            else:
                self.block_mode = sel["chosen"]

    def _hvp_sum(self, v: Tensor, into: Tensor | None = None) -> Tensor:
        """Σ_i w_i ∇²ℓ_i(θ) v over the local samples (not yet reduced or divided), in ``into`` if given."""
        out = None
        while out is None and (mode := self._pending("single")) is not None:
            timed = self._try("single", mode, lambda m: self._single(m, v, into))
            if timed is None:
                continue
            out, seconds = timed
            self._record("single", mode, seconds)
            derived = "reverse-over-reverse"
            if mode == "retained-graph" and self._build_seconds is not None and derived in self.selection["single"]["samples"]:
                # One chunk: a fresh double backward is this graph's build plus one backward through it, so
                # its time is measured without computing it (an extra product would cost more than it tells).
                self._record("single", derived, self._build_seconds + seconds)
        if out is None:
            out = self._single(self.mode, v, into)
        self.num_matvecs += 1
        return out

    def _single(self, mode: str, v: Tensor, into: Tensor | None = None) -> Tensor:
        """One product's sum over the local samples, into ``into`` (zeroed first) or a new tensor."""
        if mode == "retained-graph":
            return self._retained_graph(v, into)
        total = torch.zeros_like(v) if into is None else into.zero_()
        if mode == "forward-over-reverse":
            return self._forward_over_reverse(v, total)
        return self._reverse_over_reverse(v, total)

    def _block_sum(self, V: Tensor) -> Tensor:
        """Σ_i w_i ∇²ℓ_i(θ) V for a (P, K) block, (P, K), with each chunk's forward pass and gradient graph
        built once for all K columns (module docstring, "Blocks")."""
        K = V.shape[1]
        pieces, start = [], 0
        # Under "fastest", while timings are missing: contiguous pieces of the block go to the candidates in
        # turn (each piece's time per column is one timing), the rest to the chosen mode.
        while start < K and (mode := self._pending("block")) is not None:
            sel = self.selection["block"]
            missing = sum(max(0, MEASURE_ROUNDS["block"] - len(t)) for t in sel["samples"].values())
            # a first timing on one column (it absorbs one-time setup), later ones as wide as the block allows
            width = 1 if not sel["samples"][mode] else max(1, min(self.max_vmap_columns, (K - start) // missing))
            timed = self._try("block", mode, lambda m: self._block(m, V[:, start : start + width]))
            if timed is None:
                continue
            piece, seconds = timed
            self._record("block", mode, seconds / width)
            pieces.append(piece)
            start += width
        if start < K:
            pieces.append(self._block(self.block_mode, V[:, start:]))
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
        self.num_matvecs += K
        return out

    def _block(self, mode: str, V: Tensor) -> Tensor:
        if mode == "retained-graph":
            return torch.stack([self._retained_graph(c) for c in V.unbind(dim=1)], dim=1)
        if mode == "forward-over-reverse":
            step = self.max_vmap_columns
            return torch.cat([self._forward_over_reverse_block(V[:, s : s + step]) for s in range(0, V.shape[1], step)], dim=1)
        return self._reverse_over_reverse_block(V)

    def _reverse_over_reverse_block(self, V: Tensor) -> Tensor:
        obj = self.objective
        K = V.shape[1]
        total = torch.zeros(K, obj.numel, dtype=self.dtype, device=self.device)
        columns = V.T.contiguous()  # (K, P): row k is the k-th vector
        for chunk in obj.chunks():
            with torch.enable_grad(), self._second_order():
                theta = obj.theta.detach().requires_grad_(True)  # a new leaf on θ's storage: no copy
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

    def _forward_over_reverse(self, v: Tensor, total: Tensor) -> Tensor:
        obj = self.objective
        tangent = obj.unflatten(v)
        grad_fn = torch.func.grad(obj.chunk_loss_sum)
        for chunk in obj.chunks():
            _, hv = torch.func.jvp(lambda p: grad_fn(p, *chunk), (self._point,), (tangent,))
            total += obj.flatten(hv)
        return total

    def _retained_graph_leaves(self) -> tuple[list[Tensor], list[Tensor], list[int]]:
        obj = self.objective
        if self._graph is None:
            leaves = [t.detach().requires_grad_(True) for t in self._point.values()]  # views of θ: no copy

            def build() -> tuple[Tensor, ...]:
                with torch.enable_grad(), self._second_order():
                    (chunk,) = obj.chunks()
                    loss = obj.chunk_loss_sum(dict(zip(obj.names, leaves)), *chunk)
                    return torch.autograd.grad(loss, leaves, create_graph=True, materialize_grads=True)

            grads, seconds = self._clock(build) if self.selection is not None else (build(), None)
            self._build_seconds = seconds
            # A gradient entry that does not depend on θ has a zero Hessian row; only the others are kept.
            keep = [i for i, g in enumerate(grads) if g.requires_grad]
            self._graph = (leaves, [grads[i] for i in keep], keep)
        return self._graph

    def _retained_graph(self, v: Tensor, into: Tensor | None = None) -> Tensor:
        obj = self.objective
        leaves, grads, keep = self._retained_graph_leaves()
        if not grads:
            return torch.zeros_like(v) if into is None else into.zero_()
        tangent = list(obj.unflatten(v).values())
        hv = torch.autograd.grad(
            grads, leaves, grad_outputs=[tangent[i] for i in keep], retain_graph=True, materialize_grads=True
        )
        return torch.cat([h.reshape(-1) for h in hv], out=into)

    def _reverse_over_reverse(self, v: Tensor, total: Tensor) -> Tensor:
        obj = self.objective
        for chunk in obj.chunks():
            with torch.enable_grad(), self._second_order():
                theta = obj.theta.detach().requires_grad_(True)  # a new leaf on θ's storage: no copy
                loss = obj.chunk_loss_sum(obj.unflatten(theta), *chunk)
                (g,) = torch.autograd.grad(loss, theta, create_graph=True)
                (hv,) = torch.autograd.grad(g, theta, grad_outputs=v)
            total += hv.detach()
        return total

    def __repr__(self) -> str:
        text = f"HessianOperator(P={self.objective.numel}, dtype={self.dtype}, device={self.device}, mode={self.mode}"
        if self.block_mode != self.mode:
            text += f", block_mode={self.block_mode}"
        if self.selection is not None:
            timed = "; ".join(
                f"{kind}: " + ", ".join(f"{m} {t * 1e3:.3g} ms" for m, t in sel["seconds"].items())
                + ("" if sel["chosen"] else " (measuring)")
                for kind, sel in self.selection.items() if sel["seconds"]
            )
            text += f", fastest [{timed or 'not yet measured'}]"
        return text + ")"


def dense_hessian(objective: Objective, *, weight_decay: float = 0.0, block_size: int = 64) -> Tensor:
    """The full ``(P, P)`` Hessian, built ``block_size`` columns at a time — for small models and as the
    tests' reference.

    Each block is H·[e_j … e_{j+b−1}], forward-over-reverse (``jvp`` of ``grad``) vmapped over the b basis
    vectors and summed over the objective's chunks, so the working memory is b tangent copies of one chunk's
    activations on top of the P² result. ``torch.func.hessian`` vmaps all P directions at once, so its
    memory is P tangent copies: blocks trade a little time for a peak many times lower (measured in
    benchmarks/README.md). Costs P Hessian-vector products; refuse it for large P yourself.
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
