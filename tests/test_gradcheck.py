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
