"""Chapter 6 self-checks: independent right answers pass, and every message that is not a declared mistake is asserted
word for word. Each declared mistake has its wrong implementation, written from scratch, in tests/mistakes_ch6.py
(checked word for word by tests/test_mistake_registry.py)."""
import numpy as np
import pytest
import torch

from bncourse.checks import REGISTRY, check
from check_helpers import check_fails
from check_messages import assert_body, in_place as in_place_message


def group_norm_torch(x, num_groups, gamma, beta, eps):
    out = torch.nn.functional.group_norm(torch.from_numpy(x), num_groups, torch.from_numpy(gamma),
                                         torch.from_numpy(beta), eps)
    return out.numpy()


def group_norm(x, G, gamma, beta, eps, grouping="consecutive", axes=(2, 3, 4), ddof=0, affine_shape=(1, -1, 1, 1)):
    n, c, h, w = x.shape
    if grouping == "consecutive":
        xg = x.reshape(n, G, c // G, h, w)
    else:
        xg = x.reshape(n, c // G, G, h, w)
        axes = (1, 3, 4)
    mu = xg.mean(axis=axes, keepdims=True)
    var = xg.var(axis=axes, ddof=ddof, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    return x_hat * gamma.reshape(affine_shape) + beta.reshape(affine_shape)


def test_registered():
    assert "ch6_group_norm" in REGISTRY


def test_reference_passes(capsys):
    check("ch6_group_norm", group_norm)
    assert "✓" in capsys.readouterr().out
    for seed in (1, 2):
        check("ch6_group_norm", group_norm, seed=seed, quiet=True)


def test_checker_reference_matches_torch():
    from bncourse.checks.ch6_beyond import group_norm_reference
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 3, 4))
    g, b = rng.normal(size=6), rng.normal(size=6)
    for G in (1, 2, 3, 6):
        assert np.allclose(group_norm_reference(x, G, g, b, 1e-5), group_norm_torch(x, G, g, b, 1e-5), atol=1e-12)


def test_gamma_broadcast_wrong_axis():
    # raises on the first case (W != C), which run names before any case is verified
    msg = check_fails("ch6_group_norm", lambda x, G, g, b, eps: group_norm(x, G, g, b, eps, affine_shape=(-1,)))
    assert msg.split("]: ", 1)[1].startswith(
        "gamma and beta have shape (C,) and must broadcast along the channel axis 1: reshape them to (1, C, 1, 1) "
        "(NumPy said: operands could not be broadcast together with shapes "), msg


# ---------------------------------------------------------------- issue 11: more exercises
def test_ch6_every_exercise_has_a_hint_ladder():
    names = [n for n in REGISTRY if n.startswith("ch6_")]
    assert len(names) >= 5
    for name in names:
        hints = REGISTRY[name].hints
        assert 2 <= len(hints) <= 4, name
        assert all(isinstance(h, str) and len(h) > 20 for h in hints), name


def test_group_norm_torch_answer_is_a_forbidden_call():
    from bncourse.checks import core
    if not hasattr(core, "ForbiddenCall"):
        pytest.skip("this checkout's check() does not poison references")
    with pytest.raises(core.ForbiddenCall):
        check("ch6_group_norm", group_norm_torch, quiet=True)


# ---------------------------------------------------------------- layer norm backward
def layer_norm_backward(dout, x, gamma, eps=1e-5):
    # autograd through hand-written torch operations
    xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(gamma, requires_grad=True)
    bt = torch.zeros_like(gt, requires_grad=True)
    mu = xt.mean(dim=1, keepdim=True)
    var = ((xt - mu) ** 2).mean(dim=1, keepdim=True)
    (gt * (xt - mu) / torch.sqrt(var + eps) + bt).backward(torch.tensor(dout))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def _ln_numpy(dout, x, gamma, eps, gamma_outside=False, stats=True, ddof=0, axis=1):
    k = x.shape[axis]
    mu = x.mean(axis=axis, keepdims=True)
    std = np.sqrt(x.var(axis=axis, ddof=ddof, keepdims=True) + eps)
    xh = (x - mu) / std
    g = dout if gamma_outside else dout * gamma
    dx = (k * g - g.sum(axis=axis, keepdims=True) - xh * (g * xh).sum(axis=axis, keepdims=True)) / (k * std) \
        if stats else g / std
    return (dx * gamma if gamma_outside else dx), (dout * xh).sum(axis=0), dout.sum(axis=0)


def test_layer_norm_backward_reference_is_autograd_and_passes():
    from bncourse.checks.ch6_beyond import layer_norm_backward_reference
    for case in REGISTRY["ch6_layer_norm_backward"]().cases(np.random.default_rng(0)):
        args = [case[k] for k in ("dout", "x", "gamma", "eps")]
        for a, b in zip(layer_norm_backward(*args), layer_norm_backward_reference(*args)):
            assert np.allclose(a, b, rtol=1e-10, atol=1e-12)
    for seed in (None, 1, 2):
        check("ch6_layer_norm_backward", layer_norm_backward, seed=seed, quiet=True)
        check("ch6_layer_norm_backward", lambda d, x, g, e: _ln_numpy(d, x, g, e), seed=seed, quiet=True)


# ---------------------------------------------------------------- predictions
def test_predict_two_samples_truth_is_what_torch_does():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(5)
    out = bn(torch.randn(2, 5) * 3 + 1)
    assert torch.allclose(out.abs(), torch.ones(2, 5), atol=1e-3)
    from bncourse.checks.ch6_beyond import PredictTwoSamples
    assert PredictTwoSamples.truth == 1.0


def test_predict_two_samples_verdicts():
    for ok in (1, 0.995, 1.01, np.float32(1.0), torch.tensor([1.0])):
        check("ch6_predict_two_samples", ok, quiet=True)
    check_fails("ch6_predict_two_samples", 0, "with ONE sample x_hat is 0")
    check_fails("ch6_predict_two_samples", 0.7071, "BIASED variance")
    check_fails("ch6_predict_two_samples", 1.414, "dividing by the wrong count")
    check_fails("ch6_predict_two_samples", 3.0, "too high")
    check_fails("ch6_predict_two_samples", [1.0], "must be a number")
    with pytest.raises(NotImplementedError):
        check("ch6_predict_two_samples", None)


def test_predict_batch_dependence_truth_is_what_torch_does():
    from bncourse.checks.ch6_beyond import PredictBatchDependence
    torch.manual_seed(0)
    layers = {"A": torch.nn.BatchNorm2d(8), "B": torch.nn.GroupNorm(4, 8), "C": torch.nn.LayerNorm([8, 6, 6]),
              "D": torch.nn.InstanceNorm2d(8), "E": torch.nn.BatchNorm2d(8).eval()}
    sample, other1, other2 = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6) + 3
    independent = ""
    with torch.no_grad():
        for letter, layer in layers.items():
            if torch.allclose(layer(torch.cat([sample, other1]))[0], layer(torch.cat([sample, other2]))[0], atol=1e-6):
                independent += letter
    assert independent == PredictBatchDependence.answer == "BCDE"


