import numpy as np
import pytest

from bncourse.gradcheck import numerical_gradient, relative_error


def test_numerical_gradient_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = numerical_gradient(lambda v: (v ** 3).sum(), x.copy())
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-8)


def test_relative_error_detects_a_wrong_gradient():
    a = np.array([1.0, 2.0, 3.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, a * 1.01) > 1e-3


def test_float32_is_refused():
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda v: v.sum(), np.ones(3, dtype=np.float32))


def test_relative_error_is_the_norm_ratio():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 4.0])
    assert relative_error(a, b) == pytest.approx(5.0 / 7.0)
    assert relative_error(a, np.zeros(2)) == pytest.approx(1.0)       # one of them zero: 1
    assert relative_error(1e-9 * a, 1e-9 * b) == pytest.approx(5.0 / 7.0)   # scale-free


def test_default_step_balances_truncation_and_round_off():
    # f(x) = sum(exp(x)): truncation ~ h**2 for large h, round-off ~ 1e-16 / h for small h
    x = np.linspace(-1.0, 1.0, 5)
    exact = np.exp(x)
    err = {h: relative_error(numerical_gradient(lambda v: np.exp(v).sum(), x.copy(), h=h), exact)
           for h in (1e-1, 1e-5, 1e-11)}
    assert err[1e-5] < 1e-9
    assert err[1e-1] > 100 * err[1e-5] and err[1e-11] > 100 * err[1e-5]


def test_a_gradient_that_ignores_the_batch_statistics_fails_the_check():
    # negative control: batch norm's backward with mu and var treated as constants
    from bncourse.bn_numpy import batchnorm_forward
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    gamma, beta = np.ones(3), np.zeros(3)
    numeric = numerical_gradient(lambda v: batchnorm_forward(v, gamma, beta)[0], x.copy(), dy)
    detached = dy * gamma / np.sqrt(x.var(axis=0) + 1e-5)
    assert relative_error(detached, numeric) > 0.1
