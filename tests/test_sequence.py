"""Sequences through the front end, the analyzer, training and sampling: token inputs,
shape and dtype errors, parameter and MAC counts against torch, receptive fields along time,
the training-memory estimate against tracemalloc, per-token loss, gradient clipping, text
data and `netspec sample`. (Kernels: tests/test_kernels_*.py; whole models against torch:
tests/test_sequence_torch.py.)"""
import os
import subprocess
import sys
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

import netspec
from netspec.diagnostics import NetspecError
from netspec.runtime import softmax_loss
from netspec.train.loop import clip_gradients
from netspec.train.optim import make_optimizer
from netspec.train.text import epoch_offset, generate, load_text, next_token_distribution

torch = pytest.importorskip("torch")

GPT = {"vocab": 12, "context": 8, "d": 16, "heads": 2, "layers": 2, "drop": 0.0}


def analyzed(src: str):
    net = netspec.parse(src, filename="specs/t.net")
    return net, netspec.analyze(net)


# ---- language ------------------------------------------------------------------------------

def test_token_input_declares_integer_ids():
    net = netspec.parse("network n { input x: [7] int\n output x -> embedding(5, 3) }")
    assert net.node("x")["attrs"] == {"shape": (7,), "dtype": "int"}
    model = netspec.compile(net)
    assert model.input_dtype == "int"
    assert model.forward(np.array([[0, 1, 2, 3, 4, 0, 1]])).shape == (1, 7, 3)


@pytest.mark.parametrize("init, tok_std, pos_std", [("auto", 1.0, 0.01), ("unit", 1.0, 1.0),
                                                    ("normal", 0.01, 0.01),
                                                    ("gpt2", 0.02, 0.02)])
def test_embedding_tables_take_an_init_and_torch_draws_the_same_scale(init, tok_std, pos_std):
    from netspec.codegen import load_source
    from netspec.torchgen import generate

    net = netspec.parse(f"network n {{ input x: [400] int\n output x -> tok: embedding(500, 64, "
                        f'init="{init}") -> pos: pos_embedding(init="{init}") }}')
    model = netspec.compile(net, dtype="float64")
    # torch's own draw: the generated module's reset_parameters() from torch's generator
    torch.manual_seed(0)
    module = load_source(generate(net), "<init test>").Network()
    for name, std in (("tok.weight", tok_std), ("pos.weight", pos_std)):
        for w in (model.params[name], module.state_dict()[name].double().numpy()):
            assert abs(w.std() / std - 1) < 0.02 and abs(w.mean()) < 4 * std / np.sqrt(w.size)


def test_attention_weights_take_an_init_and_the_decoder_block_passes_it_on():
    net = netspec.parse(
        'import "blocks/transformer.net"\nnetwork g { input x: [8] int\n'
        'output x -> tok: embedding(12, 256, init="gpt2") -> pos: pos_embedding(init="gpt2")\n'
        '-> layers: decoder(256, 4, 1024, drop=0.0, init="gpt2") * 2\n'
        '-> head: linear(12, init="gpt2") }', filename="specs/g.net")
    model = netspec.compile(net, dtype="float64")
    for name in ("tok.weight", "pos.weight", "layers.0.self_attn.in_proj_weight",
                 "layers.1.self_attn.out_proj.weight", "layers.0.linear1.weight",
                 "layers.1.linear2.weight", "head.weight"):
        assert abs(model.params[name].std() / 0.02 - 1) < 0.1, name
    xavier = netspec.compile(netspec.parse(
        "network n { input x: [4, 256]\n output x -> a: attention(4) }"), dtype="float64")
    w = xavier.params["a.in_proj_weight"]  # auto: nn.MultiheadAttention's xavier
    assert abs(w.std() / np.sqrt(2 / (256 + 768)) - 1) < 0.02


def test_an_unknown_embedding_init_is_a_located_error():
    with pytest.raises(NetspecError) as err:
        analyzed('network n { input x: [7] int\n output x -> embedding(5, 3, init="he") }')
    assert "init" in str(err.value) and "gpt2" in str(err.value)


def test_floats_into_an_embedding_are_a_located_error():
    with pytest.raises(NetspecError) as err:
        analyzed("network n { input x: [7]\n output x -> emb: embedding(5, 3) }")
    assert "reads token ids" in str(err.value) and "[T] int" in str(err.value)


