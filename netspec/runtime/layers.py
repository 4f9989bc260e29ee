"""Runtime: NumPy forward/backward kernel pairs for every layer op (CS231n-style, cache = state).

Conventions, shared by every pair below:
- `X_forward(inputs..., params..., **attrs) -> (out, cache)`, `X_backward(dout, cache)` returns
  `dx` for an op without parameters, `(dx, d<param>...)` in the forward's parameter order for
  an op with parameters, and a list of dx for multi-input ops (concat, add).
- Layouts: activations (N, C, H, W) or (N, D); conv weight (C_out, C_in/groups, KH, KW); linear
  weight (D_out, D_in) (PyTorch layouts); a bias or affine parameter may be None and its
  gradient is then None. Spatial tuples are (h, w).
- The input dtype is preserved (float32 in training, float64 for gradient checks).
- A returned gradient may alias `dout` (identity, add, concat, flatten): treat it as read-only.
- A backward whose dx is costly (conv2d, linear) takes `need_dx=False` to return None for dx
  and skip it: the layers reading the network input, when only parameter gradients are wanted.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from netspec.runtime.im2col import (
    col2im,
    conv_output_size,
    im2col,
    offset_slices,
    pad2d,
    window_view,
)
from netspec.runtime.parallel import (
    Shards,
    batchwise_backward,
    batchwise_forward,
    run,
    shards_running,
    split_like,
    sum_shards,
)
from netspec.runtime.sequence import (
    seq_layernorm_backward,
    seq_layernorm_forward,
    seq_linear_backward,
    seq_linear_forward,
)
from netspec.runtime.winograd import (
    winograd_applies,
    winograd_conv,
    winograd_filter_gradient,
    winograd_filters,
    winograd_weight_gradient,
)


def _pair(value) -> tuple[int, int]:
    """(h, w) from an int or a 2-sequence, so (1, 1), [1, 1] and 1 mean the same stride."""
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    h, w = value
    return (int(h), int(w))


# ----------------------------------------------------------------------------------------------
# Linear


@batchwise_forward
def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    """out = x @ w.T + b.

    x: (N, ...) flattened to (N, D_in); w: (D_out, D_in); b: (D_out,) or None -> out: (N, D_out).
    A sequence x (N, T, D_in) is not flattened: every position is mapped, out (N, T, D_out).
    """
    if x.ndim == 3:
        return seq_linear_forward(x, w, b)
    x2 = x.reshape(x.shape[0], -1)
    out = x2 @ w.T
    if b is not None:
        out += b
    return out, (x2, w, x.shape, b is not None)


@batchwise_backward
def linear_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, D_out) -> dx (x's shape; None unless need_dx), dw (D_out, D_in), db (D_out,)
    or None."""
    if dout.ndim == 3:
        return seq_linear_backward(dout, cache, need_dx)
    x2, w, x_shape, has_bias = cache
    dx = (dout @ w).reshape(x_shape) if need_dx else None
    dw = dout.T @ x2
    db = dout.sum(axis=0) if has_bias else None
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# Convolution


# A conv builds im2col columns for at most this many samples at a time, in the forward and
# again in the backward (the columns are not cached): a step's memory stays near PyTorch's
# (the columns are 9x the input of a 3x3 conv) while the GEMMs stay wide (8 samples of a
# 16x16 map are 2,048 columns). docs/performance.md, "Memory" has the measurements.
CONV_CHUNK = 8


