"""The training loop on a hand-written NumPy model that implements the compiled-model interface."""
import io
import json
import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from netspec.runtime.losses import softmax_loss
from netspec.train.checkpoint import load_checkpoint
from netspec.train.config import ConfigError, TrainConfig
from netspec.train.data import load_dataset
from netspec.train.loop import DivergedError, TrainError, evaluate, train
from netspec.train.metrics import read_metrics
from netspec.train.progress import epoch_bar, show
from netspec.train.regularize import Regularization, apply_max_norm, regularized_names


class TinyMLP:
    """flatten - fc1 - relu - dropout - fc2, float32, with one running-statistics buffer.

    Written the way the code generator emits models: PyTorch-style names, grads filled by
    backward, dropout drawing from ``self.rng``.
    """

    def __init__(self, d_in=64, hidden=32, classes=10, p_drop=0.2):
        self.d_in, self.hidden, self.classes, self.p_drop = d_in, hidden, classes, p_drop
        self.params, self.buffers, self.grads = {}, {}, {}
        self.frozen = set()
        self.rng = np.random.default_rng(123)
        self.init(0)

    def init(self, seed):
        rng = np.random.default_rng(seed)
        self.params = {
            "fc1.weight": (rng.standard_normal((self.hidden, self.d_in)) *
                           np.sqrt(2 / self.d_in)).astype(np.float32),
            "fc1.bias": np.zeros(self.hidden, np.float32),
            "fc2.weight": (rng.standard_normal((self.classes, self.hidden)) *
                           np.sqrt(2 / self.hidden)).astype(np.float32),
            "fc2.bias": np.zeros(self.classes, np.float32),
        }
        self.buffers = {"fc1.running_mean": np.zeros(self.hidden, np.float32)}

    def reinit(self, layer, seed, num_outputs=None):
        assert layer == "fc2"
        rng = np.random.default_rng(seed + 1)
        self.classes = num_outputs or self.classes
        self.params["fc2.weight"] = (rng.standard_normal((self.classes, self.hidden)) *
                                     np.sqrt(2 / self.hidden)).astype(np.float32)
        self.params["fc2.bias"] = np.zeros(self.classes, np.float32)

    def forward(self, x, train=False):
        p = self.params
        x = x.reshape(len(x), -1)
        h = np.maximum(x @ p["fc1.weight"].T + p["fc1.bias"], 0)
        if train:
            rm = self.buffers["fc1.running_mean"]
            rm *= 0.9
            rm += 0.1 * h.mean(axis=0)
            mask = (self.rng.random(h.shape) >= self.p_drop) / np.float32(1 - self.p_drop)
            h = h * mask.astype(np.float32)
        else:
            mask = None
        self.cache = (x, h, mask)
        return h @ p["fc2.weight"].T + p["fc2.bias"]

    def backward(self, dscores, input_grad=True):  # returns no input gradient either way
        x, h, mask = self.cache
        p = self.params
        dscores = dscores.astype(np.float32)
        self.grads["fc2.weight"] = dscores.T @ h
        self.grads["fc2.bias"] = dscores.sum(axis=0)
        dh = dscores @ p["fc2.weight"]
        if mask is not None:
            dh = dh * mask
        dh = dh * (h > 0)
        self.grads["fc1.weight"] = dh.T @ x
        self.grads["fc1.bias"] = dh.sum(axis=0)

    def state_dict(self):
        return {**self.params, **self.buffers}

    def load_state_dict(self, d, strict=True):
        own = self.state_dict()
        if strict and set(d) != set(own):
            raise KeyError(f"state mismatch: {sorted(set(d) ^ set(own))}")
        for k, v in d.items():
            target = self.params if k in self.params else self.buffers
            target[k][...] = v
        return {"loaded": sorted(d)}


class Sabotaged(TinyMLP):
    """Does something at a chosen backward call: poison a gradient, raise, or send SIGINT."""

    def __init__(self, at, action, **kw):
        super().__init__(**kw)
        self.at, self.action, self.calls = at, action, 0

    def backward(self, dscores, input_grad=True):
        self.calls += 1
        if self.calls == self.at and self.action == "raise":
            raise KeyboardInterrupt
        super().backward(dscores, input_grad)
        if self.calls == self.at and self.action == "nan":
            self.grads["fc1.weight"][0, 0] = np.nan
        if self.calls == self.at and self.action == "sigint":
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(TrainConfig().data)


