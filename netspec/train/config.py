"""Training stage: the training configuration, from a spec's ``train { ... }`` section and flags.

The spec section arrives lowered to plain Python: numbers, bools, strings, lists, and a bare
name or a call as a dict with "type" (``adam(lr=0.001)`` -> ``{"type": "adam", "lr": 0.001}``).
Each section is a dataclass; its fields carry their own check, and ``TYPES`` lists which
keys each type accepts, so an unknown key, type or bad value names itself in a ConfigError
with a did-you-mean hint. docs/training.md documents every key.
"""
from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from netspec.train.data import FORMATS


class ConfigError(ValueError):
    """A bad training setting: ``key`` is its dotted path (e.g. "optimizer.lr")."""

    def __init__(self, key: str, message: str, hint: str | None = None):
        self.key, self.message, self.hint = key, message, hint
        super().__init__(f"train.{key}: {message}" + (f"\nhint: {hint}" if hint else ""))


def did_you_mean(word: str, choices) -> str | None:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"expected one of: {', '.join(sorted(map(str, choices)))}"


# ---------------------------------------------------------------- value checks
# Each takes (key, value) and returns the normalized value or raises ConfigError.

def show(v: Any) -> str:
    """A lowered value as the spec writes it: "1", adam(lr=0.1), [1, 2]."""
    if isinstance(v, dict) and "type" in v:
        args = ", ".join(f"{k}={show(x)}" for k, x in v.items() if k != "type")
        return f"{v['type']}({args})" if args else str(v["type"])
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show(x) for x in v) + "]"
    from netspec.diagnostics import show_value

    return show_value(v)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, integer: bool = False) -> Callable[[str, Any], Any]:
    """A number in [low, high] (or open at either end); ``integer`` asks for a whole number."""
    def check(key: str, v: Any) -> Any:
        ok = is_number(v) and (not integer or float(v).is_integer())
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if not ok:
            what = "an integer" if integer else "a number"
            if low is not None and high is not None:
                what += f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            elif low is not None:
                what += f" {'>' if low_open else '>='} {low}"
            raise ConfigError(key, f"must be {what}, got {show(v)}")
        return int(v) if integer else float(v)
    return check


def optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda key, v: None if v is None else check(key, v)


