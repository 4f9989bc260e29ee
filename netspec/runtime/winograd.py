"""Runtime: Winograd F(2x2, 3x3) convolution (Lavin & Gray 2015) for 3x3, stride-1 convs.

A 3x3 conv computes each 2x2 block of outputs from a 4x4 block (tile) of the padded input.
Winograd's minimal filtering does it with 16 multiplies per (input channel, output channel)
pair instead of 36: with the transforms below,

    Y = A^T [(G g G^T) * (B^T d B)] A

per tile d and filter g, and the element-wise products summed over input channels are 16
GEMMs, one per position xi of the 4x4 transformed tile: M[xi] = U[xi] @ V[xi], U[xi] the
(C_out, C_in) transformed filters, V[xi] the (C_in, tiles) transformed input. 2.25x fewer
multiply-adds than the direct conv; the transforms are additions over strided views (no
loop over tiles or pixels), and the transformed input (16 x tiles = ~4x the input) is
smaller than im2col's columns (9x).

Layouts: everything transformed is channels first, (16, C, n, TH, TW) with TH x TW tiles of
2x2 outputs per sample, so each of the 16 GEMMs is one wide (C_out, C_in) @ (C_in, n*TH*TW)
product. An odd output size is padded to whole tiles with zeros and cropped.

The backward (netspec.runtime.layers.conv2d_backward): the input gradient is the same
algorithm on the padded output gradient with the flipped, transposed kernel (a stride-1
conv's input gradient is a convolution); the weight gradient is dU[xi] = dM[xi] @ V[xi]^T
summed over tiles, dM = A dY A^T per 2x2 tile of the output gradient, then dg = G^T dU G.
V is recomputed in the backward rather than cached (memory).
"""

import os

import numpy as np
from numpy.lib.stride_tricks import as_strided

# NETSPEC_WINOGRAD=0 turns Winograd off (the im2col path for every conv), for comparisons.
WINOGRAD = os.environ.get("NETSPEC_WINOGRAD", "1") != "0"
# True: Winograd for every conv it can compute, whatever the shape rule says (tests, and
# benchmarks/bench_winograd.py measuring the shapes the rule leaves out).
WINOGRAD_FORCE = False

# B^T, G, A^T of F(2x2, 3x3) (Lavin & Gray 2015, eq. 11).
_WINO_BT = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0],
                [0.0, 1.0, 0.0, -1.0]])
_WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_WINO_AT = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]])
# The 2-D transforms of a tile flattened row-major (xi = 4*i + j): vec(B^T d B) =
# (B^T (x) B^T) vec(d), vec(A^T M A) = (A^T (x) A^T) vec(M) (Kronecker products).
_WINO_BT2 = np.kron(_WINO_BT, _WINO_BT)
_WINO_AT2 = np.kron(_WINO_AT, _WINO_AT)


def winograd_tiles(out_h: int, out_w: int) -> tuple[int, int]:
    """Tiles of 2x2 outputs along each axis, an odd size rounded up."""
    return (out_h + 1) // 2, (out_w + 1) // 2


def winograd_filters(w: np.ndarray) -> np.ndarray:
    """U = G g G^T for each filter: w (C_out, C_in, 3, 3) -> (16, C_out, C_in), contiguous.
    Two tensordots (GEMMs over all filters at once), not C_out*C_in tiny products."""
    c_out, c_in = w.shape[:2]
    g = _WINO_G.astype(w.dtype)
    right = np.tensordot(w, g, axes=([3], [1]))  # g G^T: (C_out, C_in, 3, 4)
    u = np.tensordot(g, right, axes=([1], [2]))  # (4, C_out, C_in, 4)
    return np.ascontiguousarray(u.transpose(0, 3, 1, 2)).reshape(16, c_out, c_in)


def winograd_filter_gradient(du: np.ndarray, c_out: int, c_in: int) -> np.ndarray:
    """dg = G^T dU G, the gradient of winograd_filters: du (16, C_out, C_in) -> (C_out, C_in,
    3, 3)."""
    g = _WINO_G.astype(du.dtype)
    left = np.tensordot(g, du.reshape(4, 4, c_out, c_in), axes=([0], [0]))  # (3, 4, Co, Ci)
    dg = np.tensordot(left, g, axes=([1], [0]))  # (3, C_out, C_in, 3)
    return np.ascontiguousarray(dg.transpose(1, 2, 0, 3))


