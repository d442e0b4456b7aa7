"""Batch norm as a stateless PyTorch function, written from scratch (autograd does the backward).

Mirrors ``torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias,
training, momentum, eps)``. The mode is always the explicit ``training`` argument; nothing is
guessed from ``torch.is_grad_enabled()``.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_norm", "reduce_dims"]


def reduce_dims(input: Tensor) -> tuple[int, ...]:
    """Dimensions the statistics are taken over: every dimension except the channel dim 1.

    (N, C) -> (0,); (N, C, L) -> (0, 2); (N, C, H, W) -> (0, 2, 3).
    """
    if input.dim() < 2:
        raise ValueError(
            f"batch norm needs input of shape (N, C, ...) with a batch and a feature dimension; "
            f"got shape {tuple(input.shape)}. For a single sample use x.unsqueeze(0) in eval mode."
        )
    return (0,) + tuple(range(2, input.dim()))


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize ``input`` per channel, then scale by ``weight`` and shift by ``bias``.

    .. math::
        y = \\frac{x - \\mathrm{E}[x]}{\\sqrt{\\mathrm{Var}[x] + \\epsilon}} * \\gamma + \\beta

    Args:
        input: (N, C), (N, C, L) or (N, C, H, W).
        running_mean, running_var: (C,) buffers or ``None``. In training mode they are updated
            in place: ``running = (1 - momentum) * running + momentum * batch_stat``, where the
            variance stored is the *unbiased* one (times m/(m-1)) while the one used to normalize
            is the *biased* one. In inference mode they are what the input is normalized with.
        weight, bias: (C,) or ``None`` (then gamma = 1, beta = 0).
        training: use this batch's statistics (True) or the running ones (False).
        momentum: weight of the new batch statistic (PyTorch's convention).
        eps: added to the variance inside the square root.

    Shape:
        output has the shape of ``input``.
    """
    dims = reduce_dims(input)
    C = input.shape[1]
    shape = (1, C) + (1,) * (input.dim() - 2)
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != C:
            raise ValueError(
                f"{name} has {t.numel()} elements but the input has {C} channels (dim 1 of shape "
                f"{tuple(input.shape)}); num_features must equal the number of channels."
            )

    if training:
        m = input.numel() // C                                        # values per channel
        if m <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input of shape "
                f"{tuple(input.shape)} ({m} value per channel). A batch of one has no variance, so "
                f"batch norm cannot normalize it: use a batch of 2 or more, or call model.eval() "
                f"to predict one sample with the running statistics."
            )
        # (C,) each; the variance is the biased one (divide by m), as in the paper.
        # var_mean is one fused pass; it equals mean((x - mean)**2) over `dims`.
        var, mean = torch.var_mean(input, dim=dims, correction=0)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                unbiased_var = var * (m / (m - 1))                    # Bessel's correction
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * unbiased_var)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("inference mode (training=False) needs running_mean and running_var")
        mean, var = running_mean, running_var

    inv_std = torch.rsqrt(var + eps)                                  # (C,) 1 / sqrt(var + eps)
    if weight is not None:                                            # fold gamma into the scale:
        scale = weight * inv_std                                      # y = (x - mean) * gamma/std + beta
    else:
        scale = inv_std
    out = (input - mean.reshape(shape)) * scale.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out
