"""Runtime: NumPy forward/backward pairs of the sequence ops (embedding, recurrences, attention).

Layouts follow PyTorch with batch_first=True: a sequence is (N, T, D), token ids (N, T)
integers. Recurrent weights are torch's (`weight_ih_l0` (G*H, I), `weight_hh_l0` (G*H, H), two
biases (G*H,), gates in torch's order: LSTM i, f, g, o; GRU r, z, n); attention's are
nn.MultiheadAttention's (in_proj_weight (3D, D), in_proj_bias (3D,), out_proj.weight (D, D),
out_proj.bias (D,)). The kernels are vectorized over the batch; only the recurrences loop, over
time steps. Every kernel here sees its samples independently (batchwise_*), except attention
with dropout, which draws the mask of the whole batch so a split batch sees the unsplit draws.
"""

import functools
import math

import numpy as np

from netspec.runtime.parallel import (
    Shards,
    batchwise_backward,
    batchwise_forward,
    run,
    split_like,
)

# ----------------------------------------------------------------------------------------------
# Per-position versions of linear, layer norm and softmax on (N, T, D) (layers.py dispatches)


def seq_linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    """out[n, t] = w @ x[n, t] + b. x: (N, T, D_in); w: (D_out, D_in) -> out: (N, T, D_out)."""
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def seq_linear_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, T, D_out) -> dx (or None), dw, db (None without a bias)."""
    x, w, has_bias = cache
    d2 = dout.reshape(-1, dout.shape[-1])
    dw = d2.T @ x.reshape(-1, x.shape[-1])
    db = d2.sum(axis=0) if has_bias else None
    return (dout @ w if need_dx else None), dw, db


def seq_layernorm_forward(x: np.ndarray, gamma, beta, eps: float = 1e-5):
    """LayerNorm(D) at every position: statistics over the last axis. x: (N, T, D)."""
    xc = x - x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    x_hat = xc * inv_std
    out = x_hat * gamma if gamma is not None else x_hat
    if beta is not None:
        out = out + beta
    return out, (x_hat, inv_std, gamma, beta is not None)


def seq_layernorm_backward(dout: np.ndarray, cache):
    """dout: (N, T, D) -> dx, dgamma (D,), dbeta (D,)."""
    x_hat, inv_std, gamma, has_beta = cache
    dx_hat = dout * gamma if gamma is not None else dout
    dgamma = np.einsum("ntd,ntd->d", dout, x_hat) if gamma is not None else None
    dbeta = dout.sum(axis=(0, 1)) if has_beta else None
    dx = dx_hat - dx_hat.mean(axis=-1, keepdims=True) \
        - x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True)
    dx *= inv_std
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------------
# Embeddings and positions


@batchwise_forward
def embedding_forward(x: np.ndarray, w: np.ndarray):
    """Look up token ids: out[n, t] = w[x[n, t]] (nn.Embedding).

    x: (N, T) integers in [0, V); w: (V, D) -> out: (N, T, D) in w's dtype.
    """
    ids = np.asarray(x)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding needs integer token ids, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise ValueError(f"token id {int(ids.max() if ids.max() >= w.shape[0] else ids.min())} "
                         f"is outside the vocabulary [0, {w.shape[0]})")
    return w[ids], (ids, w.shape)


@batchwise_backward
def embedding_backward(dout: np.ndarray, cache):
    """dout: (N, T, D) -> dx None (ids have no gradient), dw (V, D): the rows of dout summed
    per token id (sorted once, then one reduceat: no ufunc.at)."""
    ids, w_shape = cache
    flat = ids.ravel()
    rows = dout.reshape(-1, w_shape[1])
    dw = np.zeros(w_shape, dtype=dout.dtype)
    if flat.size:
        order = np.argsort(flat, kind="stable")
        sorted_ids = flat[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        dw[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return None, dw


@batchwise_forward
def pos_embedding_forward(x: np.ndarray, w: np.ndarray):
    """Add a learned position embedding: out[n, t] = x[n, t] + w[t]. x: (N, T, D); w: (T, D)."""
    return x + w, None


@batchwise_backward
def pos_embedding_backward(dout: np.ndarray, cache):
    """dout: (N, T, D) -> dx = dout, dw = sum over the batch (T, D)."""
    return dout, dout.sum(axis=0)


def sinusoid_table(t: int, d: int, dtype=np.float64) -> np.ndarray:
    """Vaswani et al. 2017: P[t, 2i] = sin(t / 10000^(2i/D)), P[t, 2i+1] = cos(the same)."""
    pos = np.arange(t, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, d, 2, dtype=np.float64) / d)
    table = np.zeros((t, d))
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq[: d // 2])
    return table.astype(dtype)


@batchwise_forward
def sinusoidal_forward(x: np.ndarray):
    """Add the fixed sinusoidal position table. x: (N, T, D), D even -> out: x's shape."""
    return x + sinusoid_table(x.shape[1], x.shape[2], x.dtype), None


