"""Chapter 7's declared mistakes, each made by a student function written here from scratch.

``MISTAKES[(exercise, mistake id)]`` is a wrong answer with the student's signature that makes exactly that
mistake (and is right everywhere else), written without bncourse.checks: ``tests/test_mistake_registry.py``
checks that ``check(exercise, fn)`` fails with that mistake's full message. Replicas are simulated as lists of
shards, as in the exercises.
"""
import numpy as np

# ---------------------------------------------------------------- right answers the mistakes start from


def _merge(counts, means, variances):
    n = counts[:, None].astype(float)
    total = n.sum()
    mean = (n * means).sum(0) / total
    return mean, (n * (variances + (means - mean) ** 2)).sum(0) / total


def _sync_stats(shards):
    m = sum(s.shape[0] * s.shape[2] * s.shape[3] for s in shards)
    mean = sum(s.sum(axis=(0, 2, 3)) for s in shards) / m
    m2 = sum(((s - mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3)) for s in shards)
    return mean, m2 / m, m2 / (m - 1)


def _local(s):
    """(count, mean, M2) of one shard (n, C, H, W), per channel."""
    m = s.shape[0] * s.shape[2] * s.shape[3]
    mu = s.mean(axis=(0, 2, 3))
    return m, mu, ((s - mu[None, :, None, None]) ** 2).sum(axis=(0, 2, 3))


def _sync_backward(dy_shards, x_shards, gamma, eps, *, sums="all", count="global", stats="global",
                   first_term_only=False):
    x = np.concatenate(x_shards)
    m = len(x)
    mean, var = x.mean(0), x.var(0)
    xhats, pieces = [], []
    for xr, dyr in zip(x_shards, dy_shards):
        mu, v = (mean, var) if stats == "global" else (xr.mean(0), xr.var(0))
        xh = (xr - mu) / np.sqrt(v + eps)
        xhats.append(xh)
        pieces.append((dyr.sum(0), (dyr * xh).sum(0)))
    tot_dy = sum(p[0] for p in pieces)
    tot_dyx = sum(p[1] for p in pieces)
    dxs = []
    for r, (xr, dyr) in enumerate(zip(x_shards, dy_shards)):
        v = var if stats == "global" else xr.var(0)
        inv = 1 / np.sqrt(v + eps)
        if first_term_only:
            dxs.append(gamma * inv * dyr)
            continue
        xh = xhats[r]
        s1, s2 = {"all": (tot_dy, tot_dyx), "local": pieces[r],
                  "mean": (tot_dy / len(x_shards), tot_dyx / len(x_shards))}[sums]
        k = m if count == "global" else len(xr)
        dxs.append(gamma * inv * (dyr - s1 / k - xh * s2 / k))
    return dxs, tot_dyx, tot_dy


def _bn_rows(x, eps, ddof=0):
    return (x - x.mean(0)) / np.sqrt(x.var(0, ddof=ddof) + eps)


def _ghost(x, v, gamma, beta, eps, ddof=0):
    return np.concatenate([_bn_rows(x[i:i + v], eps, ddof) for i in range(0, len(x), v)]) * gamma + beta


# ---------------------------------------------------------------- ch7_merge_mean_var
def merge_swapped(counts, means, variances):
    mean, var = _merge(counts, means, variances)
    return var, mean


def merge_unweighted_mean(counts, means, variances):
    return means.mean(0), _merge(counts, means, variances)[1]


def merge_no_between(counts, means, variances):
    n = counts[:, None]
    return _merge(counts, means, variances)[0], (n * variances).sum(0) / n.sum()


def merge_plain_average(counts, means, variances):
    return _merge(counts, means, variances)[0], variances.mean(0)


def merge_unweighted_between(counts, means, variances):
    n = counts[:, None]
    mean = (n * means).sum(0) / n.sum()
    return mean, (n * variances).sum(0) / n.sum() + ((means - mean) ** 2).mean(0)


def merge_unbiased(counts, means, variances):
    mean, var = _merge(counts, means, variances)
    total = counts.sum()
    return mean, var * total / (total - 1)


# ---------------------------------------------------------------- ch7_sync_stats
def sync_mean_local_count(shards):
    mean, var, uvar = _sync_stats(shards)
    return sum(s.sum(axis=(0, 2, 3)) for s in shards) / _local(shards[0])[0], var, uvar


def sync_unweighted_mean(shards):
    mean, var, uvar = _sync_stats(shards)
    return np.mean([s.mean(axis=(0, 2, 3)) for s in shards], axis=0), var, uvar


def sync_count_without_hw(shards):
    mean, var, uvar = _sync_stats(shards)
    return sum(s.sum(axis=(0, 2, 3)) for s in shards) / sum(len(s) for s in shards), var, uvar


def sync_no_between(shards):
    mean, var, uvar = _sync_stats(shards)
    parts = [_local(s) for s in shards]
    return mean, sum(p[2] for p in parts) / sum(p[0] for p in parts), uvar


