"""`netspec train [FILE]`: compile a spec and train it (default: digits_cnn on digits)."""
from __future__ import annotations

import sys

from netspec.commands._session import (
    add_data_arguments,
    add_spec_arguments,
    check_data_fits,
    compile_model,
    config_from,
    load_net,
    out_dir,
    run_threads,
    spec_input_shape,
    training_errors,
)
from netspec.diagnostics import Diagnostic, NetspecError, printable

HELP = "train a spec (default: the digits CNN on scikit-learn's bundled digits)"


def add_arguments(p) -> None:
    add_spec_arguments(p)
    add_data_arguments(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--optimizer", help="sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw")
    p.add_argument("--momentum", type=float)
    p.add_argument("--schedule", help="constant, step, cosine, linear")
    p.add_argument("--warmup", type=int, help="warmup length (epochs or iterations)")
    p.add_argument("--loss", help="softmax or svm")
    p.add_argument("--l1", type=float)
    p.add_argument("--l2", type=float)
    p.add_argument("--max-norm", type=float)
    p.add_argument("--clip", type=float, metavar="NORM",
                   help="clip the gradients' global L2 norm to NORM (recurrent networks)")
    p.add_argument("--augment", help="none, crop, flip, crop_flip")
    p.add_argument("--freeze", action="append", metavar="GLOB",
                   help="freeze parameters of matching layers (repeatable): conv1, layer1.*")
    p.add_argument("--init-from", metavar="CKPT", help="load matching weights from a "
                   "checkpoint or a state dict (.npz of named arrays, PyTorch .pt/.pth)")
    p.add_argument("--reinit", action="append", metavar="LAYER",
                   help="re-initialize a layer after --init-from (the head gets the data's "
                        "class count)")
    p.add_argument("--seed", type=int)
    p.add_argument("-o", "--out", metavar="DIR", help="run directory (default: runs/<network>)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, metavar="N",
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
    p.add_argument("--nproc", type=int, metavar="N",
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
                raise NetspecError(Diagnostic(
                    "error", f"--{flag} applies to the torch backend only",
                    hint=f"add --backend torch, or drop --{flag}"))
        return
    if args.nproc is not None and args.nproc < 1:
        raise NetspecError(Diagnostic("error", f"--nproc must be at least 1, got {args.nproc}"))


def run(args) -> int:
    from netspec.train import evaluate, load_dataset, load_weights, train
    from netspec.train.allocator import keep_freed_memory

    check_backend_flags(args)
    if args.backend == "torch":
        return run_torch(args)
    net = load_net(args)
    flags = {"epochs": args.epochs, "batch": args.batch, "lr": args.lr,
             "optimizer": args.optimizer, "momentum": args.momentum, "schedule": args.schedule,
             "warmup": args.warmup, "loss": args.loss, "l1": args.l1, "l2": args.l2,
             "max_norm": args.max_norm, "clip": args.clip, "augment": args.augment,
             "seed": args.seed,
             "init_from": args.init_from}
    with training_errors(net):
        cfg = config_from(net, args, flags)
        if args.freeze:
            cfg.freeze = list(cfg.freeze) + args.freeze
        if args.reinit:
            cfg.reinit = list(cfg.reinit) + args.reinit
        data = load_dataset(cfg, spec_input_shape(net))
        check_data_fits(net, data)
        if not args.allow_large:
            from netspec.analysis.memory import require_training_memory
            require_training_memory(net, cfg.batch, cfg.optimizer.type)
        model = compile_model(net, cfg.seed, allow_large=args.allow_large)
        out = out_dir(args, net)
        print(f"training {net.name} ({model.num_params:,} parameters) on {data.name or 'data'}: "
              f"{len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test, "
              f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}, {cfg.optimizer.type} lr={cfg.optimizer.lr:g}",
              file=sys.stderr)
        keep_freed_memory()  # each step reuses the last one's pages (a process of our own)
        with run_threads(net, cfg.batch, args.threads):
            history = train(model, cfg, data, out, resume=args.resume,
                            progress=not args.no_progress)
        if history.transfer is not None:
            print(history.transfer.summary(), file=sys.stderr)
        best = history.best_checkpoint if history.best_checkpoint.exists() else \
            history.checkpoint
        load_weights(model, best)
        test = evaluate(model, data.x_test, data.y_test, cfg.loss, cfg.eval_batch)
    status = "" if history.status == "completed" else f" ({history.status})"
    print(f"{net.name}: test accuracy {test['accuracy']:.2%} on {test['n']} examples, "
          f"loss {test['loss']:.4f}{status}")
    print(f"checkpoints, metrics and curves in {printable(str(out))}/ (best: {best.name})")
    return 0 if history.status == "completed" else 130


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
                args.nproc, args.argv, out_dir(args, net), args.threads))
        if torchrun and args.nproc and args.nproc != distributed.torchrun_world():
            raise NetspecError(Diagnostic(
                "error", f"--nproc {args.nproc} but torchrun started "
                f"{distributed.torchrun_world()} workers", hint="drop --nproc under torchrun"))
        workers, device = distributed.init_workers(args.device or "cpu")
    try:
        return train_torch(args, workers, device)
    finally:
        distributed.shutdown_workers()


def train_torch(args, workers, device: str) -> int:
    from netspec.train import distributed, evaluate, load_dataset, load_weights, train
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
        out = out_dir(args, net)
        procs = f", {workers.world} workers" if workers.distributed else ""
        say(f"training {net.name} ({model.num_params:,} parameters) on {data.name or 'data'} "
            f"with torch on {model.device}{procs}: {len(data.y_train)} train / "
            f"{len(data.y_val)} val / {len(data.y_test)} test, {cfg.epochs} "
            f"epoch{'s' if cfg.epochs != 1 else ''}, {cfg.optimizer.type} "
            f"lr={cfg.optimizer.lr:g}")
        try:
            history = train(model, cfg, data, out, resume=args.resume,
                            progress=not args.no_progress)
        except Exception as exc:
            if workers.distributed and distributed.is_worker_failure(exc):
                raise NetspecError(Diagnostic(
                    "error", f"another training worker stopped ({type(exc).__name__}); "
                    f"{distributed.checkpoint_note(out)}")) from None
            raise
        if not workers.writer:
            return 0 if history.status == "completed" else 130
        if history.transfer is not None:
            say(history.transfer.summary())
        best = history.best_checkpoint if history.best_checkpoint.exists() else \
            history.checkpoint
        load_weights(model, best)
        test = evaluate(model, data.x_test, data.y_test, cfg.loss, cfg.eval_batch)
    status = "" if history.status == "completed" else f" ({history.status})"
    print(f"{net.name}: test accuracy {test['accuracy']:.2%} on {test['n']} examples, "
          f"loss {test['loss']:.4f}{status}")
    print(f"checkpoints, metrics and curves in {printable(str(out))}/ (best: {best.name})")
    return 0 if history.status == "completed" else 130


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
            "max_norm": args.max_norm, "augment": args.augment, "seed": args.seed,
            "init_from": args.init_from}
