"""Gradient checking with centred finite differences.

For a scalar loss ``L = sum(f(x) * dout)`` the gradient with respect to each entry of ``x`` is
approximated by ``(L(x + h e_i) - L(x - h e_i)) / (2 h)``, whose error shrinks like ``h**2``.
Compare analytic and numerical gradients with :func:`relative_error` (a norm ratio,
``||a - b|| / (||a|| + ||b||)``; CS231n's check uses the largest entry of ``|a - b| / max(|a|, |b|)``
instead). In float64, with the default ``h = 1e-5``, a correct gradient typically gives 1e-9 or less
(Chapter 3 measures about 1e-10 for batch norm; asserting ``< 1e-7`` leaves a safe margin), a wrong
one 1e-2 or more.

Why ``h = 1e-5``: the centred difference has a truncation error of order ``h**2`` and a round-off
error of order ``1e-16 / h``; their sum is smallest near ``h ~ (1e-16) ** (1/3) ~ 5e-6``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numerical_gradient", "relative_error", "check_layer_gradients"]


def numerical_gradient(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout=None,
                       h: float = 1e-5) -> np.ndarray:
    """Centred finite-difference gradient of ``sum(f(x) * dout)`` with respect to ``x``.

    Args:
        f: function of x returning an array (or a scalar). It is evaluated 2 * x.size times.
        x: float64 array; it is perturbed in place and restored.
        dout: upstream gradient with the shape of ``f(x)``; ``None`` means all ones.
        h: step size.

    Returns:
        Array with the shape of ``x``.
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 input to be meaningful, got {x.dtype}; use x.astype(np.float64)")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.asarray(f(x), dtype=np.float64)
        x[i] = old - h
        minus = np.asarray(f(x), dtype=np.float64)
        x[i] = old
        weight = 1.0 if dout is None else dout
        grad[i] = np.sum((plus - minus) * weight) / (2 * h)
    return grad


def relative_error(a, b, floor: float = 1e-12) -> float:
    """``||a - b|| / max(||a|| + ||b||, floor)`` (Euclidean norms): scale-free, 0 when equal.

    Norms rather than entry by entry, so entries that are zero up to rounding do not dominate.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare gradients of shapes {a.shape} and {b.shape}")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), floor))


def check_layer_gradients(forward, backward, x, params: dict, dout, h: float = 1e-5) -> dict:
    """Relative error of a ``forward(x, **params) -> (out, cache)`` / ``backward(dout, cache)`` pair.

    ``backward`` must return ``(dx, *dparams)`` in the order of ``params``.
    Returns ``{"x": err, name: err, ...}``.
    """
    out, cache = forward(x, **params)
    analytic = backward(dout, cache)
    errors = {"x": relative_error(analytic[0], numerical_gradient(lambda v: forward(v, **params)[0], x, dout, h))}
    for (name, value), grad in zip(params.items(), analytic[1:]):
        if not isinstance(value, np.ndarray):
            continue
        def f(v, name=name):
            return forward(x, **{**params, name: v})[0]
        errors[name] = relative_error(grad, numerical_gradient(f, value, dout, h))
    return errors
