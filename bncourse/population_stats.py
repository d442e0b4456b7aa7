"""Exact population statistics for every batch-norm layer of a trained model.

During training, ``running_mean``/``running_var`` are exponential moving averages of batch
statistics taken while the weights were still changing, so they lag the final network. After
training one can instead measure, for each BN layer, the mean and variance of its input over the
whole training set with the weights frozen -- the paper's Algorithm 2, steps 8-10 (``E[x]`` and
``Var[x]`` over the training data).

Two methods:

``"exact"`` (default)
    One pass over the loader *per BN layer*, in forward order, with the model in eval mode. When
    layer ``k`` is measured, layers ``1..k-1`` already use their new population statistics, so
    layer ``k`` sees exactly the inputs it will see at inference. Mean and variance are
    accumulated in float64 (Chan's pairwise merge of per-batch moments), so the result equals the
    NumPy mean/variance of all inputs stacked together. The variance stored is unbiased
    (``n/(n-1)``), the same convention as PyTorch's ``running_var``.

``"cumulative"``
    One pass in total: running statistics reset to (0, 1), ``momentum=None`` (PyTorch's
    cumulative average), BN layers in training mode (everything else in eval mode). This is what
    ``torch.optim.swa_utils.update_bn`` does. It averages the per-batch statistics, which were
    computed while earlier layers normalized with *batch* statistics, so it is close to but not
    exactly the eval-mode population statistics.

Works with ``torch.nn`` BN layers and the course's :mod:`bncourse.nn` ones.
"""
from __future__ import annotations

import copy
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .folding import is_batchnorm

__all__ = ["bn_modules", "chan_merge", "merge_block", "population_mean_var", "population_statistics"]


def bn_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every BN layer of ``model`` in registration order."""
    return [(name, m) for name, m in model.named_modules() if is_batchnorm(m)]


def chan_merge(m_a, mean_a, m2_a, m_b, mean_b, m2_b):
    """Chan et al.'s merge of two groups' (count, mean, M2 = sum of squared deviations).

    ``m = m_a + m_b``, ``mean = mean_a + delta * m_b / m``, ``M2 = M2_a + M2_b + delta**2 * m_a * m_b / m`` with
    ``delta = mean_b - mean_a``. Works on floats, NumPy arrays and tensors (per feature, shapes ``(C,)``). Unlike
    ``E[x**2] - E[x]**2`` it never subtracts two large, nearly equal numbers, so it stays exact far from 0.
    """
    m = m_a + m_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (m_b / m)
    m2 = m2_a + m2_b + delta * delta * (m_a * m_b / m)
    return m, mean, m2


def merge_block(count, mean, m2, block):
    """Merge the running (count, mean, M2) with a ``(n, C)`` block of rows (NumPy or torch, float64).

    ``count == 0`` starts from the block's own moments. Returns the new (count, mean (C,), M2 (C,)).
    """
    n_b = block.shape[0]
    mean_b = block.mean(0)
    m2_b = ((block - mean_b) ** 2).sum(0)
    if count == 0:
        return n_b, mean_b, m2_b
    return chan_merge(count, mean, m2, n_b, mean_b, m2_b)


def population_mean_var(batches: Iterable, ddof: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and variance per feature over all rows of a stream of (n_i, D) batches, in one pass.

    Equivalent to ``np.concatenate(batches).mean(0)`` and ``.var(0, ddof=ddof)`` without holding
    the data in memory. Returns ``(mean (D,), var (D,), total_count)``.
    """
    count, mean, m2 = 0, None, None
    for b in batches:
        b = np.asarray(b, dtype=np.float64)
        if b.ndim != 2:
            raise ValueError(f"each batch must be (n, D); got shape {b.shape}")
        count, mean, m2 = merge_block(count, mean, m2, b)
    if count <= ddof:
        raise ValueError(f"need more than {ddof} rows in total for a variance with ddof={ddof}; got {count}")
    return mean, m2 / (count - ddof), count


def _as_rows(x: torch.Tensor) -> np.ndarray:
    """(N, C, ...) tensor -> (N * ..., C) float64 array: one row per value of each channel."""
    c = x.shape[1]
    return x.detach().transpose(0, 1).reshape(c, -1).T.double().cpu().numpy()


def _inputs(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _forward_order(model: nn.Module, loader, device) -> list[nn.Module]:
    """BN layers in the order the forward pass calls them (found with one batch)."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: order.append(mod) if mod not in order else None)
             for _, m in bn_modules(model) if m.running_mean is not None]
    try:
        with torch.no_grad():
            model(_inputs(next(iter(loader))).to(device))
    finally:
        for h in hooks:
            h.remove()
    return order


def population_statistics(model: nn.Module, loader, *, method: str = "exact", inplace: bool = False,
                          device=None, max_batches: int | None = None) -> nn.Module:
    """Replace every BN layer's running statistics by statistics measured over ``loader``.

    Args:
        model: a network containing BN layers (weights are not changed).
        loader: iterable of ``x`` or ``(x, y)`` batches (e.g. the training loader).
        method: ``"exact"`` (one eval-mode pass per BN layer, float64, exact) or ``"cumulative"``
            (one train-mode pass with ``momentum=None``), see the module docstring.
        inplace: update ``model`` itself; otherwise a deep copy is updated and returned.
        device: where to run; defaults to the model's device.
        max_batches: use only the first this many batches of ``loader``.

    Returns:
        The updated model (``model`` itself when ``inplace``), with the train/eval mode of every
        module as it was before the call.
    """
    if method not in ("exact", "cumulative"):
        raise ValueError(f"method must be 'exact' or 'cumulative', got {method!r}")
    target = model if inplace else copy.deepcopy(model)
    if not bn_modules(target):
        return target
    device = device or next(target.parameters()).device
    modes = {m: m.training for m in target.modules()}

    def batches():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            yield _inputs(batch).to(device)

    try:
        if method == "cumulative":
            target.eval()
            saved = []
            for _, bn in bn_modules(target):
                if bn.running_mean is None:
                    continue
                saved.append((bn, bn.momentum))
                bn.reset_running_stats()
                bn.momentum = None
                bn.train()
            with torch.no_grad():
                for x in batches():
                    target(x)
            for bn, momentum in saved:
                bn.momentum = momentum
        else:
            target.eval()
            for bn in _forward_order(target, loader, device):
                state = {"count": 0, "mean": None, "m2": None}

                def hook(mod, inp, state=state):
                    state["count"], state["mean"], state["m2"] = merge_block(
                        state["count"], state["mean"], state["m2"], _as_rows(inp[0]))

                handle = bn.register_forward_pre_hook(hook)
                try:
                    with torch.no_grad():
                        for x in batches():
                            target(x)
                finally:
                    handle.remove()
                n = state["count"]
                if n < 2:
                    raise ValueError("the loader gave fewer than 2 values per feature; cannot estimate a variance")
                with torch.no_grad():
                    bn.running_mean.copy_(torch.as_tensor(state["mean"], dtype=bn.running_mean.dtype))
                    bn.running_var.copy_(torch.as_tensor(state["m2"] / (n - 1), dtype=bn.running_var.dtype))
    finally:
        for m, was_training in modes.items():
            m.train(was_training)
    return target
