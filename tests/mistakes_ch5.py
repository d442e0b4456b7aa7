"""Chapter 5's declared mistakes, each made by a student function written here from scratch.

``MISTAKES[(exercise, mistake id)]`` is a wrong answer with the student's signature that makes exactly that
mistake (and is right everywhere else), written without bncourse.checks: ``tests/test_mistake_registry.py``
checks that ``check(exercise, fn)`` fails with that mistake's full message. x is (N, C, H, W); per-channel
statistics are over the axes (0, 2, 3).
"""
import numpy as np

AXES = (0, 2, 3)


def _col(v):
    return v.reshape(1, -1, 1, 1)


# ---------------------------------------------------------------- ch5_spatial_forward
def _x_hat(x, eps, axes=AXES, ddof=0, eps_where="inside", center=True, power=0.5):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, ddof=ddof, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        if eps_where == "inside":
            denom = (var + eps) ** power
        elif eps_where == "outside":
            denom = np.sqrt(var) + eps
        else:
            denom = np.sqrt(var)
        return ((x - mu) if center else x) / denom


def _forward(x, gamma, beta, eps, **how):
    return _col(gamma) * _x_hat(x, eps, **how) + _col(beta), None


def fwd_ddof1(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, ddof=1)


def fwd_no_eps(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, eps_where="missing")


def fwd_eps_outside(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, eps_where="outside")


def fwd_default_eps(x, gamma, beta, eps=1e-5):
    return _forward(x, gamma, beta, 1e-5)


def fwd_var_not_std(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, power=1.0)


def fwd_not_centered(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, center=False)


def fwd_gamma_beta_swapped(x, gamma, beta, eps):
    return _col(beta) * _x_hat(x, eps) + _col(gamma), None


def fwd_no_affine(x, gamma, beta, eps):
    return _x_hat(x, eps), None


def fwd_no_gamma(x, gamma, beta, eps):
    return _x_hat(x, eps) + _col(beta), None


def fwd_no_beta(x, gamma, beta, eps):
    return _col(gamma) * _x_hat(x, eps), None


def fwd_whole_batch(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, axes=None)


def fwd_per_sample(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, axes=(1, 2, 3))


def fwd_instance_norm(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, axes=(2, 3))


def fwd_per_position(x, gamma, beta, eps):
    return _forward(x, gamma, beta, eps, axes=0)


def fwd_reshape_without_transpose(x, gamma, beta, eps):
    rows = x.reshape(-1, x.shape[1])                      # mixes channels: C consecutive values of the flat array
    out = (rows - rows.mean(0)) / np.sqrt(rows.var(0) + eps) * gamma + beta
    return out.reshape(x.shape), None


# ---------------------------------------------------------------- ch5_spatial_backward
def _dx(dout, x, gamma, eps, axes=AXES, ddof=0, through_mean=True, through_var=True, count=None):
    """dx of out = gamma * x_hat + beta, written out step by step, with switchable mistakes."""
    m = count if count is not None else int(np.prod([x.shape[a] for a in np.atleast_1d(axes)]))
    n_var = int(np.prod([x.shape[a] for a in np.atleast_1d(axes)]))
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc ** 2).sum(axis=axes, keepdims=True) / (n_var - ddof)
    std = np.sqrt(var + eps)
    g = dout * _col(gamma)
    dxc = g / std
    if through_var:
        dvar = (g * xc).sum(axis=axes, keepdims=True) * -0.5 / std ** 3
        dxc = dxc + dvar * 2 * xc / ((n_var - ddof) if count is None else m)
    if through_mean:
        dxc = dxc - dxc.sum(axis=axes, keepdims=True) / m
    return dxc


def _grads(dout, x, gamma, eps):
    xh = _x_hat(x, eps)
    return _dx(dout, x, gamma, eps), (dout * xh).sum(AXES), dout.sum(AXES)


