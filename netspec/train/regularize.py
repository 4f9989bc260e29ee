"""Training stage: weight penalties (L1, L2, elastic net) and the max-norm constraint.

Penalties add to the loss and to ``grads`` of the selected weights; the penalty formulas
themselves live in ``netspec.runtime.losses`` (L2 is 0.5 * lam * sum(w**2), so its gradient
is lam * w, the same as torch's ``weight_decay=lam`` for SGD).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


def is_weight(name: str, w: np.ndarray) -> bool:
    """Conv and linear weights: '.weight' with ndim >= 2 (not biases, not norm scales)."""
    return name.endswith(".weight") and w.ndim >= 2


def regularized_names(params: Mapping[str, np.ndarray], scope: str = "weights",
                      exclude: Iterable[str] = ()) -> list[str]:
    """Parameters that penalties and max-norm apply to; ``scope="all"`` takes every one."""
    skip = set(exclude)
    return [n for n, w in params.items()
            if n not in skip and (scope == "all" or is_weight(n, w))]


@dataclass(frozen=True)
class Regularization:
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None
    scope: str = "weights"  # "weights" (conv/linear weights) or "all"

    @property
    def penalizes(self) -> bool:
        return bool(self.l1 or self.l2)

    def add_penalty(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray],
                    names: Iterable[str]) -> float:
        """Sum of the penalty over ``names``; its gradient is added to ``grads`` in place."""
        if not self.penalizes:
            return 0.0
        penalty = penalty_function(self.l1, self.l2)
        total = 0.0
        for name in names:
            value, dw = penalty(params[name])
            grads[name] += dw
            total += float(value)
        return total

    def constrain(self, params: Mapping[str, np.ndarray], names: Iterable[str]) -> None:
        """Max-norm after an update, on the selected parameters that have rows (ndim >= 2)."""
        if self.max_norm is not None:
            for name in names:
                if params[name].ndim >= 2:
                    apply_max_norm(params[name], self.max_norm)


def penalty_function(l1: float, l2: float):
    """w -> (value, dvalue/dw) for the configured mix: L1, L2 or elastic net."""
    from netspec.runtime import losses

    if l1 and l2:
        return lambda w: losses.elastic_penalty(w, l1, l2)
    if l1:
        return lambda w: losses.l1_penalty(w, l1)
    return lambda w: losses.l2_penalty(w, l2)


def apply_max_norm(w: np.ndarray, c: float) -> None:
    """Project each output row (axis 0: neuron or filter) onto ||w_row||_2 <= c, in place."""
    rows = w.reshape(w.shape[0], -1)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    scale = np.minimum(1.0, c / np.maximum(norms, np.finfo(w.dtype).tiny)).astype(w.dtype)
    w *= scale.reshape((-1,) + (1,) * (w.ndim - 1))
