"""conv2d works through the batch CONV_CHUNK samples at a time and builds its im2col columns
again in the backward instead of caching them (netspec.runtime.layers): the gradients of a
batch of several chunks against numerical gradients and PyTorch, every path (dx as a
convolution, dx by col2im, groups, dilation, need_dx=False), and the cache keeping x."""
import numpy as np
import pytest
from _gradcheck import assert_conv_gradients

from netspec import runtime
from netspec.runtime import layers

CASES = [  # (x shape, w shape, kwargs)
    ((5, 3, 6, 7), (4, 3, 3, 3), {"padding": (1, 1)}),  # dx as a convolution
    ((5, 4, 7, 6), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 0), "groups": 2}),  # col2im
    ((5, 2, 8, 8), (3, 2, 3, 3), {"dilation": (2, 1), "padding": (2, 1)}),
]


@pytest.fixture
def chunks_of_two(monkeypatch):
    monkeypatch.setattr(layers, "CONV_CHUNK", 2)  # 5 samples: chunks of 2, 2 and 1


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES)
def test_chunked_conv_gradients_match_numerical_gradients(chunks_of_two, x_shape, w_shape,
                                                          kwargs):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), \
        rng.standard_normal(w_shape[0])
    out, cache = runtime.conv2d_forward(x, w, b, **kwargs)
    assert cache[0] is x  # the input, not its columns
    dout = rng.standard_normal(out.shape)
    dx, dw, db = runtime.conv2d_backward(dout, cache)
    assert_conv_gradients(x, w, b, dout, dx, dw, db, **kwargs)
    skipped, dw2, db2 = runtime.conv2d_backward(dout, cache, need_dx=False)
    assert skipped is None
    np.testing.assert_allclose(dw2, dw, rtol=1e-12)
    np.testing.assert_allclose(db2, db, rtol=1e-12)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES)
def test_chunked_conv_matches_torch_in_float32(x_shape, w_shape, kwargs):
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    rng = np.random.default_rng(1)
    n = 2 * layers.CONV_CHUNK + 3  # three chunks, the last one short
    x = rng.standard_normal((n,) + x_shape[1:], dtype=np.float32)
    w = (rng.standard_normal(w_shape) / 4).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    out, cache = runtime.conv2d_forward(x, w, b, **kwargs)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx, dw, db = runtime.conv2d_backward(dout, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    expected = F.conv2d(xt, wt, bt, **kwargs)
    expected.backward(torch.tensor(dout))
    for name, a, e in [("out", out, expected), ("dx", dx, xt.grad), ("dw", dw, wt.grad),
                       ("db", db, bt.grad)]:
        assert a.dtype == np.float32, name
        e = e.detach().numpy()
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=name)


def test_a_split_batch_shares_the_chunk_between_its_shards():
    from netspec.runtime import parallel

    assert [s.stop - s.start for s in layers._chunks(2 * layers.CONV_CHUNK)] == \
        [layers.CONV_CHUNK] * 2
    per_shard = parallel.run(lambda n: [s.stop - s.start for s in layers._chunks(n)],
                             [layers.CONV_CHUNK, layers.CONV_CHUNK])
    assert per_shard == [[layers.CONV_CHUNK // 2] * 2] * 2  # 8 samples in flight, not 16
