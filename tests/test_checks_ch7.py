"""Chapter 7 self-checks (batch norm across devices): independent right answers pass, the cases hold what the
instructions warn about, and every message that is not a declared mistake is asserted word for word.

Each declared mistake (``Exercise.mistakes``) has its wrong implementation, written from scratch the way a student
would, in ``tests/mistakes_ch7.py``; ``tests/test_mistake_registry.py`` requires its whole message.
"""
import numpy as np
import pytest
import torch

from bncourse.checks import REGISTRY, check, get_exercise, hint, reset_hints
from check_helpers import check_fails
from check_messages import assert_body, in_place as in_place_message

NAMES = ("ch7_merge_mean_var", "ch7_sync_stats", "ch7_sync_backward", "ch7_ghost_bn", "ch7_predict_local_variance",
         "ch7_debug_sync_forward")


# ---- correct implementations, written independently (torch where it helps) --------------------------------
def merge_mean_var(counts, means, variances):
    n, mean, m2 = 0, None, None
    for n_r, mean_r, var_r in zip(counts, means, variances):          # Chan et al., one replica at a time
        m2_r = var_r * n_r
        if mean is None:
            n, mean, m2 = n_r, mean_r.copy(), m2_r
            continue
        total = n + n_r
        delta = mean_r - mean
        mean = mean + delta * n_r / total
        m2 = m2 + m2_r + delta ** 2 * n * n_r / total
        n = total
    return mean, m2 / n


def sync_batch_stats(shards):
    counts = [s.shape[0] * s.shape[2] * s.shape[3] for s in shards]
    sums = [s.sum(axis=(0, 2, 3)) for s in shards]
    m = sum(counts)
    mean = sum(sums) / m
    m2 = sum(((s - mean.reshape(1, -1, 1, 1)) ** 2).sum(axis=(0, 2, 3)) for s in shards)
    return mean, m2 / m, m2 / (m - 1)


def sync_bn_backward(dy_shards, x_shards, gamma, eps):
    # autograd on the concatenation: the definition SyncBatchNorm must reproduce
    x = torch.from_numpy(np.concatenate(x_shards)).requires_grad_()
    g = torch.from_numpy(gamma.copy()).requires_grad_()
    b = torch.zeros_like(g, requires_grad=True)
    y = torch.nn.functional.batch_norm(x, None, None, g, b, training=True, eps=eps)
    y.backward(torch.from_numpy(np.concatenate(dy_shards)))
    sizes = np.cumsum([0] + [s.shape[0] for s in x_shards])
    dx = x.grad.numpy()
    return [dx[sizes[r]:sizes[r + 1]] for r in range(len(x_shards))], g.grad.numpy(), b.grad.numpy()


def ghost_batch_norm(x, virtual_batch_size, gamma, beta, eps):
    t = torch.from_numpy(x)
    out = [torch.nn.functional.batch_norm(c, None, None, torch.from_numpy(gamma), torch.from_numpy(beta),
                                          training=True, eps=eps) for c in t.split(virtual_batch_size)]
    return torch.cat(out).numpy()


def sync_bn_forward(x_shards, gamma, beta, eps):
    # torch's batch norm on the concatenation, split back into the shards
    x = torch.from_numpy(np.concatenate(x_shards))
    y = torch.nn.functional.batch_norm(x, None, None, torch.from_numpy(gamma), torch.from_numpy(beta),
                                       training=True, eps=eps).numpy()
    return list(np.split(y, np.cumsum([s.shape[0] for s in x_shards])[:-1]))


CORRECT = {"ch7_merge_mean_var": merge_mean_var, "ch7_sync_stats": sync_batch_stats,
           "ch7_sync_backward": sync_bn_backward, "ch7_ghost_bn": ghost_batch_norm,
           "ch7_predict_local_variance": 0.875, "ch7_debug_sync_forward": sync_bn_forward}


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_a_hint_ladder(name):
    assert name in REGISTRY
    ladder = get_exercise(name).hints
    assert 2 <= len(ladder) <= 4 and all(isinstance(h, str) and len(h) > 40 for h in ladder)
    reset_hints(name)
    assert hint(name).startswith(f"hint 1 of {len(ladder)} for {name}")
    reset_hints(name)


