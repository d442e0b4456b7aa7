"""Chapter 5 self-checks: the reference solutions pass, and each named mistake gets its message."""
import numpy as np
import pytest
import torch
from torch import nn

from bncourse.checks import REGISTRY, CheckFailure, check
from check_helpers import check_fails


# ---------------------------------------------------------------- reference solutions (independent code)
def spatial_forward(x, gamma, beta, eps=1e-5, axes=(0, 2, 3), ddof=0, gamma_shape=(1, -1, 1, 1)):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, ddof=ddof, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma.reshape(gamma_shape) * x_hat + beta.reshape(gamma_shape), None


def spatial_backward(dout, x, gamma, eps=1e-5):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.zeros_like(gt, requires_grad=True)
    nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=eps).backward(torch.tensor(dout))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.inner = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.weight, self.bias = self.inner.weight, self.inner.bias

    @property
    def running_mean(self):
        return self.inner.running_mean

    @property
    def running_var(self):
        return self.inner.running_var

    def forward(self, x):
        self.inner.train(self.training)
        return self.inner(x)


def fold_conv(weight, bias, gamma, beta, mean, var, eps):
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2]).double()
    bn = nn.BatchNorm2d(weight.shape[0], eps=eps).double().eval()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight)); conv.bias.copy_(torch.from_numpy(bias))
        bn.weight.copy_(torch.from_numpy(gamma)); bn.bias.copy_(torch.from_numpy(beta))
        bn.running_mean.copy_(torch.from_numpy(mean)); bn.running_var.copy_(torch.from_numpy(var))
    from bncourse.folding import fold_bn_into_conv
    folded = fold_bn_into_conv(conv, bn)
    return folded.weight.detach().numpy(), folded.bias.detach().numpy()


REFERENCES = {"ch5_spatial_forward": spatial_forward, "ch5_spatial_backward": spatial_backward,
              "ch5_batchnorm2d": BatchNorm2d, "ch5_fold_conv": fold_conv}


def test_all_registered():
    assert set(REFERENCES) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    check(name, REFERENCES[name])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes_fresh_seeds(name):
    for seed in (1, 2):
        check(name, REFERENCES[name], seed=seed, quiet=True)


def test_fold_reference_matches_conv_then_bn():
    # the checker's own reference against an actual conv -> BN in eval mode
    from bncourse.checks.ch5_cnn import fold_reference
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    g, be, m, v = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    wf, bf = fold_reference(w, b, g, be, m, v, 1e-5)
    x = torch.from_numpy(rng.normal(size=(2, 2, 6, 6)))
    y = nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b))
    y = nn.functional.batch_norm(y, torch.from_numpy(m), torch.from_numpy(v), torch.from_numpy(g),
                                 torch.from_numpy(be), training=False, eps=1e-5)
    assert torch.allclose(nn.functional.conv2d(x, torch.from_numpy(wf), torch.from_numpy(bf)), y, atol=1e-10)


_fails = check_fails


# ---------------------------------------------------------------- spatial forward
def test_forward_per_position_statistics():
    _fails("ch5_spatial_forward", lambda x, g, b, eps: spatial_forward(x, g, b, eps, axes=(0,)),
           "over the batch axis only", "axis=(0, 2, 3)")


def test_forward_per_sample_statistics():
    _fails("ch5_spatial_forward", lambda x, g, b, eps: spatial_forward(x, g, b, eps, axes=(1, 2, 3)),
           "per sample over (C, H, W)")


def test_forward_instance_norm():
    _fails("ch5_spatial_forward", lambda x, g, b, eps: spatial_forward(x, g, b, eps, axes=(2, 3)), "instance norm")


def test_forward_gamma_broadcast_over_wrong_axis():
    # gamma of shape (C,) broadcast along W: an error for W != C (a hint), a wrong value for W == C
    _fails("ch5_spatial_forward", lambda x, g, b, eps: spatial_forward(x, g, b, eps, gamma_shape=(-1,)),
           "broadcast along the channel axis 1", "(1, C, 1, 1)")

    def only_square(x, g, b, eps):   # correct unless W == C: reaches the value-based diagnosis
        shape = (-1,) if x.shape[3] == x.shape[1] else (1, -1, 1, 1)
        return spatial_forward(x, g, b, eps, gamma_shape=shape)
    _fails("ch5_spatial_forward", only_square, "is wrong", "broadcast along the last axis W")


def test_forward_reshape_without_transpose():
    def wrong(x, g, b, eps):
        n, c, h, w = x.shape
        rows = x.reshape(-1, c)
        out, _ = spatial_forward(rows[:, :, None, None], g, b, eps)
        return out.reshape(x.shape), None
    _fails("ch5_spatial_forward", wrong, "transpose to (N, H, W, C)")


def test_forward_unbiased_variance():
    _fails("ch5_spatial_forward", lambda x, g, b, eps: spatial_forward(x, g, b, eps, ddof=1), "unbiased variance")


# ---------------------------------------------------------------- spatial backward
def test_backward_dgamma_summed_over_batch_only():
    def wrong(dout, x, gamma, eps):
        dx, dg, db = spatial_backward(dout, x, gamma, eps)
        xh = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + eps)
        return dx, (dout * xh).sum(axis=0), db
    _fails("ch5_spatial_backward", wrong, "dgamma has shape", "sum dout * x_hat over (N, H, W)")