def _bwd(dout, x, gamma, eps, **which):
    dx, dgamma, dbeta = _grads(dout, x, gamma, eps)
    return which.get("dx", dx), which.get("dgamma", dgamma), which.get("dbeta", dbeta)


def bwd_swapped(dout, x, gamma, eps):
    dx, dgamma, dbeta = _grads(dout, x, gamma, eps)
    return dx, dbeta, dgamma


def bwd_stop_gradient(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, gamma, eps, through_mean=False, through_var=False))


def bwd_no_mean_path(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, gamma, eps, through_mean=False))


def bwd_no_var_path(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, gamma, eps, through_var=False))


def bwd_no_gamma(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, np.ones_like(gamma), eps))


def bwd_unbiased(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, gamma, eps, ddof=1))


def bwd_default_eps(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, gamma, 1e-5))


def bwd_per_sample(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, gamma, eps, axes=(1, 2, 3)))


def bwd_per_position(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dx=_dx(dout, x, gamma, eps, axes=0))


def bwd_count_n(dout, x, gamma, eps):
    # the closed form dx = gamma / (m * std) * (m * dout - sum(dout) - x_hat * sum(dout * x_hat)) with m = N
    m = x.shape[0]
    xh = _x_hat(x, eps)
    std = np.sqrt(x.var(axis=AXES, keepdims=True) + eps)
    dx = _col(gamma) / (m * std) * (m * dout - dout.sum(AXES, keepdims=True)
                                    - xh * (dout * xh).sum(AXES, keepdims=True))
    return _bwd(dout, x, gamma, eps, dx=dx)


