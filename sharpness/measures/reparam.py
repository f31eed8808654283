"""Function-preserving rescaling of a ReLU network (Dinh, Pascanu, Bengio, Bengio, ICML 2017, §4–5).

For two consecutive affine layers separated by a positively homogeneous activation (ReLU, leaky ReLU,
max/average pooling: σ(αz) = ασ(z) for α > 0),

    W₁ → αW₁,  b₁ → αb₁,  W₂ → W₂/α      ⇒      W₂/α · σ(αW₁x + αb₁) + b₂ = W₂σ(W₁x + b₁) + b₂,

so the network computes the same function and has the same loss, while its Hessian becomes D⁻¹HD⁻¹ with
D = diag(α on layer 1, 1/α on layer 2): raw curvature (λ_max, trace, ε-sharpness) can be made as large as one
likes at an unchanged minimum. Adaptive sharpness (c = |w|) is invariant because |D w| = D|w|.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import InputError

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Modules that may sit between the two layers inside one nn.Sequential without breaking σ(αz) = ασ(z).
HOMOGENEOUS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Flatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
)


def _affine_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, AFFINE)]


def _check_between(model: nn.Module, first: str, second: str) -> None:
    """If both layers are children of one nn.Sequential, everything between them must be homogeneous."""
    parent1, _, child1 = first.rpartition(".")
    parent2, _, child2 = second.rpartition(".")
    if parent1 != parent2:
        return
    parent = model.get_submodule(parent1)
    if not isinstance(parent, nn.Sequential):
        return
    names = [n for n, _ in parent.named_children()]
    i, j = names.index(child1), names.index(child2)
    if i >= j:
        raise InputError(f"expected layer {first!r} before {second!r} in their nn.Sequential, got the reverse order")
    for name in names[i + 1 : j]:
        module = parent.get_submodule(name)
        if not isinstance(module, HOMOGENEOUS):
            raise InputError(
                f"expected only positively homogeneous modules (ReLU, pooling) between {first!r} and {second!r}, "
                f"got {type(module).__name__} at {parent1 + '.' if parent1 else ''}{name}"
            )


def rescale_relu_layers(model: nn.Module, alpha: float, *, layers: tuple[str, str] | None = None) -> nn.Module:
    """A NEW model (a deep copy; ``model`` is untouched) with W₁ → αW₁, b₁ → αb₁, W₂ → W₂/α.

    Args:
        model: a network where ``layers[0]`` feeds ``layers[1]`` through a positively homogeneous activation.
        alpha: α > 0 (the identity needs σ(αz) = ασ(z), true only for positive α).
        layers: the two module names (``nn.Linear`` or ``nn.Conv*d``); default: the first two such modules in
            ``model.named_modules()`` order.

    What can be checked is: α is positive and finite, both modules are affine layers, their widths agree
    when both are Linear or both are convolutions, and — when they are siblings in an ``nn.Sequential`` — only
    ReLU/pooling-like modules sit between them. A custom ``forward`` cannot be inspected: a BatchNorm or a
    skip connection between the layers breaks the identity, and the caller must rule that out (compare the
    outputs of both models, as the tests do).
    """
    if not (math.isfinite(alpha) and alpha > 0):
        raise InputError(f"alpha must be a finite number > 0 (ReLU is only positively homogeneous), got {alpha}")
    if layers is None:
        found = _affine_layers(model)
        if len(found) < 2:
            raise InputError(f"expected a model with at least two Linear/Conv layers, got {len(found)}")
        layers = (found[0], found[1])
    first_name, second_name = layers
    modules = dict(model.named_modules())
    for name in layers:
        if not isinstance(modules.get(name), AFFINE):
            found = ", ".join(_affine_layers(model)) or "none"
            raise InputError(f"expected {name!r} to name a Linear or Conv layer of the model (they are: {found})")
    first, second = modules[first_name], modules[second_name]
    width_out = first.out_features if isinstance(first, nn.Linear) else first.out_channels
    width_in = second.in_features if isinstance(second, nn.Linear) else second.in_channels
    if isinstance(first, nn.Linear) == isinstance(second, nn.Linear) and width_out != width_in:
        raise InputError(
            f"expected {second_name!r} to take the {width_out} outputs of {first_name!r}, got {width_in} inputs"
        )
    _check_between(model, first_name, second_name)

    new = copy.deepcopy(model)
    new_first, new_second = new.get_submodule(first_name), new.get_submodule(second_name)
    with torch.no_grad():
        new_first.weight.mul_(alpha)
        if new_first.bias is not None:
            new_first.bias.mul_(alpha)
        new_second.weight.div_(alpha)
    return new
