"""Fold inference-mode batch norm into one affine map, and into the layer before it.

In inference mode batch norm uses fixed statistics, so per feature (or channel) it is a fixed
affine map of its input -- the paper's Algorithm 2, step 11::

    y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
      = a * x + b,   a = gamma / sqrt(running_var + eps),   b = beta - a * running_mean

A fixed affine map that follows a ``Linear`` or ``Conv2d`` layer can be multiplied into that
layer's weights: ``W' = a * W`` (row ``k`` of W, or output channel ``k`` of the kernel, scaled by
``a[k]``) and ``bias' = a * bias + b``. The folded network computes the same function as the
original *in eval mode* with one layer fewer. In training mode the two differ: BN then uses the
batch's statistics, which no fixed map can reproduce.

Works with ``torch.nn.BatchNorm1d/2d`` and with :mod:`bncourse.nn`'s modules (same attributes).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from . import nn as scratch_nn

__all__ = [
    "affine_from_stats",
    "bn_affine",
    "is_batchnorm",
    "fold_bn_into_linear",
    "fold_bn_into_conv",
    "fold_sequential",
]

_BN_TYPES = (nn.modules.batchnorm._BatchNorm, scratch_nn._BatchNorm)


def is_batchnorm(module: nn.Module) -> bool:
    """True for ``torch.nn.BatchNorm1d/2d/3d`` and the course's ``BatchNorm1d/2d``."""
    return isinstance(module, _BN_TYPES)


def affine_from_stats(gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """``(a, b)`` with ``gamma * (x - mean) / sqrt(var + eps) + beta == a * x + b``.

    Args:
        gamma, beta, running_mean, running_var: (D,) NumPy arrays or tensors (all the same kind).
        eps: the BN layer's eps (1e-5 in PyTorch, 1e-3 in Keras).

    Returns:
        a, b: (D,), the same kind as the inputs.
    """
    if isinstance(running_var, torch.Tensor):
        a = gamma / torch.sqrt(running_var + eps)
    else:
        a = np.asarray(gamma) / np.sqrt(np.asarray(running_var) + eps)
    b = beta - a * running_mean
    return a, b


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference-mode map of a BN layer as ``(a, b)``, each (C,), detached from autograd.

    ``bn.eval()(x) == a.reshape(1, C, 1, ...) * x + b.reshape(1, C, 1, ...)``.
    An ``affine=False`` layer has gamma = 1 and beta = 0.
    """
    if not is_batchnorm(bn):
        raise TypeError(f"bn_affine expects a BatchNorm layer, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "this BN layer has track_running_stats=False: it always normalizes with batch statistics, "
            "so it is not a fixed affine map and cannot be folded"
        )
    with torch.no_grad():
        mean, var = bn.running_mean, bn.running_var
        gamma = bn.weight if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
        a, b = affine_from_stats(gamma, beta, mean, var, bn.eps)
    return a.detach().clone(), b.detach().clone()


def _fold(layer: nn.Module, bn: nn.Module, out_features: int) -> nn.Module:
    if bn.num_features != out_features:
        raise ValueError(
            f"{type(layer).__name__} has {out_features} outputs but the BN layer normalizes "
            f"{bn.num_features} features; they must match to fold"
        )
    a, b = bn_affine(bn)                                      # (C,), (C,)
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        w = layer.weight                                      # (C, ...) output dim first
        scale = a.to(w.dtype).reshape((-1,) + (1,) * (w.dim() - 1))
        old_bias = layer.bias if layer.bias is not None else torch.zeros_like(a)
        new_bias = a * old_bias + b                           # (C,)
        folded.weight = nn.Parameter(w * scale)
        folded.bias = nn.Parameter(new_bias.to(w.dtype))
    return folded


def fold_bn_into_linear(linear: nn.Linear, bn: nn.Module) -> nn.Linear:
    """A new ``nn.Linear`` equal to ``bn.eval()(linear(x))`` (the inputs are not modified).

    ``W'[k, :] = a[k] * W[k, :]`` and ``bias'[k] = a[k] * bias[k] + b[k]`` (bias 0 if absent).
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fold_bn_into_linear expects nn.Linear, got {type(linear).__name__}")
    return _fold(linear, bn, linear.out_features)


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A new ``nn.Conv2d`` equal to ``bn.eval()(conv(x))`` (the inputs are not modified).

    Output channel ``k`` of the kernel, shape (C_in / groups, kH, kW), is scaled by ``a[k]``;
    stride, padding, dilation and groups are kept. Also works for ``Conv1d``/``Conv3d``.
    """
    if not isinstance(conv, nn.modules.conv._ConvNd) or getattr(conv, "transposed", False):
        raise TypeError(f"fold_bn_into_conv expects a (non-transposed) convolution, got {type(conv).__name__}")
    return _fold(conv, bn, conv.out_channels)


def fold_sequential(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` with every ``Linear``/``Conv`` followed directly by a BN layer merged into one.

    Other layers are copied unchanged; a BN layer with nothing foldable before it stays. The result
    matches ``model.eval()`` (not training mode) and is returned in eval mode.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError("fold_sequential expects an nn.Sequential")
    layers = list(model)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if nxt is not None and is_batchnorm(nxt) and isinstance(layer, nn.Linear):
            out.append(fold_bn_into_linear(layer, nxt))
            i += 2
        elif (nxt is not None and is_batchnorm(nxt) and isinstance(layer, nn.modules.conv._ConvNd)
              and not layer.transposed):
            out.append(fold_bn_into_conv(layer, nxt))
            i += 2
        elif isinstance(layer, nn.Sequential):
            out.append(fold_sequential(layer))
            i += 1
        else:
            out.append(copy.deepcopy(layer))
            i += 1
    return nn.Sequential(*out).eval()
