"""choose_directions: the one direction choice behind landscape() and ``sharpness landscape``."""

from __future__ import annotations

import pytest
import torch

from conftest import TinyMLP, make_classification
from sharpness.errors import InputError
from sharpness.landscape import choose_directions, grid, landscape, random_direction
from sharpness.objective import Objective


def _objective():
    torch.manual_seed(0)
    x, y = make_classification()
    return Objective(TinyMLP().double(), x, y)


def test_checkpoint_directions_point_at_the_targets():
    obj = _objective()
    g = torch.Generator().manual_seed(1)
    targets = [obj.theta + torch.randn(obj.numel, generator=g, dtype=torch.float64) for _ in range(2)]
    dirs, info = choose_directions(obj, "checkpoint", 2, targets=targets)
    assert info == {"kind": "checkpoint"}
    for d, t in zip(dirs, targets):
        assert torch.equal(d, t - obj.theta)
    res = landscape(obj, dims=1, directions="checkpoint", targets=targets[:1], alphas=grid(0, 1, 3))
    assert res.train_loss[-1] == obj.evaluate(targets[0]).loss  # α = 1 is the target itself
    with pytest.raises(InputError, match="needs 2 target parameter vector"):
        choose_directions(obj, "checkpoint", 2, targets=targets[:1])


def test_random_choice_and_errors():
    obj = _objective()
    dirs, info = choose_directions(obj, "random", 2, seed=5, ignore="bias")
    assert torch.equal(dirs[1], random_direction(obj, seed=6, ignore="bias"))
    assert info == {"kind": "random", "normalization": "filter", "ignore": "bias", "seeds": [5, 6]}
    with pytest.raises(InputError, match="random, eigen, pca, checkpoint"):
        choose_directions(obj, "sideways", 1)
    with pytest.raises(InputError, match="dims must be 1 or 2"):
        choose_directions(obj, "random", 3)