def boolean(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(key, f"must be true or false, got {v!r}")
    return v


def text(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(key, f"must be a string, got {v!r}")
    return v


def one_of(*choices: str) -> Callable[[str, Any], str]:
    def check(key: str, v: Any) -> str:
        if v not in choices:
            raise ConfigError(key, f"unknown value {v!r}", did_you_mean(v, choices))
        return v
    return check


def int_list(key: str, v: Any) -> list[int]:
    if not isinstance(v, (list, tuple)) or not all(is_number(i) and float(i).is_integer()
                                                   for i in v):
        raise ConfigError(key, f"must be a list of integers, got {v!r}")
    return [int(i) for i in v]


def name_list(key: str, v: Any) -> list[str]:
    """Layer names or globs: a string, a bare name ({"type": name}), or a list of them."""
    items = v if isinstance(v, (list, tuple)) else [v]
    names = []
    for item in items:
        if isinstance(item, dict) and set(item) == {"type"}:
            item = item["type"]
        if not isinstance(item, str):
            raise ConfigError(key, f"must be layer names or globs, got {item!r}")
        names.append(item)
    return names


# Named per-channel statistics for `normalize`, on values in [0, 1] (torchvision's).
NORMALIZE_PRESETS = {
    "imagenet": [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]],  # torchvision's pretrained
}


def fixed_normalization(key: str, v: Any) -> list[list[float]] | None:
    """`normalize`: "data" (the training split's statistics) -> None; a preset name; or
    [mean, std], each a number or one number per channel, std > 0 -> [[mean...], [std...]]."""
    if isinstance(v, dict) and set(v) == {"type"}:
        v = v["type"]  # a bare name in the spec: normalize = imagenet
    if v is None or v == "data":
        return None
    if isinstance(v, str):
        if v not in NORMALIZE_PRESETS:
            raise ConfigError(key, f"unknown statistics {v!r}",
                              did_you_mean(v, ["data", *NORMALIZE_PRESETS]))
        return [list(x) for x in NORMALIZE_PRESETS[v]]
    example = "e.g. normalize = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]] (ImageNet's)"
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ConfigError(key, f"must be [mean, std], a preset ({', '.join(NORMALIZE_PRESETS)})"
                               f" or \"data\", got {show(v)}", example)
    mean, std = ([x] if is_number(x) else x for x in v)
    for name, values in (("mean", mean), ("std", std)):
        if not isinstance(values, (list, tuple)) or not values or not all(
                is_number(x) and math.isfinite(x) for x in values):
            raise ConfigError(key, f"the {name} must be a number or a list of numbers, one "
                                   f"per channel, got {show(values)}", example)
    if not all(x > 0 for x in std):
        raise ConfigError(key, f"every std must be > 0, got {show(list(std))}", example)
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise ConfigError(key, f"{len(mean)} means but {len(std)} stds", example)
    return [[float(x) for x in mean], [float(x) for x in std]]


def check_of(f) -> Callable[[str, Any], Any]:
    return f.metadata.get("check", lambda key, v: v)


def meta(check: Callable[[str, Any], Any], doc: str) -> dict:
    """Field metadata: the value check and the one-line documentation."""
    return {"check": check, "doc": doc}


def setting(default: Any, check: Callable[[str, Any], Any], doc: str = "") -> Any:
    """A field with an immutable default, its check and its documentation."""
    return field(default=default, metadata=meta(check, doc))


positive = number(0, low_open=True)
non_negative = number(0)
fraction = number(0, 1, high_open=True)
positive_int = number(1, integer=True)
non_negative_int = number(0, integer=True)


# ---------------------------------------------------------------- sections

@dataclass
class Section:
    """A typed section: ``TYPES[type]`` names the keys that type accepts besides "type"."""

    TYPES: ClassVar[dict[str, tuple[str, ...]]] = {}
    type: str = ""

    @classmethod
    def from_value(cls, key: str, value: Any) -> Section:
        if isinstance(value, Section):
            value = value.to_dict()
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict) or "type" not in value:
            example = next(iter(cls.TYPES))
            raise ConfigError(key, f"expected a name or a call, got {show(value)}",
                              f"e.g. {key} = {example}; the choices: {', '.join(cls.TYPES)}")
        kind = value["type"]
        if kind not in cls.TYPES:
            raise ConfigError(f"{key}", f"unknown {key} '{kind}'", did_you_mean(kind, cls.TYPES))
        allowed = cls.TYPES[kind]
        by_name = {f.name: f for f in fields(cls)}
        values = {"type": kind}
        for k, v in value.items():
            if k == "type":
                continue
            if k not in allowed:
                hint = did_you_mean(k, allowed) if allowed else f"'{kind}' takes no arguments"
                raise ConfigError(f"{key}.{k}", f"'{kind}' has no setting '{k}'", hint)
            values[k] = check_of(by_name[k])(f"{key}.{k}", v)
        return cls(**values).validated(key)

    def validated(self, key: str) -> Section:
        return self

    def to_dict(self) -> dict:
        """The lowered form: "type" plus the keys this type accepts."""
        d = asdict(self)
        return {"type": self.type, **{k: d[k] for k in self.TYPES[self.type]}}


@dataclass
class LossConfig(Section):
    TYPES: ClassVar = {"softmax": (), "svm": ("delta", "squared")}
    type: str = "softmax"
    delta: float = setting(1.0, positive, "SVM margin Δ")
    squared: bool = setting(False, boolean, "squared hinge (L2-SVM)")


