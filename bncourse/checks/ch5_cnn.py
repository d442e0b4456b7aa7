"""Checks for chapter 5, batch norm in convolutional networks.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch5_spatial_forward``   ``spatial_batchnorm_forward(x, gamma, beta, eps) -> (out, cache)``,
                          x: (N, C, H, W) float64, gamma/beta: (C,)
``ch5_spatial_backward``  ``spatial_batchnorm_backward(dout, x, gamma, eps) -> (dx, dgamma, dbeta)``
``ch5_batchnorm2d``       a class ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1)``, a
                          ``torch.nn.Module`` that behaves like ``torch.nn.BatchNorm2d`` on float32 input,
                          ``num_batches_tracked`` and ``momentum=None`` (the cumulative average) included
``ch5_fold_conv``         ``fold_bn_into_conv(weight, bias, gamma, beta, running_mean, running_var, eps)
                          -> (folded_weight, folded_bias)``, weight: (C_out, C_in, kH, kW)
``ch5_eval_backward``     ``eval_batchnorm_backward(dout, x, gamma, running_mean, running_var, eps)
                          -> (dx, dgamma, dbeta)``: the backward pass of BN in eval mode (frozen statistics,
                          as when fine-tuning with BN frozen), a derivation the chapter does not show
``ch5_predict_bias``      a number committed before the experiment: how much the output of a training-mode
                          BN changes when the convolution before it adds 5 to its bias
``ch5_debug_bn2d``        a ``BatchNorm2d`` whose planted bug (the running update recorded by autograd) the
                          student fixes; graded by the same verifier as ``ch5_batchnorm2d`` (without
                          ``num_batches_tracked`` and ``momentum=None``, which the planted layer does not have)

The mistakes of the 1-D chapter (biased variance, eps, ...) are recognised for images too: the forward, backward
and module mistakes and the module verifier are :mod:`bncourse.checks.bn_module`'s, shared with chapter 3's
``bn_module`` (so both give the same feedback: gradients, running statistics, Bessel's factor with m = N*H*W,
``momentum=None``, buffers that carry autograd history, ``.view`` on an input that is not contiguous, inputs changed
in place). This module adds the mistakes specific to images: per-(C, H, W) statistics, a reshape that mixes
channels, sums over the batch axis only, the count N instead of N*H*W.
"""
from __future__ import annotations

import numpy as np

from . import bn_module as bn
from .shared import unpack
from .core import CheckFailure, Exercise, Mistake, expect_array, expect_inputs_unchanged, register
from .predict import PredictNumber

__all__ = ["SpatialForward", "SpatialBackward", "BatchNorm2dModule", "FoldConv", "EvalBackward", "PredictBias",
           "DebugBatchNorm2d", "SPATIAL_FORWARD_MISTAKES", "SPATIAL_BACKWARD_MISTAKES",
           "fold_reference", "FOLD_MISTAKES"]

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


# (N, C, H, W, eps); the first has W != C, so gamma left as (C,) raises there (run names it)
_SHAPES = ((4, 3, 5, 6, 1e-5), (2, 2, 3, 3, 0.1), (6, 4, 2, 5, 1e-3), (3, 5, 4, 5, 1e-5))


#: the training-mode forward mistakes for (N, C, H, W) input: chapter 3's (:mod:`bncourse.checks.bn_module`, in
#: their per-channel wording) and one specific to images. gamma and beta left as (C,) broadcast along W: that raises on
#: every case with W != C, and run names it (_broadcast_hint) before any case is verified, so it is no Mistake here
SPATIAL_FORWARD_MISTAKES = bn.forward_mistakes(4) + (
    Mistake("reshape_without_transpose", "you normalized each channel over (N, H, W) but reshaped without moving the "
            "channel axis last first (x.reshape(-1, C) mixes channels); transpose to (N, H, W, C) before reshaping",
            lambda c: {"out": _wrong_reshape(c["x"], c["gamma"], c["beta"], c["eps"])}),
)


def _wrong_reshape(x, gamma, beta, eps):
    n, c, h, w = x.shape
    rows = x.reshape(-1, c)
    out = bn.normalize(rows, eps, axes=(0,)) * gamma + beta
    return out.reshape(x.shape)


