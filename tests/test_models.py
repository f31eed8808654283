"""Tests for sharpness.models: shapes, seeded determinism, a closed-form Hessian, user factories, errors."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from sharpness.errors import InputError
from sharpness.models import build_from_spec, build_model, is_factory_ref, load_factory, model_names, model_spec


def _params(m: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in m.state_dict().values()]


CASES = [
    ("linear", (10,), {}),
    ("linear", (1, 4, 4), {"bias": False}),
    ("mlp", (1, 28, 28), {"hidden": [32, 16]}),
    ("mlp", (40,), {"hidden": (8,), "activation": "tanh", "batchnorm": True, "dropout": 0.1}),
    ("mlp", (5,), {"hidden": [], "activation": "gelu"}),
    ("cnn1d", (40,), {}),
    ("cnn1d", (2, 33), {"channels": [4, 8], "batchnorm": True}),
    ("convnet", (1, 28, 28), {"channels": [4, 8], "hidden": 16}),
    ("convnet", (3, 32, 32), {"batchnorm": True, "channels": [4, 8], "hidden": 16}),
    ("resnet", (1, 28, 28), {"width": 4}),
    ("resnet", (3, 32, 32), {"width": 4, "blocks": 2, "batchnorm": False}),
]


def test_model_names():
    assert model_names() == ["cnn1d", "convnet", "gpt", "linear", "mlp", "resnet"]


def test_gpt_is_causal_and_sized_as_documented():
    net = build_model("gpt", input_shape=(64,), num_classes=256, seed=0)
    assert sum(p.numel() for p in net.parameters()) == 279168
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(ids)
        changed = ids.clone()
        changed[:, 40] = (changed[:, 40] + 1) % 256
        out2 = net(changed)
    assert out.shape == (2, 64, 256)
    assert torch.equal(out[:, :40], out2[:, :40]) and not torch.equal(out[:, 40:], out2[:, 40:])  # no peeking
    with pytest.raises(InputError, match="divisible by heads"):
        build_model("gpt", input_shape=(8,), num_classes=5, d_model=6, heads=4)


@pytest.mark.parametrize("name,shape,kwargs", CASES)
def test_forward_shapes_and_seeded_determinism(name, shape, kwargs):
    a = build_model(name, input_shape=shape, num_classes=7, seed=3, **kwargs)
    b = build_model(name, input_shape=list(shape), num_classes=7, seed=3, **kwargs)
    c = build_model(name, input_shape=shape, num_classes=7, seed=4, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b)))
    assert any(not torch.equal(x, y) for x, y in zip(_params(a), _params(c)) if x.is_floating_point() and x.numel() > 1)
    assert a.training  # returned as PyTorch builds it
    out = a(torch.randn(5, *shape))
    assert out.shape == (5, 7) and out.dtype == torch.float32


def test_default_sizes_are_as_documented():
    mlp = build_model("mlp", input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [512, 512, 10]
    cnn = build_model("cnn1d", input_shape=(40,), num_classes=10, seed=0)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv1d)] == [32, 32, 32]
    assert [m for m in cnn.modules() if isinstance(m, nn.Linear)][0].in_features == 160
    conv = build_model("convnet", input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert [m for m in conv.modules() if isinstance(m, nn.Linear)][0].in_features == 64 * 7 * 7
    res = build_model("resnet", input_shape=(3, 32, 32), num_classes=10, seed=0)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in res.modules()) > 0
    assert len([m for m in res.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]) == 7  # 1 + 3·2
    mlp_bn = build_model("mlp", input_shape=(4,), num_classes=2, hidden=[3], batchnorm=True, dropout=0.5)
    kinds = [type(m).__name__ for m in mlp_bn]
    assert kinds == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


def test_seed_leaves_global_rng_untouched_and_none_uses_it():
    torch.manual_seed(11)
    state = torch.get_rng_state()
    build_model("mlp", input_shape=(4,), num_classes=2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(11)
    a = build_model("mlp", input_shape=(4,), num_classes=2, hidden=[3])
    torch.manual_seed(11)
    b = build_model("mlp", input_shape=(4,), num_classes=2, hidden=[3])
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b)))
    assert not torch.equal(torch.get_rng_state(), state)


def test_linear_model_mse_hessian_matches_closed_form():
    # For L(w) = mean_i (w·x_i - y_i)², the Hessian is 2/N XᵀX — independent of w and y.
    torch.manual_seed(0)
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.randn(20, 1, dtype=torch.float64)
    model = build_model("linear", input_shape=(4,), num_classes=1, bias=False, seed=0).double()
    (layer,) = [m for m in model.modules() if isinstance(m, nn.Linear)]
    w0 = layer.weight.detach().clone()

    def loss(w):
        out = torch.func.functional_call(model, {"1.weight": w}, (x,))
        return ((out - y) ** 2).mean()

    h = torch.autograd.functional.hessian(loss, w0).reshape(4, 4)
    assert torch.allclose(h, 2 / 20 * x.T @ x, atol=1e-12)


def test_model_spec_is_json_and_rebuilds_identically():
    spec = model_spec("mlp", (1, 28, 28), 10, hidden=(32, 16), activation="tanh")
    assert spec == {"name": "mlp", "kwargs": {"input_shape": [1, 28, 28], "num_classes": 10, "hidden": [32, 16],
                                              "activation": "tanh"}}
    spec = json.loads(json.dumps(spec))
    a = build_from_spec(spec, seed=9)
    b = build_model("mlp", input_shape=(1, 28, 28), num_classes=10, seed=9, hidden=(32, 16), activation="tanh")
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b)))
    with pytest.raises(InputError, match="JSON-able"):
        model_spec("mlp", (4,), 2, act=object())
    with pytest.raises(InputError, match="model spec"):
        build_from_spec({"kwargs": {}})


# ----------------------------------------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------------------------------------

FACTORY_SRC = textwrap.dedent(
    """
    import torch
    from torch import nn

    CALLS = []

    def with_shape(input_shape, num_classes, width=3):
        CALLS.append((tuple(input_shape), num_classes, width))
        return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width),
                             nn.Linear(width, num_classes))

    def plain(width=2):
        return nn.Linear(4, width)

    def raises(**kw):
        raise RuntimeError("boom: bad width\\nsecond line")

    def not_a_module():
        return 42

    NOT_CALLABLE = 3

    class Holder:
        @staticmethod
        def build():
            return nn.Identity()
    """
)


@pytest.fixture
def factory_file(tmp_path):
    p = tmp_path / "my_models.py"
    p.write_text(FACTORY_SRC)
    return p


def test_factory_from_file_gets_shape_only_if_it_asks(factory_file):
    ref = f"{factory_file}:with_shape"
    assert is_factory_ref(ref) and not is_factory_ref("mlp")
    m = build_model(ref, input_shape=(2, 3), num_classes=5, seed=0, width=4)
    assert m(torch.zeros(1, 2, 3)).shape == (1, 5)
    m2 = build_model(ref, input_shape=(2, 3), num_classes=5, seed=0, width=4)
    assert all(torch.equal(x, y) for x, y in zip(_params(m), _params(m2)))
    module = __import__("sys").modules[load_factory(ref).__module__]
    assert module.CALLS[-1] == ((2, 3), 5, 4)
    # `plain` takes neither input_shape nor num_classes: passing them would be a TypeError
    assert build_model(f"{factory_file}:plain", input_shape=(4,), num_classes=3, width=6).out_features == 6
    assert isinstance(build_model(f"{factory_file}:Holder.build"), nn.Identity)


def test_factory_from_importable_module(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(FACTORY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    m = build_model("userpkg.nets:with_shape", input_shape=(6,), num_classes=2, seed=1)
    assert m(torch.zeros(3, 6)).shape == (3, 2)
    spec = json.loads(json.dumps(model_spec("userpkg.nets:with_shape", (6,), 2, width=5)))
    assert build_from_spec(spec)(torch.zeros(1, 6)).shape == (1, 2)


@pytest.mark.parametrize(
    "ref_tail,match",
    [
        ("raises", r":raises.* to build a model from \[\], got RuntimeError: boom: bad width$"),
        ("not_a_module", "return a torch.nn.Module, got int"),
        ("missing_fn", "attribute 'missing_fn'"),
        ("NOT_CALLABLE", "callable model factory, got int"),
    ],
)
def test_factory_errors_in_file(factory_file, ref_tail, match):
    with pytest.raises(InputError, match=match) as e:
        build_model(f"{factory_file}:{ref_tail}", input_shape=(4,), num_classes=2)
    assert "\n" not in str(e.value)


def test_factory_reference_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        build_model(f"{tmp_path}/nope.py:fn")
    with pytest.raises(InputError, match="importable module.*No module named 'no_such_pkg_xyz'"):
        build_model("no_such_pkg_xyz.mod:fn")
    bad = tmp_path / "broken.py"
    bad.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(InputError, match="import cleanly.*no_such_dependency_xyz"):
        load_factory(f"{bad}:fn")
    with pytest.raises(InputError, match="factory reference"):
        load_factory("justaname")


def test_builtin_errors():
    with pytest.raises(InputError, match=r"one of cnn1d, convnet, gpt, linear, mlp, resnet.*got 'vgg'"):
        build_model("vgg", input_shape=(4,), num_classes=2)
    with pytest.raises(InputError, match="unknown widht"):
        build_model("mlp", input_shape=(4,), num_classes=2, widht=3)
    with pytest.raises(InputError, match="activation in"):
        build_model("mlp", input_shape=(4,), num_classes=2, activation="swishy")
    with pytest.raises(InputError, match="input_shape and num_classes"):
        build_model("mlp", num_classes=2)
    with pytest.raises(InputError, match=r"image input_shape \(C, H, W\)"):
        build_model("convnet", input_shape=(40,), num_classes=2)
    with pytest.raises(InputError, match="dropout"):
        build_model("mlp", input_shape=(4,), num_classes=2, dropout=1.5)
    with pytest.raises(InputError, match="num_classes to be a positive integer"):
        build_model("linear", input_shape=(4,), num_classes=0)