@dataclass
class OptimizerConfig(Section):
    TYPES: ClassVar = {
        "sgd": ("lr", "momentum", "nesterov"),
        "momentum": ("lr", "momentum"),
        "nesterov": ("lr", "momentum"),
        "adagrad": ("lr", "eps"),
        "rmsprop": ("lr", "decay_rate", "eps"),
        "adam": ("lr", "beta1", "beta2", "eps"),
        "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay"),
    }
    type: str = "adam"
    lr: float = setting(1e-3, positive, "base learning rate")
    momentum: float = setting(0.9, fraction, "momentum μ (sgd with momentum > 0, nesterov)")
    nesterov: bool = setting(False, boolean, "sgd only: Nesterov momentum")
    beta1: float = setting(0.9, fraction, "Adam first-moment decay")
    beta2: float = setting(0.999, fraction, "Adam second-moment decay")
    eps: float = setting(1e-8, positive, "added to the denominator sqrt(cache) + eps")
    decay_rate: float = setting(0.99, fraction, "RMSProp cache decay")
    weight_decay: float = setting(1e-2, non_negative, "AdamW decoupled weight decay")

    @classmethod
    def from_value(cls, key, value):
        if isinstance(value, dict) and value.get("type") == "sgd" and "momentum" not in value:
            value = {**value, "momentum": 0.0}  # plain sgd is vanilla unless momentum is given
        return super().from_value(key, value)

    def validated(self, key):
        if self.type == "sgd" and self.nesterov and not self.momentum:
            raise ConfigError(f"{key}.nesterov", "Nesterov momentum needs momentum > 0",
                              "e.g. optimizer = sgd(lr=0.01, momentum=0.9, nesterov=true)")
        return self

    def build(self):
        """The optimizer object; "sgd" with momentum (and nesterov) becomes that optimizer."""
        from netspec.train import optim

        kind = self.type
        if kind == "sgd" and self.momentum:
            kind = "nesterov" if self.nesterov else "momentum"
        hyper = {
            "sgd": {}, "momentum": {"mu": self.momentum}, "nesterov": {"mu": self.momentum},
            "adagrad": {"eps": self.eps},
            "rmsprop": {"decay_rate": self.decay_rate, "eps": self.eps},
            "adam": {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps},
            "adamw": {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                      "weight_decay": self.weight_decay},
        }[kind]
        return optim.make_optimizer(kind, lr=self.lr, **hyper)


@dataclass
class ScheduleConfig(Section):
    COMMON: ClassVar = ("per", "warmup", "warmup_start")
    TYPES: ClassVar = {
        "constant": COMMON,
        "step": COMMON + ("milestones", "every", "gamma"),
        "cosine": COMMON + ("min_lr",),
        "linear": COMMON,
    }
    type: str = "constant"
    per: str = setting("epoch", one_of("epoch", "iteration"), "unit of t, T, milestones, warmup")
    warmup: int = setting(0, non_negative_int, "linear warmup length W")
    warmup_start: float = setting(0.1, fraction, "lr at t = 0 of the warmup, as a fraction of lr")
    milestones: list = field(default_factory=list,
                             metadata=meta(int_list, "step: decay by gamma at each of these t"))
    every: int = setting(0, non_negative_int, "step: decay by gamma every k steps")
    gamma: float = setting(0.1, positive, "step: decay factor")
    min_lr: float = setting(0.0, non_negative, "cosine: floor a_min")

    def validated(self, key):
        if self.type == "step" and not self.milestones and not self.every:
            raise ConfigError(f"{key}", "step decay needs milestones=[...] or every=k",
                              "e.g. schedule = step(milestones=[5, 8], gamma=0.1)")
        return self

    def build(self, base_lr: float, epochs: int, iters_per_epoch: int):
        from netspec.train.schedules import Schedule

        total = epochs if self.per == "epoch" else epochs * iters_per_epoch
        return Schedule(self.type, base_lr, total, self.per, self.warmup, self.warmup_start,
                        tuple(self.milestones), self.every, self.gamma, self.min_lr)


