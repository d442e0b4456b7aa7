"""Layer norm, instance norm and group norm from scratch, and a picture of what each one averages over.

All four normalizations of an activation ``x: (N, C, H, W)`` do the same three things::

    mu    = mean(x)          over some axes            (one mean per group of values)
    var   = mean((x - mu)**2) over the same axes        (biased, as in batch norm)
    out   = (x - mu) / sqrt(var + eps) * gamma + beta

They differ only in *which* axes the statistics are taken over (Wu and He, "Group Normalization", 2018):

=============  =====================  ================================  ===================
method         statistics over        one (mu, var) per                 gamma, beta shape
=============  =====================  ================================  ===================
batch norm     N, H, W                channel c                         (C,)
layer norm     C, H, W                example n                         (C, H, W) in torch
instance norm  H, W                   (example n, channel c)            (C,)
group norm     C/G channels, H, W     (example n, group g)              (C,)
=============  =====================  ================================  ===================

Only batch norm mixes different examples, so only batch norm behaves differently in training and in
inference, depends on the batch size, and needs running statistics. The functions here work on torch
tensors (autograd flows through them) and match ``torch.nn.LayerNorm``, ``InstanceNorm2d`` and
``GroupNorm`` (see ``tests/test_normalizations.py``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "KINDS",
    "standardize",
    "batch_norm_train",
    "layer_norm",
    "instance_norm",
    "group_norm",
    "LayerNorm",
    "InstanceNorm2d",
    "GroupNorm",
    "shared_statistics_mask",
    "plot_normalization_axes",
]

#: the four normalizations, in the order of the figure
KINDS = ("batch", "layer", "instance", "group")


def standardize(x: Tensor, dims: tuple[int, ...], eps: float = 1e-5) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` with mean and biased variance over ``dims`` (kept for broadcasting)."""
    mu = x.mean(dim=dims, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=dims, keepdim=True)  # biased: divide by the number of values
    return (x - mu) / torch.sqrt(var + eps)


def _per_channel(p: Tensor | None, x: Tensor) -> Tensor | None:
    # gamma or beta of shape (C,) -> (1, C, 1, ..., 1), broadcasting along axis 1 of x
    if p is None:
        return None
    if p.shape != (x.shape[1],):
        raise ValueError(f"expected a per-channel parameter of shape ({x.shape[1]},); got {tuple(p.shape)}")
    return p.reshape(1, -1, *([1] * (x.dim() - 2)))


def _affine(x_hat: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    out = x_hat
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def batch_norm_train(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                     eps: float = 1e-5) -> Tensor:
    """Training-mode batch norm of (N, C) or (N, C, H, W): statistics over every axis except C."""
    dims = (0,) + tuple(range(2, x.dim()))                     # N, H, W
    return _affine(standardize(x, dims, eps), _per_channel(weight, x), _per_channel(bias, x))


def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5,
               normalized_ndim: int | None = None) -> Tensor:
    """Layer norm: statistics over the last ``k`` axes of each example, like ``torch.nn.LayerNorm``.

    ``k`` is ``weight.dim()`` when a weight is given, else ``normalized_ndim``, else all axes but the
    first (for (N, C, H, W): C, H, W). ``weight`` and ``bias`` have the shape of those ``k`` axes
    (elementwise, not per channel). For a sequence ``(N, L, D)`` use ``k = 1``: each token on its own.
    """
    k = weight.dim() if weight is not None else (normalized_ndim or x.dim() - 1)
    dims = tuple(range(x.dim() - k, x.dim()))                  # e.g. (1, 2, 3) = C, H, W
    return _affine(standardize(x, dims, eps), weight, bias)


