"""Chapter 4's declared mistakes, each made by a student function written here from scratch.

``MISTAKES[(exercise, mistake id)]`` is a wrong answer with the student's signature that makes exactly that
mistake (and is right everywhere else), written without bncourse.checks: ``tests/test_mistake_registry.py``
checks that ``check(exercise, fn)`` fails with that mistake's full message.
"""
import copy

import numpy as np
import torch


# ---------------------------------------------------------------- ch4_running_update
def _update(rm, rv, x, momentum, convention, *, bessel=True, reverse=False, std=False, replace=""):
    n = len(x)
    new = momentum if convention == "pytorch" else 1 - momentum     # weight of the batch statistic
    if reverse:
        new = 1 - new
    var = x.var(0, ddof=1 if bessel else 0)
    if std:
        var = np.sqrt(var)
    mean_out = x.mean(0) if "mean" in replace else (1 - new) * rm + new * x.mean(0)
    var_out = x.var(0) * n / (n - 1) if "var" in replace else (1 - new) * rv + new * var
    return mean_out, var_out


def _training_only(**mistake):
    def fn(running_mean, running_var, x, momentum, convention, training=True):
        if not training:
            return running_mean.copy(), running_var.copy()
        return _update(running_mean, running_var, x, momentum, convention, **mistake)
    return fn


def _keep_old_only(**mistake):
    def fn(running_mean, running_var, x, momentum, convention, training=True):
        if not training:
            return running_mean.copy(), running_var.copy()
        if convention != "keep_old":
            return _update(running_mean, running_var, x, momentum, convention)
        return _update(running_mean, running_var, x, momentum, convention, **mistake)
    return fn


def _pytorch_only(**mistake):
    def fn(running_mean, running_var, x, momentum, convention, training=True):
        if not training:
            return running_mean.copy(), running_var.copy()
        if convention != "pytorch":
            return _update(running_mean, running_var, x, momentum, convention)
        return _update(running_mean, running_var, x, momentum, convention, **mistake)
    return fn


def _updates_in_eval(**mistake):
    def fn(running_mean, running_var, x, momentum, convention, training=True):
        if training:
            return _update(running_mean, running_var, x, momentum, convention)
        return _update(running_mean, running_var, x, momentum, convention, **mistake)
    return fn


def update_swapped(running_mean, running_var, x, momentum, convention, training=True):
    mean, var = _training_only()(running_mean, running_var, x, momentum, convention, training)
    return var, mean


def update_mean_not_updated(running_mean, running_var, x, momentum, convention, training=True):
    mean, var = _training_only()(running_mean, running_var, x, momentum, convention, training)
    return running_mean.copy(), var


def update_var_not_updated(running_mean, running_var, x, momentum, convention, training=True):
    mean, var = _training_only()(running_mean, running_var, x, momentum, convention, training)
    return mean, running_var.copy()


# ---------------------------------------------------------------- ch4_convert_momentum
def convert_always_flips(value, source, target):
    return 1 - value


def convert_copies(value, source, target):
    return value


# ---------------------------------------------------------------- ch4_bias_corrected_ema
def _ema(values, alpha, start):
    avg, out = start, []
    for v in values:
        avg = alpha * avg + (1 - alpha) * v
        out.append(avg)
    return np.array(out)


def _steps(values):
    return np.arange(1, len(values) + 1).reshape(-1, 1)


def ema_no_correction(values, alpha):
    return _ema(values, alpha, 0.0)


def ema_multiplied(values, alpha):
    return _ema(values, alpha, 0.0) * (1 - alpha ** _steps(values))


def ema_off_by_one(values, alpha):
    return _ema(values, alpha, 0.0) / (1 - alpha ** (_steps(values) + 1))


def ema_starts_at_first(values, alpha):
    return _ema(values, alpha, values[0])


def ema_reversed(values, alpha):
    return _ema(values, 1 - alpha, 0.0) / (1 - (1 - alpha) ** _steps(values))


def ema_final_only(values, alpha):
    return (_ema(values, alpha, 0.0) / (1 - alpha ** _steps(values)))[-1]


# ---------------------------------------------------------------- ch4_population_stats
def _pop(batches):
    rows = np.concatenate(list(batches))
    return rows.mean(0), rows.var(0, ddof=1)


def pop_swapped(batches):
    mean, var = _pop(batches)
    return var, mean


def pop_equal_weights(batches):
    bs = list(batches)
    return np.mean([b.mean(0) for b in bs], axis=0), np.concatenate(bs).var(0, ddof=1)


def pop_last_batch(batches):
    bs = list(batches)
    return bs[-1].mean(0), np.concatenate(bs).var(0, ddof=1)


