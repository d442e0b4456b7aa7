"""From-scratch ``BatchNorm1d`` and ``BatchNorm2d`` modules, drop-in replacements for ``torch.nn``'s.

Same constructor, parameters (``weight``, ``bias``), buffers (``running_mean``, ``running_var``,
``num_batches_tracked``), state-dict keys, outputs, gradients and running statistics as
``torch.nn.BatchNorm1d/2d``. The math is in :func:`bncourse.functional.batch_norm`; the modules
only own the state and decide which statistics to use.

Four per-feature quantities::

    weight (gamma), bias (beta)       learned by backprop           (parameters)
    running_mean, running_var         learned by averaging batches  (buffers, start at 0 and 1)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .functional import batch_norm

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(nn.Module):
    _expected_dims: tuple[int, ...] = ()
    _layout: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None):
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int (the number of channels), got {num_features!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"momentum is PyTorch's weight on the NEW batch statistic and must be in [0, 1] "
                f"(default 0.1; a keep-old alpha of 0.9, as in d2l, CS231n or the study notes, is momentum=0.1); got {momentum}"
            )
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean back to 0, running variance back to 1, counter to 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running statistics reset; gamma back to 1 and beta back to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in self._expected_dims:
            raise ValueError(
                f"{type(self).__name__} expects input of shape {self._layout}; got {input.dim()}-D input "
                f"of shape {tuple(input.shape)}. "
                + ("Use BatchNorm2d for images (N, C, H, W)." if input.dim() == 4 else
                   "Use BatchNorm1d for (N, C) or (N, C, L)." if input.dim() in (2, 3) else
                   "Add a batch dimension with x.unsqueeze(0)." if input.dim() < 2 else "")
            )
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) got input with {input.shape[1]} channels "
                f"(dim 1 of shape {tuple(input.shape)}); num_features must equal the number of "
                f"features/channels coming out of the previous layer."
            )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:                      # cumulative average: weight 1/t
                factor = 1.0 / float(self.num_batches_tracked)
        # Batch statistics in training mode, and also in eval mode when nothing is tracked.
        use_batch_stats = self.training or self.running_mean is None
        update_buffers = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if update_buffers else None,
            self.running_var if update_buffers else None,
            self.weight, self.bias, use_batch_stats, factor, self.eps,
        )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over a 2-D (N, C) or 3-D (N, C, L) input, one (gamma, beta) pair per feature C.

    Statistics per feature over N (and L). Training mode normalizes with the batch's biased variance
    and updates ``running_var`` with the unbiased one; eval mode uses the running statistics.

    Shape:
        Input: (N, C) or (N, C, L). Output: same shape.
    """
    _expected_dims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Per-channel batch norm over a 4-D (N, C, H, W) input: statistics per channel over N, H and W.

    A convolution shares its weights across positions, so each channel gets one (gamma, beta) pair
    and its statistics are taken over all ``N * H * W`` values.

    Shape:
        Input: (N, C, H, W). Output: same shape.
    """
    _expected_dims = (4,)
    _layout = "(N, C, H, W)"