def _broadcast_hint(e: Exception) -> None:
    if isinstance(e, ValueError) and "broadcast" in str(e):
        raise CheckFailure(f"{_GAMMA_AXIS} (NumPy said: {e})") from None


@register
class SpatialForward(Exercise):
    name = "ch5_spatial_forward"
    title = "spatial batch norm forward pass, x of shape (N, C, H, W)"
    references = bn.NUMPY_REFERENCES
    hints = (
        "a convolution applies the same filter at every position, so BN treats every position of a channel as "
        "one more sample of that channel's feature",
        "one mean and one variance per channel, over axes (0, 2, 3), kept as shape (1, C, 1, 1) so they broadcast; "
        "gamma and beta (C,) must be reshaped to (1, C, 1, 1) as well",
        "x_hat = (x - mu) / sqrt(var + eps) with the biased variance over m = N * H * W values; out = gamma * "
        "x_hat + beta",
    )
    mistakes = SPATIAL_FORWARD_MISTAKES

    def cases(self, rng):
        out = []
        for n, c, h, w, eps in _SHAPES:
            x, gamma, beta = _image_case(rng, n, c, h, w)
            out.append({"x": x, "gamma": gamma, "beta": beta, "eps": eps})
        return out

    def run(self, fn, case):
        try:
            ret = fn(*(case[k] for k in ("x", "gamma", "beta", "eps")))
        except ValueError as e:
            _broadcast_hint(e)
            raise
        out, _cache = unpack(ret, "spatial_batchnorm_forward", ("out", "cache"))
        return {"out": out}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        from bncourse.bn_numpy import batchnorm_forward
        want, _ = batchnorm_forward(case["x"], case["gamma"], case["beta"], case["eps"])
        self.expect_outputs(case, result, {"out": want}, rtol=1e-6, atol=1e-8)


def _dx_with_count(dout, x, gamma, eps, m):
    """The closed-form dx with sums over (N, H, W) but the count m given (the right one is N * H * W)."""
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    xh = (x - mu) / np.sqrt(var + eps)
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dgamma = (dout * xh).sum(axis=(0, 2, 3), keepdims=True)
    g = gamma.reshape(1, -1, 1, 1)
    return g / (m * np.sqrt(var + eps)) * (m * dout - dbeta - xh * dgamma)


def _bwd_args(case):
    return case["dout"], case["x"], case["gamma"], case["eps"]


#: the backward mistakes for (N, C, H, W): chapter 3's (:mod:`bncourse.checks.bn_module`) and the ones specific to
#: images (statistics per position, sums over the batch axis only, the count N instead of N * H * W)
SPATIAL_BACKWARD_MISTAKES = bn.backward_mistakes(4) + bn.backward_scale_mistakes(4) + (
    Mistake("per_position", "your dx takes the statistics per (C, H, W) position over the batch only (axis=0); batch "
            "norm for images takes them per channel over (N, H, W)",
            lambda c: {"dx": bn.backward_generic(*_bwd_args(c), axes=(0,))}),
    Mistake("count_n", "your dx uses the count m = N; each channel's statistics are taken over m = N * H * W values, "
            "so the closed form needs m = N * H * W",
            lambda c: {"dx": _dx_with_count(*_bwd_args(c), c["x"].shape[0])}),
    Mistake("dgamma_batch_only", "dgamma is summed over the batch only (axis=0): gamma is shared by every position "
            "too, so sum dout * x_hat over (N, H, W), axis=(0, 2, 3)",
            lambda c: {"dgamma": (c["dout"] * bn.normalize(c["x"], c["eps"])).sum(axis=0)}),
    Mistake("dbeta_batch_only", "dbeta is summed over the batch only (axis=0): beta is shared by every position too, "
            "so sum dout over (N, H, W), axis=(0, 2, 3)", lambda c: {"dbeta": c["dout"].sum(axis=0)}),
)