def config(**over) -> TrainConfig:
    spec = {"optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
            "schedule": {"type": "cosine", "warmup": 1}, "epochs": 4, "batch": 64, "l2": 1e-4,
            "max_norm": 4.0, "seed": 3}
    spec.update(over)
    return TrainConfig.from_spec(spec)


def assert_same_state(a: TinyMLP, b: TinyMLP):
    for k in a.state_dict():
        np.testing.assert_array_equal(a.state_dict()[k], b.state_dict()[k], err_msg=k)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


def comparable(history):
    return [r.comparable() for r in history.records]


# ---------------------------------------------------------------- a whole run

def test_trains_digits_and_writes_checkpoints_metrics_and_plot(digits, tmp_path):
    model = TinyMLP()
    history = train(model, config(), digits, tmp_path, progress=False)
    assert history.status == "completed" and len(history.records) == 4
    assert history.last.val_acc > 0.9 and history.last.train_loss < history.records[0].train_loss
    for name in ("last.npz", "best.npz", "metrics.jsonl", "metrics.csv", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r.comparable() for r in read_metrics(tmp_path / "metrics.jsonl")] == comparable(history)
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 5
    ckpt = load_checkpoint(tmp_path / "last.npz")
    assert ckpt.epoch == 4 and ckpt.state["status"] == "completed"
    assert ckpt.config == config().to_dict()
    np.testing.assert_array_equal(ckpt.params["fc1.weight"], model.params["fc1.weight"])
    best = load_checkpoint(tmp_path / "best.npz")
    assert best.state["best_epoch"] == history.best_epoch
    assert history.best_metric == max(r.val_acc for r in history.records)


def test_same_seed_same_run(digits, tmp_path):
    a, b = TinyMLP(), TinyMLP()
    ha = train(a, config(epochs=2), digits, tmp_path / "a", progress=False)
    hb = train(b, config(epochs=2), digits, tmp_path / "b", progress=False)
    assert_same_state(a, b)
    assert comparable(ha) == comparable(hb)


# ---------------------------------------------------------------- resume

def test_resume_after_two_epochs_matches_four_straight(digits, tmp_path):
    cfg = config(schedule={"type": "step", "milestones": [3]})
    straight = TinyMLP()
    expected = train(straight, cfg, digits, tmp_path / "straight", progress=False)
    first = TinyMLP()
    train(first, replace(cfg, epochs=2), digits, tmp_path / "split", progress=False)
    resumed = TinyMLP(hidden=32)
    resumed.init(99)  # whatever the fresh model holds, resume overwrites it
    history = train(resumed, cfg, digits, tmp_path / "split", resume=True, progress=False)
    assert_same_state(resumed, straight)
    assert comparable(history) == comparable(expected)


@pytest.mark.parametrize("action", ["sigint", "raise"])
def test_ctrl_c_mid_epoch_saves_and_resume_is_bit_identical(digits, tmp_path, action):
    # cosine + warmup, momentum, dropout, crop augmentation, l2, max-norm: every rng and state
    cfg = config(augment={"type": "crop", "pad": 1})
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a job a shell started with `&`
    straight = TinyMLP()
    expected = train(straight, cfg, digits, tmp_path / "straight", progress=False)
    interrupted = Sabotaged(at=50, action=action)  # epoch 3 of 4 (21 batches per epoch)
    partial = train(interrupted, cfg, digits, tmp_path / "split", progress=False)
    assert partial.status == "interrupted" and len(partial.records) == 2
    saved = load_checkpoint(tmp_path / "split" / "last.npz")
    assert saved.state["status"] == "interrupted" and saved.epoch == 2
    assert saved.state["batch_index"] == (8 if action == "sigint" else 7)
    resumed = TinyMLP()
    history = train(resumed, cfg, digits, tmp_path / "split", resume=True, progress=False)
    assert history.status == "completed"
    assert_same_state(resumed, straight)
    assert comparable(history) == comparable(expected)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_resume_without_checkpoint_is_an_error(digits, tmp_path):
    with pytest.raises(TrainError, match="cannot resume"):
        train(TinyMLP(), config(), digits, tmp_path, resume=True, progress=False)


