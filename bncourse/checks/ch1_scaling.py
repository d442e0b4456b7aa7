"""Checks for chapter 1, input scaling.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch1_standardize``       ``standardize(X_train, X_test) -> (Z_train, Z_test)``: statistics from the training split,
                          population std, constant features mapped to 0 (a constant 0.1 column has a round-off std
                          of about 1e-17, not 0, so the guard needs a relative tolerance)
``ch1_minmax``            ``minmax_scale(X_train, X_test) -> (Z_train, Z_test)``: training min and max, constant
                          features mapped to 0
``ch1_zca``               ``zca_whiten(X, eps) -> Z``: ZCA whitening with the population covariance,
                          ``Z = (X - mu) U diag(1 / sqrt(lam + eps)) U^T``
``ch1_condition_number``  ``hessian_condition_number(X) -> float``: condition number of the least-squares
                          Hessian ``A^T A / N`` with ``A = [X, 1]``
``ch1_kappa_one_feature`` ``kappa_one_feature(m, s) -> float``: a derivation: kappa of ``[[m^2 + s^2, m], [m, 1]]``
                          in closed form, accurate for |m| up to 1e4 (where the textbook root cancels)
``ch1_predict_kappa_corr`` predict-then-run: kappa for two standardized features with correlation 0.9 (19, 5 %)
``ch1_debug_standardizer`` debugging: a ``Standardizer`` class whose ``transform`` wrote into its input (``Z = X``
                          then ``Z -= mean``); graded on the fixed class
``demo_column_means``     ``column_means(X) -> (D,)``: the warm-up that ``00_start_here`` runs to show how
                          ``check`` answers (once wrong, once right)

All arrays are float64 NumPy (torch tensors are accepted and converted).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise, Mistake, expect, expect_array, expect_inputs_unchanged, expect_scalar, register
from .predict import Prediction, predicted
from .shared import to_numpy

__all__ = ["Standardize", "MinMax", "ZCA", "ConditionNumber", "DemoColumnMeans", "KappaOneFeature",
           "PredictKappaCorrelated", "DebugStandardizer"]


_to_numpy = to_numpy


def _splits(fn):
    """A mistake's wrong outputs for both splits: ``fn(X_train, X)`` for X = X_train, X_test."""
    return lambda c: {"Z_train": fn(c["X_train"], c["X_train"]), "Z_test": fn(c["X_train"], c["X_test"])}


def _pair(result: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailure(f"{what} must return a tuple (Z_train, Z_test); it returned a {type(result).__name__}"
                           + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
    return _to_numpy(result[0]), _to_numpy(result[1])


def _tabular(rng, n, d, constant_col: int | None, constant_value: float):
    scales = 10.0 ** rng.uniform(-2, 3, size=d)               # wildly different feature scales
    X = rng.normal(rng.normal(size=d) * scales, scales, size=(n, d))
    if constant_col is not None:
        X[:, constant_col] = constant_value
    return X


def _split_cases(rng):
    # Case 2 has a constant column of 3.5, whose np.std is exactly 0; its TEST value is 4.75, not 3.5, so a
    # guard that zeroes the column instead of dividing by 1 is caught (a test value equal to the training
    # constant gives 0 either way). Case 3 has a constant column of 0.1 over 12 training rows: 0.1 is not exact
    # in binary, so np.mean is 0.1 + 1.4e-17 and np.std is 1.4e-17, not 0 (on this CPU; another summation order
    # may give other round-off). A guard written as `std == 0` passes case 2 and divides by 1.4e-17 in case 3.
    # Case 4 has features near +-1e6 with a std of about 1: there the one-pass variance mean(x^2) - mean(x)^2
    # loses about 4 of its 16 digits (catastrophic cancellation), which the tolerance 1e-9 sees.
    out = []
    for n_tr, n_te, d, const, value in ((40, 10, 4, None, 0.0), (25, 7, 5, 2, 3.5), (12, 30, 3, 0, 0.1)):
        X = _tabular(rng, n_tr + n_te, d, const, value)
        X_test = X[n_tr:] + rng.normal(0.5, 0.5, size=d) * X[:n_tr].std(0)   # the test split is shifted
        if const is not None:
            X_test[:, const] = value if value == 0.1 else value + 1.25
        out.append({"X_train": X[:n_tr], "X_test": X_test})
    offsets = LARGE_OFFSET * rng.choice([-1.0, 1.0], size=3) * rng.uniform(1.0, 3.0, size=3)
    X = offsets + rng.normal(size=(30, 3)) * rng.uniform(0.5, 2.0, size=3)
    out.append({"X_train": X[:20], "X_test": X[20:] + 0.5})
    return out


#: the offset of the large-offset case (features near 1e6, std about 1)
LARGE_OFFSET = 1e6


def _precision_failure(name: str, got: Any, want: np.ndarray, what: str) -> CheckFailure | None:
    """A message for values right to a few digits only, on the large-offset case (else None)."""
    if type(got) is not np.ndarray or got.shape != want.shape or not np.all(np.isfinite(got)):
        return None
    with np.errstate(all="ignore"):
        rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-3)))
    if not 0 < rel < 1e-2:
        return None
    return CheckFailure(
        f"{name} is right to only about {max(0, int(-np.log10(rel)))} digits on features near "
        f"{LARGE_OFFSET:.0e} with a std of about 1 (the check needs 1e-9, float64 gives 1e-15): {what}. "
        f"Precision is the point here: the one-pass formula mean(x**2) - mean(x)**2 subtracts two numbers near "
        f"1e12 that agree in their first 12 digits. Subtract the mean first, then square (np.var / np.std do)")


