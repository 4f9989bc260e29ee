"""Training stage: first-order optimizers as the CS231n notes write them, updating in place.

Every optimizer works on ``dict[str, np.ndarray]`` parameters and gradients keyed by name.
``step`` changes the parameter arrays in place (the compiled model keeps references to them)
and allocates nothing after the first step: per-parameter state and one scratch array are
created lazily, then reused. Parameters keep their dtype (float32 stays float32).

``state_dict()`` is a flat ``dict[str, np.ndarray | float | int]`` ("t", "lr",
"<slot>/<param name>") that goes straight into a checkpoint ``.npz``.

Where the notes' formulation differs from ``torch.optim`` the docstrings say so;
tests/test_optim.py proves the equivalence under the stated condition.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

Arrays = Mapping[str, np.ndarray]


@dataclass
class Optimizer:
    """Shared bookkeeping: step counter, learning rate, per-parameter state slots."""

    lr: float = 1e-2
    t: int = 0
    state: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    scratch: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    slots: ClassVar[tuple[str, ...]] = ()  # names of the per-parameter state arrays
    name: ClassVar[str] = ""

    def step(self, params: Arrays, grads: Arrays, frozen: Iterable[str] = ()) -> None:
        """One update of every parameter that has a gradient and is not frozen."""
        frozen = set(frozen)
        self.t += 1
        for name, p in params.items():
            if name in frozen or name not in grads:
                continue
            self.update(name, p, grads[name], self.slot_arrays(name, p), self.scratch_for(name, p))

    def update(self, name: str, p: np.ndarray, g: np.ndarray, s: dict, tmp: np.ndarray) -> None:
        raise NotImplementedError

    def slot_arrays(self, name: str, p: np.ndarray) -> dict[str, np.ndarray]:
        if name not in self.state:
            self.state[name] = {slot: np.zeros_like(p) for slot in self.slots}
        return self.state[name]

    def scratch_for(self, name: str, p: np.ndarray) -> np.ndarray:
        if name not in self.scratch:
            self.scratch[name] = np.empty_like(p)
        return self.scratch[name]

    def state_dict(self) -> dict:
        out: dict = {"t": self.t, "lr": self.lr}
        for name, slots in self.state.items():
            for slot, arr in slots.items():
                out[f"{slot}/{name}"] = arr
        return out

    def load_state_dict(self, d: Mapping) -> None:
        """Restore ``t``, ``lr`` and the state slots (copies: the caller keeps its arrays)."""
        self.t = int(d["t"])
        self.lr = float(d["lr"])
        self.state = {}
        for key, arr in d.items():
            if "/" not in key:
                continue
            slot, name = key.split("/", 1)
            if slot not in self.slots:
                raise KeyError(f"{type(self).__name__} has no state slot '{slot}' (key '{key}')")
            self.state.setdefault(name, {})[slot] = np.array(arr, copy=True)


@dataclass
class SGD(Optimizer):
    """Vanilla update: x += -lr * dx."""

    name: ClassVar[str] = "sgd"

    def update(self, name, p, g, s, tmp):
        np.multiply(g, self.lr, out=tmp)
        p -= tmp


@dataclass
class Momentum(Optimizer):
    """Momentum update (notes): v = mu * v - lr * dx ;  x += v.

    torch.optim.SGD(momentum=mu) keeps b = mu * b + dx and does x -= lr * b. With v = -lr * b
    the two are the same sequence of parameters while lr is constant. When lr changes, the
    notes' v remembers the old lr (the change takes effect gradually), torch's b rescales the
    whole velocity at once.
    """

    mu: float = 0.9
    slots: ClassVar[tuple[str, ...]] = ("v",)
    name: ClassVar[str] = "momentum"

    def update(self, name, p, g, s, tmp):
        v = s["v"]
        v *= self.mu
        np.multiply(g, self.lr, out=tmp)
        v -= tmp
        p += v


@dataclass
class Nesterov(Optimizer):
    """Nesterov momentum in the notes' look-ahead form, x being the look-ahead parameters.

        v_prev = v ;  v = mu * v - lr * dx ;  x += -mu * v_prev + (1 + mu) * v

    torch.optim.SGD(momentum=mu, nesterov=True) does b = mu * b + dx ; x -= lr * (dx + mu * b).
    Substituting v = -lr * b gives the same update while lr is constant.
    """

    mu: float = 0.9
    slots: ClassVar[tuple[str, ...]] = ("v",)
    name: ClassVar[str] = "nesterov"

    def update(self, name, p, g, s, tmp):
        v = s["v"]
        np.multiply(v, -self.mu, out=tmp)  # -mu * v_prev
        p += tmp
        v *= self.mu
        np.multiply(g, self.lr, out=tmp)
        v -= tmp
        np.multiply(v, 1.0 + self.mu, out=tmp)  # (1 + mu) * v
        p += tmp


@dataclass
class AdaGrad(Optimizer):
    """AdaGrad: cache += dx**2 ;  x += -lr * dx / (sqrt(cache) + eps).

    Same as torch.optim.Adagrad with lr_decay=0, initial_accumulator_value=0 (eps outside the
    square root in both; torch's default eps is 1e-10, the notes' 1e-8).
    """

    eps: float = 1e-8
    slots: ClassVar[tuple[str, ...]] = ("cache",)
    name: ClassVar[str] = "adagrad"

    def update(self, name, p, g, s, tmp):
        cache = s["cache"]
        np.square(g, out=tmp)
        cache += tmp
        _step_by_root_cache(p, g, cache, tmp, self.lr, self.eps)


def _step_by_root_cache(p, g, cache, tmp, lr, eps) -> None:
    """p -= lr * g / (sqrt(cache) + eps), in place through the scratch array `tmp`."""
    np.sqrt(cache, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)
    tmp *= lr
    p -= tmp


@dataclass
class RMSProp(Optimizer):
    """RMSProp: cache = decay * cache + (1 - decay) * dx**2 ;  x += -lr * dx / (sqrt(cache) + eps).

    torch.optim.RMSprop(alpha=decay, centered=False, momentum=0) is identical (eps outside the
    square root). Keras/TensorFlow put eps inside it, sqrt(cache + eps), which differs.
    """

    decay_rate: float = 0.99
    eps: float = 1e-8
    slots: ClassVar[tuple[str, ...]] = ("cache",)
    name: ClassVar[str] = "rmsprop"

    def update(self, name, p, g, s, tmp):
        cache = s["cache"]
        cache *= self.decay_rate
        np.square(g, out=tmp)
        tmp *= 1.0 - self.decay_rate
        cache += tmp
        _step_by_root_cache(p, g, cache, tmp, self.lr, self.eps)


@dataclass
class Adam(Optimizer):
    """Adam with bias correction (notes, Kingma & Ba 2014):

        m = b1*m + (1-b1)*dx ;  v = b2*v + (1-b2)*dx**2
        mt = m / (1 - b1**t) ;  vt = v / (1 - b2**t) ;  x += -lr * mt / (sqrt(vt) + eps)

    torch.optim.Adam computes sqrt(v)/sqrt(1-b2**t) + eps, the same quantity.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    slots: ClassVar[tuple[str, ...]] = ("m", "v")
    name: ClassVar[str] = "adam"

    def update(self, name, p, g, s, tmp):
        m, v = s["m"], s["v"]
        m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.square(g, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - self.beta2**self.t)  # sqrt(vt)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1.0 - self.beta1**self.t)  # mt = m / (1 - b1**t)
        p -= tmp


@dataclass
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), in torch's form:

        x *= 1 - lr * weight_decay ;  then the Adam update.

    The paper scales the decay by the schedule multiplier only; torch (and netspec) by lr.
    ``decays(name, p)`` chooses which parameters decay (None: all, as torch does).
    """

    weight_decay: float = 1e-2
    decays: Callable[[str, np.ndarray], bool] | None = field(default=None, repr=False)
    name: ClassVar[str] = "adamw"

    def update(self, name, p, g, s, tmp):
        if self.weight_decay and (self.decays is None or self.decays(name, p)):
            p *= 1.0 - self.lr * self.weight_decay
        super().update(name, p, g, s, tmp)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW)
}


def make_optimizer(kind: str, **hyper) -> Optimizer:
    """Build an optimizer by its config name, e.g. ``make_optimizer("adam", lr=1e-3)``."""
    return OPTIMIZERS[kind](**hyper)
