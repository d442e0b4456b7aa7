"""bncourse.hooks against a hand-built forward pass with retain_grad, closed forms and a real SGD step."""
import numpy as np
import pytest
import torch
from torch import nn

from bncourse import hooks


def _net(act=nn.Sigmoid):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), act(), nn.Linear(7, 6), act(), nn.Linear(6, 3)).double()


def test_recorder_matches_retain_grad_reference():
    model = _net()
    x = torch.randn(11, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (11,))
    with hooks.HookRecorder(model) as rec:
        nn.functional.cross_entropy(model(x), y).backward()
    assert rec.names == ["1", "3"]

    # the same network, by hand, keeping the intermediate gradients
    z1 = model[0](x); z1.retain_grad()
    a1 = torch.sigmoid(z1); a1.retain_grad()
    z2 = model[2](a1); z2.retain_grad()
    a2 = torch.sigmoid(z2); a2.retain_grad()
    nn.functional.cross_entropy(model[4](a2), y).backward()
    for name, z, a in [("1", z1, a1), ("3", z2, a2)]:
        torch.testing.assert_close(rec.inputs[name], z.detach(), rtol=0, atol=0)
        torch.testing.assert_close(rec.outputs[name], a.detach(), rtol=0, atol=0)
        torch.testing.assert_close(rec.grad_outputs[name], a.grad, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(rec.grad_inputs[name], z.grad, rtol=1e-12, atol=1e-15)
        # chain rule through the sigmoid: dL/dz = dL/da * a (1 - a)
        torch.testing.assert_close(rec.grad_inputs[name], a.grad * a * (1 - a), rtol=1e-12, atol=1e-15)


def test_hooks_are_removed_on_exit():
    model = _net()
    with hooks.HookRecorder(model) as rec:
        model(torch.randn(2, 5, dtype=torch.float64))
    rec.clear()
    model(torch.randn(2, 5, dtype=torch.float64))
    assert rec.inputs == {} and rec.outputs == {}
    assert all(len(m._forward_hooks) == 0 and len(m._backward_hooks) == 0 for m in model.modules())


def test_saturation_fraction_closed_form_thresholds():
    z = torch.linspace(-10, 10, 2001, dtype=torch.float64)
    # sigmoid: s(1-s) < 0.1 * 0.25  <=>  |z| > log((1 + sqrt(0.9)) / (1 - sqrt(0.9)))  (about 3.64)
    zc = np.log((1 + np.sqrt(0.9)) / (1 - np.sqrt(0.9)))
    want = float((z.abs() > zc).double().mean())
    assert hooks.saturation_fraction(torch.sigmoid(z), "sigmoid") == pytest.approx(want, abs=1e-3)
    # tanh: 1 - tanh^2 < 0.1  <=>  |z| > atanh(sqrt(0.9))  (about 1.82)
    want = float((z.abs() > np.arctanh(np.sqrt(0.9))).double().mean())
    assert hooks.saturation_fraction(torch.tanh(z), nn.Tanh()) == pytest.approx(want, abs=1e-3)
    assert hooks.saturation_fraction(torch.relu(z), "relu") == pytest.approx(float((z <= 0).double().mean()))
    with pytest.raises(ValueError, match="sigmoid"):
        hooks.saturation_fraction(z, "gelu")


def test_layer_stats_rows():
    model = _net(nn.Tanh)
    x = torch.randn(50, 5, dtype=torch.float64) * 100        # huge inputs: first tanh saturates
    with hooks.HookRecorder(model) as rec:
        nn.functional.cross_entropy(model(x), torch.zeros(50, dtype=torch.long)).backward()
    rows = hooks.layer_stats(rec)
    assert [r["layer"] for r in rows] == [1, 2] and rows[0]["kind"] == "tanh"
    assert rows[0]["saturated"] > 0.8
    assert rows[0]["grad_z_norm"] == pytest.approx(float(rec.grad_inputs["1"].norm()))


def test_update_ratio_equals_the_real_sgd_step():
    model = _net(nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    nn.functional.cross_entropy(model(x), y).backward()
    predicted = hooks.update_to_data_ratios(model, lr=0.05)
    norms = hooks.weight_grad_norms(model)
    assert norms == pytest.approx([float(m.weight.grad.norm()) for m in model if isinstance(m, nn.Linear)])
    tracker = hooks.UpdateRatioTracker(model)
    tracker.before(); opt.step(); measured = tracker.after()
    assert measured == pytest.approx(predicted, rel=1e-9)
    assert len(tracker.history) == 1 and len(measured) == 3


def test_percentiles_match_numpy():
    v = torch.randn(1001, generator=torch.Generator().manual_seed(1))
    assert hooks.percentiles(v) == pytest.approx(list(np.percentile(v.numpy().astype(np.float64), [15, 50, 85])))


def test_no_module_selected_is_an_error():
    with pytest.raises(ValueError, match="selected no module"):
        hooks.HookRecorder(nn.Linear(2, 2))


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4, bias=False), nn.BatchNorm1d(4), nn.Sigmoid(), nn.Linear(4, 3)).double()


def test_module_input_batch_stats_normalizes_with_the_probe_and_leaves_no_trace():
    model = _bn_net()
    model.train()
    for _ in range(3):                                       # give the running statistics some history
        model(torch.randn(8, 5, dtype=torch.float64) * 3 + 1)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(50, 5, dtype=torch.float64)
    z = hooks.module_input(model, x, model[2], batch_stats=True)
    # reference: BN with the probe's own mean and biased variance
    h = model[0](x)
    mu, var = h.mean(0), h.var(0, unbiased=False)
    bn = model[1]
    want = (h - mu) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(z, want.detach(), rtol=1e-12, atol=1e-12)
    assert z.mean(0).abs().max() < 1e-12                      # gamma = 1, beta = 0: mean 0 over the probe
    # nothing changed: buffers (running stats, counter), parameters, and the eval mode
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())


def test_module_input_running_stats_is_eval_mode():
    model = _bn_net()
    model.train()
    model(torch.randn(8, 5, dtype=torch.float64) * 3 + 1)
    x = torch.randn(50, 5, dtype=torch.float64)
    z = hooks.module_input(model, x, model[2], batch_stats=False)
    bn = model[1]
    want = (model[0](x) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(z, want.detach(), rtol=1e-12, atol=1e-12)
    assert model.training                                     # the mode it had before the call
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_buffers_restored_after_an_exception():
    model = _bn_net()
    rm = model[1].running_mean.clone()
    with pytest.raises(RuntimeError):
        with hooks.buffers_restored(model):
            model.train()
            model(torch.randn(8, 5, dtype=torch.float64) + 5)
            raise RuntimeError("boom")
    assert torch.equal(model[1].running_mean, rm) and model[1].num_batches_tracked.item() == 0
