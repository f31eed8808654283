"""analyze's trace: the deflated estimator extends the eigenvalue run's basis; the mode choice is recorded."""

import torch

from conftest import assert_unchanged, make_classification, snapshot
from sharpness import analyze
from sharpness.hessian import dense_hessian
from sharpness.objective import Objective


def test_deflated_trace_in_analyze_reuses_the_eigenvalue_basis(mlp):
    x, y = make_classification(n=40)
    truth = float(torch.trace(dense_hessian(Objective(mlp, x, y))))
    before = snapshot(mlp)
    kw = dict(dtype="float64", top_k=1, trace_method="lanczos-deflated", trace_probes=45, seed=4)
    both = analyze(mlp, x, y, **kw).to_dict()["hessian"]
    alone = analyze(mlp, x, y, **{**kw, "top_k": 0, "bottom_k": 0}).to_dict()["hessian"]
    assert_unchanged(mlp, before)
    tr, tr_alone = both["trace"], alone["trace"]
    assert tr["reused_eigen_steps"] is True and tr_alone["reused_eigen_steps"] is False
    steps = both["top"]["num_steps"]
    # 30 Lanczos steps in all, `steps` of them already paid by the eigenvalue run; 15 residual probes each
    assert 0 < steps < 30 and tr["num_matvecs"] == 45 - steps and tr_alone["num_matvecs"] == 45
    assert tr["num_probes"] == tr_alone["num_probes"] == 15
    # P = 53 parameters: the estimate is close to the exact trace either way (stderr-sized error)
    for t in (tr, tr_alone):
        assert abs(t["value"] - truth) <= 5 * t["stderr"] + 1e-9 * abs(truth), (t, truth)
    assert both["mode_selection"] is None and both["mode"] == "retained-graph"  # "auto": the fixed rule
    timed = analyze(mlp, x, y, **{**kw, "hvp_mode": "fastest"}).to_dict()["hessian"]
    sel = timed["mode_selection"]
    assert set(sel) == {"single", "block"} and sel["single"]["chosen"] == timed["mode"]
