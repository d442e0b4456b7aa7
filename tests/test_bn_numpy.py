"""NumPy batch norm against torch.nn.BatchNorm, finite differences and closed-form identities."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from bncourse.bn_numpy import (batchnorm_backward, batchnorm_backward_staged, batchnorm_forward,
                               batchnorm_forward_inference)
from bncourse.gradcheck import check_layer_gradients

SHAPES = [(8, 5), (2, 3), (4, 3, 5, 6), (2, 2, 1, 3)]


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = rng.normal(3.0, 2.5, size=shape)
    return x, rng.normal(size=C), rng.normal(size=C), rng.normal(size=shape)


def _torch_bn(shape):
    return torch.nn.BatchNorm1d(shape[1]) if len(shape) == 2 else torch.nn.BatchNorm2d(shape[1])


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_torch(shape):
    x, g, b, dout = _data(shape)
    out, cache = batchnorm_forward(x, g, b)
    bn = _torch_bn(shape).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(g))
        bn.bias.copy_(torch.from_numpy(b))
    xt = torch.from_numpy(x).requires_grad_()
    yt = bn(xt)
    yt.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for backward in (batchnorm_backward_staged, batchnorm_backward):
        dx, dg, db = backward(dout, cache)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(dg, bn.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(db, bn.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


# (2, 3) is left out: with two samples x_hat is always +-1, dx is ~eps-sized and finite differences are noise.
@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6), (2, 2, 1, 3)])
@pytest.mark.parametrize("backward", [batchnorm_backward_staged, batchnorm_backward])
def test_backward_matches_finite_differences(shape, backward):
    x, g, b, dout = _data(shape, seed=1)
    errors = check_layer_gradients(lambda x, gamma, beta: batchnorm_forward(x, gamma, beta), backward,
                                   x, {"gamma": g, "beta": b}, dout)
    assert max(errors.values()) < 1e-7, errors


def test_inference_mode_uses_the_given_statistics():
    x, g, b, _ = _data((6, 4))
    rm, rv = np.array([1.0, -1, 0, 2]), np.array([0.5, 2, 1, 4])
    out = batchnorm_forward_inference(x, g, b, rm, rv, eps=1e-5)
    np.testing.assert_allclose(out, g * (x - rm) / np.sqrt(rv + 1e-5) + b)
    # deterministic per sample: a row's output does not depend on the rest of the batch
    np.testing.assert_allclose(batchnorm_forward_inference(x[:1], g, b, rm, rv), out[:1])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(1, 6), shift=st.floats(-100, 100), scale=st.floats(0.01, 100),
       seed=st.integers(0, 10_000))
def test_normalized_output_is_invariant_to_shifting_and_scaling_the_input(n, d, shift, scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    ones, zeros = np.ones(d), np.zeros(d)
    out, _ = batchnorm_forward(x, ones, zeros, eps=0.0)
    out2, _ = batchnorm_forward(scale * x + shift, ones, zeros, eps=0.0)
    # per-feature mean 0 and variance 1 (closed form) ...
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(out.var(axis=0), 1, atol=1e-7)
    # ... and BN(a x + c) = BN(x) for a > 0
    np.testing.assert_allclose(out2, out, atol=1e-6)


def test_bias_before_bn_changes_nothing():
    rng = np.random.default_rng(3)
    x, W, bias = rng.normal(size=(16, 7)), rng.normal(size=(7, 5)), rng.normal(size=5) * 10
    g, b = rng.normal(size=5), rng.normal(size=5)
    out_no_bias, _ = batchnorm_forward(x @ W, g, b)
    out_bias, cache = batchnorm_forward(x @ W + bias, g, b)
    np.testing.assert_allclose(out_bias, out_no_bias, atol=1e-10)
    # and its gradient is zero: d(bias) = sum over the batch of dx
    dx, _, _ = batchnorm_backward(rng.normal(size=(16, 5)), cache)
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-10)


def test_gradient_identities():
    x, g, b, dout = _data((10, 4), seed=5)
    _, cache = batchnorm_forward(x, g, b, eps=0.0)
    dx, _, _ = batchnorm_backward(dout, cache)
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose((dx * cache["x_hat"]).sum(axis=0), 0, atol=1e-10)
    # With eps > 0 the second identity holds only up to eps/var: sum(x_hat**2) = m * var / (var + eps),
    # so sum(dx * x_hat) = inv_std / m * sum(dx_hat * x_hat) * (m - sum(x_hat**2)).
    eps = 1e-2
    _, cache = batchnorm_forward(x, g, b, eps=eps)
    dx, _, _ = batchnorm_backward(dout, cache)
    x_hat, m = cache["x_hat"], 10
    predicted = (cache["inv_std"].ravel() / m * (dout * g * x_hat).sum(0) * (m - (x_hat ** 2).sum(0)))
    np.testing.assert_allclose((dx * x_hat).sum(axis=0), predicted, rtol=1e-8)
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-10)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((1, 3)), "more than one value"),
    (np.zeros((4, 3, 2)), "(N, D) or (N, C, H, W)"),
])
def test_bad_input_is_refused_with_a_clear_message(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        batchnorm_forward(bad, np.ones(3), np.zeros(3))


def test_wrong_gamma_shape_is_refused():
    with pytest.raises(ValueError, match="gamma must have shape"):
        batchnorm_forward(np.zeros((4, 3)), np.ones(4), np.zeros(3))


def test_cache_holds_the_documented_keys_and_shapes():
    for shape in ((10, 4), (3, 4, 2, 2)):
        x, g, b, _ = _data(shape, seed=6)
        _, cache = batchnorm_forward(x, g, b)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        np.testing.assert_allclose(cache["mean"], x.mean(axis=axes), atol=1e-12)
        np.testing.assert_allclose(cache["batch_var"], x.var(axis=axes), atol=1e-12)
        assert cache["mean"].shape == cache["batch_var"].shape == (4,)
        assert cache["var"].shape == ((1, 4) if x.ndim == 2 else (1, 4, 1, 1))
        assert cache["m"] == x.size // 4