def _is_constant(mu, sd):
    """The library's rule (bncourse.scaling.StandardScaler): a std within round-off of 0 counts as 0."""
    return sd <= 1e-12 * np.maximum(1.0, np.abs(mu))


def _standardize(X_fit, X, ddof=0, guard="relative", axis=0, use_var=False, one_pass=False):
    """guard: "relative" (the reference), "exact" (only std == 0 is guarded), or None (no guard)."""
    mu = X_fit.mean(axis=axis, keepdims=True)
    sd = X_fit.var(axis=axis, ddof=ddof, keepdims=True) if use_var else X_fit.std(axis=axis, ddof=ddof, keepdims=True)
    with np.errstate(all="ignore"):
        if one_pass:
            sd = np.sqrt(np.abs((X_fit ** 2).mean(axis=axis, keepdims=True) - mu ** 2))
        if guard == "relative":
            sd = np.where(_is_constant(mu, sd), 1.0, sd)
        elif guard == "exact":
            sd = np.where(sd == 0, 1.0, sd)
        return (X - mu) / sd


@register
class Standardize(Exercise):
    name = "ch1_standardize"
    title = "standardize with training statistics (population std, zero-variance guard)"
    hints = (
        "Fit on the training split only: the test split is transformed with the training mean and std, as a "
        "deployed model would see new data.",
        "Reduce over the examples (axis 0): mean and std have shape (D,) and broadcast over the rows of both splits.",
        "z = (x - mean_train) / std_train with the population std (ddof=0); where std_train <= 1e-12 * "
        "max(1, |mean_train|) divide by 1 instead, so a constant feature becomes x - mean_train.",
    )
    references = ("bncourse.scaling:StandardScaler", "sklearn.preprocessing:StandardScaler",
                  "sklearn.preprocessing:scale")
    mistakes = (
        Mistake("test_own_stats", "Z_test was standardized with the TEST split's own mean and std; apply the "
                "statistics fitted on X_train to X_test (statistics from the test split leak information and break "
                "on small or one-class test batches)", lambda c: {"Z_test": _standardize(c["X_test"], c["X_test"])}),
        Mistake("swapped", "your function returned its two results in the wrong order: return (Z_train, Z_test), "
                "not (Z_test, Z_train)", lambda c: {"Z_train": _standardize(c["X_train"], c["X_test"]),
                                                    "Z_test": _standardize(c["X_train"], c["X_train"])}),
        Mistake("ddof1", "you used the sample std (ddof=1, divide by N-1); standardization uses the population std "
                "(ddof=0), so the training features get variance exactly 1",
                _splits(lambda Xtr, X: _standardize(Xtr, X, ddof=1))),
        Mistake("var_not_std", "you divided by the variance instead of the standard deviation",
                _splits(lambda Xtr, X: _standardize(Xtr, X, use_var=True))),
        Mistake("per_example", "you took the statistics per example (axis=1) instead of per feature (axis=0)",
                _splits(lambda Xtr, X: _standardize(X, X, axis=1))),
        Mistake("train_and_test_stats", "{output} was standardized with the mean and std of the training and test "
                "splits together; fit on X_train alone (statistics that see the test split leak it into training)",
                lambda c: {k: _standardize(np.vstack([c["X_train"], c["X_test"]]), c[x])
                           for k, x in (("Z_train", "X_train"), ("Z_test", "X_test"))}),
        Mistake("one_pass", "you computed the variance in one pass, mean(x**2) - mean(x)**2: it cancels "
                "catastrophically when a feature's mean is large or its spread is round-off (a constant column then "
                "gets a std of about 1e-9 instead of 0). Subtract the mean first, then square (np.var / np.std do)",
                _splits(lambda Xtr, X: _standardize(Xtr, X, one_pass=True))),
        # first the `std == 0` guard: where the std is round-off, no guard at all gives the same values, and where
        # it is exactly 0 this mistake equals the right answer and is skipped
        Mistake("exact_zero_guard", "a constant feature came out as nonzero values instead of 0: its training std "
                "is round-off (about 1e-17), not exactly 0, and your code divided by it. Treat a std within "
                "round-off of 0 as 0, e.g. std <= 1e-12 * max(1, |mean|); a test `std == 0` misses it",
                _splits(lambda Xtr, X: _standardize(Xtr, X, guard="exact"))),
        Mistake("no_guard", "a constant feature (zero variance) gave NaN or inf: divide by 1 instead of 0 where the "
                "training std is 0, so that the feature becomes 0",
                _splits(lambda Xtr, X: _standardize(Xtr, X, guard=None))),
    )

    def cases(self, rng):
        return _split_cases(rng)

    def run(self, fn, case):
        Ztr, Zte = _pair(fn(case["X_train"], case["X_test"]), "standardize")
        return {"Z_train": Ztr, "Z_test": Zte}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        Xtr = case["X_train"]
        for split, X in (("Z_train", Xtr), ("Z_test", case["X_test"])):
            want = _standardize(Xtr, X)
            try:
                expect_array(split, result[split], want, rtol=1e-9, atol=1e-9, mistakes=self.mistakes, case=case)
            except CheckFailure as failure:
                if "wrong values" in str(failure) and np.abs(Xtr).min() > LARGE_OFFSET / 2:
                    precise = _precision_failure(split, result[split], want, "the standard deviation lost digits")
                    if precise is not None:
                        raise precise from None
                raise


