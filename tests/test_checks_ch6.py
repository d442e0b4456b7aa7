"""Chapter 6 self-check (group norm): the reference passes, and each named mistake gets its message."""
import numpy as np
import pytest
import torch

from bncourse.checks import REGISTRY, CheckFailure, check
from check_helpers import check_fails


def group_norm_torch(x, num_groups, gamma, beta, eps):
    out = torch.nn.functional.group_norm(torch.from_numpy(x), num_groups, torch.from_numpy(gamma),
                                         torch.from_numpy(beta), eps)
    return out.numpy()


def group_norm(x, G, gamma, beta, eps, grouping="consecutive", axes=(2, 3, 4), ddof=0, affine_shape=(1, -1, 1, 1)):
    n, c, h, w = x.shape
    if grouping == "consecutive":
        xg = x.reshape(n, G, c // G, h, w)
    else:
        xg = x.reshape(n, c // G, G, h, w)
        axes = (1, 3, 4)
    mu = xg.mean(axis=axes, keepdims=True)
    var = xg.var(axis=axes, ddof=ddof, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    return x_hat * gamma.reshape(affine_shape) + beta.reshape(affine_shape)


def test_registered():
    assert "ch6_group_norm" in REGISTRY


def test_reference_passes(capsys):
    check("ch6_group_norm", group_norm)
    assert "✓" in capsys.readouterr().out
    for seed in (1, 2):
        check("ch6_group_norm", group_norm, seed=seed, quiet=True)


def test_checker_reference_matches_torch():
    from bncourse.checks.ch6_beyond import group_norm_reference
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 3, 4))
    g, b = rng.normal(size=6), rng.normal(size=6)
    for G in (1, 2, 3, 6):
        assert np.allclose(group_norm_reference(x, G, g, b, 1e-5), group_norm_torch(x, G, g, b, 1e-5), atol=1e-12)


def _fails(fn, *fragments):
    check_fails("ch6_group_norm", fn, *fragments)


def _std(x, axes, eps):
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def test_layer_norm_instead():
    _fails(lambda x, G, g, b, eps: _std(x, (1, 2, 3), eps) * g.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1),
           "layer norm")


def test_instance_norm_instead():
    _fails(lambda x, G, g, b, eps: _std(x, (2, 3), eps) * g.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1),
           "instance norm")


def test_batch_norm_instead():
    _fails(lambda x, G, g, b, eps: _std(x, (0, 2, 3), eps) * g.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1),
           "batch norm")


def test_interleaved_groups():
    _fails(lambda x, G, g, b, eps: group_norm(x, G, g, b, eps, grouping="interleaved"), "interleave")


def test_unbiased_variance():
    _fails(lambda x, G, g, b, eps: group_norm(x, G, g, b, eps, ddof=1), "unbiased")


def test_gamma_broadcast_wrong_axis():
    _fails(lambda x, G, g, b, eps: group_norm(x, G, g, b, eps, affine_shape=(-1,)), "(1, C, 1, 1)")
