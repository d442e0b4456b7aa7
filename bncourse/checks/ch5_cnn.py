"""Checks for chapter 5, batch norm in convolutional networks.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch5_spatial_forward``   ``spatial_batchnorm_forward(x, gamma, beta, eps) -> (out, cache)``,
                          x: (N, C, H, W) float64, gamma/beta: (C,)
``ch5_spatial_backward``  ``spatial_batchnorm_backward(dout, x, gamma, eps) -> (dx, dgamma, dbeta)``
``ch5_batchnorm2d``       a class ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1)``, a
                          ``torch.nn.Module`` that behaves like ``torch.nn.BatchNorm2d`` on float32 input
``ch5_fold_conv``         ``fold_bn_into_conv(weight, bias, gamma, beta, running_mean, running_var, eps)
                          -> (folded_weight, folded_bias)``, weight: (C_out, C_in, kH, kW)

The mistakes of the 1-D chapter (biased variance, eps, ...) are recognised for images too, via
:mod:`bncourse.checks.ch3_batchnorm`; this module adds the ones specific to images: per-(C, H, W)
statistics, gamma broadcast along the wrong axis, a Bessel factor with N instead of N*H*W.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .ch3_batchnorm import _NUMPY_REFERENCES, _as_numpy, record_module_steps, _backward_generic, _unpack, backward_mistakes, \
    forward_mistakes, normalize
from .core import CheckFailure, Exercise, describe_value, expect, expect_array, register

__all__ = ["SpatialForward", "SpatialBackward", "BatchNorm2dModule", "FoldConv", "spatial_mistakes",
           "fold_reference", "fold_mistakes"]

_GAMMA_AXIS = ("gamma and beta have shape (C,) and must broadcast along the channel axis 1: reshape them to "
               "(1, C, 1, 1); as (C,) they broadcast along the last axis W")


def _image_case(rng, n, c, h, w):
    loc = rng.uniform(-3, 3, size=(1, c, 1, 1))
    scale = rng.uniform(0.5, 3.0, size=(1, c, 1, 1))
    x = rng.normal(size=(n, c, h, w)) * scale + loc
    x = x + rng.normal(0.0, 1.0, size=(1, 1, h, w))       # positions differ: per-position statistics differ
    gamma = rng.uniform(0.5, 2.0, size=c) * rng.choice([-1.0, 1.0], size=c)
    beta = rng.uniform(-2.0, 2.0, size=c)
    return x, gamma, beta


# (N, C, H, W, eps); the last has W == C, so gamma broadcast along W gives a wrong *value*, not an error
_SHAPES = ((4, 3, 5, 6, 1e-5), (2, 2, 3, 3, 0.1), (6, 4, 2, 5, 1e-3), (3, 5, 4, 5, 1e-5))


def spatial_mistakes(x, gamma, beta, eps) -> dict[str, Any]:
    """Forward mistakes for (N, C, H, W): chapter 3's plus gamma/beta broadcast along the wrong axis."""
    m = forward_mistakes(x, gamma, beta, eps)
    if x.shape[3] == x.shape[1]:
        m[_GAMMA_AXIS] = lambda: gamma * normalize(x, eps) + beta     # (C,) broadcasts along W
    m["you normalized each channel over (N, H, W) but reshaped without moving the channel axis last first "
      "(x.reshape(-1, C) mixes channels); transpose to (N, H, W, C) before reshaping"] = \
        lambda: _wrong_reshape(x, gamma, beta, eps)
    return m


def _wrong_reshape(x, gamma, beta, eps):
    n, c, h, w = x.shape
    rows = x.reshape(-1, c)
    out = normalize(rows, eps, axes=(0,)) * gamma + beta
    return out.reshape(x.shape)


def _broadcast_hint(e: Exception) -> None:
    if isinstance(e, ValueError) and "broadcast" in str(e):
        raise CheckFailure(f"{_GAMMA_AXIS} (NumPy said: {e})") from None


@register
class SpatialForward(Exercise):
    name = "ch5_spatial_forward"
    title = "spatial batch norm forward pass, x of shape (N, C, H, W)"
    references = _NUMPY_REFERENCES

    def cases(self, rng):
        out = []
        for n, c, h, w, eps in _SHAPES:
            x, gamma, beta = _image_case(rng, n, c, h, w)
            out.append({"x": x, "gamma": gamma, "beta": beta, "eps": eps})
        return out

    def run(self, fn, case):
        try:
            ret = fn(case["x"], case["gamma"], case["beta"], case["eps"])
        except ValueError as e:
            _broadcast_hint(e)
            raise
        out, _cache = _unpack(ret, "spatial_batchnorm_forward", ("out", "cache"))
        return {"out": out}

    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_forward
        x, gamma, beta, eps = case["x"], case["gamma"], case["beta"], case["eps"]
        want, _ = batchnorm_forward(x, gamma, beta, eps)
        expect_array("out", result["out"], want, rtol=1e-6, atol=1e-8, mistakes=spatial_mistakes(x, gamma, beta, eps))


