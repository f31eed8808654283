"""Tests for sharpness.train: determinism, same starts, exact accumulation, schedules, stopping, resume, NaN."""

from __future__ import annotations

import dataclasses
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharpness.checkpoint import load_checkpoint, save_checkpoint
from sharpness.data import load_dataset
from sharpness.errors import InputError
from sharpness.models import build_model, model_spec
from sharpness.objective import Objective
from sharpness.train import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    accumulate_gradients,
    lr_schedule,
    micro_batch_sizes,
    resolve_batch_size,
    resume_path,
    snapshot_path,
    train,
)

from conftest import TinyMLP, make_classification


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs", n=200, n_test=60, dim=4, classes=3, seed=3)


def cfg(**kw) -> TrainConfig:
    base = dict(data="blobs", model="mlp", model_kwargs={"hidden": [12]}, batch_size=16, epochs=2, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Recorder:
    """Records what a tracker would see: the state at train begin and the lr/loss of every step."""

    def __init__(self):
        self.begin = None
        self.lrs, self.group_lrs, self.steps = [], [], []

    def on_train_begin(self, state):
        self.begin = {k: v.detach().clone() for k, v in state.model.state_dict().items()}

    def on_step_end(self, state):
        self.steps.append(state.step)
        self.lrs.append(state.lr)
        self.group_lrs.append(state.optimizer.param_groups[0]["lr"])


class InterruptAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise KeyboardInterrupt


# --- determinism and identical starts -------------------------------------------------------------------------


def test_same_seed_gives_bit_identical_checkpoint_and_other_seed_differs(blobs, tmp_path):
    config = cfg(momentum=0.9, model_kwargs={"hidden": [12], "dropout": 0.1})  # dropout: the in-model RNG too
    train(config, dataset=blobs, out=tmp_path / "a.pt")
    train(config, dataset=blobs, out=tmp_path / "b.pt")
    train(dataclasses.replace(config, data_seed=1), dataset=blobs, out=tmp_path / "c.pt")
    a, b, c = (load_checkpoint(tmp_path / f"{n}.pt") for n in "abc")
    assert states_equal(a.state_dict, b.state_dict)
    assert a.history == [{**h, "wall_time": a.history[i]["wall_time"]} for i, h in enumerate(b.history)]
    assert not states_equal(a.state_dict, c.state_dict)  # another data order: the check can fail
    assert a.train_config["batch_size"] == 16 and a.seed == 0 and a.metrics["steps"] == 2 * (200 // 16)
    assert a.model == model_spec("mlp", [4], 3, hidden=[12], dropout=0.1)


def test_training_leaves_global_rng_untouched(blobs):
    before = torch.get_rng_state()
    train(cfg(model_kwargs={"hidden": [12], "dropout": 0.2}), dataset=blobs)
    assert torch.equal(before, torch.get_rng_state())


def test_small_and_large_batch_start_from_identical_weights(blobs):
    starts, shas = [], []
    for bs in (8, "full"):
        rec = Recorder()
        result = train(cfg(batch_size=bs, epochs=1), dataset=blobs, callbacks=[rec])
        starts.append(rec.begin)
        assert result.metrics["batch_size"] == (8 if bs == 8 else 200)
    assert states_equal(*starts)
    reference = build_model("mlp", input_shape=[4], num_classes=3, seed=0, hidden=[12]).state_dict()
    assert states_equal(starts[0], reference)
    other = build_model("mlp", input_shape=[4], num_classes=3, seed=1, hidden=[12]).state_dict()
    assert not states_equal(starts[0], other)


def test_init_from_checkpoint_starts_there_and_refuses_other_architecture(blobs, tmp_path):
    spec = model_spec("mlp", [4], 3, hidden=[12])
    net = build_model("mlp", input_shape=[4], num_classes=3, seed=42, hidden=[12])
    save_checkpoint(tmp_path / "init.pt", model=spec, state_dict=net.state_dict())
    rec = Recorder()
    train(cfg(init_from=str(tmp_path / "init.pt"), epochs=1), dataset=blobs, callbacks=[rec])
    assert states_equal(rec.begin, net.state_dict())
    with pytest.raises(InputError, match="expected checkpoint .* to match model 'mlp'"):
        train(cfg(init_from=str(tmp_path / "init.pt"), model_kwargs={"hidden": [7]}), dataset=blobs)


def test_passed_model_is_copied_not_trained_in_place(blobs):
    from conftest import assert_unchanged, snapshot

    net = build_model("mlp", input_shape=[4], num_classes=3, seed=0, hidden=[12])
    before = snapshot(net)
    result = train(cfg(epochs=1), dataset=blobs, model=net)
    assert_unchanged(net, before)
    assert not states_equal(result.model.state_dict(), net.state_dict())


# --- gradient accumulation and ghost batch norm ---------------------------------------------------------------


def test_accumulated_gradient_equals_full_batch_gradient_float64():
    torch.manual_seed(0)
    model = TinyMLP().double()
    x, y = make_classification(n=23)
    # Independent reference: autograd of F.cross_entropy's own mean over all 23 samples.
    ref = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for sizes in (None, [23], [5, 7, 11], micro_batch_sizes(23, accumulate=4), micro_batch_sizes(23, max_micro_batch=6)):
        model.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, x, y, sizes=sizes)
        assert float(loss) == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-14, abs=0)
        for g, r in zip((p.grad for p in model.parameters()), ref):
            # float64 with 23 summands: reordering changes results by ~23·ε ≈ 5e-15 relative.
            torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)
    # Averaging the micro-batch means instead (the classic bug) is measurably wrong for unequal parts.
    naive = [torch.zeros_like(p) for p in model.parameters()]
    for part in (slice(0, 5), slice(5, 12), slice(12, 23)):
        for acc, g in zip(naive, torch.autograd.grad(F.cross_entropy(model(x[part]), y[part]), list(model.parameters()))):
            acc += g / 3
    assert max(float((a - r).abs().max()) for a, r in zip(naive, ref)) > 1e-4


