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


# ---------------------------------------------------------------- holes closed by new cases (issue 11)
def test_large_offset_case_rejects_the_one_pass_variance_and_says_precision_is_the_point():
    def one_pass(Xtr, Xte):
        mu = Xtr.mean(0)
        sd = np.sqrt(np.abs((Xtr * Xtr).sum(0) / len(Xtr) - mu * mu))       # written differently from the check
        sd = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mu)), 1.0, sd)
        return (Xtr - mu) / sd, (Xte - mu) / sd
    msg = _fails("ch1_standardize", one_pass)
    assert "one pass" in msg or "Precision is the point" in msg, msg

    def one_pass_guarded_right(Xtr, Xte):                # right on the constant columns, wrong only far from 0
        mu = Xtr.mean(0)
        sd = np.sqrt(np.abs((Xtr * Xtr).sum(0) / len(Xtr) - mu * mu))
        sd = np.where(Xtr.std(0) <= 1e-12 * np.maximum(1.0, np.abs(mu)), 1.0, sd)
        return (Xtr - mu) / sd, (Xte - mu) / sd
    msg = _fails("ch1_standardize", one_pass_guarded_right, "case 4 of 4")
    assert "Precision is the point" in msg or "one pass" in msg, msg


def test_a_guard_that_zeroes_the_constant_column_is_caught_on_the_test_split():
    def zero_constant(Xtr, Xte):                         # maps a constant feature to 0 everywhere: wrong on test
        Ztr, Zte = standardize(Xtr, Xte)
        const = np.ptp(Xtr, axis=0) == 0
        Zte[:, const] = 0.0
        return Ztr, Zte
    _fails("ch1_standardize", zero_constant, "Z_test")


def test_joint_fit_and_clipping_are_named():
    def joint(Xtr, Xte):
        X = np.vstack([Xtr, Xte])
        mu, sd = X.mean(0), X.std(0)
        sd = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(mu)), 1.0, sd)
        return (Xtr - mu) / sd, (Xte - mu) / sd
    _fails("ch1_standardize", joint, "training and test splits together")

    def clipped(Xtr, Xte):
        Ztr, Zte = minmax_scale(Xtr, Xte)
        return Ztr, np.clip(Zte, 0.0, 1.0)
    _fails("ch1_minmax", clipped, "clipped to [0, 1]")

    def joint_minmax(Xtr, Xte):
        X = np.concatenate([Xtr, Xte])
        lo, span = X.min(0), np.ptp(X, axis=0)
        span = np.where(span == 0, 1.0, span)
        return (Xtr - lo) / span, (Xte - lo) / span
    _fails("ch1_minmax", joint_minmax, "training and test splits together")


def test_zca_eps_ignored_is_named():
    _fails("ch1_zca", lambda X, eps: zca_whiten(X, 0.0), "eps is ignored")


def test_np_linalg_cond_is_allowed_in_the_notebook_and_the_grader():
    from bncourse.checks import get_exercise
    assert not any("linalg" in r for r in get_exercise("ch1_condition_number").references)
    check("ch1_condition_number", hessian_condition_number, quiet=True)       # uses np.linalg.cond


# ---------------------------------------------------------------- ch1_kappa_one_feature (derive)
def _kappa_decimal(m, s):
    """kappa of [[m^2 + s^2, m], [m, 1]] in 60-digit decimal arithmetic: no cancellation can hurt."""
    from decimal import Decimal, getcontext
    getcontext().prec = 60
    m, s = Decimal(repr(m)), Decimal(repr(s))
    a, b = m * m + s * s, m
    tr, det = a + 1, a - b * b
    root = (tr * tr / 4 - det).sqrt()
    return float((tr / 2 + root) / (tr / 2 - root))


def kappa_one_feature(m, s):
    lam = np.linalg.eigvalsh(np.array([[m * m + s * s, m], [m, 1.0]]))    # LAPACK's 2 x 2 solver is accurate
    return float(lam[1] / lam[0])


def test_kappa_one_feature_reference_agrees_with_60_digit_arithmetic():
    from bncourse.checks.ch1_scaling import kappa_one_feature_reference
    for m, s in [(0.0, 1.0), (2.0, 1.0), (-5.0, 0.5), (1e3, 0.5), (-1e4, 2.0), (7.3, 0.01)]:
        assert abs(kappa_one_feature_reference(m, s) / _kappa_decimal(m, s) - 1) < 1e-13


def test_kappa_one_feature_accepts_eigvalsh_and_rejects_the_cancelling_root():
    check("ch1_kappa_one_feature", kappa_one_feature, quiet=True)
    for seed in (1, 2, 3):
        check("ch1_kappa_one_feature", kappa_one_feature, seed=seed, quiet=True)

    def textbook_root(m, s):
        tr, det = m * m + s * s + 1, s * s
        root = np.sqrt(tr * tr / 4 - det)
        return (tr / 2 + root) / (tr / 2 - root)
    _fails("ch1_kappa_one_feature", textbook_root, "Precision is the point", "det / lam_max")


