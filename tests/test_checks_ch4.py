"""Chapter 4 self-checks: the reference solutions pass, and each named mistake gets its message."""
import numpy as np
import pytest
import torch

from bncourse.checks import REGISTRY, CheckFailure, check
from check_helpers import check_fails
from bncourse.population_stats import population_mean_var
from bncourse.running_stats import ema_bias_corrected


# ---------------------------------------------------------------- reference solutions (independent code)
def running_update(running_mean, running_var, x, momentum, convention, training=True):
    if not training:
        return running_mean.copy(), running_var.copy()
    n = x.shape[0]
    w = momentum if convention == "pytorch" else 1 - momentum
    return ((1 - w) * running_mean + w * x.mean(0),
            (1 - w) * running_var + w * x.var(0, ddof=1))


def convert_momentum(value, source, target):
    keep_old = {"d2l", "cs231n", "keras"}
    return value if (source in keep_old) == (target in keep_old) else 1 - value


def bias_corrected_ema(values, alpha):
    return ema_bias_corrected(values, alpha)


def population_stats(batches):
    mean, var, _ = population_mean_var(batches)
    return mean, var


def fold_bn(gamma, beta, running_mean, running_var, eps):
    a = gamma / np.sqrt(running_var + eps)
    return a, beta - a * running_mean


def fold_linear(W, c, gamma, beta, running_mean, running_var, eps):
    a, b = fold_bn(gamma, beta, running_mean, running_var, eps)
    return a[:, None] * W, a * c + b


REFERENCES = {
    "ch4_running_update": running_update, "ch4_convert_momentum": convert_momentum,
    "ch4_bias_corrected_ema": bias_corrected_ema, "ch4_population_stats": population_stats,
    "ch4_fold_bn": fold_bn, "ch4_fold_linear": fold_linear,
}


def test_all_registered():
    assert set(REFERENCES) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    check(name, REFERENCES[name])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes_fresh_seeds(name):
    for seed in (1, 2, 3):
        check(name, REFERENCES[name], seed=seed, quiet=True)


def test_torch_answers_are_accepted():
    def fold_bn_torch(gamma, beta, mean, var, eps):
        g, b, m, v = map(torch.from_numpy, (gamma, beta, mean, var))
        a = g / torch.sqrt(v + eps)
        return a, b - a * m
    check("ch4_fold_bn", fold_bn_torch, quiet=True)


_fails = check_fails


# ---------------------------------------------------------------- running update
def test_running_update_mistakes():
    def reversed_(rm, rv, x, momentum, convention, training=True):
        if not training:
            return rm, rv
        w = momentum if convention == "pytorch" else 1 - momentum
        w = 1 - w
        return (1 - w) * rm + w * x.mean(0), (1 - w) * rv + w * x.var(0, ddof=1)
    _fails("ch4_running_update", reversed_, "momentum convention is reversed")

    def no_bessel(rm, rv, x, momentum, convention, training=True):
        if not training:
            return rm, rv
        w = momentum if convention == "pytorch" else 1 - momentum
        return (1 - w) * rm + w * x.mean(0), (1 - w) * rv + w * x.var(0)
    _fails("ch4_running_update", no_bessel, "without Bessel's correction")

    def updates_in_eval(rm, rv, x, momentum, convention, training=True):
        return running_update(rm, rv, x, momentum, convention, True)
    _fails("ch4_running_update", updates_in_eval, "inference mode (training=False)", "must not change")

    def replaced(rm, rv, x, momentum, convention, training=True):
        return (x.mean(0), x.var(0, ddof=1)) if training else (rm, rv)
    _fails("ch4_running_update", replaced, "replaced by the batch mean")

    def in_place(rm, rv, x, momentum, convention, training=True):
        new = running_update(rm, rv, x, momentum, convention, training)
        rm[...] = new[0]
        rv[...] = new[1]
        return rm, rv
    _fails("ch4_running_update", in_place, "in place")

    def returns_one(rm, rv, x, momentum, convention, training=True):
        return rm
    _fails("ch4_running_update", returns_one, "must return a tuple (new_mean, new_var)")


# ---------------------------------------------------------------- conversion
def test_convert_momentum_mistakes():
    _fails("ch4_convert_momentum", lambda v, s, t: v, "copied unchanged", "opposite conventions")
    _fails("ch4_convert_momentum", lambda v, s, t: 1 - v, "same convention")
    _fails("ch4_convert_momentum", lambda v, s, t: str(v), "must return a number")