def test_micro_batch_sizes():
    assert micro_batch_sizes(10) == [10]
    assert micro_batch_sizes(10, accumulate=3) == [4, 3, 3]
    assert micro_batch_sizes(10, max_micro_batch=4) == [4, 3, 3]
    assert micro_batch_sizes(10, max_micro_batch=5) == [5, 5]
    assert micro_batch_sizes(10, ghost_batch=4) == [4, 4, 2]
    with pytest.raises(InputError, match="accumulate ≤ batch size 3"):
        micro_batch_sizes(3, accumulate=4)


def test_ghost_batch_norm_matches_hand_written_virtual_batch_statistics():
    torch.manual_seed(1)
    lin, bn, head = nn.Linear(3, 4).double(), nn.BatchNorm1d(4, momentum=0.3).double(), nn.Linear(4, 2).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    model = nn.Sequential(lin, bn, nn.Tanh(), head)
    x, y = make_classification(n=8, d=3, classes=2, seed=2)
    params = list(model.parameters())

    # Reference, one pass: each half of the batch normalized by its own (biased) mean and variance.
    h = lin(x)
    parts = []
    for half in (h[:4], h[4:]):
        mu, var = half.mean(0), half.var(0, unbiased=False)
        parts.append((half - mu) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)
    ref_loss = F.cross_entropy(head(torch.tanh(torch.cat(parts))), y)
    ref = torch.autograd.grad(ref_loss, params)
    mu1, mu2 = h[:4].mean(0).detach(), h[4:].mean(0).detach()

    model.train()
    model.zero_grad(set_to_none=True)
    loss = accumulate_gradients(model, x, y, sizes=micro_batch_sizes(8, ghost_batch=4))
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-13)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.grad, r, rtol=1e-12, atol=1e-14)  # float64, a handful of summands
    # Running mean moves once per virtual batch: r ← (1−m)r + m·μ, from r = 0.
    m = 0.3
    torch.testing.assert_close(bn.running_mean, m * (1 - m) * mu1 + m * mu2, rtol=1e-12, atol=1e-14)


