"""Compiled models against hand-built PyTorch CPU models with the same weights (float64).

For each network: the state-dict names agree with PyTorch's, and outputs, loss, every
parameter gradient and the updated running statistics agree to rtol 1e-6, in eval mode and in
train mode (batch statistics; dropout probability 0 in train mode, as dropout draws differ).
"""
import os

import numpy as np
import pytest

import netspec

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from _torchvision import Inception, basic_block, bottleneck

HERE = os.path.dirname(__file__)
RTOL, ATOL = 1e-6, 1e-10


def spec(name: str) -> str:
    return os.path.join(HERE, "specs", name + ".net")


# ---- the PyTorch side (torchvision's blocks: tests/_torchvision.py) ---------------------------

class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c3, self.c5 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), nn.Conv2d(16, 120, 5)
        self.f6, self.output = nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.c1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.c3(x)), 2)
        x = torch.tanh(self.c5(x)).flatten(1)
        return self.output(torch.tanh(self.f6(x)))


class TinyVGG(nn.Module):
    def __init__(self, drop: float):
        super().__init__()

        def conv_bn(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(*conv_bn(3, 8), nn.MaxPool2d(2), *conv_bn(8, 16),
                                      *conv_bn(16, 16), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(drop),
                                        nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class TinyInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.inception = Inception(8, 4, 4, 8, 2, 4, 4)
        self.fc = nn.Linear(4 + 8 + 4 + 4, 5)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.inception(x), 1).flatten(1))


class TinyResNet(nn.Module):
    def __init__(self, stem: bool, layer1: list, layer2: list, features: int):
        super().__init__()
        if stem:
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
        self.stem = stem
        self.layer1, self.layer2 = nn.Sequential(*layer1), nn.Sequential(*layer2)
        self.fc = nn.Linear(features, 5)

    def forward(self, x):
        if self.stem:
            x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# name, spec, overrides for train mode, torch model builder, batch size
CASES = [
    ("lenet5", "lenet5", {}, LeNet5, 4),
    ("vgg_bn", spec("tiny_vgg_bn"), {"drop": 0.0}, lambda: TinyVGG(0.0), 4),
    ("inception", spec("tiny_inception"), {}, TinyInception, 3),
    ("resnet_basic", spec("tiny_resnet_basic"), {},
     lambda: TinyResNet(True, [basic_block(8, 8), basic_block(8, 8)],
                        [basic_block(8, 16, 2), basic_block(16, 16)], 16), 3),
    ("resnet_bottleneck", spec("tiny_resnet_bottleneck"), {},
     lambda: TinyResNet(False, [bottleneck(8, 4), bottleneck(16, 4)],
                        [bottleneck(16, 8, 2), bottleneck(32, 8)], 32), 3),
]


# ---- helpers ---------------------------------------------------------------------------------

def compiled(path: str, overrides: dict, seed: int = 0):
    net = netspec.load(path, overrides=overrides)
    model = netspec.compile(net, dtype="float64", seed=seed)
    # Biases, batch-norm affines and running statistics start at 0/1: make them random so
    # every term of every layer is exercised.
    rng = np.random.default_rng(seed + 1)
    state = model.state_dict()
    for t in model.tensors:
        if t.init == "zeros":
            state[t.name] = 0.1 * rng.standard_normal(t.shape)
        elif t.init == "ones":
            state[t.name] = rng.uniform(0.5, 1.5, t.shape)
    model.load_state_dict(state)
    return model


def torch_twin(model, build):
    twin = build().double()
    ours = model.state_dict()
    theirs = {k for k in twin.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(ours) == theirs, "state-dict names differ from PyTorch's"
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.items()}, strict=False)
    return twin


def batch(model, n: int, seed: int = 2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + tuple(model.input_shape))
    y = rng.integers(0, model.output_shape[0], n)
    return x, y