@batchwise_backward
def sinusoidal_backward(dout: np.ndarray, cache):
    """dx = dout (the table is a constant)."""
    return dout


@batchwise_forward
def class_token_forward(x: np.ndarray, token: np.ndarray):
    """Prepend a learned token (ViT's [class]). x: (N, T, D); token: (D,) -> (N, T + 1, D)."""
    out = np.empty((x.shape[0], x.shape[1] + 1, x.shape[2]), dtype=x.dtype)
    out[:, 0] = token
    out[:, 1:] = x
    return out, None


@batchwise_backward
def class_token_backward(dout: np.ndarray, cache):
    """dout: (N, T + 1, D) -> dx (N, T, D), dtoken (D,)."""
    return dout[:, 1:], dout[:, 0].sum(axis=0)


@batchwise_forward
def patches_forward(x: np.ndarray, size: int):
    """Cut an image into non-overlapping size x size patches, each flattened in (C, p, p)
    order, patches in row-major order: (N, C, H, W) -> (N, HW/p², C p²). A linear layer on
    the patches equals a conv with kernel = stride = p (its weight reshaped to (D, C p²))."""
    n, c, h, w = x.shape
    p = size
    out = x.reshape(n, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return out.reshape(n, (h // p) * (w // p), c * p * p), (x.shape, p)


@batchwise_backward
def patches_backward(dout: np.ndarray, cache):
    """dout: (N, HW/p², C p²) -> dx (N, C, H, W)."""
    (_, c, h, w), p = cache
    n = dout.shape[0]
    dx = dout.reshape(n, h // p, w // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
    return dx.reshape(n, c, h, w)


# ----------------------------------------------------------------------------------------------
# Pooling over time


@batchwise_forward
def seq_mean_forward(x: np.ndarray):
    """Mean over time. x: (N, T, D) -> (N, D)."""
    return x.mean(axis=1), x.shape[1]


@batchwise_backward
def seq_mean_backward(dout: np.ndarray, cache):
    """dout: (N, D) -> dx (N, T, D), each step dout / T."""
    t = cache
    return np.broadcast_to((dout / t)[:, None, :], (dout.shape[0], t, dout.shape[1])).copy()


@batchwise_forward
def seq_select_forward(x: np.ndarray, index: int):
    """One time step: x[:, index] (index 0: the first, -1: the last). (N, T, D) -> (N, D)."""
    return x[:, index].copy(), (x.shape, index)


@batchwise_backward
def seq_select_backward(dout: np.ndarray, cache):
    """dout: (N, D) -> dx (N, T, D), zero but at the selected step."""
    shape, index = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    dx[:, index] = dout
    return dx


# ----------------------------------------------------------------------------------------------
# GELU: the exact form x Φ(x) (nn.GELU()) and the tanh approximation (GPT-2's)

_GELU_C = math.sqrt(2 / math.pi)

# NumPy has no erf and the runtime must stay NumPy-only (--standalone copies it into a file
# that imports nothing else), so erf is computed here, checked against math.erf and torch in
# tests/test_kernels_gradcheck.py:
# - float32: Numerical Recipes' Chebyshev fit of erfc (Press et al., "erfcc"), fractional
#   error below 1.2e-7 in float64 arithmetic: as close as float32 resolves, at about the cost
#   of tanh;
# - float64: the Maclaurin series below |x| = 2 (30 terms, Horner in x²) and the continued
#   fraction of erfc above (60 levels): within 1e-15 of math.erf.
_ERFC_NR = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
            -1.13520398, 1.48851587, -0.82215223, 0.17087277)
_ERF_SERIES = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(30))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf(x) elementwise in x's dtype (float32 or float64)."""
    z = np.abs(x)
    if x.dtype.itemsize <= 4:
        t = 1 / (1 + 0.5 * z)
        poly = _ERFC_NR[-1] * t + _ERFC_NR[-2]
        for c in _ERFC_NR[-3::-1]:
            poly *= t
            poly += c
        poly -= z * z
        return np.copysign(1 - t * np.exp(poly), x)
    out = np.empty_like(x)
    small = z < 2.0
    xs = x[small]
    x2 = xs * xs
    acc = np.full_like(xs, _ERF_SERIES[-1])
    for c in _ERF_SERIES[-2::-1]:
        acc *= x2
        acc += c
    out[small] = (2 / math.sqrt(math.pi)) * xs * acc
    zb = z[~small]
    # erfc(z) = exp(-z²) / sqrt(pi) / (z + (1/2) / (z + 1 / (z + (3/2) / (z + ...))))
    frac = zb.copy()
    for k in range(60, 0, -1):
        frac = zb + (k / 2) / frac
    out[~small] = np.copysign(1 - np.exp(-zb * zb) / (math.sqrt(math.pi) * frac), x[~small])
    return out


@batchwise_forward
def gelu_forward(x: np.ndarray, approximate: str = "none"):
    """x Φ(x) = 0.5 x (1 + erf(x / sqrt(2))) (nn.GELU()); approximate="tanh": 0.5 x (1 +
    tanh(sqrt(2/pi) (x + 0.044715 x³))) (GPT-2's, nn.GELU(approximate="tanh")). x: any shape."""
    if approximate == "tanh":
        th = np.tanh(_GELU_C * (x + 0.044715 * x * x * x))
        return 0.5 * x * (1 + th), (x, th, approximate)
    cdf = 0.5 * (1 + _erf(x * (1 / math.sqrt(2))))
    return x * cdf, (x, cdf, approximate)


@batchwise_backward
def gelu_backward(dout: np.ndarray, cache):
    """exact: d/dx = Φ(x) + x φ(x), φ(x) = exp(-x²/2) / sqrt(2 pi); tanh: 0.5 (1 + th) +
    0.5 x (1 - th²) sqrt(2/pi) (1 + 3 * 0.044715 x²)."""
    x, term, approximate = cache
    if approximate == "tanh":
        inner = _GELU_C * (1 + 3 * 0.044715 * x * x)
        return dout * (0.5 * (1 + term) + 0.5 * x * (1 - term * term) * inner)
    return dout * (term + x * np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi)))