def test_predict_batch_dependence_verdicts():
    for ok in ("BCDE", "edcb", ["B", "C", "D", "E"]):
        check("ch6_predict_batch_dependence", ok, quiet=True)
    check_fails("ch6_predict_batch_dependence", "ABCDE", "A is not true", "(N, H, W)")
    check_fails("ch6_predict_batch_dependence", "BCD", "in eval mode BN uses its running statistics")
    check_fails("ch6_predict_batch_dependence", "BDE", "layer norm takes its statistics per sample")
    with pytest.raises(NotImplementedError):
        check("ch6_predict_batch_dependence", None)


# ---------------------------------------------------------------- debugging the sequence layer norm
def layer_norm_seq(x, gamma, beta, eps=1e-5, axes=(-1,), ddof=0):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, ddof=ddof, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def test_debug_seq_norm_accepts_the_fix():
    for seed in (None, 1, 2):
        check("ch6_debug_seq_norm", layer_norm_seq, seed=seed, quiet=True)

    def torchy(x, gamma, beta, eps=1e-5):                      # hand-written in torch: also fine
        xt = torch.from_numpy(x)
        mu = xt.mean(dim=-1, keepdim=True)
        var = xt.var(dim=-1, unbiased=False, keepdim=True)
        return (xt - mu) / torch.sqrt(var + eps) * torch.from_numpy(gamma) + torch.from_numpy(beta)
    check("ch6_debug_seq_norm", torchy, quiet=True)


