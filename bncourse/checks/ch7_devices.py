"""Checks for chapter 7, batch norm across devices.

The replicas are simulated in one process: a list of R shards, shard r with n_r examples (the grader's sandbox
has no sockets). Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch7_merge_mean_var``  ``merge_mean_var(counts, means, variances) -> (mean, var)``: counts (R,) int64,
                        means and biased variances (R, C) of each replica; mean and biased variance (C,) of the union.
``ch7_sync_stats``      ``sync_batch_stats(shards) -> (mean, var, unbiased_var)``: shards a list of R arrays
                        (n_r, C, H, W); the global per-channel statistics SyncBatchNorm normalizes with (mean,
                        biased var) and stores (unbiased var, Bessel on the GLOBAL count).
``ch7_sync_backward``   ``sync_bn_backward(dy_shards, x_shards, gamma, eps) -> (dx_shards, dgamma, dbeta)``:
                        lists of R arrays (n_r, C); dx of each shard through batch norm over ALL shards;
                        dgamma, dbeta (C,) summed over the shards.
``ch7_ghost_bn``        ``ghost_batch_norm(x, virtual_batch_size, gamma, beta, eps) -> out``: x (N, C); each
                        run of ``virtual_batch_size`` consecutive examples normalized with its own statistics.
``ch7_predict_local_variance``  predict, then run: the expected ratio of a replica's biased variance of 8 examples
                        to the population variance, (n - 1) / n = 0.875 (a number, ±0.01).
``ch7_debug_sync_forward``  debugging: ``sync_bn_forward(x_shards, gamma, beta, eps) -> out_shards``: lists of R
                        arrays (n_r, C); the planted bug averages the replicas' variances without the
                        between-replica term.
"""
from __future__ import annotations

import numpy as np

from .ch4_inference import precision_loss
from .core import (CheckFailure, Exercise, Mistake, describe_value, expect, expect_array, expect_inputs_unchanged,
                   register)
from .predict import PredictNumber

__all__ = ["MergeMeanVar", "SyncStats", "SyncBackward", "GhostBN", "PredictLocalVariance", "DebugSyncForward"]

_DISTRIBUTED_REFS = ("bncourse.distributed:merge_moments", "bncourse.distributed:chan_merge",
                     "bncourse.distributed:local_moments", "bncourse.distributed:SyncBatchNorm",
                     "bncourse.distributed:GhostBatchNorm")


#: the most replicas a case simulates (names of the shards in the in-place message)
_MAX_REPLICAS = 4


