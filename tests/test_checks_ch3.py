"""Chapter 3 self-checks beyond the chapter's cells (issue 11): derivations, predictions, debugging, and the holes
closed in the existing exercises. The framework's and the original ch3 tests are in tests/test_checks.py.

Every wrong implementation is written here from scratch, not with the checker's helpers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bncourse.checks import REGISTRY, check
from check_helpers import check_fails as _fails


# ---------------------------------------------------------------- independent references
def stat_grads_autograd(dout, x, gamma, eps=1e-5):
    """dL/dmu and dL/dvar by autograd, with mu and var as leaves of the graph (float64)."""
    xt = torch.from_numpy(x)
    mu = xt.mean(0).clone().requires_grad_(True)
    var = ((xt - xt.mean(0)) ** 2).mean(0).clone().requires_grad_(True)
    out = torch.from_numpy(gamma) * (xt - mu) / torch.sqrt(var + eps)
    out.backward(torch.from_numpy(dout))
    return mu.grad.numpy(), var.grad.numpy()


def merge_by_concatenation_free_formula(mean_a, var_a, n_a, mean_b, var_b, n_b):
    # Welford/Chan in the "M2" form: sums of squared deviations, then divide
    m2 = var_a * n_a + var_b * n_b + (mean_b - mean_a) ** 2 * n_a * n_b / (n_a + n_b)
    return (mean_a * n_a + mean_b * n_b) / (n_a + n_b), m2 / (n_a + n_b)


# ---------------------------------------------------------------- ch3_bn_stat_grads (derive)
def test_stat_grads_autograd_reference_passes():
    check("ch3_bn_stat_grads", stat_grads_autograd, quiet=True)
    for seed in (1, 2, 3):
        check("ch3_bn_stat_grads", stat_grads_autograd, seed=seed, quiet=True)


def _sg(dout, x, gamma, eps, *, gamma_on=True, power=-1.5, half=-0.5, sign=1.0, eps_used=None, swap=False,
        dmu_div_n=False, dmu_no_std=False):
    e = eps if eps_used is None else eps_used
    xc = x - x.mean(0)
    var = x.var(0)
    g = dout * gamma if gamma_on else dout
    dvar = sign * half * (g * xc).sum(0) * (var + e) ** power
    dmu = -g.sum(0) if dmu_no_std else -g.sum(0) / np.sqrt(var + e)
    if dmu_div_n:
        dmu = dmu / x.shape[0]
    return (dvar, dmu) if swap else (dmu, dvar)


@pytest.mark.parametrize("kwargs, expected", [
    ({"swap": True}, "dmu and dvar are swapped"),
    ({"gamma_on": False}, "forgets gamma"),
    ({"power": -0.5}, "exponent of (var + eps) is wrong"),
    ({"half": 1.0}, "factor -1/2"),
    ({"sign": -1.0}, "sign of dvar is flipped"),
    ({"eps_used": 1e-5}, "ignores the eps"),
    ({"dmu_div_n": True}, "dmu was divided by N"),
    ({"dmu_no_std": True}, "missing the division by sqrt(var + eps)"),
])
def test_stat_grads_mistakes(kwargs, expected):
    _fails("ch3_bn_stat_grads", lambda d, x, g, eps=1e-5: _sg(d, x, g, eps, **kwargs), expected)


def test_stat_grads_unsummed_and_tuple():
    def unsummed(dout, x, gamma, eps=1e-5):
        xc = x - x.mean(0)
        return -(dout * gamma).sum(0) / np.sqrt(x.var(0) + eps), -0.5 * dout * gamma * xc * (x.var(0) + eps) ** -1.5
    _fails("ch3_bn_stat_grads", unsummed, "not summed over the batch")
    _fails("ch3_bn_stat_grads", lambda d, x, g, eps=1e-5: _sg(d, x, g, eps)[0], "must return a tuple (dmu, dvar)")


# ---------------------------------------------------------------- ch3_merge_stats (derive)
def test_merge_stats_accepts_chan_and_concatenation_free_forms():
    check("ch3_merge_stats", merge_by_concatenation_free_formula, quiet=True)
    for seed in range(1, 11):
        check("ch3_merge_stats", merge_by_concatenation_free_formula, seed=seed, quiet=True)
    check("ch3_merge_stats", lambda *a: tuple(torch.from_numpy(v) for v in merge_by_concatenation_free_formula(*a)),
          quiet=True)                                   # torch tensors are converted


def test_merge_stats_one_pass_is_rejected_with_a_precision_message():
    def through_second_moments(mean_a, var_a, n_a, mean_b, var_b, n_b):
        n = n_a + n_b
        mean = (n_a * mean_a + n_b * mean_b) / n
        ex2 = (n_a * (var_a + mean_a ** 2) + n_b * (var_b + mean_b ** 2)) / n
        return mean, ex2 - mean ** 2
    _fails("ch3_merge_stats", through_second_moments, "Precision is the point", "E[x^2] - mean^2")


@pytest.mark.parametrize("wrong, expected", [
    (lambda ma, va, na, mb, vb, nb: ((ma + mb) / 2, merge_by_concatenation_free_formula(ma, va, na, mb, vb, nb)[1]),
     "weights the parts equally"),
    (lambda ma, va, na, mb, vb, nb: ((na * ma + nb * mb) / (na + nb), (na * va + nb * vb) / (na + nb)),
     "missing the spread BETWEEN"),
    (lambda ma, va, na, mb, vb, nb: ((na * ma + nb * mb) / (na + nb), (va + vb) / 2),
     "spread"),
    (lambda ma, va, na, mb, vb, nb: (merge_by_concatenation_free_formula(ma, va, na, mb, vb, nb)[0],
                                     merge_by_concatenation_free_formula(ma, va, na, mb, vb, nb)[1] * (na + nb)
                                     / (na + nb - 1)), "unbiased variance"),
])
def test_merge_stats_mistakes(wrong, expected):
    _fails("ch3_merge_stats", wrong, expected)


# ---------------------------------------------------------------- predictions
def test_predict_eps():
    truth = 0.002 / np.sqrt(4e-6 + 1e-5)
    for right in (truth, 0.53, 0.54, np.float32(0.5345)):
        check("ch3_predict_eps", right, quiet=True)
    for wrong, expected in [(1.0, "eps is negligible"), (0.632, "with the variance in it too"),
                            (0.2857, "ratio of variances"),
                            (0.45, "too low"), (0.7, "too high")]:
        _fails("ch3_predict_eps", wrong, expected)
    with pytest.raises(NotImplementedError):
        check("ch3_predict_eps", None)


def test_predict_eps_truth_is_measured():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 1))
    x = (x - x.mean()) / x.std() * 0.002
    out = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True, eps=1e-5)
    assert abs(out.std(unbiased=False).item() - REGISTRY["ch3_predict_eps"].truth) < 1e-9


def test_predict_scale():
    for right in (0.1, 0.098, torch.tensor(0.1)):
        check("ch3_predict_scale", right, quiet=True)
    for wrong, expected in [(1.0, "the OUTPUT does not change"), (10.0, "shrinks, it does not grow"),
                            (0.01, "one factor 1/10"), (0.5, "too high")]:
        _fails("ch3_predict_scale", wrong, expected)
    _fails("ch3_predict_scale", [0.1], "commit one number")


def test_predict_scale_truth_is_measured_with_torch_batchnorm():
    torch.manual_seed(0)
    u, W0 = torch.randn(32, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    bn = nn.BatchNorm1d(4, eps=1e-12).double()
    norms = []
    for a in (1.0, 10.0):
        W = (a * W0).requires_grad_(True)
        (bn(u @ W.T) ** 3).sum().backward()
        norms.append(W.grad.norm().item())
    assert abs(norms[1] / norms[0] - REGISTRY["ch3_predict_scale"].truth) < 1e-6


# ---------------------------------------------------------------- ch3_debug_running_stats (debug) and bn_module
class FixedBN(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 leak=False):
        super().__init__()
        self.eps, self.momentum, self.affine, self.leak = eps, momentum, affine, leak
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features) if track_running_stats else None)
        self.register_buffer("running_var", torch.ones(num_features) if track_running_stats else None)
        self.register_buffer("num_batches_tracked", torch.tensor(0) if track_running_stats else None)

    def forward(self, x):
        if self.training or self.running_mean is None:
            mu, var = x.mean(0), ((x - x.mean(0)) ** 2).mean(0)
            if self.training and self.running_mean is not None:
                self.num_batches_tracked += 1
                n = x.shape[0]
                m = 1 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
                if self.leak:                                    # the planted bug: the update is recorded
                    self.running_mean = self.running_mean * (1 - m) + mu * m
                    self.running_var = self.running_var * (1 - m) + var * (n / (n - 1)) * m
                else:
                    with torch.no_grad():
                        self.running_mean.copy_(self.running_mean * (1 - m) + mu * m)
                        self.running_var.copy_(self.running_var * (1 - m) + var * (n / (n - 1)) * m)
        else:
            mu, var = self.running_mean, self.running_var
        y = (x - mu) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


class LeakyBN(FixedBN):
    def __init__(self, *a, **k):
        super().__init__(*a, leak=True, **k)


def test_debug_running_stats_accepts_the_fix_and_torch():
    check("ch3_debug_running_stats", FixedBN, quiet=True)
    check("ch3_debug_running_stats", nn.BatchNorm1d, quiet=True, allow_references=True)
    for seed in (1, 2, 3):
        check("ch3_debug_running_stats", FixedBN, seed=seed, quiet=True)


@pytest.mark.parametrize("name", ["ch3_debug_running_stats", "bn_module"])
def test_running_stats_tracking_grad_is_caught_in_both_module_exercises(name):
    _fails(name, LeakyBN, "requires grad", "torch.no_grad()")


def test_leaky_running_stats_really_break_an_eval_backward():
    """The message's claim: the graph chain makes an eval-mode backward fail."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), LeakyBN(3))
    for _ in range(2):
        net(torch.randn(8, 4)).pow(2).mean().backward()
    assert net[1].running_mean.grad_fn is not None
    net.eval()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        net(torch.randn(5, 4)).pow(2).mean().backward()


