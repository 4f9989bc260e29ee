"""`netspec train [FILE]`: compile a spec and train it (default: digits_cnn on digits)."""
from __future__ import annotations

import shutil
import sys
from dataclasses import asdict
from fnmatch import fnmatchcase
from pathlib import Path

from netspec.commands._session import (
    add_data_arguments,
    add_input_argument,
    add_spec_arguments,
    check_data_fits,
    compile_model,
    config_from,
    load_net,
    run_threads,
    spec_input_shape,
    training_errors,
)
from netspec.commands._types import (
    fraction,
    integer,
    non_negative,
    non_negative_int,
    positive,
    positive_int,
)
from netspec.diagnostics import Diagnostic, NetspecError, UsageError, printable

HELP = "train a spec (default: the digits CNN on the bundled 8x8 digits)"

at_least_two = integer(2, "an integer >= 2")


def add_arguments(p) -> None:
    from netspec.train.config import (
        MONITORS,
        AugmentConfig,
        LossConfig,
        OptimizerConfig,
        ScheduleConfig,
    )

    add_spec_arguments(p)
    add_input_argument(p)
    add_data_arguments(p)
    p.add_argument("--epochs", type=positive_int, metavar="N",
                   help="passes over the training split (spec: epochs)")
    p.add_argument("--batch", type=positive_int, metavar="N",
                   help="mini-batch size (spec: batch)")
    p.add_argument("--lr", type=positive, help="base learning rate (spec: optimizer.lr)")
    p.add_argument("--optimizer", choices=list(OptimizerConfig.TYPES),
                   help="the update rule (spec: optimizer)")
    p.add_argument("--momentum", type=fraction, metavar="MU",
                   help="momentum in [0, 1) of sgd, momentum and nesterov")
    p.add_argument("--schedule", choices=list(ScheduleConfig.TYPES),
                   help="learning-rate schedule (spec: schedule)")
    p.add_argument("--warmup", type=non_negative_int, metavar="N",
                   help="warmup length (epochs, or iterations with per = \"iteration\")")
    p.add_argument("--loss", choices=list(LossConfig.TYPES), help="the data loss")
    p.add_argument("--l1", type=non_negative, metavar="LAMBDA", help="L1 penalty strength")
    p.add_argument("--l2", type=non_negative, metavar="LAMBDA", help="L2 penalty strength")
    p.add_argument("--max-norm", type=positive, metavar="C",
                   help="max-norm constraint on each output row of the weights")
    p.add_argument("--clip", type=positive, metavar="NORM",
                   help="clip the gradients' global L2 norm to NORM (recurrent networks)")
    p.add_argument("--augment", choices=list(AugmentConfig.TYPES),
                   help="training-time augmentation")
    p.add_argument("--freeze", action="append", metavar="GLOB",
                   help="freeze parameters of matching layers (repeatable): conv1, layer1.*")
    p.add_argument("--init-from", metavar="CKPT", help="load matching weights from a "
                   "checkpoint or a state dict (.npz of named arrays, PyTorch .pt/.pth)")
    p.add_argument("--reinit", action="append", metavar="LAYER",
                   help="re-initialize a layer after --init-from (the head gets the data's "
                        "class count)")
    p.add_argument("--seed", type=non_negative_int, metavar="N",
                   help="seed of initialization, shuffling, augmentation and dropout")
    p.add_argument("-o", "--out", metavar="DIR",
                   help="run directory (default: runs/<network>, or runs/<network>-2, -3, "
                        "... when that one holds a run already)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in DIR (without it, a DIR holding a run is refused)")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/last.npz (default DIR: the network's latest run)")
    p.add_argument("--top-k", type=at_least_two, metavar="K",
                   help="also record top-K accuracy, K >= 2 (validation, test; spec: top_k)")
    p.add_argument("--patience", type=positive_int, metavar="N",
                   help="early stopping: stop after N epochs without a better --monitor "
                        "(spec: patience)")
    p.add_argument("--min-delta", type=non_negative, metavar="X",
                   help="early stopping: a --monitor change no larger than X is no "
                        "improvement, so --patience keeps counting (default 0; spec: "
                        "min_delta)")
    p.add_argument("--monitor", choices=MONITORS,
                   help="the validation metric that picks best.npz and that --patience "
                        "watches (default val_acc; spec: monitor)")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard event files to DIR/tensorboard (needs the "
                        "tensorboard extra: pip install 'netspec[tensorboard]')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="threads (default: 1 for a network of small layers, such as the "
                        "digits CNN; every available core otherwise). Image networks split each "
                        "batch over them with one BLAS thread per GEMM; vector networks (MLPs) "
                        "give them to BLAS")
    add_backend_arguments(p)


def add_backend_arguments(p) -> None:
    """--backend torch and its settings (docs/backends.md)."""
    p.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                   help="numpy (default): the compiled NumPy model; torch: the spec compiled "
                        "to a torch.nn.Module, trained with torch (CPU or CUDA, DDP)")
    p.add_argument("--device", help="torch backend: cpu (default) or cuda (cuda:N)")
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="torch backend: N DistributedDataParallel workers on this machine, "
                        "launched through torch.distributed.run (the global batch is split "
                        "among them)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="torch backend: fp32 (default), bf16 (autocast) or fp16 (autocast + "
                        "GradScaler, CUDA only)")


def check_backend_flags(args) -> None:
    """--device/--nproc/--precision belong to the torch backend; values must make sense."""
    if args.backend != "torch":
        for flag in ("device", "nproc", "precision"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} {getattr(args, flag)}",
                                 "applies to the torch backend only",
                                 f"add --backend torch, or drop --{flag}")