# ----------------------------------------------------------------------------------------------
# Recurrences: one direction of one layer is a cell; _recurrent_* stacks layers and directions.


def _sigmoid(a: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow warning for large |a|
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _rnn_cell_forward(x, w_ih, w_hh, b_ih, b_hh):
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh). x: (N, T, I) -> hs (N, T, H)."""
    n, t_len, _ = x.shape
    h = np.zeros((n, w_hh.shape[1]), dtype=x.dtype)
    xw = x @ w_ih.T + (b_ih + b_hh)
    hs = np.empty((n, t_len, h.shape[1]), dtype=x.dtype)
    for t in range(t_len):
        h = np.tanh(xw[:, t] + h @ w_hh.T)
        hs[:, t] = h
    return hs, (x, w_ih, w_hh, hs)


def _rnn_cell_backward(dhs, cache):
    x, w_ih, w_hh, hs = cache
    n, t_len, hidden = hs.shape
    da = np.empty_like(hs)
    dh = np.zeros((n, hidden), dtype=hs.dtype)
    for t in reversed(range(t_len)):
        dh = dh + dhs[:, t]
        da[:, t] = dh * (1 - hs[:, t] * hs[:, t])
        dh = da[:, t] @ w_hh
    return _input_grads(da, x, w_ih, hs, w_hh, da)


def _lstm_cell_forward(x, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.LSTM's cell, gates i, f, g, o: c_t = f c_{t-1} + i g, h_t = o tanh(c_t)."""
    n, t_len, _ = x.shape
    hidden = w_hh.shape[1]
    xw = x @ w_ih.T + (b_ih + b_hh)
    gates = np.empty((n, t_len, 4 * hidden), dtype=x.dtype)  # i, f, g, o after activation
    cs = np.empty((n, t_len, hidden), dtype=x.dtype)
    hs = np.empty_like(cs)
    h = np.zeros((n, hidden), dtype=x.dtype)
    c = np.zeros_like(h)
    for t in range(t_len):
        a = xw[:, t] + h @ w_hh.T
        g = gates[:, t]
        g[:, :2 * hidden] = _sigmoid(a[:, :2 * hidden])
        g[:, 2 * hidden:3 * hidden] = np.tanh(a[:, 2 * hidden:3 * hidden])
        g[:, 3 * hidden:] = _sigmoid(a[:, 3 * hidden:])
        c = g[:, hidden:2 * hidden] * c + g[:, :hidden] * g[:, 2 * hidden:3 * hidden]
        cs[:, t] = c
        h = g[:, 3 * hidden:] * np.tanh(c)
        hs[:, t] = h
    return hs, (x, w_ih, w_hh, gates, cs, hs)


