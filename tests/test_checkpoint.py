"""Checkpoints: exact round trip, atomic replacement, clear errors on damaged files."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from netspec.train import checkpoint as ckpt_mod
from netspec.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_matching,
    load_weights,
    save_checkpoint,
)


def sample_checkpoint(value: float = 1.0) -> Checkpoint:
    rng = np.random.default_rng(7)
    rng.standard_normal(3)
    return Checkpoint(
        params={"conv1.weight": np.full((4, 1, 3, 3), value, np.float32),
                "fc.bias": np.arange(3, dtype=np.float32)},
        buffers={"bn1.running_mean": np.ones(4, np.float32)},
        optimizer={"t": 12, "lr": 0.0123, "m/fc.bias": np.ones(3, np.float32)},
        extra={"data.mean": np.array([0.5], np.float32)},
        config={"epochs": 3, "optimizer": {"type": "adam", "lr": 0.0123}},
        state={"epoch": 2, "iteration": 40, "best_metric": 0.875,
               "model_rng": rng.bit_generator.state},
    )


def test_round_trip_is_exact(tmp_path):
    original = sample_checkpoint()
    save_checkpoint(tmp_path / "last.npz", original)
    loaded = load_checkpoint(tmp_path / "last.npz")
    for section in ("params", "buffers", "extra"):
        got, want = getattr(loaded, section), getattr(original, section)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].dtype == want[k].dtype
            np.testing.assert_array_equal(got[k], want[k])
    assert int(loaded.optimizer["t"]) == 12 and float(loaded.optimizer["lr"]) == 0.0123
    assert loaded.config == original.config
    assert loaded.state == original.state  # includes the 128-bit PCG64 state via JSON
    assert (loaded.epoch, loaded.iteration, loaded.best_metric) == (2, 40, 0.875)


def test_model_rng_state_restores_the_same_stream(tmp_path):
    rng = np.random.default_rng(3)
    rng.random(5)
    ck = sample_checkpoint()
    ck.state["model_rng"] = rng.bit_generator.state
    save_checkpoint(tmp_path / "c.npz", ck)
    restored = np.random.default_rng()
    restored.bit_generator.state = load_checkpoint(tmp_path / "c.npz").state["model_rng"]
    np.testing.assert_array_equal(restored.random(4), rng.random(4))


def test_checkpoint_holds_no_pickles(tmp_path):
    save_checkpoint(tmp_path / "c.npz", sample_checkpoint())
    with np.load(tmp_path / "c.npz", allow_pickle=False) as f:
        assert {k.split("/")[0] for k in f.files} >= {"format_version", "config", "state", "param"}
        for k in f.files:
            assert f[k].dtype != object


def test_failure_during_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.npz"
    save_checkpoint(target, sample_checkpoint(1.0))

    def savez_that_dies_halfway(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.np, "savez", savez_that_dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, sample_checkpoint(2.0))
    monkeypatch.undo()
    assert load_checkpoint(target).params["conv1.weight"][0, 0, 0, 0] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]  # no temp file left behind


def test_killed_during_saves_leaves_a_readable_checkpoint(tmp_path):
    target = tmp_path / "last.npz"
    save_checkpoint(target, sample_checkpoint(0.0))
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from netspec.train.checkpoint import Checkpoint, save_checkpoint
        big = np.zeros((2_000_000,), np.float32)
        i = 0
        while True:
            i += 1
            big[:] = i
            save_checkpoint({str(target)!r}, Checkpoint(params={{"w": big}}, state={{"i": i}}))
            if i == 2:
                print("saving", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"saving"
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    loaded = load_checkpoint(target)
    assert loaded.state["i"] >= 2
    assert np.all(loaded.params["w"] == loaded.state["i"])  # one whole save, not a mix


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "npy", "object_array"])
def test_damaged_file_raises_checkpoint_error_naming_it(tmp_path, damage):
    path = tmp_path / "bad.npz"
    save_checkpoint(path, sample_checkpoint())
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a zip" * 50)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    else:
        np.savez(path, format_version=np.asarray(1), evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_file_and_foreign_npz_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope.npz")
    np.savez(tmp_path / "foreign.npz", w=np.zeros(2))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(tmp_path / "foreign.npz")


class StateModel:
    """Just enough of the Model interface for load_matching."""

    def __init__(self, shapes):
        self.params = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
        self.buffers = {}

    def state_dict(self):
        return {**self.params, **self.buffers}

    def load_state_dict(self, d, strict=True):
        for k, v in d.items():
            self.params[k][...] = v


def test_load_matching_reports_loaded_mismatched_and_skipped(tmp_path):
    save_checkpoint(tmp_path / "src.npz", Checkpoint(params={
        "conv1.weight": np.ones((4, 1, 3, 3), np.float32),
        "fc.weight": np.ones((10, 16), np.float32),
        "old_head.bias": np.ones(10, np.float32),
    }))
    model = StateModel({"conv1.weight": (4, 1, 3, 3), "fc.weight": (5, 16), "fc.bias": (5,)})
    report = load_matching(model, tmp_path / "src.npz")
    assert report.loaded == ["conv1.weight"]
    assert report.mismatched == [("fc.weight", (10, 16), (5, 16))]
    assert report.missing == ["fc.bias"] and report.unexpected == ["old_head.bias"]
    assert np.all(model.params["conv1.weight"] == 1) and np.all(model.params["fc.weight"] == 0)
    assert report.summary().splitlines() == [
        (f"init from {tmp_path / 'src.npz'}: loaded 1 of the model's 3 tensors; missing 1, "
         "unexpected 1, mismatched 1"),
        "  mismatched fc.weight: file [10, 16] vs model [5, 16] (kept at init)",
        "  missing fc.bias: not in the file (kept at init)",
        "  unexpected old_head.bias: not in the model (ignored)"]


def test_load_weights_needs_every_name_and_shape(tmp_path):
    save_checkpoint(tmp_path / "w.npz", Checkpoint(params={
        "fc.weight": np.full((3, 4), 2.0, np.float32), "fc.bias": np.ones(3, np.float32)}))
    model = StateModel({"fc.weight": (3, 4), "fc.bias": (3,)})
    assert load_weights(model, tmp_path / "w.npz").params.keys() == {"fc.weight", "fc.bias"}
    assert np.all(model.params["fc.weight"] == 2.0)
    wrong = StateModel({"fc.weight": (5, 4), "fc.bias": (5,), "fc2.bias": (2,)})
    with pytest.raises(CheckpointError) as err:
        load_weights(wrong, tmp_path / "w.npz")
    assert "missing fc2.bias" in str(err.value) and "checkpoint [3, 4] vs model [5, 4]" in str(
        err.value) and "w.npz" in str(err.value)
