"""No host round trip per matvec / step / grid point: the conversions to host values per step are bounded by a
constant that does not grow with the number of steps (see ``sync_counter``)."""

from __future__ import annotations

import pytest
import torch

from conftest import TinyMLP, make_classification
from sharpness import landscape as ls
from sharpness.linalg.lanczos import LanczosProcess, lanczos
from sharpness.measures.adaptive import _direction, _project, ascend, average_sharpness
from sharpness.objective import Objective
from sync_counter import count_syncs


def _spd(n=120):
    X = torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return X @ X.T / n


def _count(monkeypatch, fn) -> int:
    with count_syncs(monkeypatch) as counts:
        fn()
    return sum(counts.values())


def test_lanczos_one_fetch_per_step(monkeypatch):
    A = _spd()
    short, long = (_count(monkeypatch, lambda n=n: lanczos(A, n, seed=0)) for n in (10, 40))
    # one (α, β, ‖Aq‖) fetch per step: .cpu() + .tolist() of the same 3-vector
    assert (long - short) / 30 <= 2


def test_block_lanczos_one_fetch_per_step_for_all_runs(monkeypatch):
    A = _spd()
    start = torch.randn(A.shape[0], 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(n):
        proc = LanczosProcess(A, start, max_steps=n)
        for _ in range(n):
            proc.step()

    short, long = (_count(monkeypatch, lambda n=n: run(n)) for n in (10, 40))
    assert (long - short) / 30 <= 2  # not 2 × 3 runs


@pytest.fixture
def objective():
    torch.manual_seed(0)
    x, y = make_classification(n=40)
    return Objective(TinyMLP().double(), x, y, chunk_size=10)  # 4 chunks: no fetch per chunk either


def test_adaptive_ascent_one_fetch_per_step(monkeypatch, objective):
    short, long = (_count(monkeypatch, lambda n=n: ascend(objective, 0.05, steps=n)) for n in (5, 20))
    assert (long - short) / 15 <= 1  # the loss that decides whether the step is kept


@pytest.mark.parametrize("batch_size", [1, None])  # one point at a time, and the vmapped blocks (16 points here)
def test_average_sharpness_fetches_once(monkeypatch, objective, batch_size):
    short, long = (_count(monkeypatch, lambda n=n: average_sharpness(objective, 0.05, num_draws=n, batch_size=batch_size))
                   for n in (5, 20))
    assert short == long  # 20 draws are 3 blocks of 16 points: no fetch per block either


@pytest.mark.parametrize("batch_size", [1, 16])
def test_grid_fetches_once_per_line_and_once_per_plane_row(monkeypatch, objective, batch_size):
    d = ls.random_direction(objective, seed=0)
    short, long = (_count(monkeypatch, lambda n=n: ls.line(objective, None, d, ls.grid(-1, 1, n), batch_size=batch_size))
                   for n in (11, 41))
    assert short == long
    d2 = ls.random_direction(objective, seed=1)
    rows = [_count(monkeypatch, lambda n=n: ls.plane(objective, None, d, d2, ls.grid(-1, 1, n), ls.grid(-1, 1, 9),
                                                    batch_size=batch_size)) for n in (3, 9)]
    assert (rows[1] - rows[0]) / 6 <= 2  # one fetch (.cpu + .numpy) per row


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_side_projection_equals_the_host_formula(dtype):
    g = torch.Generator().manual_seed(3)
    for scale in (0.1, 1.0, 10.0):
        u = (scale * torch.randn(50, generator=g, dtype=torch.float64)).to(dtype)
        norm = float(u.norm())
        for rho in (0.5 * norm, norm, 2 * norm):
            host = u if norm <= rho else u * (rho / norm)
            assert torch.equal(_project(u, rho, "2"), host)
        assert torch.equal(_direction(u, "2"), u / norm)
    zero = torch.zeros(5, dtype=dtype)
    assert torch.equal(_direction(zero, "2"), zero) and torch.equal(_project(zero, 1.0, "2"), zero)
