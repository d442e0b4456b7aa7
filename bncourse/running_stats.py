"""Running statistics: moving averages, momentum conventions, bias correction, Bessel's correction.

Two ways to write the same exponential moving average (EMA) are in use, and they are easy to confuse:

* **keep-old** (the study notes' ``alpha``; the ``momentum`` of d2l's layer, which is the notes' code, of CS231n
  and of Keras)::

      avg <- alpha * avg + (1 - alpha) * new          alpha = 0.9 (d2l, CS231n) or 0.99 (Keras)

* **take-new** (PyTorch's ``momentum``)::

      avg <- (1 - momentum) * avg + momentum * new    momentum = 0.1 (PyTorch)

They are the same update when ``alpha = 1 - momentum``; PyTorch's ``momentum=None`` is the cumulative
(equal-weight) average instead. The batch-norm paper itself prescribes no moving average and no alpha: its
Algorithm 2 computes the inference statistics after training, ``E[x] = mean of the batch means`` and
``Var[x] = m / (m - 1) * mean of the batch variances`` over many training mini-batches of size m
(:mod:`bncourse.population_stats` computes the exact population version). Every function here takes a 1-D sequence of values (or a (T, ...) array,
averaging along axis 0) and returns the whole trajectory, so chapters can plot it.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "simple_moving_average",
    "ema_keep_old",
    "ema_take_new",
    "cumulative_average",
    "ema_bias_corrected",
    "alpha_to_momentum",
    "momentum_to_alpha",
    "bessel_correction",
    "update_running_stats",
]


def simple_moving_average(values, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each step (fewer at the start).

    ``simple_moving_average([100, 110, 130, 120, 140], 2)`` is ``[100, 105, 120, 125, 130]``.

    Args:
        values: (T, ...) sequence.
        window: number of most recent values averaged, >= 1.

    Returns:
        (T, ...) float array.
    """
    v = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    out = np.empty_like(v)
    for t in range(len(v)):
        out[t] = v[max(0, t - window + 1): t + 1].mean(axis=0)
    return out


def ema_keep_old(values, alpha: float = 0.9, init=None) -> np.ndarray:
    """EMA written the keep-old way (d2l, CS231n, Keras): ``avg <- alpha * avg + (1 - alpha) * new``.

    Args:
        values: (T, ...) sequence.
        alpha: weight kept on the old average, in [0, 1]; 1 keeps the start value forever.
        init: starting average; ``None`` starts from the first value (no start-up bias).
            Batch norm starts from 0 (mean) and 1 (variance), which biases the first steps.

    Returns:
        (T, ...) trajectory of the average after each update.
    """
    v = np.asarray(values, dtype=float)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (weight on the old value) must be in [0, 1], got {alpha}")
    avg = v[0] if init is None else np.asarray(init, dtype=float)
    out = np.empty_like(v)
    for t in range(len(v)):
        avg = alpha * avg + (1.0 - alpha) * v[t]
        out[t] = avg
    return out


def ema_take_new(values, momentum: float = 0.1, init=None) -> np.ndarray:
    """EMA written PyTorch's way: ``avg <- (1 - momentum) * avg + momentum * new``.

    Identical to ``ema_keep_old(values, alpha=1 - momentum, init)``.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum (weight on the new value) must be in [0, 1], got {momentum}")
    v = np.asarray(values, dtype=float)
    avg = v[0] if init is None else np.asarray(init, dtype=float)
    out = np.empty_like(v)
    for t in range(len(v)):
        avg = (1.0 - momentum) * avg + momentum * v[t]
        out[t] = avg
    return out


def cumulative_average(values) -> np.ndarray:
    """Equal-weight average of everything seen so far (PyTorch's ``momentum=None``).

    Written as an update with a shrinking weight ``1/t``: ``avg <- avg + (new - avg) / t``.
    """
    v = np.asarray(values, dtype=float)
    out = np.empty_like(v)
    avg = np.zeros_like(v[0])
    for t in range(len(v)):
        avg = avg + (v[t] - avg) / (t + 1)
        out[t] = avg
    return out


def ema_bias_corrected(values, alpha: float = 0.9) -> np.ndarray:
    """EMA started at 0 and divided by ``1 - alpha**t`` (Adam's correction).

    Without the division, an EMA that starts at 0 is pulled toward 0: after t steps the start value
    still holds weight ``alpha**t``, which falls below 1% only after ``ln(0.01) / ln(alpha)``, about
    ``4.6 / (1 - alpha)`` steps (44 for alpha = 0.9). After ``1 / (1 - alpha)`` steps it still holds
    about ``e**-1``, 37%. With the division every step is a proper weighted average of the data.

    Args:
        values: (T, ...) sequence.
        alpha: weight kept on the old average, in [0, 1).

    Returns:
        (T, ...) trajectory of the corrected average.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1) for the bias correction (1 - alpha**t > 0), got {alpha}")
    v = np.asarray(values, dtype=float)
    raw = ema_keep_old(v, alpha=alpha, init=np.zeros_like(v[0]))
    steps = np.arange(1, len(v) + 1).reshape((-1,) + (1,) * (v.ndim - 1))
    return raw / (1.0 - alpha ** steps)


def alpha_to_momentum(alpha: float) -> float:
    """Keep-old ``alpha`` (d2l and CS231n 0.9, Keras 0.99) to PyTorch's take-new ``momentum``."""
    return 1.0 - alpha


def momentum_to_alpha(momentum: float) -> float:
    """PyTorch's take-new ``momentum`` (0.1) to the keep-old ``alpha`` (0.9)."""
    return 1.0 - momentum


def bessel_correction(var_biased, m: int):
    """Unbiased variance from the biased one of ``m`` values: ``var * m / (m - 1)``."""
    if m < 2:
        raise ValueError(f"Bessel's correction needs m >= 2 values, got m={m}")
    return np.asarray(var_biased) * (m / (m - 1))


def update_running_stats(running_mean, running_var, batch_mean, batch_var, n: int, momentum: float = 0.1):
    """One running-statistics update exactly as ``torch.nn.BatchNorm`` does it in training mode.

    Args:
        running_mean, running_var: (D,) current estimates (start at 0 and 1).
        batch_mean: (D,) mean of this batch.
        batch_var: (D,) *biased* variance of this batch (the one used to normalize).
        n: number of values per feature in the batch (N, or N*H*W for conv layers).
        momentum: PyTorch convention, weight on the new value.

    Returns:
        (new_mean, new_var): ``(1 - momentum) * old + momentum * batch``, where the variance
        stored is the unbiased ``batch_var * n / (n - 1)``.
    """
    unbiased = bessel_correction(batch_var, n)
    new_mean = (1.0 - momentum) * np.asarray(running_mean) + momentum * np.asarray(batch_mean)
    new_var = (1.0 - momentum) * np.asarray(running_var) + momentum * unbiased
    return new_mean, new_var
