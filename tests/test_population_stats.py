"""Exact population statistics of BN layers, against NumPy statistics of the stacked inputs."""
import numpy as np
import pytest
import torch
from torch import nn

from bncourse import nn as scratch_nn
from bncourse.population_stats import bn_modules, population_mean_var, population_statistics


def test_population_mean_var_matches_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(1e3, 2.0, size=(n, 3)) for n in (5, 1, 17, 8)]   # large offset: stability
    mean, var, n = population_mean_var(batches)
    stacked = np.concatenate(batches)
    assert n == 31
    np.testing.assert_allclose(mean, stacked.mean(0), rtol=1e-14)
    np.testing.assert_allclose(var, stacked.var(0, ddof=1), rtol=1e-10)
    _, var0, _ = population_mean_var(batches, ddof=0)
    np.testing.assert_allclose(var0, stacked.var(0), rtol=1e-10)


def _data(seed=0, n=96, batch=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64) * 2 + 0.5
    return [(x[i:i + batch], torch.zeros(len(x[i:i + batch]), dtype=torch.long)) for i in range(0, n, batch)], x


def _model(bn_cls2, bn_cls1):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), bn_cls2(3), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 4 * 4, 5, bias=False), bn_cls1(5), nn.Tanh(), nn.Linear(5, 2),
    ).double()


@pytest.mark.parametrize("kind", ["torch", "scratch"])
def test_exact_statistics_equal_eval_mode_inputs(kind):
    bn2, bn1 = (nn.BatchNorm2d, nn.BatchNorm1d) if kind == "torch" else (scratch_nn.BatchNorm2d, scratch_nn.BatchNorm1d)
    model = _model(bn2, bn1)
    loader, x = _data()
    model.train()
    for xb, _ in loader[:2]:                    # a little EMA history, so the old stats are not (0, 1)
        model(xb)
    old = [m.running_mean.clone() for _, m in bn_modules(model)]
    new = population_statistics(model, loader)
    assert new is not model and model.training and new.training     # modes restored, copy returned
    for o, (_, m) in zip(old, bn_modules(model)):
        torch.testing.assert_close(m.running_mean, o)                  # original untouched
    new.eval()
    # Independent reference: layer 1 input is conv(x); layer 2 input is the eval-mode net up to it.
    h1 = new[0](x)                                                     # (N, 3, 4, 4)
    ref1 = h1.transpose(0, 1).reshape(3, -1).detach().numpy()
    torch.testing.assert_close(new[1].running_mean, torch.from_numpy(ref1.mean(1)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new[1].running_var, torch.from_numpy(ref1.var(1, ddof=1)), rtol=1e-10, atol=1e-12)
    h2 = new[4](new[3](new[2](new[1](h1)))).detach().numpy()           # (N, 5), after the NEW layer-1 stats
    torch.testing.assert_close(new[5].running_mean, torch.from_numpy(h2.mean(0)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new[5].running_var, torch.from_numpy(h2.var(0, ddof=1)), rtol=1e-10, atol=1e-12)


def test_cumulative_equals_mean_of_batch_stats_and_inplace():
    model = _model(nn.BatchNorm2d, nn.BatchNorm1d)
    loader, x = _data(batch=32)
    model.eval()
    out = population_statistics(model, loader, method="cumulative", inplace=True)
    assert out is model and not model.training
    assert model[1].momentum == 0.1                                    # restored
    # first layer: the cumulative average of per-batch means and unbiased variances
    h = [model[0](xb).transpose(0, 1).reshape(3, -1).detach().numpy() for xb, _ in loader]
    torch.testing.assert_close(model[1].running_mean, torch.from_numpy(np.mean([b.mean(1) for b in h], 0)))
    torch.testing.assert_close(model[1].running_var, torch.from_numpy(np.mean([b.var(1, ddof=1) for b in h], 0)))


def test_max_batches_and_bad_method():
    model = _model(nn.BatchNorm2d, nn.BatchNorm1d)
    loader, x = _data(batch=16)
    new = population_statistics(model, loader, max_batches=1)
    h = model[0](x[:16]).transpose(0, 1).reshape(3, -1).detach().numpy()
    torch.testing.assert_close(new[1].running_mean, torch.from_numpy(h.mean(1)))
    with pytest.raises(ValueError, match="method"):
        population_statistics(model, loader, method="ema")
