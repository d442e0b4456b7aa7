"""Batch norm's common mistakes as data, and one verifier for BatchNorm modules written from scratch.

Not a chapter module (it registers nothing). Chapter 3's ``bn_forward`` / ``bn_backward*`` / ``bn_module`` and
chapter 5's ``ch5_batchnorm2d`` use it, so a 1-D and a 2-D batch norm get the same feedback.

The math (NumPy, float64; ``x`` is (N, D) or (N, C, H, W), statistics per feature / channel)
    :func:`stat_axes`, :func:`param_shape`, :func:`normalize` (with the common slips as options) and
    :func:`backward_generic` (dx of ``gamma * normalize(x) + beta`` for a normalization with those slips).
Mistakes (:class:`~bncourse.checks.core.Mistake` tuples, built for an exercise's case keys and output names)
    :func:`forward_mistakes`, :func:`backward_mistakes`, :func:`backward_scale_mistakes` and
    :func:`module_mistakes`.
The module exercise
    :class:`BNModuleExercise`: subclass it, set ``name``, ``title``, ``hints``, ``references``, ``ndim`` (2 for
    BatchNorm1d on (N, D), 4 for BatchNorm2d on (N, C, H, W)), ``mistakes = module_mistakes(ndim)`` and write
    ``cases(rng)``; ``run`` and ``verify`` are shared. A case holds ``num_features``, ``eps``, ``momentum`` (a float,
    or None for PyTorch's cumulative average), optionally ``affine`` and ``track_running_stats`` (passed to the
    constructor only when present; default True), optionally ``non_contiguous`` (default True: the first batch
    reaches ``forward`` as a tensor that is not contiguous in memory, so a ``.view`` fails), and float32 arrays
    ``x1`` (first training batch), ``x2`` (second training batch), ``x3`` (an eval-mode batch), ``dout`` (the
    gradient of the output of the first batch), ``gamma`` and ``beta`` (with affine). Set ``count_batches = True``
    to require the ``num_batches_tracked`` buffer (0, then +1 per training batch, not in eval mode).

    What it checks, in order: the inputs were not changed in place; one weight and bias of shape (C,), no
    parameters with ``affine=False``; the training output; ``x.grad``, ``weight.grad``, ``bias.grad`` through the
    module; no running statistics with ``track_running_stats=False`` (and batch statistics in eval mode then);
    buffers that do not track gradients; initial running statistics; the running statistics after two training
    batches (momentum, Bessel's correction with m = values per channel, ``momentum=None``); ``num_batches_tracked``;
    eval mode: no update, the output from the running statistics.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .core import CheckFailure, Exercise, Mistake, describe_value, expect, expect_array, expect_inputs_unchanged
from .shared import to_numpy

__all__ = ["stat_axes", "param_shape", "normalize", "backward_generic", "forward_mistakes", "backward_mistakes",
           "backward_scale_mistakes", "NUMPY_REFERENCES",
           "module_mistakes", "BNModuleExercise", "RUNNING_STATS_GRAD_MSG", "STOP_GRADIENT", "MODULE_STOP_GRADIENT"]


#: the ready-made batch norms a from-scratch exercise must not call (``Exercise.references``)
NUMPY_REFERENCES = (
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


# --------------------------------------------------------------------------------------------
# The math, with the common slips as options
# --------------------------------------------------------------------------------------------
def stat_axes(x: np.ndarray) -> tuple[int, ...]:
    """Axes of the per-feature (2-D) or per-channel (4-D) statistics."""
    return (0,) if x.ndim == 2 else (0, 2, 3)


def param_shape(x: np.ndarray) -> tuple[int, ...]:
    """The shape gamma and beta take to broadcast against x: (1, D) or (1, C, 1, 1)."""
    return (1, x.shape[1]) if x.ndim == 2 else (1, x.shape[1], 1, 1)


def normalize(x: np.ndarray, eps: float, *, axes=None, ddof: int = 0, eps_mode: str = "inside",
              center: bool = True, power: float = 0.5) -> np.ndarray:
    """x_hat with configurable mistakes: statistics axes, ddof, where eps goes ("inside", "outside", "missing"),
    centring, std (power 0.5) vs var (power 1)."""
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


def backward_generic(dout, x, gamma, eps, *, axes=None, ddof=0, through_mean=True, through_var=True,
                     use_gamma=True, mean_scale=None, var_scale=None):
    """dx of out = gamma * normalize(x) + beta, for a normalization with the given options (m = values per
    feature/channel over ``axes``); ``mean_scale`` / ``var_scale`` replace the 1/m of the path through the mean /
    the variance (a slip: 1.0, the 1/m forgotten)."""
    axes = stat_axes(x) if axes is None else axes
    m = int(np.prod([x.shape[a] for a in axes]))
    g = np.reshape(gamma, param_shape(x)) if use_gamma else 1.0
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc ** 2).sum(axis=axes, keepdims=True) / (m - ddof)
    inv_std = 1.0 / np.sqrt(var + eps)
    dxhat = dout * g
    dxc = dxhat * inv_std
    if through_var:
        dvar = (dxhat * xc).sum(axis=axes, keepdims=True) * -0.5 * inv_std ** 3
        dxc = dxc + dvar * 2.0 * xc * (1.0 / (m - ddof) if var_scale is None else var_scale)
    if through_mean:
        dxc = dxc - dxc.sum(axis=axes, keepdims=True) * (1.0 / m if mean_scale is None else mean_scale)
    return dxc


# --------------------------------------------------------------------------------------------
# Mistakes of the forward and the backward pass
# --------------------------------------------------------------------------------------------
FwdArgs = Callable[[dict], tuple]       # case -> (x, gamma, beta, eps), float64
BwdArgs = Callable[[dict], tuple]       # case -> (dout, x, gamma, eps), float64


def _fwd_default(c):
    return c["x"], c["gamma"], c["beta"], c["eps"]


def _bwd_default(c):
    return c["dout"], c["x"], c["gamma"], c["eps"]


def forward_mistakes(ndim: int, args: FwdArgs = _fwd_default, output: str = "out") -> tuple[Mistake, ...]:
    """The training-mode forward pass's mistakes for input of ``ndim`` dimensions (2 or 4).

    ``args(case)`` gives (x, gamma, beta, eps) in float64; each mistake explains the result ``output``."""
    unit = "feature" if ndim == 2 else "channel"

    def mk(mistake_id, message, out_of):
        def wrong(c):
            x, gamma, beta, eps = args(c)
            g, b = np.reshape(gamma, param_shape(x)), np.reshape(beta, param_shape(x))
            return {output: out_of(x, g, b, eps)}
        return Mistake(mistake_id, message, wrong)

    out = [
        mk("ddof1", "you normalized with the unbiased variance (ddof=1, dividing by N-1); batch norm normalizes with "
           "the biased variance that divides by N (the unbiased one is only for running_var)",
           lambda x, g, b, eps: g * normalize(x, eps, ddof=1) + b),
        mk("no_eps", "eps is missing: add it to the variance inside the square root, sqrt(var + eps)",
           lambda x, g, b, eps: g * normalize(x, eps, eps_mode="missing") + b),
        mk("eps_outside", "eps is outside the square root: use sqrt(var + eps), not sqrt(var) + eps",
           lambda x, g, b, eps: g * normalize(x, eps, eps_mode="outside") + b),
        mk("default_eps", "your code ignores the eps it is given and uses 1e-5 (a default argument or a constant): "
           "use the eps passed in", lambda x, g, b, eps: g * normalize(x, 1e-5) + b),
        mk("var_not_std", "you divided by the variance instead of the standard deviation; use sqrt(var + eps)",
           lambda x, g, b, eps: g * normalize(x, eps, power=1.0) + b),
        mk("not_centred", "you did not subtract the batch mean before dividing by the standard deviation",
           lambda x, g, b, eps: g * normalize(x, eps, center=False) + b),
        mk("gamma_beta_swapped", "gamma and beta are swapped: out = gamma * x_hat + beta (gamma scales, beta shifts)",
           lambda x, g, b, eps: b * normalize(x, eps) + g),
        mk("no_affine", "gamma and beta are missing: out = gamma * x_hat + beta, not just x_hat",
           lambda x, g, b, eps: normalize(x, eps) + 0.0 * g),
        mk("no_gamma", "gamma is missing: scale by it, out = gamma * x_hat + beta",
           lambda x, g, b, eps: normalize(x, eps) + b),
        mk("no_beta", "beta is missing: shift by it, out = gamma * x_hat + beta",
           lambda x, g, b, eps: g * normalize(x, eps)),
        mk("whole_batch", f"you took the mean and variance over the whole batch at once; batch norm takes them per "
           f"{unit} (one mean and one variance for each {unit})",
           lambda x, g, b, eps: g * normalize(x, eps, axes=tuple(range(x.ndim))) + b),
    ]
    if ndim == 2:
        out.append(mk("per_sample", "you took the statistics per sample (axis=1, over the features) instead of per "
                      "feature over the batch (axis=0)", lambda x, g, b, eps: g * normalize(x, eps, axes=(1,)) + b))
    else:
        out += [
            mk("per_sample", "you took the statistics per sample over (C, H, W) (axis=(1, 2, 3)) instead of per "
               "channel over (N, H, W) (axis=(0, 2, 3))", lambda x, g, b, eps: g * normalize(x, eps, axes=(1, 2, 3)) + b),
            mk("instance_norm", "you took the statistics per sample and channel over (H, W) only (that is instance "
               "norm); batch norm takes them per channel over (N, H, W)",
               lambda x, g, b, eps: g * normalize(x, eps, axes=(2, 3)) + b),
            mk("per_position", "you took the statistics over the batch axis only (axis=0), one per channel and "
               "position; for conv layers take them per channel over (N, H, W), axis=(0, 2, 3)",
               lambda x, g, b, eps: g * normalize(x, eps, axes=(0,)) + b),
        ]
    return tuple(out)


STOP_GRADIENT = ("your dx ignores the path through the batch mean and variance (the stop-gradient mistake): mu and "
                 "var depend on x, so dx gets the terms through them too")
MODULE_STOP_GRADIENT = ("your module computes the batch mean and variance without gradient (.detach(), .item(), "
                        "torch.no_grad() or NumPy): mu and var depend on x, so dx gets the terms through them too")


def backward_mistakes(ndim: int, args: BwdArgs = _bwd_default, outputs: tuple[str, str, str] = ("dx", "dgamma", "dbeta"),
                      *, stop_gradient: str = STOP_GRADIENT, names: tuple[str, str, str] = ("dx", "dgamma", "dbeta")
                      ) -> tuple[Mistake, ...]:
    """The backward pass's mistakes: ``args(case)`` gives (dout, x, gamma, eps) in float64; ``outputs`` are the
    result keys of dx, dgamma and dbeta; ``names`` how the messages call them."""
    kdx, kdg, kdb = outputs
    ndx, ndg, ndb = names
    unit = "feature" if ndim == 2 else "channel"
    batch = "axis=0" if ndim == 2 else "axis=(0, 2, 3)"
    other = (1,) if ndim == 2 else (1, 2, 3)

    def dx(mistake_id, message, **how):
        return Mistake(mistake_id, message, lambda c: {kdx: backward_generic(*args(c), **how)})

    def param(mistake_id, key, message, grad_of):
        def wrong(c):
            dout, x, gamma, eps = args(c)
            return {key: grad_of(dout, x, eps)}
        return Mistake(mistake_id, message, wrong)

    def swapped(c):
        dout, x, gamma, eps = args(c)
        axes = stat_axes(x)
        return {kdg: dout.sum(axis=axes), kdb: (dout * normalize(x, eps)).sum(axis=axes)}

    per_sample = ("your dx takes the statistics per sample (axis=1) instead of per feature (axis=0)" if ndim == 2 else
                  "your dx takes the statistics per sample over (C, H, W) instead of per channel over (N, H, W)")
    return (
        dx("stop_gradient", stop_gradient, through_mean=False, through_var=False),
        dx("no_mean_path", f"your {ndx} ignores the path through the batch mean: mu depends on x, add that term",
           through_mean=False),
        dx("no_var_path", f"your {ndx} ignores the path through the batch variance: var depends on x, add that term",
           through_var=False),
        dx("dx_no_gamma", f"your {ndx} forgets the factor gamma: going back through out = gamma * x_hat + beta gives "
           "dx_hat = dout * gamma", use_gamma=False),
        dx("unbiased", f"your {ndx} is the gradient of a batch norm with the unbiased variance (N-1); the forward pass "
           "normalizes with the biased one (N)", ddof=1),
        Mistake("dx_default_eps", f"your {ndx} ignores the eps it is given and uses 1e-5 (a default argument or a "
                "constant): the backward pass must use the forward pass's eps",
                lambda c: {kdx: backward_generic(args(c)[0], args(c)[1], args(c)[2], 1e-5)}),
        Mistake("dx_per_sample", per_sample.replace("your dx", f"your {ndx}"),
                lambda c: {kdx: backward_generic(*args(c), axes=other)}),
        param("dgamma_wrong_axes", kdg, f"{ndg} is summed over the wrong axes: sum dout * x_hat over the batch "
              f"({batch}), one value per {unit}, not over the features",
              lambda dout, x, eps: (dout * normalize(x, eps)).sum(axis=other)),
        param("dgamma_all_axes", kdg, f"{ndg} is summed over all axes: sum over the batch only ({batch}), one value "
              f"per {unit}", lambda dout, x, eps: np.asarray((dout * normalize(x, eps)).sum())),
        param("dgamma_not_summed", kdg, f"{ndg} is not summed: gamma is shared by the whole batch, so sum dout * "
              f"x_hat over {batch}", lambda dout, x, eps: dout * normalize(x, eps)),
        param("dbeta_wrong_axes", kdb, f"{ndb} is summed over the wrong axes: sum dout over the batch ({batch}), one "
              f"value per {unit}, not over the features", lambda dout, x, eps: dout.sum(axis=other)),
        param("dbeta_all_axes", kdb, f"{ndb} is summed over all axes: sum over the batch only ({batch}), one value "
              f"per {unit}", lambda dout, x, eps: np.asarray(dout.sum())),
        param("dbeta_not_summed", kdb, f"{ndb} is not summed: beta is shared by the whole batch, so sum dout over "
              f"{batch}", lambda dout, x, eps: dout),
        Mistake("swapped", f"{ndg} and {ndb} are swapped: {ndg} = sum(dout * x_hat), {ndb} = sum(dout)", swapped),
        param("dgamma_uses_x", kdg, f"{ndg} uses x instead of the normalized x_hat: {ndg} = sum(dout * x_hat)",
              lambda dout, x, eps: (dout * x).sum(axis=stat_axes(x))),
        param("dgamma_default_eps", kdg, f"{ndg} uses an x_hat normalized with eps = 1e-5 instead of the eps it is "
              "given", lambda dout, x, eps: (dout * normalize(x, 1e-5)).sum(axis=stat_axes(x))),
        param("dgamma_unbiased", kdg, f"{ndg} uses an x_hat normalized with the unbiased variance (N-1); the forward "
              "pass normalizes with the biased one (N)",
              lambda dout, x, eps: (dout * normalize(x, eps, ddof=1)).sum(axis=stat_axes(x))),
        param("dgamma_per_sample", kdg, f"{ndg} uses an x_hat whose statistics were taken per sample instead of per "
              f"{unit}", lambda dout, x, eps: (dout * normalize(x, eps, axes=other)).sum(axis=stat_axes(x))),
    )


def backward_scale_mistakes(ndim: int, args: BwdArgs = _bwd_default, output: str = "dx", name: str = "dx"
                            ) -> tuple[Mistake, ...]:
    """dx with the 1/m of the path through the mean or the variance forgotten (m = values per feature/channel:
    N for (N, D), N * H * W for images)."""
    m = "N" if ndim == 2 else "m"
    where = "" if ndim == 2 else " (m = N * H * W values per channel)"
    return (
        Mistake("mean_path_no_1_over_n", f"your {name} forgets the 1/{m} of the path through the mean: mu = sum(x) / "
                f"{m}, so each x gets dmu / {m}{where}",
                lambda c: {output: backward_generic(*args(c), mean_scale=1.0)}),
        Mistake("var_path_no_1_over_n", f"your {name} forgets the 1/{m} of the path through the variance: var = "
                f"sum((x - mu)^2) / {m}, so each x gets dvar * 2 (x - mu) / {m}{where}",
                lambda c: {output: backward_generic(*args(c), var_scale=1.0)}),
    )


# --------------------------------------------------------------------------------------------
# The module: mistakes of its state
# --------------------------------------------------------------------------------------------
RUNNING_STATS_GRAD_MSG = (
    "after a training step, running_mean or running_var requires grad (it has a grad_fn): the running "
    "statistics were computed from the batch mean and variance WITH gradient tracking, so every step chains "
    "the buffers to the previous step's graph (memory grows, and an eval-mode backward fails with 'Trying to "
    "backward through the graph a second time'). Update them under torch.no_grad() (or from .detach()ed "
    "statistics), in place")

_REVERSED = ("the momentum convention is reversed: PyTorch's momentum weights the NEW batch value, "
             "running = (1 - momentum) * running + momentum * batch")


def _f64(case: dict, key: str) -> np.ndarray:
    return case[key].astype(np.float64)


def _affine(case: dict) -> tuple[np.ndarray, np.ndarray]:
    d = case["num_features"]
    if case.get("affine", True):
        return _f64(case, "gamma"), _f64(case, "beta")
    return np.ones(d), np.zeros(d)


def _tracks(case: dict) -> bool:
    return case.get("track_running_stats", True)


def _running_path(case: dict, *, reverse=False, bessel="m", mean_rule="average", var_rule="average",
                  steps=(1, 2)) -> dict[str, np.ndarray]:
    """The running statistics after each training batch for an update with the given slips (float64).

    bessel: "m" (values per channel, right), "n" (batch size only), None (biased stored); mean_rule / var_rule:
    "average" (right), "replace" (the batch value), "frozen" (not updated)."""
    d = case["num_features"]
    rm, rv = np.zeros(d), np.ones(d)
    out: dict[str, np.ndarray] = {}
    for step in steps:
        x = _f64(case, f"x{step}")
        axes = stat_axes(x)
        m = x.size // d
        n = x.shape[0]
        bmean, bvar = x.mean(axis=axes), x.var(axis=axes)
        stored = bvar * {"m": m / (m - 1), "n": n / (n - 1) if n > 1 else np.nan, None: 1.0}[bessel]
        mom = case["momentum"]
        w = 1.0 / step if mom is None else float(mom)         # momentum=None: the cumulative average
        if reverse:
            w = 1.0 - w
        rm = {"average": (1 - w) * rm + w * bmean, "replace": bmean, "frozen": rm}[mean_rule]
        rv = {"average": (1 - w) * rv + w * stored, "replace": stored, "frozen": rv}[var_rule]
        out[f"running_mean_{step}"], out[f"running_var_{step}"] = rm, rv
    return out


def _only(prefix: str, values: dict) -> dict:
    return {k: v for k, v in values.items() if k.startswith(prefix)}


def _tracked(fn):
    """A running-statistics mistake applies only to cases that keep running statistics."""
    return lambda c: fn(c) if _tracks(c) else None


def _eval_out(case: dict, how: str) -> dict:
    from bncourse.bn_numpy import batchnorm_forward, batchnorm_forward_inference

    x3 = _f64(case, "x3")
    gamma, beta = _affine(case)
    eps = case["eps"]
    if how == "no_running":
        return {"out3": np.reshape(gamma, param_shape(x3)) * x3 + np.reshape(beta, param_shape(x3))}
    if not _tracks(case):
        return None
    path = _running_path(case)
    rm, rv = path["running_mean_2"], path["running_var_2"]
    if how == "batch":
        return {"out3": batchnorm_forward(x3, gamma, beta, eps)[0]}
    if how == "updated":
        upd = _running_path({**case, "x3": case["x3"]}, steps=(1, 2, 3))
        return {"out3": batchnorm_forward_inference(x3, gamma, beta, upd["running_mean_3"], upd["running_var_3"], eps)}
    if how == "no_eps":
        p = param_shape(x3)
        return {"out3": np.reshape(gamma, p) * (x3 - np.reshape(rm, p)) / np.sqrt(np.reshape(rv, p))
                + np.reshape(beta, p)}
    raise ValueError(how)


def _updated_in_eval(case: dict) -> dict | None:
    if not _tracks(case):
        return None
    upd = _running_path(case, steps=(1, 2, 3))
    return {"running_mean_3": upd["running_mean_3"], "running_var_3": upd["running_var_3"]}


def _module_fwd_args(c):
    gamma, beta = _affine(c)
    return _f64(c, "x1"), gamma, beta, c["eps"]


def _module_bwd_args(c):
    gamma, _ = _affine(c)
    return _f64(c, "dout"), _f64(c, "x1"), gamma, c["eps"]


def _momentum_none_as(case: dict, momentum: float) -> dict | None:
    if case["momentum"] is not None or not _tracks(case):
        return None
    return _running_path({**case, "momentum": momentum})


def module_mistakes(ndim: int, *, cumulative: bool = False) -> tuple[Mistake, ...]:
    """Every mistake :class:`BNModuleExercise` names, for a module on input of ``ndim`` dimensions; with
    ``cumulative`` (the exercise has a case with ``momentum=None``) also those of the cumulative average."""
    out = [
        *forward_mistakes(ndim, _module_fwd_args, "out1"),
        # autograd differentiates whatever forward computes, so the backward slips a module can make are the
        # statistics computed without gradient (the other backward mistakes show up in the forward output first)
        Mistake("stop_gradient", MODULE_STOP_GRADIENT,
                lambda c: {"dx1": backward_generic(*_module_bwd_args(c), through_mean=False, through_var=False)}),
        Mistake("mean_without_grad", "your module computes the batch mean without gradient (.detach(), .item(), "
                "torch.no_grad() or NumPy): mu depends on x, so x.grad gets the term through it too",
                lambda c: {"dx1": backward_generic(*_module_bwd_args(c), through_mean=False)}),
        Mistake("var_without_grad", "your module computes the batch variance without gradient (.detach(), .item(), "
                "torch.no_grad() or NumPy): var depends on x, so x.grad gets the term through it too",
                lambda c: {"dx1": backward_generic(*_module_bwd_args(c), through_var=False)}),
        Mistake("no_running_stats_in_eval", "with track_running_stats=False eval mode has no running statistics and "
                "must normalize with the batch statistics",
                lambda c: None if _tracks(c) else _eval_out(c, "no_running")),
        Mistake("mean_starts_at_1", "running_mean must start at 0 (running_var at 1, running_mean at 0)",
                _tracked(lambda c: {"running_mean_0": np.ones(c["num_features"])})),
        Mistake("var_starts_at_0", "running_var must start at 1 (running_var at 1, running_mean at 0)",
                _tracked(lambda c: {"running_var_0": np.zeros(c["num_features"])})),
        Mistake("momentum_reversed", _REVERSED, _tracked(lambda c: _running_path(c, reverse=True))),
        Mistake("var_no_bessel", "running_var is stored without Bessel's correction: normalize with the biased "
                "variance, but store the unbiased one, batch_var * m / (m - 1)"
                + ("" if ndim == 2 else ", m = N * H * W values per channel"),
                _tracked(lambda c: _only("running_var", _running_path(c, bessel=None)))),
        Mistake("mean_replaced", "the running mean is replaced by the batch mean instead of averaged: "
                "running = (1 - momentum) * running + momentum * batch",
                _tracked(lambda c: _only("running_mean", _running_path(c, mean_rule="replace")))),
        Mistake("var_replaced", "the running variance is replaced by the batch variance instead of averaged: "
                "running = (1 - momentum) * running + momentum * batch",
                _tracked(lambda c: _only("running_var", _running_path(c, var_rule="replace")))),
        Mistake("mean_not_updated", "the running mean was not updated in training mode",
                _tracked(lambda c: _only("running_mean", _running_path(c, mean_rule="frozen")))),
        Mistake("var_not_updated", "the running variance was not updated in training mode",
                _tracked(lambda c: _only("running_var", _running_path(c, var_rule="frozen")))),
        Mistake("updated_in_eval", "running statistics were updated in eval (inference) mode; only training mode "
                "updates them (check self.training)", _updated_in_eval),
        Mistake("eval_batch_stats", "eval mode normalized with the batch statistics; it must use running_mean and "
                "running_var (a prediction must not depend on the other samples in the batch)",
                lambda c: _eval_out(c, "batch")),
        Mistake("eval_no_eps", "eps is missing in eval mode: divide by sqrt(running_var + eps)",
                lambda c: _eval_out(c, "no_eps")),
    ]
    if cumulative:
        out.insert(out.index(next(m for m in out if m.id == "momentum_reversed")), Mistake(
            "momentum_none_fixed", "with momentum=None the running statistics are the cumulative average of the "
            "training batches so far: weight the k-th batch by 1 / k (1 / num_batches_tracked after counting it), "
            "not by a fixed momentum such as 0.1", lambda c: _momentum_none_as(c, 0.1)))
    if ndim == 4:
        out.insert(out.index(next(m for m in out if m.id == "var_no_bessel")), Mistake(
            "bessel_batch_size", "the Bessel correction uses N / (N - 1), but each channel's variance is taken over "
            "m = N * H * W values: use m / (m - 1)",
            _tracked(lambda c: _only("running_var", _running_path(c, bessel="n")))))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# The module exercise
# --------------------------------------------------------------------------------------------
_VIEW = ("your forward calls .view on an input that is not contiguous in memory (this case passes a transposed "
         "tensor, as a permute or channels_last gives you): .view only re-labels memory that is laid out in order; "
         "use .reshape(...) (or .contiguous().view(...))")
_IN_PLACE_INPUT = ("your forward changes its input x in place (x -= mean, x.sub_(...) or a slice assignment): the "
                   "caller's tensor must stay as it was, and autograd refuses to change a tensor that requires grad; "
                   "compute new tensors (x - mean)")
_GAMMA_AXIS = ("gamma and beta have shape (C,) and must broadcast along the channel axis 1: reshape them to "
               "(1, C, 1, 1) (x is (N, C, H, W))")


def _non_contiguous(x: np.ndarray):
    """x as a tensor with the same values whose memory is laid out in the reverse order (not contiguous)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose())).permute(*reversed(range(x.ndim)))