def sync_plain_average(shards):
    mean, var, uvar = _sync_stats(shards)
    return mean, np.mean([s.var(axis=(0, 2, 3)) for s in shards], axis=0), uvar


def sync_var_local_count(shards):
    mean, var, uvar = _sync_stats(shards)
    m = sum(_local(s)[0] for s in shards)
    return mean, var * m / _local(shards[0])[0], uvar


def sync_unbiased_as_var(shards):
    mean, var, uvar = _sync_stats(shards)
    return mean, uvar, uvar


def sync_no_bessel(shards):
    mean, var, uvar = _sync_stats(shards)
    return mean, var, var


def sync_bessel_local_count(shards):
    mean, var, uvar = _sync_stats(shards)
    m = sum(_local(s)[0] for s in shards)
    return mean, var, var * m / (_local(shards[0])[0] - 1)


def sync_bessel_per_replica(shards):
    mean, var, uvar = _sync_stats(shards)
    m = sum(_local(s)[0] for s in shards)
    return mean, var, var * m / (m - len(shards))


def sync_averaged_unbiased(shards):
    mean, var, uvar = _sync_stats(shards)
    local = [s.var(axis=(0, 2, 3), ddof=1) if _local(s)[0] > 1 else np.zeros(s.shape[1]) for s in shards]
    return mean, var, np.mean(local, axis=0)


# ---------------------------------------------------------------- ch7_sync_backward
def backward_local_sums(dy, xs, gamma, eps):
    return _sync_backward(dy, xs, gamma, eps, sums="local")


def backward_local_count(dy, xs, gamma, eps):
    return _sync_backward(dy, xs, gamma, eps, count="local")


def backward_averaged_sums(dy, xs, gamma, eps):
    return _sync_backward(dy, xs, gamma, eps, sums="mean")


def backward_unsynchronized(dy, xs, gamma, eps):
    dxs = [gamma / np.sqrt(x.var(0) + eps) * (d - d.mean(0) - _bn_rows(x, eps) * (d * _bn_rows(x, eps)).mean(0))
           for d, x in zip(dy, xs)]
    return (dxs,) + _sync_backward(dy, xs, gamma, eps)[1:]


def backward_first_term_only(dy, xs, gamma, eps):
    return _sync_backward(dy, xs, gamma, eps, first_term_only=True)


def backward_default_eps(dy, xs, gamma, eps=1e-5):
    dxs = _sync_backward(dy, xs, gamma, 1e-5)[0]                   # the dx of the default eps
    return (dxs,) + _sync_backward(dy, xs, gamma, eps)[1:]


def backward_dgamma_first_shard(dy, xs, gamma, eps):
    dxs, dgamma, dbeta = _sync_backward(dy, xs, gamma, eps)
    x = np.concatenate(xs)
    return dxs, (dy[0] * (xs[0] - x.mean(0)) / np.sqrt(x.var(0) + eps)).sum(0), dbeta


def backward_dbeta_first_shard(dy, xs, gamma, eps):
    dxs, dgamma, dbeta = _sync_backward(dy, xs, gamma, eps)
    return dxs, dgamma, dy[0].sum(0)


def backward_swapped(dy, xs, gamma, eps):
    dxs, dgamma, dbeta = _sync_backward(dy, xs, gamma, eps)
    return dxs, dbeta, dgamma


# ---------------------------------------------------------------- ch7_ghost_bn
def ghost_whole_batch(x, v, gamma, beta, eps):
    return _bn_rows(x, eps) * gamma + beta


def ghost_count_of_batches(x, v, gamma, beta, eps):
    return np.concatenate([_bn_rows(p, eps) for p in np.array_split(x, v)]) * gamma + beta


