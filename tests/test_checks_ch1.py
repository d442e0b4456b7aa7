"""Chapter 1 self-checks: correct answers pass (fixed and fresh seeds), and each named mistake gets its message."""
import numpy as np
import pytest
import torch

from bncourse.checks import REGISTRY, CheckFailure, check
from check_helpers import check_fails


# ---------------------------------------------------------------- reference solutions (independent code)
def standardize(X_train, X_test):
    mu, sd = X_train.mean(0), X_train.std(0)
    sd = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mu)), 1.0, sd)   # round-off counts as zero
    return (X_train - mu) / sd, (X_test - mu) / sd


def minmax_scale(X_train, X_test):
    lo, span = X_train.min(0), np.ptp(X_train, axis=0)
    span = np.where(span == 0, 1.0, span)
    return (X_train - lo) / span, (X_test - lo) / span


def zca_whiten(X, eps):
    Xc = X - X.mean(0)
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)        # SVD route: lam = S^2 / N, U_cov = V
    lam = S**2 / len(X)
    return Xc @ (Vt.T / np.sqrt(lam + eps)) @ Vt


def hessian_condition_number(X):
    A = np.hstack([X, np.ones((len(X), 1))])
    return float(np.linalg.cond(A.T @ A / len(X)))


def column_means(X):
    return np.add.reduce(X, axis=0) / X.shape[0]


REFERENCES = {"ch1_standardize": standardize, "ch1_minmax": minmax_scale, "ch1_zca": zca_whiten,
              "ch1_condition_number": hessian_condition_number, "demo_column_means": column_means}


def test_all_registered():
    assert set(REFERENCES) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    check(name, REFERENCES[name])
    assert "✓" in capsys.readouterr().out
    for seed in (1, 2, 3):
        check(name, REFERENCES[name], seed=seed, quiet=True)


def test_torch_answers_are_accepted():
    def standardize_torch(X_train, X_test):
        a, b = torch.from_numpy(X_train), torch.from_numpy(X_test)
        mu, sd = a.mean(0), a.std(0, unbiased=False)
        sd = torch.where(sd <= 1e-12 * mu.abs().clamp(min=1.0), torch.ones_like(sd), sd)
        return (a - mu) / sd, (b - mu) / sd
    check("ch1_standardize", standardize_torch, quiet=True)


_fails = check_fails


