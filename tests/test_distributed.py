"""Scale-out over torch.distributed: 2 gloo ranks on 127.0.0.1 must reproduce one process, and fail fast.

The multi-rank tests start real processes the way torchrun would (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
in the environment, one intra-op thread each) running :func:`_worker` from this file, and collect their
results through files in ``tmp_path``. Every such test has a pytest timeout *and* a join timeout, so a hang
fails the test instead of blocking CI, and the spawner kills what it started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TinyMLP, make_classification
from sharpness.objective import distributed as D
from sharpness.errors import InputError
from sharpness.hessian import HessianOperator, dense_hessian
from sharpness.linalg import extreme_eigenvalues, hutchinson_trace, hutchpp_trace, spectral_density
from sharpness.objective import Objective

TESTS = Path(__file__).resolve().parent
N = 37  # odd: the 2 shards have 19 and 18 samples
CASES = ("plain", "weighted")
JOIN_TIMEOUT_S = 150  # process start + torch import is ~3 s per rank idle, but 15 s+ on a loaded 2-core CI box
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# Tolerances. Sharding changes only the order of summation: each rank sums its shard, then the two partial
# sums are added. In float64 a sum of N = 37 terms carries a rounding error ≲ N·ε·Σ|terms| ≈ 4e-15 relative,
# so loss, gradient, Hessian-vector products and dense Hessian agree to 1e-12 (margin for cancellation), with
# an absolute floor for entries that cancel to ~0. Estimators built on many products (Lanczos with full
# reorthogonalization, Hutch++'s QR, SLQ) are well-conditioned in their output but could stop one step apart
# at a tolerance of 1e-12; 1e-10 covers that.
EXACT = dict(rtol=1e-12, atol=1e-13)
ESTIMATOR = dict(rtol=1e-10, atol=1e-12)


# --- the computations compared between 1 process and 2 ranks ---------------------------------------------
def _case(name: str) -> dict:
    """Model, data and Objective options of a case, built identically in the parent and in each rank."""
    with torch.random.fork_rng():  # the same initial weights in every process, the global RNG left as it was
        torch.manual_seed(0)
        model = TinyMLP().double()
    x, y = make_classification(n=N, d=5, seed=3)
    if name == "plain":  # one chunk: retained-graph products; the estimators run on this one
        return {"model": model, "x": x, "y": y, "w": None, "options": {}}
    # Per-sample weights and chunks of 5 (streamed forward-over-reverse products, short last chunks).
    w = torch.rand(N, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.5
    return {"model": model, "x": x, "y": y, "w": w, "options": {"chunk_size": 5}}


def _measure(obj: Objective, *, estimators: bool) -> dict[str, torch.Tensor]:
    """What the toolkit computes from an objective, as tensors (saved by the ranks, compared here)."""
    g = torch.Generator().manual_seed(7)
    v = torch.randn(obj.numel, generator=g, dtype=torch.float64)
    V = torch.randn(obj.numel, 3, generator=g, dtype=torch.float64)
    out: dict[str, torch.Tensor] = {"total_weight": torch.tensor(obj.total_weight), "value": obj.value()}
    out["loss_at_shifted"], out["grad_at_shifted"] = obj.value_and_grad(obj.theta + 0.01 * v)
    ev = obj.evaluate()
    out["evaluate"] = torch.tensor([ev.loss, ev.accuracy], dtype=torch.float64)
    modes = ["auto", "forward-over-reverse", "reverse-over-reverse"]  # auto = retained graph for one chunk
    for mode in modes:
        out[f"hvp/{mode}"] = HessianOperator(obj, mode=mode, weight_decay=0.1) @ v
    H = HessianOperator(obj)
    out["hvp_block"] = H @ V
    out["dense"] = dense_hessian(obj)
    sub = obj.restrict(obj.names[-1])  # restrict() must keep the reduction
    out["restricted/grad"] = sub.value_and_grad()[1]
    out["restricted/hvp"] = HessianOperator(sub) @ v[: sub.numel]
    if not estimators:
        return out
    top, bottom = extreme_eigenvalues(H, top_k=3, bottom_k=1, tol=1e-12, seed=0)
    out["top3"], out["bottom1"] = torch.from_numpy(top.values), torch.from_numpy(bottom.values)
    for name, est in (("hutchinson", hutchinson_trace(H, num_probes=20, seed=1)),
                      ("hutch++", hutchpp_trace(H, num_matvecs=30, seed=2))):
        out[name] = torch.tensor([est.value, est.stderr], dtype=torch.float64)
    dens = spectral_density(H, num_steps=8, num_runs=2, seed=3, grid_size=50, sigma=0.1)
    out["slq_nodes"], out["slq_weights"] = torch.from_numpy(dens.nodes), torch.from_numpy(dens.weights)
    return out


def _objective(case: dict, ctx: D.DistContext | None) -> Objective:
    x, y, w = D.shard_tensors(case["x"], case["y"], case["w"], ctx=ctx)
    reduce = D.all_reduce_sum if ctx is not None else None
    return Objective(case["model"], x, y, weights=w, reduce=reduce, **case["options"])


class _Counted(torch.utils.data.Dataset):
    """The samples of a case, each read counted: what a rank loads from a map-style dataset."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i], self.y[i]


