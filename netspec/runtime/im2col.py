"""Runtime: im2col / col2im over strided views, the data movement under convolution and pooling."""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output length along one axis, PyTorch's rule for conv and pooling.

    floor((H + 2P - D*(K-1) - 1) / S) + 1, or ceil(...) + 1 with ceil_mode, in which case the
    last window may hang past the right padding (even past a short input) but a window that
    would start in the right padding, at or past H + P, is dropped. Raises ValueError when no
    window fits.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        out = span // stride + 1
    else:  # PyTorch: floor((span + S - 1) / S) + 1, then drop a window starting in the right pad
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    if out < 1:
        raise ValueError(
            f"kernel {kernel} (dilation {dilation}) is larger than the padded input "
            f"{size} + 2*{padding}"
        )
    return out


def pad2d(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of x (N, C, H, W) by (top, bottom, left, right) with value.

    Returns x itself when every pad is zero (no copy).
    """
    top, bottom, left, right = pads
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    xp = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    xp[:, :, top : top + h, left : left + w] = x
    return xp


def offset_slices(
    i: int, j: int, stride: tuple[int, int], dilation: tuple[int, int], out_size: tuple[int, int]
) -> tuple[slice, slice, slice, slice]:
    """Index of the padded-input pixels that kernel tap (i, j) reads, one per output pixel.

    xp[offset_slices(i, j, ...)] has shape (N, C, OH, OW); looping over the KH*KW taps and
    adding into these slices is how col2im and the pooling backwards scatter gradients.
    """
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_size
    rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
    cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
    return (slice(None), slice(None), rows, cols)


def window_view(
    xp: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    out_size: tuple[int, int],
) -> np.ndarray:
    """Read-only strided view (C, KH, KW, N, OH, OW) of every window of the padded input xp."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_size
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(
        xp,
        shape=(xp.shape[1], kh, kw, xp.shape[0], oh, ow),
        strides=(s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw),
        writeable=False,
    )


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Unfold x (N, C, H, W) into cols (C*KH*KW, N*OH*OW), channels first, batch in the columns.

    Row c*KH*KW + i*KW + j holds what kernel tap (i, j) of channel c sees at every output pixel
    of every sample, so a whole conv is ONE GEMM w.reshape(C_out, C*KH*KW) @ cols (a group's
    channels are contiguous rows). One GEMM per call instead of one per sample matters on a
    loaded machine: every BLAS call re-synchronizes its threads. The copy of the strided view
    runs over contiguous OW rows of x.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    xp = pad2d(x, (ph, ph, pw, pw))
    windows = window_view(xp, kernel, stride, dilation, (oh, ow))
    return windows.reshape(c * kh * kw, n * oh * ow)


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Adjoint of im2col: sum cols (C*KH*KW, N*OH*OW) back onto an x_shape (N, C, H, W) array.

    Overlapping windows add up. One strided add per kernel tap (KH*KW of them), each covering
    all samples, channels and pixels at once.
    """
    n, c, h, w = x_shape
    (kh, kw), (ph, pw) = kernel, padding
    oh = conv_output_size(h, kh, stride[0], ph, dilation[0])
    ow = conv_output_size(w, kw, stride[1], pw, dilation[1])
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    taps = cols.reshape(c, kh, kw, n, oh, ow)
    for i in range(kh):
        for j in range(kw):
            dxp[offset_slices(i, j, stride, dilation, (oh, ow))] += taps[:, i, j].transpose(
                1, 0, 2, 3
            )
    return dxp[:, :, ph : ph + h, pw : pw + w]
