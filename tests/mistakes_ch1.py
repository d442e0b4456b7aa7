"""Chapter 1: one wrong implementation per declared mistake, written as a student would (see test_mistake_registry).

Nothing here is imported from ``bncourse.checks``: each function is plain NumPy, so a test that it gets its
mistake's message checks the checker against code written independently of it.
"""
import numpy as np


def _guarded(sd, mu):
    return np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mu)), 1.0, sd)


def _apply(fit_rows, Xtr, Xte, *, ddof=0, power=1.0, guard=_guarded):
    mu = fit_rows.mean(axis=0)
    sd = fit_rows.std(axis=0, ddof=ddof) ** power
    sd = guard(sd, mu)
    return (Xtr - mu) / sd, (Xte - mu) / sd


# ---------------------------------------------------------------- ch1_standardize
def std_test_own_stats(X_train, X_test):
    Z_train, _ = _apply(X_train, X_train, X_test)
    Z_test, _ = _apply(X_test, X_test, X_test)
    return Z_train, Z_test


def std_sample_std(X_train, X_test):
    return _apply(X_train, X_train, X_test, ddof=1)


def std_by_variance(X_train, X_test):
    return _apply(X_train, X_train, X_test, power=2.0)


def std_per_example(X_train, X_test):
    def rows(X):
        m = X.mean(axis=1, keepdims=True)
        s = X.std(axis=1, keepdims=True)
        return (X - m) / s
    return rows(X_train), rows(X_test)


def std_joint(X_train, X_test):
    return _apply(np.concatenate([X_train, X_test]), X_train, X_test)


def std_one_pass(X_train, X_test):
    n = X_train.shape[0]
    mu = X_train.sum(axis=0) / n
    var = (X_train ** 2).sum(axis=0) / n - mu ** 2
    sd = np.sqrt(np.abs(var))
    sd = np.where(sd == 0, 1.0, sd)
    return (X_train - mu) / sd, (X_test - mu) / sd


def std_exact_zero_guard(X_train, X_test):
    return _apply(X_train, X_train, X_test, guard=lambda sd, mu: np.where(sd == 0.0, 1.0, sd))


def std_no_guard(X_train, X_test):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _apply(X_train, X_train, X_test, guard=lambda sd, mu: sd)


# ---------------------------------------------------------------- ch1_minmax
def _span(X):
    lo, hi = X.min(axis=0), X.max(axis=0)
    return lo, np.where(hi - lo == 0, 1.0, hi - lo)


def mm_test_own(X_train, X_test):
    lo, span = _span(X_train)
    lo_t, span_t = _span(X_test)
    return (X_train - lo) / span, (X_test - lo_t) / span_t


def mm_clipped(X_train, X_test):
    lo, span = _span(X_train)
    return (X_train - lo) / span, np.clip((X_test - lo) / span, 0, 1)


def mm_max_only(X_train, X_test):
    top = X_train.max(axis=0)
    return X_train / top, X_test / top


def mm_max_not_range(X_train, X_test):
    lo, top = X_train.min(axis=0), X_train.max(axis=0)
    return (X_train - lo) / top, (X_test - lo) / top


def mm_joint(X_train, X_test):
    lo, span = _span(np.vstack([X_train, X_test]))
    return (X_train - lo) / span, (X_test - lo) / span


def mm_no_guard(X_train, X_test):
    lo, hi = X_train.min(axis=0), X_train.max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (X_train - lo) / (hi - lo), (X_test - lo) / (hi - lo)


# ---------------------------------------------------------------- ch1_zca
def _zca(X, eps, *, ddof=0, eps_outside=False, centre=True, rotate=True):
    Xc = X - X.mean(axis=0)
    base = Xc if centre else X
    lam, U = np.linalg.eigh(base.T @ base / (len(X) - ddof))
    d = 1.0 / (np.sqrt(lam) + eps) if eps_outside else 1.0 / np.sqrt(lam + eps)
    W = U @ np.diag(d)
    if rotate:
        W = W @ U.T
    return base @ W


