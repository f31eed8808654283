"""The researcher's own pipeline: any data source, any batch nest, any forward and loss — one exact objective.

Every equality is against an independent truth in float64: the tensor path (itself tested against plain
PyTorch in test_objective.py), F.cross_entropy, and dense Hessians from torch.func.hessian.
"""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset, TensorDataset

from conftest import TinyMLP, assert_unchanged, make_classification, snapshot
from sharpness import HessianOperator
from sharpness.objective.batches import combine_digests, sample_digests
from sharpness.errors import InputError
from sharpness.linalg import extreme_eigenvalues, hutchpp_trace
from sharpness.models import build_model
from sharpness.objective import Objective

N = 23


def measures(obj):
    """(loss, gradient, H @ I, top-2 and bottom eigenvalues, Hutch++ trace) of an objective."""
    value, grad = obj.value_and_grad()
    H = HessianOperator(obj)
    dense = H @ torch.eye(obj.numel, dtype=torch.float64)
    top, bottom = extreme_eigenvalues(H, top_k=2, bottom_k=1, tol=1e-10, seed=0)
    trace = hutchpp_trace(H, num_matvecs=30, seed=1).value
    return {"loss": value.reshape(1), "grad": grad, "hessian": dense, "top": torch.as_tensor(top.values),
            "bottom": torch.as_tensor(bottom.values), "trace": torch.tensor([trace])}


def max_rel(a, b):
    return float(((a - b).abs().max() / b.abs().max()))


class DictDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def sources(x, y):
    ds = TensorDataset(x, y)
    return {
        "dataset": ds,
        "loader-1-shuffled": DataLoader(ds, batch_size=1, shuffle=True),
        "loader-7-shuffled": DataLoader(ds, batch_size=7, shuffle=True),
        "loader-N-shuffled": DataLoader(ds, batch_size=N, shuffle=True),
        "dict-batches": DataLoader(DictDataset(x, y), batch_size=5, shuffle=True),
        "list-of-tuples": [(x[i:i + 4], y[i:i + 4]) for i in range(0, N, 4)],
    }


@pytest.mark.parametrize("name", list(sources(*make_classification())))
def test_every_source_gives_the_tensor_objective(mlp, name):
    x, y = make_classification()
    reference = measures(Objective(mlp, x, y))
    got = measures(Objective(mlp, sources(x, y)[name]))
    for key, ref in reference.items():
        assert max_rel(got[key], ref) < 1e-12, (name, key, max_rel(got[key], ref))


def test_loader_with_workers_gives_the_same_loss_and_gradient(mlp):
    x, y = make_classification()
    ref = Objective(mlp, x, y).value_and_grad()
    loader = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True, num_workers=2)
    got = Objective(mlp, loader).value_and_grad()
    assert max_rel(got[0].reshape(1), ref[0].reshape(1)) < 1e-12
    assert max_rel(got[1], ref[1]) < 1e-12


def test_fingerprint_is_independent_of_order_and_batching_and_sees_every_sample(mlp):
    x, y = make_classification()
    want = Objective(mlp, x, y).fingerprint()["sample_sha256"]
    for data in (DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True), TensorDataset(x, y)):
        assert Objective(mlp, data).fingerprint()["sample_sha256"] == want
    x2 = x.clone()
    x2[5, 2] += 1e-12
    assert Objective(mlp, x2, y).fingerprint()["sample_sha256"] != want
    # one digest per sample: a batch split anywhere gives the same multiset
    assert combine_digests(sample_digests((x[:3], y[:3]), 3) + sample_digests((x[3:], y[3:]), N - 3)) == want


def test_custom_per_sample_loss_equal_to_cross_entropy_reproduces_the_builtin(mlp):
    x, y = make_classification()
    reference = measures(Objective(mlp, x, y))

    def ce(outputs, batch):
        return F.cross_entropy(outputs, batch[1], reduction="none")

    for data in ((x, y), DataLoader(TensorDataset(x, y), batch_size=7)):
        got = measures(Objective(mlp, data, loss=ce))
        for key, ref in reference.items():
            assert max_rel(got[key], ref) < 1e-12, key