@dataclass
class DataConfig(Section):
    SPLITS: ClassVar = ("val", "normalize", "classes", "limit", "split_seed")
    TYPES: ClassVar = {
        "digits": SPLITS + ("test",),
        "cifar10": ("path",) + SPLITS,
        "mnist": ("path",) + SPLITS,
        "npz": ("path", "test") + SPLITS,
        "imagefolder": ("path", "test") + SPLITS,  # netspec.train.imagefolder
        "text": ("path", "val", "test", "context", "limit", "offset"),
        # generated in the process (netspec.train.tasks): no path
        "copy": ("length", "examples", "val", "test", "limit", "split_seed"),
        "sort": ("length", "examples", "val", "test", "limit", "split_seed"),
    }
    type: str = "digits"
    path: str | None = setting(None, optional(text), "file or directory of the data")
    val: float = setting(0.1, fraction, "fraction of the training split held out for validation")
    test: float = setting(0.2, fraction, "fraction held out for testing when the format has no "
                                         "test split")
    normalize: bool = setting(True, boolean, "subtract the per-channel mean, divide by the std")
    classes: list | None = field(
        default=None, metadata=meta(optional(int_list), "keep these labels, renumbered 0..k-1"))
    limit: int | None = setting(None, optional(positive_int), "use at most this many training "
                                                             "examples")
    split_seed: int = setting(0, non_negative_int, "seed of the train/val/test split")
    context: int | None = setting(None, optional(positive_int), "text: characters per example "
                                  "(default: the spec's input length)")
    offset: str = setting("random", one_of("random", "fixed"), "text: each epoch's training "
                          "windows start at a seeded random offset (random) or at 0 (fixed)")
    length: int | None = setting(None, optional(positive_int), "copy/sort: digits per sequence "
                                 "(default: half the spec's input length)")
    examples: int = setting(20_000, positive_int, "copy/sort: training sequences (val and test "
                                                  "are fractions of it)")

    @classmethod
    def from_value(cls, key, value):
        if isinstance(value, str) and value not in cls.TYPES:
            value = {"type": infer_data_type(key, value), "path": value}
        return super().from_value(key, value)

    def validated(self, key):
        if self.type not in ("digits", "copy", "sort") and not self.path:
            raise ConfigError(f"{key}.path", f"data type '{self.type}' needs a path",
                              f"e.g. data = {self.type}(path=\"...\")")
        return self


def infer_data_type(key: str, path: str) -> str:
    import os

    from netspec.train.data import DataError, infer_format

    if not os.path.exists(path):
        close = difflib.get_close_matches(path, list(FORMATS), n=1)
        raise ConfigError(key, f"no such file or directory: {path}",
                          f"did you mean '{close[0]}'?" if close else
                          f"a data path, or one of the data types: {', '.join(FORMATS)}")
    try:
        return infer_format(path)
    except DataError as e:
        raise ConfigError(key, e.message, f"known data types: {', '.join(FORMATS)}") from None


@dataclass
class AugmentConfig(Section):
    TYPES: ClassVar = {"none": (), "crop": ("pad",), "flip": (), "crop_flip": ("pad",)}
    type: str = "none"
    pad: int = setting(2, non_negative_int, "zero padding before the random crop")

    def build(self):
        from netspec.train.augment import Augment

        return Augment(self.type, self.pad)


# What picks the best epoch (best.npz) and what early stopping watches: higher accuracy
# (ties broken by the lower loss) or lower loss.
MONITORS = ("val_acc", "val_loss", "val_top_k")

SECTIONS: dict[str, type[Section]] = {
    "loss": LossConfig, "optimizer": OptimizerConfig, "schedule": ScheduleConfig,
    "data": DataConfig, "augment": AugmentConfig,
}


# ---------------------------------------------------------------- the whole section

