"""Training stage: netspec's optimizers on torch tensors, with netspec's checkpoint state.

Each netspec optimizer maps to the torch optimizer that computes the same update, checked
formula by formula against netspec.train.optim:

    sgd       torch.optim.SGD(lr)                                         x -= lr * dx
    adagrad   torch.optim.Adagrad(lr, eps, lr_decay=0, initial_accumulator_value=0)
    rmsprop   torch.optim.RMSprop(lr, alpha=decay_rate, eps, momentum=0, centered=False)
    adam      torch.optim.Adam(lr, betas=(beta1, beta2), eps)
    adamw     torch.optim.AdamW, weight decay only on the parameters the penalties select

Momentum and Nesterov differ: torch keeps b = mu * b + dx and steps x -= lr * b, the notes
keep v = mu * v - lr * dx and step x += v. They agree while lr is constant but not under a
schedule (torch rescales the whole velocity when lr changes), so ``NotesMomentum`` implements
the notes' form with torch ops. ``TorchOptimizer.state_dict()`` returns netspec's flat layout
("t", "lr", "<slot>/<name>"), so a checkpoint resumes on either backend.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch


class NotesMomentum(torch.optim.Optimizer):
    """Momentum (v = mu v - lr dx; x += v) or Nesterov in the notes' look-ahead form
    (x += -mu v_prev + (1 + mu) v), exactly as netspec.train.optim.Momentum / Nesterov."""

    def __init__(self, params, lr: float, mu: float, nesterov: bool = False):
        super().__init__(params, {"lr": lr, "mu": mu, "nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu = group["lr"], group["mu"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "v" not in state:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                if group["nesterov"]:
                    p.add_(v, alpha=-mu)          # -mu * v_prev
                    v.mul_(mu).add_(p.grad, alpha=-lr)
                    p.add_(v, alpha=1.0 + mu)     # (1 + mu) * v
                else:
                    v.mul_(mu).add_(p.grad, alpha=-lr)
                    p.add_(v)


# netspec slot name -> torch state key, per optimizer kind
SLOTS: dict[str, dict[str, str]] = {
    "sgd": {}, "momentum": {"v": "v"}, "nesterov": {"v": "v"},
    "adagrad": {"cache": "sum"}, "rmsprop": {"cache": "square_avg"},
    "adam": {"m": "exp_avg", "v": "exp_avg_sq"}, "adamw": {"m": "exp_avg", "v": "exp_avg_sq"},
}


def optimizer_kind(cfg) -> str:
    """The netspec optimizer an OptimizerConfig builds ("sgd" with momentum -> momentum)."""
    if cfg.type == "sgd" and cfg.momentum:
        return "nesterov" if cfg.nesterov else "momentum"
    return cfg.type


class TorchOptimizer:
    """The netspec optimizer interface (lr, t, step, state_dict) over a torch optimizer.

    The torch optimizer is built on first use, once the frozen set and the AdamW decay choice
    (``decays``, set by the loop like netspec's AdamW) are known.
    """

    def __init__(self, cfg, named_params: Callable[[], dict[str, torch.nn.Parameter]]):
        self.cfg, self.kind = cfg, optimizer_kind(cfg)
        self.named_params = named_params
        self.lr, self.t = cfg.lr, 0
        self.decays: Callable | None = None
        self.torch: torch.optim.Optimizer | None = None

    def build(self) -> torch.optim.Optimizer:
        if self.torch is not None:
            return self.torch
        named = {n: p for n, p in self.named_params().items() if p.requires_grad}
        params = list(named.values())
        c, kind = self.cfg, self.kind
        if kind == "sgd":
            opt = torch.optim.SGD(params, lr=c.lr)
        elif kind in ("momentum", "nesterov"):
            opt = NotesMomentum(params, lr=c.lr, mu=c.momentum, nesterov=kind == "nesterov")
        elif kind == "adagrad":
            opt = torch.optim.Adagrad(params, lr=c.lr, eps=c.eps, lr_decay=0.0,
                                      initial_accumulator_value=0.0)
        elif kind == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=c.lr, alpha=c.decay_rate, eps=c.eps)
        elif kind == "adam":
            opt = torch.optim.Adam(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps)
        elif kind == "adamw":
            decayed = [p for n, p in named.items() if self.decays is None or self.decays(n, p)]
            rest = [p for n, p in named.items() if not (self.decays is None or self.decays(n, p))]
            groups = [{"params": decayed, "weight_decay": c.weight_decay},
                      {"params": rest, "weight_decay": 0.0}]
            opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=c.lr,
                                    betas=(c.beta1, c.beta2), eps=c.eps)
        else:  # pragma: no cover - OptimizerConfig admits only the kinds above
            raise ValueError(f"no torch optimizer for {kind!r}")
        self.names = {id(p): n for n, p in named.items()}
        self.torch = opt
        return opt

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        for group in self.build().param_groups:
            group["lr"] = lr

    def step(self, scaler=None) -> None:
        """One update of every parameter that requires a gradient (frozen ones do not)."""
        opt = self.build()
        self.t += 1
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def state_dict(self) -> dict:
        out: dict = {"t": self.t, "lr": self.lr}
        if self.torch is None:
            return out
        slots = SLOTS[self.kind]
        for p, state in self.torch.state.items():
            name = self.names[id(p)]
            for slot, key in slots.items():
                if key in state:
                    out[f"{slot}/{name}"] = state[key].detach().cpu().numpy().copy()
        return out

    def load_state_dict(self, d: Mapping) -> None:
        """Restore t, lr and the slots written by either backend."""
        opt = self.build()
        self.t, self.lr = int(d["t"]), float(d["lr"])
        self.set_lr(self.lr)
        slots = SLOTS[self.kind]
        by_name = {n: p for n, p in self.named_params().items() if id(p) in self.names}
        opt.state.clear()
        for key, value in d.items():
            if "/" not in key:
                continue
            slot, name = key.split("/", 1)
            if slot not in slots:
                raise KeyError(f"{self.kind} has no state slot '{slot}' (key '{key}')")
            if name not in by_name:
                continue  # a frozen parameter keeps no state
            p = by_name[name]
            state = opt.state[p]
            state[slots[slot]] = torch.as_tensor(np.asarray(value), dtype=p.dtype,
                                                 device=p.device).clone()
            if self.kind not in ("sgd", "momentum", "nesterov"):
                state["step"] = torch.tensor(float(self.t), dtype=torch.float32)
        if self.kind == "adagrad":  # Adagrad creates its state eagerly: keep every slot present
            for p in by_name.values():
                state = opt.state[p]
                state.setdefault("sum", torch.zeros_like(p))
                state.setdefault("step", torch.tensor(float(self.t), dtype=torch.float32))