def test_token_ids_into_a_linear_layer_are_a_located_error():
    with pytest.raises(NetspecError) as err:
        analyzed("network n { input x: [7] int\n output x -> fc: linear(3) }")
    assert "cannot read token ids" in str(err.value) and "embedding" in str(err.value)


def test_a_recurrence_on_an_image_says_how_to_make_a_sequence():
    with pytest.raises(NetspecError) as err:
        analyzed("network n { input x: [1, 8, 8]\n output x -> lstm(4) }")
    assert "[T, D] sequence" in str(err.value) and "patches" in str(err.value)


def test_a_compiled_token_model_refuses_float_inputs():
    model = netspec.compile(netspec.parse("network n { input x: [3] int\n"
                                          "output x -> embedding(5, 2) }"))
    with pytest.raises(ValueError, match="integer token ids"):
        model.forward(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.forward(np.array([[0, 5, 1]]))


def test_linear_and_layernorm_apply_per_step_like_torch():
    _, a = analyzed("network n { input x: [5, 6]\n output x -> ln: layernorm -> fc: linear(4) }")
    assert a.layer("fc").output_shape == (5, 4) and a.layer("fc").params == 28
    assert a.layer("ln").params == 12  # LayerNorm(6): weight and bias of 6


# ---- analyzer ------------------------------------------------------------------------------

def _torch_macs(module, *args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        module(*args)
    return counter.get_total_flops() // 2


def test_attention_macs_count_both_t_squared_products_as_torch_does():
    t, d = 12, 16
    _, a = analyzed(f"network n {{ input x: [{t}, {d}]\n output x -> attn: attention(4) }}")
    mha = torch.nn.MultiheadAttention(d, 4, batch_first=True)
    heads, dh = 4, d // 4

    def attention(x):  # nn.MultiheadAttention's math, unfused, so the counter sees each GEMM
        q, k, v = torch.nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias) \
            .reshape(1, t, 3, heads, dh).permute(2, 0, 3, 1, 4)
        w = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5, dim=-1)
        return mha.out_proj((w @ v).transpose(1, 2).reshape(1, t, d))

    x = torch.randn(1, t, d)
    np.testing.assert_allclose(attention(x).detach().numpy(),
                               mha(x, x, x, need_weights=False)[0].detach().numpy(), atol=1e-5)
    assert a.layer("attn").macs == _torch_macs(attention, x)
    assert a.layer("attn").macs == 4 * t * d * d + 2 * t * t * d