@dataclass
class TrainConfig:
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = setting(10, positive_int, "passes over the training split")
    batch: int = setting(64, positive_int, "mini-batch size")
    eval_batch: int = setting(256, positive_int, "batch size for validation and test")
    l1: float = setting(0.0, non_negative, "L1 penalty strength λ1 (λ1 Σ|w|)")
    l2: float = setting(0.0, non_negative, "L2 penalty strength λ (½ λ Σ w²)")
    max_norm: float | None = setting(None, optional(positive), "max-norm c: ||w_row||₂ <= c")
    clip: float | None = setting(None, optional(positive), "clip the gradients' global L2 norm "
                                 "to this (torch's clip_grad_norm_)")
    regularize: str = setting("weights", one_of("weights", "all"),
                              "which parameters penalties and max-norm apply to")
    freeze: list = field(default_factory=list, metadata=meta(
        name_list, "layer names or globs whose parameters stay fixed"))
    init_from: str | None = setting(None, optional(text), "checkpoint to load matching weights "
                                                         "from before training")
    reinit: list = field(default_factory=list, metadata=meta(
        name_list, "layers re-initialized (the head with the data's class count) after init_from"))
    seed: int = setting(0, non_negative_int, "seed of init, shuffling, augmentation, dropout")
    normalize: list | None = field(default=None, metadata=meta(
        fixed_normalization, "fixed per-channel [mean, std] (or imagenet) instead of the "
        "training split's statistics"))
    top_k: int | None = setting(None, optional(number(2, integer=True)),
                                "also record top-k accuracy (validation, eval, test) for this k")
    patience: int | None = setting(None, optional(positive_int),
                                   "early stopping: stop after this many epochs without a new "
                                   "best `monitor`")
    monitor: str = setting("val_acc", one_of(*MONITORS), "the metric that picks best.npz and "
                           "that patience watches (the training one without a validation split)")
    min_delta: float = setting(0.0, number(0), "early stopping: a change of `monitor` no larger "
                               "than this is no improvement (patience keeps counting)")

    @classmethod
    def from_spec(cls, d: dict | None) -> TrainConfig:
        """Build from the lowered ``train { ... }`` section; unknown or bad keys raise."""
        d = dict(d or {})
        by_name = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in d.items():
            if key not in by_name:
                raise ConfigError(key, f"unknown training setting '{key}'",
                                  did_you_mean(key, by_name))
            if key in SECTIONS:
                values[key] = SECTIONS[key].from_value(key, value)
            else:
                values[key] = check_of(by_name[key])(key, value)
        cfg = cls(**values)
        if cfg.monitor == "val_top_k" and cfg.top_k is None:
            raise ConfigError("monitor", "'val_top_k' needs top_k", "e.g. top_k = 5")
        return cfg

    def to_dict(self) -> dict:
        """The lowered form again: ``from_spec(cfg.to_dict()) == cfg``; JSON-serializable."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Section) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def check_train_section(net) -> None:
    """Validate a spec's ``train { }`` section as training will, when the spec is loaded
    (check, compile, summary): a bad setting is a located error naming it. Only a data path's
    existence waits for training, since a spec may be checked where its data is not."""
    from netspec.diagnostics import Diagnostic, NetspecError

    section = dict(net.train)
    if isinstance(section.get("data"), str) and section["data"] not in DataConfig.TYPES:
        del section["data"]
    try:
        TrainConfig.from_spec(section)
    except ConfigError as exc:
        span = net.train_spans.get(exc.key.split(".")[0])
        raise NetspecError(Diagnostic("error", f"train.{exc.key}: {exc.message}", span,
                                      exc.hint)) from None


# ---------------------------------------------------------------- CLI overrides

# Short CLI names for nested settings; any dotted path ("optimizer.beta1") works too.
ALIASES = {
    "lr": "optimizer.lr", "momentum": "optimizer.momentum", "optimizer": "optimizer.type",
    "schedule": "schedule.type", "warmup": "schedule.warmup", "loss": "loss.type",
    "augment": "augment.type", "val": "data.val", "limit": "data.limit",
    "classes": "data.classes", "weight_decay": "optimizer.weight_decay",
}


def apply_overrides(cfg: TrainConfig, cli: dict[str, Any]) -> TrainConfig:
    """A new config with CLI flags applied; None values (flags not given) are skipped.

    Keys are top-level settings ("epochs"), dotted paths ("optimizer.lr") or ALIASES ("lr").
    "data" takes a format name or a path. String values are parsed as JSON when they can be
    ("0.01", "true", "[1, 2]"). Changing a section's type drops settings the new type lacks.
    """
    d = cfg.to_dict()
    for key, value in cli.items():
        if value is None:
            continue
        path = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        set_path(d, path, parse_cli_value(value))
    return TrainConfig.from_spec(d)


def set_path(d: dict, path: str, value: Any) -> None:
    head, _, rest = path.partition(".")
    if head in SECTIONS and not rest:
        d[head] = value  # a whole section: "adam", {"type": ...} or, for data, a path
        return
    if head in SECTIONS:
        section = SECTIONS[head]
        if not isinstance(d[head], dict):  # set earlier as a name or path
            d[head] = section.from_value(head, d[head]).to_dict()
        if rest == "type":
            kept = {k: v for k, v in d[head].items() if k in section.TYPES.get(value, ())}
            d[head] = {**kept, "type": value}
        else:
            d[head] = {**d[head], rest: value}
        return
    if rest:
        raise ConfigError(path, f"'{head}' has no settings", did_you_mean(head, SECTIONS))
    d[head] = value


def parse_cli_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def field_docs() -> dict[str, str]:
    """key -> one-line description, for documentation and ``--help``."""
    docs = {f.name: f.metadata.get("doc", "") for f in fields(TrainConfig) if f.metadata}
    for name, section in SECTIONS.items():
        for f in fields(section):
            if f.metadata.get("doc"):
                docs[f"{name}.{f.name}"] = f.metadata["doc"]
    return docs

