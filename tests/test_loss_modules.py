"""``loss=nn.CrossEntropyLoss(...)`` and the other standard loss modules against their own mean, in float64.

Truth for each module: its ``reduction="mean"`` (or what its reduction means) over the full set of 20 samples in one
call, with value, gradient and Hessian by autograd on the flattened parameters (``torch.autograd.functional``).
The objective evaluates the same set in chunks of 7 (uneven: 7, 7, 6), so a wrong mean weighting (class weights,
ignored entries, per-element counts) shows as a relative error of order 1e-2 or more. Both sides are float64 sums of
20–40 terms computed in another order: they agree to ~1e-15, so 1e-12 (values) and 1e-10 of max |H| (Hessians,
gradients) leave orders of magnitude of room and still catch any wrong term.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharpness import HessianOperator, analyze
from sharpness.errors import InputError
from sharpness.linalg import top_eigenvalues
from sharpness.objective import Objective

N = 20
G = torch.Generator().manual_seed(3)
X = torch.randn(N, 4, generator=G, dtype=torch.float64)
LABELS = torch.randint(0, 3, (N,), generator=G)
IGNORED = LABELS.clone()
IGNORED[[2, 9, 15]] = -100
PROBS = torch.softmax(torch.randn(N, 3, generator=G, dtype=torch.float64), dim=1)
REAL = torch.randn(N, 2, generator=G, dtype=torch.float64)
UNIT = torch.rand(N, 2, generator=G, dtype=torch.float64)
SIGNS = torch.randint(0, 2, (N, 2), generator=G).double() * 2 - 1
COUNTS = torch.poisson(torch.full((N, 2), 2.0, dtype=torch.float64), generator=G)
SPATIAL = torch.randint(0, 3, (N, 2), generator=G)
SPATIAL[[1, 4], [0, 1]] = -100


def w3(dtype):
    return torch.tensor([0.5, 2.0, 1.0], dtype=dtype)


def w2(dtype):
    return torch.tensor([1.5, 0.5], dtype=dtype)


# id: (module for a weight dtype, output width, outputs from the logits z, targets)
CASES = {
    "ce": (lambda d: nn.CrossEntropyLoss(), 3, None, LABELS),
    "ce-weight-ignore-smoothing": (lambda d: nn.CrossEntropyLoss(weight=w3(d), label_smoothing=0.1), 3, None, IGNORED),
    "ce-ignore-a-class": (lambda d: nn.CrossEntropyLoss(weight=w3(d), ignore_index=1), 3, None, LABELS),
    "ce-probabilities": (lambda d: nn.CrossEntropyLoss(weight=w3(d), label_smoothing=0.05), 3, None, PROBS),
    "ce-spatial": (lambda d: nn.CrossEntropyLoss(weight=w3(d)), 6, lambda z: z.reshape(-1, 3, 2), SPATIAL),
    "ce-spatial-plain": (lambda d: nn.CrossEntropyLoss(), 6, lambda z: z.reshape(-1, 3, 2), SPATIAL),
    "ce-probabilities-plain": (lambda d: nn.CrossEntropyLoss(), 3, None, PROBS),
    "ce-none": (lambda d: nn.CrossEntropyLoss(weight=w3(d), reduction="none"), 3, None, IGNORED),
    "nll-weight": (lambda d: nn.NLLLoss(weight=w3(d)), 3, lambda z: F.log_softmax(z, dim=1), IGNORED),
    "mse": (lambda d: nn.MSELoss(), 2, None, REAL),
    "l1": (lambda d: nn.L1Loss(), 2, None, REAL),
    "smooth-l1": (lambda d: nn.SmoothL1Loss(beta=0.5), 2, None, REAL),
    "huber": (lambda d: nn.HuberLoss(delta=0.3), 2, None, REAL),
    "bce-logits": (lambda d: nn.BCEWithLogitsLoss(weight=w2(d), pos_weight=w2(d).flip(0)), 2, None, UNIT),
    "bce": (lambda d: nn.BCELoss(weight=w2(d)), 2, torch.sigmoid, UNIT),
    "kl-batchmean": (lambda d: nn.KLDivLoss(reduction="batchmean"), 3, lambda z: F.log_softmax(z, dim=1), PROBS),
    "kl-mean": (lambda d: nn.KLDivLoss(), 3, lambda z: F.log_softmax(z, dim=1), PROBS),
    "hinge-embedding": (lambda d: nn.HingeEmbeddingLoss(margin=0.5), 2, torch.square, SIGNS),
    "soft-margin": (lambda d: nn.SoftMarginLoss(), 2, None, SIGNS),
    "poisson": (lambda d: nn.PoissonNLLLoss(), 2, None, COUNTS),
    "multilabel-soft-margin": (lambda d: nn.MultiLabelSoftMarginLoss(weight=w2(d)), 2, None, (UNIT > 0.5).double()),
}


#: The cases with an accuracy: unweighted classification losses averaged by reduction="mean".
ACCURACY = {"ce", "ce-spatial-plain", "ce-probabilities-plain"}


class Net(nn.Module):
    def __init__(self, width: int, head=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, width))
        self.head = head

    def forward(self, x):
        z = self.body(x)
        return z if self.head is None else self.head(z)


def truth(model, module, targets):
    """(f, ∇f, ∇²f) of the module's own reduction over all N at once (a 'none' module: the plain mean)."""
    return truth_on(model, module, X, targets)


