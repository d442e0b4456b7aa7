"""Checks for chapter 4, training mode vs inference mode.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch4_running_update``     ``running_update(running_mean, running_var, x, momentum, convention, training)
                           -> (new_mean, new_var)``: one running-statistics update of a BN layer, in the
                           ``"pytorch"`` (momentum weights the new value) or ``"keep_old"`` (the number is
                           the weight kept on the old value, as in d2l, CS231n and Keras) convention;
                           unchanged in inference mode
``ch4_convert_momentum``   ``convert_momentum(value, source, target) -> float`` between the conventions of
                           ``"d2l"``, ``"cs231n"``, ``"keras"`` (keep-old) and ``"pytorch"`` (take-new)

``ch4_bias_corrected_ema`` ``bias_corrected_ema(values, alpha) -> (T, D)``: EMA started at 0 and divided
                           by ``1 - alpha**t``
``ch4_population_stats``   ``population_stats(batches) -> (mean, var)``: exact mean and unbiased variance
                           per feature over all rows of an iterator of (n_i, D) batches, in one pass
``ch4_fold_bn``            ``fold_bn(gamma, beta, running_mean, running_var, eps) -> (a, b)`` with
                           ``a * x + b`` equal to inference-mode BN
``ch4_fold_linear``        ``fold_linear(W, c, gamma, beta, running_mean, running_var, eps) -> (W2, c2)``:
                           BN merged into the preceding affine layer ``x @ W.T + c``
``ch4_merge_stats``        ``merge_batch_stats(counts, means, variances) -> (mean, var)``: the exact mean and
                           unbiased variance of all rows from per-chunk counts, means and BIASED variances
                           (a derivation the chapter does not show; tested at offsets of 1e4 and 1e6)
``ch4_predict_var_steps``  a number committed before the experiment: the first step at which a
                           ``BatchNorm1d(momentum=0.05)`` has running_var within 1 % of a feature's variance 0.04
``ch4_predict_eval``       letters committed before the experiment: what ``model.eval()`` changes
``ch4_debug_predict``      ``predict(model, x, batch_size) -> (N,) labels``: a prediction loop whose planted
                           bug (``model.eval()`` forgotten) the student fixes

All inputs and outputs are float64 NumPy arrays (a momentum conversion returns a float, in any precision).

The batch-norm paper gives no moving-average update and no momentum: its Algorithm 2 averages batch statistics
after training, and moving averages appear once, as a way to track accuracy while training. So no convention
is named after it; the keep-old 0.9 comes from d2l (the study notes' code) and CS231n.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import (CheckFailure, Exercise, Mistake, describe_value, expect, expect_array, expect_inputs_unchanged,
                   expect_scalar, register)
from .predict import PredictChoice, PredictNumber
from .shared import to_numpy

__all__ = [
    "RunningUpdate", "ConvertMomentum", "BiasCorrectedEMA", "PopulationStats", "FoldBN", "FoldLinear",
    "MergeStats", "PredictVarSteps", "PredictEval", "DebugPredict", "KEEP_OLD", "precision_loss",
]

#: sources whose number is the weight kept on the OLD average (alpha)
KEEP_OLD = ("d2l", "cs231n", "keras")


def _pair(result: Any, what: str, names: tuple[str, str]) -> tuple[Any, Any]:
    """The two results of a tuple (or list) of length 2; otherwise the message names what to return."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailure(f"{what} must return a tuple ({names[0]}, {names[1]}); it returned {describe_value(result)}")
    return result[0], result[1]


# --------------------------------------------------------------------------------------------
# 1. Running-statistics update
# --------------------------------------------------------------------------------------------
def _new_weight(momentum: float, convention: str) -> float:
    """Weight of the new batch statistic in the update."""
    return momentum if convention == "pytorch" else 1.0 - momentum


def _update(rm, rv, batch_mean, batch_var, w):
    return (1.0 - w) * rm + w * batch_mean, (1.0 - w) * rv + w * batch_var


def _running_parts(case, *, bessel=True, reverse=False, std=False):
    """The update of a case, the right one or a variant (no Bessel, weight 1 - w, standard deviation averaged)."""
    rm, rv, x = case["running_mean"], case["running_var"], case["x"]
    n = x.shape[0]
    bmean, bvar = x.mean(axis=0), x.var(axis=0)                 # biased batch variance
    var_in = bvar * n / (n - 1) if bessel else bvar
    if std:
        var_in = np.sqrt(var_in)
    w = _new_weight(case["momentum"], case["convention"])
    updated = _update(rm, rv, bmean, var_in, 1.0 - w if reverse else w)
    # "want" is the right answer only with the default keywords
    return {"updated": updated, "want": updated if case["training"] else (rm, rv), "bmean": bmean, "batch_var": var_in}


def _in_training(case, outcome):
    return outcome if case["training"] else None


def _in_eval(case, outcome):
    return None if case["training"] else outcome


def _as_update(pair):
    return {"new_mean": pair[0], "new_var": pair[1]}


_RULE = {"pytorch": "running = (1 - momentum) * running + momentum * batch",
         "keep_old": "running = alpha * running + (1 - alpha) * batch"}
_REVERSED = {"pytorch": "PyTorch's momentum weights the NEW batch value, ",
             "keep_old": "alpha is the weight kept on the OLD running value, "}
_STALE = "in inference mode (training=False) the running statistics must not change: return them as they are"


def _reversed_mistake(convention):
    return Mistake(f"reversed_{convention}", f"the momentum convention is reversed: in the {convention!r} convention "
                   + _REVERSED[convention] + _RULE[convention],
                   lambda c: _in_training(c, _as_update(_running_parts(c, reverse=True)["updated"]))
                   if c["convention"] == convention else None)


def _replaced_mistake(convention, what):
    stat = {"mean": "running mean was replaced by the batch mean", "var": "running variance was replaced by the batch "
            "variance"}[what]
    return Mistake(f"replaced_{what}_{convention}", f"the {stat} instead of averaged with it: " + _RULE[convention],
                   lambda c: _in_training(c, {"new_" + what: _running_parts(c)["bmean" if what == "mean" else
                                                                                "batch_var"]})
                   if c["convention"] == convention else None)