def pop_biased(batches):
    rows = np.concatenate(list(batches))
    return rows.mean(0), rows.var(0)


def pop_averaged_variances(batches):
    bs = list(batches)
    return np.concatenate(bs).mean(0), np.mean([b.var(0, ddof=1) for b in bs], axis=0)


def pop_paper_bessel(batches):
    bs = list(batches)
    m = len(bs[0])
    return np.concatenate(bs).mean(0), np.mean([b.var(0) for b in bs], axis=0) * m / (m - 1)


def pop_weighted_variances(batches):
    bs = list(batches)
    n = sum(len(b) for b in bs)
    return np.concatenate(bs).mean(0), sum(len(b) * b.var(0) for b in bs) / (n - 1)


def pop_std(batches):
    mean, var = _pop(batches)
    return mean, np.sqrt(var)


# ---------------------------------------------------------------- ch4_fold_bn
def _b(beta, a, mean):
    return beta - a * mean


def fold_swapped(gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return _b(beta, a, mean), a


def fold_no_eps(gamma, beta, mean, var, eps):
    with np.errstate(divide="ignore"):
        a = gamma / np.sqrt(var)
    return a, _b(beta, a, mean)


def fold_default_eps(gamma, beta, mean, var, eps=1e-5):
    a = gamma / np.sqrt(var + 1e-5)
    return a, _b(beta, a, mean)


def fold_var_not_std(gamma, beta, mean, var, eps):
    a = gamma / (var + eps)
    return a, _b(beta, a, mean)


def fold_inverted(gamma, beta, mean, var, eps):
    a = np.sqrt(var + eps) / gamma
    return a, _b(beta, a, mean)


def fold_no_gamma(gamma, beta, mean, var, eps):
    a = 1 / np.sqrt(var + eps)
    return a, _b(beta, a, mean)


def fold_mean_unscaled(gamma, beta, mean, var, eps):
    return gamma / np.sqrt(var + eps), beta - mean


def fold_mean_sign(gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return a, beta + a * mean


def fold_no_beta(gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return a, -a * mean


def fold_mean_not_gamma(gamma, beta, mean, var, eps):
    return gamma / np.sqrt(var + eps), beta - mean / np.sqrt(var + eps)


# ---------------------------------------------------------------- ch4_fold_linear
def _ab(gamma, beta, mean, var, eps):
    a = gamma / np.sqrt(var + eps)
    return a, beta - a * mean


def linear_W_unscaled(W, c, gamma, beta, mean, var, eps):
    a, b = _ab(gamma, beta, mean, var, eps)
    return W.copy(), a * c + b


def linear_bias_dropped(W, c, gamma, beta, mean, var, eps):
    a, b = _ab(gamma, beta, mean, var, eps)
    return a[:, None] * W, b


def linear_bias_unscaled(W, c, gamma, beta, mean, var, eps):
    a, b = _ab(gamma, beta, mean, var, eps)
    return a[:, None] * W, c + b


def linear_no_b(W, c, gamma, beta, mean, var, eps):
    a, b = _ab(gamma, beta, mean, var, eps)
    return a[:, None] * W, a * c


# ---------------------------------------------------------------- ch4_merge_stats
def _chunks(counts, means, variances):
    n = counts.sum()
    mean = (counts[:, None] * means).sum(0) / n
    within = (counts[:, None] * variances).sum(0)
    between = (counts[:, None] * (means - mean) ** 2).sum(0)
    return n, mean, within, between


def merge_swapped(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return (within + between) / (n - 1), mean


def merge_equal_weights(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return means.mean(0), (within + between) / (n - 1)


def merge_no_between(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return mean, within / (n - 1)


def merge_weighted_average(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return mean, within / n


def merge_equal_variances(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return mean, variances.mean(0)


def merge_biased(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return mean, (within + between) / n


def merge_chunks_unbiased(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return mean, (((counts - 1)[:, None] * variances).sum(0) + between) / (n - 1)


def merge_std(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return mean, np.sqrt((within + between) / (n - 1))


# ---------------------------------------------------------------- ch4_debug_predict
def predict_training_mode_labels(model, x, batch_size):
    """eval() forgotten, but the running statistics put back and dropout off: the labels give it away."""
    saved = copy.deepcopy(model.state_dict())
    was_training = model.training
    dropout_p = model[3].p
    model[3].p = 0.0
    with torch.no_grad():
        labels = []
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            model.train(len(xb) > 1)               # a single row cannot be batch-normalized
            labels.append(model(xb).argmax(1))
    model.load_state_dict(saved)
    model[3].p = dropout_p
    model.train(was_training)
    return torch.cat(labels).numpy()


MISTAKES = {
    ("ch4_running_update", "swapped"): update_swapped,
    ("ch4_running_update", "stale"): _updates_in_eval(),
    ("ch4_running_update", "stale_reversed"): _updates_in_eval(reverse=True),
    ("ch4_running_update", "stale_no_bessel"): _updates_in_eval(bessel=False),
    ("ch4_running_update", "reversed_pytorch"): _pytorch_only(reverse=True),
    ("ch4_running_update", "reversed_keep_old"): _keep_old_only(reverse=True),
    ("ch4_running_update", "replaced_mean_pytorch"): _pytorch_only(replace="mean"),
    ("ch4_running_update", "replaced_mean_keep_old"): _keep_old_only(replace="mean"),
    ("ch4_running_update", "mean_not_updated"): update_mean_not_updated,
    ("ch4_running_update", "no_bessel"): _training_only(bessel=False),
    ("ch4_running_update", "reversed_no_bessel"): _training_only(bessel=False, reverse=True),
    ("ch4_running_update", "averaged_std"): _training_only(std=True),
    ("ch4_running_update", "replaced_var_pytorch"): _pytorch_only(replace="var"),
    ("ch4_running_update", "replaced_var_keep_old"): _keep_old_only(replace="var"),
    ("ch4_running_update", "var_not_updated"): update_var_not_updated,
    ("ch4_convert_momentum", "converted_within_camp"): convert_always_flips,
    ("ch4_convert_momentum", "copied"): convert_copies,
    ("ch4_bias_corrected_ema", "no_correction"): ema_no_correction,
    ("ch4_bias_corrected_ema", "multiplied"): ema_multiplied,
    ("ch4_bias_corrected_ema", "off_by_one"): ema_off_by_one,
    ("ch4_bias_corrected_ema", "starts_at_first"): ema_starts_at_first,
    ("ch4_bias_corrected_ema", "reversed"): ema_reversed,
    ("ch4_bias_corrected_ema", "final_only"): ema_final_only,
    ("ch4_population_stats", "swapped"): pop_swapped,
    ("ch4_population_stats", "equal_weights"): pop_equal_weights,
    ("ch4_population_stats", "last_batch"): pop_last_batch,
    ("ch4_population_stats", "biased"): pop_biased,
    ("ch4_population_stats", "averaged_variances"): pop_averaged_variances,
    ("ch4_population_stats", "paper_bessel"): pop_paper_bessel,
    ("ch4_population_stats", "weighted_variances"): pop_weighted_variances,
    ("ch4_population_stats", "std"): pop_std,
    ("ch4_fold_bn", "swapped"): fold_swapped,
    ("ch4_fold_bn", "no_eps"): fold_no_eps,
    ("ch4_fold_bn", "default_eps"): fold_default_eps,
    ("ch4_fold_bn", "var_not_std"): fold_var_not_std,
    ("ch4_fold_bn", "inverted"): fold_inverted,
    ("ch4_fold_bn", "no_gamma"): fold_no_gamma,
    ("ch4_fold_bn", "mean_unscaled"): fold_mean_unscaled,
    ("ch4_fold_bn", "mean_sign"): fold_mean_sign,
    ("ch4_fold_bn", "no_beta"): fold_no_beta,
    ("ch4_fold_bn", "mean_not_gamma"): fold_mean_not_gamma,
    ("ch4_fold_linear", "W_unscaled"): linear_W_unscaled,
    ("ch4_fold_linear", "bias_dropped"): linear_bias_dropped,
    ("ch4_fold_linear", "bias_unscaled"): linear_bias_unscaled,
    ("ch4_fold_linear", "no_b"): linear_no_b,
    ("ch4_merge_stats", "swapped"): merge_swapped,
    ("ch4_merge_stats", "equal_weights"): merge_equal_weights,
    ("ch4_merge_stats", "no_between"): merge_no_between,
    ("ch4_merge_stats", "weighted_average"): merge_weighted_average,
    ("ch4_merge_stats", "equal_variances"): merge_equal_variances,
    ("ch4_merge_stats", "biased"): merge_biased,
    ("ch4_merge_stats", "chunks_unbiased"): merge_chunks_unbiased,
    ("ch4_merge_stats", "std"): merge_std,
    ("ch4_debug_predict", "training_mode_labels"): predict_training_mode_labels,
}


def merge_not_divided(counts, means, variances):
    n, mean, within, between = _chunks(counts, means, variances)
    return mean, within + between


MISTAKES[("ch4_merge_stats", "not_divided")] = merge_not_divided