def truth_on(model, module, x, targets):
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        params = {k: t.view(s) for k, t, s in zip(names, flat.split([s.numel() for s in shapes]), shapes)}
        out = module(torch.func.functional_call(model, params, (x,)), targets)
        return out.mean() if module.reduction == "none" else out

    t = theta.clone().requires_grad_()
    value = f(t)
    (grad,) = torch.autograd.grad(value, t)
    return value.detach(), grad, torch.autograd.functional.hessian(f, theta)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")  # KLDivLoss(reduction="mean") says it is not KL
@pytest.mark.parametrize("case", list(CASES))
def test_module_equals_its_own_mean_value_gradient_and_hessian(case):
    make, width, head, targets = CASES[case]
    model = Net(width, head).double()
    users = make(torch.float32)  # float32 class weights, as people write them: the objective casts its own copy
    state = {k: v.clone() for k, v in users.state_dict().items()}
    want_f, want_g, want_H = truth(model, make(torch.float64), targets)
    obj = Objective(model, X, targets, loss=users, chunk_size=7)
    assert obj.loss_kind.startswith(f"callable:torch.nn.{type(users).__name__}(")
    f, g = obj.value_and_grad()
    assert float(obj.value()) == pytest.approx(float(want_f), rel=1e-12)
    assert float(f) == pytest.approx(float(want_f), rel=1e-12)
    assert rel_err(g, want_g) < 1e-10
    H = HessianOperator(obj) @ torch.eye(obj.numel, dtype=torch.float64)
    assert rel_err(H, want_H) < 1e-10
    top = top_eigenvalues(HessianOperator(obj), k=1, tol=1e-10, max_steps=obj.numel, seed=0)
    assert float(top.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(want_H)[-1]), rel=1e-8)
    # Accuracy: the fraction of non-ignored examples whose argmax over the class dimension (1) is the label.
    accuracy = obj.evaluate().accuracy
    assert (accuracy is not None) == (case in ACCURACY)
    if accuracy is not None:
        with torch.no_grad():
            pred = model(X).argmax(dim=1)
        labels = targets.argmax(dim=1) if targets.is_floating_point() else targets
        assert accuracy == pytest.approx(float((pred == labels)[labels != -100].double().mean()), rel=1e-12)
    # The user's loss object is untouched: reduction, buffers (dtype included).
    assert users.reduction == make(torch.float32).reduction
    assert state.keys() == users.state_dict().keys()
    assert all(torch.equal(state[k], v) and v.dtype == state[k].dtype for k, v in users.state_dict().items())


@pytest.mark.parametrize("module, builtin, targets", [
    (nn.CrossEntropyLoss(), {"loss": "cross-entropy"}, LABELS),
    (nn.CrossEntropyLoss(label_smoothing=0.1), {"loss": "cross-entropy", "label_smoothing": 0.1}, IGNORED),
    (nn.MSELoss(), {"loss": "mse"}, REAL),
    (nn.BCEWithLogitsLoss(), {"loss": "bce"}, UNIT),
], ids=["ce", "ce-smoothing-ignore", "mse", "bce"])
def test_modules_give_the_built_in_losses_numbers(module, builtin, targets):
    model = Net(targets.shape[1] if targets.ndim == 2 else 3).double()
    a = Objective(model, X, targets, loss=module, chunk_size=7)
    b = Objective(model, X, targets, chunk_size=7, **builtin)
    assert float(a.value()) == pytest.approx(float(b.value()), rel=1e-12)
    eye = torch.eye(a.numel, dtype=torch.float64)
    assert rel_err(HessianOperator(a) @ eye, HessianOperator(b) @ eye) < 1e-10
    acc_a, acc_b = a.evaluate().accuracy, b.evaluate().accuracy
    assert (acc_a is None) == (acc_b is None) == isinstance(module, nn.MSELoss)
    if acc_b is not None:  # counts of hits over counts of examples: exact
        assert acc_a == acc_b
        with torch.no_grad():
            z = model(X)
        want = ((z > 0) == (targets > 0.5)).double().mean() if targets.is_floating_point() else (
            (z.argmax(1) == targets)[targets != -100].double().mean())
        assert acc_a == pytest.approx(float(want), rel=1e-12)


