"""Chapter 5's swing study helpers, on a tiny conv net: extra EMAs, exact statistics, branching."""
import copy

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bncourse.population_stats import bn_modules, population_statistics
from bncourse.swing import (ExtraEMAs, branch_last_epoch, evaluate_statistics, sequential_population_statistics,
                            statistics_of, train_recording, with_statistics)


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(3 * 2 * 2, 5, bias=False), nn.BatchNorm1d(5), nn.Sigmoid(), nn.Linear(5, 3),
    ).to(dtype)


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g) * 2 + 0.5
    y = (x[:, 0, :3].mean(dim=(1, 2)) > 0.5).long() + (x[:, 0, 3:].mean(dim=(1, 2)) > 0.5).long()
    return x, y


def _loader(x, y, batch=16, seed=0):
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))


def test_extra_ema_with_momentum_0_1_reproduces_running_statistics():
    model = _net()
    extra = ExtraEMAs(model, momenta=(0.1, 0.01))
    x, _ = _data()
    model.train()
    for xb in x.split(16):
        model(xb)
    for (mean, var), (_, bn) in zip(extra.statistics(0.1), bn_modules(model)):
        torch.testing.assert_close(mean, bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var, bn.running_var, rtol=1e-5, atol=1e-6)
    slow = extra.statistics(0.01)
    assert not torch.allclose(slow[0][0], model[1].running_mean)         # another average
    model.eval()
    model(x)                                                            # eval mode: no update
    torch.testing.assert_close(extra.statistics(0.01)[0][0], slow[0][0])
    copy.deepcopy(model).train()(x)                                     # a copy's hooks do not update it
    torch.testing.assert_close(extra.statistics(0.01)[0][0], slow[0][0])
    extra.remove()
    model.train()(x)
    torch.testing.assert_close(extra.statistics(0.01)[0][0], slow[0][0])


def test_sequential_statistics_equal_the_exact_method():
    model = _net(torch.float64)
    x, _ = _data()
    x = x.double()
    model.train()
    model(x[:16])                                                      # some EMA history
    reference = population_statistics(model, [x[i:i + 10] for i in range(0, len(x), 10)])
    fast = sequential_population_statistics(model, x, batch_size=7)
    assert not fast.training
    for (m1, v1), (m2, v2) in zip(statistics_of(reference), statistics_of(fast)):
        torch.testing.assert_close(m1, m2, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(statistics_of(model)[1][1], statistics_of(fast)[1][1])   # original untouched


def test_with_statistics_copies():
    model = _net()
    stats = [(torch.full_like(bn.running_mean, 2.0), torch.full_like(bn.running_var, 3.0)) for _, bn in bn_modules(model)]
    new = with_statistics(model, stats)
    assert torch.all(new[1].running_mean == 2.0) and torch.all(new[6].running_var == 3.0)
    assert torch.all(model[1].running_mean == 0.0)


def test_train_recording_and_a_branch_that_repeats_the_last_epoch_exactly():
    x, y = _data()
    model = _net()
    loader = _loader(x, y)
    test = DataLoader(TensorDataset(x, y), batch_size=32)
    rec = train_recording(model, loader, test, x, epochs=3, lr=0.5, momenta=(0.01,), extra_per_epoch=True,
                          keep_states_before_end=(2,), progress=False)
    assert set(rec.test_acc) == {"running", "ema 0.01", "cumulative", "exact"}
    assert all(len(v) == 3 for v in rec.test_acc.values())
    assert len(rec.history.step_loss) == 3 * len(loader) and set(rec.states_before_end) == {0, 2}
    assert rec.eval_seconds > 0 and 0 < rec.history.train_seconds <= rec.history.seconds
    assert rec.model is model and set(rec.extra_stats) == {0.01}
    final = evaluate_statistics(model, test, x, extra=rec.extra_stats)
    assert all(final[kind] == rec.test_acc[kind][-1] for kind in final)
    # the same last epoch again, same constant lr: identical weights and buffers
    again, hist = branch_last_epoch(_net(), rec.last_epoch_start, loader, lr_schedule=lambda i: 0.5, progress=False)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    assert hist.step_loss == rec.history.step_loss[-len(loader):]
    # a different schedule: the first step is the same, later ones differ
    other, hist2 = branch_last_epoch(_net(), rec.last_epoch_start, loader, lr_schedule=lambda i: 0.5 / (1 + i),
                                     progress=False)
    assert hist2.step_loss[:2] == hist.step_loss[:2] and hist2.step_loss[2:] != hist.step_loss[2:]
