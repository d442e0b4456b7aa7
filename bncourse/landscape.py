"""Why does batch norm help? Tools to reproduce Santurkar et al. (2018) on a small network.

Santurkar, Tsipras, Ilyas and Madry, "How Does Batch Normalization Help Optimization?" (NeurIPS 2018):

1. **Noisy BN.** Put a layer right after every BN that shifts and scales its output by random amounts
   that change at every step (:class:`NoisyAffine`). The distribution of the next layer's input now
   jumps around far more than without BN ("internal covariate shift" is made *worse*), yet the
   network trains about as well as with plain BN. So reducing covariate shift cannot be why BN helps.
2. **Smoothness along the gradient.** At a point ``w`` of training with gradient ``g = grad L(w)``
   on a batch, look at the step ``w - eta * g`` for a range of step sizes ``eta``
   (:func:`measure_along_gradient`):

   * loss range: ``max_eta L(w - eta g) - min_eta L(w - eta g)`` (how much the loss can change in
     one step: small means the step size is forgiving);
   * gradient predictiveness: ``max_eta ||grad L(w - eta g) - g||`` (small means the gradient here
     still describes the gradient a step away);
   * effective beta-smoothness: ``max_eta ||grad L(w - eta g) - g|| / ||eta g||`` (a local
     Lipschitz constant of the gradient along the step; for a quadratic it is at most the largest
     Hessian eigenvalue);
   * relative gradient change: ``max_eta ||grad L(w - eta g) - g|| / ||g||`` (not in the paper; the
     gradient predictiveness divided by the gradient's own size, so that two networks whose
     gradients differ in scale can be compared).

   Santurkar et al. report all three of their measures smaller with BN on VGG networks trained on
   CIFAR-10. These functions only measure; whether a given small network reproduces that depends on
   the setup (a no-BN network that trains, points matched in training, the learning rate).
   Chapter 6 shows what this small MLP gives.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["NoisyAffine", "Smoothness", "measure_along_gradient", "train_with_smoothness"]


class NoisyAffine(nn.Module):
    """Random per-channel scale and shift, redrawn at every training forward pass (identity in eval).

    For each forward pass in training mode and each channel ``c`` this draws
    ``shift_c ~ U(-max_shift, max_shift)`` and ``scale_c ~ U(1, max_scale)``, then for every example
    ``n`` a per-example scale and shift around them::

        s[n, c] = scale_c * (1 + noise_std * z1),   t[n, c] = shift_c + noise_std * z2,   z ~ N(0, 1)
        out     = s * x + t

    so the mean and variance of each channel that the next layer sees change at every step, and
    differ between examples. Santurkar et al. use noise of this kind: non-zero mean, non-unit
    variance, a new distribution at every time step. Works on (N, C) and (N, C, H, W).

    Args:
        num_features: C.
        max_shift, max_scale, noise_std: the sizes of the noise (see above).
        generator: a ``torch.Generator`` for reproducible noise (default: the global one).
    """

    def __init__(self, num_features: int, max_shift: float = 1.0, max_scale: float = 2.0,
                 noise_std: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        self.num_features = num_features
        self.max_shift, self.max_scale, self.noise_std = max_shift, max_scale, noise_std
        self.generator = generator
        self.last_scale: Tensor | None = None   # (N, C) from the last training forward, for inspection
        self.last_shift: Tensor | None = None

    def _rand(self, *shape) -> Tensor:
        return torch.rand(*shape, generator=self.generator)

    def _randn(self, *shape) -> Tensor:
        return torch.randn(*shape, generator=self.generator)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        n, c = x.shape[:2]
        shift_c = (2 * self._rand(c) - 1) * self.max_shift                # (C,)
        scale_c = 1 + self._rand(c) * (self.max_scale - 1)                 # (C,)
        s = scale_c * (1 + self.noise_std * self._randn(n, c))             # (N, C)
        t = shift_c + self.noise_std * self._randn(n, c)                   # (N, C)
        self.last_scale, self.last_shift = s.detach(), t.detach()
        view = (n, c) + (1,) * (x.dim() - 2)
        return x * s.to(x).reshape(view) + t.to(x).reshape(view)


@dataclass
class Smoothness:
    """Measurements along the gradient direction at one point of training."""
    loss_range: float
    grad_predictiveness: float     # max_eta ||grad(w - eta g) - g||
    beta_smoothness: float         # max_eta ||grad(w - eta g) - g|| / ||eta g||
    grad_norm: float               # ||g||
    grad_change_relative: float    # max_eta ||grad(w - eta g) - g|| / ||g||
    losses: list[float] = field(default_factory=list)         # L(w - eta g), one per eta
    grad_changes: list[float] = field(default_factory=list)   # ||grad(w - eta g) - g||, one per eta


def _loss_and_grad(model: nn.Module, params: list[nn.Parameter], loss_fn, x, y) -> tuple[float, Tensor]:
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return loss.item(), torch.cat([g.reshape(-1) for g in grads])


def measure_along_gradient(model: nn.Module, x: Tensor, y: Tensor, step_sizes: Sequence[float],
                           loss_fn: Callable = nn.functional.cross_entropy) -> Smoothness:
    """Loss range, gradient predictiveness and effective beta-smoothness at the model's current weights.

    The model is left exactly as it was: weights, gradients and buffers (BN running statistics,
    which the extra forward passes would otherwise update) are restored. The model's mode is used
    as is (training mode: BN uses the batch statistics of ``x``, as the optimizer sees it).

    Args:
        model: the network; its parameters with ``requires_grad`` are the point ``w``.
        x, y: the batch the loss is measured on.
        step_sizes: the etas (e.g. the learning rate times a few factors).
        loss_fn: ``loss_fn(model(x), y)`` -> scalar.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    w0 = [p.detach().clone() for p in params]
    loss0, g0 = _loss_and_grad(model, params, loss_fn, x, y)        # g0: (P,) flat gradient
    g_norm = g0.norm().item()
    losses, diffs, betas = [], [], []
    try:
        for eta in step_sizes:
            with torch.no_grad():
                offset = 0
                for p, w in zip(params, w0):
                    k = p.numel()
                    p.copy_(w - eta * g0[offset:offset + k].reshape(p.shape))
                    offset += k
            loss_eta, g_eta = _loss_and_grad(model, params, loss_fn, x, y)
            diff = (g_eta - g0).norm().item()
            losses.append(loss_eta)
            diffs.append(diff)
            betas.append(diff / (eta * g_norm) if eta * g_norm > 0 else float("nan"))
    finally:
        with torch.no_grad():
            for p, w in zip(params, w0):
                p.copy_(w)
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    return Smoothness(loss_range=max(losses) - min(losses), grad_predictiveness=max(diffs),
                      beta_smoothness=max(betas), grad_norm=g_norm,
                      grad_change_relative=max(diffs) / g_norm if g_norm > 0 else float("nan"),
                      losses=losses, grad_changes=diffs)