def step(model, x, y, train: bool):
    scores = model.forward(x, train=train, keep_cache=True)
    loss, dscores = model.data_loss(scores, y)
    model.backward(dscores)
    return scores, loss


def torch_step(twin, x, y, train: bool):
    twin.train(train)
    twin.zero_grad()
    scores = twin(torch.from_numpy(x))
    loss = F.cross_entropy(scores, torch.from_numpy(y))
    loss.backward()
    return scores.detach().numpy(), loss.item()


def assert_same(model, twin, scores, loss, t_scores, t_loss):
    np.testing.assert_allclose(scores, t_scores, rtol=RTOL, atol=ATOL, err_msg="scores")
    np.testing.assert_allclose(loss, t_loss, rtol=RTOL, err_msg="loss")
    params = dict(twin.named_parameters())
    assert set(model.grads) == set(params)
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, params[name].grad.numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of {name}")
    buffers = dict(twin.named_buffers())
    for name, b in model.buffers.items():
        np.testing.assert_allclose(b, buffers[name].numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"buffer {name}")


# ---- the comparisons -------------------------------------------------------------------------

# threads=2: each batch split over two threads (uneven shards for n = 3), as netspec train
# runs image networks; the kernels see one shard each, batch norm the whole batch's statistics.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, path, train_overrides, build, n", CASES, ids=[c[0] for c in CASES])
def test_eval_mode_matches_torch(name, path, train_overrides, build, n, threads):
    model = compiled(path, {})
    twin = torch_twin(model, build)
    x, y = batch(model, n)
    with netspec.threads(threads):
        scores, loss = step(model, x, y, train=False)
    assert_same(model, twin, scores, loss, *torch_step(twin, x, y, train=False))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, path, train_overrides, build, n", CASES, ids=[c[0] for c in CASES])
def test_train_mode_matches_torch(name, path, train_overrides, build, n, threads):
    """Batch statistics, running-statistics updates (compared too) and their gradients."""
    model = compiled(path, train_overrides)
    twin = torch_twin(model, build)
    x, y = batch(model, n)
    for _ in range(2):  # the second step starts from running statistics the first updated
        with netspec.threads(threads):
            scores, loss = step(model, x, y, train=True)
        assert_same(model, twin, scores, loss, *torch_step(twin, x, y, train=True))


def test_svm_loss_is_torch_multi_margin_times_classes():
    """The spec's `loss = svm(delta = ...)` reaches the model; CS231n's hinge sums over the
    classes where torch's multi_margin_loss averages over them."""
    text = """network lin {
        input x: [6]
        output x -> fc: linear(4)
        train { loss = svm(delta = 0.5) }
    }"""
    model = netspec.compile(netspec.parse(text), dtype="float64")
    twin = nn.Sequential()
    twin.fc = nn.Linear(6, 4).double()
    twin.fc.load_state_dict({k[3:]: torch.from_numpy(v.copy())
                             for k, v in model.state_dict().items()})
    x, y = batch(model, 5)
    loss, grads = model.loss(x, y)
    t_loss = 4 * F.multi_margin_loss(twin(torch.from_numpy(x)), torch.from_numpy(y), margin=0.5)
    t_loss.backward()
    np.testing.assert_allclose(loss, t_loss.item(), rtol=RTOL)
    np.testing.assert_allclose(grads["fc.weight"], twin.fc.weight.grad.numpy(), rtol=RTOL,
                               atol=ATOL)


def test_eval_dropout_is_identity_like_torch():
    """With dropout 0.5 in the spec, eval mode still equals torch's eval model."""
    model = compiled(spec("tiny_vgg_bn"), {})
    twin = torch_twin(model, lambda: TinyVGG(0.5))
    x, _ = batch(model, 2)
    twin.eval()
    np.testing.assert_allclose(model.forward(x), twin(torch.from_numpy(x)).detach().numpy(),
                               rtol=RTOL, atol=ATOL)
