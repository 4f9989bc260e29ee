"""Compiled sequence networks against PyTorch modules with the same weights (float64): the
bundled transformer blocks against nn.TransformerEncoderLayer, the digits LSTM/GRU against
nn.LSTM/nn.GRU + nn.Linear, a small GPT against nn.Embedding + nn.TransformerEncoder. State
dicts move by name (torch's names, no mapping), outputs and every gradient agree."""
import numpy as np
import pytest

import netspec

torch = pytest.importorskip("torch")
nn = torch.nn
RTOL, ATOL = 1e-7, 1e-10


def block_net(block: str, args: str, t: int = 5, d: int = 8) -> str:
    return f"""import "blocks/transformer.net"
network n {{ input x: [{t}, {d}]
    output x -> enc: {block}({args}) }}"""


def torch_layer(norm_first: bool, gelu: bool, d: int = 8, heads: int = 2, ff: int = 16):
    act = nn.GELU() if gelu else nn.ReLU()
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation=act,
                                       batch_first=True, norm_first=norm_first,
                                       dtype=torch.float64)
    with torch.no_grad():  # non-zero biases, so every bias gradient is tested
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


def compare(model, module, x, prefix="", mask=None, y=None, rtol=RTOL):
    """Load module's weights into model (names with `prefix`), run both in train mode, and
    compare outputs, dL/dx and every parameter gradient."""
    state = {prefix + k: v.detach().numpy() for k, v in module.state_dict().items()}
    report = model.load_state_dict(state)
    assert report.ok, report
    rng = np.random.default_rng(0)
    out = model.forward(x, train=True)
    dout = rng.standard_normal(out.shape)
    dx = model.backward(dout)
    module.train()
    xt = torch.tensor(x, requires_grad=x.dtype.kind == "f")
    expected = module(xt, src_mask=mask) if mask is not None else module(xt)
    expected.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=rtol, atol=ATOL)
    if dx is not None:
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol, atol=ATOL, err_msg="dx")
    for name, p in module.named_parameters():
        np.testing.assert_allclose(model.grads[prefix + name], p.grad.numpy(), rtol=rtol,
                                   atol=ATOL, err_msg=name)


@pytest.mark.parametrize("gelu", [False, True])
def test_post_norm_block_equals_transformer_encoder_layer(gelu):
    torch.manual_seed(0)
    src = block_net("encoder_post", f"8, 2, 16, drop=0.0, gelu={'true' if gelu else 'false'}")
    model = netspec.compile(netspec.parse(src, filename="specs/t.net"), dtype="float64")
    x = np.random.default_rng(1).standard_normal((3, 5, 8))
    compare(model, torch_layer(False, gelu), x, prefix="enc.")


def test_pre_norm_block_equals_norm_first_encoder_layer():
    torch.manual_seed(1)
    src = block_net("encoder_pre", "8, 2, 16, drop=0.0")
    model = netspec.compile(netspec.parse(src, filename="specs/t.net"), dtype="float64")
    x = np.random.default_rng(2).standard_normal((3, 5, 8))
    compare(model, torch_layer(True, True), x, prefix="enc.")


def test_decoder_block_equals_encoder_layer_with_a_causal_mask():
    torch.manual_seed(2)
    src = block_net("decoder", "8, 2, 16, drop=0.0")
    model = netspec.compile(netspec.parse(src, filename="specs/t.net"), dtype="float64")
    x = np.random.default_rng(3).standard_normal((2, 5, 8))
    mask = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    compare(model, torch_layer(True, True), x, prefix="enc.", mask=mask)