def test_training_with_accumulation_matches_plain_training_float64(blobs):
    plain = train(cfg(dtype="float64", momentum=0.9), dataset=blobs)
    accumulated = train(cfg(dtype="float64", momentum=0.9, accumulate=3), dataset=blobs)
    # Same updates up to float64 summation order (~1e-16 per step, 24 steps): far below 1e-10.
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(accumulated.model.state_dict()[k], v, rtol=1e-10, atol=1e-12)


# --- batch sizes and learning-rate rules ----------------------------------------------------------------------


def test_resolve_batch_size_fractions_and_errors():
    assert resolve_batch_size("10%", 4000) == 400
    assert resolve_batch_size("full", 4000) == 4000
    assert resolve_batch_size("FULL", 7) == 7
    assert resolve_batch_size("25%", 10) == 3  # 2.5 rounds half up
    assert resolve_batch_size("0.1%", 100) == 1  # never 0
    assert resolve_batch_size("64", 100) == 64
    for bad in (0, -3, "0%", "150%", "ten", "1.5", True):
        with pytest.raises(InputError, match="batch_size"):
            resolve_batch_size(bad, 100)
    with pytest.raises(InputError, match="batch_size ≤ the 100 training samples, got 101"):
        resolve_batch_size(101, 100)


def test_fraction_batch_size_in_training(blobs):
    result = train(cfg(batch_size="25%", epochs=1), dataset=blobs)
    assert result.metrics["batch_size"] == 50 and result.metrics["steps_per_epoch"] == 4
    kept = train(cfg(batch_size=64, drop_last=False, epochs=1), dataset=blobs)
    assert kept.metrics["steps_per_epoch"] == 4  # 64, 64, 64, 8


def test_lr_schedule_values_at_given_steps():
    # Goyal et al.: B = 1024 = 4 × 256, linear rule → peak 4η; warmup from η over 2 epochs of 10 steps.
    c = cfg(lr=0.1, lr_scaling="linear", base_batch_size=256, warmup_epochs=2, epochs=10)
    s = lr_schedule(c, batch_size=1024, steps_per_epoch=10)
    assert s.peak == pytest.approx(0.4) and s.warmup_steps == 20 and s.total_steps == 100
    assert s(0) == pytest.approx(0.1 + 0.3 * 1 / 20)
    assert s(9) == pytest.approx(0.1 + 0.3 * 10 / 20)
    assert s(19) == pytest.approx(0.4) and s(20) == pytest.approx(0.4) and s(99) == pytest.approx(0.4)
    assert lr_schedule(dataclasses.replace(c, lr_scaling="sqrt"), batch_size=1024, steps_per_epoch=10).peak == pytest.approx(0.2)
    # Without a scaling rule the warmup starts from 0.
    w = lr_schedule(cfg(lr=0.2, warmup_epochs=1, epochs=4), batch_size=32, steps_per_epoch=5)
    assert [w(t) for t in range(6)] == pytest.approx([0.04, 0.08, 0.12, 0.16, 0.2, 0.2])
    # Cosine after warmup: peak at W, half at the midpoint of the remaining steps, → 0 at the horizon.
    cos = lr_schedule(cfg(lr=0.1, schedule="cosine", warmup_epochs=1, epochs=5), batch_size=32, steps_per_epoch=10)
    assert cos(10) == pytest.approx(0.1) and cos(30) == pytest.approx(0.05) and cos(50) == pytest.approx(0.0, abs=1e-15)
    assert cos(20) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))
    # Step: × γ at each milestone epoch; default milestones at 1/2 and 3/4 of the run.
    st = lr_schedule(cfg(lr=1.0, schedule="step", milestones=(2, 4), gamma=0.5, epochs=6), batch_size=8, steps_per_epoch=10)
    assert [st(t) for t in (19, 20, 39, 40, 59)] == pytest.approx([1.0, 0.5, 0.5, 0.25, 0.25])
    d = lr_schedule(cfg(lr=1.0, schedule="step", epochs=8), batch_size=8, steps_per_epoch=10)
    assert d.milestone_steps == (40, 60)


