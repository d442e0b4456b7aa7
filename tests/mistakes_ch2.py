"""Chapter 2: one wrong implementation per declared mistake, written as a student would (see test_mistake_registry).

Plain NumPy / PyTorch, nothing from ``bncourse``; the hook functions remove their hooks, so each one fails only
with the mistake it is written for.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- ch2_init_std
def _init_std(xavier=lambda fi, fo: math.sqrt(2 / (fi + fo)), kaiming=lambda fi, fo: math.sqrt(2 / fi)):
    def init_std(fan_in, fan_out, scheme):
        return xavier(fan_in, fan_out) if scheme == "xavier" else kaiming(fan_in, fan_out)
    return init_std


MISTAKES = {
    ("ch2_init_std", "xavier_variance"): _init_std(xavier=lambda fi, fo: 2 / (fi + fo)),
    ("ch2_init_std", "xavier_uniform_bound"): _init_std(xavier=lambda fi, fo: math.sqrt(6 / (fi + fo))),
    ("ch2_init_std", "xavier_lecun"): _init_std(xavier=lambda fi, fo: 1 / math.sqrt(fi)),
    ("ch2_init_std", "xavier_no_factor_2"): _init_std(xavier=lambda fi, fo: math.sqrt(1 / (fi + fo))),
    ("ch2_init_std", "xavier_is_kaiming"): _init_std(xavier=lambda fi, fo: math.sqrt(2 / fi)),
    ("ch2_init_std", "kaiming_fan_out"): _init_std(kaiming=lambda fi, fo: math.sqrt(2 / fo)),
    ("ch2_init_std", "kaiming_lecun"): _init_std(kaiming=lambda fi, fo: math.sqrt(1 / fi)),
    ("ch2_init_std", "kaiming_variance"): _init_std(kaiming=lambda fi, fo: 2 / fi),
    ("ch2_init_std", "kaiming_uniform_bound"): _init_std(kaiming=lambda fi, fo: math.sqrt(6 / fi)),
    ("ch2_init_std", "kaiming_is_xavier"): _init_std(kaiming=lambda fi, fo: math.sqrt(2 / (fi + fo))),
}


# ---------------------------------------------------------------- ch2_layer_saturation
def _saturation(percent=False, of_input=False, sigmoid_max=0.25, reverse=False):
    def layer_saturation(model, x, threshold=0.1):
        seen = []
        handles = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0] if of_input else out)))
                   for m in model.modules() if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
        try:
            with torch.no_grad():
                model(x)
        finally:
            for h in handles:
                h.remove()
        fractions = []
        for mod, a in seen:
            if isinstance(mod, nn.Sigmoid):
                ratio = a * (1 - a) / sigmoid_max
            elif isinstance(mod, nn.Tanh):
                ratio = 1 - a ** 2
            else:
                ratio = (a > 0).double()
            fractions.append((ratio < threshold).double().mean().item())
        out = torch.tensor(fractions[::-1] if reverse else fractions, dtype=torch.float64)
        return (100 * out if percent else out).numpy()
    return layer_saturation


MISTAKES.update({
    ("ch2_layer_saturation", "percentages"): _saturation(percent=True),
    ("ch2_layer_saturation", "pre_activations"): _saturation(of_input=True),
    ("ch2_layer_saturation", "sigmoid_unnormalized"): _saturation(sigmoid_max=1.0),
    ("ch2_layer_saturation", "reversed"): _saturation(reverse=True),
})


# ---------------------------------------------------------------- ch2_grad_norms
def _grad_norms(keep_backward_order=False, at_output=False, squared=False, weights=False, reduction="mean"):
    def grad_norms(model, x, y):
        acts = [m for m in model.modules() if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))]
        fired = []

        def hook(mod, grad_input, grad_output):
            g = grad_output[0] if at_output else grad_input[0]
            fired.append((acts.index(mod), g.norm().item()))
        handles = [m.register_full_backward_hook(hook) for m in acts]
        try:
            loss = F.cross_entropy(model(x), y, reduction=reduction)
            loss.backward()
        finally:
            for h in handles:
                h.remove()
        if weights:
            linears = [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]
            return torch.tensor([lin.weight.grad.norm().item() for lin in linears], dtype=torch.float64).numpy()
        norms = [v for _, v in (fired if keep_backward_order else sorted(fired))]
        out = torch.tensor(norms, dtype=torch.float64)
        return (out ** 2 if squared else out).numpy()
    return grad_norms


MISTAKES.update({
    ("ch2_grad_norms", "backward_order"): _grad_norms(keep_backward_order=True),
    ("ch2_grad_norms", "grad_output"): _grad_norms(at_output=True),
    ("ch2_grad_norms", "squared"): _grad_norms(squared=True),
    ("ch2_grad_norms", "weight_grads"): _grad_norms(weights=True),
    ("ch2_grad_norms", "summed_loss"): _grad_norms(reduction="sum"),
})


# ---------------------------------------------------------------- ch2_kaiming_std
def _kaiming(fan=lambda fi, fo, mode: fi if mode == "fan_in" else fo, gain=lambda a: 2 / (1 + a * a),
             post=lambda std: std):
    def kaiming_std(fan_in, fan_out, negative_slope, mode):
        return post(math.sqrt(gain(negative_slope) / fan(fan_in, fan_out, mode)))
    return kaiming_std


def _one_minus_a_squared(a):
    with np.errstate(divide="ignore"):
        return 2 / np.float64(1 - a) ** 2          # NumPy: inf at a = 1, where Python floats would raise


MISTAKES.update({
    ("ch2_kaiming_std", "fan_out_for_forward"): _kaiming(fan=lambda fi, fo, mode: fo if mode == "fan_in" else fi),
    ("ch2_kaiming_std", "fan_in_for_backward"): _kaiming(fan=lambda fi, fo, mode: fi),
    ("ch2_kaiming_std", "slope_ignored"): _kaiming(gain=lambda a: 2.0),
    ("ch2_kaiming_std", "slope_not_squared"): _kaiming(gain=lambda a: 2 / (1 + a)),
    ("ch2_kaiming_std", "one_minus_a_squared"): _kaiming(gain=_one_minus_a_squared),
    ("ch2_kaiming_std", "no_factor_2"): _kaiming(gain=lambda a: 1 / (1 + a * a)),
    ("ch2_kaiming_std", "variance"): _kaiming(post=lambda std: std * std),
    ("ch2_kaiming_std", "gain_inverted"): _kaiming(gain=lambda a: 2 * (1 + a * a)),
})

# ---------------------------------------------------------------- ch2_predict_relu_xavier: the committed numbers
MISTAKES.update({
    ("ch2_predict_relu_xavier", "no_decay"): 1.0,
    ("ch2_predict_relu_xavier", "variance_ratio"): 0.0078,
    ("ch2_predict_relu_xavier", "eight_layers"): 0.0625,
    ("ch2_predict_relu_xavier", "variance_over_eight"): 0.0039,
    ("ch2_predict_relu_xavier", "one_layer"): 0.5,
})


# ---------------------------------------------------------------- ch2_debug_init
def _debug_init(std_of=lambda w: math.sqrt(2 / w.shape[1]), write=True):
    def init_kaiming_(model):
        for m in model.modules():
            if isinstance(m, nn.Linear):
                std = std_of(m.weight)
                with torch.no_grad():
                    if write:
                        m.weight.normal_(0.0, std)
                    else:
                        m.weight.detach().clone().normal_(0.0, std)      # a copy: the layer keeps its weights
                    m.bias.zero_()
        return model
    return init_kaiming_


MISTAKES.update({
    ("ch2_debug_init", "fan_in_from_shape_0"): _debug_init(std_of=lambda w: math.sqrt(2 / w.shape[0])),
    ("ch2_debug_init", "default_init"): _debug_init(write=False),
    ("ch2_debug_init", "no_factor_2"): _debug_init(std_of=lambda w: math.sqrt(1 / w.shape[1])),
    ("ch2_debug_init", "xavier"): _debug_init(std_of=lambda w: math.sqrt(2 / (w.shape[0] + w.shape[1]))),
    ("ch2_debug_init", "variance_as_std"): _debug_init(std_of=lambda w: 2 / w.shape[1]),
})

CORRECT = {
    "ch2_init_std": _init_std(),
    "ch2_layer_saturation": _saturation(),
    "ch2_grad_norms": _grad_norms(),
    "ch2_kaiming_std": _kaiming(),
    "ch2_debug_init": _debug_init(),
}
