"""ε-sharpness in a random subspace whose A does not fit the budget: A regenerated tile by tile (issue #28).

The stored path (A and its QR held whole) is the reference: the generated path must draw the same A bit for
bit and give the same box, maximizer and value up to float64 rounding, hold no more than the tile the budget
allows, make the passes over A its docstring states, and refuse a budget without room for one tile before any
work."""

import pytest
import torch

from conftest import make_classification
from sharpness import analyze
from sharpness.analysis.budget import FIXED_VECTORS, GRAPH_SHARE, SUBSPACE_VECTORS, TILE_VECTORS
from sharpness.errors import InputError
from sharpness.measures.epsilon import _generated_subspace, _seeded_subspace, random_subspace, search_epsilon_box
from sharpness.measures.subspace import PIECE, GeneratedBasis, smallest_rows, subspace_rows, tile_bounds, tile_bytes
from sharpness.objective import Objective

P_DIM = 6  # p: several tiles at every budget below, and a spectral start of 6 Lanczos steps


@pytest.fixture
def objective():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).double()
    x, y = make_classification()
    return Objective(model, x, y)  # P = 579 float64 parameters


def _memory(P: int, rows: int, p: int = P_DIM) -> int:
    """The estimator budget whose largest tile is exactly ``rows`` rows."""
    return SUBSPACE_VECTORS * P * 8 + tile_bytes(rows, p, 8)


@pytest.mark.parametrize("rows", [16, 96, 192, 576])
def test_tiles_are_the_stored_subspace_bit_for_bit(rows):
    numel, seed = 579, 3
    basis = GeneratedBasis(numel, P_DIM, seed, torch.float64, torch.device("cpu"), rows)
    bounds = basis.bounds
    assert bounds[0][0] == 0 and bounds[-1][1] == numel and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all((r1 - r0) % PIECE == 0 for r0, r1 in bounds[:-1])  # pieces of whole groups of 16 normals ...
    assert all(PIECE <= r1 - r0 <= rows + PIECE - 1 for r0, r1 in bounds)  # ... the last one ≥ 16
    whole = random_subspace(numel, P_DIM, seed=seed)
    assert torch.equal(torch.cat([basis.tile(t) for t in range(len(bounds))]), whole)
    # the generator ends where drawing A whole leaves it, so the random starts are the same
    assert torch.equal(basis.end_state, _seeded_subspace(numel, P_DIM, seed, torch.float64, torch.device("cpu"))[3])
    y, g = torch.randn(P_DIM, dtype=torch.float64), torch.randn(numel, dtype=torch.float64)
    # different summation orders only: float64 rounding of p (resp. P) terms of size ≤ 1
    assert torch.allclose(basis @ y, whole @ y, rtol=0, atol=1e-13)
    assert torch.allclose(basis.T @ g, whole.T @ g, rtol=0, atol=1e-12)
    assert torch.allclose(basis @ y.reshape(-1, 1).repeat(1, 2), (whole @ y).reshape(-1, 1).repeat(1, 2), atol=1e-13)


