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
``demo_column_means``     ``column_means(X) -> (D,)``: the warm-up that ``00_start_here`` runs to show how
                          ``check`` answers (once wrong, once right)

All arrays are float64 NumPy (torch tensors are accepted and converted).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise, expect, expect_array, expect_scalar, register

__all__ = ["Standardize", "MinMax", "ZCA", "ConditionNumber", "DemoColumnMeans"]


def _to_numpy(v: Any) -> Any:
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return v


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
    # Case 2 has a constant column of 3.5, whose np.std is exactly 0. Case 3 has a constant column of 0.1 over
    # 12 training rows: 0.1 is not exact in binary, so np.mean is 0.1 + 1.4e-17 and np.std is 1.4e-17, not 0
    # (on this CPU; another summation order may give other round-off). A guard written as `std == 0` passes
    # case 2 and divides by 1.4e-17 in case 3.
    out = []
    for n_tr, n_te, d, const, value in ((40, 10, 4, None, 0.0), (25, 7, 5, 2, 3.5), (12, 30, 3, 0, 0.1)):
        X = _tabular(rng, n_tr + n_te, d, const, value)
        X_test = X[n_tr:] + rng.normal(0.5, 0.5, size=d) * X[:n_tr].std(0)   # the test split is shifted
        if const is not None:
            X_test[:, const] = value
        out.append({"X_train": X[:n_tr], "X_test": X_test})
    return out


def _is_constant(mu, sd):
    """The library's rule (bncourse.scaling.StandardScaler): a std within round-off of 0 counts as 0."""
    return sd <= 1e-12 * np.maximum(1.0, np.abs(mu))


def _standardize(X_fit, X, ddof=0, guard="relative", axis=0, use_var=False):
    """guard: "relative" (the reference), "exact" (only std == 0 is guarded), or None (no guard)."""
    mu = X_fit.mean(axis=axis, keepdims=True)
    sd = X_fit.var(axis=axis, ddof=ddof, keepdims=True) if use_var else X_fit.std(axis=axis, ddof=ddof, keepdims=True)
    with np.errstate(all="ignore"):
        if guard == "relative":
            sd = np.where(_is_constant(mu, sd), 1.0, sd)
        elif guard == "exact":
            sd = np.where(sd == 0, 1.0, sd)
        return (X - mu) / sd


@register
class Standardize(Exercise):
    name = "ch1_standardize"
    title = "standardize with training statistics (population std, zero-variance guard)"
    references = ("bncourse.scaling:StandardScaler", "sklearn.preprocessing:StandardScaler",
                  "sklearn.preprocessing:scale")

    def cases(self, rng):
        return _split_cases(rng)

    def run(self, fn, case):
        Xtr, Xte = case["X_train"], case["X_test"]
        before = (Xtr.copy(), Xte.copy())
        Ztr, Zte = _pair(fn(Xtr, Xte), "standardize")
        return {"Z_train": Ztr, "Z_test": Zte,
                "inputs_unchanged": bool(np.array_equal(Xtr, before[0]) and np.array_equal(Xte, before[1]))}

    def verify(self, case, result):
        Xtr, Xte = case["X_train"], case["X_test"]
        const = np.flatnonzero(_is_constant(Xtr.mean(0), Xtr.std(0)))
        guard_msg = ("a constant feature (zero variance) gave NaN or inf: divide by 1 instead of 0 where the "
                     "training std is 0, so that the feature becomes 0")
        roundoff = float(Xtr.std(0)[const].max()) if len(const) else 0.0
        roundoff_msg = ("a constant feature came out as nonzero values instead of 0: its training std is round-off "
                        f"({roundoff:.1e}), not exactly 0, and your code divided by it. Treat a std within "
                        "round-off of 0 as 0, e.g. std <= 1e-12 * max(1, |mean|); a test `std == 0` misses it")
        for split, X in (("Z_train", Xtr), ("Z_test", Xte)):
            mistakes = {
                "you used the sample std (ddof=1, divide by N-1); standardization uses the population std (ddof=0), "
                "so the training features get variance exactly 1": _standardize(Xtr, X, ddof=1),
                "you divided by the variance instead of the standard deviation": _standardize(Xtr, X, use_var=True),
                "you took the statistics per example (axis=1) instead of per feature (axis=0)":
                    _standardize(X, X, axis=1),
            }
            if len(const):
                # first the `std == 0` guard: where the std is round-off, no guard at all gives the same values,
                # and where it is exactly 0 this mistake equals the right answer and is skipped
                mistakes[roundoff_msg] = _standardize(Xtr, X, guard="exact")
                mistakes[guard_msg] = _standardize(Xtr, X, guard=None)
            if split == "Z_test":
                mistakes = {
                    "Z_test was standardized with the TEST split's own mean and std; apply the statistics fitted on "
                    "X_train to X_test (statistics from the test split leak information and break on small or "
                    "one-class test batches)": _standardize(Xte, Xte),
                    **mistakes,
                }
            expect_array(split, result[split], _standardize(Xtr, X), rtol=1e-9, atol=1e-9, mistakes=mistakes)
        expect(result["inputs_unchanged"], "your function changed X_train or X_test in place; return new arrays")


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
    references = ("bncourse.scaling:MinMaxScaler", "sklearn.preprocessing:MinMaxScaler",
                  "sklearn.preprocessing:minmax_scale")

    def cases(self, rng):
        return _split_cases(rng)

    def run(self, fn, case):
        Xtr, Xte = case["X_train"], case["X_test"]
        before = (Xtr.copy(), Xte.copy())
        Ztr, Zte = _pair(fn(Xtr, Xte), "minmax_scale")
        return {"Z_train": Ztr, "Z_test": Zte,
                "inputs_unchanged": bool(np.array_equal(Xtr, before[0]) and np.array_equal(Xte, before[1]))}

    def verify(self, case, result):
        Xtr, Xte = case["X_train"], case["X_test"]
        const = np.flatnonzero(np.ptp(Xtr, axis=0) == 0)
        for split, X in (("Z_train", Xtr), ("Z_test", Xte)):
            with np.errstate(all="ignore"):
                mistakes = {
                    "you divided by the maximum only; min-max subtracts the minimum first: "
                    "(x - min) / (max - min)": X / Xtr.max(0),
                    "you divided by the maximum instead of the range (max - min) after subtracting the minimum":
                        (X - Xtr.min(0)) / Xtr.max(0),
                }
            if len(const):
                mistakes["a constant feature (max == min) gave NaN or inf: divide by 1 where the range is 0, "
                         "so that the feature becomes 0"] = _minmax(Xtr, X, guard=False)
            if split == "Z_test":
                mistakes = {
                    "Z_test was scaled with the TEST split's own min and max; apply the min and max fitted on X_train "
                    "(test values may then fall outside [0, 1], and that is correct)": _minmax(Xte, Xte),
                    **mistakes,
                }
            expect_array(split, result[split], _minmax(Xtr, X), rtol=1e-9, atol=1e-9, mistakes=mistakes)
        expect(result["inputs_unchanged"], "your function changed X_train or X_test in place; return new arrays")


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
    references = ("bncourse.scaling:ZCAWhitening", "bncourse.scaling:PCAWhitening",
                  "sklearn.decomposition:PCA")

    def cases(self, rng):
        out = []
        for n, d, eps in ((200, 3, 1e-8), (120, 5, 1e-3), (60, 4, 1e-5)):
            mix = rng.normal(size=(d, d)) * 10.0 ** rng.uniform(-1, 1, size=d)   # correlated, unequal scales
            out.append({"X": rng.normal(size=(n, d)) @ mix + rng.normal(size=d) * 5, "eps": eps})
        return out

    def run(self, fn, case):
        return {"Z": _to_numpy(fn(case["X"], case["eps"]))}

    def verify(self, case, result):
        X, eps = case["X"], case["eps"]
        want = _zca(X, eps)
        Z = result["Z"]
        try:
            expect_array("Z", Z, want, rtol=1e-6, atol=1e-6, mistakes={
                "you used the sample covariance (divide by N-1); use the population covariance (divide by N)":
                    _zca(X, eps, ddof=1),
                "eps is outside the square root: use 1 / sqrt(lam + eps), not 1 / (sqrt(lam) + eps)":
                    _zca(X, eps, eps_inside=False),
                "you forgot to subtract the mean before whitening (and before the covariance)":
                    _zca(X, eps, center=False),
                "this is PCA whitening (X - mu) U diag(1/sqrt(lam + eps)): multiply by U^T to rotate back, which "
                "is what makes it ZCA": _zca(X, eps, rotate_back=False),
            })
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