def test_convert_momentum_names_d2l_not_the_paper():
    # The paper has no momentum; the keep-old 0.9 is d2l's (the study notes' code). An answer that does not
    # know "d2l" as a keep-old source copies 0.9 into PyTorch unchanged, and the check says so.
    from bncourse.checks.ch4_inference import KEEP_OLD
    assert KEEP_OLD == ("d2l", "cs231n", "keras")

    def unknown_d2l(value, source, target):
        keep_old = {"cs231n", "keras"}
        return value if (source in keep_old) == (target in keep_old) else 1 - value
    _fails("ch4_convert_momentum", unknown_d2l, "copied unchanged", "'d2l' and 'pytorch' use opposite conventions")


# ---------------------------------------------------------------- bias-corrected EMA
def _ema0(values, alpha):
    out, avg = np.empty_like(values), np.zeros(values.shape[1])
    for t in range(len(values)):
        avg = alpha * avg + (1 - alpha) * values[t]
        out[t] = avg
    return out


def test_bias_corrected_ema_mistakes():
    _fails("ch4_bias_corrected_ema", _ema0, "bias correction is missing")

    def off_by_one(values, alpha):
        t = np.arange(1, len(values) + 1)[:, None]
        return _ema0(values, alpha) / (1 - alpha ** (t + 1))
    _fails("ch4_bias_corrected_ema", off_by_one, "off by one")

    def reversed_(values, alpha):
        t = np.arange(1, len(values) + 1)[:, None]
        return _ema0(values, 1 - alpha) / (1 - (1 - alpha) ** t)
    _fails("ch4_bias_corrected_ema", reversed_, "convention is reversed")

    _fails("ch4_bias_corrected_ema", lambda v, a: ema_bias_corrected(v, a)[-1], "whole trajectory")


# ---------------------------------------------------------------- population statistics
def test_population_stats_mistakes():
    def equal_weights(batches):
        bs = list(batches)
        return np.mean([b.mean(0) for b in bs], 0), np.mean([b.var(0, ddof=1) for b in bs], 0)
    _fails("ch4_population_stats", equal_weights, "equal weights")

    def averaged_variances(batches):
        bs = list(batches)
        x = np.concatenate(bs)
        return x.mean(0), np.mean([b.var(0, ddof=1) for b in bs], 0)
    _fails("ch4_population_stats", averaged_variances, "averaged the per-batch variances")

    def biased(batches):
        x = np.concatenate(list(batches))
        return x.mean(0), x.var(0)
    _fails("ch4_population_stats", biased, "biased one")

    def two_passes(batches):
        mean = np.concatenate(list(batches)).mean(0)
        sq = np.concatenate([(b - mean) ** 2 for b in batches])
        return mean, sq.sum(0) / (len(sq) - 1)
    _fails("ch4_population_stats", two_passes, "second time")

    def uses_len(batches):
        len(batches)
    _fails("ch4_population_stats", uses_len, "without a length")


# ---------------------------------------------------------------- folding
def test_fold_bn_mistakes():
    _fails("ch4_fold_bn", lambda g, b, m, v, e: (g / np.sqrt(v), b - g / np.sqrt(v) * m), "eps is missing")
    _fails("ch4_fold_bn", lambda g, b, m, v, e: (g / np.sqrt(v + e), b - m), "scaled mean")
    _fails("ch4_fold_bn", lambda g, b, m, v, e: (np.sqrt(v + e) / g, b - m), "inverted")
    _fails("ch4_fold_bn", lambda g, b, m, v, e: (g / (v + e), b), "instead of the standard deviation")


def test_fold_linear_mistakes():
    def columns(W, c, g, b, m, v, e):
        a, bb = fold_bn(g, b, m, v, e)
        return W * a[None, :], a * c + bb
    _fails("ch4_fold_linear", columns, "columns of W")

    def naive_broadcast(W, c, g, b, m, v, e):          # W * a broadcasts a along the columns
        a, bb = fold_bn(g, b, m, v, e)
        return W * a, a * c + bb
    _fails("ch4_fold_linear", naive_broadcast, "columns of W")

    def drops_bias(W, c, g, b, m, v, e):
        a, bb = fold_bn(g, b, m, v, e)
        return a[:, None] * W, bb
    _fails("ch4_fold_linear", drops_bias, "old bias was dropped")

    def unscaled_bias(W, c, g, b, m, v, e):
        a, bb = fold_bn(g, b, m, v, e)
        return a[:, None] * W, c + bb
    _fails("ch4_fold_linear", unscaled_bias, "scaled too")
