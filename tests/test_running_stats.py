"""Moving averages and momentum conventions against hand computations and torch.nn.BatchNorm1d."""
import numpy as np
import pytest
import torch

from bncourse.running_stats import (alpha_to_momentum, bessel_correction, cumulative_average, ema_bias_corrected,
                                    ema_keep_old, ema_take_new, momentum_to_alpha, simple_moving_average,
                                    update_running_stats)


def test_window_two_moving_average_of_the_notes_example():
    assert simple_moving_average([100, 110, 130, 120, 140], 2).tolist() == [100, 105, 120, 125, 130]


def test_the_two_ema_conventions_agree_when_alpha_is_one_minus_momentum():
    v = np.random.default_rng(0).normal(size=50)
    np.testing.assert_allclose(ema_keep_old(v, alpha=0.9, init=0.0), ema_take_new(v, momentum=0.1, init=0.0))
    assert alpha_to_momentum(0.99) == pytest.approx(0.01)
    assert momentum_to_alpha(0.1) == pytest.approx(0.9)


def test_ema_by_hand():
    out = ema_keep_old([10.0, 20.0], alpha=0.9, init=0.0)
    np.testing.assert_allclose(out, [1.0, 0.9 * 1.0 + 0.1 * 20.0])


def test_cumulative_average_is_the_running_mean():
    v = np.arange(1.0, 6.0)
    np.testing.assert_allclose(cumulative_average(v), np.cumsum(v) / np.arange(1, 6))


def test_bias_corrected_ema_of_a_constant_is_that_constant_from_step_one():
    np.testing.assert_allclose(ema_bias_corrected(np.full(10, 7.0), alpha=0.9), 7.0)
    assert ema_keep_old(np.full(10, 7.0), alpha=0.9, init=0.0)[0] == pytest.approx(0.7)


def test_bessel_correction():
    x = np.random.default_rng(1).normal(size=7)
    np.testing.assert_allclose(bessel_correction(x.var(), 7), x.var(ddof=1))
    with pytest.raises(ValueError, match="m >= 2"):
        bessel_correction(1.0, 1)


def test_update_running_stats_matches_torch():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(3, momentum=0.2).double()
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(4):
        x = torch.randn(5, 3, dtype=torch.double) * 2 + 1
        bn(x)
        xn = x.numpy()
        rm, rv = update_running_stats(rm, rv, xn.mean(0), xn.var(0), n=5, momentum=0.2)
    np.testing.assert_allclose(rm, bn.running_mean.numpy())
    np.testing.assert_allclose(rv, bn.running_var.numpy())


def test_start_value_weight_after_one_over_one_minus_alpha_steps_is_about_one_over_e():
    # The docstring's claim: 1/(1 - alpha) steps leave ~e^-1 of the start value; ~4.6/(1 - alpha) steps reach 1 %.
    for alpha in (0.9, 0.99, 0.999):
        start_only = ema_keep_old(np.zeros(int(round(10 / (1 - alpha)))), alpha=alpha, init=1.0)
        window = int(round(1 / (1 - alpha)))
        assert 0.34 < start_only[window - 1] < np.exp(-1)
        below_1pct = int(np.argmax(start_only < 0.01)) + 1
        assert abs(below_1pct - np.log(100) / (1 - alpha)) <= 0.05 * np.log(100) / (1 - alpha)


def test_alpha_range():
    np.testing.assert_allclose(ema_keep_old([5.0, 7.0], alpha=1.0, init=2.0), [2.0, 2.0])   # 1 keeps the start
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ema_keep_old([1.0], alpha=1.5)
    with pytest.raises(ValueError, match="bias correction"):
        ema_bias_corrected([1.0, 2.0], alpha=1.0)
