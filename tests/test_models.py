"""Tests for worker.models: every model builds, runs forward/backward, and the loss helpers."""

from __future__ import annotations

import math

import pytest
import torch

from worker.models import MODELS, build_model, error_count, target_count, task_loss

IMAGE_CASES = [
    ("mnistfc", (1, 28, 28)),
    ("lenet", (1, 28, 28)),
    ("lenet", (3, 32, 32)),
    ("allcnn-bn", (3, 32, 32)),
    ("mlp", (1, 28, 28)),
    ("mlp", (3, 8, 8)),
]


def test_registry_names() -> None:
    assert set(MODELS) == {"mnistfc", "lenet", "allcnn-bn", "char-lstm", "mlp"}


@pytest.mark.parametrize("name,shape", IMAGE_CASES)
def test_image_model_forward_backward(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    x = torch.randn(4, *shape)
    y = torch.randint(0, 10, (4,))
    out = model(x)
    assert out.shape == (4, 10)
    loss = task_loss(out, y)
    assert math.isfinite(loss.item())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 10)


def test_lenet_layout_matches_paper() -> None:
    model = build_model("lenet", (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [20, 50]
    assert (linears[0].in_features, linears[0].out_features) == (200, 500)


def test_allcnn_convs_have_no_bias() -> None:
    model = build_model("allcnn-bn", (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 9 and all(c.bias is None for c in convs)


def test_char_lstm_forward_backward() -> None:
    torch.manual_seed(0)
    vocab = 20
    model = build_model("char-lstm", (12,), vocab)
    tokens = torch.randint(0, vocab, (3, 12))
    targets = torch.randint(0, vocab, (3, 12))
    out = model(tokens)
    assert out.shape == (3, 12, vocab)
    loss = task_loss(out, targets)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(math.log(vocab), rel=0.2)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_loss_and_errors_on_sequence_output() -> None:
    # (B=2, T=3, V=4): predictions are argmax over V.
    output = torch.full((2, 3, 4), -5.0)
    pred = torch.tensor([[0, 1, 2], [3, 3, 0]])
    output.scatter_(2, pred.unsqueeze(-1), 5.0)
    target = torch.tensor([[0, 1, 0], [3, 2, 0]])
    assert error_count(output, target) == 2
    assert target_count(target) == 6
    expected = torch.nn.functional.cross_entropy(output.reshape(6, 4), target.reshape(6))
    assert task_loss(output, target).item() == pytest.approx(expected.item())


def test_loss_and_errors_on_class_output() -> None:
    output = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    target = torch.tensor([0, 0, 0])
    assert error_count(output, target) == 1
    assert target_count(target) == 3
    assert task_loss(output, target).item() > 0


def test_unknown_model_names_allowed() -> None:
    with pytest.raises(ValueError) as info:
        build_model("resnet", (1, 28, 28), 10)
    for name in MODELS:
        assert name in str(info.value)


def test_lenet_rejects_tiny_input() -> None:
    with pytest.raises(ValueError, match="lenet"):
        build_model("lenet", (1, 8, 8), 10)
