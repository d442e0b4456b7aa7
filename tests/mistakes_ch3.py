"""Chapter 3: one wrong implementation per declared mistake, written as a student would (see test_mistake_registry).

Plain NumPy / PyTorch written here, nothing from ``bncourse``. Each family is one student's code with one knob per
mistake: the forward pass, the backward pass (graded dbeta, then dgamma, then dx, so a dx mistake keeps the
parameter gradients right), the module (autograd through the forward), the two derivations.
"""
import numpy as np
import torch
from torch import nn


# ---------------------------------------------------------------- bn_forward
def _forward(mistake=None):
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        axis = 1 if mistake == "per_sample" else (None if mistake == "whole_batch" else 0)
        mu = x.mean(axis=axis, keepdims=True)
        var = x.var(axis=axis, ddof=1 if mistake == "ddof1" else 0, keepdims=True)
        e = 1e-5 if mistake == "default_eps" else eps
        if mistake == "no_eps":
            std = np.sqrt(var)
        elif mistake == "eps_outside":
            std = np.sqrt(var) + e
        elif mistake == "var_not_std":
            std = var + e
        else:
            std = np.sqrt(var + e)
        x_hat = (x if mistake == "not_centred" else x - mu) / std
        out = {"gamma_beta_swapped": lambda: beta * x_hat + gamma, "no_affine": lambda: x_hat,
               "no_gamma": lambda: x_hat + beta, "no_beta": lambda: gamma * x_hat}.get(
            mistake, lambda: gamma * x_hat + beta)()
        return out, (x_hat, std)
    return batchnorm_forward


FORWARD_IDS = ("ddof1", "no_eps", "eps_outside", "default_eps", "var_not_std", "not_centred", "gamma_beta_swapped",
               "no_affine", "no_gamma", "no_beta", "whole_batch", "per_sample")
MISTAKES = {("bn_forward", k): _forward(k) for k in FORWARD_IDS}


# ---------------------------------------------------------------- bn_backward and bn_backward_staged
def _backward(mistake=None):
    def batchnorm_backward(dout, x, gamma, eps=1e-5):
        def xhat_and_inv(axis=0, ddof=0, e=eps):
            n = x.shape[axis]
            mu = x.mean(axis=axis, keepdims=True)
            var = ((x - mu) ** 2).sum(axis=axis, keepdims=True) / (n - ddof)
            inv = 1.0 / np.sqrt(var + e)
            return (x - mu) * inv, inv, n, ddof

        # the parameter gradients
        x_hat, inv, n, _ = xhat_and_inv()
        g_hat = {"dgamma_default_eps": lambda: xhat_and_inv(e=1e-5)[0],
                 "dgamma_unbiased": lambda: xhat_and_inv(ddof=1)[0],
                 "dgamma_per_sample": lambda: xhat_and_inv(axis=1)[0],
                 "dgamma_uses_x": lambda: x}.get(mistake, lambda: x_hat)()
        dgamma = {"dgamma_wrong_axes": lambda: (dout * g_hat).sum(axis=1),
                  "dgamma_all_axes": lambda: np.array((dout * g_hat).sum()),
                  "dgamma_not_summed": lambda: dout * g_hat,
                  "swapped": lambda: dout.sum(axis=0)}.get(mistake, lambda: (dout * g_hat).sum(axis=0))()
        dbeta = {"dbeta_wrong_axes": lambda: dout.sum(axis=1),
                 "dbeta_all_axes": lambda: np.array(dout.sum()),
                 "dbeta_not_summed": lambda: dout.copy(),
                 "swapped": lambda: (dout * x_hat).sum(axis=0)}.get(mistake, lambda: dout.sum(axis=0))()

        # dx, node by node
        axis = 1 if mistake == "dx_per_sample" else 0
        xh, inv, n, ddof = xhat_and_inv(axis=axis, ddof=1 if mistake == "unbiased" else 0,
                                        e=1e-5 if mistake == "dx_default_eps" else eps)
        xc = xh / inv
        dxh = dout if mistake == "dx_no_gamma" else dout * gamma
        dxc = dxh * inv
        if mistake not in ("stop_gradient", "no_var_path"):
            dvar = (dxh * xc).sum(axis=axis, keepdims=True) * -0.5 * inv ** 3
            dxc = dxc + dvar * 2 * xc / (1 if mistake == "var_path_no_1_over_n" else n - ddof)
        if mistake not in ("stop_gradient", "no_mean_path"):
            dmu = -dxc.sum(axis=axis, keepdims=True)
            dxc = dxc + (dmu if mistake == "mean_path_no_1_over_n" else dmu / n)
        return dxc, dgamma, dbeta
    return batchnorm_backward


