"""A batch split over threads (netspec.runtime.parallel): the pieces, and whole compiled
networks against the same networks unsplit. (PyTorch and numerical gradients check the split
models too: tests/test_model_torch.py and tests/test_model_gradcheck.py run with threads=2.)"""
import subprocess
import sys
import threading

import numpy as np
import pytest
from _sequence_graphs import ALL as SEQUENCE_GRAPHS

import netspec
from netspec import runtime
from netspec.runtime import parallel
from netspec.runtime.parallel import Shards


@pytest.fixture(autouse=True)
def _one_thread_after():
    yield
    parallel.use_default_threads()


def test_split_makes_near_equal_views_and_never_an_empty_shard():
    x = np.arange(7 * 2).reshape(7, 2)
    parallel.set_threads(3)
    xs = parallel.split(x)
    assert isinstance(xs, Shards) and xs.sizes == [3, 2, 2]
    assert all(np.shares_memory(s, x) for s in xs)
    np.testing.assert_array_equal(parallel.join(xs), x)
    assert parallel.split(x[:1]) is not None and not isinstance(parallel.split(x[:1]), Shards)
    assert parallel.split(x[:2]).sizes == [1, 1]
    parallel.use_default_threads()
    assert parallel.split(x) is x


def test_split_like_checks_the_batch():
    x = np.zeros((5, 3))
    assert parallel.split_like(x, [3, 2]).sizes == [3, 2]
    with pytest.raises(ValueError, match="batch of 5 does not split into shards of \\[2, 2\\]"):
        parallel.split_like(x, [2, 2])


def test_set_threads_rejects_non_positive_counts():
    for bad in (0, -2, 1.5, True, None):
        with pytest.raises(ValueError, match="positive integer"):
            parallel.set_threads(bad)
    assert parallel.get_threads() == 1


def test_shards_add_shard_by_shard_and_do_not_concatenate_or_repeat():
    a = Shards([np.ones(2), np.ones(3)])
    b = Shards([np.full(2, 2.0), np.full(3, 3.0)])
    total = a + b
    assert isinstance(total, Shards) and len(total) == 2
    np.testing.assert_array_equal(total[1], np.full(3, 4.0))
    with pytest.raises(TypeError):
        a + [np.ones(2)]
    with pytest.raises(TypeError):
        a * 2


def test_run_uses_other_threads_and_keeps_shard_order():
    parallel.set_threads(3)
    names = parallel.run(lambda k: (k, threading.current_thread().name), range(3))
    assert [k for k, _ in names] == [0, 1, 2]
    assert names[0][1] == threading.current_thread().name  # shard 0 on the caller
    assert all(n.startswith("netspec-shard") for _, n in names[1:])


def test_run_raises_a_shard_error_after_every_shard_stopped():
    parallel.set_threads(2)
    finished = []

    def work(k):
        if k == 0:
            raise ValueError("shard 0 failed")
        threading.Event().wait(0.05)
        finished.append(k)

    with pytest.raises(ValueError, match="shard 0 failed"):
        parallel.run(work, range(2))
    assert finished == [1]  # the other shard ran to its end before the error came out
    parallel.set_threads(3)
    finished.clear()

    def work_later(k):
        if k == 1:
            raise ValueError("shard 1 failed")
        if k == 2:
            threading.Event().wait(0.05)
        finished.append(k)

    with pytest.raises(ValueError, match="shard 1 failed"):
        parallel.run(work_later, range(3))
    assert sorted(finished) == [0, 2]


def _split(x, n=2):
    return parallel.split(x, n)


