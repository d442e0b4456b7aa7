"""Santurkar et al. measurements against closed forms on a quadratic, and the noisy-BN layer."""
import numpy as np
import torch
from torch import nn

from bncourse import landscape as ls


def _quadratic_problem(seed=0, n=40, d=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3.0, d, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, x, y


def test_measurements_match_closed_form_on_a_quadratic():
    # L(w) = mean((Xw - y)^2): gradient g = (2/n) X^T (Xw - y), Hessian H = (2/n) X^T X, so
    # grad(w - eta g) - g = -eta H g exactly, beta = ||Hg|| / ||g|| for every eta, and
    # L(w - eta g) = L(w) - eta ||g||^2 + eta^2 / 2 g^T H g.
    model, x, y = _quadratic_problem()
    n = x.shape[0]
    w = model.weight.detach().reshape(-1, 1)
    r = x @ w - y
    g = (2 / n) * x.T @ r                      # (d, 1)
    hess = (2 / n) * x.T @ x
    loss0 = (r ** 2).mean().item()
    etas = [0.01, 0.03, 0.1]
    res = ls.measure_along_gradient(model, x, y, etas, loss_fn=nn.functional.mse_loss)
    hg = (hess @ g).norm().item()
    want_losses = [loss0 - e * (g ** 2).sum().item() + 0.5 * e ** 2 * (g.T @ hess @ g).item() for e in etas]
    np.testing.assert_allclose(res.losses, want_losses, rtol=1e-10)
    assert np.isclose(res.loss_range, max(want_losses) - min(want_losses), rtol=1e-10)
    assert np.isclose(res.grad_norm, g.norm().item(), rtol=1e-10)
    assert np.isclose(res.grad_predictiveness, max(etas) * hg, rtol=1e-10)
    assert np.isclose(res.beta_smoothness, hg / g.norm().item(), rtol=1e-10)
    # per step size: ||grad(w - eta g) - g|| = eta ||Hg||; relative to ||g||: max_eta eta ||Hg|| / ||g||
    np.testing.assert_allclose(res.grad_changes, [e * hg for e in etas], rtol=1e-10)
    assert np.isclose(res.grad_change_relative, max(etas) * hg / g.norm().item(), rtol=1e-10)
    # beta-smoothness is at most the largest Hessian eigenvalue
    assert res.beta_smoothness <= torch.linalg.eigvalsh(hess).max().item() + 1e-9


def test_measurement_leaves_weights_grads_and_running_stats_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ls.measure_along_gradient(model, x, y, [0.1, 0.5, 1.0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_noisy_affine_changes_statistics_every_step_and_is_identity_in_eval():
    layer = ls.NoisyAffine(3, max_shift=1.0, max_scale=3.0, noise_std=0.5,
                           generator=torch.Generator().manual_seed(0))
    x = torch.randn(64, 3, 5, 5)
    layer.train()
    a, b = layer(x), layer(x)
    # the same input gives different outputs at two steps; channel means move by O(max_shift)
    mean_a, mean_b = a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3))
    assert (mean_a - mean_b).abs().max() > 0.1
    assert layer.last_scale.shape == (64, 3) and (layer.last_scale.mean(0) > 0).all()
    layer.eval()
    assert torch.equal(layer(x), x)


def test_noisy_affine_is_reproducible_with_a_generator():
    x = torch.randn(8, 4)
    outs = []
    for _ in range(2):
        layer = ls.NoisyAffine(4, generator=torch.Generator().manual_seed(5))
        outs.append(layer(x))
    assert torch.equal(outs[0], outs[1])


def test_train_with_smoothness_records_at_the_right_steps():
    torch.manual_seed(0)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    losses, at, found = ls.train_with_smoothness(model, data, lr=0.1, steps=7, every=3, progress=False)
    assert len(losses) == 7 and at == [0, 3, 6] and len(found) == 3
    s = ls.summarize(found)
    assert set(s) == set(ls.MEASURES)
    assert all(np.isfinite(v) and v >= 0 for v in s.values())
    assert s["loss_range"] == np.median([m.loss_range for m in found])


def test_relative_gradient_change_ignores_the_loss_scale():
    # Multiplying the loss by c multiplies g and every gradient change by c: the raw gradient predictiveness
    # scales by c, the relative change does not.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    base = ls.measure_along_gradient(model, x, y, [0.1, 0.5])
    scaled = ls.measure_along_gradient(model, x, y, [0.1 / 10, 0.5 / 10],
                                       loss_fn=lambda out, t: 10 * nn.functional.cross_entropy(out, t))
    assert np.isclose(scaled.grad_predictiveness, 10 * base.grad_predictiveness, rtol=1e-9)
    assert np.isclose(scaled.grad_change_relative, base.grad_change_relative, rtol=1e-9)