def test_the_optimizer_uses_the_scheduled_rates(blobs):
    c = cfg(batch_size=40, lr=0.1, lr_scaling="linear", base_batch_size=20, warmup_epochs=1, schedule="cosine", epochs=3)
    rec = Recorder()
    train(c, dataset=blobs, callbacks=[rec])
    s = lr_schedule(c, batch_size=40, steps_per_epoch=5)
    assert rec.steps == list(range(1, 16))
    assert rec.lrs == rec.group_lrs == [s(t) for t in range(15)]


# --- stopping ---------------------------------------------------------------------------------------------------


def test_until_train_loss_stops_at_the_first_epoch_below(blobs):
    full = train(cfg(epochs=6), dataset=blobs)
    losses = [h["train_loss"] for h in full.history]
    assert all(a > b for a, b in zip(losses, losses[1:])), "the threshold below needs a decreasing loss"
    threshold = 0.5 * (losses[3] + losses[4])  # crossed during epoch 4
    stopped = train(cfg(epochs=None, until_train_loss=threshold, max_epochs=6), dataset=blobs)
    assert stopped.metrics["stopped_by"] == "until_train_loss" and stopped.metrics["reached_train_loss"]
    assert [h["epoch"] for h in stopped.history] == [0, 1, 2, 3, 4]
    assert [h["train_loss"] for h in stopped.history] == losses[:5]  # the same trajectory, stopped at epoch 4
    assert stopped.history[-1]["test_loss"] is not None
    capped = train(cfg(epochs=None, until_train_loss=1e-9, max_epochs=2), dataset=blobs)
    assert capped.metrics["stopped_by"] == "max_epochs" and capped.metrics["reached_train_loss"] is False


def test_until_train_accuracy_stops_at_the_first_epoch_at_or_above(blobs):
    full = train(cfg(epochs=6, lr=0.01), dataset=blobs)
    accs = [h["train_acc"] for h in full.history]
    target = accs[3]  # an accuracy the run reaches exactly at epoch 3, and not before
    assert max(accs[1:3]) < target < 1.0 and accs[4] == target, "the test needs epochs 1-2 below, 3-4 at the target"
    stopped = train(cfg(epochs=None, lr=0.01, until_train_accuracy=target, max_epochs=6), dataset=blobs)
    m = stopped.metrics
    assert m["stopped_by"] == "until_train_accuracy" and m["reached_train_accuracy"] is True
    assert m["reached_train_loss"] is None  # the other rule was not in use
    assert m["epochs"] == 3 and [h["train_acc"] for h in stopped.history] == accs[:4]  # same trajectory, at "≥"
    capped = train(cfg(epochs=None, lr=0.01, until_train_accuracy=1.0, max_epochs=2), dataset=blobs)
    assert capped.metrics["stopped_by"] == "max_epochs" and capped.metrics["reached_train_accuracy"] is False
    assert capped.metrics["epochs"] == 2 and capped.metrics["train_acc"] == accs[2] < 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(until_train_accuracy=0.0), r"until_train_accuracy to be a fraction in \(0, 1\], got 0.0"),
    (dict(until_train_accuracy=1.5), r"until_train_accuracy to be a fraction in \(0, 1\], got 1.5"),
    (dict(until_train_accuracy=float("nan")), r"until_train_accuracy to be a fraction in \(0, 1\], got nan"),
    (dict(until_train_accuracy="0.99"), r"until_train_accuracy to be a fraction in \(0, 1\], got '0.99'"),
    (dict(until_train_loss=0.0), r"until_train_loss to be a finite number > 0, got 0.0"),
    (dict(until_train_accuracy=0.9, max_epochs=None), r"max_epochs \(the cap\) with until_train_accuracy, got none"),
    (dict(until_train_accuracy=0.9, until_train_loss=0.1),
     r"exactly one of epochs, steps, until_train_loss or until_train_accuracy, got \['until_train_loss', 'until_train_accuracy'\]"),
])
def test_bad_until_rules_are_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        cfg(**{"epochs": None, "max_epochs": 3, **kwargs})


