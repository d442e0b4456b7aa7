"""Chapter 5 self-checks: independent right answers pass, and every message that is not a declared mistake is asserted
word for word. Each declared mistake has its wrong implementation, written from scratch, in tests/mistakes_ch5.py
(checked word for word by tests/test_mistake_registry.py)."""
import numpy as np
import pytest
import torch
from torch import nn

from bncourse.checks import REGISTRY, check
from check_helpers import check_fails
from check_messages import assert_body, in_place as in_place_message, message_body


# ---------------------------------------------------------------- reference solutions (independent code)
def spatial_forward(x, gamma, beta, eps=1e-5, axes=(0, 2, 3), ddof=0, gamma_shape=(1, -1, 1, 1)):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, ddof=ddof, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma.reshape(gamma_shape) * x_hat + beta.reshape(gamma_shape), None


def spatial_backward(dout, x, gamma, eps=1e-5):
    # autograd through hand-written torch operations (check() forbids torch's own batch_norm in answers)
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.zeros_like(gt, requires_grad=True)
    mu = xt.mean(dim=(0, 2, 3), keepdim=True)
    var = ((xt - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    out = gt.reshape(1, -1, 1, 1) * (xt - mu) / torch.sqrt(var + eps) + bt.reshape(1, -1, 1, 1)
    out.backward(torch.tensor(dout))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


class BatchNorm2d(nn.Module):
    """Written out (check() forbids wrapping torch.nn.BatchNorm2d); compared with it in a test below."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        shape = (1, -1, 1, 1)
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            m = x.numel() // x.shape[1]
            with torch.no_grad():
                self.num_batches_tracked += 1
                w = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, w)
                self.running_var.lerp_(var * m / (m - 1), w)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)


def fold_conv(weight, bias, gamma, beta, mean, var, eps):
    scale = gamma / np.sqrt(var + eps)
    return weight * scale[:, None, None, None], scale * (bias - mean) + beta


def test_hand_written_references_match_torch():
    torch.manual_seed(0)
    for momentum in (0.2, None):                          # None: the cumulative average
        ours, theirs = BatchNorm2d(3, eps=1e-3, momentum=momentum), nn.BatchNorm2d(3, eps=1e-3, momentum=momentum)
        for _ in range(3):
            x = torch.randn(4, 3, 5, 6) * 2 + 1
            assert torch.allclose(ours(x), theirs(x), atol=1e-5)
        assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-6)
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-6)
        assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 3
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 5, 6)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    rng = np.random.default_rng(0)
    x, dout, gamma = rng.normal(size=(3, 2, 4, 5)), rng.normal(size=(3, 2, 4, 5)), rng.normal(size=2)
    xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(gamma, requires_grad=True)
    nn.functional.batch_norm(xt, None, None, gt, None, training=True, eps=0.1).backward(torch.tensor(dout))
    dx, dgamma, _ = spatial_backward(dout, x, gamma, 0.1)
    assert np.allclose(dx, xt.grad.numpy(), atol=1e-12) and np.allclose(dgamma, gt.grad.numpy(), atol=1e-12)


REFERENCES = {"ch5_spatial_forward": spatial_forward, "ch5_spatial_backward": spatial_backward,
              "ch5_batchnorm2d": BatchNorm2d, "ch5_fold_conv": fold_conv}


def test_all_registered():
    assert set(REFERENCES) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    check(name, REFERENCES[name])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes_fresh_seeds(name):
    for seed in (1, 2):
        check(name, REFERENCES[name], seed=seed, quiet=True)


def test_fold_reference_matches_conv_then_bn():
    # the checker's own reference against an actual conv -> BN in eval mode
    from bncourse.checks.ch5_cnn import fold_reference
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    g, be, m, v = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    wf, bf = fold_reference(w, b, g, be, m, v, 1e-5)
    x = torch.from_numpy(rng.normal(size=(2, 2, 6, 6)))
    y = nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b))
    y = nn.functional.batch_norm(y, torch.from_numpy(m), torch.from_numpy(v), torch.from_numpy(g),
                                 torch.from_numpy(be), training=False, eps=1e-5)
    assert torch.allclose(nn.functional.conv2d(x, torch.from_numpy(wf), torch.from_numpy(bf)), y, atol=1e-10)


_fails = check_fails


# ---------------------------------------------------------------- spatial forward


GAMMA_AXIS = ("gamma and beta have shape (C,) and must broadcast along the channel axis 1: reshape them to "
              "(1, C, 1, 1); as (C,) they broadcast along the last axis W (NumPy said: operands could not be broadcast "
              "together with shapes ")


def test_forward_gamma_broadcast_over_wrong_axis():
    # gamma of shape (C,) broadcast along W: an error on the first case (W != C), which run names before any verify
    msg = _fails("ch5_spatial_forward", lambda x, g, b, eps: spatial_forward(x, g, b, eps, gamma_shape=(-1,)))
    assert msg.split("]: ", 1)[1].startswith(GAMMA_AXIS), msg


# ---------------------------------------------------------------- spatial backward


# ---------------------------------------------------------------- BatchNorm2d module
def test_module_cases_hold_momentum_none_and_a_channel_of_small_spread():
    cases = REGISTRY["ch5_batchnorm2d"]().cases(np.random.default_rng(0))
    assert [c["momentum"] for c in cases].count(None) == 1
    assert any(c["x1"][:, 0].std() < 0.05 and c["eps"] == 0.1 for c in cases)
    assert REGISTRY["ch5_batchnorm2d"].count_batches and not REGISTRY["ch5_debug_bn2d"].count_batches
    assert None not in [c["momentum"] for c in REGISTRY["ch5_debug_bn2d"]().cases(np.random.default_rng(0))]


def test_module_not_a_module():
    _fails("ch5_batchnorm2d", lambda c, eps, momentum: object(), "torch.nn.Module")


# ---------------------------------------------------------------- folding
def _fold(axis_ok=True, mean_ok=True, scale_bias=True):
    def fn(weight, bias, gamma, beta, mean, var, eps):
        a = gamma / np.sqrt(var + eps)
        w = weight * (a.reshape(-1, 1, 1, 1) if axis_ok else a.reshape(1, -1, 1, 1))
        if not mean_ok:
            return w, a * bias + beta
        if not scale_bias:
            return w, bias - a * mean + beta
        return w, a * (bias - mean) + beta
    return fn


def test_fold_wrong_axis():
    # an error on the cases with C_out != C_in, which run names before any case is verified
    msg = _fails("ch5_fold_conv", _fold(axis_ok=False))
    assert msg.split("]: ", 1)[1].startswith(
        "the per-channel factor a = gamma / sqrt(running_var + eps) has shape (C_out,); scale output channel k (axis 0 "
        "of the kernel): weight * a.reshape(-1, 1, 1, 1) (NumPy said: operands could not be broadcast together with "
        "shapes "), msg


def test_fold_returns_tensors():
    def torchy(weight, bias, *rest):
        w, b = _fold()(weight, bias, *rest)
        return torch.from_numpy(w), torch.from_numpy(b)
    _fails("ch5_fold_conv", torchy, "torch.Tensor")


# ---------------------------------------------------------------- holes closed for issue 11


class _Tracked(BatchNorm2d):
    """The debugging exercise's planted bug: the running update recorded by autograd."""

    def forward(self, x):
        shape = (1, -1, 1, 1)
        if not self.training:
            return super().forward(x)
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        m = x.numel() // x.shape[1]
        self.num_batches_tracked += 1
        w = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean = (1 - w) * self.running_mean + w * mean
        self.running_var = (1 - w) * self.running_var + w * var * m / (m - 1)
        x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        return self.weight.reshape(shape) * x_hat + self.bias.reshape(shape)


RUNNING_STATS_GRAD = (
    "after a training step, running_mean or running_var requires grad (it has a grad_fn): the running statistics were "
    "computed from the batch mean and variance WITH gradient tracking, so every step chains the buffers to the "
    "previous step's graph (memory grows, and an eval-mode backward fails with 'Trying to backward through the graph "
    "a second time'). Update them under torch.no_grad() (or from .detach()ed statistics), in place")


def test_module_running_update_under_grad_is_named_in_both_exercises():
    for name in ("ch5_batchnorm2d", "ch5_debug_bn2d"):
        assert_body(_fails(name, _Tracked), RUNNING_STATS_GRAD)


def test_debug_bn2d_accepts_the_fixes():
    class Detached(_Tracked):                                       # fixed with .detach() instead of no_grad
        def forward(self, x):
            out = super().forward(x)
            if self.training:
                self.running_mean = self.running_mean.detach()
                self.running_var = self.running_var.detach()
            return out
    for fixed in (BatchNorm2d, Detached):
        check("ch5_debug_bn2d", fixed, quiet=True)
        check("ch5_debug_bn2d", fixed, seed=3, quiet=True)


def test_module_view_on_a_non_contiguous_input_is_named():
    class Viewer(BatchNorm2d):
        def forward(self, x):
            n, c = x.shape[:2]
            flat = x.view(n, c, -1)                                  # fails on the transposed case
            mean, var = flat.mean(dim=(0, 2)), flat.var(dim=(0, 2), unbiased=False)
            if self.training:
                m = flat.shape[0] * flat.shape[2]
                with torch.no_grad():
                    self.running_mean.lerp_(mean, self.momentum)
                    self.running_var.lerp_(var * m / (m - 1), self.momentum)
            else:
                mean, var = self.running_mean, self.running_var
            shape = (1, -1, 1, 1)
            return self.weight.reshape(shape) * (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps) \
                + self.bias.reshape(shape)
    msg = _fails("ch5_batchnorm2d", Viewer)
    assert message_body(msg).startswith(
        "your forward calls .view on an input that is not contiguous in memory (this case passes a transposed tensor, "
        "as a permute or channels_last gives you): .view only re-labels memory that is laid out in order; use "
        ".reshape(...) (or .contiguous().view(...)) (PyTorch said: "), msg


# ---------------------------------------------------------------- eval-mode backward
def eval_backward(dout, x, gamma, running_mean, running_var, eps):
    # autograd through the eval-mode forward, statistics as constants
    xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(gamma, requires_grad=True)
    bt = torch.zeros_like(gt, requires_grad=True)
    out = nn.functional.batch_norm(xt, torch.tensor(running_mean), torch.tensor(running_var), gt, bt,
                                   training=False, eps=eps)
    out.backward(torch.tensor(dout))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def test_eval_backward_checker_reference_is_autograd():
    from bncourse.checks.ch5_cnn import eval_backward_reference
    for case in REGISTRY["ch5_eval_backward"]().cases(np.random.default_rng(0)):
        args = [case[k] for k in ("dout", "x", "gamma", "running_mean", "running_var", "eps")]
        for a, b in zip(eval_backward(*args), eval_backward_reference(*args)):
            assert np.allclose(a, b, rtol=1e-10, atol=1e-12)


def _eval_bwd(dout, x, gamma, rm, rv, eps):
    shape = (1, -1, 1, 1)
    inv = 1 / np.sqrt(rv + eps)
    xh = (x - rm.reshape(shape)) * inv.reshape(shape)
    return dout * (gamma * inv).reshape(shape), (dout * xh).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


def test_eval_backward_accepts_numpy_answers():
    for seed in (None, 1, 2):
        check("ch5_eval_backward", _eval_bwd, seed=seed, quiet=True)


# ---------------------------------------------------------------- prediction: the conv bias before BN
def test_predict_bias_truth_is_what_torch_does():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 3).double(), nn.BatchNorm2d(3).double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        before = bn(conv(x))
        conv.bias += 5.0
        after = bn(conv(x))
    from bncourse.checks.ch5_cnn import PredictBias
    assert (after - before).abs().max().item() < 1e-12 and PredictBias.truth == 0.0


def test_ch5_every_exercise_has_a_hint_ladder():
    for name in [n for n in REGISTRY if n.startswith("ch5_")]:
        hints = REGISTRY[name].hints
        assert 2 <= len(hints) <= 4, name
        assert all(isinstance(h, str) and len(h) > 20 for h in hints), name


def test_in_place_mutation_is_named_in_every_ch5_function_exercise():
    def forward_in_place(x, gamma, beta, eps):
        x -= x.mean(axis=(0, 2, 3), keepdims=True)
        return spatial_forward(x, gamma, beta, eps)
    assert_body(_fails("ch5_spatial_forward", forward_in_place), in_place_message("x"))

    def backward_in_place(dout, x, gamma, eps):
        out = spatial_backward(dout, x, gamma, eps)
        dout *= 0
        return out
    assert_body(_fails("ch5_spatial_backward", backward_in_place), in_place_message("dout"))

    def fold_in_place(weight, bias, gamma, beta, mean, var, eps):
        w, b = fold_conv(weight, bias, gamma, beta, mean, var, eps)
        weight[...] = w
        return weight, b
    assert_body(_fails("ch5_fold_conv", fold_in_place), in_place_message("weight"))

    def eval_in_place(dout, x, gamma, rm, rv, eps):
        out = _eval_bwd(dout, x, gamma, rm, rv, eps)
        rv += eps
        return out
    assert_body(_fails("ch5_eval_backward", eval_in_place), in_place_message("running_var"))


def test_fold_conv_constant_channel_needs_eps(recwarn):
    cases = REGISTRY["ch5_fold_conv"]().cases(np.random.default_rng(0))
    assert any((c["running_var"] == 0).any() for c in cases)
    _fails("ch5_fold_conv", _fold_no_eps, "eps is missing")
    check("ch5_fold_conv", fold_conv, quiet=True)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def _fold_no_eps(weight, bias, gamma, beta, mean, var, eps):
    with np.errstate(divide="ignore", invalid="ignore"):
        return fold_conv(weight, bias, gamma, beta, mean, var, 0.0)


def test_eval_backward_gamma_along_the_last_axis_is_named_by_run():
    def gamma_last_axis(d, x, g, rm, rv, eps):
        return (d * g / np.sqrt(rv + eps),) + _eval_bwd(d, x, g, rm, rv, eps)[1:]
    msg = _fails("ch5_eval_backward", gamma_last_axis)
    assert msg.split("]: ", 1)[1].startswith(GAMMA_AXIS), msg


def test_fold_conv_constant_channel_guarded_to_zero_is_rejected():
    # "a constant channel carries no information": a = 0 where running_var == 0. On an input equal to the training
    # constant the folded layer would even give the right output (beta); the check compares the kernel itself.
    def guarded(weight, bias, gamma, beta, mean, var, eps):
        a = np.where(var > 0, gamma / np.sqrt(var + eps), 0.0)
        return weight * a[:, None, None, None], a * (bias - mean) + beta
    msg = _fails("ch5_fold_conv", guarded)
    assert "case 4 of 4" in msg and "folded_weight has wrong values: " in msg, msg


# ---------------------------------------------------------------- messages outside the Mistake registry, word for word
def test_ch5_messages_outside_the_mistake_registry_word_for_word():
    from check_messages import assert_body
    assert_body(_fails("ch5_spatial_forward", lambda x, g, b, eps: spatial_forward(x, g, b, eps)[0]),
                "spatial_batchnorm_forward must return a tuple (out, cache); it returned a numpy.ndarray of shape "
                "(4, 3, 5, 6) and dtype float64")
    assert_body(_fails("ch5_spatial_backward", lambda d, x, g, eps: spatial_backward(d, x, g, eps)[:2]),
                "spatial_batchnorm_backward must return a tuple (dx, dgamma, dbeta); it returned a tuple of length 2")
    assert_body(_fails("ch5_eval_backward", lambda d, x, g, rm, rv, eps: None),
                "eval_batchnorm_backward must return a tuple (dx, dgamma, dbeta); it returned None")
    assert_body(_fails("ch5_fold_conv", lambda w, b, g, be, m, v, eps: fold_conv(w, b, g, be, m, v, eps)[0]),
                "fold_bn_into_conv must return a tuple (folded_weight, folded_bias); it returned a numpy.ndarray of "
                "shape (3, 3, 3, 3) and dtype float64")
    assert_body(_fails("ch5_predict_bias", 5),
                "the predicted largest change = 5 is outside the accepted range: BN subtracts each channel's batch "
                "mean, and adding 5 to every value of a channel moves that mean by exactly 5 too; the variance does "
                "not move at all")
    assert_body(_fails("ch5_predict_bias", 2.5),
                "the predicted largest change = 2.5 is outside the accepted range: gamma multiplies x_hat, but look "
                "at x_hat first: (x + 5) - mean(x + 5) = x - mean(x)")
    assert_body(_fails("ch5_predict_bias", 50),
                "the predicted largest change = 50 is too high (accepted within ±0.01 of the answer); reason it "
                "through again (hint('ch5_predict_bias')), then run the experiment below")


def test_module_without_momentum_none_is_named():
    class MomentumOnly(BatchNorm2d):                         # ignores the momentum=None case
        def forward(self, x):
            if self.training and self.momentum is None:
                return 1 - self.momentum                     # what (1 - momentum) * running does with None
            return super().forward(x)
    msg = _fails("ch5_batchnorm2d", MomentumOnly)
    assert "case 3 of 3" in msg and "momentum=None" in msg, msg
    assert message_body(msg).startswith(
        "with momentum=None your module computes with None: PyTorch then keeps the plain average of all training "
        "batches so far, so the weight of the new batch is w = 1 / num_batches_tracked (count the batch first); "
        "running = (1 - w) * running + w * batch_stat (Python said: unsupported operand type(s) for -: 'int' and "
        "'NoneType')"), msg
    check("ch5_debug_bn2d", MomentumOnly, quiet=True)       # the debugging exercise has no momentum=None case


def test_predict_bias_accepts_any_number_within_the_tolerance():
    for ok in (0, 0.0, 0.01, -0.005, np.float32(0.0), torch.tensor(0.0)):
        check("ch5_predict_bias", ok, quiet=True)
    with pytest.raises(NotImplementedError):
        check("ch5_predict_bias", None)
