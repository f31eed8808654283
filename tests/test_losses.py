"""Losses per example against PyTorch's own reductions (float64)."""

import pytest
import torch
import torch.nn.functional as F

from sharpness.errors import InputError
from sharpness.objective.losses import example_losses, per_sample_hits, per_sample_loss

g = torch.Generator().manual_seed(0)
Z = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 3   # (B, T, V) logits
Y = torch.randint(0, 7, (3, 5), generator=g)
Y_MASKED = Y.clone()
Y_MASKED[0, :2] = -100
Y_MASKED[2, 4] = -100


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_token_losses_with_ignore_index_and_smoothing_give_pytorchs_mean(alpha):
    losses, weights, hits = example_losses("cross-entropy", Z, Y_MASKED, label_smoothing=alpha)
    want = F.cross_entropy(Z.reshape(-1, 7), Y_MASKED.reshape(-1), ignore_index=-100, label_smoothing=alpha)
    assert float((losses * weights).sum() / weights.sum()) == pytest.approx(float(want), rel=1e-14)
    assert weights.sum() == 12 and losses.shape == (3, 5)
    valid = Y_MASKED != -100
    assert torch.equal(hits.bool()[valid], (Z.argmax(-1) == Y_MASKED)[valid])


def test_unmasked_tokens_have_no_weights_and_sequences_average_their_tokens():
    losses, weights, _ = example_losses("cross-entropy", Z, Y)
    assert weights is None
    assert float(losses.mean()) == pytest.approx(float(F.cross_entropy(Z.transpose(1, 2), Y)), rel=1e-14)
    per_sample = per_sample_loss("cross-entropy", Z, Y)
    assert per_sample.shape == (3,)
    assert torch.allclose(per_sample, F.cross_entropy(Z.transpose(1, 2), Y, reduction="none").mean(1), rtol=1e-14)
    assert torch.allclose(per_sample_hits("cross-entropy", Z, Y), (Z.argmax(-1) == Y).double().mean(1))


def test_causal_lm_shifts_and_bce_matches():
    losses, weights, _ = example_losses("causal-lm", Z, Y_MASKED)
    want = F.cross_entropy(Z[:, :-1].reshape(-1, 7), Y_MASKED[:, 1:].reshape(-1), ignore_index=-100)
    assert float((losses * weights).sum() / weights.sum()) == pytest.approx(float(want), rel=1e-14)
    z, t = Z[:, 0], (Y[:, :1].repeat(1, 7) > 3).double()
    assert torch.allclose(per_sample_loss("bce", z, t), F.binary_cross_entropy_with_logits(z, t, reduction="none").mean(1),
                          rtol=1e-14)


def test_mismatched_shapes_say_what_arrived():
    with pytest.raises(InputError, match=r"logits \(3, 5, 7\) for labels \(3, 4\)"):
        example_losses("cross-entropy", Z, Y[:, :4])
    with pytest.raises(InputError, match="integer class labels"):
        example_losses("cross-entropy", Z, Y.double())