def test_until_train_accuracy_needs_a_classification_loss():
    regression = load_dataset("teacher-student", n=40, n_test=10, dim=3, seed=0)
    with pytest.raises(InputError, match=r"classification loss with until_train_accuracy \(a mse loss has no accuracy\)"):
        train(cfg(data="teacher-student", epochs=None, until_train_accuracy=0.9, max_epochs=2), dataset=regression)


def test_steps_budget_stops_mid_epoch_and_eval_every(blobs):
    result = train(cfg(steps=20, epochs=None, eval_every=2), dataset=blobs)  # 12 steps per epoch
    assert result.metrics["steps"] == 20 and result.metrics["stopped_by"] == "steps"
    assert [(h["epoch"], h["step"]) for h in result.history] == [(0, 0), (1, 12), (2, 20)]
    assert result.history[1]["train_loss"] is None and result.history[-1]["test_loss"] is not None


def test_config_validation():
    for kwargs, match in [
        (dict(optimizer="rmsprop"), "optimizer one of sgd, adam, adamw, got 'rmsprop'"),
        (dict(epochs=None), "exactly one of epochs, steps, until_train_loss or until_train_accuracy"),
        (dict(steps=5), "exactly one of epochs, steps, until_train_loss or until_train_accuracy"),
        (dict(epochs=None, until_train_loss=0.1), "max_epochs"),
        (dict(lr=float("nan")), "lr to be a finite number"),
        (dict(nesterov=True), "nesterov only with optimizer sgd and momentum > 0"),
        (dict(accumulate=2, max_micro_batch=4), "accumulate or max_micro_batch"),
        (dict(ghost_batch=4, accumulate=2), "ghost_batch without accumulate"),
        (dict(batch_size="x"), "batch_size"),
    ]:
        with pytest.raises(InputError, match=match):
            cfg(**kwargs)
    assert TrainConfig.from_dict(cfg().to_dict()) == cfg()


# --- snapshots, callbacks that measure, interruption, divergence -------------------------------------------------


def test_save_every_writes_snapshots(blobs, tmp_path):
    out = tmp_path / "run.pt"
    train(cfg(epochs=4, save_every=2), dataset=blobs, out=out)
    assert sorted(os.listdir(tmp_path)) == ["run.epoch2.pt", "run.epoch4.pt", "run.pt"]
    snap = load_checkpoint(snapshot_path(out, 2))
    assert snap.history[-1]["epoch"] == 2 and snap.metrics["steps"] == 24


def test_a_measuring_callback_leaves_training_bit_identical(blobs):
    class Measure:
        def __init__(self):
            self.values = []

        def on_step_end(self, state):
            if state.step % 5 == 0:
                objective = Objective(state.model, state.x_train, state.y_train)
                self.values.append(float(objective.value_and_grad()[0]))

    config = cfg(momentum=0.9, model_kwargs={"hidden": [12], "batchnorm": True, "dropout": 0.1})
    plain = train(config, dataset=blobs)
    measure = Measure()
    tracked = train(config, dataset=blobs, callbacks=[measure])
    assert len(measure.values) == 4
    assert states_equal(plain.model.state_dict(), tracked.model.state_dict())


@pytest.mark.parametrize("at", [7, 12])  # mid-epoch, and on the last step of epoch 1 (12 steps per epoch)
def test_resume_after_interrupt_is_bit_identical(blobs, tmp_path, at):
    config = cfg(epochs=3, optimizer="adam", lr=0.01, schedule="cosine", eval_every=2,
                 model_kwargs={"hidden": [12], "dropout": 0.2, "batchnorm": True})
    reference = train(config, dataset=blobs)
    out = tmp_path / "run.pt"
    with pytest.raises(TrainingInterrupted) as info:
        train(config, dataset=blobs, out=out, callbacks=[InterruptAt(at)])
    assert info.value.step == at and info.value.resume_path == resume_path(out)
    assert os.path.exists(resume_path(out)) and not out.exists()
    rec = Recorder()
    resumed = train(dataclasses.replace(config, resume=True), dataset=blobs, out=out, callbacks=[rec])
    assert rec.steps[0] == at + 1
    assert states_equal(reference.model.state_dict(), resumed.model.state_dict())
    strip = lambda hs: [{k: v for k, v in h.items() if k != "wall_time"} for h in hs]  # noqa: E731
    assert strip(resumed.history) == strip(reference.history)
    assert not os.path.exists(resume_path(out))
    assert load_checkpoint(out).extra["resumed"] is True


