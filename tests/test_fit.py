"""netspec.fit: the in-memory training call for notebooks, checked against PyTorch doing the
same steps (full-batch SGD on a softmax classifier: the batch order cannot differ) and
against Keras's conventions (history keys, validation_split taking the last examples)."""
from __future__ import annotations

import numpy as np
import pytest

import netspec
from netspec.train import ConfigError

torch = pytest.importorskip("torch")

LINEAR = """
network linear(num_classes = 4) {
    input x: [6]
    output x -> fc: linear(num_classes)
}
"""


@pytest.fixture()
def arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    return x, y


def test_full_batch_sgd_equals_torch_step_for_step(arrays):
    x, y = arrays
    model = netspec.compile(netspec.parse(LINEAR), seed=3)
    reference = torch.nn.Linear(6, 4)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(model.params["fc.weight"]))
        reference.bias.copy_(torch.from_numpy(model.params["fc.bias"]))
    sgd = torch.optim.SGD(reference.parameters(), lr=0.5)
    losses = []
    for _ in range(3):
        sgd.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference(torch.from_numpy(x)),
                                                 torch.from_numpy(y))
        loss.backward()
        sgd.step()
        losses.append(loss.item())
    history = netspec.fit(model, x, y, epochs=3, batch_size=len(x), optimizer="sgd", lr=0.5)
    assert history.model is model and history.status == "completed"
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(model.params["fc.weight"], reference.weight.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert set(history.history) == {"loss", "accuracy", "lr"} and history.out_dir is None


def test_a_spec_is_compiled_at_the_arrays_shape_and_validation_split_takes_the_last(
        arrays, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:400, None] / 16).astype(np.float32)  # (400, 1, 8, 8)
    y = digits.target[:400]
    history = netspec.fit("lenet5", np.pad(x, ((0, 0), (0, 0), (12, 12), (12, 12))), y,
                          epochs=1, validation_split=0.25, out_dir=tmp_path / "run",
                          optimizer={"type": "adam", "lr": 0.003})
    assert history.model.input_shape == (1, 32, 32)
    assert history.records[-1].val_acc is not None
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert (tmp_path / "run" / "last.npz").exists()
    # validation_split holds out the last 100 examples, as validation_data=(last 100) does
    split = netspec.fit("digits_cnn", x, y, epochs=1, validation_split=0.25, seed=1)
    again = netspec.fit("digits_cnn", x[:300], y[:300], epochs=1,
                        validation_data=(x[300:], y[300:]), seed=1)
    assert again.history == split.history


def test_settings_are_keywords_and_bad_ones_are_refused(arrays):
    x, y = arrays
    model = netspec.compile(netspec.parse(LINEAR))
    history = netspec.fit(model, x, y, epochs=2, l2=0.01, schedule="cosine",
                          **{"optimizer.beta1": 0.8})
    assert history.history["lr"][1] < history.history["lr"][0]
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        netspec.fit(model, x, y, epochz=2)
    with pytest.raises(TypeError, match="normalize x"):
        netspec.fit(model, x, y, normalize=[0, 1])
    with pytest.raises(ValueError, match="one label"):
        netspec.fit(model, x, y[:5])
    with pytest.raises(ValueError, match="integer class labels"):
        netspec.fit(model, x, y.astype(float))
    with pytest.raises(ValueError, match="NaN"):
        netspec.fit(model, np.full_like(x, np.nan), y)
