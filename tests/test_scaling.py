"""Scalers against scikit-learn and closed-form properties; constant features never give NaN."""
import numpy as np
import pytest
from sklearn import preprocessing

from bncourse.scaling import MinMaxScaler, PCAWhitening, StandardScaler, ZCAWhitening


@pytest.fixture
def X():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    return rng.normal(size=(200, 4)) @ A * np.array([1, 10, 100, 1000]) + 50


def test_standard_scaler_matches_sklearn(X):
    np.testing.assert_allclose(StandardScaler().fit_transform(X), preprocessing.StandardScaler().fit_transform(X))


def test_min_max_matches_sklearn(X):
    np.testing.assert_allclose(MinMaxScaler().fit_transform(X), preprocessing.MinMaxScaler().fit_transform(X))
    np.testing.assert_allclose(MinMaxScaler((-1, 1)).fit_transform(X),
                               preprocessing.MinMaxScaler((-1, 1)).fit_transform(X))


@pytest.mark.parametrize("cls", [PCAWhitening, ZCAWhitening])
def test_whitening_gives_identity_covariance(cls, X):
    Z = cls(eps=0.0).fit_transform(X)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(Z.T @ Z / len(Z), np.eye(4), atol=1e-8)


def test_zca_is_the_symmetric_whitening_closest_to_the_input(X):
    Xs = StandardScaler().fit_transform(X)
    zca = ZCAWhitening(eps=0.0).fit(Xs)
    pca = PCAWhitening(eps=0.0).fit(Xs)
    dist_zca = np.linalg.norm(zca.transform(Xs) - Xs)
    dist_pca = np.linalg.norm(pca.transform(Xs) - Xs)
    assert dist_zca < dist_pca


def test_fit_on_train_apply_to_test(X):
    s = StandardScaler().fit(X[:100])
    np.testing.assert_allclose(s.transform(X[100:]), (X[100:] - X[:100].mean(0)) / X[:100].std(0))


@pytest.mark.parametrize("cls", [StandardScaler, MinMaxScaler, PCAWhitening, ZCAWhitening])
def test_constant_feature_is_mapped_to_a_finite_value(cls, X):
    Xc = np.c_[X, np.full(len(X), 3.0)]
    t = cls().fit(Xc)
    Z = t.transform(Xc)
    assert np.isfinite(Z).all()
    assert t.constant_features_.tolist() == [4]
    with pytest.raises(ValueError, match="constant"):
        cls(on_constant="raise").fit(Xc)


@pytest.mark.parametrize("cls", [PCAWhitening, ZCAWhitening])
def test_whitening_with_eps_0_and_a_zero_variance_direction_warns_nothing(cls, X):
    import warnings
    Xc = np.c_[X, np.zeros(len(X))]                          # an all-zero pixel: an exactly zero eigenvalue
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = cls(eps=0.0).fit(Xc)
    Z = t.transform(Xc)
    assert np.isfinite(Z).all()
    cov = np.cov(Z.T, bias=True)                             # the live directions are white, the dead one is 0
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(cov)), [0.0] + [1.0] * X.shape[1], atol=1e-8)


def test_errors_teach(X):
    with pytest.raises(RuntimeError, match="call fit"):
        StandardScaler().transform(X)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        StandardScaler().fit(X[:, 0])
