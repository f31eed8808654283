"""Throughput and time to target: the arithmetic on recorded histories, the clock that skips evaluations."""

import pytest
import torch

from sharpness import load_dataset
from sharpness.errors import InputError
from sharpness.train.throughput import _StepClock, fraction_batch_sizes, measure_throughput, time_to_target
from sharpness.train import TrainConfig


def _history(losses, steps_per_epoch=10):
    """epoch 0 (the initial weights) then one record per epoch; None = that epoch was not evaluated."""
    return [{"epoch": e, "step": e * steps_per_epoch, "train_loss": loss} for e, loss in enumerate(losses)]


def test_time_to_target_is_the_first_evaluated_epoch_below_the_target():
    h = _history([2.3, 1.0, None, 0.15, 0.1, 0.05])
    t = time_to_target(h, 0.2, steps_per_second=4.0)
    assert t.reached and t.epochs == 3 and t.steps == 30 and t.seconds == pytest.approx(7.5)
    assert time_to_target(h, 0.1).epochs == 5  # strictly below: 0.1 itself does not count
    assert time_to_target(h, 0.2).seconds is None  # no throughput, no seconds


def test_a_run_that_never_reached_the_target_reports_what_it_spent():
    t = time_to_target(_history([2.3, 1.0, 0.9]), 0.2, steps_per_second=10.0)
    assert not t.reached and t.epochs == 2 and t.steps == 20 and t.seconds == pytest.approx(2.0)


def test_time_to_target_refuses_empty_histories_and_bad_throughput():
    with pytest.raises(InputError, match="history"):
        time_to_target([], 0.2)
    with pytest.raises(InputError, match="steps_per_second"):
        time_to_target(_history([1.0]), 0.2, steps_per_second=0.0)


def test_fraction_batch_sizes_follow_the_training_set_size():
    assert fraction_batch_sizes(4000, 1 / 500) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4000]
    assert fraction_batch_sizes(60000, 1 / 500, factor=4) == [120, 480, 1920, 7680, 30720, 60000]
    assert fraction_batch_sizes(100, 1.0) == [100]
    with pytest.raises(InputError):
        fraction_batch_sizes(100, 0.0)


def test_the_step_clock_counts_steps_and_skips_the_evaluation(monkeypatch):
    times = iter([0.0, 1.0, 2.0, 5.0, 6.5])  # begin, step, step, epoch end (after a 3 s evaluation), step
    monkeypatch.setattr("sharpness.train.throughput.time.perf_counter", lambda: next(times))
    clock = _StepClock(lambda: None)
    clock.on_train_begin(None)
    clock.on_step_end(None)
    clock.on_step_end(None)
    clock.on_epoch_end(None)
    clock.on_step_end(None)
    assert clock.steps == 3 and clock.seconds == pytest.approx(3.5)


def test_measure_throughput_times_the_configured_batch():
    ds = load_dataset("blobs", n=64, dim=4, classes=3)
    cfg = TrainConfig(data="blobs", model="mlp", model_kwargs={"hidden": [8]}, batch_size=16, epochs=1, lr=0.1)
    threads = torch.get_num_threads()
    t = measure_throughput(cfg, dataset=ds, steps=5, repeats=2)
    assert t.batch_size == 16 and t.steps == 5 and t.repeats == 2 and len(t.per_repeat) == 2
    assert t.steps_per_second > 0 and t.samples_per_second == pytest.approx(16 * t.steps_per_second)
    assert t.steps_per_second == max(t.per_repeat)  # the least disturbed repeat
    assert t.median_steps_per_second == pytest.approx(sum(t.per_repeat) / 2)
    assert t.device == "cpu" and t.threads == threads
    with pytest.raises(InputError, match="steps"):
        measure_throughput(cfg, dataset=ds, steps=0)