@register
class ConditionNumber(Exercise):
    name = "ch1_condition_number"
    title = "condition number of the least-squares Hessian A^T A / N, A = [X, 1]"
    references = ("bncourse.conditioning:condition_number", "bncourse.conditioning:hessian_least_squares",
                  "numpy.linalg:cond")

    def cases(self, rng):
        out = []
        for n, d, spread in ((50, 2, 0.0), (80, 4, 2.0), (30, 3, 1.0), (60, 5, 3.0)):
            scales = 10.0 ** rng.uniform(-spread / 2, spread / 2, size=d)
            out.append({"X": rng.normal(rng.normal(size=d), scales, size=(n, d))})
        return out

    def run(self, fn, case):
        return {"kappa": _to_numpy(fn(case["X"]))}

    def verify(self, case, result):
        X = case["X"]
        A = np.hstack([X, np.ones((len(X), 1))])
        lam = np.linalg.eigvalsh(A.T @ A / len(X))
        want = lam[-1] / lam[0]
        lam_noint = np.linalg.eigvalsh(X.T @ X / len(X))
        Xc = X - X.mean(0)
        lam_cov = np.linalg.eigvalsh(Xc.T @ Xc / len(X))
        got = result["kappa"]
        if isinstance(got, np.ndarray) and got.shape == ():
            got = float(got)
        expect_scalar("kappa", got, want, rtol=1e-6, mistakes={
            "you left out the intercept column: the Hessian of a model with a bias is A^T A / N with A = [X, 1]":
                lam_noint[-1] / lam_noint[0],
            "that is the ratio of singular values of A, the square root of the condition number of A^T A":
                np.sqrt(want),
            "you used the covariance of the centred features, which ignores the intercept's coupling to "
            "uncentred features": lam_cov[-1] / lam_cov[0],
            "that is lam_min / lam_max; the condition number is lam_max / lam_min": 1.0 / want,
        })


@register
class DemoColumnMeans(Exercise):
    """Not graded: the warm-up that ``notebooks/00_start_here.ipynb`` uses to show what ``check`` prints."""
    name = "demo_column_means"
    title = "the mean of each feature (column) of X, shape (D,)"
    references = ()

    def cases(self, rng):
        return [{"X": rng.normal(rng.normal(size=d) * 5, 1.0, size=(n, d))} for n, d in ((6, 3), (10, 4))]

    def run(self, fn, case):
        return {"means": _to_numpy(fn(case["X"]))}

    def verify(self, case, result):
        X = case["X"]
        expect_array("means", result["means"], X.mean(axis=0), rtol=1e-12, atol=1e-12, mistakes={
            "you averaged each row (axis=1: one mean per example); average each column (axis=0: one per feature)":
                X.mean(axis=1),
            "you averaged all entries into one number; return one mean per feature (axis=0)": X.mean(),
        })