def winograd_input(x: np.ndarray, padding: tuple[int, int], n_tiles: tuple[int, int],
                    ) -> np.ndarray:
    """V = B^T d B for every 4x4 tile d of the zero-padded input: x (n, C, H, W) -> V (16, C,
    n, TH, TW), position xi = 4*i + j of the transformed tile first.

    The padded input is a channels-first copy (C, n, 2*TH + 2, 2*TW + 2), zeros past the
    input (the padding, and the extra rows/columns of a last, partial tile). Its tiles, a
    strided view (16, C, n, TH, TW) (tile (t, u) starts at row 2t, column 2u), are copied
    out (4x the input; im2col copies 9x) and transformed by ONE GEMM with the 16x16
    B^T (x) B^T: measured 1.3-1.5x faster than 20 additions of strided views (B^T's rows
    applied by hand), whose stride-2 reads NumPy does not vectorize.
    """
    n, c, h, w = x.shape
    (ph, pw), (th, tw) = padding, n_tiles
    xp = np.zeros((c, n, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    xp[:, :, ph : ph + h, pw : pw + w] = x.transpose(1, 0, 2, 3)
    s_c, s_n, s_h, s_w = xp.strides
    windows = as_strided(xp, (4, 4, c, n, th, tw), (s_h, s_w, s_c, s_n, 2 * s_h, 2 * s_w),
                         writeable=False)
    d = windows.reshape(16, -1)  # the copy
    del xp, windows
    return np.matmul(_WINO_BT2.astype(x.dtype), d).reshape(16, c, n, th, tw)


def winograd_output(m: np.ndarray, out: np.ndarray, b: np.ndarray | None) -> None:
    """Y = A^T M A (+ bias) for every tile, written into out (n, C_out, OH, OW).

    m: (16, C_out, n, TH, TW). A^T (x) A^T (4x16) is one GEMM over the tiles (one pass over
    memory); the 2x2 outputs of a tile go to the strided views out[:, :, a::2, b::2], the
    last row/column of tiles cropped for an odd size.
    """
    _, c_out, n, th, tw = m.shape
    y = np.matmul(_WINO_AT2.astype(m.dtype), m.reshape(16, -1)).reshape(2, 2, c_out, n, th, tw)
    for a in range(2):
        for bb in range(2):
            target = out[:, :, a::2, bb::2].transpose(1, 0, 2, 3)  # (C_out, n, rows, cols)
            src = y[a, bb, :, :, : target.shape[2], : target.shape[3]]
            if b is None:
                np.copyto(target, src)
            else:
                np.add(src, b.reshape(-1, 1, 1, 1), out=target)


def winograd_output_gradient(dout: np.ndarray, n_tiles: tuple[int, int]) -> np.ndarray:
    """dM = A dY A^T for every 2x2 tile of the output gradient, the adjoint of
    winograd_output: dout (n, C_out, OH, OW) -> (16, C_out, n, TH, TW); zeros stand for
    the cropped part of a partial tile. One GEMM with A (x) A (16x4)."""
    n, c_out = dout.shape[:2]
    th, tw = n_tiles
    dy = np.zeros((2, 2, c_out, n, th, tw), dtype=dout.dtype)
    for a in range(2):
        for bb in range(2):
            part = dout[:, :, a::2, bb::2].transpose(1, 0, 2, 3)
            dy[a, bb, :, :, : part.shape[2], : part.shape[3]] = part
    return np.matmul(_WINO_AT2.T.astype(dout.dtype), dy.reshape(4, -1)).reshape(
        16, c_out, n, th, tw)


def winograd_conv(x: np.ndarray, u: np.ndarray, b: np.ndarray | None,
                 padding: tuple[int, int], out: np.ndarray) -> None:
    """One chunk of a 3x3 stride-1 conv into out (n, C_out, OH, OW): u = winograd_filters(w),
    the 16 GEMMs M[xi] = U[xi] @ V[xi], then the output transform."""
    n = x.shape[0]
    n_tiles = winograd_tiles(*out.shape[2:])
    v = winograd_input(x, padding, n_tiles)
    m = np.matmul(u, v.reshape(16, x.shape[1], -1))  # (16, C_out, n * TH * TW)
    del v
    winograd_output(m.reshape(16, u.shape[1], n, *n_tiles), out, b)


def winograd_weight_gradient(x: np.ndarray, dout: np.ndarray, padding: tuple[int, int],
                    out: np.ndarray | None = None) -> np.ndarray:
    """dU[xi] = dM[xi] @ V[xi]^T for one chunk, (16, C_out, C_in) (into out when given): V
    recomputed from x, dM from dout."""
    c_in = x.shape[1]
    n_tiles = winograd_tiles(*dout.shape[2:])
    v = winograd_input(x, padding, n_tiles).reshape(16, c_in, -1)
    dm = winograd_output_gradient(dout, n_tiles).reshape(16, dout.shape[1], -1)
    return np.matmul(dm, v.transpose(0, 2, 1), out=out)


# The shape rule, from benchmarks/bench_winograd.py (one thread, chunks of 4 and 8 samples;
# docs/performance.md, "Winograd F(2x2, 3x3)"): Winograd's forward + backward took 0.77-0.92x
# the im2col kernel's time with at least 64 channels on both sides and a map of at least
# 14x14 (ResNet blocks at 16x16, Inception's 96 -> 128 3x3 at 28x28, ResNet-18's layers 1-3),
# but 1.3-1.9x on 7x7 and 8x8 maps (ResNet-18's layer4: the 16 transformed filters are
# 1.8x the weight and a chunk has few tiles to spread them over; a 7x7 map also computes
# 8x8 outputs) and 1.1-1.8x with 32 channels or fewer (the tile transforms, linear in the
# channels, outweigh the GEMM saved, quadratic in them; a 3-channel first conv: 1.8x).
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_PIXELS = 14 * 14


def winograd_applies(w_shape: tuple, stride: tuple[int, int], dilation: tuple[int, int], groups: int,
            out_size: tuple[int, int]) -> bool:
    """Whether netspec.runtime.layers runs a conv (w_shape (C_out, C_in, KH, KW), out_size
    (OH, OW)) by Winograd: WINOGRAD, a 3x3 kernel, stride 1, dilation 1, one group, and
    (unless WINOGRAD_FORCE) the shape rule above. The input gradient of a stride-1 conv is asked
    about as the convolution it is (C_in and C_out swapped, the input's size)."""
    if not WINOGRAD or tuple(w_shape[2:]) != (3, 3) or tuple(stride) != (1, 1) \
            or tuple(dilation) != (1, 1) or groups != 1:
        return False
    return WINOGRAD_FORCE or (min(w_shape[0], w_shape[1]) >= WINOGRAD_MIN_CHANNELS
                     and out_size[0] * out_size[1] >= WINOGRAD_MIN_PIXELS)