def _lstm_cell_backward(dhs, cache):
    x, w_ih, w_hh, gates, cs, hs = cache
    n, t_len, hidden = hs.shape
    da = np.empty_like(gates)
    dh = np.zeros((n, hidden), dtype=hs.dtype)
    dc = np.zeros_like(dh)
    for t in reversed(range(t_len)):
        i, f = gates[:, t, :hidden], gates[:, t, hidden:2 * hidden]
        g, o = gates[:, t, 2 * hidden:3 * hidden], gates[:, t, 3 * hidden:]
        c_prev = cs[:, t - 1] if t else np.zeros_like(dc)
        tanh_c = np.tanh(cs[:, t])
        dh = dh + dhs[:, t]
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        d = da[:, t]
        d[:, :hidden] = dc * g * i * (1 - i)
        d[:, hidden:2 * hidden] = dc * c_prev * f * (1 - f)
        d[:, 2 * hidden:3 * hidden] = dc * i * (1 - g * g)
        d[:, 3 * hidden:] = dh * tanh_c * o * (1 - o)
        dc = dc * f
        dh = d @ w_hh
    return _input_grads(da, x, w_ih, hs, w_hh, da)


def _gru_cell_forward(x, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.GRU's cell, gates r, z, n: n = tanh(W_in x + b_in + r (W_hn h + b_hn)),
    h_t = (1 - z) n + z h_{t-1}."""
    n_batch, t_len, _ = x.shape
    hidden = w_hh.shape[1]
    xw = x @ w_ih.T + b_ih
    gates = np.empty((n_batch, t_len, 3 * hidden), dtype=x.dtype)  # r, z, n
    hn = np.empty((n_batch, t_len, hidden), dtype=x.dtype)  # W_hn h + b_hn
    hs = np.empty_like(hn)
    h = np.zeros((n_batch, hidden), dtype=x.dtype)
    for t in range(t_len):
        hw = h @ w_hh.T + b_hh
        g = gates[:, t]
        g[:, :2 * hidden] = _sigmoid(xw[:, t, :2 * hidden] + hw[:, :2 * hidden])
        hn[:, t] = hw[:, 2 * hidden:]
        g[:, 2 * hidden:] = np.tanh(xw[:, t, 2 * hidden:] + g[:, :hidden] * hn[:, t])
        z = g[:, hidden:2 * hidden]
        h = (1 - z) * g[:, 2 * hidden:] + z * h
        hs[:, t] = h
    return hs, (x, w_ih, w_hh, gates, hn, hs)


def _gru_cell_backward(dhs, cache):
    x, w_ih, w_hh, gates, hn, hs = cache
    n_batch, t_len, hidden = hs.shape
    dxw = np.empty_like(gates)  # gradient of W_ih x + b_ih
    dhw = np.empty_like(gates)  # gradient of W_hh h + b_hh
    dh = np.zeros((n_batch, hidden), dtype=hs.dtype)
    for t in reversed(range(t_len)):
        r, z, nn = gates[:, t, :hidden], gates[:, t, hidden:2 * hidden], gates[:, t, 2 * hidden:]
        h_prev = hs[:, t - 1] if t else np.zeros_like(dh)
        dh = dh + dhs[:, t]
        dan = dh * (1 - z) * (1 - nn * nn)
        dar = dan * hn[:, t] * r * (1 - r)
        daz = dh * (h_prev - nn) * z * (1 - z)
        dxw[:, t, :hidden], dxw[:, t, hidden:2 * hidden], dxw[:, t, 2 * hidden:] = dar, daz, dan
        dhw[:, t, :hidden], dhw[:, t, hidden:2 * hidden] = dar, daz
        dhw[:, t, 2 * hidden:] = dan * r
        dh = dh * z + dhw[:, t] @ w_hh
    return _input_grads(dxw, x, w_ih, hs, w_hh, dhw)


def _input_grads(dxw, x, w_ih, hs, w_hh, dhw):
    """From the per-step gradients of the input and hidden products to dx and the weights:
    one GEMM each over all (sample, step) rows. h_{t-1} is hs shifted by one (h_{-1} = 0)."""
    i_dim, g_dim = x.shape[-1], dxw.shape[-1]
    h_prev = np.zeros_like(hs)
    h_prev[:, 1:] = hs[:, :-1]
    dx = dxw @ w_ih
    dw_ih = dxw.reshape(-1, g_dim).T @ x.reshape(-1, i_dim)
    dw_hh = dhw.reshape(-1, g_dim).T @ h_prev.reshape(-1, hs.shape[-1])
    return dx, dw_ih, dw_hh, dxw.sum(axis=(0, 1)), dhw.sum(axis=(0, 1))


CELLS = {
    "rnn": (_rnn_cell_forward, _rnn_cell_backward),
    "lstm": (_lstm_cell_forward, _lstm_cell_backward),
    "gru": (_gru_cell_forward, _gru_cell_backward),
}


def _recurrent_forward(cell: str, x, weights, layers: int, bidirectional: bool, last: bool):
    """Stack `layers` layers of `cell`, each one direction or two (the backward direction reads
    the sequence reversed; outputs concatenated [forward, backward] along features).

    x: (N, T, I); weights: torch's order, per layer and direction (weight_ih, weight_hh,
    bias_ih, bias_hh) -> out (N, T, H * dirs), or with last=True the final hidden state of each
    direction (N, H * dirs): torch's cat(h_n[-2], h_n[-1]) for two, output[:, -1] for one.
    """
    forward, _ = CELLS[cell]
    dirs = 2 if bidirectional else 1
    caches, inp = [], x
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            w = weights[4 * (layer * dirs + d): 4 * (layer * dirs + d) + 4]
            hs, cache = forward(inp[:, ::-1] if d else inp, *w)
            outs.append(hs[:, ::-1] if d else hs)
            caches.append(cache)
        inp = np.concatenate(outs, axis=-1) if dirs == 2 else outs[0]
    if last:
        hidden = weights[1].shape[1]
        out = inp[:, -1].copy() if dirs == 1 else \
            np.concatenate([inp[:, -1, :hidden], inp[:, 0, hidden:]], axis=-1)
    else:
        out = inp
    return out, (cell, caches, layers, dirs, last, inp.shape)


def _recurrent_backward(dout, cache):
    cell, caches, layers, dirs, last, seq_shape = cache
    _, backward = CELLS[cell]
    hidden = seq_shape[-1] // dirs
    if last:
        dseq = np.zeros(seq_shape, dtype=dout.dtype)
        dseq[:, -1, :hidden] = dout[:, :hidden]
        if dirs == 2:
            dseq[:, 0, hidden:] = dout[:, hidden:]
    else:
        dseq = dout
    grads = [None] * (4 * layers * dirs)
    for layer in reversed(range(layers)):
        dx = None
        for d in range(dirs):
            k = layer * dirs + d
            dhs = dseq[..., d * hidden:(d + 1) * hidden]
            dxd, *dw = backward(dhs[:, ::-1] if d else dhs, caches[k])
            dxd = dxd[:, ::-1] if d else dxd
            dx = dxd if dx is None else dx + dxd
            grads[4 * k: 4 * k + 4] = dw
        dseq = dx
    return (np.ascontiguousarray(dseq), *grads)


@batchwise_forward
def rnn_forward(x, *weights, layers: int = 1, bidirectional: bool = False, last: bool = False):
    """nn.RNN (tanh, batch_first). x: (N, T, I); weights per layer and direction: weight_ih
    (H, I), weight_hh (H, H), bias_ih (H,), bias_hh (H,) -> (N, T, H dirs) or (N, H dirs)."""
    return _recurrent_forward("rnn", x, weights, layers, bidirectional, last)


@batchwise_backward
def rnn_backward(dout, cache):
    """-> dx, then a gradient per weight in the forward's order."""
    return _recurrent_backward(dout, cache)


