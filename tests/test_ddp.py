"""`netspec train --backend torch --nproc N`: DistributedDataParallel workers on gloo (CPU).

Each test launches real worker processes through torch.distributed.run, as a user would.
The reference for 2 workers is 1 process with the same global batch: DDP averages the
workers' gradients of their halves of each batch, which is the batch's gradient, so the
weights after an epoch agree to float32 rounding. The spec has no batch norm (DDP normalizes
each worker's half with its own statistics) and no dropout (each worker draws its own masks).
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("needs torch.distributed (gloo)", allow_module_level=True)

from netspec.cli import main
from netspec.train.checkpoint import load_checkpoint
from netspec.train.metrics import read_metrics

SPEC = """
network ddp_cnn(num_classes = 10) {
    input x: [1, 8, 8]
    output x -> conv1: conv(8, k=3, p=1) -> relu -> maxpool(2) -> flatten
             -> fc: linear(num_classes)
    train {
        optimizer = sgd(lr = 0.05, momentum = 0.9)
        schedule = step(milestones = [12], per = "iteration", gamma = 0.5)
        batch = 64
        l2 = 0.001
        augment = crop_flip(pad = 1)
        data = digits(limit = 1280)
    }
}
"""


def netspec_train(*args: str) -> int:
    """`netspec train ... --backend torch` in this process (with --nproc N, this process is
    the launcher and the N workers are new processes)."""
    return main(["train", *args, "--backend", "torch", "--no-progress", "--threads", "1"])


def weights(run: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(run / "last.npz").model_state()


def assert_close(a: dict, b: dict, atol: float = 2e-5) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        np.testing.assert_allclose(value, b[name], rtol=1e-4, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "ddp_cnn.net"
    path.write_text(SPEC)
    return path


def start(spec: Path, out: Path, epochs: str = "400") -> subprocess.Popen:
    """A long 2-worker run in its own process group (as a terminal would run it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "netspec", "train", str(spec), "--backend", "torch", "--nproc",
         "2", "--epochs", epochs, "--threads", "1", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_checkpoint(proc: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)


def workers_of(launcher: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes (their RANK environment variable)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [e for e in env if e.startswith(b"RANK=")]
        if ppid == launcher and rank:
            out[int(rank[0][5:])] = int(entry.name)
    return out


def test_ctrl_c_stops_every_worker_and_the_run_resumes_exactly_with_one_process(spec,
                                                                                  tmp_path):
    out = tmp_path / "run"
    proc = start(spec, out)
    wait_for_checkpoint(proc, out / "last.npz")
    os.killpg(proc.pid, signal.SIGINT)  # the terminal sends Ctrl-C to the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "is intact" in err and "Traceback" not in err, err
    ckpt = load_checkpoint(out / "last.npz")
    # mid-epoch: saved on the spot; between epochs: the epoch's own checkpoint
    assert ckpt.state["status"] in ("interrupted", "running") and ckpt.iteration >= 20
    # resume with 1 process (2 before) to the end of the epoch it stopped in: the same
    # weights as an uninterrupted 1-process run of that many epochs
    epochs = str(ckpt.epoch + 1)
    assert netspec_train(str(spec), "--resume", "--epochs", epochs, "-o", str(out)) == 0
    assert load_checkpoint(out / "last.npz").state["status"] == "completed"
    assert netspec_train(str(spec), "--epochs", epochs, "-o", str(tmp_path / "whole")) == 0
    assert_close(weights(out), weights(tmp_path / "whole"))


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_worker_ends_the_run_with_the_last_checkpoint_intact(spec, tmp_path):
    out = tmp_path / "run"
    proc = start(spec, out)
    wait_for_checkpoint(proc, out / "last.npz")
    ranks = workers_of(proc.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "worker 1 was killed by SIGKILL" in err and "is intact" in err, err
    assert "Traceback" not in err.split("worker 1 was killed")[-1]
    ckpt = load_checkpoint(out / "last.npz")  # loads: complete, never half-written
    assert ckpt.epoch >= 1 and ckpt.state["batch_index"] == 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL)")
def test_two_nccl_workers_on_gpus_match_one_gpu(spec, tmp_path):
    assert netspec_train(str(spec), "--epochs", "1", "--device", "cuda", "-o",
                         str(tmp_path / "one")) == 0
    assert netspec_train(str(spec), "--epochs", "1", "--device", "cuda", "--nproc", "2", "-o",
                         str(tmp_path / "two")) == 0
    assert_close(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=1e-4)


def documented_two_node_commands() -> list[list[str]]:
    """The two `torchrun --nnodes 2` lines of docs/backends.md, split into words."""
    import shlex

    doc = (Path(__file__).resolve().parents[1] / "docs" / "backends.md").read_text()
    lines = [line for line in doc.splitlines() if line.startswith("torchrun --nnodes 2")]
    assert len(lines) == 2, "docs/backends.md should show the command of each node"
    return [shlex.split(line) for line in lines]


def test_two_gloo_workers_from_the_documented_torchrun_commands_match_one_process(
        spec, tmp_path, capfd):
    """docs/backends.md's two-node commands, both nodes on this machine (master 127.0.0.1,
    one CPU worker per node, this file's small run after `-m netspec train`): 2 workers with
    the global batch of 64 against 1 process with the same batch."""
    import socket

    assert netspec_train(str(spec), "--epochs", "1", "-o", str(tmp_path / "one")) == 0
    capfd.readouterr()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = []
    for words in documented_two_node_commands():
        launcher = words[1:words.index("-m")]
        for flag, value in (("--nproc-per-node", "1"), ("--master-addr", "127.0.0.1"),
                            ("--master-port", port)):
            launcher[launcher.index(flag) + 1] = value
        assert words[words.index("-m"):words.index("-m") + 3] == ["-m", "netspec", "train"]
        train_args = [str(spec), "--backend", "torch", "--epochs", "1", "--no-progress",
                      "--threads", "1", "-o", str(tmp_path / "two")]
        node = len(procs)
        # files, not pipes: a launcher blocked on a full pipe would hold the other node
        with open(tmp_path / f"node{node}.out", "w") as out, \
                open(tmp_path / f"node{node}.err", "w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "netspec",
                 "train", *train_args], stdout=out, stderr=err, text=True))
    try:
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc in procs:  # never leave a launcher behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = [((tmp_path / f"node{i}.out").read_text(), (tmp_path / f"node{i}.err").read_text())
               for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], results
    out, err = results[0]  # node 0 holds rank 0, which alone reports
    assert "2 workers" in err and out.count("test accuracy") == 1
    assert "test accuracy" not in results[1][0]
    assert_close(weights(tmp_path / "one"), weights(tmp_path / "two"))
    a = read_metrics(tmp_path / "one" / "metrics.jsonl")[0]
    b = read_metrics(tmp_path / "two" / "metrics.jsonl")[0]
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
    assert a.train_acc == b.train_acc and a.val_acc == b.val_acc


