"""The torch target of the resampling ops, MobileNet's activations and the pool options, on
arguments the bundled specs do not use (output padding, dilation, grouped transposed convs,
non-integer and size-given resizes, cropping pads, count_pad=false): the generated torch
module equals the NumPy model, forward and every gradient (float64)."""
import numpy as np
import pytest

import netspec

torch = pytest.importorskip("torch")

ZOO = """network zoo {
    input x: [4, 7, 6]
    a = x -> ct: conv_transpose(6, k=3, s=2, p=1, out_pad=1, groups=2, d=1) -> relu6
        -> mp: maxpool(3, s=2, p=1, d=2, ceil=true) -> hardswish
        -> up: upsample([1.5, 2], mode="nearest") -> ap: avgpool(3, s=2, p=1, ceil=true,
        count_pad=false)
    b = x -> ct2: conv_transpose(6, k=[2, 3], s=[1, 2], p=[0, 1], out_pad=[0, 1], d=[2, 1],
        bias=false) -> bl: upsample(size=[5, 9], mode="bilinear", align_corners=true)
        -> pd: pad([-1, 1, 0, -1], value=0.25) -> bl2: upsample(0.5, mode="bilinear")
    fa = a -> flatten
    fb = b -> flatten
    output (fa, fb) -> concat -> fc: linear(3)
}"""


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_torch_target_equals_the_numpy_model(train):
    model = netspec.compile(netspec.parse(ZOO), dtype="float64", seed=3)
    module = netspec.compile(netspec.parse(ZOO), dtype="float64", seed=3, target="torch")
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6))
    out = model.forward(x, train=train, keep_cache=True)
    dout = rng.standard_normal(out.shape)
    model.backward(dout)
    module.train(train)
    expected = module(torch.from_numpy(x))
    expected.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-9, atol=1e-12)
    params = dict(module.named_parameters())
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, params[name].grad.numpy(), rtol=1e-8, atol=1e-11,
                                   err_msg=name)
