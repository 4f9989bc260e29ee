"""The bundled MobileNetV2 and U-Net against faithful PyTorch rewrites: state-dict names and
shapes, published figures, and compiled outputs and gradients (float64, eval and train)."""
import math

import numpy as np
import pytest

import netspec
from netspec.analysis import analyze

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
from _torchvision import MobileNetV2  # after torch: _torchvision needs it


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Measured: torch's two OpenMP threads on a loaded 2-core machine took 100 s for one
    # MobileNetV2 step in float64 that one thread does in 1.3 s.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- U-Net as milesial/Pytorch-UNet (bilinear=False), widths scaled by c / 64 ----------------

class DoubleConv(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    def forward(self, x):
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(c_in, c_out))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(c_in, c_out)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class OutConv(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    def __init__(self, n_channels=3, n_classes=2, c=64):
        super().__init__()
        self.inc = DoubleConv(n_channels, c)
        self.down1, self.down2 = Down(c, 2 * c), Down(2 * c, 4 * c)
        self.down3, self.down4 = Down(4 * c, 8 * c), Down(8 * c, 16 * c)
        self.up1, self.up2 = Up(16 * c, 8 * c), Up(8 * c, 4 * c)
        self.up3, self.up4 = Up(4 * c, 2 * c), Up(2 * c, c)
        self.outc = OutConv(c, n_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(self.down4(x4), x4)
        x = self.up4(self.up3(self.up2(x, x3), x2), x1)
        return self.outc(x)


def spec_shapes(net) -> dict[str, tuple]:
    model = netspec.compile(net, dtype="float64")
    return {k: v.shape for k, v in model.state_dict().items()}


def torch_shapes(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def test_unet_state_dict_matches_the_pytorch_unet():
    assert spec_shapes(netspec.load("unet")) == torch_shapes(UNet(c=16))


def test_unet_at_width_64_has_the_pytorch_unets_parameter_count():
    # milesial/Pytorch-UNet's UNet(3, 2, bilinear=False): 31,037,698 parameters (its README
    # quotes 31M), counted here from the rewrite on the meta device.
    with torch.device("meta"):
        expected = sum(p.numel() for p in UNet(c=64).parameters())
    assert expected == 31_037_698
    report = analyze(netspec.load("unet", overrides={"c": 64}))
    assert report.totals.params == expected
    assert report.output.output_shape == (2, 64, 64)


def test_mobilenet_v2_published_figures():
    # torchvision MobileNet_V2_Weights.IMAGENET1K_V1: num_params 3,504,872, _ops 0.301 GMACs.
    report = analyze(netspec.load("mobilenet_v2"))
    assert report.totals.params == 3_504_872
    assert report.totals.macs / 1e9 == pytest.approx(0.301, abs=5e-4)
    assert report.totals.params == sum(math.prod(s) for s in torch_shapes(MobileNetV2())
                                       .values()) - report.totals.count.buffers


def twin_of(model, twin):
    twin = twin.double()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()},
                         strict=False)
    return twin


def compare(model, twin, x, train):
    """Outputs, every parameter gradient and the running statistics, for one dout."""
    twin.train(train)
    out = model.forward(x, train=train, keep_cache=True)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    model.backward(dout)
    xt = torch.from_numpy(x)
    expected = twin(xt)
    expected.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-7, atol=1e-9)
    params = dict(twin.named_parameters())
    assert set(model.grads) == set(params)
    # Batch norm over 2 samples of 1x1 maps (MobileNet's last stages at 32x32) cancels terms,
    # and a bias before a train-mode batch norm has a true gradient of 0: the absolute
    # tolerance is relative to the largest gradient of the network.
    scale = max(np.abs(p.grad.numpy()).max() for p in params.values())
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, params[name].grad.numpy(), rtol=1e-6, atol=1e-9 * scale,
                                   err_msg=name)
    buffers = dict(twin.named_buffers())
    for name, b in model.buffers.items():
        np.testing.assert_allclose(b, buffers[name].numpy(), rtol=1e-7, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_unet_matches_pytorch(train):
    model = netspec.compile(netspec.load("unet"), input_shape=(3, 16, 16), dtype="float64",
                            seed=0)
    twin = twin_of(model, UNet(c=16))
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    compare(model, twin, x, train)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_mobilenet_v2_matches_torchvision(train):
    # In train mode dropout's draws differ between the two: compare with it off.
    overrides = {"dropout": 0.0} if train else {}
    model = netspec.compile(netspec.load("mobilenet_v2", overrides=overrides),
                            input_shape=(3, 32, 32), dtype="float64", seed=0)
    twin = twin_of(model, MobileNetV2())
    twin.classifier[0].p = overrides.get("dropout", 0.2)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    compare(model, twin, x, train)
