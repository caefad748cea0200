"""Model zoo for the Entropy-SGD training service.

The architectures follow the Entropy-SGD paper's reference code (Chaudhari et al.,
2017): ``mnistfc``, ``lenet``, ``allcnn-bn`` and ``char-lstm``, plus a tiny ``mlp`` for
fast tests.  Every builder takes the dataset's ``input_shape`` (without the batch
dimension) and ``num_classes`` so the same model can be used on other input sizes.

The loss and error helpers treat sequence outputs ``(B, T, V)`` as ``B*T`` independent
predictions, so the training engine never needs to know which kind of model it runs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

Builder = Callable[[tuple[int, ...], int], nn.Module]


def _check_image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` or raise a ValueError saying what the model expects."""
    if len(input_shape) != 3 or any(int(d) <= 0 for d in input_shape):
        raise ValueError(f"model {name!r} needs input_shape (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


def _mnistfc(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """784-1024-1024-10 fully connected net with BatchNorm and dropout 0.2."""
    n_in = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(n_in, 1024),
        nn.BatchNorm1d(1024),
        nn.ReLU(inplace=True),
        nn.Dropout(0.2),
        nn.Linear(1024, 1024),
        nn.BatchNorm1d(1024),
        nn.ReLU(inplace=True),
        nn.Dropout(0.2),
        nn.Linear(1024, num_classes),
    )


def _lenet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet (conv 20-50 with BatchNorm, dropout 0.25, fc 500) as in the paper's code.

    The width of the first fully connected layer is found by a dummy forward pass, so
    any image size that survives the two conv/pool stages works (1x28x28, 3x32x32, ...).
    """
    c, h, w = _check_image_shape("lenet", input_shape)
    features = nn.Sequential(
        nn.Conv2d(c, 20, 5),
        nn.BatchNorm2d(20),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 3),
        nn.Dropout(0.25),
        nn.Conv2d(20, 50, 5),
        nn.BatchNorm2d(50),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Dropout(0.25),
        nn.Flatten(),
    )
    features.eval()
    try:
        with torch.no_grad():
            flat = features(torch.zeros(1, c, h, w)).shape[1]
    except RuntimeError as exc:
        raise ValueError(f"model 'lenet' cannot take input_shape {tuple(input_shape)}: too small ({exc})") from exc
    features.train()
    return nn.Sequential(
        *features,
        nn.Linear(flat, 500),
        nn.BatchNorm1d(500),
        nn.ReLU(inplace=True),
        nn.Dropout(0.25),
        nn.Linear(500, num_classes),
    )


def _convbn(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    """Conv (no bias, BatchNorm supplies it) + BatchNorm + ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _allcnn_bn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """All-CNN-C (Springenberg et al.) with BatchNorm, as used for CIFAR-10 in the paper."""
    c, _, _ = _check_image_shape("allcnn-bn", input_shape)
    return nn.Sequential(
        nn.Dropout(0.2),
        *_convbn(c, 96, 3, padding=1),
        *_convbn(96, 96, 3, padding=1),
        *_convbn(96, 96, 3, stride=2, padding=1),
        nn.Dropout(0.5),
        *_convbn(96, 192, 3, padding=1),
        *_convbn(192, 192, 3, padding=1),
        *_convbn(192, 192, 3, stride=2, padding=1),
        nn.Dropout(0.5),
        *_convbn(192, 192, 3, padding=1),
        *_convbn(192, 192, 1),
        *_convbn(192, num_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class CharLSTM(nn.Module):
    """Character-level language model: token ids ``(B, T)`` -> logits ``(B, T, V)``."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 128, layers: int = 2,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(self.drop(out))


def _char_lstm(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """2-layer LSTM over characters; ``input_shape`` is ``(T,)`` and only documents T."""
    return CharLSTM(num_classes)


def _mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A tiny MLP (one hidden layer of 64 with BatchNorm) for fast tests."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 64),
        nn.BatchNorm1d(64),
        nn.ReLU(inplace=True),
        nn.Linear(64, num_classes),
    )


MODELS: dict[str, Builder] = {
    "mnistfc": _mnistfc,
    "lenet": _lenet,
    "allcnn-bn": _allcnn_bn,
    "char-lstm": _char_lstm,
    "mlp": _mlp,
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a freshly initialised model from the registry.

    ``input_shape`` excludes the batch dimension: ``(C, H, W)`` for images, ``(T,)`` for
    text.  ``num_classes`` is the vocabulary size for ``char-lstm``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed names: {', '.join(MODELS)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return MODELS[name](tuple(int(d) for d in input_shape), int(num_classes))


def _flatten(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """View sequence outputs ``(B, T, V)`` / targets ``(B, T)`` as ``(B*T, V)`` / ``(B*T,)``."""
    if output.dim() == 3:
        return output.reshape(-1, output.shape[-1]), target.reshape(-1)
    return output, target


def task_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all predicted items (samples, or characters for text)."""
    out, tgt = _flatten(output, target)
    return F.cross_entropy(out, tgt)


def error_count(output: torch.Tensor, target: torch.Tensor) -> int:
    """Number of items whose argmax prediction differs from the target."""
    out, tgt = _flatten(output, target)
    return int((out.argmax(dim=-1) != tgt).sum().item())


def target_count(target: torch.Tensor) -> int:
    """Number of predicted items in a target batch: B for classification, B*T for text."""
    return int(target.numel())