@register
class RunningUpdate(Exercise):
    name = "ch4_running_update"
    title = "one running-statistics update, in PyTorch's or the keep-old convention"
    references = ("bncourse.running_stats:update_running_stats", "bncourse.running_stats:ema_take_new",
                  "bncourse.running_stats:ema_keep_old")
    hints = (
        "a running statistic is an exponential moving average: the new estimate is a weighted mix of the old "
        "estimate and the statistic of the current batch; in inference mode nothing is mixed in",
        "x is (N, D): the batch mean and variance are per feature, over axis 0, shape (D,); the two conventions "
        "differ only in which term their number weights (PyTorch: the new one; keep-old: the old one)",
        "the weight of the new value is w = momentum (pytorch) or 1 - alpha (keep_old); running = (1 - w) * running "
        "+ w * batch_stat, and the variance mixed in is the unbiased one, biased_var * N / (N - 1)",
    )
    mistakes = (
        Mistake("swapped", "your function returned its two results in the wrong order: return (new_mean, new_var), "
                "not (new_var, new_mean)",
                lambda c: dict(zip(("new_var", "new_mean"), _running_parts(c)["want"]))),
        Mistake("stale", _STALE, lambda c: _in_eval(c, _as_update(_running_parts(c)["updated"]))),
        Mistake("stale_reversed", _STALE + " (your update also reverses the momentum convention)",
                lambda c: _in_eval(c, _as_update(_running_parts(c, reverse=True)["updated"]))),
        Mistake("stale_no_bessel", _STALE + " (and your running_var also misses Bessel's correction)",
                lambda c: _in_eval(c, _as_update(_running_parts(c, bessel=False)["updated"]))),
        _reversed_mistake("pytorch"),
        _reversed_mistake("keep_old"),
        _replaced_mistake("pytorch", "mean"),
        _replaced_mistake("keep_old", "mean"),
        Mistake("mean_not_updated", "the running mean was not updated in training mode",
                lambda c: _in_training(c, {"new_mean": c["running_mean"]})),
        Mistake("no_bessel", "running_var is stored without Bessel's correction: normalize with the biased variance, "
                "but store the unbiased one, batch_var * n / (n - 1)",
                lambda c: _in_training(c, {"new_var": _running_parts(c, bessel=False)["updated"][1]})),
        Mistake("reversed_no_bessel", "the convention is reversed and running_var misses Bessel's correction "
                "n / (n - 1)",
                lambda c: _in_training(c, {"new_var": _running_parts(c, bessel=False, reverse=True)["updated"][1]})),
        Mistake("averaged_std", "you averaged the standard deviation instead of the variance",
                lambda c: _in_training(c, {"new_var": _running_parts(c, std=True)["updated"][1]})),
        _replaced_mistake("pytorch", "var"),
        _replaced_mistake("keep_old", "var"),
        Mistake("var_not_updated", "the running variance was not updated in training mode",
                lambda c: _in_training(c, {"new_var": c["running_var"]})),
    )

    def cases(self, rng):
        out = []
        for n, d, momentum, convention, training in (
            (8, 3, 0.1, "pytorch", True), (5, 4, 0.9, "keep_old", True), (16, 2, 0.3, "pytorch", True),
            (4, 3, 0.8, "keep_old", True), (6, 3, 0.1, "pytorch", False), (6, 2, 0.9, "keep_old", False),
        ):
            out.append({
                "running_mean": rng.normal(size=d), "running_var": rng.uniform(0.5, 2.0, size=d),
                "x": rng.normal(rng.normal(size=d) * 3, rng.uniform(0.5, 3.0, size=d), size=(n, d)),
                "momentum": momentum, "convention": convention, "training": training,
            })
        return out

    def run(self, fn, case):
        res = fn(*(case[k] for k in ("running_mean", "running_var", "x", "momentum",
                                                               "convention", "training")))
        new_mean, new_var = _pair(res, "running_update", ("new_mean", "new_var"))
        return {"new_mean": to_numpy(new_mean), "new_var": to_numpy(new_var)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        new_mean, new_var = _running_parts(case)["want"]
        # the variance first: the mistakes that differ only in running_var (Bessel's factor) show there
        self.expect_outputs(case, result, {"new_var": new_var, "new_mean": new_mean}, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# 2. Converting between conventions
# --------------------------------------------------------------------------------------------
def _same_camp(case) -> bool:
    return (case["source"] in KEEP_OLD) == (case["target"] in KEEP_OLD)


def _converted(case) -> float:
    return case["value"] if _same_camp(case) else 1.0 - case["value"]


@register
class ConvertMomentum(Exercise):
    name = "ch4_convert_momentum"
    title = "convert a momentum between d2l's, CS231n's, Keras' and PyTorch's conventions"
    references = ("bncourse.running_stats:alpha_to_momentum", "bncourse.running_stats:momentum_to_alpha")
    hints = (
        "sort the four sources into two camps: whose number is the weight kept on the OLD average, and whose is "
        "the weight given to the NEW value?",
        "d2l, CS231n and Keras keep the old value; PyTorch weights the new one; within one camp the number "
        "does not change",
        "between camps the two weights add up to 1: value_in_the_other_camp = 1 - value",
    )
    mistakes = (
        Mistake("converted_within_camp", "the source and the target use the same convention (d2l, CS231n and Keras "
                "all weight the OLD value), so the number stays the same; only between keep-old (d2l, CS231n, Keras) "
                "and PyTorch's take-new convention does it become 1 - value",
                lambda c: {"value": 1.0 - c["value"]} if _same_camp(c) else None),
        Mistake("copied", "the number was copied unchanged: the source and the target use opposite conventions (d2l, "
                "CS231n and Keras weight the OLD value, PyTorch the NEW one), so convert with 1 - value",
                lambda c: None if _same_camp(c) else {"value": c["value"]}),
    )

    def cases(self, rng):
        return [
            {"value": 0.9, "source": "d2l", "target": "pytorch"},
            {"value": 0.99, "source": "keras", "target": "pytorch"},
            {"value": 0.1, "source": "pytorch", "target": "keras"},
            {"value": 0.9, "source": "cs231n", "target": "d2l"},
            {"value": float(np.round(rng.uniform(0.05, 0.3), 3)), "source": "pytorch", "target": "pytorch"},
            {"value": float(np.round(rng.uniform(0.7, 0.99), 3)), "source": "keras", "target": "cs231n"},
            {"value": float(np.round(rng.uniform(0.01, 0.2), 3)), "source": "pytorch", "target": "d2l"},
        ]

    def run(self, fn, case):
        got = fn(case["value"], case["source"], case["target"])
        if type(got).__module__.startswith("torch") and hasattr(got, "item"):
            got = got.item()
        if isinstance(got, np.ndarray) and got.shape == ():
            got = got.item()
        if not isinstance(got, (int, float, np.integer, np.floating)) or isinstance(got, bool):
            raise CheckFailure(f"convert_momentum must return a number; it returned a {type(got).__name__}")
        return {"value": float(got)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        # float32 arithmetic (1 - torch.tensor(0.9)) is fine: 1e-7 is far below the gap between value and 1 - value
        expect_scalar("the converted momentum", result["value"], _converted(case), rtol=1e-6, atol=1e-7,
                      mistakes=self.mistakes, case=case, output="value")


# --------------------------------------------------------------------------------------------
# 3. Bias-corrected EMA
# --------------------------------------------------------------------------------------------
def _ema(values, alpha, init):
    out = np.empty_like(values)
    avg = init
    for t in range(len(values)):
        avg = alpha * avg + (1.0 - alpha) * values[t]
        out[t] = avg
    return out


def _ema_parts(case):
    v, a = case["values"], case["alpha"]
    t = np.arange(1, len(v) + 1)[:, None]                      # (T, 1)
    return v, a, t, _ema(v, a, np.zeros(v.shape[1]))


def _ema_want(case):
    v, a, t, raw = _ema_parts(case)
    return raw / (1.0 - a ** t)


def _ema_mistake(id_, message, outcome):
    return Mistake(id_, message, lambda c: {"out": outcome(*_ema_parts(c))})


@register
class BiasCorrectedEMA(Exercise):
    name = "ch4_bias_corrected_ema"
    title = "an exponential moving average started at 0, with bias correction"
    references = ("bncourse.running_stats:ema_bias_corrected", "bncourse.running_stats:ema_keep_old")
    hints = (
        "an average started at 0 has given the data only part of the total weight; dividing by that part turns "
        "it into a proper weighted average",
        "values is (T, D): keep one running average of shape (D,), update it once per row, and store the "
        "corrected value of every step in a (T, D) output",
        "after t updates (t = 1, 2, ...) the data holds total weight 1 - alpha**t: out[t-1] = avg_t / (1 - "
        "alpha**t) with avg_t = alpha * avg_{t-1} + (1 - alpha) * values[t-1]; the recursion never overflows, "
        "powers alpha**(-t) do on long streams",
    )
    mistakes = (
        _ema_mistake("no_correction", "the bias correction is missing: divide the EMA started at 0 by "
                     "(1 - alpha**t), t = 1, 2, ...", lambda v, a, t, raw: raw),
        _ema_mistake("multiplied", "you multiplied by the correction factor (1 - alpha**t); divide by it: the EMA "
                     "started at 0 has given the data only that much weight, so dividing scales it up to a proper "
                     "average", lambda v, a, t, raw: raw * (1.0 - a ** t)),
        _ema_mistake("off_by_one", "off by one in the correction: at the first step (t = 1) divide by 1 - alpha, not "
                     "by 1 - alpha**0 = 0 or 1 - alpha**2; use t = 1, 2, ..., T",
                     lambda v, a, t, raw: raw / (1.0 - a ** (t + 1))),
        _ema_mistake("starts_at_first", "the EMA starts from the first value instead of from 0; start at 0 (like "
                     "running_mean) and correct the start-up bias by dividing by (1 - alpha**t)",
                     lambda v, a, t, raw: _ema(v, a, v[0].copy())),
        _ema_mistake("reversed", "the convention is reversed: alpha is the weight kept on the OLD average, "
                     "avg = alpha * avg + (1 - alpha) * value",
                     lambda v, a, t, raw: _ema(v, 1.0 - a, np.zeros(v.shape[1])) / (1.0 - (1.0 - a) ** t)),
        _ema_mistake("final_only", "you returned only the final average; return the whole trajectory, one row per "
                     "step, shape (T, D)", lambda v, a, t, raw: (raw / (1.0 - a ** t))[-1]),
    )
    LONG = 1500

    def cases(self, rng):
        # the last case is a long stream: alpha**(-t) overflows there (0.5**-1500 = inf)
        return [{"values": rng.normal(5.0, 2.0, size=(t, d)), "alpha": a}
                for t, d, a in ((12, 3, 0.9), (30, 2, 0.99), (8, 4, 0.5), (1, 2, 0.9), (self.LONG, 2, 0.5))]

    def run(self, fn, case):
        return {"out": to_numpy(fn(case["values"], case["alpha"]))}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        v = case["values"]
        want = _ema_want(case)
        got = result["out"]
        if (len(v) >= self.LONG and type(got) is np.ndarray and got.shape == want.shape and got.dtype.kind == "f"
                and not np.all(np.isfinite(got))):
            first = int(np.argwhere(~np.isfinite(got))[0][0]) + 1
            raise CheckFailure(
                f"out overflows on a long stream (T = {len(v)}): it holds inf or NaN from step {first} on. "
                f"Powers such as alpha**(-t) or 1 / alpha**t grow without bound; use the recursion "
                f"avg = alpha * avg + (1 - alpha) * value, whose values stay within the range of the data")
        self.expect_outputs(case, result, {"out": want}, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# 4. Exact population statistics in one pass
# --------------------------------------------------------------------------------------------
def _split(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


class _OnePass:
    """An iterator over batches that can be traversed once, like a DataLoader you do not re-run."""

    def __init__(self, batches):
        self._it = iter(batches)
        self.used = False

    def __iter__(self):
        if self.used:
            raise CheckFailure("population_stats went through the batches a second time; the data may be too "
                               "large to read twice: accumulate everything you need in a single pass")
        self.used = True
        return self._it

    def __len__(self):
        raise TypeError("batches is an iterator without a length: count the rows as you go")


def _pop_parts(case):
    x, bs = case["x"], case["batch_size"]
    batches = _split(x, bs)
    return x, bs, batches, np.array([len(b) for b in batches], dtype=float)


_SUMS = "accumulate the count, sum(x - s) and sum((x - s)**2) with a fixed shift s"


@register
class PopulationStats(Exercise):
    name = "ch4_population_stats"
    input_labels = {"x": "a batch"}
    title = "exact mean and unbiased variance per feature over all batches, in one pass"
    references = ("bncourse.population_stats:population_mean_var",)
    hints = (
        "one pass means you keep a few running totals per feature while the batches go by, and compute the "
        "answer only at the end; averages of batch means or batch variances are not exact",
        "keep a count (an int), and per feature (D,) a sum and a sum of squares; the batches can differ in size",
        "mean = sum / n and var = (sum_sq - n * mean**2) / (n - 1); this cancels badly when the data sits far from "
        "0 (1e6 here), so subtract a fixed shift (the first batch's mean) from every batch before summing, and "
        "add it back to the mean",
    )
    mistakes = (
        Mistake("swapped", "your function returned its two results in the wrong order: return (mean, var), not "
                "(var, mean)", lambda c: {"mean": c["x"].var(axis=0, ddof=1), "var": c["x"].mean(axis=0)}),
        Mistake("equal_weights", "you averaged the batch means with equal weights, but the last batch is smaller: "
                "weight each batch by its number of rows (or accumulate the sum of x and the count)",
                lambda c: {"mean": np.mean([b.mean(axis=0) for b in _pop_parts(c)[2]], axis=0)}),
        Mistake("last_batch", "the mean is of the last batch only: accumulate over all batches",
                lambda c: {"mean": _pop_parts(c)[2][-1].mean(axis=0)}),
        Mistake("biased", "the variance is the biased one (divide by n); store the unbiased n/(n-1) version, as "
                "running_var does", lambda c: {"var": c["x"].var(axis=0)}),
        Mistake("averaged_variances", "you averaged the per-batch variances (what momentum=None does); that ignores "
                "how far the batch means are from the overall mean: " + _SUMS + " (or merge means and squared "
                "deviations)", lambda c: {"var": np.mean([b.var(axis=0, ddof=1) for b in _pop_parts(c)[2]], axis=0)}),
        Mistake("paper_bessel", "you applied the paper's m/(m-1) to the average of biased batch variances; that "
                "estimates the variance within a batch, not the exact variance of all rows: " + _SUMS,
                lambda c: {"var": np.mean([b.var(axis=0) for b in _pop_parts(c)[2]], axis=0) * c["batch_size"]
                           / (c["batch_size"] - 1)}),
        Mistake("weighted_variances", "you averaged the per-batch variances weighted by size; that still ignores the "
                "spread between batch means: " + _SUMS,
                lambda c: {"var": (_pop_parts(c)[3][:, None] * np.array([b.var(axis=0) for b in _pop_parts(c)[2]]))
                           .sum(0) / (len(c["x"]) - 1)}),
        Mistake("std", "you returned the standard deviation instead of the variance",
                lambda c: {"var": np.sqrt(c["x"].var(axis=0, ddof=1))}),
    )

    def cases(self, rng):
        out = []
        # the last two sit far from 0 (1e4 and 1e6, spread about 1): sum(x**2) - n * mean**2 without a shift
        # loses about 4 and 8 digits there; the last one also holds a constant feature (variance exactly 0)
        for n, d, bs, loc in ((50, 3, 16, 2.0), (37, 2, 10, 100.0), (64, 4, 64, -1.0), (23, 3, 5, 0.0),
                              (45, 2, 7, 1e4), (60, 3, 16, 1e6)):
            x = rng.normal(loc + rng.normal(size=d) * min(abs(loc), 100.0), rng.uniform(0.5, 3.0, size=d),
                           size=(n, d))
            x = x + np.linspace(0, 2, n)[:, None]                  # drift: the batches differ in mean
            if loc >= 1e6:
                x[:, 0] = loc + 0.25                               # a constant feature
            out.append({"x": x, "batch_size": bs})
        return out

    def run(self, fn, case):
        # the batches are views of the case's x, as a DataLoader may hand out views of the dataset: subtracting
        # in place from a batch changes x, which the core reports
        res = fn(_OnePass(iter(_split(case["x"], case["batch_size"]))))
        mean, var = _pair(res, "population_stats", ("mean", "var"))
        return {"mean": to_numpy(mean), "var": to_numpy(var)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        x = case["x"]
        want_mean, want_var = x.mean(axis=0), x.var(axis=0, ddof=1)
        _precision(result["var"], want_var, x)
        self.expect_outputs(case, result, {"mean": want_mean, "var": want_var}, rtol=1e-9, atol=1e-10)


_SHIFT_FIX = ("subtract a fixed shift (e.g. the first batch's mean) from the data before summing squares, or merge "
              "(count, mean, sum of squared deviations) batch by batch")


def _precision(got: Any, want: np.ndarray, x: np.ndarray, what: str = "var") -> None:
    """Name the precision loss of an unshifted sum of squares (data far from 0), before the generic checks."""
    precision_loss(got, want, float(np.max(np.abs(x.mean(axis=0)))), what=what, fix=_SHIFT_FIX)


def precision_loss(got: Any, want: np.ndarray, offset: float, *, what: str = "var", fix: str = _SHIFT_FIX,
                   formula: str = "sum(x**2) - n * mean**2", size: str = "n * {offset}**2", rtol: float = 1e-9,
                   atol: float = 1e-10) -> None:
    """Raise the precision message when ``got`` is right only up to the round-off of ``formula`` at ``offset``.

    Data far from 0 (``offset`` >= 1e3, spread about 1): an answer that matches ``want`` only to within 1 % of
    its largest value is right in idea and wrong in formula (catastrophic cancellation); the message states
    the tolerance it missed. ``size`` is how large the two cancelling terms are (``{offset}`` is filled in).
    Shared by the variance exercises of chapters 4 and 7."""
    if offset < 1e3 or type(got) is not np.ndarray or got.shape != want.shape or got.dtype != want.dtype:
        return
    with np.errstate(all="ignore"):
        if np.allclose(got, want, rtol=rtol, atol=atol) or not np.all(np.isfinite(got)):
            return
        err = np.abs(got - want)
    spread = float(np.max(want)) if np.max(want) > 0 else 1.0
    if np.all(err <= 1e-2 * spread + 1e-2):    # right up to round-off: the formula, not the idea, is wrong
        raise CheckFailure(
            f"{what} loses precision when the data sits far from 0 (here about {offset:.0e}, with a spread of about "
            f"1): it is off by up to {float(err.max()):.1e}, and the tolerance is rtol={rtol:g}, atol={atol:g}. {formula} "
            f"subtracts two numbers near {size.format(offset=f'{offset:.0e}')} and keeps only the digits float64 has "
            f"left; {fix}")


# --------------------------------------------------------------------------------------------
# 5-6. Folding
# --------------------------------------------------------------------------------------------
def _affine(gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return a, beta - a * mean


def _bn_case(rng, d, eps, constant_feature=False):
    var = rng.uniform(0.01, 4.0, size=d)
    if constant_feature:
        var[0] = 0.0                  # a feature that was constant in training: only eps keeps a finite
    return {"gamma": rng.normal(1.0, 0.5, size=d), "beta": rng.normal(size=d),
            "running_mean": rng.normal(size=d) * 3, "running_var": var, "eps": eps}


def _fold_args(case):
    return tuple(case[k] for k in ("gamma", "beta", "running_mean", "running_var", "eps"))


def _fold_a(id_, message, a_of):
    """A mistake in a = a_of(gamma, var, eps) (a is checked first, so it is named there)."""
    def wrong(case):
        g, be, m, v, eps = _fold_args(case)
        return {"a": a_of(g, v, eps)}
    return Mistake(id_, message, wrong)


def _fold_b(id_, message, b_of):
    """A mistake in b = b_of(beta, a, mean, var, eps), a right."""
    def wrong(case):
        g, be, m, v, eps = _fold_args(case)
        return {"b": b_of(be, _affine(g, be, m, v, eps)[0], m, v, eps)}
    return Mistake(id_, message, wrong)


@register
class FoldBN(Exercise):
    name = "ch4_fold_bn"
    title = "inference-mode batch norm as one affine map a * x + b"
    references = ("bncourse.folding:affine_from_stats", "bncourse.folding:bn_affine")
    hints = (
        "with fixed statistics every step of inference BN is linear in x: subtract, divide, multiply, add",
        "everything is per feature, shape (D,): expand gamma * (x - mean) / sqrt(var + eps) + beta and collect "
        "the terms that multiply x and those that do not",
        "a = gamma / sqrt(running_var + eps) and b = beta - a * running_mean",
    )
    mistakes = (
        Mistake("swapped", "your function returned its two results in the wrong order: return (a, b), not (b, a)",
                lambda c: dict(zip(("b", "a"), _affine(*_fold_args(c))))),
        _fold_a("no_eps", "eps is missing: a = gamma / sqrt(running_var + eps)", lambda g, v, e: g / np.sqrt(v)),
        _fold_a("default_eps", "a ignores the eps it is given and uses 1e-5 (a default argument or a constant)",
                lambda g, v, e: g / np.sqrt(v + 1e-5)),
        _fold_a("var_not_std", "you divided by the variance instead of the standard deviation: a = gamma / "
                "sqrt(running_var + eps)", lambda g, v, e: g / (v + e)),
        _fold_a("inverted", "a is inverted: a = gamma / sqrt(running_var + eps), not sqrt(running_var + eps) / gamma",
                lambda g, v, e: np.sqrt(v + e) / g),
        _fold_a("no_gamma", "gamma is missing from a = gamma / sqrt(running_var + eps)",
                lambda g, v, e: 1.0 / np.sqrt(v + e)),
        _fold_b("mean_unscaled", "b must subtract the scaled mean: b = beta - a * running_mean (you used beta - "
                "running_mean)", lambda be, a, m, v, e: be - m),
        _fold_b("mean_sign", "b has the wrong sign of the mean term: b = beta - a * running_mean",
                lambda be, a, m, v, e: be + a * m),
        _fold_b("no_beta", "b is missing beta: b = beta - a * running_mean", lambda be, a, m, v, e: -a * m),
        _fold_b("mean_not_gamma", "the running mean was divided by the standard deviation but not multiplied by "
                "gamma: b = beta - a * running_mean with a = gamma / sqrt(running_var + eps)",
                lambda be, a, m, v, e: be - m / np.sqrt(v + e)),
    )

    def cases(self, rng):
        return [_bn_case(rng, d, eps, constant) for d, eps, constant in
                ((4, 1e-5, False), (3, 1e-3, False), (6, 0.5, False), (5, 1e-5, True))]

    def run(self, fn, case):
        res = fn(*(case[k] for k in ("gamma", "beta", "running_mean", "running_var", "eps")))
        a, b = _pair(res, "fold_bn", ("a", "b"))
        return {"a": to_numpy(a), "b": to_numpy(b)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        with np.errstate(divide="ignore", invalid="ignore"):        # a mistake without eps divides by sqrt(0)
            self._verify(case, result)

    def _verify(self, case, result):
        a, b = _affine(*_fold_args(case))
        self.expect_outputs(case, result, {"a": a, "b": b}, rtol=1e-9, atol=1e-12)


@register
class FoldLinear(Exercise):
    name = "ch4_fold_linear"
    title = "merge inference-mode batch norm into the affine layer before it"
    references = ("bncourse.folding:fold_bn_into_linear",)
    hints = (
        "BN scales and shifts each OUTPUT feature of the affine layer; the composition of two affine maps is one "
        "affine map",
        "W is (D_out, D_in) and row k of W produces output k; a and b from fold_bn are (D_out,)",
        "W_folded is W with row k multiplied by a[k] (broadcast a as a column), and c_folded = a * c + b",
    )
    # Scaling the columns (W * a) is named by run: it raises on the non-square cases, which run before any verify
    mistakes = (
        Mistake("W_unscaled", "W was not scaled: W_folded = a[:, None] * W", lambda c: {"W_folded": c["W"]}),
        Mistake("bias_dropped", "the old bias was dropped: c_folded = a * c + b",
                lambda c: {"c_folded": _affine(*_fold_args(c))[1]}),
        Mistake("bias_unscaled", "the old bias must be scaled too: c_folded = a * c + b (you used c + b)",
                lambda c: {"c_folded": c["c"] + _affine(*_fold_args(c))[1]}),
        Mistake("no_b", "c_folded = a * c + b: you forgot to add b",
                lambda c: {"c_folded": _affine(*_fold_args(c))[0] * c["c"]}),
    )

    def cases(self, rng):
        out = []
        for d_in, d_out, eps in ((4, 4, 1e-5), (5, 3, 1e-5), (2, 6, 1e-3)):   # W * a raises on the last two
            case = {"W": rng.normal(size=(d_out, d_in)), "c": rng.normal(size=d_out)}
            case.update(_bn_case(rng, d_out, eps))
            out.append(case)
        return out

    def run(self, fn, case):
        try:
            res = fn(*(case[k] for k in ("W", "c", "gamma", "beta", "running_mean",
                                                                   "running_var", "eps")))
        except ValueError as e:
            if "broadcast" not in str(e):
                raise
            raise CheckFailure(
                f"your code raised ValueError: {e}. W has shape (D_out, D_in) and a has shape (D_out,): to scale "
                f"the rows of W (its outputs) write a[:, None] * W; W * a would scale the columns of W") from e
        W2, c2 = _pair(res, "fold_linear", ("W_folded", "c_folded"))
        return {"W_folded": to_numpy(W2), "c_folded": to_numpy(c2)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        W, c = case["W"], case["c"]
        a, b = _affine(*_fold_args(case))
        self.expect_outputs(case, result, {"W_folded": a[:, None] * W, "c_folded": a * c + b}, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# 7. Merging per-chunk statistics (a derivation)
# --------------------------------------------------------------------------------------------
def _merge_parts(counts, means, variances):
    n = counts.sum()
    mean = (counts[:, None] * means).sum(axis=0) / n                       # (D,)
    within = (counts[:, None] * variances).sum(axis=0)                     # sum of squared deviations inside chunks
    between = (counts[:, None] * (means - mean) ** 2).sum(axis=0)          # chunk means around the overall mean
    return n, mean, within, between


def _merge_case(case):
    return _merge_parts(case["counts"].astype(np.float64), case["means"], case["variances"])


def _merge_var(id_, message, var_of):
    """A mistake in the variance: var_of(n, within, between, case)."""
    def wrong(case):
        n, _, within, between = _merge_case(case)
        return {"var": var_of(n, within, between, case)}
    return Mistake(id_, message, wrong)


@register
class MergeStats(Exercise):
    name = "ch4_merge_stats"
    title = "exact statistics of all rows from per-chunk counts, means and biased variances"
    references = ("bncourse.population_stats:population_mean_var", "bncourse.population_stats:merge_moments",
                  "bncourse.population_stats:merge_stats")
    hints = (
        "the squared deviations of all rows from the overall mean split into two parts: the deviations inside "
        "each chunk, and the deviations of each chunk's mean from the overall mean",
        "counts is (K,), means and variances are (K, D); a biased variance times its count is the chunk's sum of "
        "squared deviations from its own mean; the result is two (D,) arrays",
        "mean = sum_k n_k * mean_k / n; var = (sum_k n_k * var_k + sum_k n_k * (mean_k - mean)**2) / (n - 1), "
        "n = sum_k n_k; never form sum(x**2) - n * mean**2, which cancels when the data sits far from 0",
    )
    mistakes = (
        Mistake("swapped", "your function returned its two results in the wrong order: return (mean, var), not "
                "(var, mean)", lambda c: {"mean": c["x"].var(axis=0, ddof=1), "var": c["x"].mean(axis=0)}),
        Mistake("equal_weights", "you averaged the chunk means with equal weights, but the chunks differ in size: "
                "weight each mean by its count, mean = sum_k n_k * mean_k / n",
                lambda c: {"mean": c["means"].mean(axis=0)}),
        _merge_var("no_between", "you left out the spread of the chunk means around the overall mean: add sum_k n_k "
                   "* (mean_k - mean)**2 to the within-chunk sums n_k * var_k", lambda n, w, b, c: w / (n - 1)),
        _merge_var("weighted_average", "you averaged the chunk variances (weighted by size), which ignores how far "
                   "the chunk means lie from the overall mean; add sum_k n_k * (mean_k - mean)**2",
                   lambda n, w, b, c: w / n),
        _merge_var("equal_variances", "you averaged the chunk variances with equal weights; that ignores both the "
                   "chunk sizes and the spread of the chunk means", lambda n, w, b, c: c["variances"].mean(axis=0)),
        _merge_var("biased", "the variance is the biased one (divide by n); return the unbiased one, divide by n - 1",
                   lambda n, w, b, c: (w + b) / n),
        _merge_var("not_divided", "the variance is missing the division: sum_k n_k * var_k + sum_k n_k * (mean_k - "
                   "mean)**2 is the sum of squared deviations of all n rows; divide it by n - 1",
                   lambda n, w, b, c: w + b),
        _merge_var("chunks_unbiased", "the chunk variances are BIASED (divided by n_k, as BN computes them): a "
                   "chunk's sum of squared deviations is n_k * var_k, not (n_k - 1) * var_k",
                   lambda n, w, b, c: (((c["counts"] - 1.0)[:, None] * c["variances"]).sum(axis=0) + b) / (n - 1)),
        _merge_var("std", "you returned the standard deviation instead of the variance",
                   lambda n, w, b, c: np.sqrt((w + b) / (n - 1))),
    )

    def cases(self, rng):
        out = []
        # (chunk sizes, D, offset); the chunks drift in mean, a chunk of one row has variance 0, and the last two
        # sit far from 0, where E[x**2] - mean**2 loses 4 and 8 digits; the last holds a constant feature
        for sizes, d, loc in (((16, 16, 16, 2), 3, 1.0), ((5, 9, 1, 12), 2, -20.0), ((64,), 4, 0.0),
                              ((30, 10, 7), 2, 1e4), ((32, 32, 32, 5), 3, 1e6)):
            centre = loc + rng.normal(size=d) * min(abs(loc), 10.0)
            chunks = []
            for k, m in enumerate(sizes):
                chunk = rng.normal(centre + 0.7 * k, rng.uniform(0.5, 2.0, size=d), size=(m, d))
                if loc >= 1e6:
                    chunk[:, 0] = loc + 0.5                               # constant feature: variance 0
                chunks.append(chunk)
            out.append({"counts": np.array(sizes, dtype=np.int64),
                        "means": np.array([c.mean(axis=0) for c in chunks]),
                        "variances": np.array([c.var(axis=0) for c in chunks]),
                        "x": np.concatenate(chunks)})                     # the rows, for the reference only
        return out

    def run(self, fn, case):
        res = fn(*(case[k] for k in ("counts", "means", "variances")))
        mean, var = _pair(res, "merge_batch_stats", ("mean", "var"))
        return {"mean": to_numpy(mean), "var": to_numpy(var)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        n, mean, within, between = _merge_case(case)
        want_var = (within + between) / (n - 1)
        self.expect_outputs(case, result, {"mean": mean}, rtol=1e-9, atol=1e-10)
        precision_loss(result["var"], want_var, float(np.max(np.abs(mean))), formula="sum_k n_k (var_k + mean_k**2) "
                       "- n * mean**2", fix="add the within-chunk sums n_k * var_k and the between-chunk term n_k * "
                       "(mean_k - mean)**2, which never square the offset")
        self.expect_outputs(case, result, {"var": want_var}, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------------
# 8. Predict, then run: how long the start value of running_var lingers
# --------------------------------------------------------------------------------------------
def _steps_within(rel: float, start: float, true_var: float, momentum: float) -> int:
    """First t with |running_var_t / true_var - 1| <= rel, running_var_t = true + (start - true)(1 - m)**t."""
    return int(np.ceil(np.log(rel * true_var / abs(start - true_var)) / np.log(1.0 - momentum)))


@register
class PredictVarSteps(PredictNumber):
    name = "ch4_predict_var_steps"
    title = "predict: steps until running_var is within 1 % of the true variance"
    quantity = "the predicted number of steps"
    truth = float(_steps_within(0.01, 1.0, 0.04, 0.05))                 # 152
    tolerance = round(0.1 * truth)                                       # within 10 %: 137 to 167
    near_misses = {
        "about 4.6 / (1 - alpha) = 92 steps is when the START VALUE's weight alpha**t falls below 1 %. Here the "
        "start value 1 is 25 times the true variance 0.04, so 1 % of the true variance needs alpha**t * 0.96 "
        "below 0.01 * 0.04": (80.0, 100.0),
        "about 1 / (1 - alpha) = 20 steps is the 'memory' of the average; after that many steps the start value "
        "still holds about 37 % of the weight": (15.0, 25.0),
    }
    hints = (
        "the running variance is an EMA started at 1: after t steps the start value still carries weight "
        "alpha**t, alpha = 1 - momentum = 0.95, and the data the rest",
        "every batch has variance exactly 0.04, so running_var_t = 0.04 + (1 - 0.04) * 0.95**t; 'within 1 %' means "
        "|running_var_t - 0.04| <= 0.01 * 0.04",
        "solve 0.96 * 0.95**t <= 0.0004 for the smallest whole t: t >= ln(0.0004 / 0.96) / ln(0.95)",
    )


# --------------------------------------------------------------------------------------------
# 9. Predict, then run: what model.eval() changes
# --------------------------------------------------------------------------------------------
#: the statements of the exercise, as printed in the notebook (letter -> statement)
EVAL_STATEMENTS = {
    "A": "BN normalizes with running_mean and running_var instead of the batch's mean and variance",
    "B": "BN stops updating running_mean and running_var",
    "C": "autograd stops recording: the outputs no longer require a gradient",
    "D": "dropout stops zeroing activations",
    "E": "gamma and beta are frozen: a backward pass no longer gives them gradients",
    "F": "a batch of a single sample can go through the network",
}


@register
class PredictEval(PredictChoice):
    name = "ch4_predict_eval"
    title = "predict: what model.eval() changes in a network with BN and dropout"
    options = tuple(EVAL_STATEMENTS)
    answer = "ABDF"
    wrongly_chosen = {
        "C": "eval() only flips each module's training flag; recording stops under torch.no_grad(), a separate "
             "switch (evaluate with both)",
        "E": "eval() does not touch requires_grad: a loss computed in eval mode still gives gamma and beta (and "
             "every weight) gradients; freezing is requires_grad_(False)",
    }
    wrongly_left_out = {
        "A": "in eval mode BN uses the stored running statistics, so a sample's output no longer depends on its batch",
        "B": "the running statistics change only in training mode; eval-mode forward passes leave them alone",
        "D": "nn.Dropout checks self.training too: in eval mode it is the identity",
        "F": "BatchNorm1d refuses a batch of one in training mode (no variance to compute); in eval mode it needs "
             "no batch statistics at all",
    }
    hints = (
        "eval() does one thing: it sets the training flag of every submodule to False; ask which layers read "
        "that flag",
        "BatchNorm and Dropout read it; autograd (torch.no_grad) and requires_grad are separate switches",
        "for BN, list what training mode does that needs a batch (its statistics, the running update) and what "
        "that means for a batch of one",
    )


# --------------------------------------------------------------------------------------------
# 10. Debugging: a prediction loop that forgets model.eval()
# --------------------------------------------------------------------------------------------
_D_IN, _HIDDEN, _CLASSES, _P_DROP, _BN_EPS = 6, 8, 4, 0.5, 1e-5


def _model_case(rng, n, batch_size, start_in_training):
    return {
        "x": rng.normal(0.5, 1.5, size=(n, _D_IN)), "batch_size": batch_size, "start_in_training": start_in_training,
        "W1": rng.normal(size=(_HIDDEN, _D_IN)) / np.sqrt(_D_IN), "b1": rng.normal(size=_HIDDEN),
        "gamma": rng.uniform(0.5, 2.0, size=_HIDDEN), "beta": rng.normal(size=_HIDDEN),
        "running_mean": rng.normal(size=_HIDDEN), "running_var": rng.uniform(0.5, 3.0, size=_HIDDEN),
        "W2": rng.normal(size=(_CLASSES, _HIDDEN)) / np.sqrt(_HIDDEN), "b2": rng.normal(size=_CLASSES),
    }


def build_debug_model(case):
    """Linear(6, 8) -> BatchNorm1d(8) -> ReLU -> Dropout(0.5) -> Linear(8, 4), float64, from the case's arrays."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(_D_IN, _HIDDEN), nn.BatchNorm1d(_HIDDEN, eps=_BN_EPS), nn.ReLU(),
                          nn.Dropout(_P_DROP), nn.Linear(_HIDDEN, _CLASSES)).double()
    with torch.no_grad():
        for param, key in ((model[0].weight, "W1"), (model[0].bias, "b1"), (model[1].weight, "gamma"),
                           (model[1].bias, "beta"), (model[1].running_mean, "running_mean"),
                           (model[1].running_var, "running_var"), (model[4].weight, "W2"), (model[4].bias, "b2")):
            param.copy_(torch.from_numpy(case[key]))
    return model.train(bool(case["start_in_training"]))


def _eval_logits(case, x=None):
    x = case["x"] if x is None else x
    h = x @ case["W1"].T + case["b1"]
    h = case["gamma"] * (h - case["running_mean"]) / np.sqrt(case["running_var"] + _BN_EPS) + case["beta"]
    return np.maximum(h, 0.0) @ case["W2"].T + case["b2"]


def _batch_stat_logits(case):
    """What a forgotten eval() gives without dropout: every batch normalized with its own statistics."""
    x, bs = case["x"], case["batch_size"]
    out = []
    for s in range(0, len(x), bs):
        h = x[s:s + bs] @ case["W1"].T + case["b1"]
        h = case["gamma"] * (h - h.mean(0)) / np.sqrt(h.var(0) + _BN_EPS) + case["beta"]
        out.append(np.maximum(h, 0.0) @ case["W2"].T + case["b2"])
    return np.concatenate(out)


@register
class DebugPredict(Exercise):
    name = "ch4_debug_predict"
    title = "debugging: a prediction loop for a network with BN and dropout"
    hints = (
        "run the buggy function twice on the same data, and once with another batch size: do the labels change? "
        "Then compare the model's running_mean before and after",
        "which switch makes BN use its running statistics and dropout do nothing, and which one did the loop "
        "forget? The loop must also leave the model as it found it",
        "the fix is one call before the loop; then put back the mode the model came in with (read it from "
        "model.training first), and keep the forward passes out of autograd",
    )
    mistakes = (
        Mistake("training_mode_labels", "the labels are those of training mode (each batch normalized with its own "
                "statistics): call model.eval() before predicting",
                lambda c: {"labels": _batch_stat_logits(c).argmax(axis=1)}),
    )

    def cases(self, rng):
        # 17 rows in batches of 8: the last batch has one row, which BatchNorm1d refuses in training mode;
        # the last case starts in eval mode (the function must leave it there)
        return [_model_case(rng, 12, 4, True), _model_case(rng, 17, 8, True), _model_case(rng, 10, 5, False)]

    def run(self, fn, case):
        import torch

        model = build_debug_model(case)
        grad_seen = []
        hook = model[0].register_forward_hook(lambda mod, inp, out: grad_seen.append(torch.is_grad_enabled()))
        rm_before = model[1].running_mean.clone()
        try:
            labels = fn(model, torch.from_numpy(case["x"]), case["batch_size"])
        except ValueError as e:
            if "Expected more than 1 value per channel" in str(e):
                raise CheckFailure(
                    "BatchNorm1d refused the last batch, which holds a single row: the model is still in training "
                    "mode, where BN needs batch statistics. Call model.eval() before predicting") from None
            raise
        finally:
            hook.remove()
        labels = to_numpy(labels)
        if isinstance(labels, (list, tuple)) and labels and all(isinstance(v, (int, np.integer)) for v in labels):
            labels = np.asarray(labels)                              # a list of class indices is a fine answer
        if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
            labels = labels.astype(np.int64)
        return {"labels": labels, "stats_unchanged": bool(torch.equal(rm_before, model[1].running_mean)),
                "training_after": bool(model.training),
                "grad_enabled": bool(any(grad_seen))}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        want = _eval_logits(case).argmax(axis=1).astype(np.int64)
        labels = result["labels"]
        if isinstance(labels, np.ndarray) and labels.dtype.kind == "f":
            raise CheckFailure("return the predicted class of each row, (N,) integers (logits.argmax(dim=1)), not "
                               "the logits or probabilities")
        expect(result["stats_unchanged"],
               "predicting changed BN's running_mean: the model was in training mode, so every batch updated the "
               "running statistics (and was normalized with its own statistics). Call model.eval() first")
        expect_array("labels", labels, want, rtol=0, atol=0, mistakes=self.mistakes, case=case)
        expect(result["training_after"] == bool(case["start_in_training"]),
               "the function must leave the model in the mode it found it in (it was "
               + ("in training mode, and is now in eval mode: remember model.training and call "
                  "model.train(was_training) at the end)" if case["start_in_training"] else
                  "in eval mode, and is now in training mode: restore model.train(was_training), do not call "
                  "model.train() unconditionally)"))
        expect(not result["grad_enabled"],
               "the forward passes ran with autograd recording: wrap the loop in torch.no_grad(), a prediction "
               "needs no graph")
