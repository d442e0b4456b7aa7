"""bncourse.conditioning against independent references: numpy.linalg, torch autograd, the plain GD loop."""
import math

import numpy as np
import pytest
import torch

from bncourse import conditioning as cond


def _data(seed=0, n=60, scales=(1.0, 30.0, 0.1)):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, len(scales))) * np.asarray(scales) + 2.0   # (N, D), off-centre
    y = X @ rng.standard_normal(len(scales)) + 0.3 * rng.standard_normal(n)
    return X, y


def test_hessian_least_squares_matches_torch_autograd():
    X, y = _data()
    A = torch.tensor(cond.design_matrix(X))
    yt = torch.tensor(y)

    def loss(theta):
        r = A @ theta - yt
        return (r @ r) / (2 * len(yt))

    H_ref = torch.autograd.functional.hessian(loss, torch.zeros(A.shape[1], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(cond.hessian_least_squares(X), H_ref, rtol=1e-12, atol=1e-12)


def test_hessian_logistic_matches_torch_autograd_away_from_zero():
    X, _ = _data(1)
    yb = (X[:, 0] > 2.0).astype(float)
    theta = np.array([0.3, -0.02, 1.5, -0.4])
    A = torch.tensor(cond.design_matrix(X))
    yt = torch.tensor(yb)

    def loss(th):
        z = A @ th
        return torch.mean(torch.nn.functional.softplus(z) - yt * z)

    H_ref = torch.autograd.functional.hessian(loss, torch.tensor(theta)).numpy()
    np.testing.assert_allclose(cond.hessian_logistic(X, theta), H_ref, rtol=1e-10, atol=1e-12)
    # at theta = 0, p(1-p) = 1/4 everywhere: a quarter of the least-squares Hessian, same condition number
    np.testing.assert_allclose(cond.hessian_logistic(X), cond.hessian_least_squares(X) / 4, rtol=1e-12)


def test_condition_number_matches_numpy_and_flags_singular():
    X, _ = _data()
    H = cond.hessian_least_squares(X)
    assert cond.condition_number(H) == pytest.approx(np.linalg.cond(H), rel=1e-8)
    assert cond.condition_number(np.diag([4.0, 1.0])) == pytest.approx(4.0)
    X_dup = np.hstack([X, X[:, :1]])              # a duplicated column: singular Hessian
    assert cond.condition_number(cond.hessian_least_squares(X_dup)) == math.inf


def test_gd_loop_converges_to_lstsq():
    X, y = _data()
    Z = (X - X.mean(0)) / X.std(0)
    H = cond.hessian_least_squares(Z)
    lr = 1.0 / np.linalg.eigvalsh(H)[-1]
    thetas, losses = cond.gd_least_squares(Z, y, lr, 500)
    assert thetas.shape == (501, 4) and losses.shape == (501,)
    np.testing.assert_allclose(thetas[-1], cond.least_squares_solution(Z, y), rtol=1e-8, atol=1e-8)
    assert np.all(np.diff(losses) <= 1e-12)        # stable step: monotone loss


@pytest.mark.parametrize("frac", [0.3, 0.9, 1.0, 1.95])
def test_closed_form_step_count_equals_the_loop(frac):
    X, y = _data(2, scales=(1.0, 3.0, 0.5))
    H = cond.hessian_least_squares(X)
    lr = frac * 2 / (np.linalg.eigvalsh(H)[-1] + np.linalg.eigvalsh(H)[0]) if frac != 1.95 else \
        0.975 * 2 / np.linalg.eigvalsh(H)[-1]
    lo = cond.least_squares_loss(X, y, np.zeros(4))
    ls = cond.least_squares_loss(X, y, cond.least_squares_solution(X, y))
    target = ls + 1e-3 * (lo - ls)
    n = cond.steps_to_loss(X, y, lr, target)
    assert 0 < n < 5000
    _, losses = cond.gd_least_squares(X, y, lr, int(n) + 5)
    first = int(np.argmax(losses <= target))
    assert losses[first] <= target and first == n, (first, n)


@pytest.mark.parametrize("tol", [1e-1, 1e-3, 1e-8])
def test_vectorized_grid_count_equals_the_scalar_count(tol):
    """best_stable_lr counts a whole grid at once; every count equals the readable scalar search."""
    X, y = _data(4, scales=(1.0, 300.0, 0.01))
    lo = cond.least_squares_loss(X, y, np.zeros(4))
    ls = cond.least_squares_loss(X, y, cond.least_squares_solution(X, y))
    target = ls + tol * (lo - ls)
    search = cond.best_stable_lr(X, y, target)
    lrs = np.append(search.lrs, [0.0, -1.0, 1.5 * search.lr_limit])       # and some that must give inf
    model = cond._excess_loss_model(X, y, None, True)
    scalar = np.array([cond._count_steps(model, lr, target, 1e15) for lr in lrs])
    grid = cond._count_steps_grid(model, lrs, target, 1e15)
    np.testing.assert_array_equal(grid, scalar)
    assert np.isfinite(grid[:-3]).any() and np.all(np.isinf(grid[-3:]))
    # a step cap turns the slow counts into inf, in both
    capped = cond._count_steps_grid(model, lrs, target, 1e3)
    np.testing.assert_array_equal(capped, [cond._count_steps(model, lr, target, 1e3) for lr in lrs])


def test_unstable_step_and_unreachable_target_are_inf():
    X, y = _data()
    H = cond.hessian_least_squares(X)
    limit = 2 / np.linalg.eigvalsh(H)[-1]
    ls = cond.least_squares_loss(X, y, cond.least_squares_solution(X, y))
    assert cond.steps_to_loss(X, y, 1.01 * limit, ls + 1.0) == math.inf
    assert cond.steps_to_loss(X, y, 0.5 * limit, ls - 1e-6) == math.inf
    _, losses = cond.gd_least_squares(X, y, 1.05 * limit, 300)
    assert not np.isfinite(losses[-1]) or losses[-1] > 1e6 * losses[0]   # the loop really diverges


def test_best_stable_lr_whitened_one_step_and_raw_slower():
    X, y = _data()
    Zw = X - X.mean(0)
    lam, U = np.linalg.eigh(Zw.T @ Zw / len(X))
    Zw = Zw @ U / np.sqrt(lam)                      # PCA-whitened, independent of bncourse.scaling
    lo = cond.least_squares_loss(X, y, np.zeros(4))
    ls = cond.least_squares_loss(X, y, cond.least_squares_solution(X, y))
    target = ls + 1e-8 * (lo - ls)
    raw = cond.best_stable_lr(X, y, target)
    white = cond.best_stable_lr(Zw, y, target)
    assert white.steps == 1 and white.lr == pytest.approx(1.0, abs=0.01)
    assert raw.steps > 100 * white.steps
    assert raw.lr < raw.lr_limit and np.all(np.isinf(cond.best_stable_lr(X, y, target, lrs=[raw.lr_limit * 1.01]).steps_per_lr))


def test_gd_logistic_decreases_loss_and_starts_at_log2():
    X, _ = _data(3)
    Z = (X - X.mean(0)) / X.std(0)
    yb = (Z[:, 1] + 0.3 * Z[:, 0] > 0).astype(float)
    theta, losses = cond.gd_logistic(Z, yb, lr=1.0, steps=200)
    assert losses[0] == pytest.approx(np.log(2))
    assert losses[-1] < 0.2 and theta.shape == (4,)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        cond.hessian_least_squares(np.zeros(5))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        cond.steps_to_loss(np.zeros((5, 2)), np.zeros(4), 0.1, 1.0)
