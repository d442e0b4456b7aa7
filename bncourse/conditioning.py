"""How input scaling changes gradient descent: Hessians, condition numbers, steps to a target loss.

Least squares with an intercept, on inputs ``X: (N, D)`` and targets ``y: (N,)``::

    L(w, b) = 1/(2N) * ||X w + b - y||^2        Hessian  H = A^T A / N,   A = [X, 1]  (N, D+1)

The Hessian does not depend on (w, b), so gradient descent with step ``lr`` is a linear map, and
the error along eigenvector i of ``H`` (eigenvalue ``lam_i``) shrinks by ``|1 - lr * lam_i|`` per
step. Hence the two facts chapter 1 measures:

* the step is stable only for ``lr < 2 / lam_max``;
* at the best step the slowest direction shrinks by about ``1 - 2 / (kappa + 1)`` per step,
  with ``kappa = lam_max / lam_min`` the condition number. Large kappa, many steps.

Logistic regression has ``H(w) = A^T diag(p (1 - p)) A / N``; at ``w = 0`` (p = 1/2) this is a
quarter of the least-squares Hessian, so both share the condition number at initialization.

Because the least-squares trajectory is known in closed form (eigenbasis), :func:`steps_to_loss`
counts steps exactly, even when it takes billions; :func:`gd_least_squares` runs the plain loop
(for plots of the descent path, and as an independent check of the closed form).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "design_matrix",
    "hessian_least_squares",
    "hessian_logistic",
    "condition_number",
    "least_squares_solution",
    "least_squares_loss",
    "gd_least_squares",
    "steps_to_loss",
    "StepSearch",
    "best_stable_lr",
    "gd_logistic",
]


def _check_xy(X, y=None):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (N, D); got shape {X.shape}")
    if y is None:
        return X
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape (N,) = ({X.shape[0]},); got shape {y.shape}")
    return X, y


def design_matrix(X, intercept: bool = True) -> np.ndarray:
    """``[X, 1]`` of shape (N, D+1) when ``intercept``, else ``X`` (N, D) as float64."""
    X = _check_xy(X)
    return np.hstack([X, np.ones((X.shape[0], 1))]) if intercept else X


def hessian_least_squares(X, intercept: bool = True) -> np.ndarray:
    """Hessian of ``1/(2N) ||[X, 1] theta - y||^2``: ``A^T A / N``, shape (D+1, D+1) (or (D, D))."""
    A = design_matrix(X, intercept)
    return A.T @ A / A.shape[0]


def hessian_logistic(X, theta=None, intercept: bool = True) -> np.ndarray:
    """Hessian of the mean logistic loss at ``theta`` (default 0): ``A^T diag(p(1-p)) A / N``."""
    A = design_matrix(X, intercept)
    theta = np.zeros(A.shape[1]) if theta is None else np.asarray(theta, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-(A @ theta)))                  # (N,)
    return (A * (p * (1 - p))[:, None]).T @ A / A.shape[0]


def condition_number(H) -> float:
    """``lam_max / lam_min`` of a symmetric positive semi-definite matrix; ``inf`` if singular.

    Eigenvalues below ``1e-13 * lam_max`` count as zero (rounding noise of a singular matrix).
    """
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square; got shape {H.shape}")
    lam = np.linalg.eigvalsh((H + H.T) / 2)
    lam_max, lam_min = lam[-1], lam[0]
    if lam_max <= 0:
        raise ValueError("H has no positive eigenvalue")
    if lam_min <= 1e-13 * lam_max:
        return math.inf
    return float(lam_max / lam_min)


def least_squares_solution(X, y, intercept: bool = True) -> np.ndarray:
    """The minimiser ``theta* = (w*, b*)`` (shape (D+1,) or (D,)), by ``lstsq``."""
    X, y = _check_xy(X, y)
    A = design_matrix(X, intercept)
    return np.linalg.lstsq(A, y, rcond=None)[0]


def least_squares_loss(X, y, theta, intercept: bool = True) -> float:
    """``1/(2N) ||A theta - y||^2``."""
    X, y = _check_xy(X, y)
    r = design_matrix(X, intercept) @ np.asarray(theta, dtype=np.float64) - y
    return float(r @ r / (2 * len(y)))


def gd_least_squares(X, y, lr: float, steps: int, theta0=None, intercept: bool = True):
    """Plain full-batch gradient descent on the least-squares loss.

    Returns ``(thetas, losses)``: ``thetas (steps+1, P)`` every iterate including the start, and
    ``losses (steps+1,)``. Stops early (shorter arrays) if the loss overflows.
    """
    X, y = _check_xy(X, y)
    A = design_matrix(X, intercept)                          # (N, P)
    N = A.shape[0]
    theta = np.zeros(A.shape[1]) if theta0 is None else np.array(theta0, dtype=np.float64)
    thetas, losses = [theta.copy()], []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps + 1):
            residual = A @ theta - y                         # (N,)
            loss = residual @ residual / (2 * N)
            losses.append(loss)
            if not np.isfinite(loss) or len(losses) == steps + 1:
                break
            grad = A.T @ residual / N                        # (P,)
            theta = theta - lr * grad
            thetas.append(theta.copy())
    return np.array(thetas), np.array(losses)


def _excess_loss_model(X, y, theta0, intercept):
    """Eigen-decomposition of the problem: L(t) - L* = 1/2 sum_i lam_i c_i^2 (1 - lr lam_i)^(2t)."""
    X, y = _check_xy(X, y)
    A = design_matrix(X, intercept)
    H = A.T @ A / A.shape[0]
    lam, U = np.linalg.eigh(H)
    theta_star = np.linalg.lstsq(A, y, rcond=None)[0]
    theta0 = np.zeros(A.shape[1]) if theta0 is None else np.asarray(theta0, dtype=np.float64)
    c = U.T @ (theta0 - theta_star)                          # error in the eigenbasis
    keep = lam > 1e-13 * lam.max()                           # null directions never change the loss
    return lam[keep], c[keep], least_squares_loss(X, y, theta_star, intercept), \
        least_squares_loss(X, y, theta0, intercept)


def steps_to_loss(X, y, lr: float, target: float, theta0=None, intercept: bool = True,
                  max_steps: float = 1e15) -> float:
    """Exact number of gradient-descent steps until the least-squares loss is <= ``target``.

    Uses the closed-form trajectory, so counts far beyond what a loop could run are exact.
    Returns ``inf`` when the step is unstable (``lr >= 2 / lam_max``), when ``target`` is below the
    minimum loss, or when it takes more than ``max_steps``.
    """
    return _count_steps(_excess_loss_model(X, y, theta0, intercept), lr, target, max_steps)


def _count_steps(model, lr: float, target: float, max_steps: float) -> float:
    lam, c, loss_min, loss0 = model
    if loss0 <= target:
        return 0
    if target <= loss_min or lr <= 0:
        return math.inf
    q = np.abs(1.0 - lr * lam)                                # per-step contraction of each direction
    if np.any(q >= 1.0):
        return math.inf
    weights = 0.5 * lam * c**2                               # excess loss at t = 0, per direction
    gap = target - loss_min

    def excess(t):
        return float(np.sum(weights * np.power(q, 2.0 * t)))

    lo, hi = 0, 1
    while excess(hi) > gap:                                  # excess is non-increasing in t
        lo, hi = hi, hi * 2
        if hi > max_steps:
            return math.inf
    while hi - lo > 1:                                       # smallest t with excess(t) <= gap
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if excess(mid) > gap else (lo, mid)
    return hi


def _count_steps_grid(model, lrs, target: float, max_steps: float) -> np.ndarray:
    """:func:`_count_steps` for a whole array of learning rates at once, shape (L,) -> (L,).

    The same doubling-then-bisection search, run in lockstep for every ``lr`` (so a grid of 200
    learning rates costs about as much as one). Gives exactly the same counts as the scalar loop
    (``tests/test_conditioning.py`` checks this), which stays the readable reference.
    """
    lam, c, loss_min, loss0 = model
    lrs = np.asarray(lrs, dtype=np.float64)
    if loss0 <= target:
        return np.zeros(lrs.shape)
    steps = np.full(lrs.shape, math.inf)
    if target <= loss_min:
        return steps
    q = np.abs(1.0 - lrs[:, None] * lam[None, :])            # (L, K) per-step contraction per direction
    active = (lrs > 0) & np.all(q < 1.0, axis=1)             # (L,) stable learning rates
    weights = 0.5 * lam * c**2                               # (K,) excess loss at t = 0, per direction
    gap = target - loss_min

    def excess(t):                                           # t: (L,) step counts (floats holding integers)
        return np.sum(weights * np.power(q, 2.0 * t[:, None]), axis=1)

    lo, hi = np.zeros(lrs.shape), np.ones(lrs.shape)
    growing = active.copy()
    while growing.any():                                     # double hi until excess(hi) <= gap
        grow = growing & (excess(hi) > gap)
        lo, hi = np.where(grow, hi, lo), np.where(grow, 2 * hi, hi)
        too_slow = grow & (hi > max_steps)
        active &= ~too_slow
        growing = grow & ~too_slow
    while True:                                              # bisect: smallest t with excess(t) <= gap
        open_ = active & (hi - lo > 1)
        if not open_.any():
            break
        mid = np.floor((lo + hi) / 2)
        above = excess(mid) > gap
        lo = np.where(open_ & above, mid, lo)
        hi = np.where(open_ & ~above, mid, hi)
    steps[active] = hi[active]
    return steps


@dataclass
class StepSearch:
    """Result of :func:`best_stable_lr`."""
    lr: float                 # the learning rate with the fewest steps
    steps: float              # its step count
    lr_limit: float           # 2 / lam_max: every lr at or above it diverges
    lrs: np.ndarray           # the grid that was tried
    steps_per_lr: np.ndarray  # steps for each lr in the grid (inf where unstable or too slow)


def best_stable_lr(X, y, target: float, intercept: bool = True, lrs=None, n_grid: int = 200,
                   max_steps: float = 1e15) -> StepSearch:
    """Grid search for the learning rate that reaches ``target`` loss in the fewest GD steps.

    The default grid spans ``[1e-4, 1] * 2 / lam_max`` geometrically (``n_grid`` points, the last
    just below the stability limit) plus ``2 / (lam_max + lam_min)``, so every transform of the data
    gets its own best step.
    """
    H = hessian_least_squares(X, intercept)
    lam = np.linalg.eigvalsh(H)
    lam_max, lam_min = float(lam[-1]), float(max(lam[0], 0.0))
    limit = 2.0 / lam_max
    if lrs is None:
        # a geometric grid below the limit, plus the classical best constant step 2 / (lam_max + lam_min)
        lrs = np.sort(np.append(limit * np.geomspace(1e-4, 0.9999, n_grid), 2.0 / (lam_max + lam_min)))
    lrs = np.asarray(lrs, dtype=np.float64)
    model = _excess_loss_model(X, y, None, intercept)       # one eigendecomposition for the whole grid
    steps = _count_steps_grid(model, lrs, target, max_steps)
    i = int(np.argmin(steps))
    return StepSearch(lr=float(lrs[i]), steps=float(steps[i]), lr_limit=limit, lrs=lrs, steps_per_lr=steps)


def gd_logistic(X, y, lr: float, steps: int, intercept: bool = True):
    """Full-batch gradient descent on the mean logistic loss, labels ``y`` in {0, 1}.

    Returns ``(theta (P,), losses (steps+1,))``. Used to show that the least-squares story carries
    over to a classifier.
    """
    X, y = _check_xy(X, y)
    A = design_matrix(X, intercept)
    theta = np.zeros(A.shape[1])
    losses = []
    for t in range(steps + 1):
        z = A @ theta                                        # (N,) logits
        # log(1 + e^z) - y z, computed stably
        losses.append(float(np.mean(np.logaddexp(0.0, z) - y * z)))
        if t == steps:
            break
        p = 1.0 / (1.0 + np.exp(-z))
        theta = theta - lr * A.T @ (p - y) / len(y)
    return theta, np.array(losses)