@register
class SpatialBackward(Exercise):
    name = "ch5_spatial_backward"
    title = "spatial batch norm backward pass, closed form, x of shape (N, C, H, W)"
    references = _NUMPY_REFERENCES

    def cases(self, rng):
        out = []
        for n, c, h, w, eps in _SHAPES:
            x, gamma, _ = _image_case(rng, n, c, h, w)
            out.append({"dout": rng.normal(size=x.shape), "x": x, "gamma": gamma, "eps": eps})
        return out

    def run(self, fn, case):
        try:
            ret = fn(case["dout"], case["x"], case["gamma"], case["eps"])
        except ValueError as e:
            _broadcast_hint(e)
            raise
        dx, dgamma, dbeta = _unpack(ret, "spatial_batchnorm_backward", ("dx", "dgamma", "dbeta"))
        return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}

    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_backward, batchnorm_forward
        dout, x, gamma, eps = case["dout"], case["x"], case["gamma"], case["eps"]
        _, cache = batchnorm_forward(x, gamma, np.zeros_like(gamma), eps)
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        mistakes = backward_mistakes(dout, x, gamma, eps)
        xh = normalize(x, eps)
        mistakes["dgamma"]["dgamma is summed over the batch only (axis=0): gamma is shared by every position "
                           "too, so sum dout * x_hat over (N, H, W), axis=(0, 2, 3)"] = lambda: (dout * xh).sum(axis=0)
        mistakes["dbeta"]["dbeta is summed over the batch only (axis=0): beta is shared by every position too, "
                          "so sum dout over (N, H, W), axis=(0, 2, 3)"] = lambda: dout.sum(axis=0)
        mistakes["dx"]["your dx takes the statistics per (C, H, W) position over the batch only (axis=0); "
                       "batch norm for images takes them per channel over (N, H, W)"] = \
            lambda: _backward_generic(dout, x, gamma, eps, axes=(0,))
        if x.shape[3] == x.shape[1]:
            mistakes["dx"][_GAMMA_AXIS] = lambda: _backward_generic(dout, x, np.ones_like(gamma), eps) * gamma
        expect_array("dbeta", result["dbeta"], dbeta, rtol=1e-6, atol=1e-9, mistakes=mistakes["dbeta"])
        expect_array("dgamma", result["dgamma"], dgamma, rtol=1e-6, atol=1e-9, mistakes=mistakes["dgamma"])
        expect_array("dx", result["dx"], dx, rtol=1e-6, atol=1e-9, mistakes=mistakes["dx"])


# --------------------------------------------------------------------------------------------
# BatchNorm2d module
# --------------------------------------------------------------------------------------------
_MODULE_CASES = ((3, 4, 5, 5, 1e-5, 0.1), (2, 6, 3, 4, 0.1, 0.3), (4, 2, 2, 3, 1e-3, 0.1))


