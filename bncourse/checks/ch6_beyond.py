"""Checks for chapter 6, beyond batch norm.

Exercise (what the student passes to :func:`bncourse.checks.check`):

``ch6_group_norm``  ``group_norm(x, num_groups, gamma, beta, eps) -> out``, x: (N, C, H, W) float64,
                    gamma/beta: (C,); statistics per example and group of C/G consecutive channels.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise, expect_array, register

__all__ = ["GroupNormExercise", "group_norm_reference", "group_norm_mistakes"]


def _std(x, axes, eps, ddof=0):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, ddof=ddof, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _grouped(x, g, eps, ddof=0, interleaved=False):
    n, c, h, w = x.shape
    if interleaved:     # channel k goes to group k % G (a reshape to (N, C/G, G, H, W))
        xg = x.reshape(n, c // g, g, h, w)
        return _std(xg, (1, 3, 4), eps, ddof).reshape(x.shape)
    xg = x.reshape(n, g, c // g, h, w)
    return _std(xg, (2, 3, 4), eps, ddof).reshape(x.shape)


def group_norm_reference(x, num_groups, gamma, beta, eps):
    """(N, C, H, W) group norm in NumPy, the same as ``torch.nn.functional.group_norm``."""
    c = x.shape[1]
    return _grouped(x, num_groups, eps) * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)


def group_norm_mistakes(x, num_groups, gamma, beta, eps) -> dict[str, Any]:
    c = x.shape[1]
    g4, b4 = gamma.reshape(1, c, 1, 1), beta.reshape(1, c, 1, 1)
    m: dict[str, Any] = {
        "you took the statistics over all channels of each example (that is layer norm, G = 1); group norm "
        "takes them per group of C/G consecutive channels": lambda: _std(x, (1, 2, 3), eps) * g4 + b4,
        "you took the statistics per channel of each example (that is instance norm, G = C); group norm takes "
        "them per group of C/G consecutive channels": lambda: _std(x, (2, 3), eps) * g4 + b4,
        "you took the statistics over the batch (that is batch norm); group norm never mixes examples: "
        "statistics per example and group": lambda: _std(x, (0, 2, 3), eps) * g4 + b4,
        "your groups interleave the channels (reshape to (N, C/G, G, H, W)); a group is C/G consecutive "
        "channels: reshape to (N, G, C/G, H, W)": lambda: _grouped(x, num_groups, eps, interleaved=True) * g4 + b4,
        "you normalized with the unbiased variance (ddof=1); use the biased one (divide by the number of values)":
            lambda: _grouped(x, num_groups, eps, ddof=1) * g4 + b4,
        "gamma and beta are missing: out = x_hat * gamma + beta, per channel":
            lambda: _grouped(x, num_groups, eps) + 0.0 * g4,
        "eps is outside the square root: use sqrt(var + eps)": lambda: _outside(x, num_groups, eps) * g4 + b4,
    }
    if x.shape[3] == c:
        m["gamma and beta have shape (C,) and must broadcast along the channel axis 1: reshape them to "
          "(1, C, 1, 1); as (C,) they broadcast along the last axis W"] = \
            lambda: _grouped(x, num_groups, eps) * gamma + beta
    return m


def _outside(x, g, eps):
    n, c, h, w = x.shape
    xg = x.reshape(n, g, c // g, h, w)
    mu = xg.mean(axis=(2, 3, 4), keepdims=True)
    sd = xg.std(axis=(2, 3, 4), keepdims=True)
    return ((xg - mu) / (sd + eps)).reshape(x.shape)


@register
class GroupNormExercise(Exercise):
    name = "ch6_group_norm"
    title = "group norm forward pass, x of shape (N, C, H, W)"
    references = ("bncourse.normalizations:group_norm", "bncourse.normalizations:GroupNorm",
                  "torch.nn.functional:group_norm", "torch:group_norm", "torch.nn:GroupNorm")

    def cases(self, rng):
        out = []
        # (N, C, H, W, G, eps); the last has W == C so a gamma broadcast along W gives a wrong value
        for n, c, h, w, g, eps in ((3, 6, 4, 5, 2, 1e-5), (2, 4, 3, 3, 4, 0.1), (2, 8, 2, 3, 1, 1e-3),
                                   (4, 6, 3, 6, 3, 1e-5)):
            x = rng.normal(size=(n, c, h, w)) * rng.uniform(0.5, 3.0, size=(1, c, 1, 1)) \
                + rng.uniform(-3, 3, size=(n, c, 1, 1))
            gamma = rng.uniform(0.5, 2.0, size=c) * rng.choice([-1.0, 1.0], size=c)
            out.append({"x": x, "num_groups": g, "gamma": gamma, "beta": rng.uniform(-2, 2, size=c), "eps": eps})
        return out

    def run(self, fn, case):
        try:
            return {"out": fn(case["x"], case["num_groups"], case["gamma"], case["beta"], case["eps"])}
        except ValueError as e:
            if "broadcast" in str(e):
                raise CheckFailure("gamma and beta have shape (C,) and must broadcast along the channel axis 1: "
                                   f"reshape them to (1, C, 1, 1) (NumPy said: {e})") from None
            raise

    def verify(self, case, result):
        args = (case["x"], case["num_groups"], case["gamma"], case["beta"], case["eps"])
        expect_array("out", result["out"], group_norm_reference(*args), rtol=1e-6, atol=1e-8,
                     mistakes=group_norm_mistakes(*args))
