"""PyTorch's own attention layers and Hugging Face SDPA models against a dense float64 Hessian.

The truth is ``torch.autograd.functional.hessian`` of the mean loss over the flattened parameters, computed on an
eval-mode copy (the toolkit's mode policy) under the user's own ``sdpa_kernel(SDPBackend.MATH)`` with gradients
enabled (so no fused fast path): reverse-over-reverse through ordinary ops, independent of the objective's code.
Both sides compute one float64 function by different AD orders, so they agree to rounding: a Hessian entry is
a sum of a few hundred products of O(1) terms, each exact to 2⁻⁵³ relative, so 1e-10 of max |H| leaves four
orders of magnitude of room and still catches any wrong term (a missing mask, dropout left on: ≥ 1e-3).
"""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import sharpness.objective
from sharpness import HessianOperator, analyze
from sharpness.errors import InputError
from sharpness.linalg import top_eigenvalues
from sharpness.objective import Objective
from sharpness.objective.attention import math_attention

D, HEADS, T, N, C = 4, 2, 5, 6, 3


class Encoder(nn.Module):
    """A TransformerEncoderLayer (or a 2-layer TransformerEncoder) and a linear head on the mean over positions."""

    def __init__(self, batch_first: bool, stack: bool = False) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=6, dropout=0.2, batch_first=batch_first)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True) if stack else layer
        self.batch_first = batch_first
        self.head = nn.Linear(D, C)

    def forward(self, src, src_mask=None, pad=None):
        x = src if self.batch_first else src.transpose(0, 1)
        if isinstance(self.body, nn.TransformerEncoder):
            h = self.body(x, mask=src_mask, src_key_padding_mask=pad)
        else:
            h = self.body(x, src_mask=src_mask, src_key_padding_mask=pad)
        h = h if self.batch_first else h.transpose(0, 1)
        return self.head(h.mean(dim=1))


class SelfAttention(nn.Module):
    """nn.MultiheadAttention as self-attention, without weights returned (the path that calls SDPA)."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, dropout=0.2, batch_first=batch_first)
        self.batch_first = batch_first
        self.head = nn.Linear(D, C)

    def forward(self, src, src_mask=None, pad=None):
        x = src if self.batch_first else src.transpose(0, 1)
        h, _ = self.attn(x, x, x, attn_mask=src_mask, key_padding_mask=pad, need_weights=False)
        h = h if self.batch_first else h.transpose(0, 1)
        return self.head(torch.tanh(h).mean(dim=1))


def data(mask: str | None):
    """(N, T, D) inputs, labels, and the mask keywords: a causal attn_mask or a key padding mask (right padding,
    at least two real positions per sample, so no row is masked whole)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, T, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    kw = {}
    if mask == "attn":
        kw["src_mask"] = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    elif mask == "padding":
        lengths = torch.tensor([5, 2, 4, 3, 5, 2])
        kw["pad"] = torch.arange(T)[None, :] >= lengths[:, None]
    return x, y, kw


def dense_loss_and_hessian(model: nn.Module, loss, vectorize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(θ), ∇²f(θ)) in float64 on an eval-mode copy under the math kernel, where f(θ) = loss(call) and
    call(args, kwargs) is the copy's forward at θ."""
    ref = copy.deepcopy(model).eval()
    names = [k for k, _ in ref.named_parameters()]
    shapes = [p.shape for _, p in ref.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])

    def f(flat):
        params = {k: t.view(s) for k, t, s in zip(names, flat.split([s.numel() for s in shapes]), shapes)}
        with sdpa_kernel([SDPBackend.MATH]):
            return loss(lambda args, kwargs: torch.func.functional_call(ref, params, args, kwargs))

    # θ requires grad so that even the value takes the differentiable path (not the eval-mode fast path).
    return (f(theta.clone().requires_grad_()).detach(),
            torch.autograd.functional.hessian(f, theta, vectorize=vectorize))


