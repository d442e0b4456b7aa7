"""The networks the chapters train: an MLP and LeNet-5, with or without batch norm.

``bn`` chooses the normalization layer: ``None`` (none), ``"scratch"`` (this course's
:mod:`bncourse.nn`) or ``"torch"`` (``torch.nn``). With batch norm, the layer before it drops its
bias (BN's beta does that job) and BN sits after the affine map, before the activation.

``init`` chooses the initial weights: ``"default"`` keeps PyTorch's (uniform, variance
1/(3 fan_in)); ``"xavier"`` applies :func:`xavier_init_`, what d2l's ``train_ch6`` does to every
network it trains.
"""
from __future__ import annotations

from torch import nn

from . import nn as scratch_nn

__all__ = ["bn_layers", "mlp", "lenet", "xavier_init_"]

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def xavier_init_(model: nn.Module) -> nn.Module:
    """Xavier-uniform weights for every ``Conv2d`` and ``Linear`` of ``model``, in place; returns it.

    The same as d2l's ``train_ch6``, which calls ``nn.init.xavier_uniform_(m.weight)`` on each such
    layer before training: weights uniform in [-a, a] with a = sqrt(6 / (fan_in + fan_out)), so
    variance 2 / (fan_in + fan_out). Biases and BN parameters keep their values.
    """
    for m in model.modules():
        if type(m) in (nn.Linear, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
    return model


def _apply_init(model: nn.Module, init: str) -> nn.Module:
    if init == "xavier":
        return xavier_init_(model)
    if init != "default":
        raise ValueError(f"init must be 'default' or 'xavier', got {init!r}")
    return model


def bn_layers(bn: str | None):
    """(BatchNorm1d, BatchNorm2d) classes for ``bn`` in {"scratch", "torch"}."""
    if bn == "scratch":
        return scratch_nn.BatchNorm1d, scratch_nn.BatchNorm2d
    if bn == "torch":
        return nn.BatchNorm1d, nn.BatchNorm2d
    raise ValueError(f"bn must be None, 'scratch' or 'torch', got {bn!r}")


def mlp(widths: list[int], *, activation: str = "sigmoid", bn: str | None = None,
        flatten: bool = True) -> nn.Sequential:
    """Fully connected network ``widths[0] -> ... -> widths[-1]``; the last layer gives logits.

    Hidden block: ``Linear -> [BatchNorm1d] -> activation``. Input (N, *) is flattened to (N, widths[0]).
    """
    act = _ACTIVATIONS[activation]
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        layers.append(nn.Linear(d_in, d_out, bias=last or bn is None))
        if not last:
            if bn is not None:
                layers.append(bn_layers(bn)[0](d_out))
            layers.append(act())
    return nn.Sequential(*layers)


def lenet(*, bn: str | None = None, activation: str = "sigmoid", num_classes: int = 10,
          init: str = "default") -> nn.Sequential:
    """LeNet-5 for (N, 1, 28, 28) images, sigmoid and average pooling as in the original.

    conv 5x5 (6) -> [BN] -> act -> avgpool 2 -> conv 5x5 (16) -> [BN] -> act -> avgpool 2
    -> flatten (256) -> linear 120 -> [BN] -> act -> linear 84 -> [BN] -> act -> linear 10.
    Four activations (after conv1, conv2, fc1, fc2). ``init="xavier"``: as d2l's ``train_ch6``.
    """
    act = _ACTIVATIONS[activation]
    use_bias = bn is None
    if bn is None:
        BN1, BN2 = (lambda n: nn.Identity()), (lambda n: nn.Identity())
    else:
        BN1, BN2 = bn_layers(bn)
    model = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, bias=use_bias), BN2(6), act(),        # (N, 6, 24, 24)
        nn.AvgPool2d(kernel_size=2, stride=2),                               # (N, 6, 12, 12)
        nn.Conv2d(6, 16, kernel_size=5, bias=use_bias), BN2(16), act(),      # (N, 16, 8, 8)
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),                 # (N, 256)
        nn.Linear(16 * 4 * 4, 120, bias=use_bias), BN1(120), act(),
        nn.Linear(120, 84, bias=use_bias), BN1(84), act(),
        nn.Linear(84, num_classes),
    )
    return _apply_init(model, init)
