"""Named, seeded architectures, and user model factories referenced as ``"pkg.mod:fn"`` or ``"file.py:fn"``.

A model is described by a plain JSON-able *spec* (:func:`model_spec`)::

    {"name": "mlp",                                   # a built-in name or a factory reference
     "kwargs": {"input_shape": [1, 28, 28], "num_classes": 10, "hidden": [512, 512], ...}}

and rebuilt from it with :func:`build_from_spec`. Checkpoints store this spec next to the ``state_dict``.

Built-in architectures (:func:`model_names`); ``num_classes`` is the number of outputs (classes, or the
regression target width), ``input_shape`` the per-sample shape without the batch dimension:

``linear``   flatten → ``Linear(prod(input_shape), num_classes, bias=bias)``. For mean-squared regression
             the loss Hessian w.r.t. the weight of a 1-output, bias-free layer is ``2/N · XᵀX``.
``mlp``      Keskar et al. (2017) F1-like: flatten → [Linear → (BatchNorm1d) → act → (Dropout)] per entry of
             ``hidden`` → Linear. Default ``hidden=(512, 512)`` (F1 uses five 512-wide layers with BN;
             two keep CPU Hessian work affordable), ``activation="relu"``, ``batchnorm=False``, ``dropout=0``.
``cnn1d``    for MNIST-1D (input ``(L,)`` read as ``(1, L)``, or ``(C, L)``): three Conv1d layers
             (kernels 5, 3, 3; stride 2; ``channels=(32, 32, 32)``) with activations → flatten → Linear.
             For L = 40 the lengths go 40 → 20 → 10 → 5, so the head sees 32·5 = 160 features.
``convnet``  Keskar C1-like shallow conv net for ``(C, H, W)`` images: [Conv 5×5 (pad 2) → (BN) → act →
             MaxPool 2] × 2 with ``channels=(32, 64)`` → flatten → Linear(``hidden=256``) → act → Linear.
             28×28 inputs end at 64×7×7, 32×32 at 64×8×8.
``resnet``   a small CIFAR-style ResNet: 3×3 stem conv (``width``) → 3 stages of ``blocks`` basic blocks with
             widths (w, 2w, 4w), the 2nd and 3rd stage striding by 2 (1×1 conv shortcut when the shape
             changes) → global average pool → Linear. ``width=16, blocks=1`` (8 layers) by default;
             ``blocks=3`` is He et al.'s ResNet-20. ``batchnorm=False`` swaps every BN for Identity.
``gpt``      a small causal transformer for token sequences (input ``(T,)`` token ids, ``num_classes`` the
             vocabulary V, output ``(B, T, V)`` next-token logits): token + learned position embeddings →
             ``layers`` pre-LN blocks [x + attn(LN x); x + MLP(LN x)] with ``heads``-head causal
             ``scaled_dot_product_attention`` and a 4× GELU MLP → LN → Linear(V, no bias); GPT-2's N(0, 0.02²)
             initialization. ``d_model=96, layers=2, heads=4``: 0.28 M parameters for V = 256, T = 64.

Seeding: with ``seed`` the parameters are drawn inside ``torch.random.fork_rng`` after
``torch.manual_seed(seed)``, so the same seed gives bit-identical weights and the caller's global RNG state
is untouched. With ``seed=None`` the global RNG is used (and advanced) as in plain PyTorch.

Layout: the six architectures are short (20–40 lines each) and read as one catalogue beside the table
above; loading a factory by reference (``"pkg.mod:fn"`` / ``"file.py:fn"``) lives in :mod:`sharpness.files.usercode`
(it loads data functions and losses, too) and is re-exported here. A ``models/`` package becomes worth it
when an architecture grows past a screen.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from sharpness.errors import InputError
from sharpness.files.usercode import accepts, load_factory, one_line


__all__ = ["build_model", "model_names", "load_factory", "model_spec", "build_from_spec", "is_factory_ref"]


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str, model: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise InputError(f"expected activation in ({', '.join(_ACTIVATIONS)}) for model {model!r}, got {name!r}")
    return _ACTIVATIONS[name]()


def _int_tuple(value, what: str, model: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    if isinstance(value, (int,)) and not isinstance(value, bool):
        value = (value,)
    try:
        out = tuple(value)
    except TypeError:
        out = None
    if out is None or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out) or (not out and not allow_empty):
        raise InputError(f"expected {what} as a list of positive integers for model {model!r}, got {value!r}")
    return out


def _pos_int(value, what: str, model: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"expected {what} to be a positive integer for model {model!r}, got {value!r}")
    return value


def _bool(value, what: str, model: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"expected {what} to be true or false for model {model!r}, got {value!r}")
    return value


def _linear(*, input_shape, num_classes, bias: bool = True) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes, bias=_bool(bias, "bias", "linear")))


def _mlp(
    *, input_shape, num_classes, hidden: Sequence[int] = (512, 512), activation: str = "relu",
    batchnorm: bool = False, dropout: float = 0.0, bias: bool = True,
) -> nn.Module:
    hidden = _int_tuple(hidden, "hidden", "mlp", allow_empty=True)
    _bool(batchnorm, "batchnorm", "mlp")
    _bool(bias, "bias", "mlp")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise InputError(f"expected dropout in [0, 1) for model 'mlp', got {dropout!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=bias))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(_activation(activation, "mlp"))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes, bias=bias))
    return nn.Sequential(*layers)


class _Unsqueeze1d(nn.Module):
    """(N, L) → (N, 1, L); (N, C, L) passes through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.ndim == 2 else x