# ---------------------------------------------------------------- NaN / Inf

def test_nan_gradient_stops_naming_the_iteration_and_keeps_the_checkpoint(digits, tmp_path):
    train(TinyMLP(), config(epochs=1), digits, tmp_path, progress=False)
    before = (tmp_path / "last.npz").read_bytes()
    model = Sabotaged(at=30, action="nan")
    with pytest.raises(DivergedError) as err:
        train(model, config(epochs=3), digits, tmp_path, progress=False)
    message = str(err.value)
    assert "iteration 30" in message and "fc1.weight" in message and "NaN" in message
    assert err.value.iteration == 30 and err.value.epoch == 2
    assert (tmp_path / "last.npz").read_bytes() != before  # epoch 1 of this run was saved ...
    saved = load_checkpoint(tmp_path / "last.npz")
    assert saved.epoch == 1 and np.isfinite(saved.params["fc1.weight"]).all()  # ... not the NaN


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exploding_lr_is_caught_as_divergence(digits, tmp_path):
    cfg = config(optimizer={"type": "sgd", "lr": 1e6}, max_norm=None, schedule="constant")
    with pytest.raises(DivergedError, match="diverged.*iteration"):
        train(TinyMLP(), cfg, digits, tmp_path, progress=False)
    assert not (tmp_path / "last.npz").exists()


# ---------------------------------------------------------------- freeze, init-from, reinit

def test_frozen_layers_do_not_change(digits, tmp_path):
    model = TinyMLP()
    before = {k: v.copy() for k, v in model.params.items()}  # init(0), as train's seed=0 gives
    train(model, config(epochs=1, freeze=["fc1"], seed=0), digits, tmp_path, progress=False)
    np.testing.assert_array_equal(model.params["fc1.weight"], before["fc1.weight"])
    np.testing.assert_array_equal(model.params["fc1.bias"], before["fc1.bias"])
    assert not np.array_equal(model.params["fc2.weight"], before["fc2.weight"])
    assert model.frozen == {"fc1.weight", "fc1.bias"}


def test_freeze_glob_and_unknown_pattern(digits, tmp_path):
    model = TinyMLP()
    train(model, config(epochs=1, freeze=["fc*.bias"]), digits, tmp_path, progress=False)
    assert model.frozen == {"fc1.bias", "fc2.bias"}
    with pytest.raises(ConfigError) as err:
        train(TinyMLP(), config(freeze=["fc3"]), digits, tmp_path, progress=False)
    assert err.value.key == "freeze" and "did you mean 'fc2'" in err.value.hint


def test_fine_tune_on_a_class_subset_with_init_from_and_reinit(digits, tmp_path):
    source = TinyMLP()
    train(source, config(epochs=3), digits, tmp_path / "src", progress=False)
    subset = load_dataset(replace(TrainConfig().data, classes=[3, 5, 8]))
    model = TinyMLP()
    cfg = config(epochs=2, init_from=str(tmp_path / "src" / "last.npz"), reinit=["fc2"],
                 freeze=["fc1"])
    history = train(model, cfg, subset, tmp_path / "tune", progress=False)
    assert set(history.transfer.loaded) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                            "fc1.running_mean"}
    np.testing.assert_array_equal(model.params["fc1.weight"], source.params["fc1.weight"])
    assert model.params["fc2.weight"].shape == (3, 32)
    assert history.last.val_acc > 0.9
    longer = train(TinyMLP(), replace(cfg, epochs=3), subset, tmp_path / "tune", resume=True,
                   progress=False)  # resuming re-creates the 3-class head before loading
    assert len(longer.records) == 3 and longer.status == "completed"


def test_init_from_reports_mismatched_head(digits, tmp_path):
    train(TinyMLP(), config(epochs=1), digits, tmp_path / "src", progress=False)
    subset = load_dataset(replace(TrainConfig().data, classes=[0, 1]))
    cfg = config(epochs=1, init_from=str(tmp_path / "src" / "last.npz"))
    history = train(TinyMLP(classes=2), cfg, subset, tmp_path / "tune", progress=False)
    assert [m[0] for m in history.transfer.mismatched] == ["fc2.weight", "fc2.bias"]
    assert "fc1.weight" in history.transfer.loaded


