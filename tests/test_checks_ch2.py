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
