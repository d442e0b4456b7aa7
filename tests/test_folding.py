"""Folding inference BN into an affine map and into the previous layer, against torch.nn in eval mode."""
import numpy as np
import pytest
import torch
from torch import nn

from bncourse import nn as scratch_nn
from bncourse.folding import (affine_from_stats, bn_affine, fold_bn_into_conv, fold_bn_into_linear,
                              fold_sequential)


def _randomized_bn(bn, gen):
    """Give a BN layer non-trivial gamma, beta and running statistics."""
    c = bn.num_features
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(torch.randn(c, generator=gen, dtype=bn.running_mean.dtype) * 2)
            bn.bias.copy_(torch.randn(c, generator=gen, dtype=bn.running_mean.dtype))
        bn.running_mean.copy_(torch.randn(c, generator=gen, dtype=bn.running_mean.dtype) * 3)
        bn.running_var.copy_(torch.rand(c, generator=gen, dtype=bn.running_mean.dtype) * 4 + 0.01)
    return bn.eval()


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, scratch_nn.BatchNorm1d])
@pytest.mark.parametrize("affine", [True, False])
def test_bn_affine_matches_eval_mode(cls, affine):
    gen = torch.Generator().manual_seed(0)
    bn = _randomized_bn(cls(5, eps=1e-3, affine=affine, dtype=torch.float64), gen)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 4 + 1
    a, b = bn_affine(bn)
    assert a.shape == (5,) and b.shape == (5,)
    torch.testing.assert_close(a * x + b, bn(x), rtol=1e-12, atol=1e-12)
    assert not a.requires_grad


def test_affine_from_stats_numpy_closed_form():
    gamma, beta = np.array([2.0, -1.0]), np.array([0.5, 3.0])
    mean, var = np.array([1.0, -2.0]), np.array([4.0, 0.25])
    a, b = affine_from_stats(gamma, beta, mean, var, eps=0.0)
    np.testing.assert_allclose(a, [1.0, -2.0])
    np.testing.assert_allclose(b, [0.5 - 1.0, 3.0 - 4.0])


@pytest.mark.parametrize("bias", [True, False])
def test_fold_linear(bias):
    gen = torch.Generator().manual_seed(1)
    lin = nn.Linear(6, 4, bias=bias).double()
    bn = _randomized_bn(nn.BatchNorm1d(4, dtype=torch.float64), gen)
    x = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    w_before = lin.weight.detach().clone()
    folded = fold_bn_into_linear(lin, bn)
    assert isinstance(folded, nn.Linear) and folded.bias is not None
    torch.testing.assert_close(folded(x), bn(lin(x)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lin.weight.detach(), w_before)         # input not modified
    assert (lin.bias is None) == (not bias)


@pytest.mark.parametrize("groups,padding,stride", [(1, 1, 1), (2, 0, 2), (4, 2, 1)])
def test_fold_conv(groups, padding, stride):
    gen = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(4, 8, 3, padding=padding, stride=stride, groups=groups, bias=False).double()
    bn = _randomized_bn(scratch_nn.BatchNorm2d(8, dtype=torch.float64), gen)
    x = torch.randn(3, 4, 9, 9, generator=gen, dtype=torch.float64)
    folded = fold_bn_into_conv(conv, bn)
    assert isinstance(folded, nn.Conv2d) and folded.groups == groups and folded.stride == (stride, stride)
    torch.testing.assert_close(folded(x), bn(conv(x)), rtol=1e-11, atol=1e-11)


def test_fold_differs_from_training_mode():
    """The fold reproduces eval mode only: in training mode BN uses batch statistics."""
    gen = torch.Generator().manual_seed(3)
    lin = nn.Linear(3, 3).double()
    bn = _randomized_bn(nn.BatchNorm1d(3, dtype=torch.float64), gen)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    folded = fold_bn_into_linear(lin, bn)
    bn.train()
    assert (folded(x) - bn(lin(x))).abs().max() > 1e-2


def test_fold_mismatch_and_untracked_raise():
    with pytest.raises(ValueError, match="must match"):
        fold_bn_into_linear(nn.Linear(3, 4), nn.BatchNorm1d(5).eval())
    with pytest.raises(ValueError, match="track_running_stats=False"):
        bn_affine(nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(TypeError):
        fold_bn_into_conv(nn.Linear(3, 3), nn.BatchNorm1d(3))


def test_fold_sequential_lenet_like():
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 10, bias=False), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 3),
    ).double()
    for m in model:
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _randomized_bn(m, gen)
    model.eval()
    folded = fold_sequential(model)
    n_bn = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in folded.modules())
    assert n_bn == 0 and len(folded) == len(model) - 2
    x = torch.randn(5, 1, 12, 12, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-10)
