"""One memory budget for an analysis: parsing, the split, and refusals made before any work."""

import json

import pytest
import torch

from cli_helpers import assert_input_error, run_cli
from conftest import make_classification
from sharpness import analyze
from sharpness.analysis.budget import DEFAULT_BUDGET, FIXED_VECTORS, GRAPH_SHARE, MemoryPlan, format_bytes, parse_memory
from sharpness.errors import InputError
from sharpness.hessian import HessianOperator
from test_cli import toolkit_ckpt  # noqa: F401  (the fixture)


def test_parse_memory_units_and_bare_bytes():
    assert parse_memory("8GiB") == 8 * 2**30
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("2GB") == 2 * 10**9
    # a bare number is bytes, as the estimators' memory= (issue #33: it used to mean GiB here only)
    assert parse_memory(2**30) == parse_memory(str(2**30)) == parse_memory(float(2**30)) == 2**30
    assert parse_memory("300B") == 300
    assert parse_memory(None) is None
    for bad in ("eight", "8 parsecs", "-1GiB", 0, True, "0.1B", float("nan"), float("inf")):
        with pytest.raises(InputError, match="memory"):
            parse_memory(bad)
    with pytest.raises(InputError, match="8GiB"):  # 8 bytes: surely meant as GiB; say so
        parse_memory(8)


def test_memory_is_bytes_in_the_api_and_the_cli_alike(capsys, toolkit_ckpt):  # noqa: F811
    x, y = make_classification()
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    report = analyze(model, x, y, memory=2**30, top_k=1, bottom_k=0, trace=False)
    assert report.cost["memory"]["budget_bytes"] == 2**30
    code, out, err = run_cli(capsys, "analyze", toolkit_ckpt, "--memory", str(2**30), "--no-trace", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["cost"]["memory"]["budget_bytes"] == 2**30
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--memory", "8"), "8GiB", "bytes")


def test_split_reserves_graph_and_fixed_vectors():
    plan = MemoryPlan.split(None, 10**6, 4)
    assert plan.total == DEFAULT_BUDGET and plan.graph == int(DEFAULT_BUDGET * GRAPH_SHARE)
    assert plan.vectors == plan.total - plan.graph - FIXED_VECTORS * 4 * 10**6
    assert format_bytes(3.01 * 2**30) == "3.1GiB" and format_bytes(2**20 + 1) == "2MiB"


def _counting(monkeypatch):
    calls = []
    original = HessianOperator.__matmul__
    monkeypatch.setattr(HessianOperator, "__matmul__", lambda self, v: calls.append(1) or original(self, v))
    return calls


def test_a_budget_too_small_is_refused_before_any_product_with_the_budget_that_fits(mlp, monkeypatch):
    x, y = make_classification()
    P = sum(p.numel() for p in mlp.parameters())
    # Hutch++ over 99 products keeps 3·33 + 2 = 101 vectors of P float64; leave room for about half of them.
    small = int((FIXED_VECTORS + 50) * P * 8 / (1 - GRAPH_SHARE))
    calls = _counting(monkeypatch)
    with pytest.raises(InputError, match="Hutch\\+\\+") as info:
        analyze(mlp, x, y, dtype="float64", memory=f"{small}B", top_k=1, bottom_k=0)
    assert calls == []  # refused before the first product
    fits = info.value.args[0].rsplit("--memory ", 1)[1].split()[0]
    report = analyze(mlp, x, y, dtype="float64", memory=fits, top_k=1, bottom_k=0)  # the quoted budget is enough
    assert report.cost["memory"]["budget_bytes"] == parse_memory(fits)
    assert calls  # and that run did the work
    # Hutchinson holds 2 vectors: the same small budget runs
    analyze(mlp, x, y, dtype="float64", memory=f"{small}B", top_k=0, bottom_k=0, trace_method="hutchinson")


def test_the_budget_decides_the_lanczos_basis():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).double()
    x, y = make_classification()
    P = sum(p.numel() for p in mlp.parameters())  # 579 > the 300 default steps: a basis need not span R^P
    big = analyze(mlp, x, y, dtype="float64", top_k=1, bottom_k=0, trace=False)
    # room for the recurrence (4 + k vectors) but not for a stored basis of max_steps vectors
    tight = analyze(mlp, x, y, dtype="float64", top_k=1, bottom_k=0, trace=False,
                    memory=f"{int((FIXED_VECTORS + 8) * P * 8 / (1 - GRAPH_SHARE))}B")
    assert big.hessian["top"]["reorthogonalization"] == "full"
    assert tight.hessian["top"]["reorthogonalization"] == "local"
    # the same eigenvalue either way, to the requested tolerance (1e-4 relative, the default)
    assert tight.hessian["top"]["values"][0] == pytest.approx(big.hessian["top"]["values"][0], rel=2e-4)


def test_cli_memory_sizes(capsys, toolkit_ckpt, tmp_path):
    out = tmp_path / "r.json"
    code, _, err = run_cli(capsys, "analyze", toolkit_ckpt, "--memory", "1GiB", "--top-k", "1", "--bottom-k", "0",
                           "--no-trace", "--json", out)
    assert code == 0, err
    assert json.loads(out.read_text())["cost"]["memory"]["budget_bytes"] == 2**30
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--memory", "lots"), "memory", "8GiB", "lots")
    assert_input_error(run_cli(capsys, "analyze", toolkit_ckpt, "--memory", "1KiB", "--no-trace"),
                       "memory", "expected --memory")


def test_paper_mode_is_refused_before_any_work_with_the_budget_its_lbfgs_memory_needs(mlp, monkeypatch):
    from sharpness.analysis.budget import ASCENT_VECTORS, LBFGS_FLOAT64_VECTORS
    from sharpness.objective import Objective

    x, y = make_classification()
    P = sum(p.numel() for p in mlp.parameters())
    assert LBFGS_FLOAT64_VECTORS == 2 * 10 + 5 + 2  # scipy's maxcor = 10: (2m + 5) workspace vectors, x and g
    # room for the ascent's 8 float64 vectors but not for L-BFGS-B's 27 float64 + 2
    small = int((FIXED_VECTORS + ASCENT_VECTORS + 1) * P * 8 / (1 - GRAPH_SHARE))
    work = []
    for name in ("evaluate", "value", "value_and_grad"):
        original = getattr(Objective, name)
        monkeypatch.setattr(Objective, name, lambda self, *a, _f=original, **k: work.append(1) or _f(self, *a, **k))
    opts = dict(dtype="float64", top_k=0, bottom_k=0, trace=False, epsilon=(1e-2,), epsilon_max_iter=2)
    analyze(mlp, x, y, memory=f"{small}B", **opts)  # the ascent fits
    work.clear()
    with pytest.raises(InputError, match="paper-mode ε-sharpness \\(scipy L-BFGS-B, float64\\)") as info:
        analyze(mlp, x, y, memory=f"{small}B", epsilon_method="paper", **opts)
    assert work == []  # refused before the loss at θ
    message = str(info.value)
    need = (2 + LBFGS_FLOAT64_VECTORS) * P * 8  # what it holds: 2 + 27 float64 vectors of P
    assert format_bytes(need) in message and "\n" not in message
    fits = message.rsplit("--memory ", 1)[1].split()[0]
    assert parse_memory(fits) >= (need + FIXED_VECTORS * P * 8) / (1 - GRAPH_SHARE)
    report = analyze(mlp, x, y, memory=fits, epsilon_method="paper", **opts)  # the quoted budget is enough
    assert work and report.measures["epsilon_sharpness"][0].method == "paper"