def _minmax(X_fit, X, guard=True):
    lo, hi = X_fit.min(0), X_fit.max(0)
    rng = hi - lo
    with np.errstate(all="ignore"):
        if guard:
            rng = np.where(rng <= 0, 1.0, rng)
        return (X - lo) / rng


@register
class MinMax(Exercise):
    name = "ch1_minmax"
    title = "min-max scaling to [0, 1] with training min and max (zero-range guard)"
    hints = (
        "Min-max maps the training range of each feature onto [0, 1]; the test split reuses the training min and "
        "max, so it may leave [0, 1].",
        "min and max over axis 0 have shape (D,); their difference is the range, which is 0 for a constant feature.",
        "z = (x - min_train) / (max_train - min_train), dividing by 1 where the range is 0; never clip.",
    )
    references = ("bncourse.scaling:MinMaxScaler", "sklearn.preprocessing:MinMaxScaler",
                  "sklearn.preprocessing:minmax_scale")
    mistakes = (
        Mistake("test_own_range", "Z_test was scaled with the TEST split's own min and max; apply the min and max "
                "fitted on X_train (test values may then fall outside [0, 1], and that is correct)",
                lambda c: {"Z_test": _minmax(c["X_test"], c["X_test"])}),
        Mistake("clipped", "Z_test was clipped to [0, 1]: test values outside the training range must stay outside "
                "it (clipping hides a distribution shift and makes different inputs equal); do not clip",
                lambda c: {"Z_test": np.clip(_minmax(c["X_train"], c["X_test"]), 0.0, 1.0)}),
        Mistake("swapped", "your function returned its two results in the wrong order: return (Z_train, Z_test), "
                "not (Z_test, Z_train)", lambda c: {"Z_train": _minmax(c["X_train"], c["X_test"]),
                                                    "Z_test": _minmax(c["X_train"], c["X_train"])}),
        Mistake("max_only", "you divided by the maximum only; min-max subtracts the minimum first: "
                "(x - min) / (max - min)", _splits(lambda Xtr, X: X / Xtr.max(0))),
        Mistake("max_not_range", "you divided by the maximum instead of the range (max - min) after subtracting the "
                "minimum", _splits(lambda Xtr, X: (X - Xtr.min(0)) / Xtr.max(0))),
        Mistake("train_and_test_range", "{output} was scaled with the min and max of the training and test splits "
                "together; fit on X_train alone (statistics that see the test split leak it into training)",
                lambda c: {k: _minmax(np.vstack([c["X_train"], c["X_test"]]), c[x])
                           for k, x in (("Z_train", "X_train"), ("Z_test", "X_test"))}),
        Mistake("no_guard", "a constant feature (max == min) gave NaN or inf: divide by 1 where the range is 0, "
                "so that the feature becomes 0", _splits(lambda Xtr, X: _minmax(Xtr, X, guard=False))),
    )

    def cases(self, rng):
        return _split_cases(rng)

    def run(self, fn, case):
        Ztr, Zte = _pair(fn(case["X_train"], case["X_test"]), "minmax_scale")
        return {"Z_train": Ztr, "Z_test": Zte}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        Xtr, Xte = case["X_train"], case["X_test"]
        self.expect_outputs(case, result, {"Z_train": _minmax(Xtr, Xtr), "Z_test": _minmax(Xtr, Xte)},
                            rtol=1e-9, atol=1e-9)