def test_streamed_dicts_and_analyze_record_the_module():
    model = Net(3).double()
    loss = nn.CrossEntropyLoss(weight=w3(torch.float64), label_smoothing=0.1)
    want_f, _, want_H = truth(model, loss, IGNORED)
    data = [{"x": X[s:s + 3], "y": IGNORED[s:s + 3]} for s in range(0, N, 3)]  # batches of 3, the last of 2
    obj = Objective(model, data, loss=loss, target_key="y", forward=lambda m, b: m(b["x"]))
    assert float(obj.value()) == pytest.approx(float(want_f), rel=1e-12)
    report = analyze(model, X, IGNORED, loss=loss, top_k=1, bottom_k=0, trace=False, dtype="float64", tol=1e-10)
    # tol=1e-10 is the requested relative error of λ_max: 1e-8 leaves a margin of 100.
    assert report.hessian["top"]["values"][0] == pytest.approx(float(torch.linalg.eigvalsh(want_H)[-1]), rel=1e-8)
    assert "label_smoothing=0.1" in report.to_dict()["config"]["loss"]


@pytest.mark.parametrize("loss, fragments", [
    (nn.CrossEntropyLoss(reduction="sum"), ["reduction='sum'", "expected reduction='mean'"]),
    (nn.TripletMarginLoss(), ["TripletMarginLoss", "not a supported loss module", "loss(outputs, batch)"]),
    (nn.MultiMarginLoss(), ["MultiMarginLoss() has no second derivative", "loss(outputs, batch)"]),
    (type("MyCE", (nn.CrossEntropyLoss,), {})(), ["MyCE", "loss(outputs, batch)"]),
    (nn.CrossEntropyLoss(weight=torch.tensor([1.0, 0.0, 1.0]), label_smoothing=0.1), ["class weight of 0"]),
    (nn.MSELoss(), ["MSELoss expects targets of the outputs' shape (20, 3), got (20,)"]),
    (lambda outputs, y: F.cross_entropy(outputs, y, reduction="none"), ["failed on (outputs, batch)",
                                                                         "expected loss(outputs, batch)"]),
    (42, ["a callable loss(outputs, batch) -> per-example losses", "got 42"]),
    (lambda outputs, batch: F.multi_margin_loss(outputs, batch[1], reduction="none"),
     ["calls aten::multi_margin_loss_backward, which has no second derivative"]),
], ids=["sum", "triplet", "multi-margin", "subclass", "smoothing-zero-weight", "broadcast", "targets-callable",
        "not-callable", "no-double-backward"])
def test_refusals_are_one_line_and_state_the_contract(loss, fragments):
    targets = REAL[:, 0] if isinstance(loss, nn.MSELoss) else LABELS
    with pytest.raises(InputError) as info:
        analyze(Net(3).double(), X, targets, loss=loss, top_k=1, bottom_k=0, trace=False)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


USER = '''
import torch
from torch import nn

def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()

def tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    y[:4] = 2
    return x, y

smoothed = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1, ignore_index=2)
triplet = nn.TripletMarginLoss()
'''


def test_cli_takes_a_loss_module_by_name_and_refuses_others_in_one_line(capsys, tmp_path):
    import json

    from cli_helpers import assert_input_error, run_cli

    path = tmp_path / "mine.py"
    path.write_text(USER)
    ns: dict = {}
    exec(compile(USER, str(path), "exec"), ns)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(ns["net"]().state_dict(), ckpt)
    base = ["analyze", ckpt, "--model", f"{path}:net", "--data", f"{path}:tensors", "--device", "cpu",
            "--dtype", "float64", "--top-k", "1", "--bottom-k", "0", "--no-trace", "--tol", "1e-10", "--json", "-"]
    code, out, err = run_cli(capsys, *base, "--loss", f"{path}:smoothed")
    assert code == 0, err
    got = json.loads(out)
    x, y = ns["tensors"]()
    want_f, _, want_H = truth_on(ns["net"](), copy.deepcopy(ns["smoothed"]).double(), x, y)
    assert got["loss"] == pytest.approx(float(want_f), rel=1e-12)
    assert got["hessian"]["top"]["values"][0] == pytest.approx(float(torch.linalg.eigvalsh(want_H)[-1]), rel=1e-8)
    assert ns["smoothed"].reduction == "mean" and ns["smoothed"].weight.dtype == torch.float32
    assert_input_error(run_cli(capsys, *base, "--loss", f"{path}:triplet"), "TripletMarginLoss",
                       "loss(outputs, batch) -> per-example losses")