def test_debug_seq_norm_reference_matches_torch_layer_norm():
    rng = np.random.default_rng(0)
    x, g, b = rng.normal(size=(2, 5, 4)), rng.normal(size=4), rng.normal(size=4)
    want = torch.nn.functional.layer_norm(torch.from_numpy(x), (4,), torch.from_numpy(g), torch.from_numpy(b), 1e-5)
    assert np.allclose(layer_norm_seq(x, g, b), want.numpy(), atol=1e-12)


def test_debug_seq_norm_input_changed_in_place_is_named():
    def in_place(x, g, b, eps):
        x -= x.mean(-1, keepdims=True)
        return layer_norm_seq(x, g, b, eps)
    assert_body(check_fails("ch6_debug_seq_norm", in_place), in_place_message("x"))


def test_in_place_mutation_is_named_in_every_ch6_function_exercise():
    def gn_in_place(x, G, gamma, beta, eps):
        out = group_norm(x, G, gamma, beta, eps)
        x[...] = out
        return out
    assert_body(check_fails("ch6_group_norm", gn_in_place), in_place_message("x"))

    def lnb_in_place(dout, x, gamma, eps):
        out = _ln_numpy(dout, x, gamma, eps)
        dout *= 2
        return out
    assert_body(check_fails("ch6_layer_norm_backward", lnb_in_place), in_place_message("dout"))


# ---------------------------------------------------------------- messages outside the Mistake registry, word for word
def test_ch6_messages_outside_the_mistake_registry_word_for_word():
    from check_messages import assert_body
    assert_body(check_fails("ch6_layer_norm_backward", lambda d, x, g, e: [1, 2, 3]),
                "layer_norm_backward must return a tuple (dx, dgamma, dbeta); it returned a list of length 3")
    two = {
        0: "outside the accepted range: with ONE sample x_hat is 0 (x equals its own mean); with two, each value sits "
           "half the difference away from the mean, and the standard deviation is exactly that half difference",
        0.7071: "outside the accepted range: BN normalizes with the BIASED variance (divide by 2, not by 1): with the "
                "unbiased one you would get 1 / sqrt(2)",
        1.414: "outside the accepted range: the biased variance of two values is ((a - b) / 2)**2, the square of the "
               "half difference; sqrt(2) comes from dividing by the wrong count",
        3.0: "too high (accepted within ±0.01 of the answer); reason it through again "
             "(hint('ch6_predict_two_samples')), then run the experiment below",
    }
    for value, why in two.items():
        assert_body(check_fails("ch6_predict_two_samples", value), f"the predicted |x_hat| = {value:g} is {why}")
    letters = {
        "ABCDE": "A is not true: in training mode BatchNorm2d takes each channel's statistics over (N, H, W): the "
                 "other sample's values are half of them",
        "BCD": "one you left out is true: in eval mode BN uses its running statistics, fixed numbers: the batch no "
               "longer matters",
        "BDE": "one you left out is true: layer norm takes its statistics per sample, over (C, H, W)",
        "CDE": "one you left out is true: group norm takes its statistics per sample and group of channels; no other "
               "sample enters",
        "BCE": "one you left out is true: instance norm takes its statistics per sample and channel (and by default "
               "keeps no running statistics, so it does the same in both modes)",
    }
    for chosen, why in letters.items():
        assert_body(check_fails("ch6_predict_batch_dependence", chosen), f"you chose {chosen}; {why}")