def test_backward_dbeta_summed_over_batch_only():
    def wrong(dout, x, gamma, eps):
        dx, dg, db = spatial_backward(dout, x, gamma, eps)
        return dx, dg, dout.sum(axis=0)
    _fails("ch5_spatial_backward", wrong, "dbeta has shape", "sum dout over (N, H, W)")


def test_backward_per_position_dx():
    def wrong(dout, x, gamma, eps):
        _, dg, db = spatial_backward(dout, x, gamma, eps)
        xt = torch.tensor(x, requires_grad=True)
        mu = xt.mean(0, keepdim=True)
        var = ((xt - mu) ** 2).mean(0, keepdim=True)
        out = torch.tensor(gamma).reshape(1, -1, 1, 1) * (xt - mu) / torch.sqrt(var + eps)
        out.backward(torch.tensor(dout))
        return xt.grad.numpy(), dg, db
    _fails("ch5_spatial_backward", wrong, "dx is wrong", "per (C, H, W) position")


def test_backward_stop_gradient():
    def wrong(dout, x, gamma, eps):
        _, dg, db = spatial_backward(dout, x, gamma, eps)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        return dout * gamma.reshape(1, -1, 1, 1) / np.sqrt(var + eps), dg, db
    _fails("ch5_spatial_backward", wrong, "stop-gradient")


# ---------------------------------------------------------------- BatchNorm2d module
class _Scratch(nn.Module):
    """A from-scratch BatchNorm2d with switchable mistakes."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, axes=(0, 2, 3), bessel="m", param_shape="C"):
        super().__init__()
        self.eps, self.momentum, self.axes, self.bessel = eps, momentum, axes, bessel
        shape = (num_features,) if param_shape == "C" else (num_features, 1, 1)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        c = x.shape[1]
        g, b = self.weight.reshape(1, c, 1, 1), self.bias.reshape(1, c, 1, 1)
        if self.training:
            mu = x.mean(dim=self.axes, keepdim=True)
            var = ((x - mu) ** 2).mean(dim=self.axes, keepdim=True)
            with torch.no_grad():
                n = x.shape[0] if self.bessel == "N" else x.numel() // c
                bm = x.mean(dim=(0, 2, 3))
                bv = x.var(dim=(0, 2, 3), unbiased=False) * n / (n - 1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * bm)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * bv)
        else:
            mu = self.running_mean.reshape(1, c, 1, 1)
            var = self.running_var.reshape(1, c, 1, 1)
        return g * (x - mu) / torch.sqrt(var + self.eps) + b


def test_scratch_module_without_mistakes_passes():
    check("ch5_batchnorm2d", _Scratch, quiet=True)


def test_module_per_position_statistics():
    _fails("ch5_batchnorm2d", lambda c, eps, momentum: _Scratch(c, eps, momentum, axes=(0,)),
           "the output in training mode is wrong", "axis=(0, 2, 3)")


def test_module_bessel_with_batch_size():
    _fails("ch5_batchnorm2d", lambda c, eps, momentum: _Scratch(c, eps, momentum, bessel="N"),
           "running_var after the first", "m = N * H * W")


def test_module_gamma_per_position():
    _fails("ch5_batchnorm2d", lambda c, eps, momentum: _Scratch(c, eps, momentum, param_shape="CHW"),
           "one gamma and one beta per channel")


def test_module_not_a_module():
    _fails("ch5_batchnorm2d", lambda c, eps, momentum: object(), "torch.nn.Module")


# ---------------------------------------------------------------- folding
def _fold(axis_ok=True, mean_ok=True, scale_bias=True):
    def fn(weight, bias, gamma, beta, mean, var, eps):
        a = gamma / np.sqrt(var + eps)
        w = weight * (a.reshape(-1, 1, 1, 1) if axis_ok else a.reshape(1, -1, 1, 1))
        if not mean_ok:
            return w, a * bias + beta
        if not scale_bias:
            return w, bias - a * mean + beta
        return w, a * (bias - mean) + beta
    return fn


def test_fold_wrong_axis():
    # an error for C_out != C_in (a hint), a wrong value for a square kernel
    _fails("ch5_fold_conv", _fold(axis_ok=False), "weight * a.reshape(-1, 1, 1, 1)")

    def only_square(weight, *rest):
        return _fold(axis_ok=weight.shape[0] != weight.shape[1])(weight, *rest)
    _fails("ch5_fold_conv", only_square, "folded_weight is wrong", "input-channel axis")


def test_fold_forgets_mean():
    _fails("ch5_fold_conv", _fold(mean_ok=False), "forgets the running mean")


def test_fold_unscaled_bias():
    _fails("ch5_fold_conv", _fold(scale_bias=False), "old conv bias is not scaled")


def test_fold_returns_tensors():
    def torchy(weight, bias, *rest):
        w, b = _fold()(weight, bias, *rest)
        return torch.from_numpy(w), torch.from_numpy(b)
    _fails("ch5_fold_conv", torchy, "torch.Tensor")