def _zca(X, eps, ddof=0, rotate_back=True, eps_inside=True, center=True):
    mu = X.mean(0) if center else np.zeros(X.shape[1])
    Xc = X - mu
    cov = (X - X.mean(0)).T @ (X - X.mean(0)) / (len(X) - ddof) if center else X.T @ X / (len(X) - ddof)
    lam, U = np.linalg.eigh(cov)
    scale = 1.0 / np.sqrt(lam + eps) if eps_inside else 1.0 / (np.sqrt(np.clip(lam, 0, None)) + eps)
    W = (U * scale) @ U.T if rotate_back else U * scale
    return Xc @ W


@register
class ZCA(Exercise):
    name = "ch1_zca"
    title = "ZCA whitening: Z = (X - mu) U diag(1/sqrt(lam + eps)) U^T"
    hints = (
        "Whitening makes the covariance the identity; ZCA is the whitening that changes the data least, so "
        "it rotates back into the original axes after scaling.",
        "Centre X (N, D); its population covariance is (D, D); np.linalg.eigh gives eigenvalues (D,) and "
        "eigenvectors as the COLUMNS of U (D, D).",
        "W = U diag(1 / sqrt(lam + eps)) U^T, then Z = (X - mean) W.",
    )
    references = ("bncourse.scaling:ZCAWhitening", "bncourse.scaling:PCAWhitening",
                  "sklearn.decomposition:PCA")
    mistakes = (
        Mistake("ddof1", "you used the sample covariance (divide by N-1); use the population covariance (divide "
                "by N)", lambda c: {"Z": _zca(c["X"], c["eps"], ddof=1)}),
        Mistake("eps_outside", "eps is outside the square root: use 1 / sqrt(lam + eps), not 1 / (sqrt(lam) + eps)",
                lambda c: {"Z": _zca(c["X"], c["eps"], eps_inside=False)}),
        Mistake("not_centred", "you forgot to subtract the mean before whitening (and before the covariance)",
                lambda c: {"Z": _zca(c["X"], c["eps"], center=False)}),
        Mistake("eps_ignored", "eps is ignored: add it to every eigenvalue, 1 / sqrt(lam + eps) (it is what keeps "
                "directions of almost zero variance from being blown up)", lambda c: {"Z": _zca(c["X"], 0.0)}),
        Mistake("pca", "this is PCA whitening (X - mu) U diag(1/sqrt(lam + eps)): multiply by U^T to rotate back, "
                "which is what makes it ZCA", lambda c: {"Z": _zca(c["X"], c["eps"], rotate_back=False)}),
    )

    def cases(self, rng):
        out = []
        for n, d, eps in ((200, 3, 1e-8), (120, 5, 1e-3), (60, 4, 1e-5)):
            mix = rng.normal(size=(d, d)) * 10.0 ** rng.uniform(-1, 1, size=d)   # correlated, unequal scales
            out.append({"X": rng.normal(size=(n, d)) @ mix + rng.normal(size=d) * 5, "eps": eps})
        return out

    def run(self, fn, case):
        return {"Z": _to_numpy(fn(case["X"], case["eps"]))}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        X, eps = case["X"], case["eps"]
        Z = result["Z"]
        try:
            self.expect_outputs(case, result, {"Z": _zca(X, eps)}, rtol=1e-6, atol=1e-6)
        except CheckFailure as failure:
            if "wrong values" in str(failure) and _is_white_like(Z, X, eps):
                raise CheckFailure(
                    "Z is white (its covariance has the right eigenvalues) but it is not the ZCA solution: you "
                    "probably returned PCA whitening (or another rotation of it). PCA and ZCA differ by a rotation: "
                    "ZCA multiplies by U^T at the end, so that each output feature stays closest to its input "
                    "feature") from None
            raise