def train_with_smoothness(model: nn.Module, loader, *, lr: float, steps: int, every: int,
                          step_factors: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                          loss_fn: Callable = nn.functional.cross_entropy, progress: bool = True,
                          desc: str = "training") -> tuple[list[float], list[int], list[Smoothness]]:
    """Plain SGD for ``steps`` steps; every ``every`` steps, before the update, measure smoothness on
    the current batch with step sizes ``lr * step_factors``.

    Returns ``(step_losses, measured_steps, measurements)``.
    """
    from tqdm.auto import tqdm

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    etas = [lr * f for f in step_factors]
    step_losses: list[float] = []
    at: list[int] = []
    found: list[Smoothness] = []
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    step = 0
    model.train()
    while step < steps:
        for x, y in loader:
            if step % every == 0:
                at.append(step)
                found.append(measure_along_gradient(model, x, y, etas, loss_fn))
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step_losses.append(loss.item())
            step += 1
            bar.update(1)
            if step >= steps:
                break
    bar.close()
    return step_losses, at, found


MEASURES = ("loss_range", "grad_predictiveness", "beta_smoothness", "grad_change_relative", "grad_norm")


def summarize(measurements: Sequence[Smoothness]) -> dict[str, float]:
    """Median of each measurement (:data:`MEASURES`) over the given points.

    A median over a whole run mixes very different phases of training (a plateau at the start, the
    end of training); pass the points of a matched window, e.g. ``found[k:]``, or compare per step.
    """
    return {key: float(np.median([getattr(m, key) for m in measurements])) for key in MEASURES}


__all__ += ["summarize", "MEASURES"]