def run(args) -> int:
    from netspec.train import load_dataset, train
    from netspec.train.allocator import keep_freed_memory

    check_backend_flags(args)
    check_tensorboard_flag(args)
    if args.backend == "torch":
        return run_torch(args)
    net = load_net(args)
    flags = train_flags(args)
    with training_errors(net):
        cfg = config_from(net, args, flags)
        if args.freeze:
            cfg.freeze = list(cfg.freeze) + args.freeze
        if args.reinit:
            cfg.reinit = list(cfg.reinit) + args.reinit
        if args.init_from and not Path(args.init_from).is_file():
            raise UsageError(f"--init-from {args.init_from}", "no such checkpoint file")
        data = load_dataset(cfg, spec_input_shape(net))
        check_data_fits(net, data)
        check_top_k(args, cfg, data)
        if not args.allow_large:
            from netspec.analysis.memory import require_training_memory
            require_training_memory(net, cfg.batch, cfg.optimizer.type)
        model = compile_model(net, cfg.seed, allow_large=args.allow_large)
        check_layer_flags(model, args)
        out = run_dir(args, net)
        print(f"training {net.name} ({model.num_params:,} parameters) on {data.name or 'data'}: "
              f"{len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test, "
              f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}, "
              f"{cfg.optimizer.type} lr={cfg.optimizer.lr:g}; run directory {out}/",
              file=sys.stderr)
        keep_freed_memory()  # each step reuses the last one's pages (a process of our own)
        with run_threads(net, cfg.batch, args.threads):
            history = train(model, cfg, data, out, resume=args.resume,
                            progress=not args.no_progress, callbacks=callbacks_of(args, out))
        return finish_run(net, model, cfg, data, out, history,
                          lambda message: print(message, file=sys.stderr))


# A run that ends by itself: every epoch, or early stopping (exit 0); "interrupted" is 130.
FINISHED = ("completed", "early_stopped")


def outcome_line(network: str, test: dict, status: str) -> str:
    top = (f", top-{test['top_k']} {test['top_k_accuracy']:.2%}" if "top_k" in test else "")
    note = "" if status == "completed" else f" ({status.replace('_', ' ')})"
    return (f"{network}: test accuracy {test['accuracy']:.2%}{top} on {test['n']} examples, "
            f"loss {test['loss']:.4f}{note}")


def callbacks_of(args, out: Path) -> list:
    """--tensorboard: a TensorBoard callback writing to OUT/tensorboard."""
    if not args.tensorboard:
        return []
    from netspec.train.callbacks import TensorBoard

    return [TensorBoard(out / "tensorboard")]


def check_top_k(args, cfg, data) -> None:
    """--top-k K (or the spec's top_k) below the data's class count, naming the flag."""
    if args.top_k is not None and args.top_k >= data.num_classes:
        raise UsageError(f"--top-k {args.top_k}",
                         f"must be below the data's {data.num_classes} classes")


def check_tensorboard_flag(args) -> None:
    """--tensorboard without tensorboardX is refused before any work, naming the flag."""
    from netspec.train.callbacks import TENSORBOARD_MISSING, tensorboard_available

    if args.tensorboard and not tensorboard_available():
        raise UsageError("--tensorboard", TENSORBOARD_MISSING)