def _cnn1d(
    *, input_shape, num_classes, channels: Sequence[int] = (32, 32, 32), activation: str = "relu",
    batchnorm: bool = False,
) -> nn.Module:
    if len(input_shape) not in (1, 2):
        raise InputError(f"expected input_shape (L,) or (C, L) for model 'cnn1d', got {list(input_shape)}")
    channels = _int_tuple(channels, "channels", "cnn1d")
    _bool(batchnorm, "batchnorm", "cnn1d")
    c_in, length = (1, input_shape[0]) if len(input_shape) == 1 else tuple(input_shape)
    layers: list[nn.Module] = [_Unsqueeze1d()]
    for i, c in enumerate(channels):
        k = 5 if i == 0 else 3
        layers.append(nn.Conv1d(c_in, c, kernel_size=k, stride=2, padding=k // 2))
        if batchnorm:
            layers.append(nn.BatchNorm1d(c))
        layers.append(_activation(activation, "cnn1d"))
        c_in = c
        length = (length + 2 * (k // 2) - k) // 2 + 1
        if length < 1:
            raise InputError(f"expected an input length that survives {len(channels)} stride-2 convs for 'cnn1d', got {input_shape[-1]}")
    layers += [nn.Flatten(), nn.Linear(c_in * length, num_classes)]
    return nn.Sequential(*layers)


def _image_shape(input_shape, model: str) -> tuple[int, int, int]:
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    if len(input_shape) != 3:
        raise InputError(f"expected an image input_shape (C, H, W) for model {model!r}, got {list(input_shape)}")
    return tuple(input_shape)


class _ToImage(nn.Module):
    """(N, H, W) → (N, 1, H, W); 4-D input passes through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.ndim == 3 else x


def _convnet(
    *, input_shape, num_classes, channels: Sequence[int] = (32, 64), hidden: int = 256,
    activation: str = "relu", batchnorm: bool = False,
) -> nn.Module:
    c, h, w = _image_shape(input_shape, "convnet")
    channels = _int_tuple(channels, "channels", "convnet")
    hidden = _pos_int(hidden, "hidden", "convnet")
    _bool(batchnorm, "batchnorm", "convnet")
    layers: list[nn.Module] = [_ToImage()]
    for ch in channels:
        layers.append(nn.Conv2d(c, ch, kernel_size=5, padding=2))
        if batchnorm:
            layers.append(nn.BatchNorm2d(ch))
        layers += [_activation(activation, "convnet"), nn.MaxPool2d(2)]
        c, h, w = ch, h // 2, w // 2
        if h < 1 or w < 1:
            raise InputError(f"expected images large enough for {len(channels)} 2× poolings in 'convnet', got {list(input_shape)}")
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), _activation(activation, "convnet"), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, batchnorm: bool):
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda _c: nn.Identity())
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=not batchnorm)
        self.bn2 = norm(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batchnorm), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self, c_in: int, num_classes: int, width: int, blocks: int, batchnorm: bool):
        super().__init__()
        self.to_image = _ToImage()
        self.stem = nn.Conv2d(c_in, width, 3, padding=1, bias=not batchnorm)
        self.stem_bn = nn.BatchNorm2d(width) if batchnorm else nn.Identity()
        stages, c = [], width
        for i, mult in enumerate((1, 2, 4)):
            out = width * mult
            stage = [_BasicBlock(c, out, 1 if i == 0 else 2, batchnorm)]
            stage += [_BasicBlock(out, out, 1, batchnorm) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c = out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(self.to_image(x))))
        x = self.stages(x)
        return self.head(x.mean(dim=(2, 3)))


def _resnet(*, input_shape, num_classes, width: int = 16, blocks: int = 1, batchnorm: bool = True) -> nn.Module:
    c, _, _ = _image_shape(input_shape, "resnet")
    return _ResNet(c, num_classes, _pos_int(width, "width", "resnet"), _pos_int(blocks, "blocks", "resnet"),
                   _bool(batchnorm, "batchnorm", "resnet"))


class _CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with a 4× GELU MLP."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = _CausalSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _GPT(nn.Module):
    def __init__(self, vocab: int, context: int, d_model: int, layers: int, heads: int):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*[_Block(d_model, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        for m in self.modules():  # GPT-2's initialization: N(0, 0.02²) weights, zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Named as in Hugging Face models, so dict batches {"input_ids", "labels"} need no forward adapter.
        t = input_ids.shape[1]
        if t > self.context:
            raise ValueError(f"expected sequences of at most {self.context} tokens, got {t}")
        x = self.tok(input_ids) + self.pos.weight[:t]
        return self.head(self.ln_f(self.blocks(x)))


def _gpt(*, input_shape, num_classes, d_model: int = 96, layers: int = 2, heads: int = 4) -> nn.Module:
    (context,) = _int_tuple(input_shape, "input_shape", "gpt")
    d_model, layers, heads = (_pos_int(d_model, "d_model", "gpt"), _pos_int(layers, "layers", "gpt"),
                              _pos_int(heads, "heads", "gpt"))
    if d_model % heads:
        raise InputError(f"expected d_model divisible by heads for model 'gpt', got d_model={d_model}, heads={heads}")
    return _GPT(num_classes, context, d_model, layers, heads)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "linear": _linear,
    "mlp": _mlp,
    "cnn1d": _cnn1d,
    "convnet": _convnet,
    "resnet": _resnet,
    "gpt": _gpt,
}


def model_names() -> list[str]:
    """Built-in architecture names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------------------------------------


def is_factory_ref(name: str) -> bool:
    """True when ``name`` is a factory reference (``"pkg.mod:fn"`` / ``"file.py:fn"``), not a built-in name."""
    return isinstance(name, str) and name not in _REGISTRY and ":" in name


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def build_model(
    name: str,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a built-in architecture or call a user factory, optionally with seeded initialization.

    Args:
        name: a built-in name (:func:`model_names`) or a factory reference (``"pkg.mod:fn"``, ``"file.py:fn"``).
        input_shape: per-sample input shape, e.g. ``(1, 28, 28)`` or ``(40,)``; required for built-ins.
        num_classes: number of outputs; required for built-ins.
        seed: parameters drawn under ``torch.manual_seed(seed)`` inside ``fork_rng`` (global RNG untouched);
            ``None`` uses the global RNG.
        **kwargs: architecture options (module docstring) or, for a factory, its keyword arguments.
            A factory receives ``input_shape`` / ``num_classes`` only if its signature names them.

    Returns:
        A freshly built ``nn.Module`` in train mode (PyTorch's default), float32 for built-ins.

    Raises:
        InputError: unknown name or option, bad shapes, factory import problems, a factory that raises or
            returns something other than an ``nn.Module``.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"expected seed to be an integer or None, got {seed!r}")
    if not isinstance(name, str) or not name:
        raise InputError(f"expected a model name (one of {', '.join(model_names())}) or a factory 'pkg.mod:fn', got {name!r}")
    if name in _REGISTRY:
        if input_shape is None or num_classes is None:
            raise InputError(f"expected input_shape and num_classes for model {name!r}, got input_shape={input_shape!r}, num_classes={num_classes!r}")
        shape = _int_tuple(input_shape, "input_shape", name)
        num_classes = _pos_int(num_classes, "num_classes", name)
        fn = _REGISTRY[name]
        allowed = [p for p in inspect.signature(fn).parameters if p not in ("input_shape", "num_classes")]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise InputError(f"expected options for model {name!r} among ({', '.join(allowed)}), got unknown {', '.join(unknown)}")
        return _seeded(seed, lambda: fn(input_shape=shape, num_classes=num_classes, **kwargs))
    if not is_factory_ref(name):
        raise InputError(f"expected a model name (one of {', '.join(model_names())}) or a factory 'pkg.mod:fn' / 'file.py:fn', got {name!r}")
    factory = load_factory(name)
    call_kwargs = dict(kwargs)
    if input_shape is not None and accepts(factory, "input_shape"):
        call_kwargs["input_shape"] = tuple(int(d) for d in input_shape)
    if num_classes is not None and accepts(factory, "num_classes"):
        call_kwargs["num_classes"] = num_classes

    def call() -> nn.Module:
        try:
            out = factory(**call_kwargs)
        except Exception as e:
            raise InputError(f"expected model factory {name!r} to build a model from {sorted(call_kwargs)}, got {one_line(e)}") from None
        if not isinstance(out, nn.Module):
            raise InputError(f"expected model factory {name!r} to return a torch.nn.Module, got {type(out).__name__}")
        return out

    return _seeded(seed, call)


def _seeded(seed: int | None, make: Callable[[], nn.Module]) -> nn.Module:
    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"expected string keys in model {where}, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, torch.Size):
        return [int(v) for v in value]
    if value is None:
        return None
    for typ in (bool, str, int, float):  # exact builtin types, so the spec pickles with weights_only
        if isinstance(value, typ):
            return typ(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return value.item()
    raise InputError(f"expected JSON-able model kwargs (str/int/float/bool/None/list/dict), got {type(value).__name__} at {where}")


def model_spec(name: str, input_shape: Sequence[int] | None, num_classes: int | None, **kwargs: Any) -> dict:
    """The plain JSON-able description ``{"name", "kwargs": {input_shape, num_classes, **kwargs}}``.

    Tuples become lists, so ``json.loads(json.dumps(spec)) == spec`` and :func:`build_from_spec` accepts it.
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"expected a model name or factory reference, got {name!r}")
    kw = {"input_shape": None if input_shape is None else [int(d) for d in input_shape], "num_classes": num_classes}
    kw.update(kwargs)
    return {"name": name, "kwargs": _plain(kw, "kwargs")}


def build_from_spec(spec: dict, *, seed: int | None = None) -> nn.Module:
    """Build the model a :func:`model_spec` dict describes (``seed`` as in :func:`build_model`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise InputError(f"expected a model spec {{'name': str, 'kwargs': dict}}, got {str(spec)[:80]}")
    kwargs = copy.deepcopy(dict(spec.get("kwargs") or {}))
    input_shape = kwargs.pop("input_shape", None)
    num_classes = kwargs.pop("num_classes", None)
    return build_model(spec["name"], input_shape=input_shape, num_classes=num_classes, seed=seed, **kwargs)