@pytest.mark.parametrize("name", NAMES)
def test_independent_reference_passes(name, capsys):
    check(name, CORRECT[name])
    assert "✓" in capsys.readouterr().out
    for seed in (1, 2, 3):
        check(name, CORRECT[name], seed=seed, quiet=True)


# ---- each declared mistake's wrong implementation: tests/mistakes_ch7.py, run by tests/test_mistake_registry.py;
# here: what is not a declared mistake ----------------------------------------------------------------------------


def test_ghost_torch_tensor_is_refused():
    check_fails("ch7_ghost_bn", lambda x, v, g, b, e: torch.from_numpy(ghost_batch_norm(x, v, g, b, e)),
                "expected a numpy.ndarray")


def test_checker_references_match_the_library():
    """The NumPy references inside the checks agree with bncourse.distributed (independent code paths)."""
    from bncourse.checks.ch7_devices import ghost_reference, merge_reference, sync_stats_reference
    from bncourse.distributed import GhostBatchNorm, merge_moments
    rng = np.random.default_rng(0)
    shards = [rng.normal(r, 1 + r, size=(n, 3, 2, 2)) for r, n in enumerate((3, 5, 2))]
    counts = np.array([s.shape[0] * 4 for s in shards])
    means = np.stack([s.mean(axis=(0, 2, 3)) for s in shards])
    variances = np.stack([s.var(axis=(0, 2, 3)) for s in shards])
    m, mean, m2 = merge_moments(list(counts), list(means), list(variances * counts[:, None]))
    ref_mean, ref_var, ref_uvar = sync_stats_reference(shards)
    assert np.allclose(mean, ref_mean, atol=1e-13) and np.allclose(m2 / m, ref_var, atol=1e-13)
    assert np.allclose(m2 / (m - 1), ref_uvar, atol=1e-13)
    assert np.allclose(merge_reference(counts, means, variances)[1], ref_var, atol=1e-13)
    x = rng.normal(size=(10, 3))
    bn = GhostBatchNorm(3, 4, dtype=torch.float64)
    assert np.allclose(bn(torch.from_numpy(x)).detach().numpy(), ghost_reference(x, 4, np.ones(3), np.zeros(3), 1e-5),
                       atol=1e-12)


# ---- verdicts without holes: far from 0, in place, swapped, default eps ---------------------------------------
def test_merge_and_sync_stats_cases_sit_far_from_zero_with_a_constant_channel():
    merge = get_exercise("ch7_merge_mean_var").cases(np.random.default_rng(0))
    assert max(np.abs(c["means"]).max() for c in merge) > 5e5
    assert any(5e3 < np.abs(c["means"]).max() < 5e4 for c in merge)
    assert any((c["variances"] == 0).all(axis=0).any() for c in merge)
    sync = get_exercise("ch7_sync_stats").cases(np.random.default_rng(0))
    xs = [np.concatenate([c[f"x{r}"] for r in range(c["replicas"])]) for c in sync]
    assert max(np.abs(x).max() for x in xs) > 5e5 and any(5e3 < np.abs(x.mean()) < 5e4 for x in xs)
    assert any((np.ptp(x, axis=(0, 2, 3)) == 0).any() for x in xs)


def test_merge_unshifted_moments_lose_precision_far_from_zero():
    def moments(c, mu, v):                        # E[x**2] - mean**2: exact near 0, 4 to 8 digits short at 1e4, 1e6
        n = c[:, None]
        mean = (n * mu).sum(0) / n.sum()
        return mean, (n * (v + mu ** 2)).sum(0) / n.sum() - mean ** 2
    msg = check_fails("ch7_merge_mean_var", moments)
    assert msg.endswith(
        "var loses precision when the data sits far from 0 (here about 1e+04, with a spread of about 1): it is off "
        "by up to " + msg.split("off by up to ")[1].split(",")[0] + ", and the tolerance is rtol=1e-09, atol=1e-12. "
        "sum_r n_r (var_r + mean_r**2) / N - mean**2 subtracts two numbers near 1e+04**2 and keeps only the "
        "digits float64 has left; add the within-replica term sum_r n_r var_r and the between-replica term sum_r "
        "n_r (mean_r - mean)**2, which never square the offset"), msg


