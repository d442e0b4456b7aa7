"""Checks for chapter 3, batch norm from scratch.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``bn_forward``          ``batchnorm_forward(x, gamma, beta, eps) -> (out, cache)``, x: (N, D), float64
``bn_backward_staged``  ``batchnorm_backward_staged(dout, x, gamma, eps) -> (dx, dgamma, dbeta)``
``bn_backward``         ``batchnorm_backward(dout, x, gamma, eps) -> (dx, dgamma, dbeta)`` (closed form)
``bn_module``           a class ``BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
                        track_running_stats=True)``, a ``torch.nn.Module`` that behaves like
                        ``torch.nn.BatchNorm1d`` on (N, D) float32 input

Exercises beyond the chapter's cells:

``ch3_bn_stat_grads``        a derivation: ``batchnorm_stat_grads(dout, x, gamma, eps) -> (dmu, dvar)``
``ch3_merge_stats``          a derivation: ``merge_stats(mean_a, var_a, n_a, mean_b, var_b, n_b) -> (mean, var)``,
                             exact at offsets of 1e6 (where E[x^2] - mean^2 fails)
``ch3_predict_eps``          predict-then-run: the std of BN's output for a feature of batch std 0.002, eps 1e-5
``ch3_predict_scale``        predict-then-run: |dL/dW'| / |dL/dW| for W' = 10 W before a BN (0.1, within 5 %)
``ch3_debug_running_stats``  debugging: a ``BatchNorm1d`` whose running statistics were updated with gradient
                             tracking on; graded on the fixed class like ``bn_module`` (buffers must not track grad)

The backward exercises take ``(dout, x, gamma, eps)`` rather than a cache, so each exercise is
graded on its own: a wrong forward pass cannot make a right backward pass fail.

The mistake helpers (:func:`forward_mistakes`, :func:`backward_mistakes`,
:func:`running_stats_mistakes`) also accept 4-D (N, C, H, W) input, for the chapter on CNNs.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise, expect, expect_array, register
from .predict import Prediction, predicted
from .shared import changed_inputs, expect_inputs_unchanged, snapshot, to_numpy, unpack

__all__ = [
    "BNForward", "BNBackwardStaged", "BNBackward", "BNModule", "BNStatGrads", "MergeStats", "PredictEpsShrink",
    "PredictScaleInvariance", "DebugRunningStats",
    "normalize", "forward_mistakes", "backward_mistakes", "running_stats_mistakes", "stat_axes",
    "snapshot", "changed_inputs", "expect_inputs_unchanged",
]


# --------------------------------------------------------------------------------------------
# Plain math for the right answer's variants (the right answer itself comes from bncourse.bn_numpy)
# --------------------------------------------------------------------------------------------
def stat_axes(x: np.ndarray) -> tuple[int, ...]:
    """Axes of the per-feature (2-D) or per-channel (4-D) statistics."""
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _pshape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) if x.ndim == 2 else (1, x.shape[1], 1, 1)


def normalize(x: np.ndarray, eps: float, *, axes=None, ddof: int = 0, eps_mode: str = "inside",
              center: bool = True, power: float = 0.5) -> np.ndarray:
    """x_hat with configurable mistakes: statistics axes, ddof, where eps goes, centring, std vs var."""
    axes = stat_axes(x) if axes is None else axes
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, ddof=ddof, keepdims=True)
    with np.errstate(all="ignore"):
        if eps_mode == "inside":
            denom = (var + eps) ** power
        elif eps_mode == "outside":
            denom = var ** power + eps
        else:  # "missing"
            denom = var ** power
        return ((x - mu) if center else x) / denom


def forward_mistakes(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> dict[str, Any]:
    """``{message: out that mistake produces}`` for the training-mode forward pass (2-D or 4-D)."""
    g = np.reshape(gamma, _pshape(x))
    b = np.reshape(beta, _pshape(x))
    xh = normalize(x, eps)
    unit = "feature" if x.ndim == 2 else "channel"
    m: dict[str, Any] = {
        "you normalized with the unbiased variance (ddof=1, dividing by N-1); batch norm normalizes with "
        "the biased variance that divides by N (the unbiased one is only for running_var)":
            lambda: g * normalize(x, eps, ddof=1) + b,
        "eps is missing: add it to the variance inside the square root, sqrt(var + eps)":
            lambda: g * normalize(x, eps, eps_mode="missing") + b,
        "eps is outside the square root: use sqrt(var + eps), not sqrt(var) + eps":
            lambda: g * normalize(x, eps, eps_mode="outside") + b,
        "your code ignores the eps it is given and uses 1e-5 (a default argument or a constant): use the eps "
        "passed in": lambda: g * normalize(x, 1e-5) + b,
        "you divided by the variance instead of the standard deviation; use sqrt(var + eps)":
            lambda: g * normalize(x, eps, power=1.0) + b,
        "you did not subtract the batch mean before dividing by the standard deviation":
            lambda: g * normalize(x, eps, center=False) + b,
        "gamma and beta are swapped: out = gamma * x_hat + beta (gamma scales, beta shifts)":
            lambda: b * xh + g,
        "gamma and beta are missing: out = gamma * x_hat + beta, not just x_hat": lambda: xh + 0.0 * g,
        "gamma is missing: scale by it, out = gamma * x_hat + beta": lambda: xh + b,
        "beta is missing: shift by it, out = gamma * x_hat + beta": lambda: g * xh,
        "you took the mean and variance over the whole batch at once; batch norm takes them per "
        f"{unit} (one mean and one variance for each {unit})":
            lambda: g * normalize(x, eps, axes=tuple(range(x.ndim))) + b,
    }
    if x.ndim == 2:
        m["you took the statistics per sample (axis=1, over the features) instead of per feature over "
          "the batch (axis=0)"] = lambda: g * normalize(x, eps, axes=(1,)) + b
    else:
        m["you took the statistics per sample over (C, H, W) (axis=(1, 2, 3)) instead of per channel "
          "over (N, H, W) (axis=(0, 2, 3))"] = lambda: g * normalize(x, eps, axes=(1, 2, 3)) + b
        m["you took the statistics per sample and channel over (H, W) only (that is instance norm); "
          "batch norm takes them per channel over (N, H, W)"] = lambda: g * normalize(x, eps, axes=(2, 3)) + b
        m["you took the statistics over the batch axis only (axis=0), one per channel and position; "
          "for conv layers take them per channel over (N, H, W), axis=(0, 2, 3)"] = \
            lambda: g * normalize(x, eps, axes=(0,)) + b
    return m


def _backward_generic(dout, x, gamma, eps, *, axes=None, ddof=0, through_mean=True, through_var=True,
                      use_gamma=True):
    """dx of out = gamma * normalize(x) + beta, for a normalization with the given options."""
    axes = stat_axes(x) if axes is None else axes
    m = int(np.prod([x.shape[a] for a in axes]))
    g = np.reshape(gamma, _pshape(x)) if use_gamma else 1.0
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc ** 2).sum(axis=axes, keepdims=True) / (m - ddof)
    inv_std = 1.0 / np.sqrt(var + eps)
    dxhat = dout * g
    dxc = dxhat * inv_std
    if through_var:
        dvar = (dxhat * xc).sum(axis=axes, keepdims=True) * -0.5 * inv_std ** 3
        dxc = dxc + dvar * 2.0 * xc / (m - ddof)
    if through_mean:
        dxc = dxc - dxc.sum(axis=axes, keepdims=True) / m
    return dxc


def backward_mistakes(dout: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float) -> dict[str, dict[str, Any]]:
    """``{"dx": {...}, "dgamma": {...}, "dbeta": {...}}``: messages and outcomes of backward mistakes."""
    axes = stat_axes(x)
    xh = normalize(x, eps)
    unit = "feature" if x.ndim == 2 else "channel"
    batch_axes = "axis=0" if x.ndim == 2 else "axis=(0, 2, 3)"
    stop = ("your dx ignores the path through the batch mean and variance (the stop-gradient mistake): "
            "mu and var depend on x, so dx gets the terms through them too")
    dx = {
        stop: lambda: _backward_generic(dout, x, gamma, eps, through_mean=False, through_var=False),
        "your dx ignores the path through the batch mean: mu depends on x, add that term":
            lambda: _backward_generic(dout, x, gamma, eps, through_mean=False),
        "your dx ignores the path through the batch variance: var depends on x, add that term":
            lambda: _backward_generic(dout, x, gamma, eps, through_var=False),
        "your dx forgets the factor gamma: going back through out = gamma * x_hat + beta gives "
        "dx_hat = dout * gamma": lambda: _backward_generic(dout, x, gamma, eps, use_gamma=False),
        "your dx is the gradient of a batch norm with the unbiased variance (N-1); the forward pass "
        "normalizes with the biased one (N)": lambda: _backward_generic(dout, x, gamma, eps, ddof=1),
        "your dx ignores the eps it is given and uses 1e-5 (a default argument or a constant): the backward "
        "pass must use the forward pass's eps": lambda: _backward_generic(dout, x, gamma, 1e-5),
    }
    if x.ndim == 2:
        dx["your dx takes the statistics per sample (axis=1) instead of per feature (axis=0)"] = \
            lambda: _backward_generic(dout, x, gamma, eps, axes=(1,))
    else:
        dx["your dx takes the statistics per sample over (C, H, W) instead of per channel over (N, H, W)"] = \
            lambda: _backward_generic(dout, x, gamma, eps, axes=(1, 2, 3))
    other_axes = (1,) if x.ndim == 2 else (1, 2, 3)
    dgamma = {
        f"dgamma is summed over the wrong axes: sum dout * x_hat over the batch ({batch_axes}), one value per "
        f"{unit}, not over the features": lambda: (dout * xh).sum(axis=other_axes),
        f"dgamma is summed over all axes: sum over the batch only ({batch_axes}), one value per {unit}":
            lambda: np.asarray((dout * xh).sum()),
        f"dgamma is not summed: gamma is shared by the whole batch, so sum dout * x_hat over {batch_axes}":
            lambda: dout * xh,
        "dgamma and dbeta are swapped: dgamma = sum(dout * x_hat), dbeta = sum(dout)":
            lambda: dout.sum(axis=axes),
        "dgamma uses x instead of the normalized x_hat: dgamma = sum(dout * x_hat)":
            lambda: (dout * x).sum(axis=axes),
        "dgamma uses an x_hat normalized with eps = 1e-5 instead of the eps it is given":
            lambda: (dout * normalize(x, 1e-5)).sum(axis=axes),
        "dgamma uses an x_hat normalized with the unbiased variance (N-1); the forward pass normalizes with "
        "the biased one (N)": lambda: (dout * normalize(x, eps, ddof=1)).sum(axis=axes),
        f"dgamma uses an x_hat whose statistics were taken per sample instead of per {unit}":
            lambda: (dout * normalize(x, eps, axes=other_axes)).sum(axis=axes),
    }
    dbeta = {
        f"dbeta is summed over the wrong axes: sum dout over the batch ({batch_axes}), one value per {unit}, "
        f"not over the features": lambda: dout.sum(axis=other_axes),
        f"dbeta is summed over all axes: sum over the batch only ({batch_axes}), one value per {unit}":
            lambda: np.asarray(dout.sum()),
        f"dbeta is not summed: beta is shared by the whole batch, so sum dout over {batch_axes}": lambda: dout,
        "dgamma and dbeta are swapped: dgamma = sum(dout * x_hat), dbeta = sum(dout)":
            lambda: (dout * xh).sum(axis=axes),
    }
    return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def running_stats_mistakes(running_mean, running_var, batch_mean, batch_var, n, momentum):
    """``{"mean": {...}, "var": {...}}`` for one PyTorch-convention update (batch_var biased)."""
    unbiased = batch_var * n / (n - 1)
    return {
        "mean": {
            "the momentum convention is reversed: PyTorch's momentum weights the NEW batch value, "
            "running = (1 - momentum) * running + momentum * batch":
                (momentum * running_mean + (1 - momentum) * batch_mean),
            "the running mean is replaced by the batch mean instead of averaged: "
            "running = (1 - momentum) * running + momentum * batch": batch_mean,
            "the running mean was not updated in training mode": running_mean,
        },
        "var": {
            "the momentum convention is reversed: PyTorch's momentum weights the NEW batch value, "
            "running = (1 - momentum) * running + momentum * batch":
                (momentum * running_var + (1 - momentum) * unbiased),
            "running_var is stored without Bessel's correction: normalize with the biased variance, but "
            "store the unbiased one, batch_var * n / (n - 1)":
                ((1 - momentum) * running_var + momentum * batch_var),
            "the momentum convention is reversed and running_var misses Bessel's correction n / (n - 1)":
                (momentum * running_var + (1 - momentum) * batch_var),
            "the running variance is replaced by the batch variance instead of averaged: "
            "running = (1 - momentum) * running + momentum * batch": unbiased,
            "the running variance was not updated in training mode": running_var,
        },
    }


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------
def _fc_case(rng, n, d, eps, small_feature=False):
    x = rng.normal(loc=rng.uniform(-3, 3, size=d), scale=rng.uniform(0.5, 3.0, size=d), size=(n, d))
    if small_feature:
        x[:, 0] = 0.5 + 0.01 * rng.normal(size=n)   # tiny variance: eps matters
    gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)
    beta = rng.uniform(-2.0, 2.0, size=d)
    return x, gamma, beta


_FC_SHAPES = ((8, 5, 1e-5, False), (6, 3, 0.1, False), (16, 4, 1e-3, True), (5, 7, 1e-5, True))

_NUMPY_REFERENCES = (
    "bncourse.bn_numpy:batchnorm_forward",
    "bncourse.bn_numpy:batchnorm_forward_inference",
    "bncourse.bn_numpy:batchnorm_backward_staged",
    "bncourse.bn_numpy:batchnorm_backward",
    "bncourse.functional:batch_norm",
    "bncourse.nn:BatchNorm1d",
    "bncourse.nn:BatchNorm2d",
    "torch.nn.functional:batch_norm",
    "torch:batch_norm",
    "torch:native_batch_norm",
    "torch.nn.modules.batchnorm:_NormBase",
)


#: kept for chapter 5's imports until it moves to bncourse.checks.shared
_unpack = unpack


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------
@register
class BNForward(Exercise):
    name = "bn_forward"
    title = "batch norm forward pass, training mode, x of shape (N, D)"
    hints = (
        "Batch norm standardizes every feature over the mini-batch, then lets the network undo it with a learned "
        "scale gamma and shift beta.",
        "x is (N, D); the mean and variance reduce over axis 0 and have shape (D,); gamma and beta are (D,) and "
        "broadcast over the N rows.",
        "x_hat = (x - mean) / sqrt(var + eps) with the biased variance (divide by N); out = gamma * x_hat + beta.",
    )
    references = _NUMPY_REFERENCES

    def cases(self, rng):
        out = []
        for n, d, eps, small in _FC_SHAPES:
            x, gamma, beta = _fc_case(rng, n, d, eps, small)
            out.append({"x": x, "gamma": gamma, "beta": beta, "eps": eps})
        return out

    def run(self, fn, case):
        ret = fn(case["x"], case["gamma"], case["beta"], case["eps"])
        out, _cache = _unpack(ret, "batchnorm_forward", ("out", "cache"))
        return {"out": out}

    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_forward
        x, gamma, beta, eps = case["x"], case["gamma"], case["beta"], case["eps"]
        want, _ = batchnorm_forward(x, gamma, beta, eps)
        expect_array("out", result["out"], want, rtol=1e-6, atol=1e-8,
                     mistakes=forward_mistakes(x, gamma, beta, eps))


class _BackwardBase(Exercise):
    references = _NUMPY_REFERENCES
    fn_name = "batchnorm_backward"

    def cases(self, rng):
        out = []
        for n, d, eps, small in _FC_SHAPES:
            x, gamma, _beta = _fc_case(rng, n, d, eps, small)
            dout = rng.normal(size=(n, d))
            out.append({"dout": dout, "x": x, "gamma": gamma, "eps": eps})
        return out

    def run(self, fn, case):
        before = snapshot(case)
        ret = fn(case["dout"], case["x"], case["gamma"], case["eps"])
        dx, dgamma, dbeta = _unpack(ret, self.fn_name, ("dx", "dgamma", "dbeta"))
        return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta, "inputs_changed": changed_inputs(before, case)}

    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_backward, batchnorm_forward
        dout, x, gamma, eps = case["dout"], case["x"], case["gamma"], case["eps"]
        _, cache = batchnorm_forward(x, gamma, np.zeros_like(gamma), eps)
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        mistakes = backward_mistakes(dout, x, gamma, eps)
        expect_inputs_unchanged(result)
        expect_array("dbeta", result["dbeta"], dbeta, rtol=1e-6, atol=1e-9, mistakes=mistakes["dbeta"])
        expect_array("dgamma", result["dgamma"], dgamma, rtol=1e-6, atol=1e-9, mistakes=mistakes["dgamma"])
        expect_array("dx", result["dx"], dx, rtol=1e-6, atol=1e-9, mistakes=mistakes["dx"])


@register
class BNBackwardStaged(_BackwardBase):
    name = "bn_backward_staged"
    title = "batch norm backward pass, node by node on the computational graph"
    hints = (
        "Walk the forward graph backwards: each node multiplies the gradient arriving from above by its local "
        "derivative; a value used twice (x, xc) adds the gradients of its uses.",
        "Where the forward pass broadcast a (D,) quantity over N rows (mu, var, inv_std, gamma, beta), the backward "
        "pass sums over axis 0; where it averaged over N, the backward pass spreads the gradient back divided by N.",
        "x reaches x_hat directly, through mu and through var: dx = dxc + dmu / N, with dxc collecting the direct "
        "path and the path through var (2 * xc * dvar / N).",
    )
    fn_name = "batchnorm_backward_staged"


@register
class BNBackward(_BackwardBase):
    name = "bn_backward"
    title = "batch norm backward pass, closed form"
    hints = (
        "Collect the three paths of the staged backward into one expression per feature; everything is written "
        "with x_hat, dx_hat = dout * gamma and 1 / sqrt(var + eps).",
        "The two sums over the batch, sum(dx_hat) and sum(dx_hat * x_hat), have shape (D,) and broadcast over N.",
        "dx = inv_std / N * (N * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat)); dgamma = sum(dout * x_hat); "
        "dbeta = sum(dout), sums over axis 0.",
    )
    fn_name = "batchnorm_backward"


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------
_MODULE_CASES = (
    # D, N, eps, momentum, affine, track_running_stats
    (4, 8, 1e-5, 0.1, True, True),
    (3, 5, 0.1, 0.3, True, True),
    (5, 6, 1e-3, 0.1, False, True),
    (3, 4, 0.1, 0.2, True, False),
)


#: kept for chapter 5's imports until it moves to bncourse.checks.shared
_as_numpy = to_numpy


RUNNING_STATS_GRAD_MSG = (
    "after a training step, running_mean or running_var requires grad (it has a grad_fn): the running "
    "statistics were computed from the batch mean and variance WITH gradient tracking, so every step chains "
    "the buffers to the previous step's graph (memory grows, and an eval-mode backward fails with 'Trying to "
    "backward through the graph a second time'). Update them under torch.no_grad() (or from .detach()ed "
    "statistics), in place")


def record_module_steps(m, x1, y1, case, res: dict, *, affine: bool) -> dict:
    """The rest of a module exercise's ``run``, shared by BatchNorm1d (ch3) and BatchNorm2d (ch5).

    ``y1 = m(x1)`` was the first training-mode forward. Records the output, the gradients of
    ``case["dout"]``, the running statistics after it, after a second training step on
    ``case["x2"]`` and after an eval-mode step on ``case["x3"]`` (which must not change them).
    """
    import torch

    res["out1"] = _as_numpy(y1)
    # the running statistics after the first training step must be plain buffers, not part of the graph
    res["buffers_track_grad"] = bool(any(
        isinstance(b, torch.Tensor) and (b.requires_grad or b.grad_fn is not None)
        for b in (getattr(m, "running_mean", None), getattr(m, "running_var", None))))
    res["dx1"] = None
    if y1.shape == x1.shape and y1.requires_grad:
        y1.backward(torch.from_numpy(case["dout"]))
        res["dx1"] = _as_numpy(x1.grad)
        if affine:
            res["dgamma"] = _as_numpy(m.weight.grad)
            res["dbeta"] = _as_numpy(m.bias.grad)
    for step, x in ((1, None), (2, case["x2"]), (3, case["x3"])):
        if step == 3:
            m.eval()
        if x is not None:
            with torch.no_grad():
                out = m(torch.from_numpy(x))
            if step == 3:
                res["out3"] = _as_numpy(out)
        res[f"running_mean_{step}"] = _as_numpy(getattr(m, "running_mean", None))
        res[f"running_var_{step}"] = _as_numpy(getattr(m, "running_var", None))
    return res


@register
class BNModule(Exercise):
    name = "bn_module"
    title = "a BatchNorm1d module, drop-in for torch.nn.BatchNorm1d"
    hints = (
        "Two kinds of state: parameters (weight, bias) learned by backprop, and buffers (running_mean, "
        "running_var) learned by averaging; self.training says which statistics normalize.",
        "Parameters and buffers are (D,); in training mode the batch statistics over dim 0 keep their gradient, "
        "while the buffer update happens under torch.no_grad(), in place.",
        "running = (1 - momentum) * running + momentum * batch_stat, with the UNBIASED batch variance "
        "(var * N / (N - 1)) for running_var; eval mode normalizes with the buffers and updates nothing.",
    )
    references = _NUMPY_REFERENCES

    def cases(self, rng):
        out = []
        for d, n, eps, momentum, affine, trs in _MODULE_CASES:
            loc = rng.uniform(-3, 3, size=d)
            scale = rng.uniform(0.5, 3.0, size=d)
            case = {
                "num_features": d, "eps": eps, "momentum": momentum, "affine": affine,
                "track_running_stats": trs,
                "x1": rng.normal(loc, scale, size=(n, d)).astype(np.float32),
                "x2": rng.normal(loc, scale, size=(n + 2, d)).astype(np.float32),
                "x3": rng.normal(loc, scale, size=(3, d)).astype(np.float32),
                "dout": rng.normal(size=(n, d)).astype(np.float32),
            }
            if affine:
                case["gamma"] = (rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)).astype(np.float32)
                case["beta"] = rng.uniform(-2.0, 2.0, size=d).astype(np.float32)
            out.append(case)
        return out

    def run(self, fn, case):
        import torch

        d = case["num_features"]
        m = fn(d, eps=case["eps"], momentum=case["momentum"], affine=case["affine"],
               track_running_stats=case["track_running_stats"])
        if not isinstance(m, torch.nn.Module):
            raise CheckFailure("BatchNorm1d(...) must create a torch.nn.Module: subclass nn.Module and call "
                               "super().__init__() first")
        res: dict[str, Any] = {}
        params = dict(m.named_parameters())
        res["param_names"] = ",".join(sorted(params))
        if case["affine"]:
            if "weight" not in params or "bias" not in params:
                raise CheckFailure(
                    "with affine=True the module needs parameters named weight (gamma) and bias (beta), "
                    f"registered as nn.Parameter; it has {sorted(params) or 'none'}")
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(case["gamma"]))
                m.bias.copy_(torch.from_numpy(case["beta"]))
        rm = getattr(m, "running_mean", None)
        rv = getattr(m, "running_var", None)
        res["running_mean_0"] = _as_numpy(rm)
        res["running_var_0"] = _as_numpy(rv)

        m.train()
        # x1 is column-major, so a non-contiguous tensor: code that needs .contiguous() (a .view) must say so
        x1 = torch.from_numpy(np.asfortranarray(case["x1"])).requires_grad_(True)
        y1 = m(x1)
        if not isinstance(y1, torch.Tensor):
            raise CheckFailure(f"forward must return a torch.Tensor; it returned {type(y1).__name__}")
        return record_module_steps(m, x1, y1, case, res, affine=case["affine"])

    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_backward, batchnorm_forward, batchnorm_forward_inference
        from bncourse.running_stats import update_running_stats

        d, eps, mom = case["num_features"], case["eps"], case["momentum"]
        affine, trs = case["affine"], case["track_running_stats"]
        f64 = np.float64
        x1, x2, x3 = (case[k].astype(f64) for k in ("x1", "x2", "x3"))
        dout = case["dout"].astype(f64)
        gamma = case["gamma"].astype(f64) if affine else np.ones(d)
        beta = case["beta"].astype(f64) if affine else np.zeros(d)
        tol = {"rtol": 1e-4, "atol": 1e-4, "dtype": np.float32}

        expect(affine or result["param_names"] == "",
               f"with affine=False the module must have no parameters (weight and bias are None, like "
               f"torch.nn.BatchNorm1d); it has {result['param_names']}")
        # training step 1: output and gradients
        out1, cache = batchnorm_forward(x1, gamma, beta, eps)
        expect_array("the output in training mode", result["out1"], out1, **tol,
                     mistakes=forward_mistakes(x1, gamma, beta, eps))
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        bm = backward_mistakes(dout, x1, gamma, eps)
        if result.get("dx1") is None:
            raise CheckFailure("x.grad is None after out.backward(): compute the output with torch operations "
                               "on the input so autograd can differentiate it (no .numpy(), no .detach())")
        dx_msgs = dict(bm["dx"])
        key = next(k for k in dx_msgs if "stop-gradient" in k)
        dx_msgs["your module computes the batch mean and variance without gradient (.detach(), .item(), "
                "torch.no_grad() or NumPy): " + key.split(": ", 1)[1]] = dx_msgs.pop(key)
        expect_array("x.grad (the gradient through your module)", result["dx1"], dx, **tol, mistakes=dx_msgs)
        if affine:
            expect_array("weight.grad", result["dgamma"], dgamma, **tol, mistakes=bm["dgamma"])
            expect_array("bias.grad", result["dbeta"], dbeta, **tol, mistakes=bm["dbeta"])

        # running statistics
        if not trs:
            for k in ("running_mean_0", "running_var_0"):
                expect(result[k] is None,
                       "with track_running_stats=False there are no running statistics: running_mean and "
                       "running_var must be None (like torch.nn.BatchNorm1d), and eval mode uses the batch's")
            want3, _ = batchnorm_forward(x3, gamma, beta, eps)
            expect_array("the output in eval mode with track_running_stats=False", result["out3"], want3, **tol,
                         mistakes={"with track_running_stats=False eval mode has no running statistics and "
                                   "must normalize with the batch statistics": lambda: gamma * x3 + beta})
            return

        expect(not result.get("buffers_track_grad", False), RUNNING_STATS_GRAD_MSG)
        for k, want0, what in (("running_mean_0", 0.0, "0"), ("running_var_0", 1.0, "1")):
            name = k[:-2]
            if result[k] is None:
                raise CheckFailure(f"the module has no {name}: register it with self.register_buffer('{name}', ...)")
            expect_array(f"the initial {name}", result[k], np.full(d, want0), **tol,
                         mistakes={f"{name} must start at {what} (running_var at 1, running_mean at 0)":
                                   np.full(d, 1.0 - want0)})
        rm, rv = np.zeros(d), np.ones(d)
        for step, x in ((1, x1), (2, x2)):
            n = x.shape[0]
            bmean, bvar = x.mean(axis=0), x.var(axis=0)
            want_m, want_v = update_running_stats(rm, rv, bmean, bvar, n, mom)
            rs = running_stats_mistakes(rm, rv, bmean, bvar, n, mom)
            if step == 1:
                rs["var"]["running_var started at 0; it starts at 1 (running_mean at 0)"] = \
                    (1 - mom) * 0.0 + mom * bvar * n / (n - 1)
            after = "the first" if step == 1 else "the second"
            expect_array(f"running_mean after {after} training batch", result[f"running_mean_{step}"], want_m,
                         **tol, mistakes=rs["mean"])
            expect_array(f"running_var after {after} training batch", result[f"running_var_{step}"], want_v,
                         **tol, mistakes=rs["var"])
            rm, rv = want_m, want_v

        # eval mode: running statistics, and no update
        n3 = x3.shape[0]
        b3m, b3v = x3.mean(axis=0), x3.var(axis=0)
        upd_m, upd_v = update_running_stats(rm, rv, b3m, b3v, n3, mom)
        inference_update = ("running statistics were updated in eval (inference) mode; only training mode "
                            "updates them (check self.training)")
        expect_array("running_mean after a batch in eval mode", result["running_mean_3"], rm, **tol,
                     mistakes={inference_update: upd_m})
        expect_array("running_var after a batch in eval mode", result["running_var_3"], rv, **tol,
                     mistakes={inference_update: upd_v})
        want3 = batchnorm_forward_inference(x3, gamma, beta, rm, rv, eps)
        expect_array("the output in eval mode", result["out3"], want3, **tol, mistakes={
            "eval mode normalized with the batch statistics; it must use running_mean and running_var "
            "(a prediction must not depend on the other samples in the batch)":
                lambda: batchnorm_forward(x3, gamma, beta, eps)[0],
            "eval mode normalized with the running statistics updated by this very batch; use them as they "
            "are and do not update them in eval mode": lambda: batchnorm_forward_inference(
                x3, gamma, beta, upd_m, upd_v, eps),
            "eps is missing in eval mode: divide by sqrt(running_var + eps)":
                lambda: gamma * (x3 - rm) / np.sqrt(rv) + beta,
        })


# --------------------------------------------------------------------------------------------
# A derivation: the intermediate gradients dL/dmu and dL/dvar
# --------------------------------------------------------------------------------------------
def _stat_grads(dout, x, gamma, eps, *, use_gamma=True, exponent=-1.5, factor=-0.5, eps_in=None):
    """(dmu, dvar) of L through x_hat = (x - mu) / sqrt(var + eps), and common slips (keyword options)."""
    e = eps if eps_in is None else eps_in
    mu = x.mean(axis=0)
    xc = x - mu
    var = (xc ** 2).mean(axis=0)
    dx_hat = dout * gamma if use_gamma else dout
    dvar = factor * (dx_hat * xc).sum(axis=0) * (var + e) ** exponent
    dmu = -dx_hat.sum(axis=0) / np.sqrt(var + e)        # + dvar * mean(-2 xc), which is 0
    return dmu, dvar


@register
class BNStatGrads(Exercise):
    name = "ch3_bn_stat_grads"
    title = "the intermediate gradients dL/dmu and dL/dvar of batch norm, shape (D,) each"
    references = _NUMPY_REFERENCES
    hints = (
        "mu and var are nodes of the graph like any other: the gradient that reaches them is the sum, over every "
        "place they are used, of (gradient arriving there) x (local derivative).",
        "Both are (D,) and were broadcast over the N rows of x_hat = (x - mu) / sqrt(var + eps): sum over axis 0. "
        "The gradient arriving at x_hat is dx_hat = dout * gamma.",
        "d x_hat / d var = -(1/2) (x - mu) (var + eps)^(-3/2) and d x_hat / d mu = -1 / sqrt(var + eps); mu also "
        "reaches var, but that term is dvar * mean(-2 (x - mu)) = 0.",
    )

    def cases(self, rng):
        return _BackwardBase.cases(self, rng)

    def run(self, fn, case):
        before = snapshot(case)
        ret = fn(case["dout"], case["x"], case["gamma"], case["eps"])
        dmu, dvar = _unpack(ret, "batchnorm_stat_grads", ("dmu", "dvar"))
        return {"dmu": dmu, "dvar": dvar, "inputs_changed": changed_inputs(before, case)}

    def verify(self, case, result):
        dout, x, gamma, eps = case["dout"], case["x"], case["gamma"], case["eps"]
        expect_inputs_unchanged(result)
        dmu, dvar = _stat_grads(dout, x, gamma, eps)
        swap = "dmu and dvar are swapped: return (dmu, dvar)"
        no_sum = "not summed over the batch: mu and var are (D,), shared by the N rows, so sum over axis 0"
        scale = np.abs(dvar).max()
        expect_array("dvar", result["dvar"], dvar, rtol=1e-6, atol=1e-9 * scale, mistakes={
            swap: dmu,
            "dvar forgets gamma: the gradient arriving at x_hat is dout * gamma": _stat_grads(
                dout, x, gamma, eps, use_gamma=False)[1],
            "the exponent of (var + eps) is wrong: d/dvar (var + eps)^(-1/2) = -(1/2) (var + eps)^(-3/2)":
                _stat_grads(dout, x, gamma, eps, exponent=-0.5)[1],
            "the factor -1/2 from differentiating (var + eps)^(-1/2) is missing":
                _stat_grads(dout, x, gamma, eps, factor=1.0)[1],
            "the sign of dvar is flipped: a larger variance shrinks x_hat, so the factor is -(1/2)":
                -dvar,
            "dvar " + no_sum: lambda: -0.5 * dout * gamma * (x - x.mean(0)) * (x.var(0) + eps) ** -1.5,
            "dvar ignores the eps it is given (uses 1e-5)": _stat_grads(dout, x, gamma, eps, eps_in=1e-5)[1],
        })
        expect_array("dmu", result["dmu"], dmu, rtol=1e-6, atol=1e-9 * np.abs(dmu).max(), mistakes={
            swap: dvar,
            "dmu forgets gamma: the gradient arriving at x_hat is dout * gamma": _stat_grads(
                dout, x, gamma, eps, use_gamma=False)[0],
            "the sign of dmu is flipped: x_hat = (x - mu) / std decreases when mu grows": -dmu,
            "dmu is missing the division by sqrt(var + eps)": -(dout * gamma).sum(axis=0),
            "dmu " + no_sum: lambda: -dout * gamma / np.sqrt(x.var(0) + eps),
            "dmu was divided by N: that 1/N belongs to the step from mu back to x (dx = ... + dmu / N), not to dmu":
                dmu / x.shape[0],
        })


# --------------------------------------------------------------------------------------------
# A derivation: batch statistics merged from two halves (what synchronized BN does across devices)
# --------------------------------------------------------------------------------------------
_MERGE_OFFSET = 1e6


@register
class MergeStats(Exercise):
    name = "ch3_merge_stats"
    title = "merge the per-feature mean and biased variance of two parts of a batch into the whole batch's"
    references = _NUMPY_REFERENCES
    hints = (
        "The merged mean is the mean of all n_a + n_b rows; the merged variance is the mean squared distance of "
        "all rows from that merged mean, not from each part's own mean.",
        "Each part's rows sit around its own mean: a row's squared distance to the merged mean splits into its "
        "distance to its part's mean plus the distance between the two means (the cross term sums to zero).",
        "mean = (n_a mean_a + n_b mean_b) / n; var = (n_a var_a + n_b var_b) / n + n_a n_b (mean_a - mean_b)^2 / n^2. "
        "Do not go through mean(x^2) - mean^2: it loses every digit for features far from 0.",
    )

    def cases(self, rng):
        out = []
        for n_a, n_b, d, offset in ((8, 8, 3, 0.0), (5, 11, 4, 0.0), (16, 4, 3, _MERGE_OFFSET), (3, 9, 2, 1e4)):
            loc = rng.uniform(-3, 3, size=d) + offset * rng.choice([-1.0, 1.0], size=d)
            scale = rng.uniform(0.5, 2.0, size=d)
            x_a = rng.normal(loc, scale, size=(n_a, d))
            x_b = rng.normal(loc + rng.uniform(-2, 2, size=d), scale, size=(n_b, d))   # the parts differ
            out.append({"x_a": x_a, "x_b": x_b})
        return out

    def run(self, fn, case):
        x_a, x_b = case["x_a"], case["x_b"]
        stats = {"mean_a": x_a.mean(axis=0), "var_a": x_a.var(axis=0), "mean_b": x_b.mean(axis=0),
                 "var_b": x_b.var(axis=0)}
        before = snapshot(stats)
        ret = fn(stats["mean_a"], stats["var_a"], x_a.shape[0], stats["mean_b"], stats["var_b"], x_b.shape[0])
        mean, var = _unpack(ret, "merge_stats", ("mean", "var"))
        return {"mean": _as_numpy(mean), "var": _as_numpy(var), "inputs_changed": changed_inputs(before, stats)}

    def verify(self, case, result):
        x_a, x_b = case["x_a"], case["x_b"]
        expect_inputs_unchanged(result)
        x = np.concatenate([x_a, x_b])
        want_mean, want_var = x.mean(axis=0), x.var(axis=0)          # the whole batch, two-pass
        n_a, n_b, n = len(x_a), len(x_b), len(x)
        ma, mb, va, vb = x_a.mean(0), x_b.mean(0), x_a.var(0), x_b.var(0)
        expect_array("mean", result["mean"], want_mean, rtol=1e-10, atol=1e-12, mistakes={
            "the merged mean weights the parts equally: weight each part's mean by its size, "
            "(n_a mean_a + n_b mean_b) / (n_a + n_b)": (ma + mb) / 2,
        })
        mistakes = {
            "the merged variance is missing the spread BETWEEN the two parts' means: add n_a n_b (mean_a - "
            "mean_b)^2 / n^2 (the parts' own variances only measure the spread inside each part)":
                (n_a * va + n_b * vb) / n,
            "the variances are averaged with equal weights and without the spread between the means":
                (va + vb) / 2,
            "the variances are averaged with equal weights: weight each part by its size": (va + vb) / 2 + (
                n_a * n_b * (ma - mb) ** 2 / n ** 2),
            "that is the unbiased variance (divide by n - 1); batch norm normalizes with the biased one":
                want_var * n / (n - 1),
            "the spread between the means has the wrong weight: it is n_a n_b / n^2 times (mean_a - mean_b)^2":
                (n_a * va + n_b * vb) / n + (ma - mb) ** 2 / 4,
        }
        try:
            expect_array("var", result["var"], want_var, rtol=1e-8, atol=0.0, mistakes=mistakes)
        except CheckFailure as failure:
            got = result["var"]
            if ("wrong values" in str(failure) and np.abs(x).min() > 1e3 and type(got) is np.ndarray
                    and got.shape == want_var.shape and np.all(np.isfinite(got))):
                rel = float(np.max(np.abs(got - want_var) / want_var))
                if rel < 0.5:
                    raise CheckFailure(
                        f"var is right to only about {max(0, int(-np.log10(rel)))} digits on features near "
                        f"{np.abs(x).min():.0e} (the check needs 1e-8; float64 gives about 1e-15). Precision is the "
                        f"point here: going through the mean of x^2, var = E[x^2] - mean^2 subtracts two numbers "
                        f"near {np.abs(x).min() ** 2:.0e} that agree in almost all their digits. Merge with the "
                        f"parts' variances and the difference of their means instead") from None
            raise


# --------------------------------------------------------------------------------------------
# Predict, then run
# --------------------------------------------------------------------------------------------
@register
class PredictEpsShrink(Prediction):
    name = "ch3_predict_eps"
    title = "predict the std of a batch-norm output (gamma 1, beta 0) for a feature of batch std 0.002, eps 1e-5"
    quantity = "the std of the normalized feature"
    truth = 0.002 / np.sqrt(0.002 ** 2 + 1e-5)
    rtol = 0.03
    mistakes = (
        predicted("eps_negligible", 1.0, "x_hat has std 1 only when eps is negligible against the variance; here "
                  "var = 4e-6 is smaller than eps = 1e-5"),
        predicted("divided_by_sqrt_eps", 0.002 / np.sqrt(1e-5), "the denominator is sqrt(var + eps), with the "
                  "variance in it too"),
        predicted("variance_ratio", 0.002 ** 2 / (0.002 ** 2 + 1e-5), "that is the ratio of variances var / (var + "
                  "eps); the std is its square root"),
    )
    hints = (
        "Batch norm divides by sqrt(var + eps), not by the std: eps matters when the variance is of its size.",
        "The feature's batch variance is 0.002^2 = 4e-6; eps is 1e-5.",
        "std(x_hat) = std(x) / sqrt(var + eps).",
    )


@register
class PredictScaleInvariance(Prediction):
    name = "ch3_predict_scale"
    title = "predict |dL/dW'| / |dL/dW| when the weights W before a batch norm are multiplied by 10"
    quantity = "the ratio of gradient norms |dL/dW'| / |dL/dW| for W' = 10 W"
    truth = 0.1
    rtol = 0.05
    mistakes = (
        predicted("unchanged", 1.0, "the OUTPUT does not change (batch norm removes the scale), but the gradient "
                  "does: the same change of the output needs a 10 times larger change of W'"),
        predicted("grows", 10.0, "the gradient shrinks, it does not grow: L(10 W) = L(W) for every W, and "
                  "differentiating both sides gives 10 dL/dW' = dL/dW"),
        predicted("squared", 0.01, "one factor 1/10, not two: differentiate L(a W) = L(W) with respect to W once"),
    )
    hints = (
        "Batch norm's output does not change when its input is multiplied by a positive constant (up to eps): "
        "BN(a W u) = BN(W u).",
        "So the loss as a function of the weights satisfies L(a W) = L(W) for every W and every a > 0.",
        "Differentiate L(a W) = L(W) with respect to W (chain rule on the left) and solve for the gradient "
        "at a W.",
    )


# --------------------------------------------------------------------------------------------
# Debugging: a BatchNorm1d whose running statistics are updated with gradient tracking on
# --------------------------------------------------------------------------------------------
@register
class DebugRunningStats(BNModule):
    name = "ch3_debug_running_stats"
    title = "the fixed BatchNorm1d: running statistics updated outside autograd"
    hints = (
        "After one training step, look at bn.running_mean.requires_grad and bn.running_mean.grad_fn: a buffer "
        "that is a running average should be plain data, not a node of the graph.",
        "`self.running_mean = (1 - m) * self.running_mean + m * mean` builds a new tensor from `mean`, which "
        "carries the batch's graph; every step links the buffer to the previous step's graph.",
        "Do the update inside `with torch.no_grad():` (or from mean.detach() and var.detach()), and in place "
        "(mul_ / add_ or copy_); the output itself must still be computed from the batch statistics WITH "
        "gradient.",
    )
