"""Training stage: the processes of a torch run: torchrun workers and `--nproc N` launching.

`netspec train ... --backend torch --nproc N` starts N workers on this machine through
torch's elastic launcher (``torch.distributed.run``, the code behind ``torchrun``), each
running the same command; a worker sees torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), joins the process group (gloo on CPUs, NCCL on
GPUs) and trains its share of every batch under DistributedDataParallel. Started by
``torchrun`` directly (several machines), `netspec train` does the same.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from netspec.train.loop import TrainError
from netspec.train.torch_loop import Workers, import_torch


def under_torchrun() -> bool:
    """True in a process that torchrun (or `--nproc`) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if under_torchrun() else 1


def init_workers(device: str) -> tuple[Workers, str]:
    """Join the process group torchrun set up: (this worker, its device). NCCL for CUDA,
    gloo otherwise; each worker takes the GPU of its LOCAL_RANK."""
    if torchrun_world() <= 1:
        return Workers(), device
    torch = import_torch()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"--device {device}: CUDA is not available on this machine")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Workers(dist.get_rank(), dist.get_world_size(), local_rank), device


def wait_for_all() -> None:
    """A barrier across the workers (nothing in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown_workers() -> None:
    """Leave the process group (a no-op in a single process)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_worker(code: int | None) -> None:
    """End a torchrun worker once its command has returned (process group left, files
    closed): flush the standard streams and exit without the interpreter's finalization.
    gloo's C++ threads can still hold work whose tensors reference Python objects; freeing
    them while the interpreter is torn down aborts the process ("terminate called without an
    active exception", SIGABRT) after a run that succeeded (seen intermittently after early
    stopping; pytorch/pytorch#179291 describes the mechanism), and the launcher then reports
    a failed worker."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 0)


def share_path(path: Path | None) -> Path:
    """Rank 0's `path`, on every worker (`path` itself when not distributed)."""
    torch = import_torch()
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        assert path is not None
        return path
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    data = str(path).encode("utf-8") if dist.get_rank() == 0 else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, 0)
    buf = (torch.tensor(list(data), dtype=torch.uint8, device=device) if dist.get_rank() == 0
           else torch.zeros(int(size.item()), dtype=torch.uint8, device=device))
    dist.broadcast(buf, 0)
    return Path(bytes(buf.cpu().tolist()).decode("utf-8"))


def is_worker_failure(exc: BaseException) -> bool:
    """An error raised because another worker of the group went away."""
    try:
        from torch.distributed import DistError
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(exc, DistError) or (
        isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in (
            "gloo", "nccl", "connection closed", "connection reset", "broken pipe")))


@dataclass(frozen=True)
class Launch:
    """What `--nproc N` runs: N copies of this `netspec train` command on this machine."""

    nproc: int
    argv: list[str]        # the command's arguments after `netspec`
    out: Path              # the run directory (for the message after a failure)
    threads: int | None = None

    def torchrun_args(self) -> list[str]:
        """torchrun's own options; the netspec arguments follow the module name as given."""
        return ["--standalone", "--nnodes=1", f"--nproc-per-node={self.nproc}",
                "--max-restarts=0", "-m", "netspec"]


def launch(job: Launch) -> int:
    """Run the workers through torch.distributed.run; 0, 130 (interrupted) or 1 (a worker
    failed: the message says what and that the last checkpoint is intact)."""
    import_torch()
    quiet_launcher_logs()
    # The launcher installs its own SIGINT/SIGTERM/... handlers in this process and leaves
    # them; put the caller's back afterwards (an API user's or a test's Ctrl-C handling).
    handlers = {sig: signal.getsignal(sig) for sig in _LAUNCHER_SIGNALS}
    omp = os.environ.get("OMP_NUM_THREADS")
    try:
        return _launch(job)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)


# What torch.distributed.elastic's process context handles (its _terminate_process_handler).
_LAUNCHER_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP",
                                                            "SIGQUIT") if hasattr(signal, name))


def _launch(job: Launch) -> int:
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(job.threads or max(1, (cores or 1) // job.nproc)))
    args = get_args_parser().parse_args(job.torchrun_args())
    # what torch.distributed.run.run does for --standalone: a private rendezvous on localhost
    args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    config, cmd, cmd_args = config_from_args(args)
    try:  # the netspec arguments are passed through untouched (torchrun's parser never sees them)
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args, *job.argv)
    except ChildFailedError as e:
        codes = {rank: f.exitcode for rank, f in e.failures.items()}
        if all(code == 130 for code in codes.values()):
            return 130  # Ctrl-C: rank 0 saved and said so
        print(failure_message(codes, job.out), file=sys.stderr)
        return 1
    except SignalException as e:  # the launcher itself got SIGINT/SIGTERM: workers stopped
        print(f"\ninterrupted ({signal.Signals(e.sigval).name}): the workers stopped; "
              f"{checkpoint_note(job.out)}", file=sys.stderr)
        return 130
    return 0


def quiet_launcher_logs() -> None:
    """torch's launcher logs each step of a failure or Ctrl-C (each of its modules sets its
    own level); netspec says once what happened and where the checkpoint is."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def failure_message(codes: dict[int, int], out: Path) -> str:
    parts = []
    for rank, code in sorted(codes.items()):
        if code < 0:
            parts.append(f"worker {rank} was killed by {signal.Signals(-code).name}")
        else:
            parts.append(f"worker {rank} exited with status {code}")
    return f"error: training stopped: {'; '.join(parts)}; {checkpoint_note(out)}"


def checkpoint_note(out: Path) -> str:
    last = out / "last.npz"
    if not last.exists():
        return "no checkpoint was written yet"
    from netspec.train.checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(last)
    except CheckpointError as e:  # pragma: no cover - atomic writes make this unlikely
        return f"{e}"
    done = f"{ckpt.epoch} epochs and {ckpt.state.get('batch_index', 0)} batches done"
    return f"{last} is intact ({done}); continue with --resume (any --nproc)"