@pytest.mark.parametrize("need_dx", [True, False])
def test_batchwise_conv_sums_weight_gradients_over_shards(need_dx):
    parallel.set_threads(2)
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)
    out, cache = runtime.conv2d_forward(x, w, b, padding=(1, 1))
    outs, caches = runtime.conv2d_forward(_split(x), w, b, padding=(1, 1))
    assert isinstance(outs, Shards) and isinstance(caches, Shards)
    np.testing.assert_allclose(parallel.join(outs), out, rtol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = runtime.conv2d_backward(dout, cache, need_dx=need_dx)
    dxs, dws, dbs = runtime.conv2d_backward(parallel.split_like(dout, outs.sizes), caches,
                                            need_dx=need_dx)
    np.testing.assert_allclose(dws, dw, rtol=1e-12)
    np.testing.assert_allclose(dbs, db, rtol=1e-12)
    if need_dx:
        np.testing.assert_allclose(parallel.join(dxs), dx, rtol=1e-12)
    else:
        assert dxs is None


def test_batchwise_multi_input_kernels_take_lists_of_shards():
    parallel.set_threads(2)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 5, 4))
    out, cache = runtime.concat_forward([_split(a), _split(b)])
    np.testing.assert_array_equal(parallel.join(out), np.concatenate([a, b], axis=1))
    da, db = runtime.concat_backward(out, cache)
    np.testing.assert_array_equal(parallel.join(da), a)
    np.testing.assert_array_equal(parallel.join(db), b)
    with pytest.raises(TypeError, match="split and unsplit"):
        runtime.add_forward([_split(a), a])


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_on_shards_uses_the_whole_batch_statistics(train):
    parallel.set_threads(3)
    rng = np.random.default_rng(2)
    x = 3 + 2 * rng.standard_normal((7, 4, 3, 3))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    stats = [(rng.standard_normal(4), 1 + rng.random(4)) for _ in range(2)]
    run_mean, run_var = (s.copy() for s in stats[0])
    out, cache = runtime.batchnorm_forward(x, gamma, beta, run_mean, run_var, train)
    split_mean, split_var = (s.copy() for s in stats[0])
    outs, caches = runtime.batchnorm_forward(_split(x, 3), gamma, beta, split_mean, split_var,
                                             train)
    np.testing.assert_allclose(parallel.join(outs), out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(split_mean, run_mean, rtol=1e-12)
    np.testing.assert_allclose(split_var, run_var, rtol=1e-12)
    dout = rng.standard_normal(x.shape)
    expected = runtime.batchnorm_backward(dout, cache)
    got = runtime.batchnorm_backward(parallel.split_like(dout, outs.sizes), caches)
    np.testing.assert_allclose(parallel.join(got[0]), expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-12)


def test_dropout_on_shards_draws_the_unsplit_mask():
    parallel.set_threads(2)
    x = np.ones((5, 8), dtype=np.float32)
    out, mask = runtime.dropout_forward(x, 0.5, True, np.random.default_rng(7))
    outs, masks = runtime.dropout_forward(_split(x), 0.5, True, np.random.default_rng(7))
    np.testing.assert_array_equal(parallel.join(outs), out)
    np.testing.assert_array_equal(parallel.join(runtime.dropout_backward(outs, masks)),
                                  out * mask)
    same, cache = runtime.dropout_forward(_split(x), 0.5, False, None)
    assert cache is None and runtime.dropout_backward(same, cache) is same


EVERY_OP = """
network every_op {
    input x: [3, 8, 8]
    a = x -> conv(6, k=3, p=1, groups=3) -> batchnorm -> relu -> maxpool(3, s=1, p=1)
    b = x -> conv(6, k=1) -> groupnorm(2) -> leaky_relu -> avgpool(3, s=1, p=1)
    c = (a, b) -> concat -> conv(6, k=1) -> instancenorm -> elu
    e = x -> conv_transpose(6, k=3, s=2, p=1, out_pad=1) -> relu6 -> maxpool(2, s=2, d=1)
        -> hardswish -> upsample(2, mode="bilinear") -> pad([0, 0, 1, -1])
        -> upsample(size=[8, 8])
    d = c + a + e
    output d -> layernorm -> tanh -> adaptive_avgpool(2) -> flatten -> maxout(2)
             -> dropout(0.3) -> linear(10) -> sigmoid -> identity -> linear(4) -> softmax
}
"""


def run_step(model, x, y, threads):
    model.rng = np.random.default_rng(5)
    with netspec.threads(threads):
        scores = model.forward(x, train=True)
        _, dscores = model.data_loss(scores, y)
        dx = model.backward(dscores)
    return scores, dx, {k: v.copy() for k, v in model.grads.items()}


def test_the_split_graphs_cover_the_op_registry():
    from netspec.ops import REGISTRY
    used = {d["op"] for text in (EVERY_OP, *SEQUENCE_GRAPHS.values())
            for d in netspec.parse(text).graph.nodes.values()}
    assert used | {"global_avgpool"} == set(REGISTRY)


def _batch(net, n: int, rng):
    """A batch of inputs (token ids for a token input) and labels (per token for a
    per-token output)."""
    node = net.node(net.inputs[0])
    shape = (n,) + tuple(node["attrs"]["shape"])
    x = rng.integers(0, 5, shape) if node["attrs"]["dtype"] == "int" else \
        rng.standard_normal(shape)
    netspec.analyze(net)
    out = net.node(net.outputs[0])["shape"]
    return x, rng.integers(0, out[-1], (n,) + tuple(out[:-1]))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("graph", ["every_op", *sorted(SEQUENCE_GRAPHS)])
def test_a_network_of_every_op_gives_the_unsplit_results(graph, threads):
    net = netspec.parse(EVERY_OP if graph == "every_op" else SEQUENCE_GRAPHS[graph])
    rng = np.random.default_rng(0)
    x, y = _batch(net, 7, rng)
    one = netspec.compile(net, dtype="float64", seed=1)
    many = netspec.compile(net, dtype="float64", seed=1)
    scores, dx, grads = run_step(one, x, y, 1)
    s_scores, s_dx, s_grads = run_step(many, x, y, threads)
    np.testing.assert_allclose(s_scores, scores, rtol=1e-10)
    if dx is None:  # token ids have no gradient
        assert s_dx is None
    else:
        np.testing.assert_allclose(s_dx, dx, rtol=1e-8, atol=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(s_grads[name], g, rtol=1e-8, atol=1e-12, err_msg=name)
    for name, b in one.buffers.items():
        np.testing.assert_allclose(many.buffers[name], b, rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(many.forward(x), one.forward(x), rtol=1e-10)  # eval mode


def test_float32_training_steps_stay_float32_when_split():
    model = netspec.compile("resnet18", input_shape=(3, 32, 32))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    with netspec.threads(2):
        loss, grads = model.loss(x, rng.integers(0, 1000, 4))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert np.isfinite(loss)


def test_a_split_backward_needs_the_batch_of_its_forward():
    model = netspec.compile("lenet5")
    x = np.zeros((4,) + model.input_shape, dtype=np.float32)
    with netspec.threads(2):
        model.forward(x, train=True)
        with pytest.raises(ValueError, match="batch of 3 does not split"):
            model.backward(np.zeros((3, 10), dtype=np.float32))


STANDALONE = """
import sys, importlib.util, numpy as np
sys.modules["netspec"] = None  # any `import netspec` now fails
spec = importlib.util.spec_from_file_location("standalone", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.set_threads(2)
model = module.Network(dtype="float64", seed=3)
x = np.random.default_rng(0).standard_normal((5, 3, 8, 8))
loss, grads = model.loss(x, np.array([0, 1, 2, 3, 0]))
assert model._split == [3, 2], model._split
np.savez(sys.argv[2], loss=loss, **grads)
"""


def test_standalone_module_splits_batches_with_its_own_copy_of_the_runtime(tmp_path):
    from netspec.codegen import generate

    net = netspec.parse(EVERY_OP)
    path = tmp_path / "every_op.py"
    path.write_text(generate(net, standalone=True))
    result = tmp_path / "result.npz"
    subprocess.run([sys.executable, "-c", STANDALONE, str(path), str(result)], check=True)
    model = netspec.compile(net, dtype="float64", seed=3)
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8))
    loss, grads = model.loss(x, np.array([0, 1, 2, 3, 0]))
    with np.load(result) as got:
        np.testing.assert_allclose(got["loss"], loss, rtol=1e-12)
        for name, g in grads.items():
            np.testing.assert_allclose(got[name], g, rtol=1e-8, atol=1e-12, err_msg=name)


# ---- training on a split batch: Ctrl-C and resume ---------------------------------------------

SMALL_CNN = """
network small_cnn {
    input x: [1, 8, 8]
    output x -> conv(4, k=3, p=1) -> batchnorm -> relu -> maxpool(2) -> flatten
             -> dropout(0.2) -> linear(10)
}
"""


def _sabotaged(at: int):
    """The compiled small CNN, sending itself SIGINT inside backward call `at`."""
    import os
    import signal

    base = type(netspec.compile(netspec.parse(SMALL_CNN)))

    class Sabotaged(base):
        calls = 0

        def backward(self, dscores, input_grad=True):
            self.calls += 1
            out = super().backward(dscores, input_grad)
            if self.calls == at:
                os.kill(os.getpid(), signal.SIGINT)
            return out

    return Sabotaged()


def test_ctrl_c_and_resume_on_a_split_batch_is_bit_identical(tmp_path):
    from netspec.train.config import TrainConfig
    from netspec.train.data import load_dataset
    from netspec.train.loop import train

    cfg = TrainConfig.from_spec({"optimizer": {"type": "momentum", "lr": 0.05},
                                 "epochs": 2, "batch": 64, "seed": 1,
                                 "data": {"type": "digits", "limit": 600}})
    data = load_dataset(cfg.data)
    with netspec.threads(2):
        straight = netspec.compile(netspec.parse(SMALL_CNN))
        expected = train(straight, cfg, data, tmp_path / "straight", progress=False)
        partial = train(_sabotaged(at=10), cfg, data, tmp_path / "split", progress=False)
        assert partial.status == "interrupted"
        resumed = netspec.compile(netspec.parse(SMALL_CNN))
        history = train(resumed, cfg, data, tmp_path / "split", resume=True, progress=False)
    assert history.status == "completed"
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
    assert [r.comparable() for r in history.records] == \
        [r.comparable() for r in expected.records]