@register
class SpatialBackward(Exercise):
    name = "ch5_spatial_backward"
    title = "spatial batch norm backward pass, closed form, x of shape (N, C, H, W)"
    references = bn.NUMPY_REFERENCES
    hints = (
        "the 1-D closed form carries over once you see that each channel is a feature with m = N * H * W samples",
        "every sum over the batch becomes a sum over axes (0, 2, 3); dgamma and dbeta are (C,), dx is (N, C, H, W); "
        "recompute mu, var and x_hat from x with the eps you are given",
        "dx = gamma / (m * sqrt(var + eps)) * (m * dout - dbeta - x_hat * dgamma), broadcast per channel, with "
        "m = N * H * W (not N)",
    )
    mistakes = SPATIAL_BACKWARD_MISTAKES

    def cases(self, rng):
        out = []
        for n, c, h, w, eps in _SHAPES:
            x, gamma, _ = _image_case(rng, n, c, h, w)
            out.append({"dout": rng.normal(size=x.shape), "x": x, "gamma": gamma, "eps": eps})
        return out

    def run(self, fn, case):
        try:
            ret = fn(*(case[k] for k in ("dout", "x", "gamma", "eps")))
        except ValueError as e:
            _broadcast_hint(e)
            raise
        dx, dgamma, dbeta = unpack(ret, "spatial_batchnorm_backward", ("dx", "dgamma", "dbeta"))
        return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        from bncourse.bn_numpy import batchnorm_backward, batchnorm_forward
        dout, x, gamma, eps = case["dout"], case["x"], case["gamma"], case["eps"]
        _, cache = batchnorm_forward(x, gamma, np.zeros_like(gamma), eps)
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        self.expect_outputs(case, result, {"dbeta": dbeta, "dgamma": dgamma, "dx": dx}, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------
# BatchNorm2d module: chapter 3's module verifier (bncourse.checks.bn_module), on (N, C, H, W)
# --------------------------------------------------------------------------------------------
#: (C, N, H, W, eps, momentum); momentum=None is PyTorch's cumulative average, weight 1 / num_batches_tracked
_MODULE_CASES = ((3, 4, 5, 5, 1e-5, 0.1), (2, 6, 3, 4, 0.1, 0.3), (4, 2, 2, 3, 1e-3, None))
#: the debugging exercise keeps the planted layer's constructor: a momentum, no num_batches_tracked
_DEBUG_CASES = ((3, 4, 5, 5, 1e-5, 0.1), (2, 6, 3, 4, 0.1, 0.3), (4, 2, 2, 3, 1e-3, 0.1))


def _module_cases(rng, shapes) -> list[dict]:
    """float32 cases for :class:`bncourse.checks.bn_module.BNModuleExercise`: two training batches, an eval batch."""
    out = []
    for i, (c, n, h, w, eps, momentum) in enumerate(shapes):
        x1, gamma, beta = _image_case(rng, n, c, h, w)
        x2, _, _ = _image_case(rng, n + 1, c, h, w)
        x3, _, _ = _image_case(rng, 2, c, h, w)
        if i == 1:
            # a channel with a small spread (std 0.03) in the case with eps = 0.1: there eps = 1e-5 and no eps at
            # all normalize visibly differently (elsewhere both are within float32's tolerance of each other)
            for x in (x1, x2):
                x[:, 0] = x[:, 0].mean() + 0.03 * rng.normal(size=x[:, 0].shape)
        out.append({"num_features": c, "eps": eps, "momentum": momentum,
                    "x1": x1.astype(np.float32), "x2": x2.astype(np.float32), "x3": x3.astype(np.float32),
                    "gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32),
                    "dout": rng.normal(size=x1.shape).astype(np.float32)})
    return out


_MOMENTUM_NONE = ("with momentum=None your module computes with None: PyTorch then keeps the plain average of all "
                  "training batches so far, so the weight of the new batch is w = 1 / num_batches_tracked (count the "
                  "batch first); running = (1 - w) * running + w * batch_stat")

#: the module mistakes that can occur with these cases (every case keeps running statistics, affine=True); the
#: exercise has a momentum=None case, the debugging exercise does not
_MODULE_MISTAKES = tuple(m for m in bn.module_mistakes(4, cumulative=True) if m.id != "no_running_stats_in_eval")
_DEBUG_MISTAKES = tuple(m for m in bn.module_mistakes(4) if m.id != "no_running_stats_in_eval")


@register
class BatchNorm2dModule(bn.BNModuleExercise):
    name = "ch5_batchnorm2d"
    title = "a BatchNorm2d module, drop-in for torch.nn.BatchNorm2d"
    references = bn.NUMPY_REFERENCES
    hints = (
        "a module owns parameters (weight, bias: trained by backprop) and buffers (running_mean, running_var, "
        "num_batches_tracked: updated by counting and averaging); self.training says which statistics to normalize "
        "with",
        "in training mode take mean and biased variance over dims (0, 2, 3) with torch operations, shape (C,), "
        "and reshape to (1, C, 1, 1) to broadcast; use reshape, not view (the input may not be contiguous)",
        "inside torch.no_grad(): add 1 to num_batches_tracked, then running = (1 - w) * running + w * stat with "
        "w = momentum, or w = 1 / num_batches_tracked when momentum is None, storing the variance times m / (m - 1), "
        "m = N * H * W; in eval mode normalize with the buffers and update nothing",
    )
    ndim = 4
    module_name = "BatchNorm2d"
    count_batches = True
    mistakes = _MODULE_MISTAKES

    def cases(self, rng):
        return _module_cases(rng, _MODULE_CASES)

    def run(self, fn, case):
        try:
            return super().run(fn, case)
        except TypeError as e:
            if case["momentum"] is None and "NoneType" in str(e):
                raise CheckFailure(_MOMENTUM_NONE + f" (Python said: {e})") from None
            raise


# --------------------------------------------------------------------------------------------
# Folding BN into a convolution
# --------------------------------------------------------------------------------------------
def fold_reference(weight, bias, gamma, beta, mean, var, eps):
    """W' = a[k] * W[k], b' = a * (b - mean) + beta with a = gamma / sqrt(var + eps)."""
    a = gamma / np.sqrt(var + eps)                       # (C_out,)
    return weight * a.reshape(-1, 1, 1, 1), a * (bias - mean) + beta


def _fold_args(case):
    return tuple(case[k] for k in ("weight", "bias", "gamma", "beta", "running_mean", "running_var", "eps"))


def _fold_w(id_, message, scale_of):
    """A kernel mistake: weight scaled per output channel by scale_of(gamma, var, eps)."""
    def wrong(case):
        w, _, g, _, _, v, eps = _fold_args(case)
        return {"weight": w * scale_of(g, v, eps).reshape(-1, 1, 1, 1)}
    return Mistake(id_, message, wrong)


def _fold_b(id_, message, bias_of):
    """A folded-bias mistake: bias_of(a, bias, beta, mean, var, gamma)."""
    def wrong(case):
        _, bias, g, be, m, v, eps = _fold_args(case)
        return {"bias": bias_of(g / np.sqrt(v + eps), bias, be, m, v, g)}
    return Mistake(id_, message, wrong)


#: the folding mistakes (kernel, then bias); scaling along the input-channel axis raises on the cases with
#: C_in != C_out, which run names before any case is verified
FOLD_MISTAKES = (
    _fold_w("var_not_std", "the kernel is scaled by gamma / (running_var + eps); use the standard deviation, "
            "gamma / sqrt(running_var + eps)", lambda g, v, e: g / (v + e)),
    _fold_w("gamma_only", "the kernel is scaled by gamma only; BN also divides by sqrt(running_var + eps)",
            lambda g, v, e: g),
    _fold_w("w_no_eps", "eps is missing: a = gamma / sqrt(running_var + eps)", lambda g, v, e: g / np.sqrt(v)),
    _fold_w("w_default_eps", "the kernel ignores the eps it is given and uses 1e-5 (a default argument or a constant)",
            lambda g, v, e: g / np.sqrt(v + 1e-5)),
    _fold_b("forgets_mean", "the folded bias forgets the running mean: b' = a * (bias - running_mean) + beta",
            lambda a, b, be, m, v, g: a * b + be),
    _fold_b("bias_unscaled", "the old conv bias is not scaled: b' = a * (bias - running_mean) + beta, the whole "
            "(bias - mean) is multiplied by a", lambda a, b, be, m, v, g: b - a * m + be),
    _fold_b("mean_unscaled", "the running mean is subtracted without scaling: b' = a * (bias - running_mean) + beta",
            lambda a, b, be, m, v, g: a * b - m + be),
    _fold_b("no_beta", "beta is missing from the folded bias: b' = a * (bias - running_mean) + beta",
            lambda a, b, be, m, v, g: a * (b - m)),
    _fold_b("b_no_eps", "eps is missing: a = gamma / sqrt(running_var + eps)",
            lambda a, b, be, m, v, g: (g / np.sqrt(v)) * (b - m) + be),
)


@register
class FoldConv(Exercise):
    name = "ch5_fold_conv"
    title = "fold an inference-mode BN layer into the convolution before it"
    references = ("bncourse.folding:fold_bn_into_conv", "bncourse.folding:bn_affine",
                  "bncourse.folding:affine_from_stats", "bncourse.folding:fold_sequential")
    hints = (
        "in eval mode BN is a per-channel affine map a * y + b applied to the convolution's output channels; a "
        "convolution followed by a per-output-channel affine map is again a convolution",
        "a = gamma / sqrt(running_var + eps) has shape (C_out,); output channel k of the convolution is made by "
        "the kernel slice weight[k], shape (C_in, kH, kW), plus bias[k]",
        "folded_weight = weight times a reshaped to (C_out, 1, 1, 1); folded_bias = a * (bias - running_mean) + beta",
    )
    mistakes = FOLD_MISTAKES

    def cases(self, rng):
        out = []
        for c_out, c_in, k, eps in ((3, 3, 3, 1e-5), (4, 2, 1, 0.1), (5, 1, 5, 1e-3), (3, 2, 3, 1e-5)):
            # the first has C_out == C_in; the last a channel that was constant in training (running_var 0)
            out.append({
                "weight": rng.normal(size=(c_out, c_in, k, k)), "bias": rng.normal(size=c_out),
                "gamma": rng.uniform(0.5, 2.0, size=c_out) * rng.choice([-1.0, 1.0], size=c_out),
                "beta": rng.normal(size=c_out), "running_mean": rng.normal(size=c_out) * 2,
                "running_var": rng.uniform(0.05, 4.0, size=c_out) * (np.arange(c_out) > 0 if len(out) == 3 else 1.0),
                "eps": eps})
        return out

    def run(self, fn, case):
        try:
            ret = fn(*(case[k] for k in ("weight", "bias", "gamma", "beta", "running_mean",
                                                                   "running_var", "eps")))
        except ValueError as e:
            if "broadcast" in str(e):
                raise CheckFailure("the per-channel factor a = gamma / sqrt(running_var + eps) has shape (C_out,); "
                                   "scale output channel k (axis 0 of the kernel): weight * a.reshape(-1, 1, 1, 1) "
                                   f"(NumPy said: {e})") from None
            raise
        w, b = unpack(ret, "fold_bn_into_conv", ("folded_weight", "folded_bias"))
        return {"weight": w, "bias": b}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        with np.errstate(divide="ignore", invalid="ignore"):        # a mistake without eps divides by sqrt(0)
            self._verify(case, result)

    def _verify(self, case, result):
        w, b = fold_reference(*_fold_args(case))
        for name, output, want in (("folded_weight", "weight", w), ("folded_bias", "bias", b)):
            expect_array(name, result[output], want, rtol=1e-6, atol=1e-9, mistakes=self.mistakes, case=case,
                         output=output)


# --------------------------------------------------------------------------------------------
# Backward pass in eval mode (a derivation the chapter does not show)
# --------------------------------------------------------------------------------------------
def eval_backward_reference(dout, x, gamma, running_mean, running_var, eps):
    """Frozen statistics: out = gamma * (x - rm) / sqrt(rv + eps) + beta is affine in x, per channel."""
    shape = (1, -1, 1, 1)
    inv_std = 1.0 / np.sqrt(running_var + eps)                         # (C,)
    x_hat = (x - running_mean.reshape(shape)) * inv_std.reshape(shape)  # (N, C, H, W)
    dx = dout * (gamma * inv_std).reshape(shape)
    return dx, (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


def _eval_args(case):
    return tuple(case[k] for k in ("dout", "x", "gamma", "running_mean", "running_var", "eps"))


_C = (1, -1, 1, 1)


def _eval_dgamma(id_, message, grad_of):
    """A dgamma mistake: grad_of(dout, x, running_mean (1, C, 1, 1), running_var (1, C, 1, 1), eps)."""
    def wrong(case):
        dout, x, _, rm, rv, eps = _eval_args(case)
        return {"dgamma": grad_of(dout, x, rm.reshape(_C), rv.reshape(_C), eps)}
    return Mistake(id_, message, wrong)


def _eval_dx(id_, message, dx_of):
    """A dx mistake: dx_of(dout, x, gamma, running_mean, running_var, eps), all as given."""
    return Mistake(id_, message, lambda c: {"dx": dx_of(*_eval_args(c))})


EVAL_BACKWARD_MISTAKES = (
    Mistake("swapped", "dgamma and dbeta are swapped: dgamma = sum(dout * x_hat), dbeta = sum(dout)",
            lambda c: dict(zip(("dbeta", "dgamma"), eval_backward_reference(*_eval_args(c))[1:]))),
    Mistake("dbeta_batch_only", "dbeta is summed over the batch only (axis=0): beta is shared by every position too, "
            "so sum over (N, H, W), axis=(0, 2, 3)", lambda c: {"dbeta": c["dout"].sum(axis=0)}),
    _eval_dgamma("dgamma_batch_stats", "dgamma uses x_hat normalized with the BATCH statistics; in eval mode the "
                 "forward pass normalized with running_mean and running_var, so x_hat = (x - running_mean) / "
                 "sqrt(running_var + eps)", lambda d, x, rm, rv, e: (d * bn.normalize(x, e)).sum(axis=(0, 2, 3))),
    _eval_dgamma("dgamma_batch_only", "dgamma is summed over the batch only (axis=0): sum over (N, H, W), axis=(0, 2, "
                 "3)", lambda d, x, rm, rv, e: (d * (x - rm) / np.sqrt(rv + e)).sum(axis=0)),
    _eval_dgamma("dgamma_uses_x", "dgamma uses x instead of x_hat: dgamma = sum(dout * x_hat)",
                 lambda d, x, rm, rv, e: (d * x).sum(axis=(0, 2, 3))),
    _eval_dgamma("dgamma_no_eps", "eps is missing from x_hat: x_hat = (x - running_mean) / sqrt(running_var + eps)",
                 lambda d, x, rm, rv, e: (d * (x - rm) / np.sqrt(rv)).sum(axis=(0, 2, 3))),
    _eval_dgamma("dgamma_default_eps", "dgamma uses an x_hat computed with eps = 1e-5 instead of the eps it is given",
                 lambda d, x, rm, rv, e: (d * (x - rm) / np.sqrt(rv + 1e-5)).sum(axis=(0, 2, 3))),
    _eval_dx("training_backward", "this is the training-mode backward (gradients through the batch mean and "
             "variance); in eval mode the statistics are constants, so dx = dout * gamma / sqrt(running_var + eps)",
             lambda d, x, g, rm, rv, e: bn.backward_generic(d, x, g, e)),
    _eval_dx("training_form_running", "this is the training-mode backward evaluated with the running statistics; in "
             "eval mode no gradient flows through any statistic: dx = dout * gamma / sqrt(running_var + eps)",
             lambda d, x, g, rm, rv, e: _train_form_with(d, x, g, rm, rv, e)),
    _eval_dx("dx_no_gamma", "dx forgets the factor gamma: dx = dout * gamma / sqrt(running_var + eps)",
             lambda d, x, g, rm, rv, e: d / np.sqrt(rv + e).reshape(_C)),
    _eval_dx("dx_var_not_std", "dx divides by the variance instead of the standard deviation: dx = dout * gamma / "
             "sqrt(running_var + eps)", lambda d, x, g, rm, rv, e: d * (g / (rv + e)).reshape(_C)),
    _eval_dx("dx_no_eps", "eps is missing: dx = dout * gamma / sqrt(running_var + eps)",
             lambda d, x, g, rm, rv, e: d * (g / np.sqrt(rv)).reshape(_C)),
    _eval_dx("dx_default_eps", "your dx ignores the eps it is given and uses 1e-5 (a default argument or a constant)",
             lambda d, x, g, rm, rv, e: d * (g / np.sqrt(rv + 1e-5)).reshape(_C)),
)


@register
class EvalBackward(Exercise):
    name = "ch5_eval_backward"
    title = "batch norm backward pass in eval mode (frozen running statistics), x of shape (N, C, H, W)"
    references = bn.NUMPY_REFERENCES
    hints = (
        "in eval mode the mean and variance are constants (the running statistics), not functions of the batch: "
        "per channel, BN is the affine map a * x + b, and no gradient flows through any statistic",
        "dx has the shape of x, (N, C, H, W); dgamma and dbeta are (C,), sums over (0, 2, 3); reshape per-channel "
        "values to (1, C, 1, 1)",
        "dx = dout * gamma / sqrt(running_var + eps); dgamma = sum of dout * (x - running_mean) / sqrt(running_var "
        "+ eps); dbeta = sum of dout",
    )
    mistakes = EVAL_BACKWARD_MISTAKES

    def cases(self, rng):
        out = []
        for n, c, h, w, eps in _SHAPES:
            x, gamma, _ = _image_case(rng, n, c, h, w)
            out.append({"dout": rng.normal(size=x.shape), "x": x, "gamma": gamma,
                        "running_mean": x.mean(axis=(0, 2, 3)) + rng.normal(0.0, 1.0, size=c),   # not the batch's
                        "running_var": x.var(axis=(0, 2, 3)) * rng.uniform(0.3, 3.0, size=c), "eps": eps})
        return out

    def run(self, fn, case):
        try:
            ret = fn(*(case[k] for k in ("dout", "x", "gamma", "running_mean",
                                                                   "running_var", "eps")))
        except ValueError as e:
            _broadcast_hint(e)
            raise
        dx, dgamma, dbeta = unpack(ret, "eval_batchnorm_backward", ("dx", "dgamma", "dbeta"))
        return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        dx, dgamma, dbeta = eval_backward_reference(*_eval_args(case))
        self.expect_outputs(case, result, {"dbeta": dbeta, "dgamma": dgamma, "dx": dx}, rtol=1e-6, atol=1e-9)


def _train_form_with(dout, x, gamma, rm, rv, eps):
    shape = (1, -1, 1, 1)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    inv = 1.0 / np.sqrt(rv + eps).reshape(shape)
    xh = (x - rm.reshape(shape)) * inv
    db = dout.sum(axis=(0, 2, 3)).reshape(shape)
    dg = (dout * xh).sum(axis=(0, 2, 3)).reshape(shape)
    return gamma.reshape(shape) * inv / m * (m * dout - db - xh * dg)


# --------------------------------------------------------------------------------------------
# Predict, then run: the conv bias before a training-mode BN
# --------------------------------------------------------------------------------------------
@register
class PredictBias(PredictNumber):
    name = "ch5_predict_bias"
    title = "predict: how much a training-mode BN output changes when the conv before it adds 5 to its bias"
    quantity = "the predicted largest change"
    truth = 0.0
    tolerance = 0.01
    near_misses = {
        "BN subtracts each channel's batch mean, and adding 5 to every value of a channel moves that mean by "
        "exactly 5 too; the variance does not move at all": (4.0, 6.0),
        "gamma multiplies x_hat, but look at x_hat first: (x + 5) - mean(x + 5) = x - mean(x)": (0.5, 15.0),
    }
    hints = (
        "follow the constant through the layer: what does subtracting the batch mean do to a constant added to "
        "every value of a channel?",
        "the bias adds the same number at every (n, h, w) of its channel, which is exactly the set of values "
        "BN takes the channel's mean over",
        "mean(x + b) = mean(x) + b and var(x + b) = var(x), per channel",
    )


# --------------------------------------------------------------------------------------------
# Debugging: a BatchNorm2d whose running update is recorded by autograd
# --------------------------------------------------------------------------------------------
@register
class DebugBatchNorm2d(BatchNorm2dModule):
    name = "ch5_debug_bn2d"
    title = "debugging: a BatchNorm2d with one planted bug, fixed to behave like torch.nn.BatchNorm2d"
    hints = (
        "run the buggy layer for a training step and look at its running_mean: print its requires_grad and "
        "grad_fn. A buffer is state, not part of the computation autograd should record",
        "the running update mixes in mean and var, which were computed from x with autograd on; so the buffers "
        "become the end of a graph that reaches back through every training step",
        "only the two lines that update the buffers must leave autograd (a context manager does it, or detached "
        "statistics); the normalization itself stays recorded, so that gradients still flow to x, weight and bias",
    )
    count_batches = False
    mistakes = _DEBUG_MISTAKES

    def cases(self, rng):
        return _module_cases(rng, _DEBUG_CASES)
