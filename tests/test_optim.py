"""Optimizers against torch.optim fed the same gradient sequence (torch is the test oracle only)."""
import numpy as np
import pytest
import torch

from netspec.train.optim import (
    SGD,
    AdaGrad,
    Adam,
    AdamW,
    Momentum,
    Nesterov,
    RMSProp,
    make_optimizer,
)

STEPS = 60
SHAPES = {"fc1.weight": (5, 4), "fc1.bias": (5,), "conv.weight": (3, 2, 3, 3)}


def gradient_sequence(seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(STEPS)]


def initial_params(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def run_ours(opt, lrs=None) -> list[dict[str, np.ndarray]]:
    params = initial_params()
    trace = []
    for i, g in enumerate(gradient_sequence()):
        if lrs is not None:
            opt.lr = lrs[i]
        opt.step(params, g)
        trace.append({k: v.copy() for k, v in params.items()})
    return trace


def run_torch(make, lrs=None) -> list[dict[str, np.ndarray]]:
    tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in initial_params().items()}
    opt = make(list(tensors.values()))
    trace = []
    for i, g in enumerate(gradient_sequence()):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[i]
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
        trace.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    return trace


# (ours, torch equivalent) at constant lr; hyperparameters chosen away from defaults.
CASES = {
    "sgd": (lambda: SGD(lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    "momentum": (
        lambda: Momentum(lr=0.05, mu=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "nesterov": (
        lambda: Nesterov(lr=0.05, mu=0.8),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
    ),
    "adagrad": (
        lambda: AdaGrad(lr=0.1, eps=1e-8),
        lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-8),
    ),
    "rmsprop": (
        lambda: RMSProp(lr=0.01, decay_rate=0.95, eps=1e-7),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=1e-7),
    ),
    "adam": (
        lambda: Adam(lr=0.01, beta1=0.85, beta2=0.99, eps=1e-7),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.85, 0.99), eps=1e-7),
    ),
    "adamw": (
        lambda: AdamW(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("kind", CASES)
def test_matches_torch_over_many_steps(kind):
    ours, theirs = CASES[kind]
    for step, (a, b) in enumerate(zip(run_ours(ours()), run_torch(theirs))):
        for name in SHAPES:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-11, atol=1e-12,
                                       err_msg=f"{kind} step {step} {name}")


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_stateless_in_lr_optimizers_match_torch_under_a_changing_lr(kind):
    lrs = list(np.linspace(0.05, 0.001, STEPS))
    ours, theirs = CASES[kind]
    a, b = run_ours(ours(), lrs)[-1], run_torch(theirs, lrs)[-1]
    for name in SHAPES:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("kind", ["momentum", "nesterov"])
def test_velocity_forms_differ_from_torch_only_when_lr_changes(kind):
    # Documented difference: the notes fold lr into v, torch applies the current lr to b.
    lrs = list(np.linspace(0.05, 0.001, STEPS))
    ours, theirs = CASES[kind]
    a, b = run_ours(ours(), lrs)[-1], run_torch(theirs, lrs)[-1]
    assert not np.allclose(a["fc1.weight"], b["fc1.weight"], rtol=1e-6)


@pytest.mark.parametrize("kind", CASES)
def test_step_updates_in_place_and_keeps_float32(kind):
    opt = CASES[kind][0]()
    params = {k: v.astype(np.float32) for k, v in initial_params().items()}
    ids = {k: id(v) for k, v in params.items()}
    grads = [{k: v.astype(np.float32) for k, v in g.items()} for g in gradient_sequence()[:3]]
    opt.step(params, grads[0])
    state_ids = {(n, s): id(a) for n, slots in opt.state.items() for s, a in slots.items()}
    before = {k: v.copy() for k, v in params.items()}
    for g in grads[1:]:
        opt.step(params, g)
    assert {k: id(v) for k, v in params.items()} == ids
    assert {(n, s): id(a) for n, slots in opt.state.items() for s, a in slots.items()} == state_ids
    assert all(v.dtype == np.float32 for v in params.values())
    assert all(a.dtype == np.float32 for slots in opt.state.values() for a in slots.values())
    assert not np.array_equal(before["fc1.weight"], params["fc1.weight"])


@pytest.mark.parametrize("kind", CASES)
def test_frozen_parameters_get_no_update(kind):
    opt = CASES[kind][0]()
    params = initial_params()
    frozen_before = params["fc1.bias"].copy()
    for g in gradient_sequence()[:5]:
        opt.step(params, g, frozen={"fc1.bias"})
    np.testing.assert_array_equal(params["fc1.bias"], frozen_before)
    assert "fc1.bias" not in opt.state


@pytest.mark.parametrize("kind", CASES)
def test_state_dict_round_trip_resumes_identically(kind, tmp_path):
    grads = gradient_sequence()
    straight, params = CASES[kind][0](), initial_params()
    for g in grads[:20]:
        straight.step(params, g)
    expected = {k: v.copy() for k, v in params.items()}

    first, params = CASES[kind][0](), initial_params()
    for g in grads[:10]:
        first.step(params, g)
    np.savez(tmp_path / "opt.npz", **first.state_dict())
    resumed = CASES[kind][0]()
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        resumed.load_state_dict(dict(f))
    for g in grads[10:20]:
        resumed.step(params, g)
    for k, value in expected.items():
        np.testing.assert_array_equal(params[k], value)


def test_make_optimizer_by_name():
    opt = make_optimizer("rmsprop", lr=0.1, decay_rate=0.9)
    assert isinstance(opt, RMSProp) and opt.lr == 0.1 and opt.decay_rate == 0.9