def run_torch(args) -> int:
    """`--backend torch`: this process, torchrun's workers, or `--nproc N` launching them."""
    from netspec.train import distributed
    from netspec.train.torch_loop import import_torch

    with training_errors():
        import_torch()  # first: without torch, say which extra to install, no traceback
        torchrun = distributed.under_torchrun()
        if args.nproc and args.nproc > 1 and not torchrun:
            net = load_net(args)  # a broken spec or setting fails here, not in N workers
            with training_errors(net):
                check_batch_splits(config_from(net, args, train_flags(args)).batch, args.nproc)
            return distributed.launch(distributed.Launch(
                args.nproc, args.argv, run_dir(args, net), args.threads))
        if torchrun and args.nproc and args.nproc != distributed.torchrun_world():
            raise NetspecError(Diagnostic(
                "error", f"--nproc {args.nproc} but torchrun started "
                f"{distributed.torchrun_world()} workers", hint="drop --nproc under torchrun"))
        workers, device = distributed.init_workers(args.device or "cpu")
    try:
        code = train_torch(args, workers, device)
        # Rank 0 still evaluates after training; a worker that left the process group then
        # could abort it mid-teardown (seen as SIGABRT in gloo). Leave together.
        distributed.wait_for_all()
        return code
    finally:
        distributed.shutdown_workers()


