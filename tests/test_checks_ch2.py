"""Chapter 2 self-checks: correct answers pass (fixed and fresh seeds), and each named mistake gets its message."""
import numpy as np
import pytest
import torch
from torch import nn

from bncourse.checks import REGISTRY, CheckFailure, check
from check_helpers import check_fails


# ---------------------------------------------------------------- reference solutions (independent code)
def init_std(fan_in, fan_out, scheme):
    return float(np.sqrt(2.0 / (fan_in + fan_out))) if scheme == "xavier" else float(np.sqrt(2.0 / fan_in))


def _derivative_ratio(a, module):
    if isinstance(module, nn.Sigmoid):
        return a * (1 - a) / 0.25
    if isinstance(module, nn.Tanh):
        return 1 - a**2
    return (a > 0).double()


def layer_saturation(model, x, threshold=0.1):
    outputs, handles = [], []
    acts = [m for m in model if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
    for m in acts:
        handles.append(m.register_forward_hook(lambda mod, inp, out: outputs.append((mod, out.detach()))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return np.array([float((_derivative_ratio(a, m) < threshold).double().mean()) for m, a in outputs])


def grad_norms(model, x, y, which="input", remove=True):
    grads, handles = {}, []
    acts = [m for m in model if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
    for i, m in enumerate(acts):
        def hook(mod, g_in, g_out, i=i):
            grads[i] = (g_in if which == "input" else g_out)[0].detach()
        handles.append(m.register_full_backward_hook(hook))
    try:
        nn.functional.cross_entropy(model(x), y).backward()
    finally:
        if remove:
            for h in handles:
                h.remove()
    return np.array([float(grads[i].norm()) for i in range(len(acts))])


REFERENCES = {"ch2_init_std": init_std, "ch2_layer_saturation": layer_saturation, "ch2_grad_norms": grad_norms}


def test_all_registered():
    assert set(REFERENCES) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    check(name, REFERENCES[name])
    assert "✓" in capsys.readouterr().out
    for seed in (1, 2, 3):
        check(name, REFERENCES[name], seed=seed, quiet=True)


_fails = check_fails


def test_init_std_mistakes():
    _fails("ch2_init_std", lambda fi, fo, s: init_std(fo, fi, s) if s == "kaiming" else init_std(fi, fo, s),
           "fan_out instead of fan_in")
    _fails("ch2_init_std", lambda fi, fo, s: init_std(fi, fo, s) if s == "xavier" else (1 / fi) ** 0.5,
           "factor 2 is missing")
    _fails("ch2_init_std", lambda fi, fo, s: init_std(fi, fo, s) ** 2, "returned the variance")
    _fails("ch2_init_std", lambda fi, fo, s: (6 / (fi + fo)) ** 0.5 if s == "xavier" else init_std(fi, fo, s),
           "UNIFORM")
    _fails("ch2_init_std", lambda fi, fo, s: (2 / fi) ** 0.5, "that is Kaiming's std")
    _fails("ch2_init_std", lambda fi, fo, s: "0.1", "expected a single number")


def test_layer_saturation_mistakes():
    _fails("ch2_layer_saturation", lambda m, x, t: 100 * layer_saturation(m, x, t), "percentages")

    def unnormalized(model, x, threshold=0.1):
        outs = []
        hs = [m.register_forward_hook(lambda mod, i, o: outs.append(o.detach())) for m in model
              if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
        model(x)
        for h in hs:
            h.remove()
        kind = [m for m in model if not isinstance(m, nn.Linear)][0]
        if isinstance(kind, nn.Sigmoid):
            return np.array([float((a * (1 - a) < threshold).double().mean()) for a in outs])
        return layer_saturation(model, x, threshold)
    _fails("ch2_layer_saturation", unnormalized, "divide by 0.25")

    def pre_activation(model, x, threshold=0.1):
        ins, outs_mod = [], []
        hs = [m.register_forward_hook(lambda mod, i, o: ins.append(i[0].detach()) or outs_mod.append(mod))
              for m in model if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
        model(x)
        for h in hs:
            h.remove()
        return np.array([float((_derivative_ratio(z, m) < threshold).double().mean()) for z, m in zip(ins, outs_mod)])
    _fails("ch2_layer_saturation", pre_activation, "pre-activations z")

    def leaves_hooks(model, x, threshold=0.1):
        res = layer_saturation(model, x, threshold)
        for m in model:
            m.register_forward_hook(lambda *a: None)
        return res
    _fails("ch2_layer_saturation", leaves_hooks, "left hooks registered")


def test_grad_norms_mistakes():
    _fails("ch2_grad_norms", lambda m, x, y: grad_norms(m, x, y, which="output"), "activation's OUTPUT")
    _fails("ch2_grad_norms", lambda m, x, y: grad_norms(m, x, y) ** 2, "squared norms")

    def weight_grads(model, x, y):
        nn.functional.cross_entropy(model(x), y).backward()
        return np.array([float(m.weight.grad.norm()) for m in model if isinstance(m, nn.Linear)][:-1])
    _fails("ch2_grad_norms", weight_grads, "weight gradients")

    def summed(model, x, y):
        return len(y) * grad_norms(model, x, y)
    _fails("ch2_grad_norms", summed, "summed over the batch")
    _fails("ch2_grad_norms", lambda m, x, y: grad_norms(m, x, y, remove=False), "left hooks registered")


# ---------------------------------------------------------------- no correct answer rejected (issue 11)
def test_float32_fractions_lists_and_float32_stds_are_accepted():
    def saturation_float32(model, x, threshold=0.1):          # (d < t).float().mean() in float32, as a tensor
        outs = []
        hs = [m.register_forward_hook(lambda mod, i, o: outs.append((mod, o.detach().float())))
              for m in model if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
        model(x)
        for h in hs:
            h.remove()
        return torch.stack([(_derivative_ratio(a, m).float() < threshold).float().mean() for m, a in outs])
    check("ch2_layer_saturation", saturation_float32, quiet=True)
    for seed in range(1, 11):
        check("ch2_layer_saturation", saturation_float32, seed=seed, quiet=True)
    check("ch2_layer_saturation", lambda m, x, t: layer_saturation(m, x, t).tolist(), quiet=True)
    check("ch2_grad_norms", lambda m, x, y: grad_norms(m, x, y).tolist(), quiet=True)
    check("ch2_init_std", lambda fi, fo, s: torch.tensor(init_std(fi, fo, s), dtype=torch.float32), quiet=True)


def test_a_count_off_by_one_is_still_rejected():
    def off_by_one(model, x, threshold=0.1):
        res = layer_saturation(model, x, threshold)
        return res + 1.0 / (x.shape[0] * 8)                     # one unit more in every layer (first two have 8)
    _fails("ch2_layer_saturation", off_by_one, "saturated")


def test_reversed_hook_order_is_named():
    _fails("ch2_grad_norms", lambda m, x, y: grad_norms(m, x, y)[::-1].copy(), "backward order")
    _fails("ch2_layer_saturation", lambda m, x, t: layer_saturation(m, x, t)[::-1].copy(), "reverse order")


# ---------------------------------------------------------------- ch2_kaiming_std (derive)
def kaiming_std(fan_in, fan_out, negative_slope, mode):
    fan = {"fan_in": fan_in, "fan_out": fan_out}[mode]
    return float(np.sqrt(2.0 / (fan * (1.0 + negative_slope ** 2))))


def test_kaiming_std_matches_torch_and_the_check_accepts_it():
    for a in (0.0, 0.01, 0.2, 1.0):
        for mode in ("fan_in", "fan_out"):
            w = torch.empty(300, 100)                           # (fan_out, fan_in)
            torch.nn.init.kaiming_normal_(w, a=a, mode=mode, nonlinearity="leaky_relu")
            assert abs(w.std().item() / kaiming_std(100, 300, a, mode) - 1) < 0.02
    check("ch2_kaiming_std", kaiming_std, quiet=True)
    for seed in (1, 2, 3):
        check("ch2_kaiming_std", kaiming_std, seed=seed, quiet=True)


@pytest.mark.parametrize("wrong, expected", [
    (lambda fi, fo, a, mode: kaiming_std(fo, fi, a, mode), "you used the other fan"),
    (lambda fi, fo, a, mode: kaiming_std(fi, fo, 0.0, mode), "the slope is ignored"),
    (lambda fi, fo, a, mode: kaiming_std(fi, fo, a ** 0.5, mode), "1 + a^2, not 1 + a"),
    (lambda fi, fo, a, mode: kaiming_std(fi, fo, a, mode) / 2 ** 0.5, "the factor 2 is missing"),
    (lambda fi, fo, a, mode: kaiming_std(fi, fo, a, mode) ** 2, "returned the variance"),
    (lambda fi, fo, a, mode: kaiming_std(fi, fo, a, mode) * (1 + a * a), "belongs in the denominator"),
])
def test_kaiming_std_mistakes(wrong, expected):
    _fails("ch2_kaiming_std", wrong, expected)


def test_kaiming_std_one_minus_a_squared():
    def one_minus(fi, fo, a, mode):
        fan = fi if mode == "fan_in" else fo
        return float(np.sqrt(2.0 / ((1 - a) ** 2 * fan))) if a < 1 else kaiming_std(fi, fo, a, mode)
    _fails("ch2_kaiming_std", one_minus, "(1 - a)^2")


def test_kaiming_std_refuses_calculate_gain():
    def via_gain(fi, fo, a, mode):
        fan = fi if mode == "fan_in" else fo
        return torch.nn.init.calculate_gain("leaky_relu", a) / fan ** 0.5
    _fails("ch2_kaiming_std", via_gain, "calculate_gain", allow_references=False)


# ---------------------------------------------------------------- ch2_predict_relu_xavier (predict)
def test_predict_relu_xavier():
    for right in (2 ** -3.5, 0.09, 0.1, torch.tensor(0.085)):
        check("ch2_predict_relu_xavier", right, quiet=True)
    for wrong, expected in [(1.0, "zeroes the negative half"), (2 ** -7, "ratio of the VARIANCES"),
                            (2 ** -4, "7 layers, not 8"), (0.5, "compounds"), (0.3, "too high"),
                            (0.02, "too low")]:
        _fails("ch2_predict_relu_xavier", wrong, expected)
    with pytest.raises(NotImplementedError):
        check("ch2_predict_relu_xavier", None)


def test_predict_relu_xavier_truth_is_what_wide_networks_measure():
    # independent of the notebook's experiment: average second moments over 20 networks of width 512
    gen = torch.Generator().manual_seed(3)
    m1 = m8 = 0.0
    for _ in range(20):
        h = torch.randn(128, 512, generator=gen, dtype=torch.float64)
        for layer in range(8):
            z = h @ (torch.randn(512, 512, generator=gen, dtype=torch.float64) * init_std(512, 512, "xavier")).T
            if layer == 0:
                m1 += (z ** 2).mean().item()
            h = torch.relu(z)
        m8 += (z ** 2).mean().item()
    assert abs((m8 / m1) ** 0.5 / REGISTRY["ch2_predict_relu_xavier"].truth - 1) < 0.08


# ---------------------------------------------------------------- ch2_debug_init (debug)
def _init_with(std_of, uniform=False, bias=True, fan_from_shape0=False):
    def init(model):
        for m in model.modules():
            if isinstance(m, nn.Linear):
                out_f, in_f = m.weight.shape
                fan_in = out_f if fan_from_shape0 else in_f
                with torch.no_grad():
                    std = std_of(fan_in, out_f if not fan_from_shape0 else in_f)
                    if uniform:
                        m.weight.uniform_(-std * 3 ** 0.5, std * 3 ** 0.5)
                    else:
                        m.weight.normal_(0.0, std)
                    if bias:
                        m.bias.zero_()
        return model
    return init


def test_debug_init_accepts_the_fix():
    fixed = _init_with(lambda fi, fo: (2 / fi) ** 0.5)
    check("ch2_debug_init", fixed, quiet=True)
    for seed in range(1, 21):
        check("ch2_debug_init", fixed, seed=seed, quiet=True)


@pytest.mark.parametrize("wrong, expected", [
    (_init_with(lambda fi, fo: (2 / fi) ** 0.5, fan_from_shape0=True), "the bug is still there"),
    (lambda model: model, "keep nn.Linear's default init"),
    (_init_with(lambda fi, fo: (1 / fi) ** 0.5), "the factor 2 is gone"),
    (_init_with(lambda fi, fo: (2 / (fi + fo)) ** 0.5), "Xavier's std"),
    (_init_with(lambda fi, fo: 2 / fi), "as their std"),
    (_init_with(lambda fi, fo: (2 / fi) ** 0.5, uniform=True), "look uniformly distributed"),
    (_init_with(lambda fi, fo: (2 / fi) ** 0.5, bias=False), "bias of nn.Linear"),
])
def test_debug_init_mistakes(wrong, expected):
    _fails("ch2_debug_init", wrong, expected)


def test_debug_init_leaves_the_global_generator_alone():
    fixed = _init_with(lambda fi, fo: (2 / fi) ** 0.5)
    torch.manual_seed(7)
    before = torch.rand(3)
    torch.manual_seed(7)
    check("ch2_debug_init", fixed, quiet=True)
    assert torch.equal(torch.rand(3), before)


def test_every_ch2_exercise_has_a_hint_ladder():
    for name in [*REFERENCES, "ch2_kaiming_std", "ch2_predict_relu_xavier", "ch2_debug_init"]:
        ladder = REGISTRY[name].hints
        assert 2 <= len(ladder) <= 4, name
        assert all(isinstance(h, str) and len(h) > 20 and "def " not in h and "import " not in h for h in ladder)