MISTAKES = {
    ("ch1_standardize", "test_own_stats"): std_test_own_stats,
    ("ch1_standardize", "swapped"): lambda X_train, X_test: _apply(X_train, X_train, X_test)[::-1],
    ("ch1_standardize", "ddof1"): std_sample_std,
    ("ch1_standardize", "var_not_std"): std_by_variance,
    ("ch1_standardize", "per_example"): std_per_example,
    ("ch1_standardize", "train_and_test_stats"): std_joint,
    ("ch1_standardize", "one_pass"): std_one_pass,
    ("ch1_standardize", "exact_zero_guard"): std_exact_zero_guard,
    ("ch1_standardize", "no_guard"): std_no_guard,

    ("ch1_minmax", "test_own_range"): mm_test_own,
    ("ch1_minmax", "swapped"): lambda X_train, X_test: tuple(reversed(mm_test_own(X_train, X_train)[:1]
                                                                       + ((X_test - _span(X_train)[0])
                                                                          / _span(X_train)[1],))),
    ("ch1_minmax", "clipped"): mm_clipped,
    ("ch1_minmax", "max_only"): mm_max_only,
    ("ch1_minmax", "max_not_range"): mm_max_not_range,
    ("ch1_minmax", "train_and_test_range"): mm_joint,
    ("ch1_minmax", "no_guard"): mm_no_guard,

    ("ch1_zca", "ddof1"): lambda X, eps: _zca(X, eps, ddof=1),
    ("ch1_zca", "eps_outside"): lambda X, eps: _zca(X, eps, eps_outside=True),
    ("ch1_zca", "not_centred"): lambda X, eps: _zca(X, eps, centre=False),
    ("ch1_zca", "eps_ignored"): lambda X, eps: _zca(X, 0.0),
    ("ch1_zca", "pca"): lambda X, eps: _zca(X, eps, rotate=False),

    ("ch1_condition_number", "no_intercept"): lambda X: float(np.linalg.cond(X.T @ X / len(X))),
    ("ch1_condition_number", "singular_values"):
        lambda X: float(np.linalg.cond(np.column_stack([X, np.ones(len(X))]))),
    ("ch1_condition_number", "centred_covariance"): lambda X: float(np.linalg.cond(np.cov(X, rowvar=False))),
    ("ch1_condition_number", "inverted"):
        lambda X: 1.0 / float(np.linalg.cond(np.column_stack([X, np.ones(len(X))]).T
                                             @ np.column_stack([X, np.ones(len(X))]) / len(X))),

    ("demo_column_means", "per_row"): lambda X: X.mean(axis=1),
    ("demo_column_means", "all_entries"): lambda X: X.mean(),
}


# ---------------------------------------------------------------- ch1_kappa_one_feature
def _kappa_2x2(a, b):
    lam = np.linalg.eigvalsh(np.array([[a, b], [b, 1.0]]))
    return float(lam[1] / lam[0])


MISTAKES.update({
    ("ch1_kappa_one_feature", "singular_values"): lambda m, s: np.sqrt(_kappa_2x2(m * m + s * s, m)),
    ("ch1_kappa_one_feature", "inverted"): lambda m, s: 1.0 / _kappa_2x2(m * m + s * s, m),
    ("ch1_kappa_one_feature", "s_is_variance"): lambda m, s: _kappa_2x2(m * m + s, m),
    ("ch1_kappa_one_feature", "variance_alone"): lambda m, s: _kappa_2x2(s * s, m),
    ("ch1_kappa_one_feature", "no_intercept"): lambda m, s: 1.0,
})

# ---------------------------------------------------------------- ch1_predict_kappa_corr: the committed numbers
MISTAKES.update({
    ("ch1_predict_kappa_corr", "identity"): 1.0,
    ("ch1_predict_kappa_corr", "largest_eigenvalue"): 1.9,
    ("ch1_predict_kappa_corr", "singular_values"): 4.36,
    ("ch1_predict_kappa_corr", "r_over_1_minus_r"): 9,
    ("ch1_predict_kappa_corr", "largest_one"): 10.0,
})


# ---------------------------------------------------------------- ch1_debug_standardizer
class _Fixed:
    ddof = 0

    def fit(self, X):
        self.mean_ = X.mean(axis=0)
        self.scale_ = _guarded(X.std(axis=0, ddof=self.ddof), self.mean_)
        return self

    def transform(self, X):
        return (X - self.mean_) / self.scale_


class DebugSampleStd(_Fixed):
    ddof = 1


class DebugOwnStats(_Fixed):
    def transform(self, X):
        mean, scale = X.mean(axis=0), _guarded(X.std(axis=0), X.mean(axis=0))
        return (X - mean) / scale


MISTAKES.update({
    ("ch1_debug_standardizer", "fit_ddof1"): DebugSampleStd,
    ("ch1_debug_standardizer", "test_own_stats"): DebugOwnStats,
})

CORRECT = {
    "demo_column_means": lambda X: X.sum(axis=0) / len(X),
    "ch1_debug_standardizer": _Fixed,
}