def train_torch(args, workers, device: str) -> int:
    from netspec.train import distributed, load_dataset, train
    from netspec.train.threads import auto_threads
    from netspec.train.torch_loop import TorchModel, import_torch

    net = load_net(args)
    say = (lambda message: print(message, file=sys.stderr)) if workers.writer else \
        (lambda message: None)
    with training_errors(net):
        cfg = config_from(net, args, train_flags(args))
        if args.freeze:
            cfg.freeze = list(cfg.freeze) + args.freeze
        if args.reinit:
            cfg.reinit = list(cfg.reinit) + args.reinit
        check_batch_splits(cfg.batch, workers.world)
        data = load_dataset(cfg, spec_input_shape(net))
        check_data_fits(net, data)
        check_top_k(args, cfg, data)
        torch = import_torch()
        if device == "cpu" or not device.startswith("cuda"):
            # the NumPy backend's choice (1 thread for small layers), or --threads
            torch.set_num_threads(args.threads or auto_threads(
                [d.get("macs", 0) for _, d in net.graph.nodes(data=True)],
                cfg.batch // workers.world))
        if not args.allow_large and not device.startswith("cuda"):
            from netspec.analysis.memory import require_training_memory
            require_training_memory(net, cfg.batch // workers.world, cfg.optimizer.type)
        model = TorchModel.from_spec(net, cfg.seed, device, args.precision or "fp32",
                                     allow_large=args.allow_large)
        # Rank 0 picks the run directory by the NumPy backend's rule (never over a finished
        # run unasked) and tells the other workers, which would see its files and pick on.
        out = distributed.share_path(run_dir(args, net) if workers.writer else None)
        procs = f", {workers.world} workers" if workers.distributed else ""
        say(f"training {net.name} ({model.num_params:,} parameters) on {data.name or 'data'} "
            f"with torch on {model.device}{procs}: {len(data.y_train)} train / "
            f"{len(data.y_val)} val / {len(data.y_test)} test, {cfg.epochs} "
            f"epoch{'s' if cfg.epochs != 1 else ''}, {cfg.optimizer.type} "
            f"lr={cfg.optimizer.lr:g}")
        try:
            history = train(model, cfg, data, out, resume=args.resume,
                            progress=not args.no_progress,
                            callbacks=callbacks_of(args, out) if workers.writer else [])
        except Exception as exc:
            if workers.distributed and distributed.is_worker_failure(exc):
                raise NetspecError(Diagnostic(
                    "error", f"another training worker stopped ({type(exc).__name__}); "
                    f"{distributed.checkpoint_note(out)}")) from None
            raise
        if not workers.writer:
            return 0 if history.status in FINISHED else 130
        return finish_run(net, model, cfg, data, out, history, say)


def finish_run(net, model, cfg, data, out: Path, history, say) -> int:
    """After training, on either backend: the transfer report, the best checkpoint's test
    figures (and a copy/sort task's exact sequences) into results.json, the outcome lines;
    the exit code (0: finished, 130: interrupted)."""
    from netspec.train import evaluate, load_weights
    from netspec.train.metrics import write_results

    if history.transfer is not None:
        say(history.transfer.summary())
    best = history.best_checkpoint if history.best_checkpoint.exists() else history.checkpoint
    load_weights(model, best)
    test = evaluate(model, data.x_test, data.y_test, cfg.loss, cfg.eval_batch, top_k=cfg.top_k)
    exact = task_score(model, data)
    write_results(out, {"network": net.name, "status": history.status,
                        "test": test, "checkpoint": best.name,
                        **({"exact": exact} if exact else {}),
                        "best_epoch": history.best_epoch, "epochs": cfg.epochs,
                        "classes": list(data.classes),
                        "final": asdict(history.last) if history.last else None})
    print(outcome_line(net.name, test, history.status))
    report_task(net.name, exact)
    curves = "curves, " if (out / "curves.png").exists() else ""
    print(f"checkpoints, metrics, {curves}results.json in {printable(str(out))}/ "
          f"(best: {best.name})")
    return 0 if history.status in FINISHED else 130


def task_score(model, data) -> dict | None:
    """For a copy/sort task: the test sequences answered exactly by greedy decoding."""
    from netspec.train.tasks import exact_sequences, task_of

    return exact_sequences(model, data) if task_of(data) else None


def report_task(name: str, exact: dict | None) -> None:
    if exact:
        print(f"{name}: {exact['exact']:.2%} of {exact['n']} unseen test sequences answered "
              f"exactly (greedy decoding from the prompt)")


def check_batch_splits(batch: int, workers: int) -> None:
    if batch % workers:
        raise NetspecError(Diagnostic(
            "error", f"the batch of {batch} does not split over {workers} workers",
            hint=f"use --batch a multiple of {workers} (it is the global batch, shared among "
                 "the workers)"))


def train_flags(args) -> dict:
    """The flags that override training settings (None: not given)."""
    return {"epochs": args.epochs, "batch": args.batch, "lr": args.lr,
            "optimizer": args.optimizer, "momentum": args.momentum, "schedule": args.schedule,
            "warmup": args.warmup, "loss": args.loss, "l1": args.l1, "l2": args.l2,
            "max_norm": args.max_norm, "clip": args.clip, "augment": args.augment,
            "seed": args.seed, "init_from": args.init_from, "top_k": args.top_k,
            "patience": args.patience, "monitor": args.monitor, "min_delta": args.min_delta}


def check_layer_flags(model, args) -> None:
    """--freeze and --reinit name layers of this model (checked before any training)."""
    from netspec.diagnostics import did_you_mean

    names = list(model.params)
    layers = sorted({n.rsplit(".", 1)[0] for n in names})
    for flag, patterns in (("--freeze", args.freeze or []), ("--reinit", args.reinit or [])):
        for pattern in patterns:
            if flag == "--reinit":
                ok = pattern in layers
            else:
                ok = any(fnmatchcase(n, pattern) or fnmatchcase(n, pattern + ".*")
                         for n in names)
            if not ok:
                raise UsageError(f"{flag} {pattern}", "no layer with parameters matches",
                                 did_you_mean(pattern, layers)
                                 or f"layers with parameters: {', '.join(layers)}")


# The files of a run: a directory holding any of them holds a run.
RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "metrics.csv", "curves.png",
             "results.json")
# Directories of a run that --overwrite clears as well (event files of an earlier run would
# mix into TensorBoard's view of the new one).
RUN_DIRS = ("tensorboard",)


def holds_run(directory: Path) -> bool:
    return any((directory / name).exists() for name in RUN_FILES)


def run_dir(args, net) -> Path:
    """Where this run writes, never over a finished run unasked: -o DIR (refused if it holds
    a run, unless --resume or --overwrite), else runs/<network>, or the first free
    runs/<network>-N. --resume without -o continues the network's latest run. The directory
    is checked writable here, before any training."""
    if args.out:
        out = Path(args.out)
        if holds_run(out) and not (args.resume or args.overwrite):
            raise UsageError(f"-o {args.out}", "holds a run already (checkpoints, metrics)",
                             "--resume continues it, --overwrite replaces it; or choose "
                             "another directory")
    else:
        base = Path("runs") / net.name
        runs = [base] + [base.with_name(f"{net.name}-{n}") for n in range(2, 10_000)]
        taken = [d for d in runs if holds_run(d)]
        if args.resume or args.overwrite:
            out = taken[-1] if taken and args.resume else base
        else:
            out = next(d for d in runs if not holds_run(d))
    if args.overwrite and not args.resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            if (out / name).is_dir() and not (out / name).is_symlink():
                shutil.rmtree(out / name)
    check_writable(out, "-o" if args.out else None)
    return out


def check_writable(directory: Path, flag: str | None) -> None:
    import tempfile

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        message = f"cannot write the run directory {directory}/: {exc.strerror}"
        if flag:
            raise UsageError(f"{flag} {directory}", message) from None
        raise NetspecError(Diagnostic("error", message, None,
                                      "choose a writable directory with -o DIR")) from None