def _is_white_like(Z, X, eps) -> bool:
    Zc = Z - Z.mean(0)
    cov = Zc.T @ Zc / len(Z)
    Xc = X - X.mean(0)
    lam = np.linalg.eigvalsh(Xc.T @ Xc / len(X))
    return bool(np.allclose(np.linalg.eigvalsh(cov), np.sort(lam / (lam + eps)), rtol=1e-5, atol=1e-6))


def _hessian_with_intercept(X: np.ndarray) -> np.ndarray:
    """A^T A / N with A = [X, 1]: (D + 1, D + 1)."""
    A = np.hstack([X, np.ones((len(X), 1))])
    return A.T @ A / len(X)


def _kappa(H: np.ndarray) -> float:
    """lam_max / lam_min of a symmetric matrix."""
    lam = np.linalg.eigvalsh(H)
    return float(lam[-1] / lam[0])


@register
class ConditionNumber(Exercise):
    name = "ch1_condition_number"
    title = "condition number of the least-squares Hessian A^T A / N, A = [X, 1]"
    hints = (
        "The Hessian of a least-squares loss does not depend on the targets or the weights: only on the "
        "design matrix, including the column of ones that multiplies the intercept.",
        "A = [X, 1] is (N, D + 1), so the Hessian A^T A / N is (D + 1, D + 1), symmetric positive semi-definite.",
        "kappa = largest eigenvalue / smallest eigenvalue (np.linalg.eigvalsh returns them in ascending order).",
    )
    # np.linalg.cond is allowed: building the right matrix (with its intercept column) is the exercise
    references = ("bncourse.conditioning:condition_number", "bncourse.conditioning:hessian_least_squares")
    mistakes = (
        Mistake("no_intercept", "you left out the intercept column: the Hessian of a model with a bias is A^T A / N "
                "with A = [X, 1]", lambda c: {"kappa": _kappa(c["X"].T @ c["X"] / len(c["X"]))}),
        Mistake("singular_values", "that is the ratio of singular values of A, the square root of the condition "
                "number of A^T A", lambda c: {"kappa": np.sqrt(_kappa(_hessian_with_intercept(c["X"])))}),
        Mistake("centred_covariance", "you used the covariance of the centred features, which ignores the "
                "intercept's coupling to uncentred features",
                lambda c: {"kappa": _kappa(np.cov(c["X"].T, bias=True).reshape(c["X"].shape[1], -1))}),
        Mistake("inverted", "that is lam_min / lam_max; the condition number is lam_max / lam_min",
                lambda c: {"kappa": 1.0 / _kappa(_hessian_with_intercept(c["X"]))}),
    )

    def cases(self, rng):
        out = []
        for n, d, spread in ((50, 2, 0.0), (80, 4, 2.0), (30, 3, 1.0), (60, 5, 3.0)):
            scales = 10.0 ** rng.uniform(-spread / 2, spread / 2, size=d)
            out.append({"X": rng.normal(rng.normal(size=d), scales, size=(n, d))})
        return out

    def run(self, fn, case):
        return {"kappa": _to_numpy(fn(case["X"]))}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        got = result["kappa"]
        if isinstance(got, np.ndarray) and got.shape == ():
            got = float(got)
        expect_scalar("kappa", got, _kappa(_hessian_with_intercept(case["X"])), rtol=1e-6, mistakes=self.mistakes,
                      case=case)


