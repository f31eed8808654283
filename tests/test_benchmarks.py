"""Smoke tests of ``benchmarks/peers.py`` (nothing here is timed; the benchmark itself is run by hand).

* the script answers ``--help`` without importing any peer library;
* its problem builders run in about a second with a short training budget and build what the table says;
* the exact Hessian trace it uses as the MLP's ground truth agrees with the trace of the dense Hessian;
* the target evaluation and the markdown table work on a synthetic result.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sharpness.errors import InputError
from sharpness.hessian import dense_hessian
from sharpness.objective import Objective

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_help_lists_the_options(peers, capsys):
    with pytest.raises(SystemExit) as exit_info:
        peers.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--problems", "--tasks", "--quick", "--threads", "--summarize"):
        assert option in out


def test_unknown_problem_is_a_usage_error(peers, capsys):
    assert peers.main(["--problems", "nope"]) == 2
    assert "unknown problem" in capsys.readouterr().err


def test_script_runs_as_a_program():
    # Only the entry point: the in-process tests above cover the options (a subprocess re-imports torch).
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "--problems" in out.stdout, out.stderr


@pytest.mark.parametrize(("name", "num_params", "n"), [("mlp-digits", 85_002, 1797), ("cnn-digits", 1_610, 1797)])
def test_problem_builders(peers, name, num_params, n):
    problem = peers.PROBLEMS[name](train_steps=1)
    assert (problem.num_params, problem.n) == (num_params, n)
    assert not problem.model.training  # measured in eval mode, as in the issue
    assert problem.model(problem.x[:3]).shape == (3, 10)


def test_fmnist_builder(peers):
    try:
        problem = peers.PROBLEMS["cnn-fmnist-1000"](train_steps=1)
    except InputError as err:
        pytest.skip(f"Fashion-MNIST files not available: {err}")
    assert problem.num_params == 1_021_034  # "~1M parameters"
    assert problem.n == 1000 and problem.tasks == ("hvp",)


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
def test_exact_mlp_trace_matches_dense_hessian(peers, activation):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 4), activation(), nn.Linear(4, 6), activation(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(11, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=g)
    exact = torch.trace(dense_hessian(Objective(model, x, y))).item()
    # Both sides are exact in float64; they differ only by the order of O(100) additions (~1e-15 relative),
    # and chunking (4 samples per chunk, a short last one) must not change the mean. 1e-10 leaves room for
    # that rounding while any wrong term (a missing σ'' or bias contribution) shifts the trace by >1e-3.
    assert peers.exact_mlp_trace(model, x, y, chunk=4) == pytest.approx(exact, rel=1e-10)


def test_exact_mlp_trace_refuses_other_architectures(peers):
    with pytest.raises(TypeError, match="expected Sequential"):
        peers.exact_mlp_trace(nn.Sequential(nn.Linear(3, 3), nn.Softplus(), nn.Linear(3, 2)), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def _entry(task, library, setting, seconds, rel_error=None, stderr=None, values=None, hvps=1):
    return {"task": task, "library": library, "setting": setting, "status": "ok", "error": None, "seconds_best": seconds,
            "seconds_median": seconds, "seconds_all": [seconds], "cpu_seconds_all": [seconds], "num_hvps": hvps,
            "values": values, "stderr": stderr, "extra": {}, "rel_error": rel_error, "peak_rss_mb": 1.0, "note": None}


def test_targets_and_table_on_a_synthetic_result(peers, tmp_path):
    entries = [
        # plain PyTorch's streamed product listed first: the targets must still divide by the gradient
        _entry("hvp", "torch", "HVP, plain double backward over the same 4 chunks (module)", 0.030),
        _entry("hvp", "torch", "gradient (plain autograd, module)", 0.010, hvps=0),
        _entry("hvp", "sharpness", "HVP, retained-graph", 0.020),
        _entry("hvp", "sharpness", "HVP, streamed (4 chunks, auto mode)", 0.024),
        _entry("top1", "sharpness", "top_eigenvalues(tol=1e-4)", 0.5, rel_error=1e-6),
        _entry("top1", "pyhessian", "eigenvalues()", 1.0, rel_error=1e-3),
        _entry("top5", "sharpness", "top_eigenvalues(tol=1e-4)", 1.0, rel_error=1e-6),
        _entry("top5", "curvlinops", "eigsh", 3.0, rel_error=1e-8),
        _entry("top5", "eigenthings", "defaults", 0.1, rel_error=0.3),  # fast but inaccurate: not a reference
    ]
    targets = {t["target"]: t for t in peers.evaluate_targets(entries, truth={"trace": 1.0})}
    hvp = targets["HVP ≤ 1.5× gradient (retained graph)"]
    assert hvp["value"] == pytest.approx(2.0) and hvp["met"] is False
    streamed = targets["HVP ≤ 2.5× gradient (streamed chunks)"]
    assert streamed["met"] is True and streamed["value"] == pytest.approx(2.4)
    assert "plain PyTorch over the same chunks 3.00×" in streamed["detail"]
    assert targets["top-1 error ≤ 1e-4 in ≤ PyHessian's time"]["value"] == pytest.approx(0.5)
    top5 = targets["top-5 error ≤ 1e-4 in ≤ ½ the fastest accurate peer's time"]
    assert top5["value"] == pytest.approx(1.0 / 3.0) and top5["met"] is True  # against curvlinops, not eigenthings

    result = {
        "date": "2026-01-01T00:00:00", "config": {"threads": 1, "rounds": 3, "hvp_rounds": 9},
        "machine": {"cpu": "test CPU", "logical_cpus": 2, "loadavg_start": [0.0, 0.0, 0.0]},
        "versions": {"torch": torch.__version__, "sharpness": "0", "peers": {"pyhessian": "0.1"}},
        "problems": [{"problem": {"name": "p", "description": "d", "num_params": 10, "n_samples": 5, "peer_batches": 1},
                      "truth": None, "entries": entries, "targets": list(targets.values())}],
        "peak_rss_mb": 1.0, "seconds": 1.0,
    }
    md = peers.markdown(result)
    assert "| top5 |" in md and "3.0× ours" in md and "HVP ≤ 1.5× gradient" in md
    path = tmp_path / "r.json"
    path.write_text(peers.json.dumps(result))
    assert "0.50–0.50" in peers.summarize([str(path), str(path)])


def test_hvp_ratios_are_against_our_product_of_the_same_kind(peers):
    # Our gradient comes first, as in a real run: the old rule ("the first sharpness entry of the task") divided
    # the peers' products by it (PyHessian would read 4.0× ours, eigenthings 10.0× ours).
    entries = [
        _entry("hvp", "torch", "gradient (plain autograd, module)", 0.010, hvps=0),
        _entry("hvp", "sharpness", "gradient (Objective.value_and_grad)", 0.010, hvps=0),
        _entry("hvp", "sharpness", peers.OURS_RETAINED, 0.020),
        _entry("hvp", "sharpness", peers.OURS_FRESH, 0.050),
        _entry("hvp", "sharpness", peers.OURS_STREAMED_AUTO.format(chunks=4), 0.070),
        _entry("hvp", "sharpness", peers.OURS_STREAMED_RR.format(chunks=4), 0.080),
        _entry("hvp", "pyhessian", "HVP (retained graph)", 0.040),
        _entry("hvp", "eigenthings", "HVP (double backward)", 0.100),
        _entry("hvp", "curvlinops", "HVP (jvp of jacrev)", 0.150),
    ]
    one_batch = {"peer_batches": 1, "stream_chunks": 4}
    ref = {e["library"]: peers.reference_entry(entries, e, one_batch) for e in entries[6:]}
    assert ref["pyhessian"][0]["setting"] == peers.OURS_RETAINED and ref["pyhessian"][1] == "retained graph"
    assert ref["eigenthings"][0]["setting"] == ref["curvlinops"][0]["setting"] == peers.OURS_FRESH
    assert peers.reference_entry(entries, entries[0], one_batch) == (None, "")  # the baseline is not a peer
    result = {
        "date": "2026-01-01T00:00:00", "config": {"threads": 1, "rounds": 3, "hvp_rounds": 9},
        "machine": {"cpu": "test CPU", "logical_cpus": 2, "loadavg_start": [0.0, 0.0, 0.0]},
        "versions": {"torch": torch.__version__, "sharpness": "0", "peers": {}},
        "problems": [{"problem": {"name": "p", "description": "d", "num_params": 10, "n_samples": 5, **one_batch},
                      "truth": None, "entries": entries, "targets": []}],
        "peak_rss_mb": 1.0, "seconds": 1.0,
    }
    md = peers.markdown(result)
    assert "**2.0× ours** (retained graph)" in md and "**2.0× ours** (fresh)" in md and "**3.0× ours** (fresh)" in md
    assert "4.0× ours" not in md and "10.0× ours" not in md

    # Several batches: a fresh product against our streamed product over as many chunks; nothing retained.
    per_batch = [dict(e, setting="HVP (per-batch double backward)") if e["library"] == "pyhessian" else e for e in entries]
    four = {"peer_batches": 4, "stream_chunks": 4}
    assert peers.reference_entry(per_batch, per_batch[6], four)[0]["setting"] == peers.OURS_STREAMED_RR.format(chunks=4)
    assert peers.reference_entry(per_batch, per_batch[6], {"peer_batches": 4, "stream_chunks": 8}) == (None, "")
    # A result without our fresh one-batch product (written before it was measured) shows no fresh ratio at all.
    older = [e for e in entries if e["setting"] != peers.OURS_FRESH]
    pyhessian, eigenthings = (next(e for e in older if e["library"] == lib) for lib in ("pyhessian", "eigenthings"))
    assert peers.reference_entry(older, pyhessian, one_batch)[0]["setting"] == peers.OURS_RETAINED
    assert peers.reference_entry(older, eigenthings, one_batch) == (None, "")


class _FakePeer:
    """Stands in for PyHessian, hessian-eigenthings and curvlinops in :meth:`Bench.task_hvp`: the products are
    exact (sharpness' own), only the wiring of settings and references is under test."""

    def __init__(self, peers, problem):
        from sharpness.hessian import HessianOperator

        self.H = HessianOperator(peers._objective(problem))
        self.params = [torch.zeros(p.shape) for p in problem.model.parameters()]
        self.gradsH = None
        self._ph = self  # PyHessian's module-level hessian_vector_product

    def make(self):  # PyHessian: an object with gradsH and params; eigenthings: (op, count); curvlinops: A
        return self

    def hessian_vector_product(self, gradsH, params, vl):
        return [self.H @ torch.cat([t.reshape(-1) for t in vl])]

    def dataloader_hv_product(self, vl):
        return None, self.hessian_vector_product(None, None, vl)

    def matvec(self, v):
        return self.H @ v

    def __matmul__(self, v):
        return self.H @ v

    def __iter__(self):  # eigenthings' make() is unpacked as (op, count)
        return iter((self, None))


@pytest.mark.parametrize("peer_batches", [1, 4])
def test_task_hvp_measures_a_reference_of_each_peer_kind(peers, peer_batches):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).eval()
    x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
    problem = peers.Problem("tiny", "tiny MLP", model, x, y, "none", ("hvp",), stream_chunks=4, peer_batches=peer_batches)
    settings = peers.Settings(rounds=1, hvp_rounds=1, trace_matvecs=3, peer_trace_probes=3, density_steps=3, grid_steps=3, budget_s=1.0)
    bench = peers.Bench(problem, None, settings, {}, log=lambda msg: None)
    bench.adapters = {name: _FakePeer(peers, problem) for name in ("pyhessian", "eigenthings", "curvlinops")}
    bench.task_hvp()
    entries = [e.to_dict() for e in bench.entries]
    assert all(e["status"] == "ok" for e in entries), [e["error"] for e in entries]
    for e in entries:
        if e["num_hvps"]:
            assert e["rel_error"] < 1e-5, e  # every product, ours and the fakes', checked against float64
    cfg = problem.config()
    for e in (e for e in entries if e["library"] in ("pyhessian", "eigenthings", "curvlinops")):
        ours, kind = peers.reference_entry(entries, e, cfg)
        assert ours is not None and ours["library"] == "sharpness" and ours["num_hvps"] == 1, e["setting"]
        expected = {"retained graph": peers.OURS_RETAINED, "fresh": peers.OURS_FRESH if peer_batches == 1 else peers.OURS_STREAMED_RR.format(chunks=4)}
        assert ours["setting"] == expected[kind]


def test_vmapped_block_product_equals_column_products(peers):
    from sharpness.hessian import HessianOperator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(11, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (11,), generator=g)
    H = HessianOperator(Objective(model, x, y, chunk_size=4))
    V = torch.randn(H.shape[0], 3, generator=g, dtype=torch.float64)
    assert torch.allclose(peers.VmapBlockHessian(H) @ V, H @ V, rtol=1e-12, atol=1e-14)
