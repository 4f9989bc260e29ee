"""`netspec sample FILE --weights CKPT --prompt TEXT`: generate text with a trained language
model (characters as tokens; the vocabulary comes from the checkpoint)."""
from __future__ import annotations

from netspec.commands._session import add_spec_arguments, compile_model, load_net, training_errors
from netspec.commands._types import non_negative, non_negative_int, positive_int
from netspec.diagnostics import Diagnostic, NetspecError

HELP = "generate text from a trained character language model (gpt_tiny, char_lstm)"


def add_arguments(p) -> None:
    add_spec_arguments(p, default_spec=False)
    p.add_argument("--weights", required=True, metavar="CKPT",
                   help="a checkpoint of `netspec train ... --data text.txt`")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--length", type=positive_int, default=200, help="characters to generate")
    p.add_argument("--temperature", type=non_negative, default=1.0,
                   help="divide the scores by this (< 1: safer, > 1: more varied; 0: always "
                        "the likeliest character, greedy decoding)")
    p.add_argument("--top-k", type=positive_int, metavar="K", help="sample among the K likeliest only")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                   help="seed of the sampling (default: 0)")


def _fail(message: str, hint: str | None = None):
    raise NetspecError(Diagnostic("error", message, None, hint))


def run(args) -> int:
    from netspec.train import load_weights
    from netspec.train.text import generate

    if args.length < 0:
        _fail(f"--length must be >= 0, not {args.length}")
    net = load_net(args)
    node = net.node(net.inputs[0])
    if node["attrs"].get("dtype") != "int" or len(node["attrs"]["shape"]) != 1:
        _fail(f"network `{net.name}` does not read tokens (its input is "
              f"{list(node['attrs']['shape'])}); sample needs a language model",
              "declare its input as tokens: input x: [T] int")
    with training_errors(net):
        model = compile_model(net)
        ckpt = load_weights(model, args.weights)
    vocab = [int(c) for c in ckpt.extra.get("data.classes", [])]
    if len(vocab) != model.output_shape[-1] or len(model.output_shape) != 2:
        _fail(f"{args.weights}: holds no vocabulary of {model.output_shape[-1]} characters",
              "use a checkpoint of `netspec train SPEC --data text.txt`")
    try:
        text = generate(model, vocab, args.prompt, args.length, args.temperature,
                        args.top_k, args.seed)
    except ValueError as exc:
        _fail(f"--prompt: {exc}" if "vocabulary" in str(exc) or "prompt" in str(exc)
              else str(exc))
    print(text)
    return 0