def test_sync_stats_sum_of_squares_loses_precision_far_from_zero():
    def sums_of_squares(shards):                  # what one all-reduce of (sum, sum of squares, count) gives
        m = sum(s.size // s.shape[1] for s in shards)
        s1 = sum(s.sum(axis=(0, 2, 3)) for s in shards)
        s2 = sum((s ** 2).sum(axis=(0, 2, 3)) for s in shards)
        mean = s1 / m
        var = s2 / m - mean ** 2
        return mean, var, var * m / (m - 1)
    assert_body(check_fails("ch7_sync_stats", sums_of_squares),
                "var loses precision when the data sits far from 0 (here about 1e+04, with a spread of about 1): it "
                "is off by up to {num}, and the tolerance is rtol=1e-09, atol=1e-12. sum(x**2) / m - mean**2 "
                "subtracts two numbers near 1e+04**2 and keeps only the digits float64 has left; let each replica "
                "send its count, mean and M2 (the sum of squared deviations from its OWN mean) and merge them with "
                "the between-replica term sum_r m_r (mean_r - mean)**2, which never squares the offset")


def test_ch7_in_place_mutation_is_named_in_every_exercise():
    def merge_in_place(c, mu, v):
        out = merge_mean_var(c, mu, v)
        v *= 1.0 + 0.0 * v + (v == v)             # doubles the caller's variances
        return out
    assert_body(check_fails("ch7_merge_mean_var", merge_in_place), in_place_message("variances"))

    def stats_in_place(shards):
        out = sync_batch_stats(shards)
        for s in shards:
            s -= out[0].reshape(1, -1, 1, 1)      # centres the caller's shards
        return out
    assert_body(check_fails("ch7_sync_stats", stats_in_place), in_place_message("shards[0], shards[1], shards[2]"))

    def backward_in_place(dy, xs, g, e):
        out = sync_bn_backward(dy, xs, g, e)
        dy[0] *= 0
        return out
    assert_body(check_fails("ch7_sync_backward", backward_in_place), in_place_message("dy_shards[0]"))

    def ghost_in_place(x, v, g, b, e):
        out = ghost_batch_norm(x, v, g, b, e)
        x[:] = out
        return out
    assert_body(check_fails("ch7_ghost_bn", ghost_in_place), in_place_message("x"))


def test_ch7_messages_outside_the_mistake_registry_word_for_word():
    from check_messages import assert_body
    assert_body(check_fails("ch7_merge_mean_var", lambda c, m, v: merge_mean_var(c, m, v)[0]),
                "merge_mean_var must return a tuple (mean, var); it returned a numpy.ndarray of shape (3,) and dtype "
                "float64")
    assert_body(check_fails("ch7_sync_stats", lambda s: sync_batch_stats(s)[:2]),
                "sync_batch_stats must return a tuple (mean, var, unbiased_var); it returned a tuple of length 2")

    def concatenated(dy, xs, g, e):
        dxs, dgamma, dbeta = sync_bn_backward(dy, xs, g, e)
        return np.concatenate(dxs), dgamma, dbeta
    assert_body(check_fails("ch7_sync_backward", concatenated),
                "dx_shards must be a list of 3 arrays, one per shard; it is a numpy.ndarray of shape (10, 3) and "
                "dtype float64")
    assert_body(check_fails("ch7_ghost_bn", lambda x, v, g, b, e: None),
                "ghost_batch_norm returned None: did you forget a return statement?")


# ---- predict, then run: the bias of one replica's variance -----------------------------------------------------
def test_predict_local_variance_truth_is_what_sampling_gives():
    from bncourse.checks.ch7_devices import PredictLocalVariance
    n = 8
    assert PredictLocalVariance.truth == (n - 1) / n == 0.875
    # exact: E[biased var] = sigma^2 * (n - 1) / n; and by simulation (sd of the mean about 5e-4 here)
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(50_000, 4, n))
    assert abs(x.var(axis=2).mean() / 9.0 - 0.875) < 0.005