def test_custom_forward_and_dict_outputs(mlp):
    x, y = make_classification()
    reference = Objective(mlp, x, y).value_and_grad()

    class Wrapped(nn.Module):  # called with keywords, returns an object with .logits
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *, features):
            return type("Out", (), {"logits": self.inner(features)})()

    batches = [{"features": x[i:i + 5], "target": y[i:i + 5]} for i in range(0, N, 5)]
    obj = Objective(Wrapped(mlp), batches, target_key="target")
    got = obj.value_and_grad()
    assert max_rel(got[1], reference[1]) < 1e-12
    obj2 = Objective(mlp, batches, target_key="target", forward=lambda model, b: (model(b["features"]), None))
    assert max_rel(obj2.value_and_grad()[1], reference[1]) < 1e-12
    assert obj2.config["forward"].endswith("<lambda>")


def test_label_smoothing_and_bce_match_pytorch(mlp):
    x, y = make_classification()
    obj = Objective(mlp, x, y, loss="cross-entropy", label_smoothing=0.1)
    with torch.no_grad():
        want = F.cross_entropy(mlp.eval()(x), y, label_smoothing=0.1)
    assert float(obj.value()) == pytest.approx(float(want), rel=1e-13)
    t = (torch.rand(N, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) > 0.5).double()
    obj = Objective(mlp, DataLoader(TensorDataset(x, t), batch_size=4), loss="bce")
    with torch.no_grad():
        out = mlp(x)
        want = F.binary_cross_entropy_with_logits(out, t)
        acc = float(((out > 0) == (t > 0.5)).double().mean())
    ev = obj.evaluate()
    assert ev.loss == pytest.approx(float(want), rel=1e-13)
    assert ev.accuracy == pytest.approx(acc, rel=1e-13)


# --- sequences: a tiny GPT, token weighting, SDPA --------------------------------------------------------------
V, T = 7, 5


def tiny_gpt():
    return build_model("gpt", input_shape=(T,), num_classes=V, d_model=4, layers=1, heads=2, seed=0).double()


def token_batches(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (n, T), generator=g)
    labels = torch.randint(0, V, (n, T), generator=g)
    labels[0, :3] = -100  # padding / prompt tokens that do not count
    labels[3, 4] = -100
    return ids, labels