@batchwise_forward
def lstm_forward(x, *weights, layers: int = 1, bidirectional: bool = False, last: bool = False):
    """nn.LSTM (batch_first). x: (N, T, I); weights per layer and direction: weight_ih (4H, I),
    weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,) -> (N, T, H dirs) or (N, H dirs)."""
    return _recurrent_forward("lstm", x, weights, layers, bidirectional, last)


@batchwise_backward
def lstm_backward(dout, cache):
    """-> dx, then a gradient per weight in the forward's order."""
    return _recurrent_backward(dout, cache)


@batchwise_forward
def gru_forward(x, *weights, layers: int = 1, bidirectional: bool = False, last: bool = False):
    """nn.GRU (batch_first). x: (N, T, I); weights per layer and direction: weight_ih (3H, I),
    weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,) -> (N, T, H dirs) or (N, H dirs)."""
    return _recurrent_forward("gru", x, weights, layers, bidirectional, last)


@batchwise_backward
def gru_backward(dout, cache):
    """-> dx, then a gradient per weight in the forward's order."""
    return _recurrent_backward(dout, cache)


# ----------------------------------------------------------------------------------------------
# Multi-head self-attention (nn.MultiheadAttention with query = key = value)


@functools.lru_cache(maxsize=32)
def alibi_bias(heads: int, t: int, base: float, causal: bool, dtype: np.dtype) -> np.ndarray:
    """ALiBi (Press et al. 2022, "Train Short, Test Long"): (heads, t, t), what head h = 1..H
    adds to its scores at (i, j): -m_h |i - j| with slope m_h = 2^(-base h / H) (the paper's
    base is 8), so far steps weigh less; causal: -inf above the diagonal as well. Read-only
    (cached: the same array for every batch)."""
    slopes = 2.0 ** (-base * np.arange(1, heads + 1) / heads)
    i = np.arange(t)
    bias = -slopes[:, None, None] * np.abs(i[:, None] - i[None, :])
    if causal:
        bias[:, np.triu(np.ones((t, t), dtype=bool), 1)] = -np.inf
    bias = bias.astype(dtype)
    bias.flags.writeable = False
    return bias