class BNModuleExercise(Exercise):
    """A batch-norm module written from scratch, checked like ``torch.nn.BatchNorm{1,2}d`` (module docstring)."""

    ndim: int = 2
    module_name: str = "BatchNorm1d"
    count_batches: bool = False
    in_place_subject = "your module"
    input_labels = {"x1": "x", "x2": "x", "x3": "x"}

    # ------------------------------------------------------------------------------------------
    def run(self, fn, case):
        import torch

        c = case["num_features"]
        kwargs = {k: case[k] for k in ("eps", "momentum", "affine", "track_running_stats") if k in case}
        m = fn(c, **kwargs)
        if not isinstance(m, torch.nn.Module):
            raise CheckFailure(f"{self.module_name}(...) must create a torch.nn.Module: subclass nn.Module and call "
                               f"super().__init__() first")
        affine = case.get("affine", True)
        params = dict(m.named_parameters())
        res: dict[str, Any] = {"param_names": ",".join(sorted(params))}
        if affine:
            if "weight" not in params or "bias" not in params:
                raise CheckFailure(
                    f"{'with affine=True ' if 'affine' in case else ''}the module needs parameters named weight "
                    f"(gamma) and bias (beta), registered as nn.Parameter; it has {sorted(params) or 'none'}")
            res["weight_shape"] = np.asarray(tuple(m.weight.shape), dtype=np.int64)
            if tuple(m.weight.shape) == (c,):
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(case["gamma"]))
                    m.bias.copy_(torch.from_numpy(case["beta"]))
        res["running_mean_0"] = to_numpy(getattr(m, "running_mean", None))
        res["running_var_0"] = to_numpy(getattr(m, "running_var", None))
        res["num_batches_0"] = self._count(m)

        m.train()
        x1 = (_non_contiguous(case["x1"]) if case.get("non_contiguous", True)
              else torch.from_numpy(case["x1"])).requires_grad_(True)
        try:
            y1 = m(x1)
        except RuntimeError as e:
            text = str(e)
            if "view size is not compatible" in text or ("view" in text and "contiguous" in text):
                raise CheckFailure(f"{_VIEW} (PyTorch said: {e})") from None
            if "leaf Variable that requires grad" in text and "in-place" in text:
                raise CheckFailure(f"{_IN_PLACE_INPUT} (PyTorch said: {e})") from None
            if self.ndim == 4 and ("size" in text or "broadcast" in text):
                raise CheckFailure(f"{_GAMMA_AXIS} (PyTorch said: {e})") from None
            raise
        if not isinstance(y1, torch.Tensor):
            raise CheckFailure(f"forward must return a torch.Tensor; it returned {describe_value(y1)}")
        res["out1"] = to_numpy(y1)
        # the running statistics after the first training step must be plain buffers, not part of the graph
        res["buffers_track_grad"] = bool(any(
            isinstance(b, torch.Tensor) and (b.requires_grad or b.grad_fn is not None)
            for b in (getattr(m, "running_mean", None), getattr(m, "running_var", None))))
        res["dx1"] = None
        if y1.shape == x1.shape and y1.requires_grad:
            y1.backward(torch.from_numpy(case["dout"]))
            res["dx1"] = to_numpy(x1.grad)
            if affine:
                res["dgamma"] = to_numpy(m.weight.grad)
                res["dbeta"] = to_numpy(m.bias.grad)
        for step, key in ((1, None), (2, "x2"), (3, "x3")):
            if step == 3:
                m.eval()
            if key is not None:
                with torch.no_grad():
                    out = m(torch.from_numpy(case[key]))
                if step == 3:
                    res["out3"] = to_numpy(out)
            res[f"running_mean_{step}"] = to_numpy(getattr(m, "running_mean", None))
            res[f"running_var_{step}"] = to_numpy(getattr(m, "running_var", None))
            res[f"num_batches_{step}"] = self._count(m)
        return res

    @staticmethod
    def _count(m) -> int | None:
        n = getattr(m, "num_batches_tracked", None)
        try:
            return None if n is None else int(n)
        except (TypeError, ValueError, RuntimeError):
            return -1

    # ------------------------------------------------------------------------------------------
    def verify(self, case, result):
        from bncourse.bn_numpy import batchnorm_backward, batchnorm_forward, batchnorm_forward_inference

        expect_inputs_unchanged(self, result)
        c, eps = case["num_features"], case["eps"]
        affine, trs = case.get("affine", True), _tracks(case)
        x1, x3 = _f64(case, "x1"), _f64(case, "x3")
        gamma, beta = _affine(case)
        tol = {"rtol": 1e-4, "atol": 1e-4, "dtype": np.float32}

        def check(label, key, want):
            expect_array(label, result[key], want, **tol, mistakes=self.mistakes, case=case, output=key)

        if affine:
            shape = tuple(int(v) for v in result["weight_shape"])
            expect(shape == (c,), f"weight (gamma) has shape {shape}; batch norm has one gamma and one beta per "
                                  f"{'feature' if self.ndim == 2 else 'channel'}, shape ({c},)"
                                  + ("" if self.ndim == 2 else ", not one per (C, H, W) position"))
        else:
            expect(result["param_names"] == "",
                   f"with affine=False the module must have no parameters (weight and bias are None, like "
                   f"torch.nn.{self.module_name}); it has {result['param_names']}")
        # training step 1: output and gradients
        out1, cache = batchnorm_forward(x1, gamma, beta, eps)
        check("the output in training mode", "out1", out1)
        if result.get("dx1") is None:
            raise CheckFailure("x.grad is None after out.backward(): compute the output with torch operations "
                               "on the input so autograd can differentiate it (no .numpy(), no .detach())")
        dx, dgamma, dbeta = batchnorm_backward(_f64(case, "dout"), cache)
        check("x.grad (the gradient through your module)", "dx1", dx)
        if affine:
            check("weight.grad", "dgamma", dgamma)
            check("bias.grad", "dbeta", dbeta)

        if not trs:
            for k in ("running_mean_0", "running_var_0"):
                expect(result[k] is None,
                       f"with track_running_stats=False there are no running statistics: running_mean and "
                       f"running_var must be None (like torch.nn.{self.module_name}), and eval mode uses the batch's")
            check("the output in eval mode with track_running_stats=False", "out3",
                  batchnorm_forward(x3, gamma, beta, eps)[0])
            return

        expect(not result.get("buffers_track_grad", False), RUNNING_STATS_GRAD_MSG)
        for k, start in (("running_mean_0", 0.0), ("running_var_0", 1.0)):
            name = k[:-2]
            if result[k] is None:
                raise CheckFailure(f"the module has no {name}: register it with self.register_buffer('{name}', ...)")
            check(f"the initial {name}", k, np.full(c, start))
        path = _running_path(case)
        for step, after in ((1, "the first"), (2, "the second")):
            check(f"running_mean after {after} training batch", f"running_mean_{step}", path[f"running_mean_{step}"])
            check(f"running_var after {after} training batch", f"running_var_{step}", path[f"running_var_{step}"])
        if self.count_batches:
            counts = [result.get(f"num_batches_{k}") for k in range(4)]
            expect(counts[0] is not None, "the module has no num_batches_tracked: register it with "
                                          "self.register_buffer('num_batches_tracked', torch.tensor(0, dtype=torch.long))")
            expect(counts == [0, 1, 2, 2],
                   f"num_batches_tracked went {counts[0]}, {counts[1]}, {counts[2]}, {counts[3]} over two training "
                   f"batches and one eval batch; it counts training batches: 0, 1, 2, 2 (add 1 in training mode only)")

        # eval mode: no update, and the running statistics normalize
        rm, rv = path["running_mean_2"], path["running_var_2"]
        check("running_mean after a batch in eval mode", "running_mean_3", rm)
        check("running_var after a batch in eval mode", "running_var_3", rv)
        check("the output in eval mode", "out3", batchnorm_forward_inference(x3, gamma, beta, rm, rv, eps))