STREAM_BATCH = 5  # N = 37 in batches of 5: 8 batches, rank 0 holds 0, 2, 4, 6 (20 samples), rank 1 the rest (17)


def _streamed(ctx: D.DistContext | None, policy: str) -> dict:
    """A shuffling DataLoader streamed into an Objective: its fingerprint, values, and how much was read/hashed."""
    from unittest import mock

    from torch.utils.data import DataLoader

    import sharpness.objective.batches as B

    case = _case("plain")
    data = _Counted(case["x"], case["y"])
    hashed: list[int] = []
    original = B.sample_digests

    def counting(batch, n):
        hashed.append(n)
        return original(batch, n)

    with mock.patch.object(B, "sample_digests", counting):
        obj = Objective(case["model"], DataLoader(data, batch_size=STREAM_BATCH, shuffle=True), data_policy=policy,
                        shard=None if ctx is None else (ctx.rank, ctx.world_size),
                        reduce=None if ctx is None else D.all_reduce_sum)
    init_reads = data.reads
    v = torch.randn(obj.numel, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = {"fingerprint": obj.fingerprint(), "num_batches": obj.num_batches, "total_weight": obj.total_weight,
           "init_reads": init_reads, "hashed": sum(hashed), "value": obj.value(), "hvp": HessianOperator(obj) @ v}
    out["later_reads"] = data.reads - init_reads
    return out


# --- the rank process -------------------------------------------------------------------------------------
def _worker(scenario: str, out_dir: str) -> None:
    """Runs in each rank process (started by :func:`_launch`)."""
    timeout_s = float(os.environ.get("SHARPNESS_TEST_PG_TIMEOUT", "60"))
    out = Path(out_dir)
    if scenario == "match":
        with D.session("auto", timeout_s=timeout_s) as ctx:  # auto on CPU → gloo
            assert ctx is not None and D.is_distributed() and D.current_context() == ctx
            results = {name: _measure(_objective(_case(name), ctx), estimators=name == "plain") for name in CASES}
            torch.save(results, out / f"rank{ctx.rank}.pt")
            squares = D.gather_split([i * i for i in D.split_work(range(11), ctx)], ctx)
            seed = D.broadcast_from_rank0(1234 if ctx.rank == 0 else -1)
            D.barrier()
            meta = {"squares": squares, "seed": seed, "rank0": D.is_rank0(), "context": ctx.as_dict()}
        (out / f"rank{ctx.rank}.json").write_text(json.dumps({**meta, "left_group": not D.is_distributed()}))
        return
    if scenario == "stream":
        with D.session("gloo", timeout_s=timeout_s) as ctx:
            assert ctx is not None
            results: dict = {policy: _streamed(ctx, policy) for policy in ("verify", "cache")}
            case = _case("plain")
            bad = [(case["x"][i:i + 5], case["y"][i:i + 5]) for i in range(0, N, 5)]
            bad[3] = (torch.tensor(1.0, dtype=torch.float64), torch.tensor(0))  # rank 1's batch; rank 0 never reads it
            try:
                Objective(case["model"], bad, shard=(ctx.rank, ctx.world_size), reduce=D.all_reduce_sum)
                results["error"] = None
            except InputError as err:
                results["error"] = str(err)
            torch.save(results, out / f"rank{ctx.rank}.pt")
        return
    ctx = D.init_from_env("gloo", timeout_s=timeout_s)
    assert ctx is not None
    D.barrier()  # both ranks are fully connected before one of them fails
    if ctx.rank == 1:
        if scenario == "dead":
            raise RuntimeError("rank 1 fails on purpose before the first all_reduce")
        time.sleep(JOIN_TIMEOUT_S)  # "stall": alive but never reaching the collective; the test kills it
    start = time.monotonic()
    try:
        _objective(_case("plain"), ctx)  # its constructor all-reduces the total weight
    except D.DistributedError as err:
        record = {"error": str(err), "seconds": time.monotonic() - start}
        (out / "rank0.json").write_text(json.dumps(record))
        raise
    raise AssertionError("the collective succeeded although rank 1 never joined it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # the OS picks a free port
        return s.getsockname()[1]


def _launch(scenario: str, tmp_path: Path, *, pg_timeout_s: float = 60) -> list:
    """Start 2 rank processes of ``scenario``; hand the result to :func:`_join`."""
    port = _free_port()
    child = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_distributed as t; t._worker(*sys.argv[1:])"
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "SHARPNESS_TEST_PG_TIMEOUT": str(pg_timeout_s)}
        err = open(tmp_path / f"stderr{rank}.txt", "w")  # a file, not a pipe: a full pipe could block a rank
        procs.append((subprocess.Popen([sys.executable, "-c", child, scenario, str(tmp_path)], env=env,
                                       stdout=subprocess.DEVNULL, stderr=err), err))
    return procs


def _join(procs: list, scenario: str, tmp_path: Path) -> list[tuple[int | None, str]]:
    """Wait up to JOIN_TIMEOUT_S for rank 0, then for rank 1 only as long as rank 0's job needs; kill leftovers.

    Returns ``(exit code, or None if it was still running and got killed; stderr)`` per rank.
    """
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    codes: list[int | None] = []
    try:
        for rank, (proc, _) in enumerate(procs):
            # A stalled rank 1 outlives rank 0 (that is the point); it is only checked to be alive, then killed.
            limit = max(0.1, deadline - time.monotonic()) if rank == 0 or scenario != "stall" else 0.1
            try:
                codes.append(proc.wait(timeout=limit))
            except subprocess.TimeoutExpired:
                codes.append(None)
    finally:
        for proc, err in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
    return [(code, (tmp_path / f"stderr{rank}.txt").read_text()) for rank, code in enumerate(codes)]


# --- two ranks against one process ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(JOIN_TIMEOUT_S + 30)
def test_two_gloo_ranks_reproduce_one_process(tmp_path):
    procs = _launch("match", tmp_path)
    try:  # the 1-process references, computed while the ranks start
        references = {name: _measure(_objective(_case(name), None), estimators=name == "plain") for name in CASES}
    finally:
        ranks = _join(procs, "match", tmp_path)
    assert [code for code, _ in ranks] == [0, 0], ranks
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, reference in references.items():
        assert float(reference["total_weight"]) > 0
        for key, expected in reference.items():
            # An all-reduce hands every rank the same bits, so the estimators' control flow cannot diverge.
            assert torch.equal(per_rank[0][name][key], per_rank[1][name][key]), (name, key)
            tol = ESTIMATOR if key in ("top3", "bottom1", "hutchinson", "hutch++", "slq_nodes", "slq_weights") else EXACT
            torch.testing.assert_close(per_rank[0][name][key], expected, **tol, msg=lambda m: f"{name}/{key}: {m}")
    # Independent truth for the distributed eigenvalues: the spectrum of the 1-process dense Hessian.
    exact = torch.linalg.eigvalsh(references["plain"]["dense"])
    torch.testing.assert_close(per_rank[0]["plain"]["top3"], exact.flip(0)[:3], rtol=1e-9, atol=1e-12)
    meta = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    common = {"seed": 1234, "context": {"world_size": 2, "backend": "gloo"}, "left_group": True}
    assert meta[0] == {"squares": [i * i for i in range(11)], "rank0": True, **common}
    assert meta[1] == {"squares": None, "rank0": False, **common}


@pytest.mark.slow
@pytest.mark.timeout(JOIN_TIMEOUT_S + 30)
def test_two_ranks_read_and_hash_only_their_shard_of_a_streamed_set(tmp_path):
    procs = _launch("stream", tmp_path)
    try:
        references = {policy: _streamed(None, policy) for policy in ("verify", "cache")}
    finally:
        ranks = _join(procs, "stream", tmp_path)
    assert [code for code, _ in ranks] == [0, 0], ranks
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    shard_sizes = (20, 17)
    for policy, ref in references.items():
        passes = 2 if policy == "verify" else 1  # the count pass, and the second pass that checks the samples
        assert ref["hashed"] == passes * N
        for rank, got in enumerate(per_rank):
            mine = got[policy]
            # The one-process fingerprint (every sample's digest), from each rank's own samples and a reduce.
            assert mine["fingerprint"] == ref["fingerprint"] and mine["num_batches"] == ref["num_batches"] == 8
            assert mine["total_weight"] == ref["total_weight"] == N
            torch.testing.assert_close(mine["value"], ref["value"], **EXACT)
            torch.testing.assert_close(mine["hvp"], ref["hvp"], **EXACT)
            # What it loaded and hashed: its own batches only, at construction and in every later pass.
            assert mine["hashed"] == passes * shard_sizes[rank], (policy, rank, mine)
            # (beyond those passes, the probe of the first chunk: one batch, here and in one process)
            assert mine["init_reads"] - mine["hashed"] == ref["init_reads"] - ref["hashed"] <= STREAM_BATCH
            if policy == "cache":
                assert mine["later_reads"] == ref["later_reads"] == 0
            else:
                assert mine["later_reads"] * N == ref["later_reads"] * shard_sizes[rank] > 0, (rank, mine)
    # A bad batch only rank 1 reads: rank 1 says what is wrong, rank 0 that a peer failed (neither waits).
    assert "got a 0-dim tensor" in per_rank[1]["error"]
    assert per_rank[0]["error"].startswith("expected every rank to read its shard of the analysis set, got an error "
                                           "on 1 other rank(s)")


# --- failures end the job instead of hanging ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(JOIN_TIMEOUT_S + 30)
def test_a_rank_that_dies_ends_the_job_with_an_error(tmp_path):
    (code0, err0), (code1, err1) = _join(_launch("dead", tmp_path, pg_timeout_s=20), "dead", tmp_path)
    assert code1 not in (0, None) and "fails on purpose" in err1
    assert code0 not in (0, None), err0  # rank 0 ended by itself with an error: it did not hang
    record = json.loads((tmp_path / "rank0.json").read_text())
    assert "rank 0 of 2: all_reduce" in record["error"]
    assert record["seconds"] < 20  # a closed socket is noticed long before the process-group timeout


@pytest.mark.slow
@pytest.mark.timeout(JOIN_TIMEOUT_S + 30)
def test_a_stalled_rank_ends_the_job_after_the_timeout(tmp_path):
    # 5 s: ranks that start together meet well within it (their imports finish within ~0.1 s of each other
    # even on a loaded machine), and it is short enough for CI.
    (code0, err0), (code1, _) = _join(_launch("stall", tmp_path, pg_timeout_s=5), "stall", tmp_path)
    assert code0 not in (0, None), err0
    assert code1 is None  # rank 1 was still stalled: rank 0 ended on its own timeout
    record = json.loads((tmp_path / "rank0.json").read_text())
    assert "did not reach this step within the timeout" in record["error"]
    assert 4.5 < record["seconds"] < 5 + 10  # the timeout, not a hang (slack for a loaded machine)


@pytest.mark.timeout(60)
def test_a_rendezvous_nobody_joins_fails_within_the_timeout(monkeypatch):
    import torch.distributed as dist

    port = _free_port()
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    with pytest.raises(InputError, match=f"rank 0 of 2 could not join the gloo process group at 127.0.0.1:{port} within 1 s"):
        D.init_from_env("gloo", timeout_s=1)
    assert time.monotonic() - start < 15
    assert not dist.is_initialized()


# --- the reduction hook, in one process ---------------------------------------------------------------------
def test_every_sum_goes_through_the_hook_exactly_once(mlp):
    """A reduce that doubles is what a second rank holding an identical copy of the shard would add: every
    mean must come out unchanged, and a sum that bypassed the hook (or the weight) would be off by 2×."""
    x, y = make_classification(n=N)
    calls: list[tuple[int, ...]] = []

    def doubled(t):
        calls.append(tuple(t.shape))
        return 2 * t

    plain = Objective(mlp, x, y, chunk_size=5)
    hooked = Objective(mlp, x, y, chunk_size=5, reduce=doubled)
    assert calls == [()] and hooked.total_weight == 2 * N
    v = torch.randn(plain.numel, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pairs = {
        "value": (plain.value(), hooked.value()),
        "value_and_grad": (torch.cat([t.reshape(-1) for t in plain.value_and_grad()]),
                           torch.cat([t.reshape(-1) for t in hooked.value_and_grad()])),
        "evaluate": (torch.tensor([*vars(plain.evaluate()).values()]), torch.tensor([*vars(hooked.evaluate()).values()])),
        "hvp": (HessianOperator(plain) @ v, HessianOperator(hooked) @ v),
        "dense": (dense_hessian(plain), dense_hessian(hooked)),
        "restricted": (HessianOperator(plain.restrict("fc2.*")) @ v[-21:], HessianOperator(hooked.restrict("fc2.*")) @ v[-21:]),
    }
    for key, (a, b) in pairs.items():
        torch.testing.assert_close(b, a, rtol=1e-14, atol=0, msg=lambda m: f"{key}: {m}")  # 2x/2w: exact
    P = plain.numel
    # One reduction per call: [loss, gradient] concatenated, [loss, correct] together, a block at once.
    assert calls[1:] == [(), (P + 1,), (2,), (P,), (P, P), (21,)]
    calls.clear()
    HessianOperator(hooked) @ torch.ones(P, 4, dtype=torch.float64)
    assert calls == [(P, 4)]


# --- sharding and work splitting ------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_partition_the_samples_exactly(world):
    for n in range(0, 13):
        shards = [D.shard(n, r, world) for r in range(world)]
        together = torch.cat(shards).sort().values
        assert torch.equal(together, torch.arange(n))  # every index once: disjoint, complete, no padding
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1
    assert D.shard(37, 1, 2).tolist() == list(range(1, 37, 2))


def test_shard_tensors_checks_and_keeps_rows_together():
    x = torch.arange(10.0).reshape(5, 2)
    y = torch.arange(5)
    ctx = D.DistContext(rank=1, world_size=2, backend="gloo")
    sx, sy, sw = D.shard_tensors(x, y, None, ctx=ctx)
    assert sy.tolist() == [1, 3] and torch.equal(sx, x[[1, 3]]) and sw is None
    assert D.shard_tensors(x, y, ctx=None) == (x, y)
    with pytest.raises(InputError, match="at least one sample per rank, got 5 samples for 6 ranks"):
        D.shard_tensors(x, y, ctx=D.DistContext(rank=0, world_size=6, backend="gloo"))
    with pytest.raises(InputError, match="equally many samples"):
        D.shard_tensors(x, y[:4], ctx=ctx)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        D.shard(5, 2, 2)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_split_work_and_its_inverse(world):
    items = [f"point{i}" for i in range(10)]
    parts = [D.split_work(items, D.DistContext(rank=r, world_size=world, backend="gloo")) for r in range(world)]
    assert sorted(sum(parts, [])) == sorted(items)
    assert D._interleave(parts) == items


# --- a single process: no environment, no group, nothing to do --------------------------------------------
def test_single_process_needs_no_group(monkeypatch):
    for key in TORCHRUN_VARS:
        monkeypatch.delenv(key, raising=False)
    assert D.init_from_env() is None and not D.is_distributed() and D.is_rank0() and D.current_context() is None
    t = torch.ones(3)
    assert D.all_reduce_sum(t) is t
    assert D.gather_to_rank0({"a": 1}, None) == [{"a": 1}] and D.gather_split([1, 2], None) == [1, 2]
    assert D.split_work(range(3), None) == [0, 1, 2] and D.broadcast_from_rank0(5) == 5
    D.barrier()
    with D.session() as ctx:
        assert ctx is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert D.init_from_env() is None  # torchrun --nproc-per-node=1 is a single process too
    assert D.init_from_env("nccl", device="cpu") is None  # the backend only matters once there are peers


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0"}, "both RANK and WORLD_SIZE"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "0 <= RANK < WORLD_SIZE, got RANK=2"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'x'"),
        ({"RANK": "1", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT"),
    ],
)
def test_bad_environment_is_an_input_error(monkeypatch, env, message):
    for key in TORCHRUN_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InputError, match=message):
        D.init_from_env("gloo")


def test_backend_choice():
    assert D.resolve_backend("auto", "cpu") == "gloo"
    assert D.resolve_backend("gloo", "cpu") == "gloo"
    with pytest.raises(InputError, match="backend must be one of auto, gloo, nccl, got 'mpi'"):
        D.resolve_backend("mpi", "cpu")
    with pytest.raises(InputError, match="backend nccl needs a CUDA device"):
        D.resolve_backend("nccl", "cpu")
    ctx = D.DistContext(rank=1, world_size=2, backend="nccl", local_rank=1)
    assert D.rank_device("cuda", ctx) == torch.device("cuda", 1)
    assert D.rank_device("cuda:0", ctx) == torch.device("cuda", 0) and D.rank_device("cpu", ctx) == torch.device("cpu")
    assert ctx.as_dict() == {"world_size": 2, "backend": "nccl"}