def _attention(x, w_in, b_in, w_out, b_out, heads: int, causal: bool, alibi: float, keep):
    """One shard. keep: the scaled dropout keep-mask of the weights (N, heads, T, T) or None."""
    n, t, d = x.shape
    dh = d // heads
    qkv = x @ w_in.T
    if b_in is not None:
        qkv += b_in
    # (N, T, 3, heads, dh) -> three (N, heads, T, dh)
    q, k, v = qkv.reshape(n, t, 3, heads, dh).transpose(2, 0, 3, 1, 4)
    scale = 1 / math.sqrt(dh)
    scores = (q * scale) @ k.transpose(0, 1, 3, 2)
    if alibi:  # the distance penalty, and the causal mask with it
        scores += alibi_bias(heads, t, alibi, causal, scores.dtype)
    elif causal:  # position i attends to j <= i; exp(-inf) = 0 exactly
        scores[..., np.triu(np.ones((t, t), dtype=bool), 1)] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)  # the diagonal is never masked: finite
    p = np.exp(scores, out=scores)
    p /= p.sum(axis=-1, keepdims=True)
    pd = p * keep if keep is not None else p
    ctx = (pd @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    out = ctx @ w_out.T
    if b_out is not None:
        out += b_out
    return out, (x, w_in, w_out, q, k, v, p, keep, ctx, scale, b_in is not None,
                 b_out is not None)


def attention_forward(x, w_in, b_in, w_out, b_out, heads: int = 1, causal: bool = False,
                      dropout: float = 0.0, alibi: float = 0.0, train: bool = False, rng=None):
    """Multi-head self-attention, softmax(Q Kᵀ / sqrt(d_head)) V per head, then out_proj.

    x: (N, T, D); w_in: (3D, D) = [W_q; W_k; W_v]; b_in: (3D,) or None; w_out: (D, D); b_out:
    (D,) or None -> out (N, T, D). causal: position i sees positions <= i only. dropout: drop
    probability of the attention weights at train time (inverted, as torch)."""
    split = isinstance(x, Shards)
    n = sum(x.sizes) if split else x.shape[0]
    t = (x[0] if split else x).shape[1]
    keep = None
    if train and dropout > 0:
        dtype = (x[0] if split else x).dtype
        keep = (rng.random((n, heads, t, t), dtype=np.float32) >= dropout).astype(dtype)
        keep *= 1 / (1 - dropout)
    if not split:
        return _attention(x, w_in, b_in, w_out, b_out, heads, causal, alibi, keep)
    keeps = split_like(keep, x.sizes) if keep is not None else [None] * len(x)
    results = run(lambda xk, kk: _attention(xk, w_in, b_in, w_out, b_out, heads, causal, alibi,
                                            kk), x, keeps)
    return Shards(r[0] for r in results), Shards(r[1] for r in results)


@batchwise_backward
def attention_backward(dout, cache):
    """dout: (N, T, D) -> dx, d in_proj_weight, d in_proj_bias, d out_proj.weight,
    d out_proj.bias (None for an absent bias)."""
    x, w_in, w_out, q, k, v, p, keep, ctx, scale, has_b_in, has_b_out = cache
    n, t, d = x.shape
    heads, dh = q.shape[1], q.shape[3]
    d2 = dout.reshape(-1, d)
    dw_out = d2.T @ ctx.reshape(-1, d)
    db_out = d2.sum(axis=0) if has_b_out else None
    dctx = (dout @ w_out).reshape(n, t, heads, dh).transpose(0, 2, 1, 3)
    pd = p * keep if keep is not None else p
    dv = pd.transpose(0, 1, 3, 2) @ dctx
    dp = dctx @ v.transpose(0, 1, 3, 2)
    if keep is not None:
        dp *= keep
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))  # masked entries: p = 0, ds = 0
    ds *= scale
    dq = ds @ k
    dk = ds.transpose(0, 1, 3, 2) @ q
    dqkv = np.stack([dq, dk, dv], axis=2).transpose(0, 3, 2, 1, 4).reshape(n, t, 3 * d)
    dw_in = dqkv.reshape(-1, 3 * d).T @ x.reshape(-1, d)
    db_in = dqkv.sum(axis=(0, 1)) if has_b_in else None
    return dqkv @ w_in, dw_in, db_in, dw_out, db_out