@pytest.mark.parametrize("method", ["ascent", "paper"])
def test_generated_and_stored_subspaces_give_the_same_sharpness(objective, method):
    P = objective.numel
    stored = search_epsilon_box(objective, 1e-2, subspace_dim=P_DIM, method=method, restarts=2, seed=7, curvature=3.0)
    rows = 2 * smallest_rows(P, P_DIM)  # two columns' worth: 3 tiles of 192, 192, 195 rows
    generated = search_epsilon_box(objective, 1e-2, subspace_dim=P_DIM, method=method, restarts=2, seed=7,
                                   curvature=3.0, memory=_memory(P, rows))
    assert isinstance(stored.basis, torch.Tensor) and isinstance(generated.basis, GeneratedBasis)
    assert generated.basis.rows == rows and len(generated.basis.bounds) == 3
    # The box: A⁺θ by QR (stored) and by the normal equations (generated) against float64 least squares.
    A = random_subspace(P, P_DIM, seed=7)
    centre = torch.linalg.lstsq(A, objective.theta.unsqueeze(1)).solution.squeeze(1)
    for search in (stored, generated):
        assert torch.allclose(search.bounds, 1e-2 * (centre.abs() + 1), rtol=1e-12, atol=0)
    # Same A, same box up to rounding ⇒ the same decisions (sign steps, accept/reject, statuses) and values
    # that differ by the rounding of f: |Δf| ≲ P·u·|f| ≈ 1e-13, φ = 100·Δf/(1 + f), so 1e-10 leaves 10³ of margin.
    # (L-BFGS-B's counts excepted: with pgtol = 0 it stops when every coordinate sits exactly on its bound,
    # which a 1e-18 difference in b can put off by an iteration.)
    s, g = stored.result, generated.result
    assert s.status == g.status
    if method == "ascent":
        assert (s.iterations, s.num_function_evals, s.num_hvps) == (g.iterations, g.num_function_evals, g.num_hvps)
    assert g.value == pytest.approx(s.value, rel=0, abs=1e-10) and s.value > 0
    assert g.values_per_start == pytest.approx(s.values_per_start, rel=0, abs=1e-10)
    assert g.upper_bound == pytest.approx(s.upper_bound, rel=1e-12)  # σ_max(A) from R and from AᵀA
    assert torch.allclose(generated.maximizer, stored.maximizer, rtol=1e-12, atol=0)
    assert torch.allclose(generated.perturbation, stored.perturbation, rtol=0, atol=1e-15)