def ghost_interleaved(x, v, gamma, beta, eps):
    groups = -(-len(x) // v)
    out = np.empty_like(x)
    for k in range(groups):
        out[k::groups] = _bn_rows(x[k::groups], eps)
    return out * gamma + beta


def ghost_unbiased(x, v, gamma, beta, eps):
    return _ghost(x, v, gamma, beta, eps, ddof=1)


def ghost_drops_last(x, v, gamma, beta, eps):
    full = len(x) // v * v
    return _ghost(x[:full], v, gamma, beta, eps)


def ghost_default_eps(x, v, gamma, beta, eps=1e-5):
    return _ghost(x, v, gamma, beta, 1e-5)


MISTAKES = {
    ("ch7_merge_mean_var", "swapped"): merge_swapped,
    ("ch7_merge_mean_var", "unweighted_mean"): merge_unweighted_mean,
    ("ch7_merge_mean_var", "no_between"): merge_no_between,
    ("ch7_merge_mean_var", "plain_average"): merge_plain_average,
    ("ch7_merge_mean_var", "unweighted_between"): merge_unweighted_between,
    ("ch7_merge_mean_var", "unbiased"): merge_unbiased,
    ("ch7_sync_stats", "mean_local_count"): sync_mean_local_count,
    ("ch7_sync_stats", "unweighted_mean"): sync_unweighted_mean,
    ("ch7_sync_stats", "count_without_hw"): sync_count_without_hw,
    ("ch7_sync_stats", "no_between"): sync_no_between,
    ("ch7_sync_stats", "plain_average"): sync_plain_average,
    ("ch7_sync_stats", "var_local_count"): sync_var_local_count,
    ("ch7_sync_stats", "unbiased_as_var"): sync_unbiased_as_var,
    ("ch7_sync_stats", "no_bessel"): sync_no_bessel,
    ("ch7_sync_stats", "bessel_local_count"): sync_bessel_local_count,
    ("ch7_sync_stats", "bessel_per_replica"): sync_bessel_per_replica,
    ("ch7_sync_stats", "averaged_unbiased"): sync_averaged_unbiased,
    ("ch7_sync_backward", "local_sums"): backward_local_sums,
    ("ch7_sync_backward", "local_count"): backward_local_count,
    ("ch7_sync_backward", "averaged_sums"): backward_averaged_sums,
    ("ch7_sync_backward", "unsynchronized"): backward_unsynchronized,
    ("ch7_sync_backward", "first_term_only"): backward_first_term_only,
    ("ch7_sync_backward", "default_eps"): backward_default_eps,
    ("ch7_sync_backward", "dgamma_first_shard"): backward_dgamma_first_shard,
    ("ch7_sync_backward", "dbeta_first_shard"): backward_dbeta_first_shard,
    ("ch7_sync_backward", "swapped"): backward_swapped,
    ("ch7_ghost_bn", "whole_batch"): ghost_whole_batch,
    ("ch7_ghost_bn", "count_of_batches"): ghost_count_of_batches,
    ("ch7_ghost_bn", "interleaved"): ghost_interleaved,
    ("ch7_ghost_bn", "unbiased"): ghost_unbiased,
    ("ch7_ghost_bn", "drops_last"): ghost_drops_last,
    ("ch7_ghost_bn", "default_eps"): ghost_default_eps,
}


def merge_mean_not_divided(counts, means, variances):
    return (counts[:, None] * means).sum(0), _merge(counts, means, variances)[1]


def merge_var_not_divided(counts, means, variances):
    mean, var = _merge(counts, means, variances)
    return mean, var * counts.sum()


def sync_m2_not_divided(shards):
    mean, var, uvar = _sync_stats(shards)
    m = sum(_local(s)[0] for s in shards)
    return mean, var * m, uvar


MISTAKES.update({
    ("ch7_merge_mean_var", "mean_not_divided"): merge_mean_not_divided,
    ("ch7_merge_mean_var", "var_not_divided"): merge_var_not_divided,
    ("ch7_sync_stats", "m2_not_divided"): sync_m2_not_divided,
})


# ---------------------------------------------------------------- ch7_debug_sync_forward
def _sync_forward(x_shards, gamma, beta, eps, ddof=0):
    x = np.concatenate(x_shards)
    mu, var = x.mean(axis=0), x.var(axis=0, ddof=ddof)
    return [(s - mu) / np.sqrt(var + eps) * gamma + beta for s in x_shards]


def forward_no_between(x_shards, gamma, beta, eps=1e-5):          # the planted bug, left in
    counts = [x.shape[0] for x in x_shards]
    m = sum(counts)
    mean = sum(n * x.mean(axis=0) for n, x in zip(counts, x_shards)) / m
    var = sum(n * x.var(axis=0) for n, x in zip(counts, x_shards)) / m
    return [(x - mean) / np.sqrt(var + eps) * gamma + beta for x in x_shards]


def forward_unweighted(x_shards, gamma, beta, eps):              # "fixed" assuming equal shard sizes
    R = len(x_shards)
    mus = [x.mean(axis=0) for x in x_shards]
    mean = sum(mus) / R
    var = sum(x.var(axis=0) + (mu - mean) ** 2 for x, mu in zip(x_shards, mus)) / R
    return [(x - mean) / np.sqrt(var + eps) * gamma + beta for x in x_shards]


def forward_local_stats(x_shards, gamma, beta, eps):
    return [(x - x.mean(0)) / np.sqrt(x.var(0) + eps) * gamma + beta for x in x_shards]


def forward_unbiased(x_shards, gamma, beta, eps):
    return _sync_forward(x_shards, gamma, beta, eps, ddof=1)


def forward_default_eps(x_shards, gamma, beta, eps):
    return _sync_forward(x_shards, gamma, beta, 1e-5)


MISTAKES.update({
    ("ch7_debug_sync_forward", "no_between"): forward_no_between,
    ("ch7_debug_sync_forward", "unweighted"): forward_unweighted,
    ("ch7_debug_sync_forward", "local_stats"): forward_local_stats,
    ("ch7_debug_sync_forward", "unbiased"): forward_unbiased,
    ("ch7_debug_sync_forward", "default_eps"): forward_default_eps,
})
