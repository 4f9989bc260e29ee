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
    training_errors,
)

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
    p.add_argument("--augment", help="none, crop, flip, crop_flip")
    p.add_argument("--freeze", action="append", metavar="GLOB",
                   help="freeze parameters of matching layers (repeatable): conv1, layer1.*")
    p.add_argument("--init-from", metavar="CKPT", help="load matching weights from a checkpoint")
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


def run(args) -> int:
    from netspec.train import evaluate, load_dataset, load_weights, train
    from netspec.train.allocator import keep_freed_memory

    net = load_net(args)
    flags = {"epochs": args.epochs, "batch": args.batch, "lr": args.lr,
             "optimizer": args.optimizer, "momentum": args.momentum, "schedule": args.schedule,
             "warmup": args.warmup, "loss": args.loss, "l1": args.l1, "l2": args.l2,
             "max_norm": args.max_norm, "augment": args.augment, "seed": args.seed,
             "init_from": args.init_from}
    with training_errors(net):
        cfg = config_from(net, args, flags)
        if args.freeze:
            cfg.freeze = list(cfg.freeze) + args.freeze
        if args.reinit:
            cfg.reinit = list(cfg.reinit) + args.reinit
        data = load_dataset(cfg)
        check_data_fits(net, data)
        model = compile_model(net, cfg.seed)
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
    print(f"checkpoints, metrics and curves in {out}/ (best: {best.name})")
    return 0 if history.status == "completed" else 130
