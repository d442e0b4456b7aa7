"""Checks for chapter 4, training mode vs inference mode.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch4_running_update``     ``running_update(running_mean, running_var, x, momentum, convention, training)
                           -> (new_mean, new_var)``: one running-statistics update of a BN layer, in the
                           ``"pytorch"`` (momentum weights the new value) or ``"keep_old"`` (the number is
                           the weight kept on the old value, as in d2l, CS231n and Keras) convention;
                           unchanged in inference mode
``ch4_convert_momentum``   ``convert_momentum(value, source, target) -> float`` between the conventions of
                           ``"d2l"``, ``"cs231n"``, ``"keras"`` (keep-old) and ``"pytorch"`` (take-new)

The batch-norm paper itself has no moving average and no momentum (its Algorithm 2 averages batch
statistics after training), so no convention is named after it. The keep-old 0.9 comes from d2l (the study
notes' code) and CS231n.
``ch4_bias_corrected_ema`` ``bias_corrected_ema(values, alpha) -> (T, D)``: EMA started at 0 and divided
                           by ``1 - alpha**t``
``ch4_population_stats``   ``population_stats(batches) -> (mean, var)``: exact mean and unbiased variance
                           per feature over all rows of an iterator of (n_i, D) batches, in one pass
``ch4_fold_bn``            ``fold_bn(gamma, beta, running_mean, running_var, eps) -> (a, b)`` with
                           ``a * x + b`` equal to inference-mode BN
``ch4_fold_linear``        ``fold_linear(W, c, gamma, beta, running_mean, running_var, eps) -> (W2, c2)``:
                           BN merged into the preceding affine layer ``x @ W.T + c``

All inputs and outputs are float64 NumPy arrays (a momentum conversion returns a float).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise, expect, expect_array, expect_scalar, register

__all__ = [
    "RunningUpdate", "ConvertMomentum", "BiasCorrectedEMA", "PopulationStats", "FoldBN", "FoldLinear",
    "KEEP_OLD", "TAKE_NEW",
]

#: sources whose number is the weight kept on the OLD average (alpha)
KEEP_OLD = ("d2l", "cs231n", "keras")
#: conventions whose number is the weight given to the NEW value
TAKE_NEW = ("pytorch",)


def _pair(result: Any, what: str, names: tuple[str, str]) -> tuple[Any, Any]:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        n = len(result) if isinstance(result, (tuple, list)) else None
        got = f"a {type(result).__name__} of length {n}" if n is not None else f"a {type(result).__name__}"
        raise CheckFailure(f"{what} must return a tuple ({names[0]}, {names[1]}); it returned {got}")
    return result[0], result[1]


def _to_numpy(v: Any) -> Any:
    # Tensors become arrays (the student may use torch); anything else passes through for expect_array.
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return v


# --------------------------------------------------------------------------------------------
# 1. Running-statistics update
# --------------------------------------------------------------------------------------------
def _new_weight(momentum: float, convention: str) -> float:
    """Weight of the new batch statistic in the update."""
    return momentum if convention == "pytorch" else 1.0 - momentum


def _update(rm, rv, batch_mean, batch_var, w):
    return (1.0 - w) * rm + w * batch_mean, (1.0 - w) * rv + w * batch_var


@register
class RunningUpdate(Exercise):
    name = "ch4_running_update"
    title = "one running-statistics update, in PyTorch's or the keep-old convention"
    references = ("bncourse.running_stats:update_running_stats", "bncourse.running_stats:ema_take_new",
                  "bncourse.running_stats:ema_keep_old")

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
        rm, rv, x = case["running_mean"], case["running_var"], case["x"]
        rm_before, rv_before = rm.copy(), rv.copy()
        res = fn(rm, rv, x, case["momentum"], case["convention"], case["training"])
        new_mean, new_var = _pair(res, "running_update", ("new_mean", "new_var"))
        return {"new_mean": _to_numpy(new_mean), "new_var": _to_numpy(new_var),
                "inputs_unchanged": bool(np.array_equal(rm, rm_before) and np.array_equal(rv, rv_before))}

    def verify(self, case, result):
        rm, rv, x = case["running_mean"], case["running_var"], case["x"]
        momentum, convention, training = case["momentum"], case["convention"], case["training"]
        n = x.shape[0]
        bmean, bvar = x.mean(axis=0), x.var(axis=0)                 # biased batch variance
        unbiased = bvar * n / (n - 1)
        w = _new_weight(momentum, convention)
        if training:
            want_mean, want_var = _update(rm, rv, bmean, unbiased, w)
        else:
            want_mean, want_var = rm, rv
        reversed_mean, reversed_var = _update(rm, rv, bmean, unbiased, 1.0 - w)
        rule = ("running = (1 - momentum) * running + momentum * batch" if convention == "pytorch" else
                "running = alpha * running + (1 - alpha) * batch")
        reversed_msg = (f"the momentum convention is reversed: in the {convention!r} convention "
                        + ("PyTorch's momentum weights the NEW batch value, " if convention == "pytorch" else
                           "alpha is the weight kept on the OLD running value, ") + rule)
        if not training:
            stale = "in inference mode (training=False) the running statistics must not change: return them as they are"
            also_reversed = stale + " (your update also reverses the momentum convention)"
            mean_mistakes = {stale: _update(rm, rv, bmean, unbiased, w)[0], also_reversed: reversed_mean}
            var_mistakes = {stale: _update(rm, rv, bmean, unbiased, w)[1], also_reversed: reversed_var,
                            stale + " (and your running_var also misses Bessel's correction)":
                                _update(rm, rv, bmean, bvar, w)[1]}
            expect_array("new_mean", result["new_mean"], want_mean, rtol=1e-9, atol=1e-12, mistakes=mean_mistakes)
            expect_array("new_var", result["new_var"], want_var, rtol=1e-9, atol=1e-12, mistakes=var_mistakes)
        else:
            expect_array("new_mean", result["new_mean"], want_mean, rtol=1e-9, atol=1e-12, mistakes={
                reversed_msg: reversed_mean,
                "the running mean was replaced by the batch mean instead of averaged with it: " + rule: bmean,
                "the running mean was not updated in training mode": rm,
            })
            expect_array("new_var", result["new_var"], want_var, rtol=1e-9, atol=1e-12, mistakes={
                reversed_msg: reversed_var,
                "running_var is stored without Bessel's correction: normalize with the biased variance, but store "
                "the unbiased one, batch_var * n / (n - 1)": _update(rm, rv, bmean, bvar, w)[1],
                "the convention is reversed and running_var misses Bessel's correction n / (n - 1)":
                    _update(rm, rv, bmean, bvar, 1.0 - w)[1],
                "you averaged the standard deviation instead of the variance": _update(rm, rv, bmean, np.sqrt(unbiased), w)[1],
                "the running variance was replaced by the batch variance instead of averaged with it: " + rule: unbiased,
                "the running variance was not updated in training mode": rv,
            })
        expect(result["inputs_unchanged"],
               "your function changed running_mean or running_var in place; return new arrays and leave the inputs "
               "as they were (use running_mean * ... instead of running_mean *= ...)")


# --------------------------------------------------------------------------------------------
# 2. Converting between conventions
# --------------------------------------------------------------------------------------------
@register
class ConvertMomentum(Exercise):
    name = "ch4_convert_momentum"
    title = "convert a momentum between d2l's, CS231n's, Keras' and PyTorch's conventions"
    references = ("bncourse.running_stats:alpha_to_momentum", "bncourse.running_stats:momentum_to_alpha")

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
        v, src, dst = case["value"], case["source"], case["target"]
        same = (src in KEEP_OLD) == (dst in KEEP_OLD)
        want = v if same else 1.0 - v
        if same:
            mistakes = {f"{src!r} and {dst!r} use the same convention"
                        + (" (all three weight the OLD value)" if src in KEEP_OLD else "")
                        + ", so the number stays the same; only between keep-old (d2l, CS231n, Keras) and "
                          "PyTorch's take-new convention does it become 1 - value": 1.0 - v}
        else:
            mistakes = {f"the number was copied unchanged: {src!r} and {dst!r} use opposite conventions "
                        f"(d2l, CS231n and Keras weight the OLD value, PyTorch the NEW one), so convert with "
                        f"1 - value": v}
        expect_scalar("the converted momentum", result["value"], want, rtol=1e-12, atol=1e-12, mistakes=mistakes)


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


@register
class BiasCorrectedEMA(Exercise):
    name = "ch4_bias_corrected_ema"
    title = "an exponential moving average started at 0, with bias correction"
    references = ("bncourse.running_stats:ema_bias_corrected", "bncourse.running_stats:ema_keep_old")

    def cases(self, rng):
        return [{"values": rng.normal(5.0, 2.0, size=(t, d)), "alpha": a}
                for t, d, a in ((12, 3, 0.9), (30, 2, 0.99), (8, 4, 0.5), (1, 2, 0.9))]

    def run(self, fn, case):
        return {"out": _to_numpy(fn(case["values"], case["alpha"]))}

    def verify(self, case, result):
        v, a = case["values"], case["alpha"]
        t = np.arange(1, len(v) + 1)[:, None]                      # (T, 1)
        raw = _ema(v, a, np.zeros(v.shape[1]))
        want = raw / (1.0 - a ** t)
        expect_array("out", result["out"], want, rtol=1e-9, atol=1e-12, mistakes={
            "the bias correction is missing: divide the EMA started at 0 by (1 - alpha**t), t = 1, 2, ...": raw,
            "off by one in the correction: at the first step (t = 1) divide by 1 - alpha, not by 1 - alpha**0 = 0 "
            "or 1 - alpha**2; use t = 1, 2, ..., T": lambda: raw / (1.0 - a ** (t + 1)),
            "the EMA starts from the first value instead of from 0; start at 0 (like running_mean) and correct "
            "the start-up bias by dividing by (1 - alpha**t)": lambda: _ema(v, a, v[0].copy()),
            "the convention is reversed: alpha is the weight kept on the OLD average, "
            "avg = alpha * avg + (1 - alpha) * value": lambda: _ema(v, 1.0 - a, np.zeros(v.shape[1])) / (1.0 - (1.0 - a) ** t),
            "you returned only the final average; return the whole trajectory, one row per step, shape (T, D)":
                lambda: want[-1],
        })


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


@register
class PopulationStats(Exercise):
    name = "ch4_population_stats"
    title = "exact mean and unbiased variance per feature over all batches, in one pass"
    references = ("bncourse.population_stats:population_mean_var",)

    def cases(self, rng):
        out = []
        for n, d, bs, loc in ((50, 3, 16, 2.0), (37, 2, 10, 100.0), (64, 4, 64, -1.0), (23, 3, 5, 0.0)):
            x = rng.normal(rng.normal(size=d) * loc, rng.uniform(0.5, 3.0, size=d), size=(n, d))
            x = x + np.linspace(0, 2, n)[:, None]                  # drift: the batches differ in mean
            out.append({"x": x, "batch_size": bs})
        return out

    def run(self, fn, case):
        batches = _OnePass(b.copy() for b in _split(case["x"], case["batch_size"]))
        res = fn(batches)
        mean, var = _pair(res, "population_stats", ("mean", "var"))
        return {"mean": _to_numpy(mean), "var": _to_numpy(var)}

    def verify(self, case, result):
        x, bs = case["x"], case["batch_size"]
        batches = _split(x, bs)
        n = len(x)
        want_mean, want_var = x.mean(axis=0), x.var(axis=0, ddof=1)
        sizes = np.array([len(b) for b in batches], dtype=float)
        expect_array("mean", result["mean"], want_mean, rtol=1e-9, atol=1e-10, mistakes={
            "you averaged the batch means with equal weights, but the last batch is smaller: weight each batch "
            "by its number of rows (or accumulate the sum of x and the count)":
                np.mean([b.mean(axis=0) for b in batches], axis=0),
            "the mean is of the last batch only: accumulate over all batches": batches[-1].mean(axis=0),
        })
        expect_array("var", result["var"], want_var, rtol=1e-9, atol=1e-10, mistakes={
            "the variance is the biased one (divide by n); store the unbiased n/(n-1) version, as running_var does":
                x.var(axis=0),
            "you averaged the per-batch variances (what momentum=None does); that ignores how far the batch means "
            "are from the overall mean: accumulate sum(x) and sum(x**2) (or merge means and squared deviations)":
                lambda: np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0),
            "you applied the paper's m/(m-1) to the average of biased batch variances; that estimates the variance "
            "within a batch, not the exact variance of all rows: accumulate sum(x) and sum(x**2)":
                lambda: np.mean([b.var(axis=0) for b in batches], axis=0) * bs / (bs - 1),
            "you averaged the per-batch variances weighted by size; that still ignores the spread between batch "
            "means: accumulate sum(x) and sum(x**2)":
                lambda: (sizes[:, None] * np.array([b.var(axis=0) for b in batches])).sum(0) / (n - 1),
            "you returned the standard deviation instead of the variance": np.sqrt(want_var),
        })


# --------------------------------------------------------------------------------------------
# 5-6. Folding
# --------------------------------------------------------------------------------------------
def _affine(gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return a, beta - a * mean


def _bn_case(rng, d, eps):
    return {"gamma": rng.normal(1.0, 0.5, size=d), "beta": rng.normal(size=d),
            "running_mean": rng.normal(size=d) * 3, "running_var": rng.uniform(0.01, 4.0, size=d), "eps": eps}


@register
class FoldBN(Exercise):
    name = "ch4_fold_bn"
    title = "inference-mode batch norm as one affine map a * x + b"
    references = ("bncourse.folding:affine_from_stats", "bncourse.folding:bn_affine")

    def cases(self, rng):
        return [_bn_case(rng, d, eps) for d, eps in ((4, 1e-5), (3, 1e-3), (6, 0.5))]

    def run(self, fn, case):
        res = fn(case["gamma"], case["beta"], case["running_mean"], case["running_var"], case["eps"])
        a, b = _pair(res, "fold_bn", ("a", "b"))
        return {"a": _to_numpy(a), "b": _to_numpy(b)}

    def verify(self, case, result):
        g, be, m, v, eps = (case[k] for k in ("gamma", "beta", "running_mean", "running_var", "eps"))
        a, b = _affine(g, be, m, v, eps)
        expect_array("a", result["a"], a, rtol=1e-9, atol=1e-12, mistakes={
            "eps is missing: a = gamma / sqrt(running_var + eps)": g / np.sqrt(v),
            "you divided by the variance instead of the standard deviation: a = gamma / sqrt(running_var + eps)":
                g / (v + eps),
            "a is inverted: a = gamma / sqrt(running_var + eps), not sqrt(running_var + eps) / gamma":
                np.sqrt(v + eps) / g,
            "gamma is missing from a = gamma / sqrt(running_var + eps)": 1.0 / np.sqrt(v + eps),
        })
        expect_array("b", result["b"], b, rtol=1e-9, atol=1e-12, mistakes={
            "b must subtract the scaled mean: b = beta - a * running_mean (you used beta - running_mean)": be - m,
            "b has the wrong sign of the mean term: b = beta - a * running_mean": be + a * m,
            "b is missing beta: b = beta - a * running_mean": -a * m,
            "the running mean was divided by the standard deviation but not multiplied by gamma: "
            "b = beta - a * running_mean with a = gamma / sqrt(running_var + eps)": be - m / np.sqrt(v + eps),
        })


@register
class FoldLinear(Exercise):
    name = "ch4_fold_linear"
    title = "merge inference-mode batch norm into the affine layer before it"
    references = ("bncourse.folding:fold_bn_into_linear",)

    def cases(self, rng):
        out = []
        for d_in, d_out, eps in ((4, 4, 1e-5), (5, 3, 1e-5), (2, 6, 1e-3)):   # square first: W * a is caught
            case = {"W": rng.normal(size=(d_out, d_in)), "c": rng.normal(size=d_out)}
            case.update(_bn_case(rng, d_out, eps))
            out.append(case)
        return out

    def run(self, fn, case):
        try:
            res = fn(case["W"], case["c"], case["gamma"], case["beta"], case["running_mean"], case["running_var"],
                     case["eps"])
        except ValueError as e:
            if "broadcast" not in str(e):
                raise
            raise CheckFailure(
                f"your code raised ValueError: {e}. W has shape (D_out, D_in) and a has shape (D_out,): to scale "
                f"the rows of W (its outputs) write a[:, None] * W; W * a would scale the columns of W") from e
        W2, c2 = _pair(res, "fold_linear", ("W_folded", "c_folded"))
        return {"W_folded": _to_numpy(W2), "c_folded": _to_numpy(c2)}

    def verify(self, case, result):
        W, c = case["W"], case["c"]
        a, b = _affine(*(case[k] for k in ("gamma", "beta", "running_mean", "running_var", "eps")))
        expect_array("W_folded", result["W_folded"], a[:, None] * W, rtol=1e-9, atol=1e-12, mistakes={
            "you scaled the columns of W (its inputs) instead of its rows (its outputs): W_folded = a[:, None] * W":
                lambda: W * a[None, :] if W.shape[0] == W.shape[1] else None,
            "W was not scaled: W_folded = a[:, None] * W": W,
        })
        expect_array("c_folded", result["c_folded"], a * c + b, rtol=1e-9, atol=1e-12, mistakes={
            "the old bias was dropped: c_folded = a * c + b": b,
            "the old bias must be scaled too: c_folded = a * c + b (you used c + b)": c + b,
            "c_folded = a * c + b: you forgot to add b": a * c,
        })
