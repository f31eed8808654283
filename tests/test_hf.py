"""Hugging Face transformers, built from a config (no download): HVPs against the model's own shifted loss.

Skipped unless ``transformers`` is installed (the optional ``[hf]`` extra, which CI installs through ``[all]``).
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from sharpness import HessianOperator, analyze  # noqa: E402
from sharpness.objective import Objective  # noqa: E402


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=9, n_positions=6, n_embd=4, n_layer=1, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 9, (4, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0  # right padding
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def test_causal_lm_hessian_matches_the_models_own_loss():
    model = tiny_gpt2()
    ids, mask, labels = batches()
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def outputs(flat):
        params = {k: t.view(s) for k, t, s in zip(names, flat.split([s.numel() for s in shapes]), shapes)}
        with sdpa_kernel([SDPBackend.MATH]):
            return torch.func.functional_call(model, params, (), {"input_ids": ids, "attention_mask": mask,
                                                                   "labels": labels})

    def shifted_loss(flat):  # what HF computes, but in float64 (HF upcasts its logits to float32 for .loss)
        logits = outputs(flat).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1))

    assert float(shifted_loss(theta)) == pytest.approx(float(outputs(theta).loss), rel=1e-6)
    want_H = torch.autograd.functional.hessian(shifted_loss, theta)
    data = [{"input_ids": ids[i:i + 2], "attention_mask": mask[i:i + 2], "labels": labels[i:i + 2]} for i in (0, 2)]
    obj = Objective(model, data, loss="causal-lm")
    assert obj.attention == "math"
    assert float(obj.value()) == pytest.approx(float(shifted_loss(theta)), rel=1e-12)
    got = HessianOperator(obj) @ torch.eye(obj.numel, dtype=torch.float64)
    assert float((got - want_H).abs().max() / want_H.abs().max()) < 1e-10
    report = analyze(model, data, loss="causal-lm", top_k=1, bottom_k=0, trace=False, dtype="float64")
    assert report.hessian["top"]["values"][0] == pytest.approx(float(torch.linalg.eigvalsh(want_H)[-1]), rel=1e-6)