def dense_reference(model, ids, labels):
    """∇² of Σ_valid −log p / #valid, written independently of the toolkit, by
    ``torch.autograd.functional.hessian`` (a loop of exact double backwards).

    Not ``torch.func.hessian``: in torch 2.13 its vmapped forward-over-reverse is wrong through LayerNorm when
    both its input and its weight vary (an asymmetric "Hessian", off by 0.135 against central differences
    that converge to the double-backward value); see the regression check below."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def f(flat):
        params = {k: t.view(s) for k, t, s in zip(names, flat.split([s.numel() for s in shapes]), shapes)}
        with sdpa_kernel([SDPBackend.MATH]):
            logits = functional_call(model, params, (ids,))
        return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)

    return f(theta), torch.autograd.functional.hessian(f, theta)


def test_masked_token_loss_and_sdpa_hessian_match_torch_func_hessian(caplog):
    import sharpness.objective

    sharpness.objective._SDPA_NOTICED.clear()  # the notice is shown once per model class and process
    model = tiny_gpt().eval()
    ids, labels = token_batches()
    want_loss, want_H = dense_reference(model, ids, labels)
    loader = DataLoader(TensorDataset(ids, labels), batch_size=4, shuffle=True)
    dict_batches = [{"input_ids": ids[i:i + 2], "labels": labels[i:i + 2]} for i in range(0, 6, 2)]
    for data in (loader, dict_batches, (ids, labels)):
        with caplog.at_level("WARNING"):
            obj = Objective(model, data, forward=(lambda m, b: m(b["input_ids"])) if isinstance(data, list) else None)
        assert obj.attention == "math" and "scaled_dot_product_attention" in caplog.text
        assert obj.total_weight == int((labels != -100).sum())
        assert float(obj.value()) == pytest.approx(float(want_loss), rel=1e-12)
        H = HessianOperator(obj)
        got = H @ torch.eye(obj.numel, dtype=torch.float64)
        assert max_rel(got, want_H) < 1e-10
    ev = obj.evaluate()
    with torch.no_grad():
        pred = model(ids).argmax(-1)
    valid = labels != -100
    assert ev.accuracy == pytest.approx(float((pred == labels)[valid].double().mean()), rel=1e-13)


def test_hessian_reference_is_symmetric_and_agrees_with_central_differences():
    model = tiny_gpt().eval()
    ids, labels = token_batches()
    _, want_H = dense_reference(model, ids, labels)
    assert float((want_H - want_H.T).abs().max()) < 1e-12
    obj = Objective(model, (ids, labels))
    j, eps = obj.names.index("ln_f.weight"), 1e-5
    j = sum(obj.sizes[:j])
    e = torch.zeros(obj.numel, dtype=torch.float64)
    e[j] = eps
    fd = (obj.value_and_grad(obj.theta + e)[1] - obj.value_and_grad(obj.theta - e)[1]) / (2 * eps)
    assert max_rel(fd, want_H[:, j]) < 1e-6


def test_custom_token_loss_with_weights_equals_builtin_ignore_index():
    model = tiny_gpt()
    ids, labels = token_batches()
    builtin = Objective(model, DataLoader(TensorDataset(ids, labels), batch_size=4))

    def masked(outputs, batch):
        _, y = batch
        mask = y != -100
        per_token = F.cross_entropy(outputs.transpose(1, 2), y.clamp(min=0), reduction="none")
        return per_token, mask.double()

    custom = Objective(model, DataLoader(TensorDataset(ids, labels), batch_size=5), loss=masked)
    assert max_rel(custom.value_and_grad()[1], builtin.value_and_grad()[1]) < 1e-12
    assert custom.evaluate().accuracy is None


# --- refusals and one-line errors ------------------------------------------------------------------------------
class Augmenting(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.01 * random.random(), self.y[i]  # noise from Python's RNG: never the same twice


def test_augmenting_loader_is_refused_and_cache_policy_fixes_one_draw(mlp):
    x, y = make_classification()
    loader = DataLoader(Augmenting(x, y), batch_size=8)
    with pytest.raises(InputError, match="change between passes.*data_policy='cache'"):
        Objective(mlp, loader)
    obj = Objective(mlp, loader, data_policy="cache")
    assert obj.value() == obj.value() and obj.config["data_policy"] == "cache"
    # torch-RNG augmentation differs between the verification passes too (each pass has its own seed)
    noisy = [(x, y)]

    class TorchNoise(Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            return x[i] + torch.randn(()).double(), y[i]

    with pytest.raises(InputError, match="change between passes"):
        Objective(mlp, DataLoader(TorchNoise(), batch_size=8))
    assert Objective(mlp, noisy).n_samples == N


def test_bad_inputs_say_what_was_expected_and_what_arrived(mlp):
    x, y = make_classification()
    with pytest.raises(InputError, match="re-iterable.*generator"):
        Objective(mlp, ((x[i:i + 5], y[i:i + 5]) for i in range(0, N, 5)))
    with pytest.raises(InputError, match=r"per-example losses of shape \(5, ...\).*got a scalar"):
        Objective(mlp, [(x[:5], y[:5])], loss=lambda out, b: F.cross_entropy(out, b[1]))
    with pytest.raises(InputError, match="target key 'labels'.*keys \\['inputs', 'y'\\]"):
        Objective(mlp, [{"inputs": x[:5], "y": y[:5]}], forward=lambda m, b: m(b["inputs"]))
    with pytest.raises(InputError, match="expected an analysis set"):
        Objective(mlp, 42)


def test_users_model_loader_and_random_state_are_left_untouched(mlp):
    x, y = make_classification()
    mlp.train()
    before = snapshot(mlp)
    gen = torch.Generator().manual_seed(5)
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True, generator=gen)
    gen_state, rng_state = gen.get_state(), torch.get_rng_state()
    obj = Objective(mlp, loader)
    H = HessianOperator(obj)
    H @ torch.ones(obj.numel, dtype=torch.float64)
    obj.value_and_grad()
    assert_unchanged(mlp, before)
    assert torch.equal(gen.get_state(), gen_state) and torch.equal(torch.get_rng_state(), rng_state)
    assert isinstance(loader.dataset, TensorDataset) and loader.batch_size == 7
    order = [b[1].tolist() for b in loader]  # still shuffles with the user's generator, from where it was
    gen.set_state(gen_state)
    assert order == [b[1].tolist() for b in loader]


def test_streamed_batches_split_by_chunk_size_and_shards_add_up(mlp):
    x, y = make_classification()
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    whole = Objective(mlp, loader).value_and_grad()[1]
    assert max_rel(Objective(mlp, loader, chunk_size=3).value_and_grad()[1], whole) < 1e-12
    # two "ranks" by hand: the reduced sums of the shards are the sums of the whole
    parts = [Objective(mlp, loader, shard=(r, 2)) for r in range(2)]
    total = sum(p.total_weight for p in parts)
    g = sum(p.value_and_grad()[1] * p.total_weight for p in parts) / total
    assert total == N and max_rel(g, whole) < 1e-12


class ReadLog(Dataset):
    """Samples 0..n-1 (the sample is its index); every index read is logged."""

    def __init__(self, n: int) -> None:
        self.n, self.log = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.log.append(i)
        return torch.tensor([float(i)]), i % 3


@pytest.mark.parametrize("make", ["shuffled", "generator", "workers", "list"])
def test_a_shard_of_a_pass_is_its_strided_batches_and_reads_only_them(make):
    from sharpness.objective.batches import BatchSource

    data = ReadLog(23)
    loader = {
        "shuffled": lambda: DataLoader(data, batch_size=4, shuffle=True),
        "generator": lambda: DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5)),
        "workers": lambda: DataLoader(data, batch_size=4, shuffle=True, num_workers=1),
        "list": lambda: [(torch.arange(i, min(i + 4, 23)).double()[:, None], torch.zeros(0)) for i in range(0, 23, 4)],
    }[make]()
    source = BatchSource(loader)
    whole = [b[0].reshape(-1).tolist() for b in source.passes(seed=3)]
    assert sorted(x for b in whole for x in b) == list(range(23)) and len(whole) == 6
    for world in (2, 3):
        for rank in range(world):
            data.log.clear()
            mine = [b[0].reshape(-1).tolist() for b in source.passes(seed=3, shard=(rank, world))]
            assert mine == whole[rank::world]  # the same seeded order: the shards partition the one pass
            if make in ("shuffled", "generator"):  # (a worker process logs in its own copy of the dataset)
                assert sorted(data.log) == sorted(int(x) for b in mine for x in b)  # nothing else was loaded
    again = [b[0].reshape(-1).tolist() for b in source.passes(seed=3)]
    assert again == whole  # the sharded passes left the loader's generator and the global RNG's effect alone


# --- sharpness.analyze on the researcher's own pipeline -----------------------------------------------------
def test_analyze_takes_a_dataloader_a_loss_and_a_forward(mlp):
    import sharpness

    x, y = make_classification()
    options = dict(top_k=2, bottom_k=1, trace_probes=12, dtype="float64", tol=1e-10)
    ref = sharpness.analyze(mlp, x, y, **options).to_dict()
    batches = DataLoader(DictDataset(x, y), batch_size=7, shuffle=True)

    def ce(outputs, batch):
        return F.cross_entropy(outputs, batch["labels"], reduction="none")

    got = sharpness.analyze(mlp, batches, loss=ce, forward=lambda m, b: m(b["x"]), **options).to_dict()
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-12)
    for key in ("top", "bottom"):
        assert got["hessian"][key]["values"] == pytest.approx(ref["hessian"][key]["values"], rel=1e-10)
    assert got["hessian"]["trace"]["value"] == pytest.approx(ref["hessian"]["trace"]["value"], rel=1e-10)
    assert got["accuracy"] is None and ref["accuracy"] is not None  # a callable loss has no accuracy
    assert got["analysis_set"]["n_samples"] == N and got["analysis_set"]["source"] == "DataLoader"
    assert got["config"]["loss"].startswith("callable:") and got["config"]["objective"]["forward"].endswith("<lambda>")
    # tensors and a Dataset of the same samples have one content hash
    ds = sharpness.analyze(mlp, TensorDataset(x, y), top_k=1, bottom_k=0, trace=False).to_dict()
    assert ds["analysis_set"]["sample_sha256"] == ref["analysis_set"]["sample_sha256"]
    sub = sharpness.analyze(mlp, TensorDataset(x, y), samples=9, top_k=1, bottom_k=0, trace=False).to_dict()
    assert sub["analysis_set"]["n_samples"] == 9 and sub["analysis_set"]["n_available"] == N


def test_causal_lm_loss_shifts_unshifted_labels():
    model = tiny_gpt().eval()
    ids, labels = token_batches()
    labels = ids.clone()
    labels[1, :2] = -100
    batches = [{"input_ids": ids[i:i + 3], "labels": labels[i:i + 3]} for i in (0, 3)]
    obj = Objective(model, batches, loss="causal-lm")
    theta = obj.theta.detach().clone().requires_grad_(True)
    params = obj.unflatten(theta)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        logits = functional_call(model, params, (ids,))
    want = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    (want_grad,) = torch.autograd.grad(want, theta)
    value, grad = obj.value_and_grad()
    assert float(value) == pytest.approx(float(want.detach()), rel=1e-13)
    assert max_rel(grad, want_grad) < 1e-12
    assert obj.total_weight == int((labels[:, 1:] != -100).sum()) and obj.evaluate().accuracy is not None