def test_the_launcher_gives_back_the_callers_signal_handlers(monkeypatch, tmp_path):
    # torch's elastic launcher installs its _terminate_process_handler for SIGINT/SIGTERM/...
    # in the launching process and leaves it there; netspec.train's launch restores the
    # caller's (a test suite's or a notebook's Ctrl-C handling after `--nproc N`).
    from torch.distributed.elastic.multiprocessing import api

    from netspec.train import distributed

    def like_torch(job):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, api._terminate_process_handler)
        return 0

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(distributed, "_launch", like_torch)
    job = distributed.Launch(2, ["train"], tmp_path, 1)
    assert distributed.launch(job) == 0
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_early_stopping_ends_every_worker_after_the_same_epoch(spec, tmp_path):
    """Rank 0 alone validates; its decision reaches the other worker in the same all-reduce
    as Ctrl-C, so both leave after the same epoch (a worker left behind would hang) and the
    launcher exits 0."""
    out = tmp_path / "early"
    assert netspec_train(str(spec), "-o", str(out), "--nproc", "2", "--epochs", "30",
                         "--limit", "256", "--lr", "0.3", "--patience", "1",
                         "--monitor", "val_loss") == 0
    losses = [r.val_loss for r in read_metrics(out / "metrics.jsonl")]
    assert len(losses) < 30
    assert losses[-1] >= min(losses[:-1])
    assert all(a > b for a, b in itertools.pairwise(losses[:-1]))
    assert load_checkpoint(out / "last.npz").state["status"] == "early_stopped"


@pytest.mark.parametrize("worker", [False, True])
def test_a_torchrun_worker_exits_with_its_code_and_output_but_without_finalization(
        worker, tmp_path):
    """A worker (RANK and WORLD_SIZE set, as torchrun sets them) leaves through os._exit
    once its command returns: the exit code and everything printed survive, and the
    interpreter's finalization (where gloo's threads can abort a finished run) is skipped,
    seen by an atexit handler that runs only in the plain process."""
    bad = tmp_path / "bad.net"
    bad.write_text("network n {\n    input x: [4]\n    output x -> linar(2)\n}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    if worker:
        env.update(RANK="0", WORLD_SIZE="1")
    script = ("import atexit, runpy, sys; atexit.register(lambda: print('finalized'));"
              f"sys.argv = ['netspec', 'check', {str(bad)!r}];"
              "runpy.run_module('netspec', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 1
    assert "linar" in run.stderr and "bad.net:3" in run.stderr
    assert ("finalized" in run.stdout) is not worker