@pytest.mark.parametrize("cell, gates", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_recurrence_params_and_macs_match_torch(cell, gates):
    _, a = analyzed(f"network n {{ input x: [9, 5]\n"
                    f"output x -> r: {cell}(7, layers=2, bidirectional=true) }}")
    module = getattr(torch.nn, cell.upper())(5, 7, num_layers=2, bidirectional=True,
                                             batch_first=True)
    assert a.layer("r").params == sum(p.numel() for p in module.parameters())
    # torch's counter does not see inside the fused recurrences: count by hand,
    # gates * H * (I + H) per step, layer and direction
    assert a.layer("r").macs == 9 * 2 * gates * 7 * ((5 + 7) + (14 + 7))


def test_gpt_params_match_the_torch_gpt():
    from test_sequence_torch import TinyGPT

    _, a = analyzed('import "blocks/transformer.net"\n'
                    "network n { input x: [8] int\n"
                    "output x -> tok: embedding(12, 16) -> pos: pos_embedding\n"
                    "-> layers: decoder(16, 2, 64) * 2 -> norm: layernorm -> head: linear(12) }")
    gpt = TinyGPT(12, 8, 16, 2, 2)
    assert a.totals.params == sum(p.numel() for p in gpt.parameters())


def test_time_receptive_field_is_said_in_words():
    _, a = analyzed("""network n { input x: [6] int
        e = x -> emb: embedding(5, 4) -> fc: linear(4)
        c = e -> causal: attention(2, causal=true)
        output c -> full: attention(2) -> r: lstm(3) -> last }""")
    steps = {name: a.layer(name).receptive_field.reach
             for name in ("x", "fc", "causal", "full", "r", "last")}
    assert steps == {"x": "step", "fc": "step", "causal": "past", "full": "all", "r": "all",
                     "last": "all"}
    text = netspec.summary(a) if hasattr(netspec, "summary") else None
    if text is not None:
        assert "steps <= t" in text


def test_a_causal_recurrence_sees_the_past_and_a_bidirectional_one_everything():
    _, a = analyzed("network n { input x: [6, 3]\n"
                    "a = x -> f: gru(4)\n output a -> b: lstm(2, bidirectional=true) }")
    assert a.layer("f").receptive_field.reach == "past"
    assert a.layer("b").receptive_field.reach == "all"


def test_vit_receptive_field_is_a_patch_then_the_whole_image():
    a = netspec.analyze(netspec.load("vit_digits"))
    assert a.layer("embed").receptive_field.size == (2, 2)  # one 2x2 patch, not the image
    assert a.layer("layers.0.self_attn").receptive_field.size == (8, 8)
    assert a.layer("head").receptive_field.size == (8, 8)  # not more than the image
    assert not a.warnings


def _measured_peak(net, batch: int, optimizer: str) -> int:
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        model = netspec.compile(net)
        opt = make_optimizer(optimizer, lr=1e-3)
        x = rng.integers(0, 5, (batch,) + model.input_shape)
        y = rng.integers(0, model.output_shape[-1], (batch,) + model.output_shape[:-1])
        for step in range(2):
            if step:
                tracemalloc.reset_peak()
            model.loss(x, y)
            opt.step(model.params, model.grads, model.frozen)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("spec, over", [
    ("gpt_tiny", {"vocab": 40, "d": 64, "layers": 2, "context": 32}),
    ("char_lstm", {"vocab": 40, "hidden": 64, "context": 32}),
], ids=["gpt", "char_lstm"])
def test_training_memory_estimate_within_25_percent_for_sequences(spec, over):
    estimate = netspec.analyze(netspec.load(spec, overrides=over), batch=16,
                               optimizer="adam").memory
    peak = _measured_peak(netspec.load(spec, overrides=over), 16, "adam")
    assert abs(estimate.total / peak - 1) < 0.25, (estimate.total, peak)


# ---- training ------------------------------------------------------------------------------

def test_per_token_loss_is_cross_entropy_over_all_tokens():
    rng = np.random.default_rng(0)
    scores, y = rng.standard_normal((3, 4, 5)), rng.integers(0, 5, (3, 4))
    loss, d = softmax_loss(scores, y)
    st = torch.tensor(scores, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(st.reshape(-1, 5), torch.tensor(y).reshape(-1))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(d, st.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_gradient_clipping_equals_torch_clip_grad_norm(max_norm):
    rng = np.random.default_rng(1)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in
              grads.values()]
    for p, g in zip(params, grads.values()):
        p.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(params, max_norm)
    norm = clip_gradients(grads, set(), max_norm)
    assert norm == pytest.approx(expected.item())
    for p, g in zip(params, grads.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12)


def test_clipping_skips_frozen_parameters():
    grads = {"a": np.full(4, 3.0), "b": np.full(4, 3.0)}
    clip_gradients(grads, {"b"}, 1.0)
    assert np.linalg.norm(grads["a"]) == pytest.approx(1.0, rel=1e-5)
    assert np.all(grads["b"] == 3.0)


def test_text_data_is_split_by_position_into_shifted_windows(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 10)  # 100 characters
    data = load_text(str(path), context=4, val=0.2, test=0.1, offset="fixed")
    assert data.recut is None
    assert data.classes == [ord(c) for c in "abcdefghij"] and data.num_classes == 10
    assert data.x_train.shape[1:] == (4,) and data.x_train.dtype == np.int64
    np.testing.assert_array_equal(data.y_train[:, :-1], data.x_train[:, 1:])
    assert len(data.x_train) == (70 - 1) // 4 and len(data.x_val) == (20 - 1) // 4
    assert len(data.x_test) == (10 - 1) // 4


def _random_text(tmp_path, n=400):
    letters = np.random.default_rng(0).choice(list("abcdefghijklmnopqrstuvwxyz .,"), n)
    path = tmp_path / "t.txt"
    path.write_text("".join(letters))
    return path, "".join(letters)


def test_random_offsets_cut_every_epoch_at_a_seeded_shift_of_the_training_text(tmp_path):
    path, text = _random_text(tmp_path)
    data = load_text(str(path), context=8, val=0.1, test=0.1)  # offset="random": the default
    train_text = text[:400 - 40 - 40]
    n = (len(train_text) - 8) // 8  # the count every offset 0..7 allows
    assert data.x_train.shape == (n, 8)
    assert "".join(map(chr, np.array(data.classes)[data.x_train.ravel()])) == train_text[:8 * n]
    shifts = []
    for epoch in range(8):
        x, y = data.recut(5, epoch)
        assert x.shape == y.shape == (n, 8)
        chars = np.array(data.classes)
        # each window is the text at s, s+8, ... from one shift, its target one further on
        read = "".join(map(chr, chars[x.ravel()]))
        shift = train_text.index(read[:8])
        assert read == train_text[shift:shift + 8 * n]
        assert "".join(map(chr, chars[y.ravel()])) == train_text[shift + 1:shift + 8 * n + 1]
        assert shift == epoch_offset(5, epoch, 8) and 0 <= shift < 8
        np.testing.assert_array_equal(data.recut(5, epoch)[0], x)  # the same cut again
        shifts.append(shift)
    assert len(set(shifts)) > 2  # the windows move between epochs
    assert [epoch_offset(6, e, 8) for e in range(8)] != shifts  # another seed, other shifts
    fixed = load_text(str(path), context=8, val=0.1, test=0.1, offset="fixed")
    np.testing.assert_array_equal(fixed.x_val, data.x_val)  # validation never moves
    np.testing.assert_array_equal(fixed.x_test, data.x_test)
    with pytest.raises(ValueError, match="offset must be one of random, fixed"):
        load_text(str(path), context=8, offset="sometimes")
    from netspec.train import ConfigError, TrainConfig
    with pytest.raises(ConfigError, match="data.offset: unknown value 'sometimes'"):
        TrainConfig.from_spec({"data": {"type": "text", "path": str(path), "offset": "sometimes"}})


def test_a_text_run_with_random_offsets_resumes_exactly(tmp_path):
    from netspec.train import TrainConfig, load_dataset, train
    from netspec.train.checkpoint import load_checkpoint

    path, _ = _random_text(tmp_path)
    cfg = TrainConfig.from_spec({
        "optimizer": {"type": "adam", "lr": 0.01}, "epochs": 3, "batch": 8, "seed": 3,
        "data": {"type": "text", "path": str(path), "context": 8}})
    data = load_dataset(cfg)
    net = netspec.load("gpt_tiny", overrides={**GPT, "vocab": data.num_classes})
    straight = train(netspec.compile(net), cfg, data, tmp_path / "a", progress=False)
    train(netspec.compile(net), replace(cfg, epochs=1), data, tmp_path / "b", progress=False)
    resumed = train(netspec.compile(net), cfg, data, tmp_path / "b", resume=True,
                    progress=False)
    assert [r.train_loss for r in resumed.records] == [r.train_loss for r in straight.records]
    a, b = (load_checkpoint(h.checkpoint).params for h in (straight, resumed))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    fixed = train(netspec.compile(net), replace(cfg, data=replace(cfg.data, offset="fixed")),
                  load_dataset(replace(cfg, data=replace(cfg.data, offset="fixed"))),
                  tmp_path / "c", progress=False)
    assert fixed.records[1].train_loss != straight.records[1].train_loss  # other windows


def test_binary_text_is_a_data_error(tmp_path):
    from netspec.train import DataError

    path = tmp_path / "t.txt"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        load_text(str(path), 4)


def test_sampling_follows_temperature_and_top_k():
    model = netspec.compile(netspec.load("gpt_tiny", overrides=GPT), seed=1)
    p = next_token_distribution(model, [1, 2, 3])
    cold = next_token_distribution(model, [1, 2, 3], temperature=0.5)
    assert p.sum() == pytest.approx(1) and cold.max() > p.max()
    top = next_token_distribution(model, [1, 2, 3], top_k=3)
    assert np.count_nonzero(top) == 3
    assert set(np.flatnonzero(top)) == set(np.argsort(p)[-3:])


def test_temperature_zero_decodes_greedily():
    """Temperature 0 continues with the model's argmax at every step (the scores read from
    the full forward pass of the growing text), whatever the seed."""
    model = netspec.compile(netspec.load("gpt_tiny", overrides=GPT), seed=4)
    vocab = [ord(c) for c in "abcdefghijkl"]
    text = generate(model, vocab, "abc", 5, temperature=0, seed=1)
    assert text == generate(model, vocab, "abc", 5, temperature=0, seed=2)
    ids = [vocab.index(ord(c)) for c in "abc"]
    for _ in range(5):
        x = np.zeros((1, model.input_shape[0]), np.int64)
        x[0, :len(ids)] = ids
        ids.append(int(np.argmax(model.forward(x)[0, len(ids) - 1])))
    assert text == "".join(chr(vocab[i]) for i in ids)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, vocab, "abc", 5, temperature=-1)


def test_a_short_prompt_reads_the_scores_at_its_last_character():
    # Right padding is exact for a causal model: the padded steps change nothing before them.
    model = netspec.compile(netspec.load("gpt_tiny", overrides=GPT), seed=2)
    x = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    full = model.forward(x)[0, 2]
    p = next_token_distribution(model, [3, 1, 4])
    q = np.exp(full - full.max())
    np.testing.assert_allclose(p, q / q.sum(), rtol=1e-5)


def test_generate_is_seeded():
    model = netspec.compile(netspec.load("gpt_tiny", overrides=GPT), seed=3)
    vocab = [ord(c) for c in "abcdefghijkl"]
    a = generate(model, vocab, "abc", 10, seed=5)
    assert a == generate(model, vocab, "abc", 10, seed=5) and a.startswith("abc")
    assert len(a) == 13
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, vocab, "xyz", 3)