class RowClassifier(nn.Module):
    def __init__(self, cell, hidden=12):
        super().__init__()
        setattr(self, cell, getattr(nn, cell.upper())(8, hidden, batch_first=True,
                                                      dtype=torch.float64))
        self.cell = cell
        self.fc = nn.Linear(hidden, 10, dtype=torch.float64)

    def forward(self, x):
        out, _ = getattr(self, self.cell)(x)
        return self.fc(out[:, -1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_digits_row_classifier_equals_torch(cell):
    torch.manual_seed(3)
    model = netspec.compile(netspec.load(f"{cell}_digits", overrides={"hidden": 12}),
                            dtype="float64")
    x = np.random.default_rng(4).standard_normal((4, 8, 8))
    compare(model, RowClassifier(cell), x)


class TinyGPT(nn.Module):
    """The GPT of specs/gpt_tiny.net written in torch: the same names. alibi=b: the GPT of
    specs/gpt_alibi.net instead, no position table and ALiBi's penalty in the causal mask."""

    def __init__(self, vocab, context, d, heads, layers, alibi=0.0):
        super().__init__()
        f64 = {"dtype": torch.float64}
        self.tok = nn.Embedding(vocab, d, **f64)
        self.pos = None
        if not alibi:
            self.pos = nn.Module()
            self.pos.weight = nn.Parameter(0.1 * torch.randn(context, d, **f64))
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True,
                                           norm_first=True, activation=nn.GELU(), **f64)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).layers
        self.norm = nn.LayerNorm(d, **f64)
        self.head = nn.Linear(d, vocab, **f64)
        self.mask = nn.Transformer.generate_square_subsequent_mask(context, **f64)
        if alibi:  # Press et al. 2022: head h of H subtracts 2^(-b h / H) per step back
            slopes = torch.tensor([2 ** (-alibi * h / heads) for h in range(1, heads + 1)],
                                  **f64)
            back = torch.arange(context)[:, None] - torch.arange(context)[None, :]
            self.mask = self.mask - slopes[:, None, None] * back.clamp(min=0)

    def forward(self, x):
        h = self.tok(x) + (self.pos.weight if self.pos is not None else 0)
        mask = self.mask if self.mask.dim() == 2 else self.mask.repeat(x.shape[0], 1, 1)
        for layer in self.layers:
            h = layer(h, src_mask=mask, is_causal=self.mask.dim() == 2)
        return self.head(self.norm(h))


def test_gpt_spec_equals_torch_gpt():
    torch.manual_seed(4)
    over = {"vocab": 11, "context": 6, "d": 8, "heads": 2, "layers": 2, "drop": 0.0}
    model = netspec.compile(netspec.load("gpt_tiny", overrides=over), dtype="float64")
    x = np.random.default_rng(5).integers(0, 11, (3, 6))
    gpt = TinyGPT(11, 6, 8, 2, 2)
    compare(model, gpt, x)


@pytest.mark.parametrize("alibi", [1.0, 8.0])
def test_alibi_gpt_spec_equals_torch_gpt_with_the_penalty_in_its_mask(alibi):
    torch.manual_seed(5)
    over = {"vocab": 11, "context": 7, "d": 12, "heads": 3, "layers": 2, "drop": 0.0,
            "alibi": alibi}
    model = netspec.compile(netspec.load("gpt_alibi", overrides=over), dtype="float64")
    x = np.random.default_rng(6).integers(0, 11, (3, 7))
    compare(model, TinyGPT(11, 7, 12, 3, 2, alibi=alibi), x)


def test_alibi_slopes_are_the_papers():
    """Press et al. 2022, section 3: for 8 heads the slopes are 1/2, 1/4, ..., 1/256, for 16
    heads 1/2^0.5, 1/2, ..., 1/256 (base 8); a step j after i is masked when causal."""
    from netspec.runtime.sequence import alibi_bias

    for heads in (8, 16):
        bias = alibi_bias(heads, 4, 8.0, True, np.dtype("float64"))
        slopes = -bias[:, 1, 0]
        np.testing.assert_allclose(slopes, [2 ** (-8 * h / heads) for h in range(1, heads + 1)])
        assert slopes[-1] == 1 / 256 and (heads != 8 or slopes[0] == 0.5)
        np.testing.assert_array_equal(bias[:, 3, 0], 3 * bias[:, 1, 0])
        assert np.isneginf(bias[:, 0, 1]).all()
        assert (np.diagonal(bias, axis1=1, axis2=2) == 0).all()
