"""TrainConfig from a lowered train { ... } section, CLI overrides, and the errors users see."""
import json

import pytest

from netspec.train.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    field_docs,
)
from netspec.train.optim import SGD, Adam, Momentum, Nesterov, RMSProp

EXAMPLE = {
    "loss": {"type": "softmax"}, "optimizer": {"type": "adam", "lr": 0.001},
    "schedule": {"type": "cosine", "warmup": 2}, "epochs": 10, "batch": 64, "l2": 1e-4,
    "max_norm": 3.0, "freeze": ["conv1", "layer1.*"], "data": {"type": "digits", "val": 0.1},
    "augment": {"type": "crop_flip", "pad": 2}, "seed": 0,
}


def test_the_documented_example_parses():
    cfg = TrainConfig.from_spec(EXAMPLE)
    assert cfg.optimizer.type == "adam" and cfg.optimizer.lr == 0.001
    assert cfg.schedule.type == "cosine" and cfg.schedule.warmup == 2
    assert (cfg.epochs, cfg.batch, cfg.l2, cfg.max_norm) == (10, 64, 1e-4, 3.0)
    assert cfg.freeze == ["conv1", "layer1.*"] and cfg.augment.pad == 2
    assert isinstance(cfg.optimizer.build(), Adam)


def test_empty_section_gives_the_defaults():
    cfg = TrainConfig.from_spec({})
    assert cfg == TrainConfig() and cfg.data.type == "digits" and cfg.loss.type == "softmax"


def test_round_trips_through_its_lowered_json_form():
    cfg = TrainConfig.from_spec(EXAMPLE)
    assert TrainConfig.from_spec(json.loads(cfg.to_json())) == cfg


def test_bare_names_are_accepted_for_sections_and_freeze():
    cfg = TrainConfig.from_spec({"optimizer": "rmsprop", "loss": {"type": "svm", "delta": 2.0},
                                 "freeze": {"type": "conv1"}, "reinit": [{"type": "fc"}]})
    assert isinstance(cfg.optimizer.build(), RMSProp)
    assert cfg.loss.delta == 2.0 and cfg.freeze == ["conv1"] and cfg.reinit == ["fc"]


@pytest.mark.parametrize("spec,cls", [
    ({"type": "sgd", "lr": 0.1}, SGD),
    ({"type": "sgd", "lr": 0.1, "momentum": 0.9}, Momentum),
    ({"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, Nesterov),
    ({"type": "nesterov", "momentum": 0.5}, Nesterov),
])
def test_sgd_momentum_and_nesterov_select_the_update(spec, cls):
    opt = TrainConfig.from_spec({"optimizer": spec}).optimizer.build()
    assert type(opt) is cls
    if "momentum" in spec:
        assert opt.mu == spec["momentum"]


@pytest.mark.parametrize("spec,key,hint", [
    ({"optimiser": "adam"}, "optimiser", "did you mean 'optimizer'?"),
    ({"optimizer": "adma"}, "optimizer", "did you mean 'adam'?"),
    ({"optimizer": {"type": "adam", "betas": [0.9, 0.99]}}, "optimizer.betas", "beta"),
    ({"optimizer": {"type": "sgd", "beta1": 0.9}}, "optimizer.beta1", None),
    ({"schedule": {"type": "cosine", "milestones": [3]}}, "schedule.milestones", None),
    ({"loss": "hinge"}, "loss", None),
    ({"augment": {"type": "crop", "padding": 4}}, "augment.padding", "did you mean 'pad'?"),
])
def test_unknown_keys_and_types_raise_with_a_hint(spec, key, hint):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_spec(spec)
    assert err.value.key == key
    if hint:
        assert hint in err.value.hint


@pytest.mark.parametrize("spec,key", [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"batch": "64"}, "batch"),
    ({"l2": -1e-4}, "l2"),
    ({"optimizer": {"type": "adam", "lr": 0}}, "optimizer.lr"),
    ({"optimizer": {"type": "adam", "beta1": 1.0}}, "optimizer.beta1"),
    ({"data": {"type": "digits", "val": 1.5}}, "data.val"),
    ({"schedule": {"type": "step"}}, "schedule"),
    ({"schedule": {"type": "cosine", "per": "batch"}}, "schedule.per"),
    ({"freeze": [3]}, "freeze"),
    ({"data": {"type": "npz"}}, "data.path"),
    ({"optimizer": {"type": "sgd", "nesterov": True}}, "optimizer.nesterov"),
    ({"regularize": "everything"}, "regularize"),
    ({"max_norm": True}, "max_norm"),
])
def test_bad_values_raise_naming_the_key(spec, key):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_spec(spec)
    assert err.value.key == key
    assert str(err.value).startswith(f"train.{key}:")


def test_overrides_take_aliases_dotted_paths_and_strings():
    cfg = apply_overrides(TrainConfig.from_spec(EXAMPLE), {
        "lr": "0.01", "epochs": 3, "batch": None, "optimizer.beta2": 0.99, "seed": "4",
        "schedule": "linear",
    })
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.beta2 == 0.99
    assert cfg.epochs == 3 and cfg.batch == 64 and cfg.seed == 4
    assert cfg.schedule.type == "linear" and cfg.schedule.warmup == 2  # shared keys kept


def test_changing_the_optimizer_drops_settings_it_lacks():
    cfg = apply_overrides(TrainConfig.from_spec(EXAMPLE), {"optimizer": "sgd"})
    assert type(cfg.optimizer.build()) is SGD and cfg.optimizer.lr == 0.001


def test_data_override_takes_a_path_and_infers_the_format(tmp_path):
    import numpy as np
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4, int))
    cfg = apply_overrides(TrainConfig(), {"data": str(tmp_path / "d.npz"), "val": 0.2})
    assert cfg.data.type == "npz" and cfg.data.path.endswith("d.npz") and cfg.data.val == 0.2


def test_bad_override_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        apply_overrides(TrainConfig(), {"lr": "fast"})
    assert err.value.key == "optimizer.lr"
    with pytest.raises(ConfigError):
        apply_overrides(TrainConfig(), {"epochs.count": 3})


def test_every_setting_is_documented(tmp_path):
    from pathlib import Path
    docs = field_docs()
    assert all(docs.values())
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    for key in docs:
        assert f"`{key.split('.')[-1]}`" in text, key


@pytest.mark.parametrize("section, value", [
    ("optimizer", {"type": "sgd", "nesterov": True}),
    ("schedule", "step"),
    ("data", {"type": "mnist"}),
])
def test_hints_show_valid_spec_syntax(section, value):
    import netspec

    with pytest.raises(ConfigError) as err:
        TrainConfig.from_spec({section: value})
    example = err.value.hint.split("e.g. ", 1)[1]
    net = netspec.parse("network n {\n input x: [4]\n output x -> linear(2)\n"
                        f" train {{ {example} }}\n}}", "hint.net")
    TrainConfig.from_spec(net.train)
