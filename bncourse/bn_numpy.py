"""Batch normalization in NumPy: forward (training and inference) and two backward passes.

Shapes (the same letters everywhere in the course):

* fully connected input ``x: (N, D)``, parameters ``gamma, beta: (D,)``,
  statistics per feature over the batch axis N;
* convolutional input ``x: (N, C, H, W)``, parameters ``gamma, beta: (C,)``,
  statistics per channel over N, H and W (``m = N * H * W`` values each).

Training mode, for every feature (or channel) separately::

    mu      = mean(x)                       over the m values
    var     = mean((x - mu) ** 2)           biased: divide by m, not m - 1
    x_hat   = (x - mu) / sqrt(var + eps)    eps *inside* the square root
    out     = gamma * x_hat + beta

Inference mode uses stored running statistics instead of ``mu`` and ``var``.

Each forward returns ``(out, cache)``; the backward functions take ``(dout, cache)``
and return ``(dx, dgamma, dbeta)`` with the shapes of ``x``, ``gamma`` and ``beta``.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "reduce_axes",
    "param_shape",
    "batchnorm_forward",
    "batchnorm_forward_inference",
    "batchnorm_backward_staged",
    "batchnorm_backward",
]


def reduce_axes(x: np.ndarray) -> tuple[int, ...]:
    """Axes the statistics are taken over: ``(0,)`` for (N, D), ``(0, 2, 3)`` for (N, C, H, W)."""
    if x.ndim == 2:
        return (0,)
    if x.ndim == 4:
        return (0, 2, 3)
    raise ValueError(
        f"batch norm expects x of shape (N, D) or (N, C, H, W); got {x.ndim} dimensions with shape "
        f"{tuple(x.shape)}. Flatten a (N, C, L) sequence to (N*L, C) or use a 4-D layout."
    )


def param_shape(x: np.ndarray) -> tuple[int, ...]:
    """Shape that broadcasts a per-feature vector against x: (1, D) or (1, C, 1, 1)."""
    return (1, x.shape[1]) if x.ndim == 2 else (1, x.shape[1], 1, 1)


def _check_params(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> None:
    axes = reduce_axes(x)
    n_features = x.shape[1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if np.shape(p) != (n_features,):
            raise ValueError(
                f"{name} must have shape ({n_features},), one value per "
                f"{'feature' if x.ndim == 2 else 'channel'} of x with shape {tuple(x.shape)}; got {np.shape(p)}"
            )
    m = int(np.prod([x.shape[a] for a in axes]))
    if m < 2:
        raise ValueError(
            f"batch norm in training mode needs more than one value per feature to estimate a variance; "
            f"x with shape {tuple(x.shape)} has {m}. Use a batch of two or more, or inference mode."
        )


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5):
    """Training-mode batch norm with the statistics of this batch.

    Args:
        x: (N, D) or (N, C, H, W).
        gamma, beta: (D,) or (C,), the learned scale and shift.
        eps: added to the variance inside the square root.

    Returns:
        out: same shape as x.
        cache: dict with everything the backward pass needs (``x``, ``xc``, ``x_hat``, and ``var``,
            ``std``, ``inv_std``, ``gamma`` as broadcastable arrays of shape (1, D) or (1, C, 1, 1)),
            and, for updating running statistics, the batch statistics ``mean`` and ``batch_var``
            (biased variance), both flat of shape (D,) or (C,), and ``m`` (values per feature).
    """
    x = np.asarray(x)
    _check_params(x, gamma, beta)
    axes = reduce_axes(x)
    shape = param_shape(x)
    m = x.size // x.shape[1]

    mu = x.mean(axis=axes, keepdims=True)               # (1, D) or (1, C, 1, 1)
    xc = x - mu                                          # centred input
    var = (xc ** 2).mean(axis=axes, keepdims=True)       # biased variance, divide by m
    std = np.sqrt(var + eps)                             # eps inside the square root
    inv_std = 1.0 / std
    x_hat = xc * inv_std                                 # mean 0, variance ~1 per feature
    g = np.reshape(gamma, shape)
    b = np.reshape(beta, shape)
    out = g * x_hat + b

    cache = {
        "x": x, "xc": xc, "var": var, "std": std, "inv_std": inv_std, "x_hat": x_hat,
        "gamma": g, "eps": eps, "axes": axes, "m": m,
        "mean": mu.reshape(-1), "batch_var": var.reshape(-1),
    }
    return out, cache


def batchnorm_forward_inference(x, gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """Inference-mode batch norm with fixed (running) statistics; deterministic per sample.

    Args:
        x: (N, D) or (N, C, H, W); any N >= 1.
        gamma, beta, running_mean, running_var: (D,) or (C,).

    Returns:
        out: same shape as x, ``gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.
    """
    x = np.asarray(x)
    shape = param_shape(x)
    reduce_axes(x)
    mean = np.reshape(running_mean, shape)
    var = np.reshape(running_var, shape)
    return np.reshape(gamma, shape) * (x - mean) / np.sqrt(var + eps) + np.reshape(beta, shape)


def batchnorm_backward_staged(dout, cache):
    """Backward pass that walks the computational graph node by node.

    Forward graph (per feature, m values)::

        mu = sum(x)/m -> xc = x - mu -> sq = xc**2 -> var = sum(sq)/m -> std = sqrt(var+eps)
        -> inv_std = 1/std -> x_hat = xc*inv_std -> out = gamma*x_hat + beta

    Each step below is the local derivative of one node times the upstream gradient.

    Args:
        dout: upstream gradient, same shape as x.
        cache: from :func:`batchnorm_forward`.

    Returns:
        dx (shape of x), dgamma and dbeta ((D,) or (C,)).
    """
    axes, m = cache["axes"], cache["m"]
    xc, std, inv_std, x_hat, g = cache["xc"], cache["std"], cache["inv_std"], cache["x_hat"], cache["gamma"]

    dbeta = dout.sum(axis=axes)                                  # out = ... + beta
    dgamma = (dout * x_hat).sum(axis=axes)                       # out = gamma * x_hat + ...
    dx_hat = dout * g                                            # (shape of x)
    dinv_std = (dx_hat * xc).sum(axis=axes, keepdims=True)       # x_hat = xc * inv_std
    dxc_from_xhat = dx_hat * inv_std
    dstd = dinv_std * (-1.0 / std ** 2)                          # inv_std = 1 / std
    dvar = dstd * 0.5 / std                                      # std = sqrt(var + eps)
    dsq = dvar * np.ones_like(xc) / m                            # var = mean(sq)
    dxc_from_sq = 2.0 * xc * dsq                                 # sq = xc ** 2
    dxc = dxc_from_xhat + dxc_from_sq                            # xc feeds two nodes
    dmu = -dxc.sum(axis=axes, keepdims=True)                     # xc = x - mu
    dx = dxc + dmu * np.ones_like(xc) / m                        # mu = mean(x); x also feeds xc
    return dx, dgamma, dbeta


def batchnorm_backward(dout, cache):
    """Closed-form backward pass (the staged graph simplified by hand).

    With ``dx_hat = dout * gamma``::

        dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))

    Consequences, per feature: ``sum(dx) = 0`` exactly (a shift of x does not change x_hat), and
    ``sum(dx * x_hat) = 0`` only when ``eps = 0`` (a rescaling of x - mu does not change x_hat then).
    With ``eps > 0`` the second sum is
    ``inv_std * eps / (var + eps) * sum(dx_hat * x_hat)``, small but not zero, because
    ``sum(x_hat ** 2) = m * var / (var + eps)`` rather than ``m``.

    Args and returns as in :func:`batchnorm_backward_staged`.
    """
    axes, m = cache["axes"], cache["m"]
    x_hat, inv_std, g = cache["x_hat"], cache["inv_std"], cache["gamma"]
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * x_hat).sum(axis=axes)
    dx_hat = dout * g
    dx = inv_std / m * (
        m * dx_hat
        - dx_hat.sum(axis=axes, keepdims=True)
        - x_hat * (dx_hat * x_hat).sum(axis=axes, keepdims=True)
    )
    return dx, dgamma, dbeta
