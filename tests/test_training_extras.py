"""The training loop's extras: top-k accuracy (against scikit-learn and torch.topk), early
stopping (against the rule recomputed from metrics.jsonl), the curves figure, callbacks, and
TensorBoard event files (read back with TensorBoard's own EventAccumulator)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import netspec
from netspec.cli import main
from netspec.train import Callback, TensorBoard, TrainConfig, evaluate, load_dataset, train
from netspec.train.checkpoint import load_checkpoint
from netspec.train.config import ConfigError
from netspec.train.metrics import read_metrics, top_k_hits

MLP = """
network mlp8(num_classes = 10) {
    input x: [1, 8, 8]
    output x -> flatten -> fc1: linear(32) -> relu -> fc2: linear(num_classes)
}
"""


def config(**over) -> TrainConfig:
    spec = {"optimizer": {"type": "adam", "lr": 0.01}, "epochs": 3, "batch": 64, "seed": 1,
            "data": {"type": "digits", "limit": 300, "val": 0.2}}
    spec.update(over)
    return TrainConfig.from_spec(spec)


@pytest.fixture(scope="module")
def net():
    return netspec.parse(MLP, "mlp8.net")


@pytest.fixture(scope="module")
def data():
    return load_dataset(config().data)


# ---------------------------------------------------------------- top-k

@pytest.mark.parametrize("k", [2, 3, 5])
def test_top_k_hits_equal_scikit_learn_and_torch_topk(k):
    from sklearn.metrics import top_k_accuracy_score

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(k)
    scores = rng.standard_normal((500, 10)).astype(np.float32)
    y = rng.integers(0, 10, 500)
    expected = top_k_accuracy_score(y, scores, k=k, labels=np.arange(10))
    assert top_k_hits(scores, y, k) / len(y) == pytest.approx(expected)
    top = torch.topk(torch.from_numpy(scores), k, dim=1).indices.numpy()
    assert top_k_hits(scores, y, k) == (top == y[:, None]).any(1).sum()


def test_top_k_of_token_labels_averages_each_examples_tokens():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 7, 12))
    y = rng.integers(0, 12, (6, 7))
    top = torch.topk(torch.from_numpy(scores), 3, dim=-1).indices.numpy()
    per_example = (top == y[..., None]).any(-1).mean(1)
    assert top_k_hits(scores, y, 3) == pytest.approx(per_example.sum())


def test_evaluate_reports_top_k_of_the_models_scores(net, data):
    from sklearn.metrics import top_k_accuracy_score

    model = netspec.compile(net, seed=0)
    result = evaluate(model, data.x_test, data.y_test, batch=50, top_k=3)
    scores = model.forward(data.x_test)
    assert result["top_k"] == 3
    assert result["top_k_accuracy"] == pytest.approx(
        top_k_accuracy_score(data.y_test, scores, k=3, labels=np.arange(10)))
    assert "top_k" not in evaluate(model, data.x_test, data.y_test)


def test_top_k_must_be_below_the_class_count(net, data, tmp_path):
    with pytest.raises(ConfigError, match="top_k"):
        train(netspec.compile(net), config(top_k=10), data, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="top_k"):
        TrainConfig.from_spec({"top_k": 1})
    with pytest.raises(ConfigError, match="needs top_k"):
        TrainConfig.from_spec({"monitor": "val_top_k"})


# ---------------------------------------------------------------- early stopping

def stop_epoch_by_the_rule(losses: list[float], patience: int,
                           min_delta: float = 0.0) -> int | None:
    """Keras' EarlyStopping(monitor="val_loss", patience, min_delta), written out: the
    epoch (1-based) after which training stops, or None if it never does."""
    best, wait = np.inf, 0
    for epoch, loss in enumerate(losses, start=1):
        if loss < best - min_delta:
            best, wait = loss, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def test_early_stopping_stops_where_the_rule_says_and_keeps_the_best(net, data, tmp_path):
    # lr 0.2 on 240 examples: the validation loss bottoms out and climbs within a few epochs
    cfg = config(optimizer={"type": "sgd", "lr": 0.2, "momentum": 0.9}, epochs=40,
                 patience=3, monitor="val_loss")
    history = train(netspec.compile(net, seed=1), cfg, data, tmp_path, progress=False)
    assert history.status == "early_stopped"
    losses = [r.val_loss for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert len(losses) < 40 and stop_epoch_by_the_rule(losses, 3) == len(losses)
    assert history.best_epoch == int(np.argmin(losses)) + 1
    assert load_checkpoint(tmp_path / "best.npz").epoch == history.best_epoch
    assert load_checkpoint(tmp_path / "last.npz").state["status"] == "early_stopped"
    # resuming a stopped run stays stopped: no new epoch
    again = train(netspec.compile(net), cfg, data, tmp_path, resume=True, progress=False)
    assert again.status == "early_stopped" and len(again.records) == len(losses)


def test_min_delta_stops_where_keras_rule_says_and_best_stays_the_lowest(net, data, tmp_path):
    """Gains of at most min_delta do not reset patience (so the run stops sooner), while
    best.npz still holds the lowest validation loss."""
    base = {"optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9}, "epochs": 40,
            "patience": 2, "monitor": "val_loss"}
    plain = train(netspec.compile(net, seed=1), config(**base), data, tmp_path / "plain",
                  progress=False)
    history = train(netspec.compile(net, seed=1), config(**base, min_delta=0.02), data,
                    tmp_path / "delta", progress=False)
    losses = [r.val_loss for r in read_metrics(tmp_path / "delta" / "metrics.jsonl")]
    assert history.status == "early_stopped"
    assert stop_epoch_by_the_rule(losses, 2, 0.02) == len(losses)
    assert len(losses) < len(plain.records)  # the same run without min_delta goes on
    assert history.best_epoch == int(np.argmin(losses)) + 1
    assert load_checkpoint(tmp_path / "delta" / "best.npz").epoch == history.best_epoch


def test_early_stopping_from_the_cli_exits_0_and_says_why(tmp_path, capsys):
    spec = tmp_path / "mlp8.net"
    spec.write_text(MLP)
    out = tmp_path / "run"
    code = main(["train", str(spec), "-o", str(out), "--limit", "300", "--val", "0.2",
                 "--epochs", "40", "--lr", "0.2", "--optimizer", "sgd", "--momentum", "0.9",
                 "--patience", "2", "--monitor", "val_loss", "--top-k", "3",
                 "--min-delta", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "early_stopped" and results["test"]["top_k"] == 3
    assert "early stop: no better val_loss for 2 epochs" in captured.err
    assert "(early stopped)" in captured.out and "top-3" in captured.out
    records = read_metrics(out / "metrics.jsonl")
    assert all(r.top_k == 3 and 0 <= r.val_top_k_acc <= 1 for r in records)
    assert all(r.val_top_k_acc >= r.val_acc for r in records)


def test_a_callback_can_stop_the_run_after_an_epoch(net, data, tmp_path):
    class StopAfterTwo(Callback):
        def on_epoch_end(self, ctx, record):
            ctx.stop_training = record.epoch == 2

    history = train(netspec.compile(net), config(epochs=5), data, tmp_path, progress=False,
                    callbacks=[StopAfterTwo()])
    assert history.status == "early_stopped" and len(history.records) == 2


# ---------------------------------------------------------------- callbacks

class Recorder:
    """Not a Callback subclass: any object with the hooks will do."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self, ctx):
        self.calls.append(("begin", len(ctx.records)))

    def on_step_end(self, ctx, step):
        self.calls.append(("step", step))

    def on_epoch_end(self, ctx, record):
        self.calls.append(("epoch", record, ctx.best_epoch))

    def on_train_end(self, ctx, history):
        self.calls.append(("end", history))