@register
class BatchNorm2dModule(Exercise):
    name = "ch5_batchnorm2d"
    title = "a BatchNorm2d module, drop-in for torch.nn.BatchNorm2d"
    references = _NUMPY_REFERENCES

    def cases(self, rng):
        out = []
        for c, n, h, w, eps, momentum in _MODULE_CASES:
            x1, gamma, beta = _image_case(rng, n, c, h, w)
            x2, _, _ = _image_case(rng, n + 1, c, h, w)
            x3, _, _ = _image_case(rng, 2, c, h, w)
            out.append({"num_features": c, "eps": eps, "momentum": momentum,
                        "x1": x1.astype(np.float32), "x2": x2.astype(np.float32), "x3": x3.astype(np.float32),
                        "gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32),
                        "dout": rng.normal(size=x1.shape).astype(np.float32)})
        return out

    def run(self, fn, case):
        import torch

        c = case["num_features"]
        m = fn(c, eps=case["eps"], momentum=case["momentum"])
        if not isinstance(m, torch.nn.Module):
            raise CheckFailure("BatchNorm2d(...) must create a torch.nn.Module: subclass nn.Module and call "
                               "super().__init__() first")
        params = dict(m.named_parameters())
        if "weight" not in params or "bias" not in params:
            raise CheckFailure("the module needs parameters named weight (gamma) and bias (beta), registered as "
                               f"nn.Parameter; it has {sorted(params) or 'none'}")
        res: dict[str, Any] = {"weight_shape": np.asarray(tuple(m.weight.shape), dtype=np.int64)}
        res["running_mean_0"] = _as_numpy(getattr(m, "running_mean", None))
        res["running_var_0"] = _as_numpy(getattr(m, "running_var", None))
        if tuple(m.weight.shape) == (c,):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(case["gamma"]))
                m.bias.copy_(torch.from_numpy(case["beta"]))
        m.train()
        x1 = torch.from_numpy(case["x1"]).requires_grad_(True)
        try:
            y1 = m(x1)
        except RuntimeError as e:
            if "size" in str(e) or "broadcast" in str(e):
                raise CheckFailure(f"{_GAMMA_AXIS} (PyTorch said: {e})") from None
            raise
        if not isinstance(y1, torch.Tensor):
            raise CheckFailure(f"forward must return a torch.Tensor; it returned {describe_value(y1)}")
        return record_module_steps(m, x1, y1, case, res, affine=True)

    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_backward, batchnorm_forward, batchnorm_forward_inference
        from bncourse.running_stats import update_running_stats

        c, eps, mom = case["num_features"], case["eps"], case["momentum"]
        x1, x2, x3 = (case[k].astype(np.float64) for k in ("x1", "x2", "x3"))
        gamma, beta = case["gamma"].astype(np.float64), case["beta"].astype(np.float64)
        dout = case["dout"].astype(np.float64)
        tol = {"rtol": 1e-4, "atol": 1e-4, "dtype": np.float32}
        shape = tuple(int(v) for v in result["weight_shape"])
        expect(shape == (c,),
               f"weight (gamma) has shape {shape}; batch norm for images has one gamma and one beta per channel, "
               f"shape (C,) = ({c},), not one per (C, H, W) position")
        out1, cache = batchnorm_forward(x1, gamma, beta, eps)
        expect_array("the output in training mode", result["out1"], out1, **tol,
                     mistakes=spatial_mistakes(x1, gamma, beta, eps))
        if result.get("dx1") is None:
            raise CheckFailure("x.grad is None after out.backward(): compute the output with torch operations on "
                               "the input so autograd can differentiate it (no .numpy(), no .detach())")
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        bm = backward_mistakes(dout, x1, gamma, eps)
        expect_array("x.grad (the gradient through your module)", result["dx1"], dx, **tol, mistakes=bm["dx"])
        expect_array("weight.grad", result["dgamma"], dgamma, **tol, mistakes=bm["dgamma"])
        expect_array("bias.grad", result["dbeta"], dbeta, **tol, mistakes=bm["dbeta"])

        for k, want0 in (("running_mean_0", 0.0), ("running_var_0", 1.0)):
            if result[k] is None:
                raise CheckFailure(f"the module has no {k[:-2]}: register it with self.register_buffer('{k[:-2]}', ...)")
            expect_array(f"the initial {k[:-2]}", result[k], np.full(c, want0), **tol,
                         mistakes={"running_mean must start at 0 and running_var at 1": np.full(c, 1.0 - want0)})
        rm, rv = np.zeros(c), np.ones(c)
        for step, x in ((1, x1), (2, x2)):
            n, _, h, w = x.shape
            m_values = n * h * w
            bmean, bvar = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
            want_m, want_v = update_running_stats(rm, rv, bmean, bvar, m_values, mom)
            wrong_bessel = (1 - mom) * rv + mom * bvar * n / (n - 1)
            reversed_v = mom * rv + (1 - mom) * bvar * m_values / (m_values - 1)
            after = "the first" if step == 1 else "the second"
            expect_array(f"running_mean after {after} training batch", result[f"running_mean_{step}"], want_m, **tol,
                         mistakes={"the momentum convention is reversed: PyTorch's momentum weights the NEW batch "
                                   "value, running = (1 - momentum) * running + momentum * batch":
                                   mom * rm + (1 - mom) * bmean,
                                   "the running mean was not updated in training mode": rm})
            expect_array(f"running_var after {after} training batch", result[f"running_var_{step}"], want_v, **tol,
                         mistakes={"the Bessel correction uses N / (N - 1), but each channel's variance is taken "
                                   "over m = N * H * W values: use m / (m - 1)": wrong_bessel,
                                   "running_var is stored without Bessel's correction m / (m - 1), m = N * H * W":
                                   (1 - mom) * rv + mom * bvar,
                                   "the momentum convention is reversed: PyTorch's momentum weights the NEW batch "
                                   "value, running = (1 - momentum) * running + momentum * batch": reversed_v,
                                   "the running variance was not updated in training mode": rv})
            rm, rv = want_m, want_v
        expect_array("running_mean after a batch in eval mode", result["running_mean_3"], rm, **tol,
                     mistakes={"running statistics were updated in eval mode; only training mode updates them":
                               update_running_stats(rm, rv, x3.mean(axis=(0, 2, 3)), x3.var(axis=(0, 2, 3)),
                                                    x3.size // c, mom)[0]})
        want3 = batchnorm_forward_inference(x3, gamma, beta, rm, rv, eps)
        expect_array("the output in eval mode", result["out3"], want3, **tol, mistakes={
            "eval mode normalized with the batch statistics; it must use running_mean and running_var":
                lambda: batchnorm_forward(x3, gamma, beta, eps)[0],
        })


# --------------------------------------------------------------------------------------------
# Folding BN into a convolution
# --------------------------------------------------------------------------------------------
def fold_reference(weight, bias, gamma, beta, mean, var, eps):
    """W' = a[k] * W[k], b' = a * (b - mean) + beta with a = gamma / sqrt(var + eps)."""
    a = gamma / np.sqrt(var + eps)                       # (C_out,)
    return weight * a.reshape(-1, 1, 1, 1), a * (bias - mean) + beta


def fold_mistakes(weight, bias, gamma, beta, mean, var, eps) -> dict[str, dict[str, Any]]:
    a = gamma / np.sqrt(var + eps)
    w_ok, b_ok = fold_reference(weight, bias, gamma, beta, mean, var, eps)
    w = {
        "the kernel is scaled along the input-channel axis; scale output channel k (axis 0) by a[k]: "
        "weight * a.reshape(-1, 1, 1, 1)": lambda: weight * a.reshape(1, -1, 1, 1),
        "the kernel is scaled by gamma / (running_var + eps); use the standard deviation, "
        "gamma / sqrt(running_var + eps)": lambda: weight * (gamma / (var + eps)).reshape(-1, 1, 1, 1),
        "the kernel is scaled by gamma only; BN also divides by sqrt(running_var + eps)":
            lambda: weight * gamma.reshape(-1, 1, 1, 1),
        "eps is missing: a = gamma / sqrt(running_var + eps)":
            lambda: weight * (gamma / np.sqrt(var)).reshape(-1, 1, 1, 1),
    }
    b = {
        "the folded bias forgets the running mean: b' = a * (bias - running_mean) + beta": lambda: a * bias + beta,
        "the old conv bias is not scaled: b' = a * (bias - running_mean) + beta, the whole (bias - mean) "
        "is multiplied by a": lambda: bias - a * mean + beta,
        "the running mean is subtracted without scaling: b' = a * (bias - running_mean) + beta":
            lambda: a * bias - mean + beta,
        "beta is missing from the folded bias: b' = a * (bias - running_mean) + beta": lambda: a * (bias - mean),
        "eps is missing: a = gamma / sqrt(running_var + eps)":
            lambda: (gamma / np.sqrt(var)) * (bias - mean) + beta,
    }
    _ = (w_ok, b_ok)
    return {"weight": w, "bias": b}


@register
class FoldConv(Exercise):
    name = "ch5_fold_conv"
    title = "fold an inference-mode BN layer into the convolution before it"
    references = ("bncourse.folding:fold_bn_into_conv", "bncourse.folding:bn_affine",
                  "bncourse.folding:affine_from_stats", "bncourse.folding:fold_sequential")

    def cases(self, rng):
        out = []
        for c_out, c_in, k, eps in ((3, 3, 3, 1e-5), (4, 2, 1, 0.1), (5, 1, 5, 1e-3)):   # first: C_out == C_in
            out.append({
                "weight": rng.normal(size=(c_out, c_in, k, k)), "bias": rng.normal(size=c_out),
                "gamma": rng.uniform(0.5, 2.0, size=c_out) * rng.choice([-1.0, 1.0], size=c_out),
                "beta": rng.normal(size=c_out), "running_mean": rng.normal(size=c_out) * 2,
                "running_var": rng.uniform(0.05, 4.0, size=c_out), "eps": eps})
        return out

    def run(self, fn, case):
        try:
            ret = fn(case["weight"], case["bias"], case["gamma"], case["beta"], case["running_mean"],
                     case["running_var"], case["eps"])
        except ValueError as e:
            if "broadcast" in str(e):
                raise CheckFailure("the per-channel factor a = gamma / sqrt(running_var + eps) has shape (C_out,); "
                                   "scale output channel k (axis 0 of the kernel): weight * a.reshape(-1, 1, 1, 1) "
                                   f"(NumPy said: {e})") from None
            raise
        w, b = _unpack(ret, "fold_bn_into_conv", ("folded_weight", "folded_bias"))
        return {"weight": w, "bias": b}

    def verify(self, case, result):
        args = (case["weight"], case["bias"], case["gamma"], case["beta"], case["running_mean"],
                case["running_var"], case["eps"])
        w, b = fold_reference(*args)
        mistakes = fold_mistakes(*args)
        expect_array("folded_weight", result["weight"], w, rtol=1e-6, atol=1e-9, mistakes=mistakes["weight"])
        expect_array("folded_bias", result["bias"], b, rtol=1e-6, atol=1e-9, mistakes=mistakes["bias"])
