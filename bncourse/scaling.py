"""Input scaling: standardization, min-max scaling, PCA and ZCA whitening.

Every transform follows scikit-learn's contract: ``fit(X_train)`` learns statistics from the
training split only, ``transform(X)`` applies them to any split, ``fit_transform`` does both.
``X`` is (N, D): N samples, D features.

Constant features (zero variance, max == min) get an explicit treatment instead of a silent NaN:
by default they are mapped to 0 (standardization, whitening) or to the lower end of the range
(min-max), and their indices are stored in ``constant_features_``. Pass ``on_constant="raise"``
to get an error instead.
"""
from __future__ import annotations

import numpy as np

__all__ = ["StandardScaler", "MinMaxScaler", "PCAWhitening", "ZCAWhitening"]


def _as_2d(X, who: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{who} expects X of shape (N, D) (samples x features); got shape {X.shape}. "
                         f"Reshape a single feature with X.reshape(-1, 1) or flatten images with X.reshape(len(X), -1).")
    return X


class _Transform:
    on_constant: str = "zero"

    def _fitted(self, X) -> np.ndarray:
        if not hasattr(self, "n_features_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(X_train) first, "
                               f"then transform the test split with the training statistics.")
        X = _as_2d(X, type(self).__name__)
        if X.shape[1] != self.n_features_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.n_features_} features, got {X.shape[1]}")
        return X

    def _handle_constant(self, constant: np.ndarray) -> None:
        self.constant_features_ = np.flatnonzero(constant)
        if self.on_constant == "raise" and constant.any():
            raise ValueError(f"features {self.constant_features_.tolist()} are constant in the training data "
                             f"(zero variance); drop them or use on_constant='zero'")

    def fit_transform(self, X):
        return self.fit(X).transform(X)


class StandardScaler(_Transform):
    """``z = (x - mean) / std`` per feature, with the population std (ddof=0, as scikit-learn).

    After fitting, each training feature has mean 0 and variance 1. Constant features
    (std == 0) get std 1, so they become 0 instead of NaN.

    Attributes: ``mean_ (D,)``, ``scale_ (D,)``, ``constant_features_``.
    """

    def __init__(self, on_constant: str = "zero"):
        self.on_constant = on_constant

    def fit(self, X):
        X = _as_2d(X, "StandardScaler")
        self.n_features_ = X.shape[1]
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)                       # ddof=0: divide by N
        constant = std <= 1e-12 * np.maximum(1.0, np.abs(self.mean_))
        self._handle_constant(constant)
        self.scale_ = np.where(constant, 1.0, std)
        return self

    def transform(self, X):
        X = self._fitted(X)
        return (X - self.mean_) / self.scale_

    def inverse_transform(self, Z):
        return np.asarray(Z) * self.scale_ + self.mean_


class MinMaxScaler(_Transform):
    """``(x - min) / (max - min)`` per feature, mapped to ``feature_range`` (default [0, 1]).

    One outlier sets max (or min) for everyone, squashing the other values into a sliver.
    Constant features (max == min) map to ``feature_range[0]``. Test data may fall outside the range.

    Attributes: ``data_min_ (D,)``, ``data_max_ (D,)``, ``constant_features_``.
    """

    def __init__(self, feature_range=(0.0, 1.0), on_constant: str = "zero"):
        lo, hi = feature_range
        if not lo < hi:
            raise ValueError(f"feature_range must be (low, high) with low < high, got {feature_range}")
        self.feature_range = (float(lo), float(hi))
        self.on_constant = on_constant

    def fit(self, X):
        X = _as_2d(X, "MinMaxScaler")
        self.n_features_ = X.shape[1]
        self.data_min_ = X.min(axis=0)
        self.data_max_ = X.max(axis=0)
        data_range = self.data_max_ - self.data_min_
        constant = data_range <= 0
        self._handle_constant(constant)
        self.data_range_ = np.where(constant, 1.0, data_range)
        return self

    def transform(self, X):
        X = self._fitted(X)
        lo, hi = self.feature_range
        return lo + (X - self.data_min_) / self.data_range_ * (hi - lo)

    def inverse_transform(self, Z):
        lo, hi = self.feature_range
        return (np.asarray(Z) - lo) / (hi - lo) * self.data_range_ + self.data_min_


class _Whitening(_Transform):
    """Shared fit: centre, covariance, eigendecomposition ``cov = U diag(lam) U^T``."""

    def __init__(self, eps: float = 1e-8, rank_tol: float = 1e-10, on_constant: str = "zero"):
        self.eps = eps
        self.rank_tol = rank_tol
        self.on_constant = on_constant

    def fit(self, X):
        X = _as_2d(X, type(self).__name__)
        N, D = X.shape
        if N < 2:
            raise ValueError("whitening needs at least 2 samples to estimate a covariance")
        self.n_features_ = D
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        self.cov_ = Xc.T @ Xc / N                        # (D, D) population covariance
        lam, U = np.linalg.eigh(self.cov_)               # ascending eigenvalues
        order = np.argsort(lam)[::-1]
        lam, U = np.clip(lam[order], 0.0, None), U[:, order]
        self.eigenvalues_, self.components_ = lam, U     # components_: columns are directions
        # Directions with (numerically) zero variance cannot be scaled to variance 1:
        # they are projected out (factor 0) rather than blown up to 1/sqrt(eps).
        degenerate = lam <= self.rank_tol * max(lam.max(), 1e-300)
        self._handle_constant(np.diag(self.cov_) <= self.rank_tol * max(np.diag(self.cov_).max(), 1e-300))
        # (computed only where it is defined, so that eps=0 with an exactly zero eigenvalue raises no warning)
        self.scale_ = np.where(degenerate, 0.0, 1.0 / np.sqrt(np.where(degenerate, 1.0, lam + self.eps)))
        return self


class PCAWhitening(_Whitening):
    """``z = diag(1/sqrt(lam + eps)) U^T (x - mean)``: rotate onto the principal axes, then scale each to variance 1.

    The output features are the principal components, so they no longer mean what the inputs meant.
    Attributes: ``mean_``, ``cov_``, ``eigenvalues_ (D,)``, ``components_ (D, D)``.
    """

    def transform(self, X):
        X = self._fitted(X)
        return (X - self.mean_) @ self.components_ * self.scale_


class ZCAWhitening(_Whitening):
    """``z = U diag(1/sqrt(lam + eps)) U^T (x - mean)``: PCA whitening rotated back.

    Of all whitening transforms, ZCA's output stays closest to the input (feature i still
    mostly means feature i), which is why it is used on images.
    """

    def transform(self, X):
        X = self._fitted(X)
        W = (self.components_ * self.scale_) @ self.components_.T     # (D, D), symmetric
        return (X - self.mean_) @ W