def test_the_tile_is_what_the_budget_allows_and_no_larger(objective, monkeypatch):
    P = objective.numel
    one = smallest_rows(P, P_DIM)  # 112 rows ≥ ⌈579 / 6⌉ = 97: one column's worth
    assert one % PIECE == 0 and P / P_DIM <= one < P / P_DIM + PIECE
    for rows in (one, one + PIECE, 2 * one):
        assert subspace_rows(P, P_DIM, 8, _memory(P, rows)) == rows
        assert subspace_rows(P, P_DIM, 8, _memory(P, rows) + PIECE * (P_DIM * 8 + 8) - 1) == rows  # 16 rows short
    cap = PIECE * (TILE_VECTORS * P // (PIECE * P_DIM))
    assert subspace_rows(P, P_DIM, 8, (8 + 2 * P_DIM) * P * 8 - 1) == cap  # lots of room: at most 4 P-vectors
    assert subspace_rows(P, P_DIM, 8, (8 + 2 * P_DIM) * P * 8) is None  # A and its QR fit: stored, as before
    assert subspace_rows(P, P_DIM, 8, None) is None
    held = []  # every tile any pass holds, in bytes with its float64 piece
    original = GeneratedBasis.tile
    monkeypatch.setattr(GeneratedBasis, "tile", lambda self, t: held.append(original(self, t)) or held[-1])
    memory = _memory(P, one)
    search_epsilon_box(objective, 1e-2, subspace_dim=P_DIM, restarts=1, seed=11, memory=memory)
    assert held and max(a.shape[0] for a in held) <= one + PIECE - 1
    assert all(a.shape[1] == P_DIM for a in held)
    assert SUBSPACE_VECTORS * P * 8 + max(a.shape[0] for a in held) * (P_DIM * 8 + 8) <= memory


def test_passes_over_A_are_those_the_docstring_states(objective):
    P, p = objective.numel, P_DIM
    _generated_subspace.cache_clear()
    memory = _memory(P, smallest_rows(P, p))
    search = search_epsilon_box(objective, 1e-2, subspace_dim=p, start="corner", restarts=0, max_iter=4, seed=5,
                                memory=memory)
    evals = search.result.num_function_evals  # the one at θ (y = 0), then the ascent's
    assert evals >= 2
    # the states 1 + AᵀA with Aᵀθ and Aᵀ∇f(θ) 1 + 2 per evaluation away from y = 0
    assert search.basis.draws == pytest.approx(p * (2 + 2 * (evals - 1)))
    before = search.basis.draws
    assert torch.any(search.maximizer != 0)
    search.perturbation  # A y*: one more pass, once
    search.perturbation
    assert search.basis.draws - before == pytest.approx(p)
    before = search.basis.draws
    again = search_epsilon_box(objective, 2e-2, subspace_dim=p, start="corner", restarts=0, max_iter=4, seed=5,
                               memory=memory)
    assert again.basis is search.basis  # cached: no new states, AᵀA kept, one pass for Aᵀθ and Aᵀ∇f(θ)
    assert again.basis.draws - before == pytest.approx(p * (1 + 2 * (again.result.num_function_evals - 1)))


def test_a_budget_without_room_for_one_tile_is_refused_before_any_work(objective, monkeypatch):
    P = objective.numel
    need = _memory(P, smallest_rows(P, P_DIM))
    calls = []
    monkeypatch.setattr(Objective, "value_and_grad", lambda self, *a: calls.append(1))
    monkeypatch.setattr(GeneratedBasis, "__init__", lambda self, *a: calls.append(2))
    with pytest.raises(InputError, match=f"expected memory={need} bytes or more") as info:
        search_epsilon_box(objective, 1e-2, subspace_dim=P_DIM, memory=need - 1)
    assert calls == [] and "subspace of p = 6" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.undo()
    assert isinstance(search_epsilon_box(objective, 1e-2, subspace_dim=P_DIM, memory=need, max_iter=2).basis,
                      GeneratedBasis)  # the quoted budget is enough


def test_analyze_regenerates_A_within_its_budget_and_reports_the_same_value(objective):
    torch.manual_seed(0)  # the fixture's model again, for analyze
    model = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).double()
    x, y = make_classification()
    P = objective.numel
    opts = dict(dtype="float64", top_k=0, bottom_k=0, trace=False, epsilon=(1e-2,), subspace_dim=P_DIM,
                epsilon_start="corner", epsilon_restarts=1, epsilon_max_iter=10)
    # vectors' share: the full-space ascent's 8 P-vectors, less than A and its QR (2p + 8 = 20)
    tight = int((FIXED_VECTORS + 10) * P * 8 / (1 - GRAPH_SHARE)) + 64
    _generated_subspace.cache_clear()
    small = analyze(model, x, y, memory=f"{tight}B", **opts).measures["epsilon_sharpness"]
    assert _generated_subspace.cache_info().currsize == 1  # the subspace was generated, not stored
    large = analyze(model, x, y, **opts).measures["epsilon_sharpness"]
    assert [e.space for e in small] == ["full", "random"]
    assert small[0].value == large[0].value  # the full space does not depend on the budget
    assert small[1].value == pytest.approx(large[1].value, rel=0, abs=1e-10) and large[1].value > 0


def test_every_piece_is_drawn_into_one_buffer(monkeypatch):
    # Fresh piece tensors between the small generator-state tensors fragment the heap: building the states for
    # P = 10 M, p = 100 in tiles of 1 963 072 rows took the resident set from 0.4 to 8.1 GB; with one buffer,
    # 0.40 GB. What is checked here is the cause: no piece gets storage of its own.
    original, seen = torch.randn, []

    def randn(*args, out=None, **kw):
        seen.append(None if out is None else out.untyped_storage().data_ptr())
        return original(*args, out=out, **kw)

    monkeypatch.setattr(torch, "randn", randn)
    basis = GeneratedBasis(579, P_DIM, 3, torch.float64, torch.device("cpu"), 96)
    basis.tile(1)
    basis.tile(len(basis.bounds) - 1)
    monkeypatch.undo()
    assert len(seen) == P_DIM * (len(basis.bounds) + 2)
    assert set(seen) == {basis._piece.untyped_storage().data_ptr()}