@register
class DemoColumnMeans(Exercise):
    """Not graded: the warm-up that ``notebooks/00_start_here.ipynb`` uses to show what ``check`` prints."""
    name = "demo_column_means"
    title = "the mean of each feature (column) of X, shape (D,)"
    hints = (
        "One mean per feature: average down each column.",
        "X is (N, D); the answer has shape (D,).",
    )
    references = ()
    mistakes = (
        Mistake("per_row", "you averaged each row (axis=1: one mean per example); average each column (axis=0: one "
                "per feature)", lambda c: {"means": c["X"].mean(axis=1)}),
        Mistake("all_entries", "you averaged all entries into one number; return one mean per feature (axis=0)",
                lambda c: {"means": c["X"].mean()}),
    )

    def cases(self, rng):
        return [{"X": rng.normal(rng.normal(size=d) * 5, 1.0, size=(n, d))} for n, d in ((6, 3), (10, 4))]

    def run(self, fn, case):
        return {"means": _to_numpy(fn(case["X"]))}

    def verify(self, case, result):
        self.expect_outputs(case, result, {"means": case["X"].mean(axis=0)}, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# A derivation: the condition number of one feature with an intercept, in closed form
# ------------------------------------------------------------------------------------------------
def kappa_one_feature_reference(m: float, s: float, *, s_is_var: bool = False, drop_mean_sq: bool = False) -> float:
    """kappa of H = [[m^2 + s^2, m], [m, 1]] computed without cancellation (lam_min = det / lam_max).

    The variants give what two common slips produce: ``s_is_var`` reads s as the variance (H_11 = m^2 + s),
    ``drop_mean_sq`` forgets that the mean of x^2 is m^2 + s^2 (H_11 = s^2; then H may be indefinite and the
    result is the ratio of the signed eigenvalues)."""
    a = (m * m + (s if s_is_var else s * s)) if not drop_mean_sq else s * s
    c, b = 1.0, m
    half_trace = 0.5 * (a + c)
    radius = np.hypot(0.5 * (a - c), b)            # sqrt(((a - c) / 2)^2 + b^2), no cancellation
    lam_max = half_trace + radius
    det = a * c - b * b
    if not drop_mean_sq:
        det = (s if s_is_var else s * s)           # a c - b^2 = s^2 exactly, without cancelling m^2
    lam_min = det / lam_max
    return float(lam_max / lam_min)


@register
class KappaOneFeature(Exercise):
    name = "ch1_kappa_one_feature"
    title = "condition number of least squares on one feature (mean m, std s) with an intercept, in closed form"
    references = ("bncourse.conditioning:condition_number", "bncourse.conditioning:hessian_least_squares")
    hints = (
        "With one feature x and an intercept, the Hessian A^T A / N is 2 x 2; its entries are averages of "
        "x^2, x and 1 over the data, which you can write with the mean m and the population std s alone.",
        "H = [[mean(x^2), mean(x)], [mean(x), 1]] and mean(x^2) = m^2 + s^2. The eigenvalues of a symmetric "
        "2 x 2 matrix follow from its trace T and determinant det: lam = T/2 +- sqrt(T^2/4 - det).",
        "det = s^2. For large |m| the smaller root T/2 - sqrt(...) subtracts two nearly equal numbers and "
        "loses its digits; since lam_min * lam_max = det, compute lam_min = det / lam_max instead.",
    )
    mistakes = (
        Mistake("singular_values", "that is the ratio of singular values of A = [x, 1]; the condition number of the "
                "Hessian A^T A / N is its square", lambda c: {"kappa": np.sqrt(kappa_one_feature_reference(c["m"], c["s"]))}),
        Mistake("inverted", "that is lam_min / lam_max; the condition number is lam_max / lam_min",
                lambda c: {"kappa": 1.0 / kappa_one_feature_reference(c["m"], c["s"])}),
        Mistake("s_is_variance", "you used s as the variance; s is the standard deviation, so mean(x^2) = m^2 + s^2",
                lambda c: {"kappa": kappa_one_feature_reference(c["m"], c["s"], s_is_var=True)}),
        Mistake("variance_alone", "the top-left entry of the Hessian is mean(x^2) = m^2 + s^2, not the variance s^2 "
                "alone", lambda c: {"kappa": kappa_one_feature_reference(c["m"], c["s"], drop_mean_sq=True)}),
        Mistake("no_intercept", "with no intercept the Hessian is the 1 x 1 matrix mean(x^2) and kappa = 1; the "
                "exercise has an intercept, so the Hessian is 2 x 2", lambda c: {"kappa": 1.0}),
    )

    def cases(self, rng):
        fixed = [(0.0, 1.0), (0.5, 3.0), (2.0, 1.0), (-5.0, 0.5), (1e3, 0.5), (-1e4, 2.0)]
        drawn = [(float(rng.uniform(-10, 10)), float(rng.uniform(0.1, 5.0))) for _ in range(2)]
        return [{"m": m, "s": s} for m, s in fixed + drawn]

    def run(self, fn, case):
        v = _to_numpy(fn(case["m"], case["s"]))
        if isinstance(v, np.ndarray) and v.shape in ((), (1,)):
            v = float(v.reshape(()))
        return {"kappa": v}

    def verify(self, case, result):
        m, s = case["m"], case["s"]
        want = kappa_one_feature_reference(m, s)
        got = result["kappa"]
        try:
            expect_scalar("kappa", got, want, rtol=1e-8, atol=0.0, mistakes=self.mistakes, case=case)
        except CheckFailure:
            if (abs(m) >= 100 and isinstance(got, (int, float, np.floating)) and not isinstance(got, bool)
                    and np.isfinite(float(got)) and abs(float(got) / want - 1) < 0.9):
                rel = abs(float(got) / want - 1)
                raise CheckFailure(
                    f"kappa is {float(got):.10g}, right to only about {max(0, int(-np.log10(rel)))} digits at "
                    f"m = {m:g}, s = {s:g} (the check needs 1e-8; float64 gives about 1e-15). Precision is the "
                    f"point here: lam_min = T/2 - sqrt(T^2/4 - det) subtracts two numbers near m^2 that agree in "
                    f"almost all their digits. Use lam_min = det / lam_max (their product is det = s^2)") from None
            raise


# ------------------------------------------------------------------------------------------------
# Predict, then run: the condition number of two standardized but correlated features
# ------------------------------------------------------------------------------------------------
@register
class PredictKappaCorrelated(Prediction):
    name = "ch1_predict_kappa_corr"
    title = "predict kappa for two standardized features with correlation 0.9, with an intercept"
    quantity = "kappa of A^T A / N for two standardized features with correlation 0.9"
    truth = 19.0
    rtol = 0.05
    mistakes = (
        predicted("identity", 1.0, "standardization makes every feature's mean 0 and variance 1, but it does not "
                  "touch the correlation between features; the Hessian keeps the off-diagonal 0.9"),
        predicted("largest_eigenvalue", 1.9, "1.9 is the largest eigenvalue; kappa divides it by the smallest"),
        predicted("singular_values", np.sqrt(19.0), "that is the ratio of singular values of A; the Hessian A^T A / "
                  "N squares them"),
        predicted("r_over_1_minus_r", 9.0, "close, but the eigenvalues of [[1, r], [r, 1]] are 1 + r and 1 - r, so "
                  "kappa = (1 + r) / (1 - r)"),
        predicted("largest_one", 10.0, "the smallest eigenvalue is 1 - 0.9 = 0.1, but the largest is not 1: the "
                  "correlated pair gives 1 + 0.9"),
    )
    hints = (
        "After standardization the features are centred, so the intercept's row and column of A^T A / N "
        "hold zeros except its own 1: it decouples from the two weights.",
        "What is left is the 2 x 2 correlation matrix [[1, r], [r, 1]] next to the intercept's eigenvalue 1.",
        "Its eigenvectors are (1, 1) and (1, -1): find their eigenvalues, then kappa = largest / smallest "
        "over all three eigenvalues.",
    )


# ------------------------------------------------------------------------------------------------
# Debugging: a standardizer whose transform writes into the caller's array
# ------------------------------------------------------------------------------------------------
@register
class DebugStandardizer(Exercise):
    name = "ch1_debug_standardizer"
    title = "the fixed Standardizer class: fit on training data, transform any split, leave inputs alone"
    references = Standardize.references
    hints = (
        "Call transform twice on the same array and compare the results, and compare the array before and after "
        "the first call: a correct transform is a pure function of its input.",
        "In NumPy `Z = X` does not copy: Z and X are two names for one array, so `Z -= ...` writes into the "
        "caller's X. In-place operators (-=, /=) modify the array they are applied to.",
        "Compute the result into a new array, e.g. with an out-of-place expression (X - mean) / scale; keep "
        "fit as it is.",
    )
    mistakes = (
        Mistake("fit_ddof1", "you changed fit: it must use the population std (ddof=0), as it did",
                lambda c: {"Z_train": _standardize(c["X_train"], c["X_train"], ddof=1)}),
        Mistake("test_own_stats", "transform standardized X_test with its own statistics; it must use the ones fit "
                "stored", lambda c: {"Z_test": _standardize(c["X_test"], c["X_test"])}),
    )

    def cases(self, rng):
        return _split_cases(rng)

    def run(self, cls, case):
        Xtr, Xte = case["X_train"], case["X_test"]
        before = (Xtr.copy(), Xte.copy())
        sc = cls()
        fitted = sc.fit(Xtr)
        Zte = _to_numpy(sc.transform(Xte))
        Ztr = _to_numpy(sc.transform(Xtr))
        Ztr = Ztr.copy() if isinstance(Ztr, np.ndarray) else Ztr     # the second call may overwrite it
        Ztr_again = _to_numpy(sc.transform(Xtr))
        return {"Z_train": Ztr, "Z_test": Zte, "Z_train_again": Ztr_again, "fit_returns_self": fitted is sc,
                "train_unchanged": bool(np.array_equal(Xtr, before[0])),
                "test_unchanged": bool(np.array_equal(Xte, before[1]))}

    def verify(self, case, result):
        Xtr, Xte = case["X_train"], case["X_test"]
        in_place = ("transform still changes the array it is given: `Z = X` makes Z another name for the caller's "
                    "array, so `Z -= self.mean_` writes into it (the caller's X_{0} was modified, and a second "
                    "transform of the same array gives another result). Build a new array instead")
        expect(result["test_unchanged"], in_place.format("test"))
        expect(result["train_unchanged"], in_place.format("train"))
        expect(result["fit_returns_self"], "fit must return self (so that Standardizer().fit(X).transform(X) works); "
                                           "keep its `return self`")
        expect_array("transform(X_train)", result["Z_train"], _standardize(Xtr, Xtr), rtol=1e-9, atol=1e-9,
                     mistakes=self.mistakes, case=case, output="Z_train")
        expect_array("transform(X_test)", result["Z_test"], _standardize(Xtr, Xte), rtol=1e-9, atol=1e-9,
                     mistakes=self.mistakes, case=case, output="Z_test")
        expect_array("a second transform(X_train)", result["Z_train_again"], _standardize(Xtr, Xtr), rtol=1e-9,
                     atol=1e-9)
