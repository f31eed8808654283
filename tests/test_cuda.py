"""CUDA against the CPU in float64, the TF32 policy, memory, determinism and NCCL; skipped without CUDA.

Run on a GPU machine by ``benchmarks/gpu_check.py`` (``pytest -m cuda tests/test_cuda.py``).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinyCNN, make_classification
from sharpness.hessian import HessianOperator, dense_hessian
from sharpness.landscape import grid, plane, random_direction
from sharpness.linalg import extreme_eigenvalues, hutchinson_trace
from sharpness.objective import Objective
from sharpness.analysis.report import analyze

pytestmark = [pytest.mark.cuda, pytest.mark.timeout(300),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


class ConvNet(nn.Module):
    """2D convolutions and a linear head: the kernels TF32 would touch (cuDNN convs, GEMMs)."""

    def __init__(self, seen: list | None = None):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16 * 8 * 8, 5)
        self.seen = seen

    def forward(self, x):
        if self.seen is not None:
            self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.head(h.flatten(1))


def _conv_data(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def _cnn():
    torch.manual_seed(1)
    model = TinyCNN().double()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
        model.bn.running_var.copy_(torch.tensor([1.7, 0.6], dtype=torch.float64))
    return model


def test_hvp_on_cuda_equals_cpu_in_float64():
    x, y = make_classification(n=40, d=8)
    model = _cnn()
    cpu, gpu = Objective(model, x, y, dtype=torch.float64), Objective(model, x, y, dtype=torch.float64, device=CUDA)
    v = torch.randn(cpu.numel, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = HessianOperator(cpu) @ v
    out = (HessianOperator(gpu) @ v.to(CUDA)).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-13)  # float64 rounding, reordered sums


def test_eigenvalues_and_trace_on_cuda_match_the_cpu():
    x, y = make_classification(n=40, d=8)
    model = _cnn()
    cpu, gpu = Objective(model, x, y, dtype=torch.float64), Objective(model, x, y, dtype=torch.float64, device=CUDA)
    exact = torch.linalg.eigvalsh(dense_hessian(cpu))
    top, bottom = extreme_eigenvalues(HessianOperator(gpu), top_k=2, bottom_k=1, tol=1e-10, seed=0)
    np.testing.assert_allclose(top.values, exact.flip(0)[:2].numpy(), rtol=1e-8)
    np.testing.assert_allclose(bottom.values, exact[:1].numpy(), rtol=1e-8, atol=1e-10)
    tr = hutchinson_trace(HessianOperator(gpu), num_probes=400, seed=0)
    assert abs(tr.value - float(exact.sum())) < 5 * tr.stderr + 1e-12


def test_float32_with_tf32_off_matches_float64():
    """TF32 off (the default policy): a float32 CUDA λ_max agrees with float64 CPU to float32 accuracy."""
    x, y = _conv_data()
    torch.manual_seed(0)
    model = ConvNet()
    ref = analyze(model, x, y, dtype="float64", top_k=1, bottom_k=0, trace=False, tol=1e-8)
    f32 = analyze(model, x, y, dtype="float32", device="cuda", top_k=1, bottom_k=0, trace=False, tol=1e-6)
    assert f32.to_dict()["environment"]["precision"]["allow_tf32"] is False
    lam, lam32 = ref.hessian["top"]["values"][0], f32.hessian["top"]["values"][0]
    assert abs(lam32 - lam) <= 1e-4 * abs(lam)  # TF32 would give ~1e-3


@pytest.mark.parametrize("allow", [False, True])
def test_tf32_is_off_by_default_and_on_with_the_flag(allow):
    x, y = _conv_data(16)
    seen: list = []
    torch.manual_seed(0)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    report = analyze(ConvNet(seen), x, y, device="cuda", top_k=1, bottom_k=0, trace=False, allow_tf32=allow)
    assert seen and all(s == (allow, allow) for s in seen)
    assert report.to_dict()["environment"]["precision"]["cudnn_allow_tf32"] is allow
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_memory_is_released_after_analysis_and_grids():
    x, y = _conv_data()
    torch.manual_seed(0)
    model = ConvNet()
    # A first analysis allocates what CUDA keeps for the process (cuBLAS/cuDNN workspaces come from the
    # caching allocator and count as allocated); from then on an analysis must leave nothing behind.
    analyze(model, x, y, device="cuda", top_k=1, bottom_k=0, trace_probes=3)
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    report = analyze(model, x, y, device="cuda", top_k=2, bottom_k=1, trace_probes=12)
    obj = Objective(model, x, y, device=CUDA)
    plane(obj, None, random_direction(obj, seed=0), random_direction(obj, seed=1), grid(-1, 1, 5), grid(-1, 1, 5))
    del obj
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == baseline
    assert report.loss > 0


def test_determinism_probe_uses_the_cuda_tolerance():
    x, y = _conv_data()
    torch.manual_seed(0)
    obj = Objective(ConvNet(), x, y, device=CUDA)
    assert obj.determinism["rule"] == "tolerance" and obj.determinism["difference"] <= obj.determinism["tolerance"]


def test_grid_on_cuda_equals_cpu_in_float64():
    x, y = make_classification(n=40, d=8)
    model = _cnn()
    cpu, gpu = Objective(model, x, y, dtype=torch.float64), Objective(model, x, y, dtype=torch.float64, device=CUDA)
    d1, d2 = random_direction(cpu, seed=1), random_direction(cpu, seed=2)
    a = grid(-1, 1, 7)
    ref = plane(cpu, None, d1, d2, a, a, batch_size=1)
    out = plane(gpu, None, d1.to(CUDA), d2.to(CUDA), a, a, batch_size=16)
    np.testing.assert_allclose(out.train_loss, ref.train_loss, rtol=1e-12)
    np.testing.assert_array_equal(out.train_acc, ref.train_acc)


NCCL_SMOKE = """
import torch, torch.distributed as dist
from sharpness.objective.distributed import resolve_backend
assert resolve_backend("auto", "cuda") == "nccl"
dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
t = torch.arange(4, dtype=torch.float64, device="cuda")
dist.all_reduce(t)
assert t.tolist() == [0.0, 1.0, 2.0, 3.0], t
dist.destroy_process_group()
print("nccl ok")
"""


def test_torchrun_on_one_gpu_with_nccl(tmp_path):
    """One GPU: torchrun + NCCL initialize and reduce, and ``sharpness analyze`` under a one-rank torchrun with
    ``--backend nccl`` gives the single-process report. (A one-rank job runs without a process group by
    design; sharding over NCCL needs two GPUs, since NCCL refuses two ranks on one device.)"""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    from sharpness.checkpoint import save_checkpoint
    from sharpness.data import load_dataset
    from sharpness.models import build_from_spec, model_spec

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
    (tmp_path / "smoke.py").write_text(NCCL_SMOKE)
    smoke = subprocess.run([*torchrun, str(tmp_path / "smoke.py")], env=env, capture_output=True, text=True, timeout=200)
    assert smoke.returncode == 0 and "nccl ok" in smoke.stdout, smoke.stderr[-2000:]

    ds = load_dataset("blobs", n=120, n_test=40, dim=4, classes=3, seed=1)
    spec = model_spec("mlp", ds.spec["input_shape"], ds.spec["num_classes"], hidden=[8])
    ckpt = tmp_path / "run.pt"
    save_checkpoint(ckpt, model=spec, state_dict=build_from_spec(spec, seed=0).state_dict(), data=ds.spec, seed=0)
    args = ["analyze", str(ckpt), "--dtype", "float64", "--device", "cuda", "--top-k", "1", "--bottom-k", "1",
            "--trace-probes", "30"]
    one = subprocess.run([sys.executable, "-m", "sharpness", *args, "--json", "-"], env=env, capture_output=True,
                         text=True, timeout=200)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*torchrun, "-m", "sharpness", *args, "--backend", "nccl", "--json", "-"],
                         env=env, capture_output=True, text=True, timeout=200)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert b["environment"]["distributed"] is None and b["environment"]["device"].startswith("cuda")
    assert b["hessian"]["top"]["values"] == a["hessian"]["top"]["values"]
    assert b["loss"] == a["loss"]