# ---------------------------------------------------------------- eps that the code ignores
def _forward_fixed_eps(x, gamma, beta, eps=1e-5):
    mu = x.mean(0)
    return gamma * (x - mu) / np.sqrt(((x - mu) ** 2).mean(0) + 1e-5) + beta, {}


def _backward_fixed_eps(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    inv = 1 / np.sqrt(x.var(0) + 1e-5)                            # eps passed in is never used
    xh = (x - x.mean(0)) * inv
    g = dout * gamma
    return inv / n * (n * g - g.sum(0) - xh * (g * xh).sum(0)), (dout * xh).sum(0), dout.sum(0)


def test_an_ignored_eps_is_named_in_forward_and_backward():
    _fails("bn_forward", _forward_fixed_eps, "ignores the eps it is given")
    _fails("bn_backward", _backward_fixed_eps, "instead of the eps it is given")
    _fails("bn_backward_staged", _backward_fixed_eps, "eps")


# ---------------------------------------------------------------- hints
@pytest.mark.parametrize("name", ["bn_forward", "bn_backward_staged", "bn_backward", "bn_module", "ch3_bn_stat_grads",
                                  "ch3_merge_stats", "ch3_predict_eps", "ch3_predict_scale",
                                  "ch3_debug_running_stats"])
def test_every_ch3_exercise_has_a_hint_ladder(name):
    ladder = REGISTRY[name].hints
    assert 2 <= len(ladder) <= 4
    assert all(isinstance(h, str) and len(h) > 20 and "def " not in h and "import " not in h for h in ladder)


# ---------------------------------------------------------------- in-place changes of the caller's arrays
def _backward_then_vandal(dout, x, gamma, eps=1e-5):
    n = x.shape[0]
    inv = 1 / np.sqrt(x.var(0) + eps)
    xh = (x - x.mean(0)) * inv
    g = dout * gamma
    res = inv / n * (n * g - g.sum(0) - xh * (g * xh).sum(0)), (dout * xh).sum(0), dout.sum(0)
    x -= x.mean(0)                                             # "harmless" clean-up that writes into the caller's x
    return res


@pytest.mark.parametrize("name", ["bn_backward", "bn_backward_staged"])
def test_backward_that_changes_x_in_place_is_named(name):
    _fails(name, _backward_then_vandal, "changed its input(s) x in place")


def test_stat_grads_and_merge_that_change_inputs_are_named():
    def sg_vandal(dout, x, gamma, eps=1e-5):
        res = stat_grads_autograd(dout, x, gamma, eps)
        dout *= 2
        return res
    _fails("ch3_bn_stat_grads", sg_vandal, "changed its input(s) dout in place")

    def merge_vandal(mean_a, var_a, n_a, mean_b, var_b, n_b):
        res = merge_by_concatenation_free_formula(mean_a.copy(), var_a, n_a, mean_b, var_b, n_b)
        mean_a -= 1.0
        return res
    _fails("ch3_merge_stats", merge_vandal, "changed its input(s) mean_a in place")


def test_bn_module_gets_a_non_contiguous_batch():
    class ViewBN(FixedBN):
        def forward(self, x):
            return super().forward(x.view(-1).view(x.shape))       # .view needs a contiguous tensor
    msg = _fails("bn_module", ViewBN)
    assert msg.split("]: ", 1)[1].startswith(
        "your forward calls .view on an input that is not contiguous in memory (this case passes a transposed "
        "tensor, as a permute or channels_last gives you): .view only re-labels memory that is laid out in order; "
        "use .reshape(...) (or .contiguous().view(...)) (PyTorch said: "), msg
    check("bn_module", FixedBN, quiet=True)


def test_bn_module_that_changes_its_input_in_place_is_named():
    class SubInPlace(FixedBN):                  # x -= mean on the leaf input: autograd refuses, the message says why
        def forward(self, x):
            if self.training:
                x -= x.mean(0).detach()
            return super().forward(x)
    msg = _fails("bn_module", SubInPlace)
    assert msg.split("]: ", 1)[1].startswith(
        "your forward changes its input x in place (x -= mean, x.sub_(...) or a slice assignment): the caller's "
        "tensor must stay as it was, and autograd refuses to change a tensor that requires grad; compute new "
        "tensors (x - mean) (PyTorch said: "), msg

    class SubInPlaceInEval(FixedBN):             # in eval mode (no grad) the caller's batch itself is changed
        def forward(self, x):
            out = super().forward(x)
            if not self.training:
                with torch.no_grad():
                    x.mul_(2.0)
            return out
    msg = _fails("bn_module", SubInPlaceInEval)
    assert msg.endswith(
        "]: your module changed its input(s) x in place (an in-place operator such as -= or /=, a slice "
        "assignment, or a torch method ending in _ such as sub_, on an argument); the caller's arrays must stay "
        "as they were: compute into new arrays"), msg
