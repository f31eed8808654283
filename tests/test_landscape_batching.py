"""Batched grid evaluation for models vmap cannot (or can only sometimes) batch: the result equals the loop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinyCNN, make_classification
from sharpness.landscape import grid, line, plane, random_direction
from sharpness.objective import Objective


class Branchy(nn.Module):
    """Data-dependent control flow: ``if`` on a tensor's value cannot be traced by vmap."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        h = self.fc(x)
        return h if h.sum() > 0 else -h


def test_data_dependent_control_flow_falls_back_to_the_loop():
    torch.manual_seed(0)
    x, y = make_classification()
    obj = Objective(Branchy().double(), x, y)
    d = random_direction(obj, seed=0, ignore=())
    with pytest.warns(UserWarning, match="one at a time"):
        batched = line(obj, None, d, grid(-1, 1, 9), batch_size=4)
    exact = line(obj, None, d, grid(-1, 1, 9), batch_size=1)
    np.testing.assert_array_equal(batched.train_loss, exact.train_loss)
    np.testing.assert_array_equal(batched.train_acc, exact.train_acc)


def test_batchnorm_in_train_mode_batched_equals_the_loop():
    """bn_mode="train" normalizes with each point's own batch statistics: batched (or, where vmap has no
    rule, the loop it falls back to) must equal one point at a time, to float64 rounding of batched products."""
    torch.manual_seed(1)
    x, y = make_classification(d=8)
    obj = Objective(TinyCNN().double(), x, y, bn_mode="train", chunk_size=23)
    d1, d2 = random_direction(obj, seed=1), random_direction(obj, seed=2)
    a, b = grid(-1, 1, 5), grid(-1, 1, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a fallback is allowed; its answer is checked below
        many = plane(obj, None, d1, d2, a, b, batch_size=4)
    one = plane(obj, None, d1, d2, a, b, batch_size=1)
    np.testing.assert_allclose(many.train_loss, one.train_loss, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(many.train_acc, one.train_acc)
    centre = obj.evaluate(obj.theta)
    assert one.train_loss[2, 2] == centre.loss
