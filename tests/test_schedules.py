"""Learning-rate schedules against torch.optim.lr_scheduler where the two coincide."""
import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from netspec.train.schedules import Schedule

A0, T = 0.1, 40


def torch_lrs(make_scheduler, steps: int = T) -> list[float]:
    """lr in effect during each step 0..steps-1 (read before scheduler.step())."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=A0)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def ours(schedule: Schedule, steps: int = T) -> list[float]:
    return [schedule(t) for t in range(steps)]


def test_step_decay_matches_multisteplr():
    expected = torch_lrs(lambda o: lr_scheduler.MultiStepLR(o, milestones=[10, 25], gamma=0.2))
    got = ours(Schedule("step", A0, T, milestones=(10, 25), gamma=0.2))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_step_every_k_matches_steplr():
    expected = torch_lrs(lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5))
    np.testing.assert_allclose(ours(Schedule("step", A0, T, every=7, gamma=0.5)), expected,
                               rtol=1e-12)


def test_cosine_matches_cosineannealinglr():
    expected = torch_lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=T, eta_min=1e-4))
    np.testing.assert_allclose(ours(Schedule("cosine", A0, T, min_lr=1e-4)), expected,
                               rtol=1e-9)


def test_cosine_is_the_notes_formula():
    s = Schedule("cosine", A0, T)
    for t in (0, 7, 20, 33):
        assert s(t) == pytest.approx(0.5 * A0 * (1 + math.cos(t * math.pi / T)))


def test_linear_matches_linearlr_to_zero():
    expected = torch_lrs(lambda o: lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=T))
    got = ours(Schedule("linear", A0, T))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)
    assert got[10] == pytest.approx(A0 * (1 - 10 / T))


def test_constant_is_constant():
    assert set(ours(Schedule("constant", A0, T))) == {A0}


def test_warmup_then_cosine_matches_sequentiallr():
    w = 5

    def make(o):
        warm = lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=w)
        decay = lr_scheduler.CosineAnnealingLR(o, T_max=T - w)
        return lr_scheduler.SequentialLR(o, [warm, decay], milestones=[w])

    np.testing.assert_allclose(ours(Schedule("cosine", A0, T, warmup=w, warmup_start=0.1)),
                               torch_lrs(make), rtol=1e-9)


def test_per_iteration_uses_the_global_iteration():
    s = Schedule("linear", A0, total=100, per="iteration")
    assert s.lr_at(epoch=1, iteration=50) == pytest.approx(A0 / 2)
    e = Schedule("linear", A0, total=4, per="epoch")
    assert e.lr_at(epoch=1, iteration=50) == pytest.approx(A0 * 0.75)