BACKWARD_IDS = ("stop_gradient", "no_mean_path", "no_var_path", "mean_path_no_1_over_n", "var_path_no_1_over_n",
                "dx_no_gamma", "unbiased", "dx_default_eps",
                "dx_per_sample", "dgamma_wrong_axes", "dgamma_all_axes", "dgamma_not_summed", "dbeta_wrong_axes",
                "dbeta_all_axes", "dbeta_not_summed", "swapped", "dgamma_uses_x", "dgamma_default_eps",
                "dgamma_unbiased", "dgamma_per_sample")
for _name in ("bn_backward", "bn_backward_staged"):
    MISTAKES.update({(_name, k): _backward(k) for k in BACKWARD_IDS})


# ---------------------------------------------------------------- bn_module and ch3_debug_running_stats
def _module(mistake=None):
    class BatchNorm1d(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
            super().__init__()
            self.eps, self.momentum, self.affine = eps, momentum, affine
            if affine:
                self.weight = nn.Parameter(torch.ones(num_features))
                self.bias = nn.Parameter(torch.zeros(num_features))
            else:
                self.weight = self.bias = None
            if track_running_stats:
                start_mean = 1.0 if mistake == "mean_starts_at_1" else 0.0
                start_var = 0.0 if mistake == "var_starts_at_0" else 1.0
                self.register_buffer("running_mean", torch.full((num_features,), start_mean))
                self.register_buffer("running_var", torch.full((num_features,), start_var))
                self.register_buffer("num_batches_tracked", torch.tensor(0))
            else:
                self.running_mean = self.running_var = self.num_batches_tracked = None

        def _normalize(self, x, mean, var, eps):
            if mistake == "no_eps":
                std = var.sqrt()
            elif mistake == "eps_outside":
                std = var.sqrt() + eps
            elif mistake == "var_not_std":
                std = var + eps
            else:
                std = (var + eps).sqrt()
            x_hat = (x if mistake == "not_centred" else x - mean) / std
            if not self.affine:
                return x_hat
            return {"gamma_beta_swapped": lambda: self.bias * x_hat + self.weight, "no_affine": lambda: x_hat,
                    "no_gamma": lambda: x_hat + self.bias, "no_beta": lambda: self.weight * x_hat}.get(
                mistake, lambda: self.weight * x_hat + self.bias)()

        def forward(self, x):
            eps = 1e-5 if mistake == "default_eps" else self.eps
            use_batch = self.training or self.running_mean is None or mistake == "eval_batch_stats"
            if self.running_mean is None and not self.training and mistake == "no_running_stats_in_eval":
                return self.weight * x + self.bias if self.affine else x
            if mistake == "whole_batch":
                mean, var = x.mean(), x.var(unbiased=False)
            elif mistake == "per_sample":
                mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
            else:
                mean, var = x.mean(0), x.var(0, unbiased=mistake == "ddof1")
            if mistake in ("stop_gradient", "mean_without_grad"):
                mean = mean.detach()
            if mistake in ("stop_gradient", "var_without_grad"):
                var = var.detach()
            update = self.running_mean is not None and (self.training or mistake == "updated_in_eval")
            if update:
                n = x.shape[0]
                if self.training:
                    self.num_batches_tracked += 1
                if self.momentum is None:            # the cumulative average (or, the mistake, a fixed 0.1)
                    m = 0.1 if mistake == "momentum_none_fixed" else 1.0 / int(self.num_batches_tracked)
                else:
                    m = self.momentum
                m = 1 - m if mistake == "momentum_reversed" else m
                stored_var = x.var(0, unbiased=mistake != "var_no_bessel")
                with torch.no_grad():
                    if mistake == "mean_replaced":
                        self.running_mean.copy_(x.mean(0))
                    elif mistake != "mean_not_updated":
                        self.running_mean.copy_((1 - m) * self.running_mean + m * x.mean(0))
                    if mistake == "var_replaced":
                        self.running_var.copy_(stored_var)
                    elif mistake != "var_not_updated":
                        self.running_var.copy_((1 - m) * self.running_var + m * stored_var)
                del n
            if not use_batch:
                mean, var = self.running_mean, self.running_var
                if mistake == "eval_no_eps":
                    return self.weight * (x - mean) / var.sqrt() + self.bias if self.affine else (x - mean) / var.sqrt()
            return self._normalize(x, mean, var, eps)
    return BatchNorm1d


MODULE_IDS = ("ddof1", "no_eps", "eps_outside", "default_eps", "var_not_std", "not_centred", "gamma_beta_swapped",
              "no_affine", "no_gamma", "no_beta", "whole_batch", "per_sample", "stop_gradient", "mean_without_grad",
              "var_without_grad", "no_running_stats_in_eval", "mean_starts_at_1", "var_starts_at_0",
              "momentum_reversed", "var_no_bessel", "mean_replaced", "var_replaced", "mean_not_updated",
              "var_not_updated", "updated_in_eval", "eval_batch_stats", "eval_no_eps")
for _name in ("bn_module", "ch3_debug_running_stats"):
    MISTAKES.update({(_name, k): _module(k) for k in MODULE_IDS})
MISTAKES[("bn_module", "momentum_none_fixed")] = _module("momentum_none_fixed")


# ---------------------------------------------------------------- ch3_bn_stat_grads
def _stat_grads(mistake=None):
    def batchnorm_stat_grads(dout, x, gamma, eps=1e-5):
        e = 1e-5 if mistake == "dvar_default_eps" else eps
        xc = x - x.mean(axis=0)
        var = (xc ** 2).mean(axis=0)
        g = dout * gamma
        dvar_terms = -0.5 * (dout if mistake == "dvar_no_gamma" else g) * xc * (var + e) ** -1.5
        if mistake == "dvar_exponent":
            dvar_terms = -0.5 * g * xc * (var + e) ** -0.5
        if mistake == "dvar_no_half":
            dvar_terms = g * xc * (var + e) ** -1.5
        if mistake == "dvar_sign":
            dvar_terms = -dvar_terms
        dvar = dvar_terms if mistake == "dvar_not_summed" else dvar_terms.sum(axis=0)
        dmu_terms = -(dout if mistake == "dmu_no_gamma" else g) / np.sqrt(var + eps)
        if mistake == "dmu_sign":
            dmu_terms = -dmu_terms
        if mistake == "dmu_no_std":
            dmu_terms = -g
        dmu = dmu_terms if mistake == "dmu_not_summed" else dmu_terms.sum(axis=0)
        if mistake == "dmu_divided_by_n":
            dmu = dmu / len(x)
        return (dvar, dmu) if mistake == "swapped" else (dmu, dvar)
    return batchnorm_stat_grads


MISTAKES.update({("ch3_bn_stat_grads", k): _stat_grads(k) for k in (
    "swapped", "dvar_no_gamma", "dvar_exponent", "dvar_no_half", "dvar_sign", "dvar_not_summed", "dvar_default_eps",
    "dmu_no_gamma", "dmu_sign", "dmu_no_std", "dmu_not_summed", "dmu_divided_by_n")})


# ---------------------------------------------------------------- ch3_merge_stats
def _merge(mistake=None):
    def merge_stats(mean_a, var_a, n_a, mean_b, var_b, n_b):
        n = n_a + n_b
        mean = (mean_a + mean_b) / 2 if mistake == "mean_equal_weights" else (n_a * mean_a + n_b * mean_b) / n
        gap = (mean_a - mean_b) ** 2
        if mistake == "plain_average":
            return mean, (var_a + var_b) / 2
        within = (var_a + var_b) / 2 if mistake == "equal_weights" else (n_a * var_a + n_b * var_b) / n
        between = {"no_between": 0.0 * gap, "between_weight": gap / 4}.get(mistake, n_a * n_b * gap / n ** 2)
        var = within + between
        if mistake == "unbiased":
            var = var * n / (n - 1)
        return (var, mean) if mistake == "swapped" else (mean, var)
    return merge_stats


MISTAKES.update({("ch3_merge_stats", k): _merge(k) for k in (
    "swapped", "mean_equal_weights", "no_between", "plain_average", "equal_weights", "unbiased", "between_weight")})

# ---------------------------------------------------------------- predictions: the committed numbers
MISTAKES.update({
    ("ch3_predict_eps", "eps_negligible"): 1.0,
    ("ch3_predict_eps", "divided_by_sqrt_eps"): 0.63,
    ("ch3_predict_eps", "variance_ratio"): 0.286,
    ("ch3_predict_scale", "unchanged"): 1,
    ("ch3_predict_scale", "grows"): 10.0,
    ("ch3_predict_scale", "squared"): np.float32(0.01),
})

CORRECT = {"bn_forward": _forward(), "bn_backward": _backward(), "bn_backward_staged": _backward(),
           "bn_module": _module(), "ch3_debug_running_stats": _module(), "ch3_bn_stat_grads": _stat_grads(),
           "ch3_merge_stats": _merge()}