# ---------------------------------------------------------------- standardize
def test_standardize_mistakes():
    def sample_std(Xtr, Xte):
        mu, sd = Xtr.mean(0), Xtr.std(0, ddof=1)
        sd = np.where(sd == 0, 1.0, sd)
        return (Xtr - mu) / sd, (Xte - mu) / sd
    _fails("ch1_standardize", sample_std, "sample std (ddof=1")

    def test_stats(Xtr, Xte):
        return standardize(Xtr, Xtr)[0], standardize(Xte, Xte)[0]
    _fails("ch1_standardize", test_stats, "TEST split's own mean and std")

    def no_guard(Xtr, Xte):
        with np.errstate(all="ignore"):
            mu, sd = Xtr.mean(0), Xtr.std(0)
            return (Xtr - mu) / sd, (Xte - mu) / sd
    _fails("ch1_standardize", no_guard, "constant feature (zero variance)")

    def exact_zero_guard(Xtr, Xte):                           # the review's nit: `std == 0` misses round-off
        mu, sd = Xtr.mean(0), Xtr.std(0)
        sd = np.where(sd == 0, 1.0, sd)
        return (Xtr - mu) / sd, (Xte - mu) / sd
    _fails("ch1_standardize", exact_zero_guard, "round-off", "std == 0")
    for seed in (1, 2, 3):                                    # the grader's fresh seeds catch it too
        with pytest.raises(CheckFailure, match="round-off"):
            check("ch1_standardize", exact_zero_guard, seed=seed, quiet=True)

    def by_var(Xtr, Xte):
        mu, v = Xtr.mean(0), Xtr.var(0)
        v = np.where(v == 0, 1.0, v)
        return (Xtr - mu) / v, (Xte - mu) / v
    _fails("ch1_standardize", by_var, "variance instead of the standard deviation")

    def per_example(Xtr, Xte):
        f = lambda X: (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
        return f(Xtr), f(Xte)
    _fails("ch1_standardize", per_example, "per example (axis=1)")

    def in_place(Xtr, Xte):
        Ztr, Zte = standardize(Xtr, Xte)
        Xtr[...] = Ztr
        return Ztr, Zte
    _fails("ch1_standardize", in_place, "in place")

    _fails("ch1_standardize", lambda Xtr, Xte: standardize(Xtr, Xte)[0], "must return a tuple (Z_train, Z_test)")
    _fails("ch1_standardize", lambda Xtr, Xte: (standardize(Xtr, Xte)[0].tolist(), standardize(Xtr, Xte)[1]),
           "expected a numpy.ndarray")


# ---------------------------------------------------------------- min-max
def test_minmax_mistakes():
    _fails("ch1_minmax", lambda Xtr, Xte: (Xtr / Xtr.max(0), Xte / Xtr.max(0)), "divided by the maximum only")

    def test_stats(Xtr, Xte):
        return minmax_scale(Xtr, Xtr)[0], minmax_scale(Xte, Xte)[0]
    _fails("ch1_minmax", test_stats, "TEST split's own min and max")

    def no_guard(Xtr, Xte):
        with np.errstate(all="ignore"):
            lo, span = Xtr.min(0), np.ptp(Xtr, axis=0)
            return (Xtr - lo) / span, (Xte - lo) / span
    _fails("ch1_minmax", no_guard, "constant feature (max == min)")

    def by_max(Xtr, Xte):
        lo, hi = Xtr.min(0), Xtr.max(0)
        return (Xtr - lo) / hi, (Xte - lo) / hi
    _fails("ch1_minmax", by_max, "instead of the range")


# ---------------------------------------------------------------- ZCA
def _zca_variant(X, eps, ddof=0, rotate_back=True, eps_inside=True, center=True):
    Xc = X - X.mean(0)
    lam, U = np.linalg.eigh(Xc.T @ Xc / (len(X) - ddof))
    s = 1 / np.sqrt(lam + eps) if eps_inside else 1 / (np.sqrt(lam) + eps)
    W = (U * s) @ U.T if rotate_back else U * s
    return (Xc if center else X) @ W


def test_zca_mistakes():
    _fails("ch1_zca", lambda X, eps: _zca_variant(X, eps, ddof=1), "sample covariance")
    _fails("ch1_zca", lambda X, eps: _zca_variant(X, eps, eps_inside=False), "eps is outside the square root")
    _fails("ch1_zca", lambda X, eps: _zca_variant(X, eps, rotate_back=False), "PCA whitening")

    def pca_flipped(X, eps):                                  # PCA with other eigenvector signs: still caught
        Z = _zca_variant(X, eps, rotate_back=False)
        return Z * np.where(np.arange(Z.shape[1]) % 2 == 0, -1.0, 1.0)
    _fails("ch1_zca", pca_flipped, "Z is white", "PCA")


def test_zca_forgot_centering():
    def uncentred(X, eps):
        lam, U = np.linalg.eigh(X.T @ X / len(X))
        return X @ (U / np.sqrt(lam + eps)) @ U.T
    _fails("ch1_zca", uncentred, "forgot to subtract the mean")


# ---------------------------------------------------------------- condition number
def test_condition_number_mistakes():
    def no_intercept(X):
        return float(np.linalg.cond(X.T @ X / len(X)))
    _fails("ch1_condition_number", no_intercept, "intercept column")

    def singular_values(X):
        return float(np.linalg.cond(np.hstack([X, np.ones((len(X), 1))])))
    _fails("ch1_condition_number", singular_values, "square root")

    _fails("ch1_condition_number", lambda X: 1 / hessian_condition_number(X), "lam_min / lam_max")
    _fails("ch1_condition_number", lambda X: np.array([hessian_condition_number(X)]), "expected a single number")


def test_a_constant_column_of_0_1_has_a_round_off_std():
    """Why the cases hold a constant 0.1 column: its std is not 0 in floating point, so `std == 0` misses it."""
    from bncourse.checks.ch1_scaling import _split_cases
    X_train = _split_cases(np.random.default_rng(0))[2]["X_train"]
    column = X_train[:, 0]
    assert np.ptp(column) == 0 and column[0] == 0.1
    assert 0 < column.std() < 1e-15                            # round-off, not zero (on this CPU)


# ---------------------------------------------------------------- the warm-up shown in 00_start_here
def test_demo_column_means_mistakes():
    _fails("demo_column_means", lambda X: X.mean(axis=1), "averaged each row (axis=1")
    _fails("demo_column_means", lambda X: X.mean(), "all entries into one number")
    _fails("demo_column_means", lambda X: X.mean(axis=0).tolist(), "expected a numpy.ndarray")