def _netspec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "netspec", *args], check=False, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_train_on_text_then_sample_from_the_cli(tmp_path):
    text = "the cat sat on the mat. " * 40
    (tmp_path / "corpus.txt").write_text(text)
    params = ["--param", "vocab=11", "--param", "context=8", "--param", "d=16",
              "--param", "layers=1", "--param", "heads=2"]
    run = _netspec("train", "gpt_tiny", "--data", "corpus.txt", *params, "--epochs", "1",
                   "--clip", "0.5", "--no-progress", "-o", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "test accuracy" in run.stdout
    sample = _netspec("sample", "gpt_tiny", *params, "--weights", "run/last.npz", "--prompt",
                      "the ", "--length", "20", "--top-k", "3", cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    out = sample.stdout.rstrip("\n")
    assert out.startswith("the ") and len(out) == 24 and set(out) <= set(text)
    bad = _netspec("sample", "gpt_tiny", *params, "--weights", "run/last.npz", "--prompt",
                   "€", cwd=tmp_path)
    assert bad.returncode != 0 and "outside the vocabulary" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_digits_are_read_row_by_row_by_a_sequence_network(tmp_path):
    run = _netspec("train", "lstm_digits", "--param", "hidden=16", "--epochs", "1", "--limit", "200",
                   "--no-progress", "-o", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert os.path.exists(tmp_path / "run" / "last.npz")


def test_alibi_gpt_weights_fit_any_context_and_a_prefix_scores_the_same():
    """gpt_alibi has no position table: its weights trained at one context load into the
    network at another, and (causal, penalties by distance only) the first T steps of a
    longer window get exactly the scores of the T-step window alone."""
    over = {"vocab": 11, "d": 16, "heads": 2, "layers": 2}
    short = netspec.compile(netspec.load("gpt_alibi", overrides={**over, "context": 6}),
                            dtype="float64", seed=0)
    long = netspec.compile(netspec.load("gpt_alibi", overrides={**over, "context": 10}),
                           dtype="float64", seed=1)
    assert long.load_state_dict(short.state_dict()).ok
    x = np.random.default_rng(7).integers(0, 11, (3, 10))
    np.testing.assert_allclose(long.forward(x)[:, :6], short.forward(x[:, :6]), rtol=1e-10,
                               atol=1e-12)
