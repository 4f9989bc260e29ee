"""Command line: every flag of every command has help, and a bad value of any flag is a usage
error (exit 2) that names the flag, never an internal error or a spec line."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from netspec.cli import build_parser, closest_flag, main

TINY = """network tiny(num_classes = 10) {
    input x: [1, 8, 8]
    output x -> flatten -> fc1: linear(16) -> relu -> fc: linear(num_classes)
    train {
        epochs = 30
    }
}
"""
DEEP = "[" * 40 + "1" + "]" * 40

# (command line, the flag its error must name). Each command line would run quickly if the
# value were (wrongly) accepted: --epochs 1 and a tiny spec.
BAD_VALUES = [
    # train: every flag
    ("train {spec} --epochs 0", "--epochs"), ("train {spec} --epochs abc", "--epochs"),
    ("train {spec} --epochs -3", "--epochs"),
    ("train {spec} --batch 0", "--batch"),
    ("train {spec} --lr 0", "--lr"), ("train {spec} --lr -1", "--lr"),
    ("train {spec} --lr nan", "--lr"), ("train {spec} --lr inf", "--lr"),
    ("train {spec} --optimizer adm", "--optimizer"),
    ("train {spec} --momentum 1", "--momentum"), ("train {spec} --momentum -0.5", "--momentum"),
    ("train {spec} --schedule nosuch", "--schedule"),
    ("train {spec} --warmup -1", "--warmup"),
    ("train {spec} --loss hinge", "--loss"),
    ("train {spec} --l1 -1", "--l1"), ("train {spec} --l2 abc", "--l2"),
    ("train {spec} --max-norm 0", "--max-norm"), ("train {spec} --clip -1", "--clip"),
    ("train {spec} --top-k 1", "--top-k"), ("train {spec} --top-k abc", "--top-k"),
    ("train {spec} --top-k 10", "--top-k 10"),
    ("train {spec} --patience 0", "--patience"), ("train {spec} --patience x", "--patience"),
    ("train {spec} --monitor val_accuracy", "--monitor"),
    ("train {spec} --min-delta -0.1", "--min-delta"), ("train {spec} --min-delta x", "--min-delta"),
    ("train {spec} --monitor val_top_k", "--monitor val_top_k"),
    ("eval {spec} --weights w.npz --top-k 1", "--top-k"),
    ("train {spec} --augment rotate", "--augment"),
    ("train {spec} --seed -1", "--seed"),
    ("train {spec} --threads -2", "--threads"), ("train {spec} --threads 0", "--threads"),
    ("train {spec} --val 1", "--val"), ("train {spec} --val -0.1", "--val"),
    ("train {spec} --classes ,", "--classes"), ("train {spec} --classes 1,2,x", "--classes"),
    ("train {spec} --classes -1", "--classes"), ("train {spec} --classes 1,1", "--classes"),
    ("train {spec} --limit 0", "--limit"),
    ("train {spec} --set nonsense", "--set"), ("train {spec} --set =3", "--set"),
    ("train {spec} --set optimizer.beta1=2", "--set optimizer.beta1=2"),
    ("train {spec} --set optimizer.nosuch=2", "--set optimizer.nosuch=2"),
    (f"train {{spec}} --set epochs={DEEP}", "--set"),
    ("train {spec} --param nonsense", "--param"),
    (f"train {{spec}} --param num_classes={DEEP}", "--param"),
    ("train {spec} --data /nonexistent", "--data /nonexistent"),
    ("train {spec} --data digitz", "--data digitz"),
    ("train {spec} --data sort --set data.examples=0", "--set data.examples=0"),
    ("train {spec} --data copy --set data.length=0", "--set data.length=0"),
    ("train {spec} --reinit nosuch", "--reinit nosuch"),
    ("train {spec} --freeze nosuch", "--freeze nosuch"),
    ("train {spec} --init-from /nonexistent.npz", "--init-from"),
    ("train {spec} -o {spec}/run", "-o"),
    ("train {spec} --backend jax", "--backend"), ("train {spec} --nproc 0", "--nproc"),
    ("train {spec} --device cpu", "--device"), ("train {spec} --precision fp8", "--precision"),
    ("train {spec} --input 0x8x8", "--input"), ("train {spec} --input 1xHx8", "--input"),
    ("train {spec} --normalize imagnet", "--normalize imagnet"),
    ("train {spec} --normalize [1,0]", "--normalize [1,0]"),
    ("train {spec} --normalize imagenet", "--normalize imagenet"),  # 3 values, 1 channel
    ("eval {spec} --weights w.npz --input 3x", "--input"),
    ("predict {spec} --weights w.npz --input abc", "--input"),
    ("eval {spec} --weights w.npz --normalize [[1],[2],[3]]", "--normalize"),
    ("predict {spec} --weights w.npz --normalize nosuch", "--normalize"),
    # eval and predict
    ("eval {spec} --weights /nonexistent.npz", "--weights"),
    ("eval {spec} --weights w.npz --split nosuch", "--split"),
    ("eval {spec} --weights w.npz --format xml", "--format"),
    ("eval {spec} --weights w.npz --threads 0", "--threads"),
    ("predict {spec} --weights w.npz --top 0", "--top"),
    ("predict {spec} --weights w.npz --show -1", "--show"),
    ("predict {spec} --weights w.npz --classes ,", "--classes"),
    ("eval {spec} --weights w.npz --classes 1,x", "--classes"),
    ("eval {spec} --weights w.npz --param nonsense", "--param"),
    ("predict {spec} --weights w.npz --param nonsense", "--param"),
    ("eval {spec} --weights w.npz --data /nonexistent", "--data /nonexistent"),
    ("predict {spec} --weights w.npz --data /nonexistent", "--data /nonexistent"),
    ("eval {spec} --weights w.npz --val 2", "--val"),
    ("predict {spec} --weights w.npz --val abc", "--val"),
    ("eval {spec} --weights w.npz --limit -1", "--limit"),
    ("predict {spec} --weights w.npz --limit 0", "--limit"),
    ("eval {spec} --weights w.npz --set nonsense", "--set"),
    ("predict {spec} --weights w.npz --set =1", "--set"),
    ("predict {spec} --weights w.npz --split nosuch", "--split"),
    ("predict {spec} --weights w.npz --format xml", "--format"),
    ("predict {spec} --weights w.npz --threads -1", "--threads"),
    ("predict {spec} --weights /nonexistent.npz", "--weights"),
    ("summary {spec} --freeze nosuch", "--freeze nosuch"),
    # knn
    ("knn --k 0", "--k"), ("knn --k abc", "--k"), ("knn --k -3", "--k"), ("knn --k ,", "--k"),
    ("knn --k 5000", "--k"),
    ("knn --folds 1", "--folds"), ("knn --folds abc", "--folds"), ("knn --folds 5000", "--folds"),
    ("knn --distance l3", "--distance"), ("knn --seed -1", "--seed"),
    ("knn --format xml", "--format"), ("knn --data /nonexistent", "--data"),
    # summary
    ("summary {spec} --input 0x3", "--input"), ("summary {spec} --input 1x8x8x8", "--input"),
    ("summary {spec} --batch 0", "--batch"), ("summary {spec} --depth -1", "--depth"),
    ("summary {spec} --format xml", "--format"), ("summary {spec} --count nosuch", "--count"),
    ("summary {spec} --dtype float8", "--dtype"),
    ("summary {spec} --plot x.xyz", "--plot"), ("summary {spec} --plot /nonexistent/x.png", "--plot"),
    ("summary {spec} --sizes abc", "--sizes"), ("summary {spec} --sizes 8:4:1", "--sizes"),
    ("summary {spec} --optimizer nosuch", "--optimizer"),
    ("summary {spec} --at H=abc", "--at"), ("summary {spec} --at H=224", "--at"),
    # draw
    ("draw {spec} --depth -1", "--depth"), ("draw {spec} --depth abc", "--depth"),
    ("draw {spec} --rankdir XY", "--rankdir"), ("draw {spec} --annotate nosuch", "--annotate"),
    ("draw {spec} --format xml", "--format"),
    ("draw {spec} -o r50.svg --format png", "--format"),
    ("draw {spec} -o r50.xyz", "-o"),
    ("draw {spec} -o /nonexistent/r50.svg", "-o"),
    # check
    ("check {spec} --format xml", "--format"),
    # compile
    ("compile {spec} --input 0", "--input"), ("compile {spec} --input 3x", "--input"),
    ("compile {spec} -o /nonexistent/m.py", "-o"),
    ("compile {spec} --target onnx", "--target"),
    # export
    ("export {spec} -o m.onnx --seed -1", "--seed"), ("export {spec} -o m.onnx --input 0", "--input"),
    ("export {spec} -o m.onnx --weights /nonexistent.npz", "--weights"),
    ("export {spec} -o /nonexistent/m.onnx", "-o"), ("export {spec} -o .", "-o"),
    # --network: any command that reads a spec
    ("summary {spec} --network nosuch", "--network nosuch"),
    ("train {spec} --network nosuch", "--network nosuch"),
    ("export {spec} -o m.onnx --network nosuch", "--network nosuch"),
    ("summary {spec} --flops xyz", "--flops"),
    # sample
    ("sample {spec} --weights w.npz --prompt a --length 0", "--length"),
    ("sample {spec} --weights w.npz --prompt a --temperature -1", "--temperature"),
    ("sample {spec} --weights w.npz --prompt a --top-k 0", "--top-k"),
    ("sample {spec} --weights w.npz --prompt a --seed -1", "--seed"),
    # serve
    ("serve {spec} --port abc", "--port"), ("serve {spec} --port 70000", "--port"),
]

# Flags checked by other tests: a value that needs a trained checkpoint first (--inputs:
# tests/test_cli_errors.py), or any string naming something in the spec (--network: rows
# above, and its did-you-mean hint in tests/test_cli_check.py).
FREE_TEXT = {"--network", "--allow-imports", "--inputs",
             "sample --param", "sample --weights", "sample --prompt"}


def run(line: str, tmp_path, capsys) -> tuple[int, str]:
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    argv = [a.replace("{spec}", str(spec)) for a in line.split()]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("line, flag", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_flag_value_is_a_usage_error_naming_the_flag(line, flag, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.npz").write_bytes(b"")  # --weights that exists, for the eval/predict rows
    code, err = run(line, tmp_path, capsys)
    assert code == 2, err
    assert flag in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert "tiny.net:" not in err  # never a spec line the flag's value did not come from
    assert not (tmp_path / "runs").exists()  # nothing started


def option_rows() -> list[tuple[str, str, argparse.Action]]:
    parser = build_parser()
    return [(name, action.option_strings[-1], action)
            for name, sub in parser.commands.items() for action in sub._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)]


@pytest.mark.parametrize("command, flag, action", option_rows(),
                         ids=[f"{c} {f}" for c, f, _ in option_rows()])
def test_every_flag_has_help_text(command, flag, action):
    assert action.help and len(action.help) > 10, f"netspec {command} {flag} has no help"


def test_every_flag_that_takes_a_value_has_a_bad_value_row():
    covered = {(line.split()[0], word) for line, _ in BAD_VALUES for word in line.split()
               if word.startswith("-")}
    missing = [f"{command} {flag}" for command, flag, action in option_rows()
               if action.nargs != 0 and flag not in FREE_TEXT
               and f"{command} {flag}" not in FREE_TEXT
               and not any((command, o) in covered for o in action.option_strings)]
    assert not missing, f"add a bad value of each to BAD_VALUES in {__file__}: {missing}"


def test_every_command_has_positional_help():
    for name, sub in build_parser().commands.items():
        for action in sub._actions:
            if not action.option_strings:
                assert action.help, f"netspec {name} {action.dest} has no help"


@pytest.mark.parametrize("given, meant", [
    ("--learning-rate", "--lr"), ("--batch-size", "--batch"), ("--epoch", "--epochs"),
    ("--max_norm", "--max-norm"), ("--output", "--out"),
])
def test_closest_flag(given, meant):
    options = build_parser().commands["train"].option_strings()
    assert closest_flag(given, options) == meant


def test_unknown_flag_shows_the_commands_usage_and_suggests(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--learning-rate", "0.1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: netspec train")
    assert "unrecognized flag: --learning-rate" in err and "did you mean `--lr`?" in err


def test_unknown_flag_of_another_command(capsys):
    with pytest.raises(SystemExit):
        main(["summary", "resnet18", "--fromat", "json"])
    err = capsys.readouterr().err
    assert err.startswith("usage: netspec summary") and "`--format`" in err


def test_no_command_prints_help_and_starts_nothing(tmp_path, monkeypatch, capsys):
    from netspec.commands import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "run", lambda args: pytest.fail("netspec alone trained"))
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: netspec" in out and "train" in out and "COMMAND --help" in out
    assert not (tmp_path / "runs").exists()


def test_train_epochs_flag_error_is_not_located_at_the_spec(tmp_path, capsys):
    code, err = run("train {spec} --epochs 0", tmp_path, capsys)
    assert code == 2 and "argument --epochs" in err and "epochs = 30" not in err


def test_missing_data_path_says_no_such_file(tmp_path, capsys):
    code, err = run("train {spec} --data /nonexistent", tmp_path, capsys)
    assert code == 2 and "no such file or directory" in err and "cannot tell the data format" not in err


def test_param_errors_say_the_value_came_from_the_flag(tmp_path, capsys):
    code, err = run("train {spec} --param num_classes=abc", tmp_path, capsys)
    assert code == 1 and "--param num_classes=abc" in err and "internal error" not in err


def test_classes_flag_is_read_as_labels():
    from netspec.commands._types import labels

    assert labels("3, 5,8") == [3, 5, 8]
    with pytest.raises(argparse.ArgumentTypeError):
        labels("")
    assert np.array_equal(labels("0"), [0])
