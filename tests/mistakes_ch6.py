"""Chapter 6's declared mistakes, each made by a student function written here from scratch.

``MISTAKES[(exercise, mistake id)]`` is a wrong answer with the student's signature that makes exactly that
mistake (and is right everywhere else), written without bncourse.checks: ``tests/test_mistake_registry.py``
checks that ``check(exercise, fn)`` fails with that mistake's full message.
"""
import numpy as np


# ---------------------------------------------------------------- ch6_group_norm
def _standardize(v, axes, eps, ddof=0, eps_outside=False):
    mu = v.mean(axis=axes, keepdims=True)
    if eps_outside:
        return (v - mu) / (v.std(axis=axes, ddof=ddof, keepdims=True) + eps)
    return (v - mu) / np.sqrt(v.var(axis=axes, ddof=ddof, keepdims=True) + eps)


def _gn(x, groups, gamma, beta, eps, *, ddof=0, interleaved=False, eps_outside=False, affine=True):
    n, c, h, w = x.shape
    if interleaved:
        xh = _standardize(x.reshape(n, c // groups, groups, h, w), (1, 3, 4), eps, ddof, eps_outside)
    else:
        xh = _standardize(x.reshape(n, groups, c // groups, h, w), (2, 3, 4), eps, ddof, eps_outside)
    xh = xh.reshape(x.shape)
    if not affine:
        return xh
    return xh * gamma[None, :, None, None] + beta[None, :, None, None]


def _with_affine(xh, gamma, beta):
    return xh * gamma[None, :, None, None] + beta[None, :, None, None]


def gn_layer_norm(x, groups, gamma, beta, eps):
    return _with_affine(_standardize(x, (1, 2, 3), eps), gamma, beta)


def gn_instance_norm(x, groups, gamma, beta, eps):
    return _with_affine(_standardize(x, (2, 3), eps), gamma, beta)


def gn_batch_norm(x, groups, gamma, beta, eps):
    return _with_affine(_standardize(x, (0, 2, 3), eps), gamma, beta)


def gn_interleaved(x, groups, gamma, beta, eps):
    return _gn(x, groups, gamma, beta, eps, interleaved=True)


def gn_unbiased(x, groups, gamma, beta, eps):
    return _gn(x, groups, gamma, beta, eps, ddof=1)


def gn_no_affine(x, groups, gamma, beta, eps):
    return _gn(x, groups, gamma, beta, eps, affine=False)


def gn_eps_outside(x, groups, gamma, beta, eps):
    return _gn(x, groups, gamma, beta, eps, eps_outside=True)


def gn_default_eps(x, groups, gamma, beta, eps=1e-5):
    return _gn(x, groups, gamma, beta, 1e-5)


# ---------------------------------------------------------------- ch6_layer_norm_backward
def _ln_hat(x, eps, ddof=0, axis=1):
    mu = x.mean(axis=axis, keepdims=True)
    sd = np.sqrt(x.var(axis=axis, ddof=ddof, keepdims=True) + eps)
    return (x - mu) / sd, sd


def _ln_dx(dout, x, gamma, eps, *, pull_gamma=False, stats=True, ddof=0, axis=1):
    k = x.shape[axis]
    xh, sd = _ln_hat(x, eps, ddof, axis)
    g = dout if pull_gamma else dout * gamma
    if stats:
        dx = (k * g - g.sum(axis=axis, keepdims=True) - xh * (g * xh).sum(axis=axis, keepdims=True)) / (k * sd)
    else:
        dx = g / sd
    return dx * gamma if pull_gamma else dx


def _lnb(dout, x, gamma, eps):
    xh, _ = _ln_hat(x, eps)
    return _ln_dx(dout, x, gamma, eps), (dout * xh).sum(0), dout.sum(0)


def _replace(dout, x, gamma, eps, **which):
    dx, dgamma, dbeta = _lnb(dout, x, gamma, eps)
    return which.get("dx", dx), which.get("dgamma", dgamma), which.get("dbeta", dbeta)


def lnb_swapped(dout, x, gamma, eps):
    dx, dgamma, dbeta = _lnb(dout, x, gamma, eps)
    return dx, dbeta, dgamma


def lnb_dbeta_over_features(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dbeta=dout.sum(1))


def lnb_dbeta_not_summed(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dbeta=dout.copy())


def lnb_dgamma_over_features(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dgamma=(dout * _ln_hat(x, eps)[0]).sum(1))


def lnb_dgamma_bn_stats(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dgamma=(dout * _ln_hat(x, eps, axis=0)[0]).sum(0))


def lnb_dgamma_uses_x(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dgamma=(dout * x).sum(0))


def lnb_dgamma_unbiased(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dgamma=(dout * _ln_hat(x, eps, ddof=1)[0]).sum(0))


def lnb_dgamma_default_eps(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dgamma=(dout * _ln_hat(x, 1e-5)[0]).sum(0))


def lnb_gamma_outside(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dx=_ln_dx(dout, x, gamma, eps, pull_gamma=True))


def lnb_stop_gradient(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dx=_ln_dx(dout, x, gamma, eps, stats=False))


def lnb_batch_norm_dx(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dx=_ln_dx(dout, x, gamma, eps, axis=0))


def lnb_dx_unbiased(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dx=_ln_dx(dout, x, gamma, eps, ddof=1))


def lnb_dx_default_eps(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dx=_ln_dx(dout, x, gamma, 1e-5))


def lnb_dx_no_gamma(dout, x, gamma, eps):
    return _replace(dout, x, gamma, eps, dx=_ln_dx(dout, x, np.ones_like(gamma), eps))


# ---------------------------------------------------------------- ch6_debug_seq_norm
def _tokens(x, gamma, beta, eps, axes=(-1,), ddof=0, eps_outside=False):
    return _standardize(x, axes, eps, ddof, eps_outside) * gamma + beta


def seq_over_time(x, gamma, beta, eps):                   # the planted bug, left in
    return _tokens(x, gamma, beta, eps, axes=(1,))


def seq_whole_sequence(x, gamma, beta, eps):
    return _tokens(x, gamma, beta, eps, axes=(1, 2))


def seq_over_batch(x, gamma, beta, eps):
    return _tokens(x, gamma, beta, eps, axes=(0,))


def seq_unbiased(x, gamma, beta, eps):
    return _tokens(x, gamma, beta, eps, ddof=1)


def seq_eps_outside(x, gamma, beta, eps):
    return _tokens(x, gamma, beta, eps, eps_outside=True)


def seq_no_affine(x, gamma, beta, eps):
    return _standardize(x, (-1,), eps)


def seq_default_eps(x, gamma, beta, eps=1e-5):
    return _tokens(x, gamma, beta, 1e-5)


MISTAKES = {
    ("ch6_group_norm", "layer_norm"): gn_layer_norm,
    ("ch6_group_norm", "instance_norm"): gn_instance_norm,
    ("ch6_group_norm", "batch_norm"): gn_batch_norm,
    ("ch6_group_norm", "interleaved"): gn_interleaved,
    ("ch6_group_norm", "unbiased"): gn_unbiased,
    ("ch6_group_norm", "no_affine"): gn_no_affine,
    ("ch6_group_norm", "eps_outside"): gn_eps_outside,
    ("ch6_group_norm", "default_eps"): gn_default_eps,
    ("ch6_layer_norm_backward", "swapped"): lnb_swapped,
    ("ch6_layer_norm_backward", "dbeta_over_features"): lnb_dbeta_over_features,
    ("ch6_layer_norm_backward", "dbeta_not_summed"): lnb_dbeta_not_summed,
    ("ch6_layer_norm_backward", "dgamma_over_features"): lnb_dgamma_over_features,
    ("ch6_layer_norm_backward", "dgamma_bn_stats"): lnb_dgamma_bn_stats,
    ("ch6_layer_norm_backward", "dgamma_uses_x"): lnb_dgamma_uses_x,
    ("ch6_layer_norm_backward", "dgamma_unbiased"): lnb_dgamma_unbiased,
    ("ch6_layer_norm_backward", "dgamma_default_eps"): lnb_dgamma_default_eps,
    ("ch6_layer_norm_backward", "gamma_outside"): lnb_gamma_outside,
    ("ch6_layer_norm_backward", "stop_gradient"): lnb_stop_gradient,
    ("ch6_layer_norm_backward", "batch_norm_dx"): lnb_batch_norm_dx,
    ("ch6_layer_norm_backward", "dx_unbiased"): lnb_dx_unbiased,
    ("ch6_layer_norm_backward", "dx_default_eps"): lnb_dx_default_eps,
    ("ch6_layer_norm_backward", "dx_no_gamma"): lnb_dx_no_gamma,
    ("ch6_debug_seq_norm", "over_time"): seq_over_time,
    ("ch6_debug_seq_norm", "whole_sequence"): seq_whole_sequence,
    ("ch6_debug_seq_norm", "over_batch"): seq_over_batch,
    ("ch6_debug_seq_norm", "unbiased"): seq_unbiased,
    ("ch6_debug_seq_norm", "eps_outside"): seq_eps_outside,
    ("ch6_debug_seq_norm", "no_affine"): seq_no_affine,
    ("ch6_debug_seq_norm", "default_eps"): seq_default_eps,
}