@pytest.mark.parametrize("wrong, expected", [
    (lambda m, s: np.sqrt(kappa_one_feature(m, s)), "ratio of singular values"),
    (lambda m, s: 1 / kappa_one_feature(m, s), "lam_min / lam_max"),
    (lambda m, s: kappa_one_feature(m, np.sqrt(s)), "you used s as the variance"),
    (lambda m, s: 1.0, "no intercept"),
])
def test_kappa_one_feature_mistakes(wrong, expected):
    _fails("ch1_kappa_one_feature", wrong, expected)


def test_kappa_one_feature_forgot_the_mean_squared():
    def no_m2(m, s):
        lam = np.linalg.eigvalsh(np.array([[s * s, m], [m, 1.0]]))
        return float(lam[1] / lam[0])
    _fails("ch1_kappa_one_feature", no_m2, "mean(x^2) = m^2 + s^2")


# ---------------------------------------------------------------- ch1_predict_kappa_corr (predict)
def test_predict_kappa_corr_accepts_within_5_percent_and_names_misconceptions():
    for right in (19.0, 18.2, np.float32(19.5), torch.tensor(19.0), np.array(19.0)):
        check("ch1_predict_kappa_corr", right, quiet=True)
    for wrong, expected in [(1.0, "does not touch the correlation"), (1.9, "largest eigenvalue"),
                            (np.sqrt(19), "singular values"), (9, "(1 + r) / (1 - r)"), (10.0, "1 + 0.9"),
                            (30.0, "too high"), (17.0, "too low")]:
        msg = _fails("ch1_predict_kappa_corr", wrong, expected)
        assert "19" not in msg.split("]: ", 1)[1], msg             # the message does not give the answer away
    _fails("ch1_predict_kappa_corr", "19", "commit one number")
    with pytest.raises(NotImplementedError):
        check("ch1_predict_kappa_corr", None)


def test_predict_kappa_corr_truth_is_what_the_experiment_measures():
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(300, 2))
    noise -= noise.mean(0)
    noise = noise @ np.linalg.inv(np.linalg.cholesky(noise.T @ noise / 300)).T
    X = noise @ np.linalg.cholesky(np.array([[1.0, 0.9], [0.9, 1.0]])).T
    Z, _ = standardize(X, X)
    assert abs(hessian_condition_number(Z) - REGISTRY["ch1_predict_kappa_corr"].truth) < 1e-9


# ---------------------------------------------------------------- ch1_debug_standardizer (debug)
class FixedStandardizer:
    def fit(self, X):
        self.mean_ = X.mean(0)
        sd = X.std(0)
        self.scale_ = np.where(sd <= 1e-12 * np.maximum(1.0, np.abs(self.mean_)), 1.0, sd)
        return self

    def transform(self, X):
        return (X - self.mean_) / self.scale_


class AliasingStandardizer(FixedStandardizer):          # the planted bug
    def transform(self, X):
        Z = X
        Z -= self.mean_
        Z /= self.scale_
        return Z


def test_debug_standardizer_accepts_the_fix_and_rejects_the_planted_bug():
    check("ch1_debug_standardizer", FixedStandardizer, quiet=True)
    for seed in (1, 2, 3):
        check("ch1_debug_standardizer", FixedStandardizer, seed=seed, quiet=True)
    _fails("ch1_debug_standardizer", AliasingStandardizer, "still changes the array it is given", "Z = X")


def test_debug_standardizer_other_mistakes():
    class NoSelf(FixedStandardizer):
        def fit(self, X):
            super().fit(X)

    _fails("ch1_debug_standardizer", NoSelf, "fit must return self")

    class SampleStd(FixedStandardizer):
        def fit(self, X):
            super().fit(X)
            self.scale_ = np.where(self.scale_ == 1.0, 1.0, X.std(0, ddof=1))
            return self
    _fails("ch1_debug_standardizer", SampleStd, "population std")

    class OwnStats(FixedStandardizer):
        def transform(self, X):
            return FixedStandardizer().fit(X).transform(X)
    _fails("ch1_debug_standardizer", OwnStats, "its own statistics")


def test_every_ch1_exercise_has_a_hint_ladder():
    for name in [*REFERENCES, "ch1_kappa_one_feature", "ch1_predict_kappa_corr", "ch1_debug_standardizer"]:
        ladder = REGISTRY[name].hints
        assert 2 <= len(ladder) <= 4, name
        assert all(isinstance(h, str) and len(h) > 20 and "def " not in h and "import " not in h for h in ladder)


def test_zca_and_condition_number_that_change_x_in_place_are_named():
    def zca_in_place(X, eps):
        Z = zca_whiten(X, eps)
        X -= X.mean(0)
        return Z
    _fails("ch1_zca", zca_in_place, "changed its input(s) X in place")

    def kappa_in_place(X):
        k = hessian_condition_number(X)
        X /= X.std(0)
        return k
    _fails("ch1_condition_number", kappa_in_place, "changed its input(s) X in place")