class SignalDuringForward(nn.Module):
    """Wraps a model and sends ``sig`` to this process during its ``at``-th forward pass (a Ctrl-C mid-step)."""

    calls = 0

    def __init__(self, inner, at, sig):
        super().__init__()
        self.inner, self.at, self.sig = inner, at, sig

    def forward(self, x):
        SignalDuringForward.calls += 1
        if SignalDuringForward.calls == self.at:
            os.kill(os.getpid(), self.sig)
        return self.inner(x)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_mid_step_is_deferred_to_the_step_boundary(blobs, tmp_path, sig):
    config = cfg(momentum=0.9)
    inner = build_model("mlp", input_shape=[4], num_classes=3, seed=0, hidden=[12])
    reference = train(config, dataset=blobs, model=SignalDuringForward(inner, 0, sig))
    out = tmp_path / "run.pt"
    handler = signal.getsignal(sig)
    SignalDuringForward.calls = 0
    with pytest.raises(TrainingInterrupted) as info:  # forwards 1, 2 evaluate the initial weights; 7 is step 5's
        train(config, dataset=blobs, model=SignalDuringForward(inner, 7, sig), out=out)
    assert info.value.step == 5 and signal.getsignal(sig) is handler
    resumed = train(dataclasses.replace(config, resume=True), dataset=blobs, model=SignalDuringForward(inner, 0, sig), out=out)
    assert states_equal(reference.model.state_dict(), resumed.model.state_dict())


def test_resume_refuses_a_state_from_another_configuration(blobs, tmp_path):
    out = tmp_path / "run.pt"
    with pytest.raises(TrainingInterrupted):
        train(cfg(), dataset=blobs, out=out, callbacks=[InterruptAt(3)])
    with pytest.raises(InputError, match="same configuration, got lr=0.05 there vs 0.1 now"):
        train(cfg(lr=0.1, resume=True), dataset=blobs, out=out)


def test_nan_loss_stops_and_keeps_the_last_good_epoch(blobs, tmp_path):
    class Poison:  # breaks the contract on purpose: a NaN weight makes the next loss NaN
        def on_step_end(self, state):
            if state.step == 30:
                with torch.no_grad():
                    next(state.model.parameters())[0, 0] = float("nan")

    out = tmp_path / "run.pt"
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 31 \(epoch 3\); kept the last good weights "
                                               r"\(epoch 2, step 24\) in .*run.pt") as info:
        train(cfg(epochs=4), dataset=blobs, out=out, callbacks=[Poison()], keep_state=True)
    assert info.value.step == 31 and isinstance(info.value, InputError)
    assert not (tmp_path / "run.pt.resume").exists()  # the epoch-2 state would only resume into the same NaN
    kept = load_checkpoint(out)
    two_epochs = train(cfg(epochs=2), dataset=blobs)
    assert states_equal(kept.state_dict, two_epochs.model.state_dict())
    assert kept.metrics["stopped_by"] == "diverged" and kept.extra["diverged"]["step"] == 31
    assert [h["epoch"] for h in kept.history] == [0, 1, 2]


def test_huge_learning_rate_diverges_with_the_step_number(blobs, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at step \d+ \(epoch 1\)"):
        train(cfg(lr=1e12), dataset=blobs, out=tmp_path / "x.pt")
    kept = load_checkpoint(tmp_path / "x.pt")
    assert all(torch.isfinite(t).all() for t in kept.state_dict.values())


def test_unwritable_output_is_refused_before_training(blobs, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="writable output directory"):
        train(cfg(), dataset=blobs, out=tmp_path / "file" / "sub" / "run.pt")