def instance_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                  eps: float = 1e-5) -> Tensor:
    """Instance norm of (N, C, H, W): statistics over H, W for each example and channel."""
    if x.dim() != 4:
        raise ValueError(f"instance_norm expects (N, C, H, W); got shape {tuple(x.shape)}")
    return _affine(standardize(x, (2, 3), eps), _per_channel(weight, x), _per_channel(bias, x))


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Group norm of (N, C, H, W): channels split into ``num_groups`` groups of C/G consecutive channels;
    statistics over (channels of the group, H, W) for each example. G = 1 is layer norm with per-channel
    gamma; G = C is instance norm."""
    n, c = x.shape[:2]
    if c % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels C={c}")
    xg = x.reshape(n, num_groups, c // num_groups, *x.shape[2:])   # (N, G, C/G, H, W)
    dims = tuple(range(2, xg.dim()))                               # C/G, H, W
    x_hat = standardize(xg, dims, eps).reshape(x.shape)             # back to (N, C, H, W)
    return _affine(x_hat, _per_channel(weight, x), _per_channel(bias, x))


class LayerNorm(nn.Module):
    """From-scratch ``torch.nn.LayerNorm(normalized_shape)``: elementwise gamma (ones) and beta (zeros)."""

    def __init__(self, normalized_shape, eps: float = 1e-5):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class InstanceNorm2d(nn.Module):
    """From-scratch ``torch.nn.InstanceNorm2d(C, affine=True)`` (no running statistics, as torch's default)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        return instance_norm(x, self.weight, self.bias, self.eps)


class GroupNorm(nn.Module):
    """From-scratch ``torch.nn.GroupNorm(num_groups, num_channels)``."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}")
        self.num_groups, self.eps = num_groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


# ------------------------------------------------------------------------------------------------
# Which values share one mean and variance: a mask and a figure
# ------------------------------------------------------------------------------------------------
def shared_statistics_mask(kind: str, n: int, c: int, s: int, groups: int = 2,
                           at: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Boolean (N, C, S) mask of the values whose statistics are shared with example ``at[0]``,
    channel ``at[1]``, position 0 (S = H*W spatial positions flattened).

    ``kind`` is one of :data:`KINDS`, or ``"position"``: statistics per (channel, position) over the
    batch only, what a fully connected BN applied to a flattened image computes (a common mistake).
    """
    i, j = at
    mask = np.zeros((n, c, s), dtype=bool)
    if kind == "batch":
        mask[:, j, :] = True
    elif kind == "layer":
        mask[i, :, :] = True
    elif kind == "instance":
        mask[i, j, :] = True
    elif kind == "position":      # the mistake for images: a separate mean per (c, h, w), over N only
        mask[:, j, 0] = True
    elif kind == "group":
        if c % groups:
            raise ValueError(f"groups={groups} must divide C={c}")
        size = c // groups
        g = j // size
        mask[i, g * size:(g + 1) * size, :] = True
    else:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    return mask


_TITLES = {"position": "per (C, H, W) position\n(fully connected BN, wrong here)", "batch": "batch norm", "layer": "layer norm", "instance": "instance norm", "group": "group norm (G=2)"}


def plot_normalization_axes(kinds=KINDS, n: int = 4, c: int = 6, s: int = 4, groups: int = 2, fig=None):
    """One 3-D panel per normalization: a block of N x C x (H*W) values, the values that share one mean
    and variance (those of example 0, channel 0) in colour. Returns the figure."""
    import matplotlib.pyplot as plt

    kinds = tuple(kinds)
    fig = fig or plt.figure(figsize=(3.0 * len(kinds), 3.2))
    for k, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), k + 1, projection="3d")
        mask = shared_statistics_mask(kind, n, c, s, groups)     # (N, C, S)
        # voxel axes: x = N (batch), y = C (channels), z = H*W (spatial)
        colors = np.empty(mask.shape, dtype=object)
        colors[mask] = "#1f77b4"
        colors[~mask] = "#e8e8e8"
        ax.voxels(np.ones_like(mask), facecolors=colors, edgecolor="#777777", linewidth=0.3)
        ax.set_xlabel("N (examples)", labelpad=-8)
        ax.set_ylabel("C (channels)", labelpad=-8)
        ax.set_zlabel("H·W (positions)", labelpad=-8)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_box_aspect((n, c, s))
        ax.view_init(elev=20, azim=-60)
        ax.set_title(_TITLES.get(kind, kind), fontsize=10)
    fig.suptitle("Blue: the values that share one mean and variance", fontsize=11)
    return fig
