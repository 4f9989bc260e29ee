"""Training stage: learning-rate schedules (step, cosine, linear, constant) with linear warmup.

A schedule maps a step count t (epochs or iterations, 0-based: the lr used *during* step t)
to a learning rate. Warmup occupies the first W steps; the decay then runs over the
remaining T - W steps with its clock restarted at 0, as torch's SequentialLR does.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass


def constant(t: int, total: int, base_lr: float, **_) -> float:
    return base_lr


def step_decay(t: int, total: int, base_lr: float, milestones: tuple[int, ...] = (),
               gamma: float = 0.1, every: int = 0, **_) -> float:
    """a_t = a0 * gamma**(number of milestones <= t); ``every=k`` means milestones k, 2k, ..."""
    passed = t // every if every else bisect.bisect_right(sorted(milestones), t)
    return base_lr * gamma**passed


def cosine(t: int, total: int, base_lr: float, min_lr: float = 0.0, **_) -> float:
    """a_t = a_min + 0.5 * (a0 - a_min) * (1 + cos(t * pi / T))  (SGDR without restarts)."""
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / max(total, 1)))


def linear(t: int, total: int, base_lr: float, **_) -> float:
    """a_t = a0 * (1 - t / T)."""
    return base_lr * (1.0 - t / max(total, 1))


DECAYS: dict[str, Callable[..., float]] = {
    "constant": constant, "step": step_decay, "cosine": cosine, "linear": linear,
}


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule measured in epochs (``per="epoch"``) or iterations.

    ``total`` is T in the unit of ``per``; ``milestones``, ``every`` and ``warmup`` too.
    """

    kind: str = "constant"
    base_lr: float = 1e-3
    total: int = 1
    per: str = "epoch"
    warmup: int = 0
    warmup_start: float = 0.1  # fraction of base_lr at t = 0 of the warmup
    milestones: tuple[int, ...] = ()
    every: int = 0
    gamma: float = 0.1
    min_lr: float = 0.0

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            # a_t = a0 * (s + (1 - s) * t / W), torch's LinearLR(start_factor=s, total_iters=W)
            return self.base_lr * (self.warmup_start + (1.0 - self.warmup_start) * t / self.warmup)
        return DECAYS[self.kind](
            t - self.warmup, self.total - self.warmup, self.base_lr,
            milestones=self.milestones, every=self.every, gamma=self.gamma, min_lr=self.min_lr,
        )

    def lr_at(self, epoch: int, iteration: int) -> float:
        """The lr for global ``iteration`` (0-based) that falls in ``epoch`` (0-based)."""
        return self(epoch if self.per == "epoch" else iteration)