def test_callbacks_see_every_step_and_epoch_in_order(net, data, tmp_path):
    rec = Recorder()
    cfg = config(epochs=2, batch=100)
    history = train(netspec.compile(net), cfg, data, tmp_path, progress=False, callbacks=[rec])
    kinds = [c[0] for c in rec.calls]
    per_epoch = -(-len(data.y_train) // 100)
    assert kinds == ["begin"] + (["step"] * per_epoch + ["epoch"]) * 2 + ["end"]
    steps = [c[1] for c in rec.calls if c[0] == "step"]
    assert [s.iteration for s in steps] == list(range(1, 2 * per_epoch + 1))
    assert [(s.epoch, s.batch) for s in steps[:per_epoch + 1]] == \
        [(1, b) for b in range(1, per_epoch + 1)] + [(2, 1)]
    assert sum(s.examples for s in steps) == 2 * len(data.y_train)
    assert all(s.lr == pytest.approx(0.01) and np.isfinite(s.loss) for s in steps)
    # the epoch's train loss is the example-weighted mean of its steps' losses
    first = steps[:per_epoch]
    mean = sum(s.loss * s.examples for s in first) / sum(s.examples for s in first)
    assert history.records[0].train_loss == pytest.approx(mean)
    assert [c[1] for c in rec.calls if c[0] == "epoch"] == history.records
    assert rec.calls[-1][1] is history


def test_an_object_without_hooks_is_not_a_callback(net, data, tmp_path):
    class Typo:
        def on_epoch_ends(self, ctx, record): ...

    with pytest.raises(TypeError, match="on_epoch_end"):
        train(netspec.compile(net), config(), data, tmp_path, callbacks=[Typo()])


# ---------------------------------------------------------------- TensorBoard

def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's own reader: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_the_metrics_of_the_run(net, data, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = config(epochs=2, top_k=3)
    history = train(netspec.compile(net), cfg, data, tmp_path, progress=False,
                    callbacks=[TensorBoard(tmp_path / "tb")])
    scalars = read_scalars(tmp_path / "tb")
    for tag, field in (("loss/train", "train_loss"), ("loss/validation", "val_loss"),
                       ("accuracy/train", "train_acc"), ("accuracy/validation", "val_acc"),
                       ("accuracy/validation_top_k", "val_top_k_acc"), ("lr", "lr")):
        expected = [(r.epoch, getattr(r, field)) for r in history.records]
        assert [s for s, _ in scalars[tag]] == [e for e, _ in expected], tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in expected],
                                   rtol=1e-6, err_msg=tag)  # stored as float32
    iterations = history.last.iteration
    assert [s for s, _ in scalars["step/loss"]] == list(range(1, iterations + 1))