def _chunks(n: int) -> list[slice]:
    """The batch [0, n) in slices of CONV_CHUNK samples, or of CONV_CHUNK / shards when the
    batch is split over threads (their chunks exist at the same time: a split step holds
    the workspace of CONV_CHUNK samples, as an unsplit one)."""
    step = max(1, CONV_CHUNK // shards_running())
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _conv_gemm(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Grouped cross-correlation plus bias: per chunk of CONV_CHUNK samples, the im2col
    matrix and one GEMM per group on it, or Winograd F(2x2, 3x3) where winograd_applies
    (netspec.runtime.winograd: the filters transformed once per call), written into out.

    x: (N, C_in, H, W); w: (C_out, C_in/groups, KH, KW); b: (C_out,) or None
    -> out (N, C_out, OH, OW) (a new array unless given).
    """
    n, _, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    oh = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
    if out is None:
        out = np.empty((n, c_out, oh, ow), dtype=np.result_type(x, w))
    if winograd_applies(w.shape, stride, dilation, groups, (oh, ow)):
        u = winograd_filters(w)
        for s in _chunks(n):
            winograd_conv(x[s], u, b, padding, out[s])
        return out
    k = cg * kh * kw
    w_g = w.reshape(groups, c_out // groups, k)
    for s in _chunks(n):
        cols = im2col(x[s], (kh, kw), stride, padding, dilation)
        # (G, C_out/G, K) @ (G, K, n*P) -> (G, C_out/G, n*P) = (C_out, n, OH, OW)
        out_cn = np.matmul(w_g, cols.reshape(groups, k, -1))
        del cols
        out_cn = out_cn.reshape(c_out, -1, oh, ow).transpose(1, 0, 2, 3)
        if b is None:
            np.copyto(out[s], out_cn)
        else:  # the bias rides on the copy that puts the batch axis first
            np.add(out_cn, b.reshape(1, -1, 1, 1), out=out[s])
    return out


@batchwise_forward
def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
):
    """2-D convolution (cross-correlation, as torch.nn.functional.conv2d), zero padding.

    x: (N, C_in, H, W); w: (C_out, C_in/groups, KH, KW); b: (C_out,) or None
    -> out: (N, C_out, OH, OW), OH = (H + 2P - D*(KH-1) - 1) // S + 1.
    The cache keeps x (the backward builds the im2col columns again, chunk by chunk) and w;
    a 1x1 conv with stride 1, no padding and one group skips im2col altogether.
    """
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels, weight {w.shape} with groups={groups}"
        )
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if _pointwise(w, stride, padding, groups):
        out, x3 = _pointwise_forward(x, w, b)
        return out, (None, w, x.shape, b is not None, stride, padding, dilation, groups, x3)
    out = _conv_gemm(x, w, b, stride, padding, dilation, groups)
    return out, (x, w, x.shape, b is not None, stride, padding, dilation, groups, None)


def _pointwise(w: np.ndarray, stride, padding, groups: int) -> bool:
    """A 1x1 conv with stride 1, no padding and one group: a per-pixel linear map."""
    return w.shape[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0) and groups == 1


def _pointwise_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    """out[n] = w @ x[n] over the pixels (C_out, C_in) @ (C_in, H*W): one GEMM per sample,
    written straight into the (N, C_out, H, W) layout, without im2col (for a 1x1 conv it would
    only be a channels-first copy of x) or a layout copy of the output. -> out, x as
    (N, C_in, H*W), the view the backward reads."""
    n, c, h, wd = x.shape
    x3 = x.reshape(n, c, h * wd)
    out = np.matmul(w.reshape(w.shape[0], c), x3)
    if b is not None:
        out += b.reshape(1, -1, 1)
    return out.reshape(n, -1, h, wd), x3


def _pointwise_backward(dout: np.ndarray, w: np.ndarray, x3: np.ndarray, has_bias: bool,
                        need_dx: bool):
    """The gradients of _pointwise_forward. dw sums the per-sample products dout[n] @ x[n]^T
    ((N, C_out, C_in), no larger than x when C_out <= H*W), or else is one GEMM on
    channels-first copies of dout and x (no larger than dout and x); dx[n] = w^T @ dout[n]."""
    n, c, hw = x3.shape
    c_out = w.shape[0]
    d3 = dout.reshape(n, c_out, hw)
    if c_out <= hw:
        dw = np.matmul(d3, x3.transpose(0, 2, 1)).sum(axis=0)
    else:
        dout_cn = np.ascontiguousarray(d3.transpose(1, 0, 2)).reshape(c_out, n * hw)
        x_cn = np.ascontiguousarray(x3.transpose(1, 0, 2)).reshape(c, n * hw)
        dw = dout_cn @ x_cn.T
    db = d3.sum(axis=(0, 2)) if has_bias else None
    dx = np.matmul(w.reshape(c_out, c).T, d3).reshape(dout.shape[0], c, *dout.shape[2:]) \
        if need_dx else None
    return dx, dw.reshape(w.shape), db


@batchwise_backward
def conv2d_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, C_out, OH, OW) -> dx (N, C_in, H, W; None unless need_dx), dw (w's shape),
    db (C_out,) or None.

    Chunk by chunk of CONV_CHUNK samples: the im2col columns of x are built again, dw gets
    one GEMM per group against them (summed over the chunks), and dx is computed. With
    stride 1, dx is itself a convolution (dout padded by D*(K-1)-P, correlated with the
    flipped, group-transposed weight): an im2col plus a GEMM, which beats the
    GEMM-then-col2im scatter; other strides use col2im. Where winograd_applies (3x3,
    stride 1, enough channels and pixels), dw is accumulated in the Winograd domain (V
    rebuilt from x per chunk) and transformed back once, and dx, a convolution of dout,
    runs by Winograd too when the rule holds for its own shape.
    """
    x, w, x_shape, has_bias, stride, padding, dilation, groups, x3 = cache
    if x3 is not None:  # a pointwise conv (_pointwise_forward)
        return _pointwise_backward(dout, w, x3, has_bias, need_dx)
    c_out = dout.shape[1]
    _, cg, kh, kw = w.shape
    k = cg * kh * kw
    full_pad = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    as_conv = stride == (1, 1) and min(full_pad) >= 0
    if need_dx and as_conv:
        # (C_out, C_in/G, KH, KW) -> (C_in, C_out/G, KH, KW), flipped in both spatial axes.
        w_t = w.reshape(groups, c_out // groups, cg, kh, kw).transpose(0, 2, 1, 3, 4)
        w_t = np.ascontiguousarray(w_t[..., ::-1, ::-1]).reshape(
            groups * cg, c_out // groups, kh, kw
        )
    dx = np.empty(x_shape, dtype=dout.dtype) if need_dx else None
    # Winograd for dw (this conv's shape) and for dx (the convolution of dout, its own shape).
    wino_dw = winograd_applies(w.shape, stride, dilation, groups, dout.shape[2:])
    u_t = winograd_filters(w_t) if need_dx and as_conv and winograd_applies(
        w_t.shape, stride, dilation, groups, x_shape[2:]) else None
    dw = np.empty(w.shape if not wino_dw else (16, c_out, cg), dtype=np.result_type(dout, w))
    dw_g = dw.reshape(groups, c_out // groups, -1)  # or dU (16, C_out, C_in) for Winograd
    for s in _chunks(len(dout)):
        if wino_dw:  # the transformed dw, dU = dM @ V^T, summed over the chunks
            if s.start == 0:
                winograd_weight_gradient(x[s], dout[s], padding, out=dw)
            else:
                dw += winograd_weight_gradient(x[s], dout[s], padding)
        else:
            _im2col_weight_gradient(x[s], dout[s], dw_g, s.start == 0, (kh, kw), stride,
                                    padding, dilation)
        if not need_dx:  # the network input's gradient, which training does not use
            continue
        if u_t is not None:
            winograd_conv(dout[s], u_t, None, full_pad, dx[s])
        elif as_conv:
            _conv_gemm(dout[s], w_t, None, (1, 1), full_pad, dilation, groups, out=dx[s])
        else:
            dout_g = dout[s].transpose(1, 0, 2, 3).reshape(groups, c_out // groups, -1)
            dcols = np.matmul(w.reshape(groups, c_out // groups, k).transpose(0, 2, 1), dout_g)
            del dout_g
            dx[s] = col2im(dcols.reshape(groups * k, -1), dx[s].shape, (kh, kw), stride,
                           padding, dilation)
    if wino_dw:
        dw = winograd_filter_gradient(dw, c_out, cg)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


def _im2col_weight_gradient(x: np.ndarray, dout: np.ndarray, dw_g: np.ndarray, first: bool,
                            kernel, stride, padding, dilation) -> None:
    """dw of one chunk by im2col: dout (channels first) @ cols^T, written into dw_g (G,
    C_out/G, C_in/G*KH*KW) for the first chunk, added to it for the others."""
    groups, c_out_g, k = dw_g.shape
    cols = im2col(x, kernel, stride, padding, dilation).reshape(groups, k, -1)
    dout_g = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(groups, c_out_g, -1)
    if first:
        np.matmul(dout_g, cols.transpose(0, 2, 1), out=dw_g)
    else:
        dw_g += np.matmul(dout_g, cols.transpose(0, 2, 1))


def _transposed_frame(in_size, kernel, stride, padding, output_padding, dilation):
    """Output size of a transposed conv, (H - 1)*S - 2P + D*(K - 1) + out_pad + 1, and the
    size of the uncropped frame every tap lands in (the output plus P on each side, grown
    to hold the last tap)."""
    out, frame = [], []
    for n, k, s, p, o, d in zip(in_size, kernel, stride, padding, output_padding, dilation):
        size = (n - 1) * s - 2 * p + d * (k - 1) + o + 1
        if size < 1:
            raise ValueError(f"conv_transpose2d: padding {p} crops the whole output")
        out.append(size)
        frame.append(max((n - 1) * s + d * (k - 1) + 1, size + p))
    return tuple(out), tuple(frame)


@batchwise_forward
def conv_transpose2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    output_padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
):
    """Transposed convolution, torch.nn.functional.conv_transpose2d: the adjoint of conv2d.

    x: (N, C_in, H, W); w: (C_in, C_out/groups, KH, KW) (PyTorch's layout); b: (C_out,) or
    None -> out: (N, C_out, OH, OW), OH = (H - 1)*S - 2P + D*(KH - 1) + out_pad + 1.
    One GEMM per group makes every input pixel's KH*KW output taps (the column matrix of
    conv2d's backward), then one strided add per tap scatters them into the uncropped
    frame, from which P rows and columns are cropped on each side. The cache keeps x.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    output_padding = _pair(output_padding)
    n, c_in, h, wd = x.shape
    if c_in != w.shape[0] or c_in % groups:
        raise ValueError(f"conv_transpose2d: input has {c_in} channels, weight {w.shape} "
                         f"with groups={groups}")
    _, cg_out, kh, kw = w.shape
    c_out = cg_out * groups
    out_size, frame = _transposed_frame((h, wd), (kh, kw), stride, padding, output_padding,
                                        dilation)
    x_cn = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(groups, c_in // groups, -1)
    w_g = w.reshape(groups, c_in // groups, cg_out * kh * kw)
    # (G, C_out/G*KH*KW, C_in/G) @ (G, C_in/G, N*H*W): row (g, c, i, j) = channel g*C/G + c
    cols = np.matmul(w_g.transpose(0, 2, 1), x_cn).reshape(c_out, kh, kw, n, h, wd)
    full = np.zeros((n, c_out) + frame, dtype=np.result_type(x, w))
    for i in range(kh):
        for j in range(kw):
            full[offset_slices(i, j, stride, dilation, (h, wd))] += cols[:, i, j].transpose(
                1, 0, 2, 3)
    (ph, pw), (oh, ow) = padding, out_size
    out = full[:, :, ph:ph + oh, pw:pw + ow]
    out = out + b.reshape(1, -1, 1, 1) if b is not None else out.copy()
    return out, (x_cn, x.shape, w, b is not None, stride, padding, dilation, groups, frame)


@batchwise_backward
def conv_transpose2d_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, C_out, OH, OW) -> dx (N, C_in, H, W; None unless need_dx), dw (w's shape),
    db (C_out,) or None.

    Both are conv2d's forward in disguise: the taps each input pixel fed are the im2col of
    dout (placed back in the uncropped frame) with the layer's kernel, stride and dilation;
    dx = w @ taps and dw = x @ taps^T, one GEMM per group each.
    """
    x_cn, x_shape, w, has_bias, stride, padding, dilation, groups, frame = cache
    n, c_in, h, wd = x_shape
    _, cg_out, kh, kw = w.shape
    (ph, pw), (oh, ow) = padding, dout.shape[2:]
    full = np.zeros(dout.shape[:2] + frame, dtype=dout.dtype)
    full[:, :, ph:ph + oh, pw:pw + ow] = dout
    taps = window_view(full, (kh, kw), stride, dilation, (h, wd))  # (C_out, KH, KW, N, H, W)
    taps = taps.reshape(groups, cg_out * kh * kw, n * h * wd)
    dw = np.matmul(x_cn, taps.transpose(0, 2, 1)).reshape(w.shape)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_dx:
        return None, dw, db
    dx = np.matmul(w.reshape(groups, c_in // groups, -1), taps)  # (G, C_in/G, N*H*W)
    dx = np.ascontiguousarray(dx.reshape(c_in, n, h, wd).transpose(1, 0, 2, 3))
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# Pooling


def _pool_geometry(x_shape, kernel, stride, padding, ceil_mode, dilation=(1, 1)):
    """Output size and (top, bottom, left, right) pads, bottom/right grown for ceil_mode windows.

    PyTorch's rule: padding at most half the kernel; with ceil_mode the last window may hang
    past the right padding (and past an input shorter than the kernel) as long as it starts
    inside the input or the left padding.
    """
    _, _, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"pool padding {padding} must be at most half the kernel {kernel}")
    oh = conv_output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = conv_output_size(w, kw, sw, pw, dw, ceil_mode)
    # Pad far enough that the last window's last tap is in range: (O-1)*S + D*(K-1) + 1.
    bottom = max(ph, (oh - 1) * sh + dh * (kh - 1) + 1 - h - ph)
    right = max(pw, (ow - 1) * sw + dw * (kw - 1) + 1 - w - pw)
    return (oh, ow), (ph, bottom, pw, right)


def disjoint_windows(kernel, stride, dilation) -> bool:
    """Each input pixel falls in at most one window: the stride covers the dilated window."""
    return all(s >= d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))


def _stride_phases(x: np.ndarray, pads: tuple[int, int, int, int], stride: tuple[int, int],
                   fill: float) -> np.ndarray:
    """The input, padded by pads with `fill`, split into its stride phases:
    (SH, SW, N, C, HQ, WQ), phase (a, b) holding padded rows a, a + SH, ... and columns b,
    b + SW, ... (the padded size rounded up to a multiple of the stride, also with `fill`).
    Every tap of a pooling window then reads a contiguous run of one flattened phase instead
    of a strided view: NumPy's loops run 1.3-3x faster. With stride 1 this is the padded
    input itself (x unless padded)."""
    if stride == (1, 1):
        return pad2d(x, pads, fill)[None, None]
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    (sh, sw) = stride
    hq, wq = -(-(h + top + bottom) // sh), -(-(w + left + right) // sw)
    phases = np.full((sh, sw, n, c, hq, wq), fill, dtype=x.dtype)
    for a in range(sh):
        for b in range(sw):
            rows, cols = _phase_origin(a, top, sh), _phase_origin(b, left, sw)
            part = x[:, :, rows[0]::sh, cols[0]::sw]
            phases[a, b, :, :, rows[1]:rows[1] + part.shape[2],
                   cols[1]:cols[1] + part.shape[3]] = part
    return phases


def _phase_origin(phase: int, pad: int, stride: int) -> tuple[int, int]:
    """(first input index, its index in the phase) of the padded positions phase,
    phase + stride, ... along one axis padded by `pad` in front."""
    first = (phase - pad) % stride
    return first, (first + pad - phase) // stride


def _tap_run(tap: int, kernel, dilation, stride, wq: int) -> tuple[int, int, int]:
    """(phase row, phase column, start) of the contiguous run of a flattened phase that
    kernel tap `tap` reads for every output (rows of WQ, the last WQ - OW columns junk)."""
    i, j = (tap // kernel[1]) * dilation[0], (tap % kernel[1]) * dilation[1]
    return i % stride[0], j % stride[1], (i // stride[0]) * wq + j // stride[1]


def phases_cover(kernel, stride, dilation) -> bool:
    """The taps of a window read every stride phase (else the phases would copy unread
    values): stride 1, or no dilation and a kernel at least as large as the stride."""
    return stride == (1, 1) or (dilation == (1, 1) and all(k >= s for k, s in zip(kernel, stride)))


def _unrow(a: np.ndarray, out_size: tuple[int, int], wq: int) -> np.ndarray:
    """The (N, C, OH, OW) outputs of an (N, C, run) array laid out in rows of WQ, copied
    without the junk columns (a reshape when there are none)."""
    (oh, ow), (n, c) = out_size, a.shape[:2]
    if wq == ow:
        return a.reshape(n, c, oh, ow)
    return as_strided(a, (n, c, oh, ow), a.strides[:2] + (wq * a.itemsize, a.itemsize)).copy()


def _rowed(a: np.ndarray, wq: int) -> np.ndarray:
    """(N, C, OH, OW) laid out in rows of WQ (junk columns zero), flattened to the run
    length (OH - 1) * WQ + OW: the layout _tap_run's runs have."""
    n, c, oh, ow = a.shape
    if wq == ow:
        return a.reshape(n, c, oh * ow)
    rows = np.zeros((n, c, oh, wq), dtype=a.dtype)
    rows[..., :ow] = a
    return rows.reshape(n, c, oh * wq)[..., :(oh - 1) * wq + ow]


@batchwise_forward
def maxpool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    ceil_mode: bool = False,
    dilation: tuple[int, int] = (1, 1),
    relu: bool = False,
):
    """Max pooling, torch.nn.functional.max_pool2d semantics (padding is -inf, ceil_mode,
    dilation).

    x: (N, C, H, W) -> out: (N, C, OH, OW). The cache keeps the winning tap index per output
    pixel (first maximum wins, as in PyTorch).
    relu=True: out = max_pool(relu(x)), computed as relu(max_pool(x)) (a ReLU followed only
    by this pool, fused by codegen): the maximum commutes with the ReLU, which then runs on
    the pooled output in place; the cache also keeps out for the ReLU's backward. The
    gradient is the same: where the window's maximum is positive both pick the same tap,
    elsewhere both give 0.
    """
    kernel, stride, padding = _pair(kernel), _pair(stride), _pair(padding)
    dilation = _pair(dilation)
    out_size, pads = _pool_geometry(x.shape, kernel, stride, padding, ceil_mode, dilation)
    kh, kw = kernel
    oh, ow = out_size
    if phases_cover(kernel, stride, dilation):
        # Tap (i, j) of every output is ONE contiguous run of a flattened stride phase (of
        # the padded image itself with stride 1): a long inner loop on contiguous memory
        # instead of OH rows of OW strided values. Outputs sit in rows of WQ, with WQ - OW
        # junk columns each (none for 2x2/2 on an even map).
        phases = _stride_phases(x, pads, stride, -np.inf)
        wq = phases.shape[-1]
        flat = phases.reshape(phases.shape[:4] + (-1,))
        length = (oh - 1) * wq + ow

        def window(tap):
            a, b, start = _tap_run(tap, kernel, dilation, stride, wq)
            return flat[a, b, :, :, start:start + length]
    else:
        xp = pad2d(x, pads, -np.inf)

        def window(tap):
            return xp[offset_slices(tap // kw, tap % kw, stride, dilation, out_size)]
    out = window(0).copy()
    argmax = np.zeros(out.shape, dtype=np.min_scalar_type(kh * kw - 1))
    for tap in range(1, kh * kw):
        w = window(tap)
        better = w > out  # strict: the first maximum keeps the index
        np.maximum(out, w, out=out)
        # taps come in increasing order, so "set to tap where better" is a running maximum
        np.maximum(argmax, better * argmax.dtype.type(tap), out=argmax)
    if out.ndim == 3:  # rows of WQ: drop the junk columns
        out, argmax = _unrow(out, out_size, wq), _unrow(argmax, out_size, wq)
    if relu:
        np.maximum(out, 0, out=out)
    return out, (argmax, x.shape, kernel, stride, pads, dilation, out if relu else None)


@batchwise_backward
def maxpool2d_backward(dout: np.ndarray, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W); each output's gradient goes to its argmax
    (after a fused ReLU, where the output is positive)."""
    argmax, x_shape, kernel, stride, pads, dilation, relu_out = cache
    if relu_out is not None:
        dout = _relu_grad(dout, relu_out)
    if stride != (1, 1) and phases_cover(kernel, stride, dilation) \
            and not disjoint_windows(kernel, stride, dilation):
        return _maxpool_backward_phases(dout, cache)
    top, bottom, left, right = pads
    n, c, h, w = x_shape
    kh, kw = kernel
    disjoint = disjoint_windows(kernel, stride, dilation)
    # Windows that tile the input exactly (2x2/2 on an even map) write every dx element
    # once: no zero fill needed (one pass over dx fewer).
    tiles = disjoint and kernel == stride and pads == (0, 0, 0, 0) \
        and dout.shape[2:] == (h // kh, w // kw) and h % kh == w % kw == 0
    dxp = (np.empty if tiles else np.zeros)((n, c, h + top + bottom, w + left + right),
                                            dtype=dout.dtype)
    for tap in range(kh * kw):
        target = dxp[offset_slices(tap // kw, tap % kw, stride, dilation, dout.shape[2:])]
        if disjoint:
            np.multiply(dout, argmax == tap, out=target)
        else:
            target += dout * (argmax == tap)
    return dxp[:, :, top : top + h, left : left + w]


def _maxpool_backward_phases(dout: np.ndarray, cache) -> np.ndarray:
    """Overlapping strided windows: every tap adds its share into a contiguous run of a
    flattened stride phase (the forward's layout), and the phases are written back into dx
    once (ResNet-18's 3x3/2 stem pool: half the time of strided adds into a padded dx; with
    stride 1 or disjoint windows the strided adds or writes are as fast or faster)."""
    argmax, x_shape, kernel, stride, pads, dilation = cache[:6]
    n, c, h, w = x_shape
    top, bottom, left, right = pads
    sh, sw = stride
    hq, wq = -(-(h + top + bottom) // sh), -(-(w + left + right) // sw)
    dphases = np.zeros((sh, sw, n, c, hq * wq), dtype=dout.dtype)
    d_run, argmax_run = _rowed(dout, wq), _rowed(argmax, wq)  # junk columns: dout 0
    length = d_run.shape[-1]
    for tap in range(kernel[0] * kernel[1]):
        a, b, start = _tap_run(tap, kernel, dilation, stride, wq)
        dphases[a, b, :, :, start:start + length] += d_run * (argmax_run == tap)
    dphases = dphases.reshape(sh, sw, n, c, hq, wq)
    dx = np.empty(x_shape, dtype=dout.dtype)
    for a in range(sh):
        for b in range(sw):
            rows, cols = _phase_origin(a, top, sh), _phase_origin(b, left, sw)
            part = dx[:, :, rows[0]::sh, cols[0]::sw]
            part[...] = dphases[a, b, :, :, rows[1]:rows[1] + part.shape[2],
                                cols[1]:cols[1] + part.shape[3]]
    return dx


@batchwise_forward
def avgpool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    ceil_mode: bool = False,
    count_include_pad: bool = True,
):
    """Average pooling, torch.nn.functional.avg_pool2d semantics.

    x: (N, C, H, W) -> out: (N, C, OH, OW). With count_include_pad (torch's default) the
    divisor of a window is its size clipped to the padded input [-P, H + P): a ceil_mode
    window's overhang past the padding is not counted; without it, only the input pixels the
    window covers are counted.
    """
    kernel, stride, padding = _pair(kernel), _pair(stride), _pair(padding)
    out_size, pads = _pool_geometry(x.shape, kernel, stride, padding, ceil_mode)
    xp = pad2d(x, pads, 0.0)
    kh, kw = kernel
    out = np.zeros((x.shape[0], x.shape[1]) + out_size, dtype=x.dtype)
    for tap in range(kh * kw):
        out += xp[offset_slices(tap // kw, tap % kw, stride, (1, 1), out_size)]
    divisor = _avgpool_divisor(x.shape[2:], kernel, stride, padding, out_size,
                               count_include_pad).astype(x.dtype)
    out /= divisor
    return out, (divisor, x.shape, kernel, stride, pads)


def _avgpool_divisor(in_size, kernel, stride, padding, out_size, count_include_pad=True):
    """(OH, OW) window sizes, PyTorch's: start = o*S - P, end = min(start + K, H + P); the
    count is end - start, or with count_include_pad=False the part inside [0, H)."""
    counts = []
    for size, k, s, p, o in zip(in_size, kernel, stride, padding, out_size):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        counts.append(end - start)
    return np.outer(counts[0], counts[1])


@batchwise_backward
def avgpool2d_backward(dout: np.ndarray, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W); each window spreads dout/divisor evenly."""
    divisor, x_shape, kernel, stride, (top, bottom, left, right) = cache
    n, c, h, w = x_shape
    dxp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=dout.dtype)
    share = dout / divisor
    kh, kw = kernel
    disjoint = disjoint_windows(kernel, stride, (1, 1))
    for tap in range(kh * kw):
        target = dxp[offset_slices(tap // kw, tap % kw, stride, (1, 1), dout.shape[2:])]
        if disjoint:
            target[...] = share
        else:
            target += share
    return dxp[:, :, top : top + h, left : left + w]


@batchwise_forward
def global_avgpool_forward(x: np.ndarray):
    """Mean over the spatial axes. x: (N, C, H, W) -> out: (N, C, 1, 1)."""
    return x.mean(axis=(2, 3), keepdims=True), x.shape


@batchwise_backward
def global_avgpool_backward(dout: np.ndarray, cache):
    """dout: (N, C, 1, 1) -> dx: (N, C, H, W), dout / (H*W) everywhere."""
    x_shape = cache
    dx = np.empty(x_shape, dtype=dout.dtype)
    dx[...] = dout / (x_shape[2] * x_shape[3])
    return dx


@batchwise_forward
def adaptive_avgpool_forward(x: np.ndarray, output_size: tuple[int, int]):
    """torch AdaptiveAvgPool2d. x: (N, C, H, W) -> out: (N, C, OH, OW).

    Output row i averages input rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1 (windows may
    overlap or differ in size), and likewise for columns. The mean over a rectangle is the
    mean over its rows of the mean over its columns, so out = A_h @ x @ A_w^T with the
    (OH, H) and (OW, W) averaging matrices.
    """
    rows = _adaptive_weights(x.shape[2], output_size[0], x.dtype)
    cols = _adaptive_weights(x.shape[3], output_size[1], x.dtype)
    return rows @ x @ cols.T, (rows, cols)


def _adaptive_weights(size: int, out: int, dtype) -> np.ndarray:
    """(out, size): row i is 1/len on window i = [floor(i*size/out), ceil((i+1)*size/out))."""
    i = np.arange(out)
    start, end = i * size // out, -(-(i + 1) * size // out)
    pos = np.arange(size)
    inside = (pos >= start[:, None]) & (pos < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


@batchwise_backward
def adaptive_avgpool_backward(dout: np.ndarray, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W) = A_h^T @ dout @ A_w."""
    rows, cols = cache
    return rows.T @ dout @ cols


# ----------------------------------------------------------------------------------------------
# Resampling


def _interpolation_matrix(size: int, out: int, scale: float | None, mode: str,
                          align_corners: bool, dtype) -> np.ndarray:
    """(out, size): row y holds the weights output y gives each input pixel, PyTorch's
    upsample index rules. nearest: pixel min(floor(y * r), size - 1), r = 1/scale in float32
    as PyTorch computes it (size/out when no scale); bilinear: source s = r*(y + 0.5) - 0.5
    clamped at 0 (s = y*(size-1)/(out-1) with align_corners), split between floor(s) and the
    next pixel."""
    rows = np.arange(out)
    weights = np.zeros((out, size), dtype=np.float64)
    if mode == "nearest":
        if out == size:  # PyTorch copies the input, whatever the scale
            return np.eye(size, dtype=dtype)
        ratio = np.float32(1 / scale) if scale else np.float32(size) / np.float32(out)
        src = np.minimum(np.floor(rows.astype(np.float32) * ratio).astype(np.int64), size - 1)
        weights[rows, src] = 1
        return weights.astype(dtype)
    if align_corners:
        src = rows * ((size - 1) / (out - 1)) if out > 1 else np.zeros(out)
    else:
        ratio = 1 / scale if scale else size / out
        src = np.maximum(ratio * (rows + 0.5) - 0.5, 0)
    low = src.astype(np.int64)
    high = low + (low < size - 1)
    frac = src - low
    weights[rows, low] += 1 - frac
    weights[rows, high] += frac
    return weights.astype(dtype)


@batchwise_forward
def upsample_forward(x: np.ndarray, scale=None, size=None, mode: str = "nearest",
                     align_corners: bool = False):
    """torch.nn.functional.interpolate (nearest or bilinear) by scale or to size.

    x: (N, C, H, W) -> out: (N, C, OH, OW), OH = floor(H * scale) or size[0]. Both modes
    are separable linear maps: out = A_h @ x @ A_w^T with (OH, H) and (OW, W) matrices."""
    h, w = x.shape[2:]
    scales = (None, None) if scale is None else tuple(float(f) for f in _scales(scale))
    out_hw = _pair(size) if size is not None else \
        tuple(int(np.floor(n * f)) for n, f in zip((h, w), scales))
    rows = _interpolation_matrix(h, out_hw[0], scales[0], mode, align_corners, x.dtype)
    cols = _interpolation_matrix(w, out_hw[1], scales[1], mode, align_corners, x.dtype)
    return rows @ x @ cols.T, (rows, cols)


def _scales(scale) -> tuple:
    return (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)


@batchwise_backward
def upsample_backward(dout: np.ndarray, cache):
    """dout: (N, C, OH, OW) -> dx: (N, C, H, W) = A_h^T @ dout @ A_w."""
    rows, cols = cache
    return rows.T @ dout @ cols


@batchwise_forward
def pad_forward(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0):
    """Constant padding per side, torch.nn.functional.pad(x, (left, right, top, bottom)):
    pads = (top, bottom, left, right); a negative pad crops. x: (N, C, H, W) ->
    out: (N, C, H + top + bottom, W + left + right)."""
    top, bottom, left, right = pads
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[_pad_window(top, bottom, left, right)] = x[_pad_window(-top, -bottom, -left, -right)]
    return out, pads


def _pad_window(top: int, bottom: int, left: int, right: int):
    """The slice of a padded array holding the input: positive pads skip the border; a
    negative pad (a crop) starts at the edge (the crop is on the other side's slice)."""
    return (slice(None), slice(None), slice(max(top, 0), -bottom if bottom > 0 else None),
            slice(max(left, 0), -right if right > 0 else None))


@batchwise_backward
def pad_backward(dout: np.ndarray, cache):
    """dout: the padded shape -> dx: x's shape, the border's gradient dropped (a cropped
    border gets zeros)."""
    top, bottom, left, right = cache
    dx, _ = pad_forward(dout, (-top, -bottom, -left, -right), 0.0)
    return dx


# ----------------------------------------------------------------------------------------------
# Shape ops


@batchwise_forward
def flatten_forward(x: np.ndarray):
    """x: (N, ...) -> out: (N, D), D the product of the non-batch axes."""
    return x.reshape(x.shape[0], -1), x.shape


@batchwise_backward
def flatten_backward(dout: np.ndarray, cache):
    """dout: (N, D) -> dx with x's shape."""
    return dout.reshape(cache)


@batchwise_forward
def concat_forward(xs: list[np.ndarray]):
    """Concatenate along axis 1. xs: list of (N, C_i, ...) -> out: (N, sum C_i, ...)."""
    return np.concatenate(xs, axis=1), [x.shape[1] for x in xs]


@batchwise_backward
def concat_backward(dout: np.ndarray, cache):
    """dout: (N, sum C_i, ...) -> list of dx_i (N, C_i, ...), views of dout."""
    return np.split(dout, np.cumsum(cache)[:-1], axis=1)


@batchwise_forward
def add_forward(xs: list[np.ndarray], relu: bool = False):
    """Elementwise sum of same-shape inputs (residual connections). -> out: the common shape.
    relu=True: max(sum, 0) in place on the new sum (an add followed only by a ReLU, fused by
    codegen); the cache then keeps out for the ReLU's backward."""
    out = xs[0] + xs[1] if len(xs) > 1 else xs[0].copy()
    for x in xs[2:]:
        out += x
    if relu:
        np.maximum(out, 0, out=out)
    return out, (len(xs), out if relu else None)


@batchwise_backward
def add_backward(dout: np.ndarray, cache):
    """dout -> list of dx, each dout itself (the sum passes its gradient through unchanged;
    after a fused ReLU, dout masked by the output's sign)."""
    n, relu_out = cache
    return [dout if relu_out is None else _relu_grad(dout, relu_out)] * n


@batchwise_forward
def identity_forward(x: np.ndarray):
    """out = x."""
    return x, None


@batchwise_backward
def identity_backward(dout: np.ndarray, cache):
    """dx = dout."""
    return dout


# ----------------------------------------------------------------------------------------------
# Activations


@batchwise_forward
def relu_forward(x: np.ndarray):
    """out = max(x, 0), any shape."""
    out = np.maximum(x, 0)
    return out, out


@batchwise_backward
def relu_backward(dout: np.ndarray, cache):
    """dx = dout where x > 0, else 0."""
    return _relu_grad(dout, cache)


def _relu_grad(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """dout where the ReLU's output is positive, else 0 (a new array): relu's backward, also
    inside the kernels that fuse a ReLU (batch norm, max pool)."""
    return dout * (out > 0)


@batchwise_forward
def relu6_forward(x: np.ndarray):
    """out = min(max(x, 0), 6), any shape (torch.nn.ReLU6)."""
    inside = (x > 0) & (x < 6)
    return np.clip(x, 0, 6), inside


@batchwise_backward
def relu6_backward(dout: np.ndarray, cache):
    """dx = dout where 0 < x < 6, else 0 (torch's choice at the kinks)."""
    return dout * cache


@batchwise_forward
def hardswish_forward(x: np.ndarray):
    """out = x * relu6(x + 3) / 6, any shape (torch.nn.Hardswish)."""
    return x * (np.clip(x + 3, 0, 6) / 6), x


@batchwise_backward
def hardswish_backward(dout: np.ndarray, cache):
    """dx = dout * (0 for x < -3, 1 for x > 3, (2x + 3) / 6 between), torch's derivative
    (at x = -3 it takes the middle branch's value, at x = 3 the right one's)."""
    x = cache
    slope = np.where(x < -3, 0, np.where(x <= 3, (2 * x + 3) / 6, 1)).astype(dout.dtype, copy=False)
    return dout * slope


@batchwise_forward
def leaky_relu_forward(x: np.ndarray, slope: float = 0.01):
    """out = x if x > 0 else slope * x, any shape."""
    positive = x > 0
    return np.where(positive, x, slope * x), (positive, slope)


@batchwise_backward
def leaky_relu_backward(dout: np.ndarray, cache):
    """dx = dout where x > 0, slope * dout elsewhere."""
    positive, slope = cache
    return np.where(positive, dout, slope * dout)


@batchwise_forward
def elu_forward(x: np.ndarray, alpha: float = 1.0):
    """out = x if x > 0 else alpha * (exp(x) - 1), any shape."""
    positive = x > 0
    out = np.where(positive, x, alpha * np.expm1(np.minimum(x, 0)))
    return out, (positive, out, alpha)


@batchwise_backward
def elu_backward(dout: np.ndarray, cache):
    """d/dx alpha*(exp(x)-1) = alpha*exp(x) = out + alpha on the negative side."""
    positive, out, alpha = cache
    return np.where(positive, dout, dout * (out + alpha))


@batchwise_forward
def sigmoid_forward(x: np.ndarray):
    """out = 1 / (1 + exp(-x)), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return out, out


@batchwise_backward
def sigmoid_backward(dout: np.ndarray, cache):
    """dx = dout * s * (1 - s)."""
    return dout * cache * (1 - cache)


@batchwise_forward
def tanh_forward(x: np.ndarray):
    """out = tanh(x)."""
    out = np.tanh(x)
    return out, out


@batchwise_backward
def tanh_backward(dout: np.ndarray, cache):
    """dx = dout * (1 - tanh^2)."""
    return dout * (1 - cache * cache)


@batchwise_forward
def maxout_forward(x: np.ndarray, pieces: int = 2):
    """Max over consecutive groups of `pieces` channels (Goodfellow et al., 2013).

    x: (N, C, ...) -> out: (N, C/pieces, ...); out channel j = max of x channels
    j*pieces .. j*pieces + pieces - 1.
    """
    n, c = x.shape[:2]
    if c % pieces:
        raise ValueError(f"maxout: {c} channels are not divisible by pieces={pieces}")
    grouped = x.reshape((n, c // pieces, pieces) + x.shape[2:])
    winner = np.argmax(grouped, axis=2)[:, :, None]
    out = np.take_along_axis(grouped, winner, axis=2)[:, :, 0]
    return out, (winner.astype(np.min_scalar_type(pieces - 1)), pieces)


@batchwise_backward
def maxout_backward(dout: np.ndarray, cache):
    """dout: (N, C/pieces, ...) -> dx: (N, C, ...), gradient to each group's maximum only."""
    winner, pieces = cache
    piece = np.arange(pieces).reshape((1, 1, pieces) + (1,) * (dout.ndim - 2))
    dx = np.where(piece == winner, dout[:, :, None], 0)
    return dx.reshape((dout.shape[0], dout.shape[1] * pieces) + dout.shape[2:])


@batchwise_forward
def softmax_forward(x: np.ndarray):
    """Softmax over axis 1 (max subtracted first). x: (N, C) or (N, C, H, W) -> same shape;
    a sequence (N, T, D) over D at every position."""
    axis = -1 if x.ndim == 3 else 1
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)
    return out, out


@batchwise_backward
def softmax_backward(dout: np.ndarray, cache):
    """dx = s * (dout - sum_c(dout * s)), the softmax Jacobian-vector product."""
    out = cache
    axis = -1 if out.ndim == 3 else 1
    return out * (dout - (dout * out).sum(axis=axis, keepdims=True))


def dropout_forward(x: np.ndarray, p: float, train: bool, rng: np.random.Generator):
    """Inverted dropout: at train time zero each element with probability p, scale by 1/(1-p).

    p is the DROP probability (PyTorch convention). Identity (cache None) when not training or
    p == 0. rng: a numpy Generator, the only source of randomness; a split batch (Shards) draws
    the mask of the whole batch, so it sees the same random numbers as an unsplit one.
    """
    if not train or p == 0:
        return x, None
    shape = (sum(x.sizes),) + x[0].shape[1:] if isinstance(x, Shards) else x.shape
    dtype = x[0].dtype if isinstance(x, Shards) else x.dtype
    if p >= 1:
        mask = np.zeros(shape, dtype=dtype)
    else:
        mask = (rng.random(shape, dtype=np.float32) >= p).astype(dtype)
        mask *= 1 / (1 - p)
    if isinstance(x, Shards):
        mask = split_like(mask, x.sizes)
        return Shards(run(np.multiply, x, mask)), mask
    return x * mask, mask


def dropout_backward(dout: np.ndarray, cache):
    """dx = dout * mask (the same scaled keep mask as the forward)."""
    if cache is None:
        return dout
    if isinstance(dout, Shards):
        return Shards(run(np.multiply, dout, cache))
    return dout * cache


# ----------------------------------------------------------------------------------------------
# Normalization


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against x: (1, C, 1, 1) or (1, D)."""
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _channel_rows(a: np.ndarray) -> np.ndarray:
    """a (N, C, ...) as (N, C, P): one contiguous row of P values per sample and channel."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """sum(a) per channel (axis 1). a: (N, C, ...) -> (C,). einsum sums each contiguous row
    in one SIMD loop: 3x faster than a.sum(axis=(0, 2, 3)), which walks the batch axis
    outermost (docs/performance.md, "Batch norm, relu and pooling passes")."""
    return np.einsum("ncp->c", _channel_rows(a))


# Rows at least this long get their dot products from matmul (BLAS dots: 2.3x faster than
# einsum's loop on 1,024-value rows); on short rows (a 2-D batch norm's P = 1) the many
# tiny matmuls would be 20x slower than einsum.
DOT_ROW = 64


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum(a * b) per channel (axis 1) without the product temporary. a, b: (N, C, ...) -> (C,)."""
    a3, b3 = _channel_rows(a), _channel_rows(b)
    if a3.shape[2] < DOT_ROW:
        return np.einsum("ncp,ncp->c", a3, b3)
    # (N, C, 1, P) @ (N, C, P, 1): one dot per (sample, channel) row, then summed over N
    return np.matmul(a3[:, :, None, :], b3[:, :, :, None]).reshape(a3.shape[:2]).sum(axis=0)


def _affine(x_hat: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None) -> np.ndarray:
    """gamma * x_hat + beta per channel (axis 1); x_hat itself when gamma and beta are None."""
    shape = _channel_shape(x_hat)
    out = x_hat * gamma.reshape(shape) if gamma is not None else x_hat
    if beta is not None:
        out = out + beta.reshape(shape)
    return out


def _affine_grads(dout: np.ndarray, x_hat: np.ndarray, has_gamma: bool, has_beta: bool):
    """dgamma = sum(dout * x_hat), dbeta = sum(dout) over every axis but the channel one
    (None for an absent parameter)."""
    dgamma = _channel_dot(dout, x_hat) if has_gamma else None
    dbeta = _channel_sum(dout) if has_beta else None
    return dgamma, dbeta


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    train: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = False,
):
    """Batch normalization per channel over N (and H, W), torch.nn.functional.batch_norm.

    x: (N, C) or (N, C, H, W); gamma, beta, running_mean, running_var: (C,) -> out: x's shape.
    train=True normalizes with the batch statistics and updates the running statistics IN
    PLACE: running = (1 - momentum) * running + momentum * batch, with the unbiased batch
    variance for running_var. train=False uses the running statistics. Running statistics may
    be None (track_running_stats=False): batch statistics are then used in both modes.
    The cache keeps the centred input x - mean (x_hat = centred * inv_std is never stored).
    A split batch (Shards) sums each shard's statistics into the whole batch's.
    relu=True: out = max(batch_norm(x), 0), the ReLU applied in place on the normalized
    output (a batch norm followed only by a ReLU, fused by codegen); the cache then also
    keeps out, whose sign the backward needs (the next layer keeps it anyway).
    """
    split = isinstance(x, Shards)
    xs = x if split else [x]
    shape = _channel_shape(xs[0])
    batch_stats = train or running_mean is None
    if batch_stats:
        m = sum(xk.size for xk in xs) // xs[0].shape[1]
        mean = sum_shards(run(_channel_sum, xs)) / m
        centred = run(lambda xk: xk - mean.reshape(shape), xs)
        var = sum_shards(run(lambda ck: _channel_dot(ck, ck), centred)) / m  # biased, as torch
        if running_mean is not None:
            if m < 2:
                raise ValueError("batchnorm: training needs more than one value per channel")
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += (momentum * m / (m - 1)) * var
    else:
        mean = running_mean.astype(xs[0].dtype, copy=False)
        centred = run(lambda xk: xk - mean.reshape(shape), xs)
        var = running_var.astype(xs[0].dtype, copy=False)
    inv_std = 1 / np.sqrt(var + eps)
    scale = (inv_std if gamma is None else gamma * inv_std).reshape(shape)

    def normalize(ck):
        out = ck * scale  # gamma * x_hat in one pass
        if beta is not None:
            out += beta.reshape(shape)
        if relu:
            np.maximum(out, 0, out=out)
        return out

    out = run(normalize, centred)
    wrap = Shards if split else (lambda parts: parts[0])
    return wrap(out), (wrap(centred), inv_std, gamma, beta is not None, batch_stats,
                       wrap(out) if relu else None)


def batchnorm_backward(dout: np.ndarray, cache):
    """dout: x's shape -> dx, dgamma (C,), dbeta (C,) (None when gamma is None).

    With batch statistics: dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout*x_hat)),
    the means per channel; with running statistics the normalization is a fixed affine map.
    After a fused ReLU (relu=True), dout is first masked by the output's sign into a new
    array, which dx is then computed in.
    """
    centred, inv_std, gamma, has_beta, batch_stats, relu_out = cache
    split = isinstance(dout, Shards)
    douts, centreds = (dout, centred) if split else ([dout], [centred])
    if relu_out is not None:
        douts = run(_relu_grad, douts, relu_out if split else [relu_out])
    shape = _channel_shape(douts[0])
    scale = inv_std if gamma is None else gamma * inv_std
    sum_dout = sum_shards(run(_channel_sum, douts))
    sum_dout_xhat = sum_shards(run(_channel_dot, douts, centreds)) * inv_std
    m = sum(dk.size for dk in douts) // douts[0].shape[1]
    # dx = scale * (dout - mean(dout) - centred * inv_std * mean(dout * x_hat)): four passes
    # over one new array (the form with scale distributed needed a temporary as well).
    centred_coef = (inv_std * sum_dout_xhat / m).reshape(shape)
    mean_dout = (sum_dout / m).reshape(shape)
    scale_c = scale.reshape(shape)

    def input_grad(dk, ck):
        if not batch_stats:
            return np.multiply(dk, scale_c, out=dk if relu_out is not None else None)
        dx = ck * centred_coef
        dx += mean_dout
        np.subtract(dk, dx, out=dx)
        dx *= scale_c
        return dx

    dx = run(input_grad, douts, centreds)
    return (Shards(dx) if split else dx[0], (None if gamma is None else sum_dout_xhat),
            (sum_dout if has_beta else None))


def _group_normalize(x: np.ndarray, groups: int, eps: float):
    """Normalize each (sample, group of channels) over its channels and all spatial axes.

    x: (N, C, ...) -> x_hat (x's shape), inv_std (N, groups). The channels of a group and their
    pixels are contiguous in memory, so this is a reduction over the last axis of
    x.reshape(N, groups, -1).
    """
    n, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"{c} channels are not divisible into {groups} groups")
    xg = x.reshape(n, groups, -1)
    xc = xg - xg.mean(axis=2, keepdims=True)
    inv_std = 1 / np.sqrt((xc * xc).mean(axis=2, keepdims=True) + eps)
    return (xc * inv_std).reshape(x.shape), inv_std


def _group_normalize_backward(dx_hat: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray):
    """dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)), means per group."""
    n, groups = inv_std.shape[:2]
    dg = dx_hat.reshape(n, groups, -1)
    xg = x_hat.reshape(n, groups, -1)
    dx = dg - dg.mean(axis=2, keepdims=True) - xg * (dg * xg).mean(axis=2, keepdims=True)
    dx *= inv_std
    return dx.reshape(x_hat.shape)


@batchwise_forward
def groupnorm_forward(
    x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, groups: int, eps: float = 1e-5
):
    """Group normalization (Wu & He, 2018), torch.nn.functional.group_norm.

    x: (N, C, ...) normalized per sample over each group of C/groups channels and all their
    pixels; gamma, beta: (C,) per channel or None -> out: x's shape.
    """
    x_hat, inv_std = _group_normalize(x, groups, eps)
    return _affine(x_hat, gamma, beta), (x_hat, inv_std, gamma, beta is not None)


@batchwise_backward
def groupnorm_backward(dout: np.ndarray, cache):
    """dout: x's shape -> dx, dgamma (C,), dbeta (C,) (None when gamma is None)."""
    x_hat, inv_std, gamma, has_beta = cache
    dx_hat = dout if gamma is None else dout * gamma.reshape(_channel_shape(dout))
    dgamma, dbeta = _affine_grads(dout, x_hat, gamma is not None, has_beta)
    return _group_normalize_backward(dx_hat, x_hat, inv_std), dgamma, dbeta


@batchwise_forward
def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float = 1e-5
):
    """Layer normalization: per sample over every non-batch axis, then per-channel affine.

    x: (N, C, H, W) or (N, D); gamma, beta: (C,) (D for 2-D input) or None -> out: x's shape.
    Equals torch GroupNorm(1, C) on 4-D input and LayerNorm(D) on 2-D input; a sequence
    (N, T, D) is normalized at every position over D, as LayerNorm(D).
    """
    if x.ndim == 3:
        return seq_layernorm_forward(x, gamma, beta, eps)
    return groupnorm_forward(x, gamma, beta, 1, eps)


@batchwise_backward
def layernorm_backward(dout: np.ndarray, cache):
    """dout: x's shape -> dx, dgamma, dbeta."""
    if dout.ndim == 3:
        return seq_layernorm_backward(dout, cache)
    return groupnorm_backward(dout, cache)


@batchwise_forward
def instancenorm_forward(
    x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float = 1e-5
):
    """Instance normalization: per sample and channel over H, W (torch instance_norm).

    x: (N, C, H, W); gamma, beta: (C,) or both None (affine=false) -> out: x's shape.
    """
    return groupnorm_forward(x, gamma, beta, x.shape[1], eps)


@batchwise_backward
def instancenorm_backward(dout: np.ndarray, cache):
    """dout: x's shape -> dx, dgamma, dbeta (None, None when affine=false)."""
    return groupnorm_backward(dout, cache)
