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

The forward, backward and module mistakes are declared in :mod:`bncourse.checks.bn_module`, shared with
chapter 5's BatchNorm2d; ``bn_module`` is a :class:`~bncourse.checks.bn_module.BNModuleExercise`.
"""
from __future__ import annotations


import numpy as np

from . import bn_module as bn
from .core import CheckFailure, Exercise, Mistake, expect_array, expect_inputs_unchanged, register
from .predict import Prediction, predicted
from .shared import to_numpy, unpack

__all__ = [
    "BNForward", "BNBackwardStaged", "BNBackward", "BNModule", "BNStatGrads", "MergeStats", "PredictEpsShrink",
    "PredictScaleInvariance", "DebugRunningStats",
]


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

_NUMPY_REFERENCES = bn.NUMPY_REFERENCES          # chapter 5 imports this name


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
    mistakes = bn.forward_mistakes(2)

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
        expect_inputs_unchanged(self, result)
        want, _ = batchnorm_forward(x, gamma, beta, eps)
        self.expect_outputs(case, result, {"out": want}, rtol=1e-6, atol=1e-8)


class _BackwardBase(Exercise):
    references = _NUMPY_REFERENCES
    fn_name = "batchnorm_backward"
    mistakes = bn.backward_mistakes(2) + bn.backward_scale_mistakes(2)

    def cases(self, rng):
        out = []
        for n, d, eps, small in _FC_SHAPES:
            x, gamma, _beta = _fc_case(rng, n, d, eps, small)
            dout = rng.normal(size=(n, d))
            out.append({"dout": dout, "x": x, "gamma": gamma, "eps": eps})
        return out

    def run(self, fn, case):
        ret = fn(case["dout"], case["x"], case["gamma"], case["eps"])
        dx, dgamma, dbeta = _unpack(ret, self.fn_name, ("dx", "dgamma", "dbeta"))
        return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}

    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_backward, batchnorm_forward
        dout, x, gamma, eps = case["dout"], case["x"], case["gamma"], case["eps"]
        _, cache = batchnorm_forward(x, gamma, np.zeros_like(gamma), eps)
        dx, dgamma, dbeta = batchnorm_backward(dout, cache)
        expect_inputs_unchanged(self, result)
        self.expect_outputs(case, result, {"dbeta": dbeta, "dgamma": dgamma, "dx": dx}, rtol=1e-6, atol=1e-9)


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
    # D, N, eps, momentum, affine, track_running_stats; the first case's feature 0 has a std of 0.03 (variance
    # 9e-4, of eps's size), so eps ignored, eps replaced by a default 1e-5 and the right eps all differ there;
    # momentum=None is PyTorch's cumulative average (the debugging exercise leaves that case out)
    (4, 8, 1e-3, 0.1, True, True),
    (3, 5, 0.1, 0.3, True, True),
    (5, 6, 1e-5, 0.1, False, True),
    (3, 4, 0.1, 0.2, True, False),
    (4, 6, 1e-5, None, True, True),
)


@register
class BNModule(bn.BNModuleExercise):
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
    ndim = 2
    module_name = "BatchNorm1d"
    count_batches = True
    mistakes = bn.module_mistakes(2, cumulative=True)

    def cases(self, rng):
        out = []
        for i, (d, n, eps, momentum, affine, trs) in enumerate(_MODULE_CASES):
            loc = rng.uniform(-3, 3, size=d)
            scale = rng.uniform(0.5, 3.0, size=d)
            if i == 0:
                loc[0], scale[0] = 0.5, 0.03
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

    _no_sum = "not summed over the batch: mu and var are (D,), shared by the N rows, so sum over axis 0"
    mistakes = (
        Mistake("swapped", "dmu and dvar are swapped: return (dmu, dvar)",
                lambda c: dict(zip(("dvar", "dmu"), _stat_grads(*_sg_args(c))))),
        Mistake("dvar_no_gamma", "dvar forgets gamma: the gradient arriving at x_hat is dout * gamma",
                lambda c: {"dvar": _stat_grads(*_sg_args(c), use_gamma=False)[1]}),
        Mistake("dvar_exponent", "the exponent of (var + eps) is wrong: d/dvar (var + eps)^(-1/2) = -(1/2) (var + "
                "eps)^(-3/2)", lambda c: {"dvar": _stat_grads(*_sg_args(c), exponent=-0.5)[1]}),
        Mistake("dvar_no_half", "the factor -1/2 from differentiating (var + eps)^(-1/2) is missing",
                lambda c: {"dvar": _stat_grads(*_sg_args(c), factor=1.0)[1]}),
        Mistake("dvar_sign", "the sign of dvar is flipped: a larger variance shrinks x_hat, so the factor is -(1/2)",
                lambda c: {"dvar": -_stat_grads(*_sg_args(c))[1]}),
        Mistake("dvar_not_summed", "dvar " + _no_sum,
                lambda c: {"dvar": -0.5 * c["dout"] * c["gamma"] * (c["x"] - c["x"].mean(0))
                           * (c["x"].var(0) + c["eps"]) ** -1.5}),
        Mistake("dvar_default_eps", "dvar ignores the eps it is given (uses 1e-5)",
                lambda c: {"dvar": _stat_grads(*_sg_args(c), eps_in=1e-5)[1]}),
        Mistake("dmu_no_gamma", "dmu forgets gamma: the gradient arriving at x_hat is dout * gamma",
                lambda c: {"dmu": _stat_grads(*_sg_args(c), use_gamma=False)[0]}),
        Mistake("dmu_sign", "the sign of dmu is flipped: x_hat = (x - mu) / std decreases when mu grows",
                lambda c: {"dmu": -_stat_grads(*_sg_args(c))[0]}),
        Mistake("dmu_no_std", "dmu is missing the division by sqrt(var + eps)",
                lambda c: {"dmu": -(c["dout"] * c["gamma"]).sum(axis=0)}),
        Mistake("dmu_not_summed", "dmu " + _no_sum,
                lambda c: {"dmu": -c["dout"] * c["gamma"] / np.sqrt(c["x"].var(0) + c["eps"])}),
        Mistake("dmu_divided_by_n", "dmu was divided by N: that 1/N belongs to the step from mu back to x (dx = ... + "
                "dmu / N), not to dmu", lambda c: {"dmu": _stat_grads(*_sg_args(c))[0] / c["x"].shape[0]}),
    )

    def cases(self, rng):
        return _BackwardBase.cases(self, rng)

    def run(self, fn, case):
        ret = fn(case["dout"], case["x"], case["gamma"], case["eps"])
        dmu, dvar = _unpack(ret, "batchnorm_stat_grads", ("dmu", "dvar"))
        return {"dmu": dmu, "dvar": dvar}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        dmu, dvar = _stat_grads(*_sg_args(case))
        expect_array("dvar", result["dvar"], dvar, rtol=1e-6, atol=1e-9 * np.abs(dvar).max(), mistakes=self.mistakes,
                     case=case)
        expect_array("dmu", result["dmu"], dmu, rtol=1e-6, atol=1e-9 * np.abs(dmu).max(), mistakes=self.mistakes,
                     case=case)


def _sg_args(case):
    return case["dout"], case["x"], case["gamma"], case["eps"]


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

    mistakes = (
        Mistake("swapped", "your function returned its two results in the wrong order: return (mean, var), not "
                "(var, mean)", lambda c: {"mean": _merge_var(c), "var": (c["n_a"] * c["mean_a"] + c["n_b"] * c["mean_b"])
                                          / (c["n_a"] + c["n_b"])}),
        Mistake("mean_equal_weights", "the merged mean weights the parts equally: weight each part's mean by its size, "
                "(n_a mean_a + n_b mean_b) / (n_a + n_b)", lambda c: {"mean": (c["mean_a"] + c["mean_b"]) / 2}),
        Mistake("no_between", "the merged variance is missing the spread BETWEEN the two parts' means: add n_a n_b "
                "(mean_a - mean_b)^2 / n^2 (the parts' own variances only measure the spread inside each part)",
                lambda c: {"var": _merge_var(c, between=0.0)}),
        Mistake("plain_average", "the variances are averaged with equal weights and without the spread between the "
                "means", lambda c: {"var": (c["var_a"] + c["var_b"]) / 2}),
        Mistake("equal_weights", "the variances are averaged with equal weights: weight each part by its size",
                lambda c: {"var": (c["var_a"] + c["var_b"]) / 2 + _merge_var(c) - _merge_var(c, between=0.0)}),
        Mistake("unbiased", "that is the unbiased variance (divide by n - 1); batch norm normalizes with the biased one",
                lambda c: {"var": _merge_var(c) * (c["n_a"] + c["n_b"]) / (c["n_a"] + c["n_b"] - 1)}),
        Mistake("between_weight", "the spread between the means has the wrong weight: it is n_a n_b / n^2 times "
                "(mean_a - mean_b)^2", lambda c: {"var": _merge_var(c, between=0.25)}),
    )

    def cases(self, rng):
        out = []
        for n_a, n_b, d, offset in ((7, 9, 3, 0.0), (5, 11, 4, 0.0), (16, 4, 3, _MERGE_OFFSET), (3, 9, 2, 1e4)):
            loc = rng.uniform(-3, 3, size=d) + offset * rng.choice([-1.0, 1.0], size=d)
            scale = rng.uniform(0.5, 2.0, size=d)
            x_a = rng.normal(loc, scale, size=(n_a, d))
            x_b = rng.normal(loc + rng.uniform(-2, 2, size=d), scale, size=(n_b, d))   # the parts differ
            # the student gets the parts' statistics (two-pass, exact); x_a and x_b give the whole batch's
            out.append({"x_a": x_a, "x_b": x_b, "mean_a": x_a.mean(axis=0), "var_a": x_a.var(axis=0), "n_a": n_a,
                        "mean_b": x_b.mean(axis=0), "var_b": x_b.var(axis=0), "n_b": n_b})
        return out

    def run(self, fn, case):
        ret = fn(*(case[k] for k in ("mean_a", "var_a", "n_a", "mean_b", "var_b", "n_b")))
        mean, var = _unpack(ret, "merge_stats", ("mean", "var"))
        return {"mean": to_numpy(mean), "var": to_numpy(var)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        x = np.concatenate([case["x_a"], case["x_b"]])
        want_mean, want_var = x.mean(axis=0), x.var(axis=0)          # the whole batch, two-pass
        expect_array("mean", result["mean"], want_mean, rtol=1e-10, atol=1e-12, mistakes=self.mistakes, case=case)
        try:
            expect_array("var", result["var"], want_var, rtol=1e-8, atol=0.0, mistakes=self.mistakes, case=case)
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


def _merge_var(case, between: float | None = None) -> np.ndarray:
    """(n_a var_a + n_b var_b) / n + w (mean_a - mean_b)^2 with the right weight w = n_a n_b / n^2 (or ``between``)."""
    n_a, n_b = case["n_a"], case["n_b"]
    n = n_a + n_b
    w = n_a * n_b / n ** 2 if between is None else between
    return (n_a * case["var_a"] + n_b * case["var_b"]) / n + w * (case["mean_a"] - case["mean_b"]) ** 2


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
    count_batches = False                      # the module to fix has no num_batches_tracked and no momentum=None
    mistakes = bn.module_mistakes(2)

    def cases(self, rng):
        return [c for c in super().cases(rng) if c["momentum"] is not None]