def dense_truth(model: nn.Module, x, y, kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(θ), ∇²f(θ)) of the mean cross-entropy of model(x, **kw) against y."""
    return dense_loss_and_hessian(model, lambda call: F.cross_entropy(call((x,), kw), y))


def batches(x, y, kw, size=4):
    """The analysis set as dict batches (the mask travels with its samples), in two chunks of 4 and 2."""
    out = []
    for s in range(0, N, size):
        b = {"src": x[s:s + size], "labels": y[s:s + size]}
        if "src_mask" in kw:
            b["src_mask"] = kw["src_mask"]
        if "pad" in kw:
            b["pad"] = kw["pad"][s:s + size]
        out.append(b)
    return out


def _batch_size(batch):
    return batch["src"].shape[0]


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


# Every mask with both modes and both layouts (half the full product: each factor's effect is local to it).
LAYOUTS = [(True, None, "eval"), (False, None, "train"), (True, "attn", "train"), (False, "attn", "eval"),
           (True, "padding", "eval"), (False, "padding", "train")]


@pytest.mark.parametrize("batch_first, mask, mode", LAYOUTS)
@pytest.mark.parametrize("build", [Encoder, SelfAttention], ids=["encoder-layer", "multihead"])
def test_attention_hessian_equals_dense_float64(build, batch_first, mask, mode):
    torch.manual_seed(0)
    model = build(batch_first).double().train(mode == "train")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, kw = data(mask)
    want_f, want_H = dense_truth(model, x, y, kw)
    if mask == "attn":  # one mask for every sample: passed by a forward callable, the in-memory tensor path
        obj = Objective(model, x, y, forward=lambda m, b: m(b[0], src_mask=kw["src_mask"]))
    else:
        obj = Objective(model, batches(x, y, kw), batch_size_fn=_batch_size, target_key="labels")
    assert obj.attention == "math"
    assert float(obj.value()) == pytest.approx(float(want_f), rel=1e-12)
    got = HessianOperator(obj) @ torch.eye(obj.numel, dtype=torch.float64)
    assert rel_err(got, want_H) < 1e-10
    # Lanczos on the operator: λ_max is the dense one (asked for 1e-10 relative error: 1e-8 leaves 100×).
    top = top_eigenvalues(HessianOperator(obj), k=1, tol=1e-10, seed=0)
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(want_H)[-1]), rel=1e-8)
    # The user's model: same tensors, same mode, still trainable.
    assert model.training is (mode == "train")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("hvp_mode", ["retained-graph", "reverse-over-reverse", "forward-over-reverse"])
def test_every_hvp_mode_and_the_grid_run_through_the_math_kernel(hvp_mode):
    torch.manual_seed(0)
    model = Encoder(batch_first=True, stack=True).double()  # nested-tensor fast path when padded
    x, y, kw = data("padding")
    want_f, want_H = dense_truth(model, x, y, kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even the probe's first forward takes the nested-tensor fast path
        obj = Objective(model, batches(x, y, kw, size=N if hvp_mode == "retained-graph" else 4),
                        batch_size_fn=_batch_size)
    v = torch.randn(obj.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = HessianOperator(obj, mode=hvp_mode) @ v
    assert rel_err(got, want_H @ v) < 1e-10
    # value() (no grad: where the fast path would run, padding as nested tensors whose padded outputs are 0),
    # value_and_grad() and the vmapped grid are the same function as the HVP's.
    f, g = obj.value_and_grad()
    assert float(f) == pytest.approx(float(want_f), rel=1e-12)
    assert float(obj.value()) == pytest.approx(float(want_f), rel=1e-12)
    points = obj.theta + 1e-3 * torch.stack([v, -v, 2 * v])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback from the vmapped blocks to a loop
        grid = obj.losses_at(points, batch_size=3)
    assert torch.allclose(grid, torch.stack([obj.value(p) for p in points]).double(), rtol=1e-12, atol=0)


def test_encoder_decoder_transformer_with_a_causal_target_mask():
    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Transformer(D, HEADS, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=4,
                                    dropout=0.1, batch_first=True)
            self.head = nn.Linear(D, C)

        def forward(self, src):
            causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=src.dtype)
            return self.head(self.t(src, src.flip(1), tgt_mask=causal, tgt_is_causal=True).mean(dim=1))

    torch.manual_seed(0)
    model = Seq2Seq().double().train()
    x, y, kw = data(None)
    want_f, want_H = dense_truth(model, x, y, kw)
    obj = Objective(model, x, y)
    assert obj.attention == "math"
    assert float(obj.value()) == pytest.approx(float(want_f), rel=1e-12)
    V = torch.randn(obj.numel, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert rel_err(HessianOperator(obj) @ V, want_H @ V) < 1e-10
    top = top_eigenvalues(HessianOperator(obj), k=1, tol=1e-10, seed=0)
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(want_H)[-1]), rel=1e-8)
    assert model.training


def test_a_functional_multi_head_attention_call_is_detected():
    class Functional(nn.Module):  # raw parameters, no attention module to find: the probe must see the call
        def __init__(self):
            super().__init__()
            self.w_in = nn.Parameter(0.5 * torch.randn(3 * D, D))
            self.b_in = nn.Parameter(0.1 * torch.randn(3 * D))
            self.out = nn.Linear(D, D)
            self.head = nn.Linear(D, C)

        def forward(self, x):
            q = x.transpose(0, 1)  # (T, N, D)
            h, _ = F.multi_head_attention_forward(q, q, q, D, HEADS, self.w_in, self.b_in, None, None, False, 0.0,
                                                  self.out.weight, self.out.bias, training=False, need_weights=False)
            return self.head(h.mean(dim=0))

    torch.manual_seed(0)
    model = Functional().double()
    x, y, kw = data(None)
    _, want_H = dense_truth(model, x, y, kw)
    obj = Objective(model, x, y)
    assert obj.attention == "math"
    assert rel_err(HessianOperator(obj) @ torch.eye(obj.numel, dtype=torch.float64), want_H) < 1e-10


def test_a_kernel_forced_inside_the_model_is_refused_in_one_line():
    class Forced(SelfAttention):  # the model picks the CPU flash kernel itself, overriding the analysis' choice
        def forward(self, src, src_mask=None, pad=None):
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return super().forward(src)

    torch.manual_seed(0)
    x, y, _ = data(None)
    with pytest.raises(InputError) as info:
        analyze(Forced(True).double(), x, y, top_k=1, bottom_k=0, trace=False, dtype="float64")
    message = str(info.value)
    assert "\n" not in message and "_scaled_dot_product_flash_attention_for_cpu_backward" in message
    assert "attn_implementation='sdpa'" in message


def test_switch_restores_the_users_settings_and_notices_once(caplog):
    torch.backends.mha.set_fastpath_enabled(True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
        flash = torch.backends.cuda.flash_sdp_enabled()
        with math_attention():
            assert not torch.backends.mha.get_fastpath_enabled()
            assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        assert torch.backends.mha.get_fastpath_enabled() and torch.backends.cuda.flash_sdp_enabled() == flash
    sharpness.objective._SDPA_NOTICED.clear()
    x, y, _ = data(None)
    with caplog.at_level(logging.INFO, logger="sharpness.objective"):
        for _ in range(2):
            Objective(SelfAttention(True).double(), x, y)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "math kernel" in r.getMessage()]
    assert len(warned) == 1 and "MultiheadAttention" in warned[0].getMessage()


def test_hugging_face_sdpa_model_through_analyze():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=11, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=6, max_position_embeddings=8, num_labels=C,
                                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                                  attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).double().train()
    assert model.config._attn_implementation == "sdpa"
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 11, (4, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    labels = torch.randint(0, C, (4,), generator=g)
    _, H = dense_loss_and_hessian(
        model, lambda call: F.cross_entropy(call((), {"input_ids": ids, "attention_mask": mask}).logits, labels),
        vectorize=False)
    want = torch.linalg.eigvalsh(H)
    data_ = [{"input_ids": ids[i:i + 2], "attention_mask": mask[i:i + 2], "labels": labels[i:i + 2]} for i in (0, 2)]
    # tol=1e-9 asks Lanczos for that relative error (λ_min: of the spectral scale), so 1e-7 has a margin of 100.
    report = analyze(model, data_, loss="cross-entropy", top_k=1, bottom_k=1, trace=False, dtype="float64",
                     tol=1e-9)
    assert report.hessian["top"]["values"][0] == pytest.approx(float(want[-1]), rel=1e-7)
    assert report.hessian["bottom"]["values"][0] == pytest.approx(float(want[0]), abs=1e-7 * float(want.abs().max()))
    assert model.training