def _dx_staged(dout, x, gamma, eps, *, mean_scale, var_scale):
    """The staged backward (through mu and var) with the 1/m of the mean path or the variance path chosen."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mu = x.mean(axis=AXES, keepdims=True)
    xc = x - mu
    var = (xc ** 2).mean(axis=AXES, keepdims=True)
    std = np.sqrt(var + eps)
    g = dout * _col(gamma)
    dvar = (g * xc).sum(axis=AXES, keepdims=True) * -0.5 / std ** 3
    dxc = g / std + dvar * 2 * xc * var_scale
    return dxc - dxc.sum(axis=AXES, keepdims=True) * mean_scale


def bwd_mean_path_no_1_over_n(dout, x, gamma, eps):
    m = x.shape[0] * x.shape[2] * x.shape[3]
    return _bwd(dout, x, gamma, eps, dx=_dx_staged(dout, x, gamma, eps, mean_scale=1.0, var_scale=1.0 / m))


def bwd_var_path_no_1_over_n(dout, x, gamma, eps):
    m = x.shape[0] * x.shape[2] * x.shape[3]
    return _bwd(dout, x, gamma, eps, dx=_dx_staged(dout, x, gamma, eps, mean_scale=1.0 / m, var_scale=1.0))


def _dgamma(dout, x, gamma, eps, value):
    return _bwd(dout, x, gamma, eps, dgamma=value)


def bwd_dgamma_wrong_axes(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, (dout * _x_hat(x, eps)).sum((1, 2, 3)))


def bwd_dgamma_all_axes(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, np.array((dout * _x_hat(x, eps)).sum()))


def bwd_dgamma_not_summed(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, dout * _x_hat(x, eps))


def bwd_dgamma_uses_x(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, (dout * x).sum(AXES))


def bwd_dgamma_default_eps(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, (dout * _x_hat(x, 1e-5)).sum(AXES))


def bwd_dgamma_unbiased(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, (dout * _x_hat(x, eps, ddof=1)).sum(AXES))


def bwd_dgamma_per_sample(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, (dout * _x_hat(x, eps, axes=(1, 2, 3))).sum(AXES))


def bwd_dgamma_batch_only(dout, x, gamma, eps):
    return _dgamma(dout, x, gamma, eps, (dout * _x_hat(x, eps)).sum(0))


def bwd_dbeta_wrong_axes(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dbeta=dout.sum((1, 2, 3)))


def bwd_dbeta_all_axes(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dbeta=np.array(dout.sum()))


def bwd_dbeta_not_summed(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dbeta=dout.copy())


def bwd_dbeta_batch_only(dout, x, gamma, eps):
    return _bwd(dout, x, gamma, eps, dbeta=dout.sum(0))


# ---------------------------------------------------------------- ch5_fold_conv
def _fold(weight, bias, gamma, beta, mean, var, eps, *, w_scale=None, b_new=None):
    a = gamma / np.sqrt(var + eps)
    w = weight * (a if w_scale is None else w_scale)[:, None, None, None]
    b = a * (bias - mean) + beta if b_new is None else b_new
    return w, b


def fold_var_not_std(weight, bias, gamma, beta, mean, var, eps):
    return _fold(weight, bias, gamma, beta, mean, var, eps, w_scale=gamma / (var + eps))


def fold_gamma_only(weight, bias, gamma, beta, mean, var, eps):
    return _fold(weight, bias, gamma, beta, mean, var, eps, w_scale=gamma)


def fold_w_no_eps(weight, bias, gamma, beta, mean, var, eps):
    with np.errstate(divide="ignore"):
        return _fold(weight, bias, gamma, beta, mean, var, eps, w_scale=gamma / np.sqrt(var))


def fold_w_default_eps(weight, bias, gamma, beta, mean, var, eps=1e-5):
    return _fold(weight, bias, gamma, beta, mean, var, eps, w_scale=gamma / np.sqrt(var + 1e-5))


def fold_forgets_mean(weight, bias, gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return _fold(weight, bias, gamma, beta, mean, var, eps, b_new=a * bias + beta)


def fold_bias_unscaled(weight, bias, gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return _fold(weight, bias, gamma, beta, mean, var, eps, b_new=bias - a * mean + beta)


def fold_mean_unscaled(weight, bias, gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return _fold(weight, bias, gamma, beta, mean, var, eps, b_new=a * bias - mean + beta)


def fold_no_beta(weight, bias, gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return _fold(weight, bias, gamma, beta, mean, var, eps, b_new=a * (bias - mean))


def fold_b_no_eps(weight, bias, gamma, beta, mean, var, eps):
    # the kernel is right (a with eps), the bias forgets eps (the constant channel makes it infinite)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _fold(weight, bias, gamma, beta, mean, var, eps, b_new=gamma / np.sqrt(var) * (bias - mean) + beta)


# ---------------------------------------------------------------- ch5_eval_backward
def _eval(dout, x, gamma, rm, rv, eps, **which):
    scale = 1 / np.sqrt(rv + eps)
    xh = (x - _col(rm)) * _col(scale)
    dx = dout * _col(gamma * scale)
    out = {"dx": dx, "dgamma": (dout * xh).sum(AXES), "dbeta": dout.sum(AXES)}
    out.update(which)
    return out["dx"], out["dgamma"], out["dbeta"]


def eval_swapped(dout, x, gamma, rm, rv, eps):
    dx, dgamma, dbeta = _eval(dout, x, gamma, rm, rv, eps)
    return dx, dbeta, dgamma


def eval_dbeta_batch_only(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dbeta=dout.sum(0))


def eval_dgamma_batch_stats(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dgamma=(dout * _x_hat(x, eps)).sum(AXES))


def eval_dgamma_batch_only(dout, x, gamma, rm, rv, eps):
    xh = (x - _col(rm)) / np.sqrt(_col(rv) + eps)
    return _eval(dout, x, gamma, rm, rv, eps, dgamma=(dout * xh).sum(0))


def eval_dgamma_uses_x(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dgamma=(dout * x).sum(AXES))


def eval_dgamma_no_eps(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dgamma=(dout * (x - _col(rm)) / np.sqrt(_col(rv))).sum(AXES))


def eval_dgamma_default_eps(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dgamma=(dout * (x - _col(rm)) / np.sqrt(_col(rv) + 1e-5)).sum(AXES))


def eval_training_backward(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dx=_dx(dout, x, gamma, eps))


def eval_training_form_running(dout, x, gamma, rm, rv, eps):
    # the training-mode closed form, fed the running statistics instead of the batch's
    m = x.shape[0] * x.shape[2] * x.shape[3]
    std = np.sqrt(_col(rv) + eps)
    xh = (x - _col(rm)) / std
    dx = _col(gamma) / (m * std) * (m * dout - dout.sum(AXES, keepdims=True) - xh * (dout * xh).sum(AXES, keepdims=True))
    return _eval(dout, x, gamma, rm, rv, eps, dx=dx)


def eval_dx_no_gamma(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dx=dout / np.sqrt(_col(rv) + eps))


def eval_dx_var_not_std(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dx=dout * _col(gamma / (rv + eps)))


def eval_dx_no_eps(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dx=dout * _col(gamma / np.sqrt(rv)))


def eval_dx_default_eps(dout, x, gamma, rm, rv, eps):
    return _eval(dout, x, gamma, rm, rv, eps, dx=dout * _col(gamma / np.sqrt(rv + 1e-5)))


MISTAKES = {
    ("ch5_spatial_forward", "ddof1"): fwd_ddof1,
    ("ch5_spatial_forward", "no_eps"): fwd_no_eps,
    ("ch5_spatial_forward", "eps_outside"): fwd_eps_outside,
    ("ch5_spatial_forward", "default_eps"): fwd_default_eps,
    ("ch5_spatial_forward", "var_not_std"): fwd_var_not_std,
    ("ch5_spatial_forward", "not_centred"): fwd_not_centered,
    ("ch5_spatial_forward", "gamma_beta_swapped"): fwd_gamma_beta_swapped,
    ("ch5_spatial_forward", "no_affine"): fwd_no_affine,
    ("ch5_spatial_forward", "no_gamma"): fwd_no_gamma,
    ("ch5_spatial_forward", "no_beta"): fwd_no_beta,
    ("ch5_spatial_forward", "whole_batch"): fwd_whole_batch,
    ("ch5_spatial_forward", "per_sample"): fwd_per_sample,
    ("ch5_spatial_forward", "instance_norm"): fwd_instance_norm,
    ("ch5_spatial_forward", "per_position"): fwd_per_position,
    ("ch5_spatial_forward", "reshape_without_transpose"): fwd_reshape_without_transpose,
    ("ch5_spatial_backward", "swapped"): bwd_swapped,
    ("ch5_spatial_backward", "stop_gradient"): bwd_stop_gradient,
    ("ch5_spatial_backward", "no_mean_path"): bwd_no_mean_path,
    ("ch5_spatial_backward", "no_var_path"): bwd_no_var_path,
    ("ch5_spatial_backward", "dx_no_gamma"): bwd_no_gamma,
    ("ch5_spatial_backward", "unbiased"): bwd_unbiased,
    ("ch5_spatial_backward", "dx_default_eps"): bwd_default_eps,
    ("ch5_spatial_backward", "dx_per_sample"): bwd_per_sample,
    ("ch5_spatial_backward", "per_position"): bwd_per_position,
    ("ch5_spatial_backward", "count_n"): bwd_count_n,
    ("ch5_spatial_backward", "mean_path_no_1_over_n"): bwd_mean_path_no_1_over_n,
    ("ch5_spatial_backward", "var_path_no_1_over_n"): bwd_var_path_no_1_over_n,
    ("ch5_spatial_backward", "dgamma_wrong_axes"): bwd_dgamma_wrong_axes,
    ("ch5_spatial_backward", "dgamma_all_axes"): bwd_dgamma_all_axes,
    ("ch5_spatial_backward", "dgamma_not_summed"): bwd_dgamma_not_summed,
    ("ch5_spatial_backward", "dgamma_uses_x"): bwd_dgamma_uses_x,
    ("ch5_spatial_backward", "dgamma_default_eps"): bwd_dgamma_default_eps,
    ("ch5_spatial_backward", "dgamma_unbiased"): bwd_dgamma_unbiased,
    ("ch5_spatial_backward", "dgamma_per_sample"): bwd_dgamma_per_sample,
    ("ch5_spatial_backward", "dgamma_batch_only"): bwd_dgamma_batch_only,
    ("ch5_spatial_backward", "dbeta_wrong_axes"): bwd_dbeta_wrong_axes,
    ("ch5_spatial_backward", "dbeta_all_axes"): bwd_dbeta_all_axes,
    ("ch5_spatial_backward", "dbeta_not_summed"): bwd_dbeta_not_summed,
    ("ch5_spatial_backward", "dbeta_batch_only"): bwd_dbeta_batch_only,
    ("ch5_fold_conv", "var_not_std"): fold_var_not_std,
    ("ch5_fold_conv", "gamma_only"): fold_gamma_only,
    ("ch5_fold_conv", "w_no_eps"): fold_w_no_eps,
    ("ch5_fold_conv", "w_default_eps"): fold_w_default_eps,
    ("ch5_fold_conv", "forgets_mean"): fold_forgets_mean,
    ("ch5_fold_conv", "bias_unscaled"): fold_bias_unscaled,
    ("ch5_fold_conv", "mean_unscaled"): fold_mean_unscaled,
    ("ch5_fold_conv", "no_beta"): fold_no_beta,
    ("ch5_fold_conv", "b_no_eps"): fold_b_no_eps,
    ("ch5_eval_backward", "swapped"): eval_swapped,
    ("ch5_eval_backward", "dbeta_batch_only"): eval_dbeta_batch_only,
    ("ch5_eval_backward", "dgamma_batch_stats"): eval_dgamma_batch_stats,
    ("ch5_eval_backward", "dgamma_batch_only"): eval_dgamma_batch_only,
    ("ch5_eval_backward", "dgamma_uses_x"): eval_dgamma_uses_x,
    ("ch5_eval_backward", "dgamma_no_eps"): eval_dgamma_no_eps,
    ("ch5_eval_backward", "dgamma_default_eps"): eval_dgamma_default_eps,
    ("ch5_eval_backward", "training_backward"): eval_training_backward,
    ("ch5_eval_backward", "training_form_running"): eval_training_form_running,
    ("ch5_eval_backward", "dx_no_gamma"): eval_dx_no_gamma,
    ("ch5_eval_backward", "dx_var_not_std"): eval_dx_var_not_std,
    ("ch5_eval_backward", "dx_no_eps"): eval_dx_no_eps,
    ("ch5_eval_backward", "dx_default_eps"): eval_dx_default_eps,
}


# ---------------------------------------------------------------- ch5_batchnorm2d and ch5_debug_bn2d: modules
import torch  # noqa: E402  (the module exercises only)
from torch import nn  # noqa: E402


class _BatchNorm2d(nn.Module):
    """A from-scratch BatchNorm2d (num_batches_tracked, momentum=None) that makes the mistake named by ``slip``."""

    slip = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.full((num_features,), 1.0 if self.slip == "mean_starts_at_1" else 0.0))
        self.register_buffer("running_var", torch.full((num_features,), 0.0 if self.slip == "var_starts_at_0" else 1.0))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _eps(self):
        return 1e-5 if self.slip == "default_eps" else self.eps

    def _normalize(self, x, mean, var, eps):
        slip = self.slip
        if slip == "no_eps":
            return (x - mean) / torch.sqrt(var)
        if slip == "eps_outside":
            return (x - mean) / (torch.sqrt(var) + eps)
        if slip == "var_not_std":
            return (x - mean) / (var + eps)
        if slip == "not_centred":
            return x / torch.sqrt(var + eps)
        return (x - mean) / torch.sqrt(var + eps)

    def forward(self, x):
        slip, p = self.slip, (1, -1, 1, 1)
        channel_axes = (0, 2, 3)
        if self.training or slip == "eval_batch_stats":
            axes = {"whole_batch": (0, 1, 2, 3), "per_sample": (1, 2, 3), "instance_norm": (2, 3),
                    "per_position": (0,)}.get(slip, channel_axes)
            mean = x.mean(dim=axes, keepdim=True)
            var = x.var(dim=axes, unbiased=slip == "ddof1", keepdim=True)
            if slip in ("stop_gradient", "mean_without_grad"):
                mean = mean.detach()
            if slip in ("stop_gradient", "var_without_grad"):
                var = var.detach()
        else:
            mean, var = self.running_mean.reshape(p), self.running_var.reshape(p)
        if self.training or slip == "updated_in_eval":
            with torch.no_grad():
                if self.training:
                    self.num_batches_tracked += 1
                if self.momentum is None:
                    w = 0.1 if slip == "momentum_none_fixed" else 1.0 / float(self.num_batches_tracked)
                else:
                    w = self.momentum
                if slip == "momentum_reversed":
                    w = 1.0 - w
                batch_mean = x.mean(dim=channel_axes)
                batch_var = x.var(dim=channel_axes, unbiased=False)
                m = x.numel() // x.shape[1] if slip != "bessel_batch_size" else x.shape[0]
                stored = batch_var if slip == "var_no_bessel" else batch_var * m / (m - 1)
                new_mean = {"mean_replaced": batch_mean, "mean_not_updated": self.running_mean}.get(
                    slip, (1 - w) * self.running_mean + w * batch_mean)
                new_var = {"var_replaced": stored, "var_not_updated": self.running_var}.get(
                    slip, (1 - w) * self.running_var + w * stored)
                self.running_mean.copy_(new_mean)
                self.running_var.copy_(new_var)
        eps = self._eps()
        if not self.training and slip == "eval_no_eps":
            x_hat = (x - mean) / torch.sqrt(var)
        else:
            x_hat = self._normalize(x, mean, var, eps)
        gamma, beta = self.weight.reshape(p), self.bias.reshape(p)
        if slip == "gamma_beta_swapped":
            return beta * x_hat + gamma
        if slip == "no_affine":
            return x_hat
        if slip == "no_gamma":
            return x_hat + beta
        if slip == "no_beta":
            return gamma * x_hat
        return gamma * x_hat + beta


def _module_with(slip):
    return type(f"BatchNorm2d_{slip}", (_BatchNorm2d,), {"slip": slip})


MODULE_SLIPS = ("ddof1", "no_eps", "eps_outside", "default_eps", "var_not_std", "not_centred", "gamma_beta_swapped",
                "no_affine", "no_gamma", "no_beta", "whole_batch", "per_sample", "instance_norm", "per_position",
                "stop_gradient", "mean_without_grad", "var_without_grad", "mean_starts_at_1", "var_starts_at_0",
                "momentum_reversed", "bessel_batch_size", "var_no_bessel", "mean_replaced", "var_replaced",
                "mean_not_updated", "var_not_updated", "updated_in_eval", "eval_batch_stats", "eval_no_eps")

for _name in ("ch5_batchnorm2d", "ch5_debug_bn2d"):
    for _slip in MODULE_SLIPS:
        MISTAKES[(_name, _slip)] = _module_with(_slip)

MISTAKES[("ch5_batchnorm2d", "momentum_none_fixed")] = _module_with("momentum_none_fixed")

#: an independent right answer for each module exercise (the solutions notebook has its own)
CORRECT = {"ch5_batchnorm2d": _module_with(""), "ch5_debug_bn2d": _module_with("")}