def test_output_width_must_match_the_classes(digits, tmp_path):
    subset = load_dataset(replace(TrainConfig().data, classes=[0, 1]))
    with pytest.raises(TrainError, match="reinit = \\[fc2\\]"):
        train(TinyMLP(), config(epochs=1), subset, tmp_path, progress=False)


# ---------------------------------------------------------------- regularization

def test_penalties_select_weights_only_and_add_their_gradient():
    rng = np.random.default_rng(0)
    params = {"conv1.weight": rng.standard_normal((4, 2, 3, 3)), "conv1.bias": rng.random(4),
              "bn1.weight": rng.random(4), "fc.weight": rng.standard_normal((3, 8))}
    names = regularized_names(params)
    assert names == ["conv1.weight", "fc.weight"]
    assert len(regularized_names(params, "all")) == 4
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    value = Regularization(l1=0.01, l2=0.1).add_penalty(params, grads, names)
    w = [params[n] for n in names]
    assert value == pytest.approx(sum(0.01 * np.abs(a).sum() + 0.05 * (a * a).sum() for a in w))
    for n in names:
        np.testing.assert_allclose(grads[n], 0.01 * np.sign(params[n]) + 0.1 * params[n])
    assert not grads["conv1.bias"].any() and not grads["bn1.weight"].any()


def test_max_norm_projects_each_output_row():
    w = np.random.default_rng(0).standard_normal((6, 3, 2, 2)).astype(np.float32)
    w[0] *= 0.01  # a row already inside the ball stays as it is
    original = w.copy()
    apply_max_norm(w, 1.5)
    norms = np.linalg.norm(w.reshape(6, -1), axis=1)
    assert np.all(norms <= 1.5 + 1e-6) and w.dtype == np.float32
    np.testing.assert_array_equal(w[0], original[0])
    big = np.linalg.norm(original.reshape(6, -1), axis=1) > 1.5
    np.testing.assert_allclose(norms[big], 1.5, rtol=1e-6)
    cos = np.sum(w.reshape(6, -1) * original.reshape(6, -1), axis=1) / (
        norms * np.linalg.norm(original.reshape(6, -1), axis=1))
    np.testing.assert_allclose(cos, 1, rtol=1e-6)  # direction kept


def test_max_norm_holds_after_training(digits, tmp_path):
    model = TinyMLP()
    train(model, config(epochs=1, max_norm=0.5), digits, tmp_path, progress=False)
    for name in ("fc1.weight", "fc2.weight"):
        assert np.linalg.norm(model.params[name], axis=1).max() <= 0.5 + 1e-6


# ---------------------------------------------------------------- evaluate, progress

def test_evaluate_matches_one_big_batch(digits):
    model = TinyMLP()
    x, y = digits.x_test, digits.y_test
    result = evaluate(model, x, y, "softmax", batch=50)
    scores = model.forward(x)
    assert result["n"] == len(y)
    assert result["loss"] == pytest.approx(softmax_loss(scores, y)[0], rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == y))
    assert json.dumps(result)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_shows_loss_acc_lr_and_throughput():
    term = FakeTerminal()
    bar = epoch_bar(640, 0, "epoch 1/3", True, stream=term)
    show(bar, 320, loss=0.5, acc=0.75, lr=1e-3)
    bar.refresh()
    out = term.getvalue()
    bar.close()
    assert "epoch 1/3" in out and "320/640" in out and "loss 0.5" in out and "acc 0.75" in out
    assert "lr 1.00e-03" in out and "ex/s" in out and "\r" in out


def test_progress_bar_is_quiet_off_a_terminal_unless_forced():
    pipe = io.StringIO()
    bar = epoch_bar(640, 0, "epoch 1/3", True, stream=pipe)
    show(bar, 640, loss=0.4, acc=0.8, lr=1e-3)
    bar.close()
    assert pipe.getvalue() == ""
    assert epoch_bar(640, 0, "epoch 1/3", False, stream=pipe) is None
    bar = epoch_bar(640, 0, "epoch 1/3", "always", stream=pipe)
    show(bar, 640, loss=0.4, acc=0.8, lr=1e-3)
    bar.refresh()
    bar.close()
    assert "640/640" in pipe.getvalue()