def test_predict_local_variance_verdicts_word_for_word():
    for ok in (0.875, 7 / 8, 0.866, 0.884, np.float32(0.88), torch.tensor([0.87]), np.array(0.875)):
        check("ch7_predict_local_variance", ok, quiet=True)
    with pytest.raises(NotImplementedError):
        check("ch7_predict_local_variance", None)
    near = {
        1.0: "each replica's biased variance is measured around its OWN mean, which sits closer to its 8 values than "
             "the population mean does; on average it falls short of the population variance",
        0.96875: "(m - 1) / m with m = 32 is the bias of the variance of the whole synchronized batch; without "
                 "synchronization each replica divides by its own 8 examples",
        8 / 7: "8 / 7 is Bessel's correction, the factor that REMOVES the bias; the biased variance itself is too "
               "small on average, not too large",
        0.25: "the replicas do not share out the variance: each draws its examples from the same distribution, so "
              "only the count on one replica matters, not the number of replicas",
    }
    for value, why in near.items():
        assert_body(check_fails("ch7_predict_local_variance", value),
                    f"the predicted ratio = {value:g} is outside the accepted range: {why}")
    assert_body(check_fails("ch7_predict_local_variance", 0.5),
                "the predicted ratio = 0.5 is too low (accepted within ±0.01 of the answer); reason it through again "
                "(hint('ch7_predict_local_variance')), then run the experiment below")
    assert_body(check_fails("ch7_predict_local_variance", "0.875"), "the prediction must be a number; you gave a str "
                "('0.875')")


# ---- debugging: the synchronized forward without the between-replica term -----------------------------------
def test_debug_sync_forward_reference_is_batch_norm_of_the_concatenation():
    from bncourse.checks.ch7_devices import sync_forward_reference
    rng = np.random.default_rng(0)
    xs = [rng.normal(r, 1.0, size=(n, 3)) for r, n in enumerate((3, 1, 4))]
    g, b = rng.uniform(0.5, 2, size=3), rng.normal(size=3)
    want = np.concatenate(sync_bn_forward(xs, g, b, 1e-3))
    assert np.allclose(np.concatenate(sync_forward_reference(xs, g, b, 1e-3)), want, atol=1e-12)


def test_debug_sync_forward_cases_make_every_mistake_visible():
    """Shifted replicas (the between term is large), unequal counts, an eps that matters, a one-example shard."""
    from bncourse.checks.ch7_devices import DebugSyncForward, sync_forward_reference
    ex = DebugSyncForward()
    cases = ex.cases(np.random.default_rng(0))
    assert any(len({c[f"x{r}"].shape[0] for r in range(c["replicas"])}) > 1 for c in cases)
    assert any(c[f"x{r}"].shape[0] == 1 for c in cases for r in range(c["replicas"]))
    for m in ex.mistakes:
        worst = max(np.abs(m.wrong(c)["out0"] - sync_forward_reference(
            [c[f"x{r}"] for r in range(c["replicas"])], c["gamma"], c["beta"], c["eps"])[0]).max() for c in cases)
        assert worst > 1e-3, m.id


def test_debug_sync_forward_messages_outside_the_registry_word_for_word():
    assert_body(check_fails("ch7_debug_sync_forward", lambda xs, g, b, e: np.concatenate(sync_bn_forward(xs, g, b, e))),
                "sync_bn_forward must return a list of 3 arrays, one per shard; it returned a numpy.ndarray of shape "
                "(10, 3) and dtype float64")

    def in_place(xs, g, b, e):
        out = sync_bn_forward(xs, g, b, e)
        xs[0] *= 2.0
        return out
    assert_body(check_fails("ch7_debug_sync_forward", in_place), in_place_message("x_shards[0]"))
