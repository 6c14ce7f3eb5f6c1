"""Model registry: shapes, sizes, errors, and that the small models can learn."""
import re

import pytest
import torch

from sslviz.engine.device import default_model_name
from sslviz.engine.models import MODELS, build_model, count_parameters

INPUTS = {"mlp": (2,), "cnn_digits": (1, 8, 8), "cnn32": (3, 32, 32), "wrn28_2": (3, 32, 32)}


def test_registry_keys():
    assert set(MODELS) == set(INPUTS) | {"text_bow", "text_cnn"}  # text models: tests/test_text.py


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_output_shape_and_backward(name):
    torch.manual_seed(0)
    model = build_model(name, input_shape=INPUTS[name], num_classes=7)
    x = torch.rand(4, *INPUTS[name])
    out = model(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["cnn_digits", "cnn32", "wrn28_2"])
def test_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    model = build_model(name, input_shape=INPUTS[name], num_classes=5).eval()
    x = torch.rand(2, *INPUTS[name])
    reference = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).shape == (2, 5)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 5, 7), (1, 1, 1)])
def test_cnn_digits_takes_any_small_image(shape):
    model = build_model("cnn_digits", input_shape=shape, num_classes=3)
    assert model(torch.rand(2, *shape)).shape == (2, 3)


@pytest.mark.parametrize(("name", "low", "high"), [
    ("mlp", 18_000, 18_500),
    ("cnn_digits", 30_000, 60_000),
    ("cnn32", 150_000, 350_000),
    ("wrn28_2", 1_400_000, 1_550_000),
])
def test_parameter_counts(name, low, high):
    assert low <= count_parameters(build_model(name, input_shape=INPUTS[name], num_classes=10)) <= high


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown model 'resnet'. Valid names: cnn32, cnn_digits, mlp, text_bow, text_cnn, wrn28_2"):
        build_model("resnet", input_shape=(3, 32, 32), num_classes=10)


@pytest.mark.parametrize(("name", "shape", "needs"), [
    ("mlp", (1, 8, 8), r"\(D,\)"),
    ("cnn_digits", (3, 32, 32), r"H, W <= 16"),
    ("cnn_digits", (2,), r"H, W <= 16"),
    ("cnn32", (1, 8, 8), r"\(C, 32, 32\)"),
    ("wrn28_2", (3, 64, 64), r"\(C, 32, 32\)"),
])
def test_incompatible_shape_names_model_and_need(name, shape, needs):
    message = rf"Model '{name}' needs input shape .*{needs}.* Got {re.escape(str(shape))} instead"
    with pytest.raises(ValueError, match=message):
        build_model(name, input_shape=shape, num_classes=10)


@pytest.mark.parametrize(("shape", "device", "expected"), [
    ((2,), "cpu", "mlp"),
    ((2,), "cuda", "mlp"),
    ((1, 8, 8), "cuda", "cnn_digits"),
    ((3, 16, 16), "cpu", "cnn_digits"),
    ((3, 32, 32), "cpu", "cnn32"),
    ((3, 32, 32), "cuda", "wrn28_2"),
    ((3, 32, 32), "cuda:1", "wrn28_2"),
])
def test_default_model_name(shape, device, expected):
    assert default_model_name(shape, device) == expected


def _train_accuracy(model, x, y, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_cnn_digits_overfits_random_images():
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 4, (64,))
    model = build_model("cnn_digits", input_shape=(1, 8, 8), num_classes=4)
    assert _train_accuracy(model, x, y, steps=50, lr=1e-2) > 0.9


def test_mlp_learns_blobs():
    torch.manual_seed(0)
    centres = torch.tensor([[-2.0, -2.0], [2.0, -2.0], [0.0, 2.0]])
    y = torch.randint(0, 3, (300,))
    x = centres[y] + 0.5 * torch.randn(300, 2)
    model = build_model("mlp", input_shape=(2,), num_classes=3)
    assert _train_accuracy(model, x, y, steps=100, lr=1e-2) > 0.95


# What cfg.compile hands to torch.compile (the backbone, the step's heaviest part) must compile as one graph: a graph
# break there splits the step into pieces and costs a host round trip each, on the GPU most. Checked on the CPU with
# dynamo's explain (it traces without a compiler), so this needs no GPU.
EXAMPLES = {"mlp": (2,), "cnn_digits": (1, 8, 8), "cnn32": (3, 32, 32), "wrn28_2": (3, 32, 32),
            "text_bow": (12, 50), "text_cnn": (12, 50)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_backbone_compiles_without_a_graph_break(name):
    import torch._dynamo as dynamo

    shape = EXAMPLES[name]
    model = build_model(name, input_shape=shape, num_classes=10)
    x = torch.randint(0, shape[1], (4, shape[0])) if name.startswith("text") else torch.randn(4, *shape)
    try:
        report = dynamo.explain(model.backbone)(x)
    finally:
        dynamo.reset()
    assert report.graph_break_count == 0, [str(b.reason)[:200] for b in report.break_reasons]
    assert report.graph_count == 1