def _counts_of(shards):
    """Values per channel on each shard (n_r * H * W), float64 (R,)."""
    return np.array([s.size // s.shape[1] for s in shards], dtype=np.float64)


def _shards_from(case, key="x"):
    return [case[f"{key}{r}"] for r in range(case["replicas"])]


_MERGE_FIX = ("let each replica send its count, mean and M2 (the sum of squared deviations from its OWN mean) and "
              "merge them with the between-replica term sum_r m_r (mean_r - mean)**2, which never squares the offset")


def _pair(res, what, names):
    """The results of a tuple (or list) of ``len(names)``; otherwise the message names what to return."""
    if not isinstance(res, (tuple, list)) or len(res) != len(names):
        raise CheckFailure(f"{what} must return a tuple ({', '.join(names)}); it returned {describe_value(res)}")
    return res


# ----------------------------------------------------------------------------------------------
# 1. The parallel merge of means and variances
# ----------------------------------------------------------------------------------------------
def merge_reference(counts, means, variances):
    """Mean and biased variance (C,) of the union: law of total variance with count weights."""
    n = counts.astype(np.float64)[:, None]                  # (R, 1)
    N = n.sum()
    mean = (n * means).sum(axis=0) / N
    between = (n * (means - mean) ** 2).sum(axis=0) / N
    within = (n * variances).sum(axis=0) / N
    return mean, within + between


def _merge_args(case):
    return case["counts"], case["means"], case["variances"]


def _merge_parts(case):
    """The pieces of the merge for a case: N, mean, within = sum_r n_r var_r / N, var."""
    n = case["counts"].astype(np.float64)[:, None]
    N = n.sum()
    mean, var = merge_reference(*_merge_args(case))
    return {"N": N, "mean": mean, "within": (n * case["variances"]).sum(axis=0) / N, "var": var}


@register
class MergeMeanVar(Exercise):
    name = "ch7_merge_mean_var"
    title = "merge per-replica means and variances into those of the whole batch"
    references = _DISTRIBUTED_REFS
    hints = (
        "The whole batch's variance is not the average of the replicas' variances: the replicas' means differ "
        "from the global mean, and that spread is variance too (the law of total variance).",
        "counts: (R,), means and variances: (R, C). Weight every replica by its count n_r / N; the results are "
        "(C,). Reshape counts to (R, 1) so they broadcast over the channels.",
        "mean = sum_r n_r mean_r / N;  var = sum_r n_r [var_r + (mean_r - mean)^2] / N  (biased: divide by N).",
    )
    mistakes = (
        Mistake("swapped", "your function returned its two results in the wrong order: return (mean, var), not "
                "(var, mean)", lambda c: dict(zip(("var", "mean"), merge_reference(*_merge_args(c))))),
        Mistake("unweighted_mean", "you averaged the replicas' means without weights; a replica with more examples "
                "weighs more: mean = sum_r n_r * mean_r / N", lambda c: {"mean": c["means"].mean(axis=0)}),
        Mistake("mean_not_divided", "the mean is missing the 1 / N: sum_r n_r * mean_r is the sum of all values; "
                "divide it by the total count N = sum_r n_r", lambda c: {"mean": _merge_parts(c)["mean"] * _merge_parts(c)["N"]}),
        Mistake("var_not_divided", "the variance is missing the 1 / N: sum_r n_r * (var_r + (mean_r - mean)^2) is the "
                "sum of squared deviations M2; divide it by the total count N",
                lambda c: {"var": _merge_parts(c)["var"] * _merge_parts(c)["N"]}),
        Mistake("no_between", "you averaged the per-replica variances without the between-replica term: add "
                "sum_r n_r * (mean_r - mean)^2 / N, the spread of the replicas' means around the global mean",
                lambda c: {"var": _merge_parts(c)["within"]}),
        Mistake("plain_average", "you averaged the per-replica variances without weights and without the "
                "between-replica term: var = sum_r n_r * (var_r + (mean_r - mean)^2) / N",
                lambda c: {"var": c["variances"].mean(axis=0)}),
        Mistake("unweighted_between", "the between-replica term is not weighted by the counts: use "
                "sum_r n_r * (mean_r - mean)^2 / N",
                lambda c: {"var": _merge_parts(c)["within"] + ((c["means"] - _merge_parts(c)["mean"]) ** 2).mean(0)}),
        Mistake("unbiased", "you returned the unbiased variance (divided by N - 1); return the biased one (divide by "
                "N), the one batch norm normalizes with",
                lambda c: {"var": _merge_parts(c)["var"] * _merge_parts(c)["N"] / (_merge_parts(c)["N"] - 1)}),
    )

    def cases(self, rng):
        out = []
        # (counts, C, offset): the second and third sit far from 0 (1e4, 1e6), where sum_r n_r (var_r + mean_r^2)
        # / N - mean^2 loses 4 and 8 digits; the third also holds a constant channel (variance exactly 0)
        for counts, C, loc in (((4, 7, 2), 3, 0.0), ((5, 5), 4, 1e4), ((3, 9, 1, 6), 2, 1e6), ((8,), 3, 0.0)):
            means = rng.normal(0, 2, size=(len(counts), C)) + rng.normal(0, 3, size=C) + loc
            variances = rng.uniform(0.2, 3.0, size=(len(counts), C))
            variances[np.array(counts) == 1] = 0.0          # one value has no spread
            if loc >= 1e6:
                means[:, 0], variances[:, 0] = loc + 0.25, 0.0          # a constant channel
            out.append({"counts": np.array(counts, dtype=np.int64), "means": means, "variances": variances})
        return out

    def run(self, fn, case):
        res = fn(*(case[k] for k in ("counts", "means", "variances")))
        mean, var = _pair(res, "merge_mean_var", ("mean", "var"))
        return {"mean": mean, "var": var}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        mean, var = merge_reference(case["counts"], case["means"], case["variances"])
        self.expect_outputs(case, result, {"mean": mean}, rtol=1e-9, atol=1e-12)
        precision_loss(result["var"], var, float(np.max(np.abs(mean))), formula="sum_r n_r (var_r + mean_r**2) / N - "
                       "mean**2", fix="add the within-replica term sum_r n_r var_r and the between-replica term "
                       "sum_r n_r (mean_r - mean)**2, which never square the offset", size="{offset}**2", atol=1e-12)
        self.expect_outputs(case, result, {"var": var}, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 2. Synchronized forward statistics
# ----------------------------------------------------------------------------------------------
def sync_stats_reference(shards):
    """Global (mean, biased var, unbiased var) per channel of shards (n_r, C, H, W), as on the concatenation."""
    x = np.concatenate(shards)
    m = x.size // x.shape[1]
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    return mean, var, var * m / (m - 1)


def _sync_parts(case):
    """What the mistakes of ch7_sync_stats are made of, for one case (per channel unless said)."""
    shards = _shards_from(case)
    mean, var, uvar = sync_stats_reference(shards)
    counts = _counts_of(shards)[:, None]                  # (R, 1) values per channel
    m = counts.sum()
    varis = np.stack([s.var(axis=(0, 2, 3)) for s in shards])          # (R, C)
    return {
        "mean": mean, "var": var, "uvar": uvar, "m": m, "m_local": counts[0, 0], "m2": var * m, "varis": varis,
        "n": sum(s.shape[0] for s in shards),
        "means": np.stack([s.mean(axis=(0, 2, 3)) for s in shards]),
        "sums": np.stack([s.sum(axis=(0, 2, 3)) for s in shards]),
        "within": (counts * varis).sum(axis=0) / m,
        "uvars_local": np.stack([s.var(axis=(0, 2, 3), ddof=1) if s.size // s.shape[1] > 1 else np.zeros(s.shape[1])
                                 for s in shards]),
    }


@register
class SyncStats(Exercise):
    name = "ch7_sync_stats"
    input_labels = {f"x{r}": f"shards[{r}]" for r in range(_MAX_REPLICAS)}
    title = "the statistics SyncBatchNorm's forward computes from R shards (n_r, C, H, W)"
    references = _DISTRIBUTED_REFS
    hints = (
        "Each replica can only send a few numbers per channel: its count, mean and M2 (sum of squared "
        "deviations). The global statistics come from merging those, as if the shards were one batch.",
        "Per shard and channel: m_r = n_r * H * W values; mean_r and M2_r are (C,), reduced over axes (0, 2, 3). "
        "The global count m = sum_r m_r is the same for every channel.",
        "mean = sum_r m_r mean_r / m;  M2 = sum_r [M2_r + m_r (mean_r - mean)^2];  var = M2 / m (normalizes);  "
        "unbiased_var = M2 / (m - 1) (the running variance), with m the GLOBAL count.",
    )
    mistakes = (
        Mistake("mean_local_count", "you divided by the local count: the sum over all replicas must be divided by "
                "the GLOBAL count m = sum_r n_r * H * W, not by this replica's",
                lambda c: {"mean": _sync_parts(c)["sums"].sum(axis=0) / _sync_parts(c)["m_local"]}),
        Mistake("unweighted_mean", "you averaged the replicas' means without weights; a replica with more examples "
                "weighs more", lambda c: {"mean": _sync_parts(c)["means"].mean(axis=0)}),
        Mistake("count_without_hw", "your count is the number of examples only; per channel there are "
                "n_r * H * W values", lambda c: {"mean": _sync_parts(c)["sums"].sum(axis=0) / _sync_parts(c)["n"]}),
        Mistake("no_between", "you averaged the per-replica variances without the between-replica term: add "
                "sum_r m_r * (mean_r - mean)^2 / m, the spread of the replicas' means",
                lambda c: {"var": _sync_parts(c)["within"]}),
        Mistake("plain_average", "you averaged the per-replica variances without weights and without the "
                "between-replica term", lambda c: {"var": _sync_parts(c)["varis"].mean(axis=0)}),
        Mistake("m2_not_divided", "var is missing the 1 / m: the merged M2 is the sum of squared deviations over all "
                "replicas; var = M2 / m with the global count m", lambda c: {"var": _sync_parts(c)["m2"]}),
        Mistake("var_local_count", "you divided by the local count: M2 summed over all replicas must be divided by "
                "the GLOBAL count m", lambda c: {"var": _sync_parts(c)["m2"] / _sync_parts(c)["m_local"]}),
        Mistake("unbiased_as_var", "you returned the unbiased variance as var; batch norm normalizes with the "
                "biased one (M2 / m)", lambda c: {"var": _sync_parts(c)["uvar"]}),
        Mistake("no_bessel", "you forgot Bessel's correction on the global count: unbiased_var = M2 / (m - 1), "
                "with m the values per channel over ALL replicas", lambda c: {"unbiased_var": _sync_parts(c)["var"]}),
        Mistake("bessel_local_count", "you applied Bessel's correction on the local count: divide M2 by (m - 1) "
                "with m the GLOBAL count, not by (this replica's count - 1)",
                lambda c: {"unbiased_var": _sync_parts(c)["m2"] / (_sync_parts(c)["m_local"] - 1)}),
        Mistake("bessel_per_replica", "you applied Bessel's correction once per replica (M2 / (m - R)); the global "
                "batch is one sample: divide by m - 1",
                lambda c: {"unbiased_var": _sync_parts(c)["m2"] / (_sync_parts(c)["m"] - c["replicas"])}),
        Mistake("averaged_unbiased", "you averaged the replicas' unbiased variances; merge M2 over the replicas "
                "(with the between-replica term) and divide by m - 1 with the global count",
                lambda c: {"unbiased_var": _sync_parts(c)["uvars_local"].mean(axis=0)}),
    )

    def cases(self, rng):
        out = []
        # the second and third sit far from 0 (1e4, 1e6): sum(x**2) / m - mean**2 loses 4 and 8 digits there;
        # the third also holds a constant channel (variance exactly 0)
        for ns, C, H, W, loc in (((3, 2, 4), 3, 2, 3, 0.0), ((2, 2), 4, 3, 3, 1e4), ((1, 4, 2, 3), 2, 2, 2, 1e6),
                                 ((5,), 3, 1, 2, 0.0)):
            offset = rng.normal(0, 3, size=(1, C, 1, 1)) + loc
            case = {"replicas": len(ns)}
            for r, n in enumerate(ns):
                shift = rng.normal(0, 1.5, size=(1, C, 1, 1))            # replicas see different data
                case[f"x{r}"] = rng.normal(size=(n, C, H, W)) * rng.uniform(0.5, 2.0) + offset + shift
                if loc >= 1e6:
                    case[f"x{r}"][:, 0] = loc + 0.25                      # a constant channel
            out.append(case)
        return out

    def run(self, fn, case):
        res = _pair(fn(_shards_from(case)), "sync_batch_stats", ("mean", "var", "unbiased_var"))
        return dict(zip(("mean", "var", "unbiased_var"), res))

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        mean, var, uvar = sync_stats_reference(_shards_from(case))
        tol = {"rtol": 1e-9, "atol": 1e-12}
        offset = float(np.max(np.abs(mean)))
        self.expect_outputs(case, result, {"mean": mean}, **tol)
        precision_loss(result["var"], var, offset, formula="sum(x**2) / m - mean**2", size="{offset}**2",
                       fix=_MERGE_FIX, **tol)
        self.expect_outputs(case, result, {"var": var}, **tol)
        precision_loss(result["unbiased_var"], uvar, offset, what="unbiased_var", formula="(sum(x**2) - m * mean**2) "
                       "/ (m - 1)", size="m * {offset}**2", fix=_MERGE_FIX, **tol)
        self.expect_outputs(case, result, {"unbiased_var": uvar}, **tol)


# ----------------------------------------------------------------------------------------------
# 3. Synchronized backward sums
# ----------------------------------------------------------------------------------------------
def sync_backward_reference(dy_shards, x_shards, gamma, eps):
    """dx per shard, dgamma, dbeta of batch norm over the concatenated shards (n_r, C): the closed form."""
    x = np.concatenate(x_shards)
    dy = np.concatenate(dy_shards)
    m = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    invstd = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * invstd
    sum_dy, sum_dy_xhat = dy.sum(axis=0), (dy * x_hat).sum(axis=0)
    dx = gamma * invstd * (dy - sum_dy / m - x_hat * sum_dy_xhat / m)
    bounds = np.cumsum([0] + [s.shape[0] for s in x_shards])
    return [dx[bounds[r]:bounds[r + 1]] for r in range(len(x_shards))], sum_dy_xhat, sum_dy


def _local_backward(dy_shards, x_shards, gamma, eps, *, sums="local", count="global", stats="global"):
    """Wrong-on-purpose variants (each shard's own sums, the local count, sums averaged over replicas)."""
    x = np.concatenate(x_shards)
    m_global = x.shape[0]
    mean_g, var_g = x.mean(axis=0), x.var(axis=0)
    out = []
    xh = []
    for x_r in x_shards:
        mu, v = (mean_g, var_g) if stats == "global" else (x_r.mean(axis=0), x_r.var(axis=0))
        xh.append((x_r - mu) / np.sqrt(v + eps))
    tot_dy = sum(d.sum(axis=0) for d in dy_shards)
    tot_dyx = sum((d * h).sum(axis=0) for d, h in zip(dy_shards, xh))
    R = len(x_shards)
    for r, (x_r, dy_r) in enumerate(zip(x_shards, dy_shards)):
        v = var_g if stats == "global" else x_r.var(axis=0)
        invstd = 1.0 / np.sqrt(v + eps)
        if sums == "local":
            s_dy, s_dyx = dy_r.sum(axis=0), (dy_r * xh[r]).sum(axis=0)
        elif sums == "mean":
            s_dy, s_dyx = tot_dy / R, tot_dyx / R
        else:
            s_dy, s_dyx = tot_dy, tot_dyx
        m = m_global if count == "global" else x_r.shape[0]
        out.append(gamma * invstd * (dy_r - s_dy / m - xh[r] * s_dyx / m))
    return out


def _backward_args(case):
    return _shards_from(case, "dy"), _shards_from(case, "x"), case["gamma"], case["eps"]


def _as_dx(dx_shards):
    return {f"dx{r}": d for r, d in enumerate(dx_shards)}


def _dx_variant(case, **how):
    return _as_dx(_local_backward(*_backward_args(case), **how))


def _x_hat_first(case):
    """x_hat of the first shard, normalized with the global statistics."""
    xs, eps = _shards_from(case, "x"), case["eps"]
    x = np.concatenate(xs)
    return (xs[0] - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)


@register
class SyncBackward(Exercise):
    name = "ch7_sync_backward"
    input_labels = {**{f"x{r}": f"x_shards[{r}]" for r in range(_MAX_REPLICAS)},
                    **{f"dy{r}": f"dy_shards[{r}]" for r in range(_MAX_REPLICAS)}}
    title = "SyncBatchNorm's backward on R shards (n_r, C): all-reduce the two sums"
    references = _DISTRIBUTED_REFS
    hints = (
        "The output of every example depends on the mean and variance of ALL shards, so dx on one shard depends "
        "on dy of every shard, but only through two per-channel sums; those are what the replicas all-reduce.",
        "Per shard r: x_hat_r (n_r, C) from the GLOBAL mean and variance; local sums of dy_r and of dy_r * x_hat_r "
        "are (C,). Add them over the shards; m = sum_r n_r is the global count.",
        "dx_r = gamma / sqrt(var + eps) * (dy_r - sum(dy) / m - x_hat_r * sum(dy * x_hat) / m), both sums over "
        "all shards;  dgamma = sum(dy * x_hat),  dbeta = sum(dy), also over all shards.",
    )
    mistakes = (
        Mistake("local_sums", "your backward used each replica's own sums of dy and dy * x_hat: all-reduce (add) "
                "them over the replicas before using them", lambda c: _dx_variant(c, sums="local")),
        Mistake("local_count", "you divided the all-reduced sums by the local count; divide by the GLOBAL count "
                "m = sum_r n_r", lambda c: _dx_variant(c, sums="all", count="local")),
        Mistake("averaged_sums", "you averaged the sums over the replicas; all-reduce means ADD them, then divide by "
                "the global count", lambda c: _dx_variant(c, sums="mean")),
        Mistake("unsynchronized", "your shards were normalized with their own mean and variance: that is "
                "unsynchronized batch norm; use the global statistics (forward) and the all-reduced sums (backward)",
                lambda c: _dx_variant(c, sums="local", count="local", stats="local")),
        Mistake("first_term_only", "your dx ignores the path through the mean and variance: dx = gamma / sqrt(var + "
                "eps) * dy is only the first term",
                lambda c: _as_dx([c["gamma"] / np.sqrt(np.concatenate(_shards_from(c, "x")).var(axis=0) + c["eps"])
                                  * d for d in _shards_from(c, "dy")])),
        Mistake("default_eps", "your dx ignores the eps it is given and uses 1e-5 (a default argument or a "
                "constant): the backward pass must use the forward pass's eps",
                lambda c: _as_dx(sync_backward_reference(*_backward_args(c)[:3], 1e-5)[0])),
        Mistake("dgamma_first_shard", "dgamma must be summed over all shards; yours is the first shard's only",
                lambda c: {"dgamma": (_shards_from(c, "dy")[0] * _x_hat_first(c)).sum(axis=0)}),
        Mistake("dbeta_first_shard", "dbeta must be summed over all shards; yours is the first shard's only",
                lambda c: {"dbeta": _shards_from(c, "dy")[0].sum(axis=0)}),
        Mistake("swapped", "dgamma and dbeta are swapped: dgamma = sum(dy * x_hat), dbeta = sum(dy)",
                lambda c: dict(zip(("dbeta", "dgamma"), sync_backward_reference(*_backward_args(c))[1:]))),
    )

    def cases(self, rng):
        out = []
        for ns, C, eps in (((3, 5, 2), 3, 1e-5), ((4, 4), 2, 0.1), ((2, 1, 3, 4), 4, 1e-3)):
            case = {"replicas": len(ns), "eps": eps, "gamma": rng.uniform(0.5, 2.0, size=C)}
            for r, n in enumerate(ns):
                case[f"x{r}"] = rng.normal(size=(n, C)) * rng.uniform(0.5, 3.0) + rng.normal(0, 2, size=C)
                case[f"dy{r}"] = rng.normal(size=(n, C))
            out.append(case)
        return out

    def run(self, fn, case):
        res = _pair(fn(*_backward_args(case)), "sync_bn_backward", ("dx_shards", "dgamma", "dbeta"))
        dx_shards, dgamma, dbeta = res
        R = case["replicas"]
        if not isinstance(dx_shards, (list, tuple)) or len(dx_shards) != R:
            raise CheckFailure(f"dx_shards must be a list of {R} arrays, one per shard; it is "
                               f"{describe_value(dx_shards)}")
        out = {f"dx{r}": dx_shards[r] for r in range(R)}
        out.update(dgamma=dgamma, dbeta=dbeta)
        return out

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        dx, dgamma, dbeta = sync_backward_reference(*_backward_args(case))
        tol = {"rtol": 1e-8, "atol": 1e-10}
        for r in range(case["replicas"]):
            expect_array(f"dx_shards[{r}]", result[f"dx{r}"], dx[r], **tol, mistakes=self.mistakes, case=case,
                         output=f"dx{r}")
        self.expect_outputs(case, result, {"dgamma": dgamma, "dbeta": dbeta}, **tol)


# ----------------------------------------------------------------------------------------------
# 4. Ghost batch norm
# ----------------------------------------------------------------------------------------------
def _bn(x, eps, ddof=0):
    return (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0, ddof=ddof) + eps)


def ghost_reference(x, virtual_batch_size, gamma, beta, eps, *, ddof=0):
    chunks = [x[i:i + virtual_batch_size] for i in range(0, x.shape[0], virtual_batch_size)]
    return np.concatenate([_bn(c, eps, ddof) for c in chunks]) * gamma + beta


@register
class GhostBN(Exercise):
    name = "ch7_ghost_bn"
    title = "ghost batch norm (training mode) on x of shape (N, C)"
    references = _DISTRIBUTED_REFS
    hints = (
        "Ghost batch norm cuts the batch into small virtual batches and normalizes each with its own statistics, "
        "as if each were on its own replica.",
        "Virtual batch k holds the consecutive rows x[k * v : (k + 1) * v] (the last one may be shorter); each "
        "gets its own mean and biased variance of shape (C,). gamma and beta are shared, (C,).",
        "out[k] = gamma * (x_k - mean(x_k)) / sqrt(var(x_k) + eps) + beta, biased var; concatenate the pieces in order.",
    )
    mistakes = (
        Mistake("whole_batch", "you normalized the whole batch at once: that is ordinary batch norm; normalize each "
                "virtual batch of virtual_batch_size consecutive examples with its own statistics",
                lambda c: {"out": _ghost_whole(c)}),
        Mistake("count_of_batches", "you made virtual_batch_size virtual batches; make virtual batches OF "
                "virtual_batch_size examples (N / virtual_batch_size of them)",
                lambda c: {"out": _ghost_count_of_batches(c)}),
        Mistake("interleaved", "your virtual batches interleave the examples (x[k::G]); a virtual batch is a run of "
                "consecutive examples x[k * v:(k + 1) * v]", lambda c: {"out": _ghost_interleaved(c)}),
        Mistake("unbiased", "you normalized with the unbiased variance (ddof=1); batch norm uses the biased one",
                lambda c: {"out": ghost_reference(*_ghost_args(c), ddof=1)}),
        Mistake("drops_last", "you dropped the last, shorter virtual batch; keep it (it is normalized with its own "
                "statistics)", lambda c: {"out": _ghost_drops_last(c)}),
        Mistake("default_eps", "{output} ignores the eps it is given and uses 1e-5 (a default argument or a constant)",
                lambda c: {"out": ghost_reference(*_ghost_args(c)[:4], 1e-5)}),
    )

    def cases(self, rng):
        out = []
        for N, C, v, eps in ((12, 3, 4, 1e-5), (10, 2, 4, 1e-3), (9, 4, 3, 0.1), (8, 3, 8, 1e-5)):
            x = rng.normal(size=(N, C)) * rng.uniform(0.5, 3.0, size=C) + rng.normal(0, 2, size=C)
            out.append({"x": x, "virtual_batch_size": v, "gamma": rng.uniform(0.5, 2.0, size=C),
                        "beta": rng.normal(size=C), "eps": eps})
        return out

    def run(self, fn, case):
        out = fn(*(case[k] for k in ("x", "virtual_batch_size", "gamma", "beta", "eps")))
        return {"out": out}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        expect(result["out"] is not None, "ghost_batch_norm returned None: did you forget a return statement?")
        self.expect_outputs(case, result, {"out": ghost_reference(*_ghost_args(case))}, rtol=1e-8, atol=1e-10)


def _ghost_args(case):
    return tuple(case[k] for k in ("x", "virtual_batch_size", "gamma", "beta", "eps"))


def _ghost_whole(case):
    x, v, g, b, eps = _ghost_args(case)
    return _bn(x, eps) * g + b


def _ghost_count_of_batches(case):
    x, v, g, b, eps = _ghost_args(case)
    return ghost_reference(x, -(-x.shape[0] // v), g, b, eps)


def _ghost_interleaved(case):
    x, v, g, b, eps = _ghost_args(case)
    return _interleaved(x, -(-x.shape[0] // v), eps) * g + b


def _ghost_drops_last(case):
    x, v, g, b, eps = _ghost_args(case)
    return ghost_reference(x[:x.shape[0] // v * v], v, g, b, eps)


def _interleaved(x, G, eps):
    out = np.empty_like(x)
    for k in range(G):
        out[k::G] = _bn(x[k::G], eps) if x[k::G].shape[0] > 1 else 0.0
    return out


# ----------------------------------------------------------------------------------------------
# 5. Predict, then run: the bias of each replica's own variance
# ----------------------------------------------------------------------------------------------
@register
class PredictLocalVariance(PredictNumber):
    name = "ch7_predict_local_variance"
    title = "predict: E[biased variance of one replica's 8 examples] / population variance"
    quantity = "the predicted ratio"
    truth = 7 / 8
    tolerance = 0.01
    near_misses = {
        "each replica's biased variance is measured around its OWN mean, which sits closer to its 8 values than the "
        "population mean does; on average it falls short of the population variance": (0.99, 1.01),
        "(m - 1) / m with m = 32 is the bias of the variance of the whole synchronized batch; without "
        "synchronization each replica divides by its own 8 examples": (0.964, 0.974),
        "8 / 7 is Bessel's correction, the factor that REMOVES the bias; the biased variance itself is too small on "
        "average, not too large": (1.13, 1.155),
        "the replicas do not share out the variance: each draws its examples from the same distribution, so only "
        "the count on one replica matters, not the number of replicas": (0.24, 0.26),
    }
    hints = (
        "each replica measures the spread of its examples around its own mean, and that mean is fitted to those very "
        "examples; does that make the spread look larger or smaller than around the true mean?",
        "only the count on ONE replica enters (n = 8); the number of replicas changes how many such variances you "
        "average, not what each one expects",
        "E[sum_i (x_i - mean_n)^2] = (n - 1) sigma^2 for n independent examples; the biased variance divides that sum "
        "by n",
    )


# ----------------------------------------------------------------------------------------------
# 6. Debugging: a synchronized forward that forgets the between-replica term
# ----------------------------------------------------------------------------------------------
def sync_forward_reference(x_shards, gamma, beta, eps, *, ddof=0):
    """Each shard (n_r, C) normalized with the mean and biased variance of ALL shards, then gamma * x_hat + beta."""
    x = np.concatenate(x_shards)
    mean, var = x.mean(axis=0), x.var(axis=0, ddof=ddof)
    return [(s - mean) / np.sqrt(var + eps) * gamma + beta for s in x_shards]


def _forward_args(case):
    return _shards_from(case, "x"), case["gamma"], case["eps"]


def _as_out(shards):
    return {f"out{r}": o for r, o in enumerate(shards)}


def _forward_with(case, mean, var):
    xs, gamma, eps = _forward_args(case)
    return _as_out([(s - mean) / np.sqrt(var + eps) * gamma + case["beta"] for s in xs])


def _forward_no_between(case):
    xs = _shards_from(case, "x")
    n = np.array([s.shape[0] for s in xs], dtype=np.float64)[:, None]   # (R, 1)
    mean = np.concatenate(xs).mean(axis=0)
    within = (n * np.stack([s.var(axis=0) for s in xs])).sum(axis=0) / n.sum()
    return _forward_with(case, mean, within)


def _forward_unweighted(case):
    xs = _shards_from(case, "x")
    means = np.stack([s.mean(axis=0) for s in xs])                       # (R, C)
    mean = means.mean(axis=0)
    var = (np.stack([s.var(axis=0) for s in xs]) + (means - mean) ** 2).mean(axis=0)
    return _forward_with(case, mean, var)


def _forward_local(case):
    xs, gamma, eps = _forward_args(case)
    return _as_out([(s - s.mean(axis=0)) / np.sqrt(s.var(axis=0) + eps) * gamma + case["beta"] for s in xs])


@register
class DebugSyncForward(Exercise):
    name = "ch7_debug_sync_forward"
    input_labels = {f"x{r}": f"x_shards[{r}]" for r in range(_MAX_REPLICAS)}
    title = "debugging: SyncBatchNorm's forward (training mode) on R shards (n_r, C)"
    references = _DISTRIBUTED_REFS
    hints = (
        "run the buggy function on shards whose means differ and look at the variance of all its outputs together: "
        "batch norm should make it 1 (gamma = 1, beta = 0), and it is larger",
        "the mean is right; the variance is the count-weighted average of the replicas' variances, each measured "
        "around its replica's OWN mean, not around the global mean",
        "var = sum_r n_r * (var_r + (mean_r - mean)^2) / m: add the between-replica term (the law of total variance)",
    )
    mistakes = (
        Mistake("no_between", "the variance still leaves out the between-replica term: the count-weighted average "
                "of the replicas' variances is only the spread inside each replica; add sum_r n_r * (mean_r - "
                "mean)^2 / m, the spread of the replicas' means around the global mean", _forward_no_between),
        Mistake("unweighted", "you averaged over the replicas without the count weights, which is right only when "
                "every replica holds the same number of examples: weight replica r by n_r / m in the mean and in "
                "the variance", _forward_unweighted),
        Mistake("local_stats", "each shard is normalized with its own mean and variance: that is plain, "
                "unsynchronized batch norm; normalize every shard with the mean and variance of all shards",
                _forward_local),
        Mistake("unbiased", "you normalized with the unbiased variance (divided by m - 1); batch norm normalizes "
                "with the biased one, M2 / m with the global count m",
                lambda c: _as_out(sync_forward_reference(*_forward_args(c)[:2], c["beta"], c["eps"], ddof=1))),
        Mistake("default_eps", "{output} ignores the eps it is given and uses 1e-5 (a default argument or a constant)",
                lambda c: _as_out(sync_forward_reference(*_forward_args(c)[:2], c["beta"], 1e-5))),
    )

    def cases(self, rng):
        out = []
        # replicas see shifted data (the between-replica term matters); the first and third have unequal counts,
        # the second equal ones, the third a shard of one example, the last a single replica
        for ns, C, eps in (((3, 5, 2), 3, 1e-5), ((4, 4), 2, 0.1), ((1, 6, 3, 2), 4, 1e-3), ((7,), 3, 0.1)):
            case = {"replicas": len(ns), "eps": eps, "gamma": rng.uniform(0.5, 2.0, size=C),
                    "beta": rng.normal(size=C)}
            offset = rng.normal(0, 2, size=C)
            for r, n in enumerate(ns):
                case[f"x{r}"] = rng.normal(size=(n, C)) * rng.uniform(0.3, 1.5) + offset + rng.normal(0, 1.5, size=C)
            out.append(case)
        return out

    def run(self, fn, case):
        R = case["replicas"]
        res = fn(_shards_from(case, "x"), case["gamma"], case["beta"], case["eps"])
        if not isinstance(res, (list, tuple)) or len(res) != R:
            raise CheckFailure(f"sync_bn_forward must return a list of {R} arrays, one per shard; it returned "
                               f"{describe_value(res)}")
        return {f"out{r}": res[r] for r in range(R)}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        want = sync_forward_reference(_shards_from(case, "x"), case["gamma"], case["beta"], case["eps"])
        for r in range(case["replicas"]):
            expect_array(f"out_shards[{r}]", result[f"out{r}"], want[r], rtol=1e-8, atol=1e-10,
                         mistakes=self.mistakes, case=case, output=f"out{r}")