def test_train_tensorboard_flag_writes_events_into_the_run_directory(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    spec = tmp_path / "mlp8.net"
    spec.write_text(MLP)
    out = tmp_path / "run"
    assert main(["train", str(spec), "-o", str(out), "--epochs", "2", "--limit", "200",
                 "--no-progress", "--tensorboard"]) == 0
    scalars = read_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["accuracy/validation"]] == [1, 2]
    # --overwrite clears the old events with the rest of the run
    assert main(["train", str(spec), "-o", str(out), "--epochs", "1", "--limit", "200",
                 "--no-progress", "--tensorboard", "--overwrite"]) == 0
    assert [s for s, _ in read_scalars(out / "tensorboard")["accuracy/validation"]] == [1]


def test_tensorboard_flag_without_tensorboardx_names_the_extra(tmp_path, monkeypatch, capsys):
    from netspec.train import callbacks

    monkeypatch.setattr(callbacks, "tensorboard_available", lambda: False)
    assert main(["train", "mlp", "-o", str(tmp_path / "run"), "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "--tensorboard" in err and "netspec[tensorboard]" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ImportError, match="netspec\\[tensorboard\\]"):
        TensorBoard(tmp_path / "tb")


# ---------------------------------------------------------------- the curves

def test_curves_show_loss_on_a_log_scale_accuracy_lr_and_the_best_epoch(net, data, tmp_path):
    from netspec.train.plot import curves_figure

    cfg = config(epochs=3, top_k=3, schedule={"type": "cosine"})
    history = train(netspec.compile(net), cfg, data, tmp_path, progress=False)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = curves_figure(history.records, "mlp8 on digits", history.best_epoch)
    loss_ax, acc_ax, lr_ax = fig.axes
    assert fig._suptitle.get_text() == "mlp8 on digits"
    assert loss_ax.get_yscale() == "log" and lr_ax.get_ylabel() == "learning rate"
    lr_line = next(line for line in lr_ax.get_lines() if line.get_label() == "lr")
    np.testing.assert_allclose(lr_line.get_ydata(), [r.lr for r in history.records])
    labels = {line.get_label() for line in acc_ax.get_lines()}
    assert {"train", "validation", "validation top-3",
            f"best (epoch {history.best_epoch})"} <= labels
    for ax in fig.axes:
        best = next(ln for ln in ax.get_lines() if ln.get_label().startswith("best"))
        assert list(best.get_xdata()) == [history.best_epoch] * 2


def test_without_matplotlib_a_run_says_so_in_one_line_and_writes_the_rest(tmp_path,
                                                                          monkeypatch, capsys):
    from netspec.train import plot

    monkeypatch.setattr(plot, "plot_available", lambda: False)
    assert main(["train", "mlp", "-o", str(tmp_path / "run"), "--epochs", "1", "--limit",
                 "100"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("note: no curves.png: matplotlib is not installed "
                              "(pip install 'netspec[plot]')") == 1
    assert not (tmp_path / "run" / "curves.png").exists()
    assert (tmp_path / "run" / "best.npz").exists() and "curves" not in captured.out


# ---------------------------------------------------------------- progress

def test_off_a_terminal_the_cli_writes_one_line_per_epoch_and_no_bar(tmp_path, capsys):
    """capsys' stderr is not a terminal: tqdm draws nothing, the loop logs each epoch."""
    assert main(["train", "mlp", "-o", str(tmp_path / "run"), "--epochs", "3", "--limit",
                 "100"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "ex/s" not in err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]


def test_under_term_dumb_a_forced_bar_is_plain_ascii(monkeypatch):
    import io

    from netspec.train.progress import epoch_bar, show

    class AsciiTerminal(io.StringIO):
        encoding = "ascii"

        def isatty(self):
            return True

    monkeypatch.setenv("TERM", "dumb")
    term = AsciiTerminal()
    bar = epoch_bar(100, 0, "epoch 1/1", True, stream=term)
    show(bar, 50, loss=0.5, acc=0.5, lr=0.1)
    bar.refresh()
    bar.close()
    out = term.getvalue()
    assert "50/100" in out and out.isascii()


def test_fit_takes_callbacks_and_early_stopping(data):
    rec = Recorder()
    history = netspec.fit(netspec.parse(MLP, "mlp8.net"), data.x_train, data.y_train, epochs=30, lr=0.2,
                          optimizer={"type": "sgd", "momentum": 0.9},
                          validation_data=(data.x_val, data.y_val), patience=2,
                          monitor="val_loss", top_k=3, callbacks=[rec])
    assert history.status == "early_stopped" and len(history.records) < 30
    losses = [r.val_loss for r in history.records]
    assert stop_epoch_by_the_rule(losses, 2) == len(losses)
    assert [c[1] for c in rec.calls if c[0] == "epoch"] == history.records


def test_in_a_jupyter_kernel_the_bar_is_drawn_though_stderr_is_no_terminal(monkeypatch):
    """ipykernel's streams are not terminals; tqdm alone would stay silent there."""
    import io
    import types

    from netspec.train.progress import epoch_bar, in_notebook

    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: kernel))
    assert in_notebook()
    stream = io.StringIO()
    bar = epoch_bar(10, 0, "epoch 1/1", True, stream=stream)
    assert not bar.disable
    bar.close()
    monkeypatch.setitem(sys.modules, "IPython", None)
    assert not in_notebook() and epoch_bar(10, 0, "e", True, stream=io.StringIO()).disable
