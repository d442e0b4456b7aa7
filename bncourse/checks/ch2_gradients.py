"""Checks for chapter 2, vanishing and exploding gradients.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch2_init_std``          ``init_std(fan_in, fan_out, scheme) -> float``: the normal-init standard deviation of
                          ``"xavier"`` (Glorot) or ``"kaiming"`` (He, for ReLU)
``ch2_layer_saturation``  ``layer_saturation(model, x, threshold) -> (L,) array``: with forward hooks, the fraction of
                          units of each activation module whose local derivative is below ``threshold`` times its
                          maximum (sigmoid, tanh; for ReLU: outputs equal to 0)
``ch2_grad_norms``        ``grad_norms(model, x, y) -> (L,) array``: with backward hooks, the Frobenius norm of
                          d(mean cross-entropy)/dz at the input z of each activation module

``ch2_kaiming_std``       a derivation: ``kaiming_std(fan_in, fan_out, negative_slope, mode)``, He's std for a leaky
                          ReLU, ``sqrt(2 / ((1 + a^2) fan))``, fan by mode
``ch2_predict_relu_xavier`` predict-then-run: std(z_8) / std(z_1) in a width-256 ReLU stack with Xavier's init
                          (2^-3.5, within 15 %)
``ch2_debug_init``        debugging: ``init_kaiming_(model)`` read fan_in from ``weight.shape[0]``; graded on the
                          fixed function (sample std of each layer within 4 %, zero biases)

``model`` is an ``nn.Sequential`` of ``Linear`` and activation modules in float64; ``x`` a float64 tensor (N, D);
``y`` an int64 tensor (N,). Hooks must be removed before the function returns.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import (CheckFailure, Exercise, Mistake, diagnose, expect, expect_array, expect_fraction, expect_scalar,
                   register)
from .predict import Prediction, predicted

__all__ = ["InitStd", "LayerSaturation", "GradNorms", "KaimingStd", "PredictReluXavier", "DebugInit"]


def _to_numpy(v: Any) -> Any:
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return v


def _for_scheme(scheme: str, fn):
    """A mistake of one init scheme: ``fn(fan_in, fan_out)`` is the std it gives; None for the other scheme."""
    return lambda c: {"std": fn(c["fan_in"], c["fan_out"])} if c["scheme"] == scheme else None


@register
class InitStd(Exercise):
    name = "ch2_init_std"
    title = "Xavier and Kaiming standard deviations"
    hints = (
        "Both schemes pick the weights' variance so that the variance of the signal stays the same from layer "
        "to layer: a unit sums fan_in products w * x, so Var(z) = fan_in * Var(w) * E[x^2].",
        "Xavier compromises between the forward pass (fan_in) and the backward pass (fan_out) and assumes a "
        "unit with slope 1 near 0; Kaiming keeps the forward pass of ReLU, which zeroes half of its inputs.",
        "Xavier: Var(w) = 2 / (fan_in + fan_out); Kaiming: Var(w) = 2 / fan_in. Return the square root.",
    )
    # not calculate_gain: nn.Linear calls it (through kaiming_uniform_) when it is built
    references = ("torch.nn.init:xavier_normal_", "torch.nn.init:kaiming_normal_")
    mistakes = (
        Mistake("xavier_variance", "you returned the variance 2 / (fan_in + fan_out); the standard deviation is its "
                "square root", _for_scheme("xavier", lambda fi, fo: 2.0 / (fi + fo))),
        Mistake("xavier_uniform_bound", "that is the bound of Xavier's UNIFORM init, sqrt(6 / (fan_in + fan_out)); "
                "the normal init's std is sqrt(2 / (fan_in + fan_out))",
                _for_scheme("xavier", lambda fi, fo: np.sqrt(6.0 / (fi + fo)))),
        Mistake("xavier_lecun", "you used only fan_in (LeCun's 1 / fan_in); Xavier averages fan_in and fan_out: "
                "sqrt(2 / (fan_in + fan_out))", _for_scheme("xavier", lambda fi, fo: np.sqrt(1.0 / fi))),
        Mistake("xavier_no_factor_2", "the factor 2 is missing: Xavier's variance is 2 / (fan_in + fan_out)",
                _for_scheme("xavier", lambda fi, fo: np.sqrt(1.0 / (fi + fo)))),
        Mistake("xavier_is_kaiming", "that is Kaiming's std sqrt(2 / fan_in); Xavier is sqrt(2 / (fan_in + fan_out))",
                _for_scheme("xavier", lambda fi, fo: np.sqrt(2.0 / fi))),
        Mistake("kaiming_fan_out", "you used fan_out instead of fan_in: Kaiming's forward-pass std is sqrt(2 / "
                "fan_in) (fan_in = number of inputs of a unit = weight.shape[1] of an nn.Linear)",
                _for_scheme("kaiming", lambda fi, fo: np.sqrt(2.0 / fo))),
        Mistake("kaiming_lecun", "the factor 2 is missing (that is LeCun's init): ReLU zeroes half its inputs, so He "
                "doubles the variance: sqrt(2 / fan_in)", _for_scheme("kaiming", lambda fi, fo: np.sqrt(1.0 / fi))),
        Mistake("kaiming_variance", "you returned the variance 2 / fan_in; the standard deviation is its square root",
                _for_scheme("kaiming", lambda fi, fo: 2.0 / fi)),
        Mistake("kaiming_uniform_bound", "that is the bound of Kaiming's UNIFORM init, sqrt(6 / fan_in); the normal "
                "init's std is sqrt(2 / fan_in)", _for_scheme("kaiming", lambda fi, fo: np.sqrt(6.0 / fi))),
        Mistake("kaiming_is_xavier", "that is Xavier's std; Kaiming (for ReLU) is sqrt(2 / fan_in)",
                _for_scheme("kaiming", lambda fi, fo: np.sqrt(2.0 / (fi + fo)))),
    )

    def cases(self, rng):
        out = []
        for scheme in ("xavier", "kaiming"):
            for _ in range(3):
                fan_in, fan_out = (int(v) for v in rng.choice([16, 32, 100, 256, 784, 10], size=2, replace=False))
                out.append({"fan_in": fan_in, "fan_out": fan_out, "scheme": scheme})
        return out

    def run(self, fn, case):
        v = fn(case["fan_in"], case["fan_out"], case["scheme"])
        v = _to_numpy(v)
        if isinstance(v, np.ndarray) and v.shape == ():
            v = float(v)
        return {"std": v}

    def verify(self, case, result):
        fi, fo = case["fan_in"], case["fan_out"]
        want = np.sqrt(2.0 / (fi + fo)) if case["scheme"] == "xavier" else np.sqrt(2.0 / fi)
        # rtol 1e-6: a float32 computation (torch.tensor(2 / fan_in).sqrt()) is a right answer
        expect_scalar("std", result["std"], want, rtol=1e-6, mistakes=self.mistakes, case=case)


# ------------------------------------------------------------------------------------------------
# Hook exercises: a small MLP built from the case's arrays
# ------------------------------------------------------------------------------------------------
_KINDS = ("sigmoid", "tanh", "relu")


def _net_case(rng, kind, widths, n, weight_scale, with_labels=False):
    case = {"kind": kind, "x": rng.normal(size=(n, widths[0]))}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        case[f"W{i}"] = rng.normal(scale=weight_scale / np.sqrt(a), size=(b, a))
        case[f"b{i}"] = rng.normal(scale=0.5, size=b)
    if with_labels:
        case["y"] = rng.integers(0, widths[-1], size=n).astype(np.int64)
    return case


def _as_array(v):
    """A list or tuple of plain numbers -> float64 array (a right answer in a list is still right)."""
    v = _to_numpy(v)
    if isinstance(v, (list, tuple)) and v and all(
            isinstance(e, (int, float, np.floating)) and not isinstance(e, bool) for e in v):
        return np.array(v, dtype=np.float64)
    return v


def _n_layers(case) -> int:
    return sum(1 for k in case if k.startswith("W"))


def _build(case):
    import torch
    from torch import nn

    act = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[case["kind"]]
    L = _n_layers(case)
    layers = []
    for i in range(L):
        W = torch.from_numpy(case[f"W{i}"].copy())
        lin = nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(torch.from_numpy(case[f"b{i}"].copy()))
        layers.append(lin)
        if i < L - 1:
            layers.append(act())
    return nn.Sequential(*layers)


def _hooks_left(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def _forward_numpy(case):
    """Pre-activations z and activations a of every hidden layer, in NumPy."""
    f = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}[case["kind"]]
    h, zs, acts = case["x"], [], []
    for i in range(_n_layers(case) - 1):
        z = h @ case[f"W{i}"].T + case[f"b{i}"]
        h = f(z)
        zs.append(z)
        acts.append(h)
    return zs, acts


def _saturation(a, kind, threshold, normalize=True):
    if kind == "sigmoid":
        d = a * (1 - a) / (0.25 if normalize else 1.0)
    elif kind == "tanh":
        d = 1 - a ** 2
    else:
        d = (a > 0).astype(float)
    return float(np.mean(d < threshold))


def _saturations(case, of: str = "a", normalize: bool = True) -> np.ndarray:
    """The fraction of saturated units of each hidden layer, measured on its activations a (or, a mistake, on
    its pre-activations z, or without dividing sigmoid's derivative by its maximum)."""
    zs, acts = _forward_numpy(case)
    return np.array([_saturation(v, case["kind"], case["threshold"], normalize=normalize)
                     for v in (acts if of == "a" else zs)])


_HOOKS_MSG = ("your function left hooks registered on the model; keep the handles that register_forward_hook / "
              "register_full_backward_hook return and call handle.remove() before returning (or use try/finally)")


@register
class LayerSaturation(Exercise):
    name = "ch2_layer_saturation"
    title = "fraction of saturated units per activation layer, recorded with forward hooks"
    hints = (
        "A forward hook sees every activation module's output during one ordinary forward pass; record the "
        "outputs in a list (in the order the hooks fire, which is the forward order), then remove the hooks.",
        "Each recorded output a is (N, width); the local derivative is a function of a alone, so the fraction "
        "of saturated units of that layer is a mean over all N * width entries.",
        "ratio = derivative / its maximum (sigmoid: a(1-a) / 0.25, tanh: 1 - a^2, ReLU: 1 where a > 0); the "
        "fraction is the mean of (ratio < threshold).",
    )
    references = ("bncourse.hooks:HookRecorder", "bncourse.hooks:saturation_fraction", "bncourse.hooks:layer_stats")
    mistakes = (
        Mistake("percentages", "these are percentages; return fractions between 0 and 1",
                lambda c: {"saturated": 100 * _saturations(c)}),
        Mistake("pre_activations", "you measured the pre-activations z; the statistic is about the activation's "
                "output a = f(z), whose local derivative is computed from a (sigmoid: a(1-a), tanh: 1-a^2)",
                lambda c: {"saturated": _saturations(c, of="z")}),
        Mistake("sigmoid_unnormalized", "compare the derivative with threshold * its maximum: sigmoid's derivative "
                "a(1-a) peaks at 0.25, so divide by 0.25 first",
                lambda c: {"saturated": _saturations(c, normalize=False)} if c["kind"] == "sigmoid" else None),
        Mistake("reversed", "the fractions are in reverse order: return one per activation module in forward order "
                "(the first hidden layer first)", lambda c: {"saturated": _saturations(c)[::-1]}),
    )

    def cases(self, rng):
        out = []
        for kind, scale, thr in (("sigmoid", 6.0, 0.1), ("tanh", 3.0, 0.1), ("relu", 1.0, 0.1),
                                 ("sigmoid", 10.0, 0.3), ("tanh", 1.5, 0.05)):
            case = _net_case(rng, kind, [5, 8, 8, 6, 3], 40, scale)
            case["threshold"] = thr
            out.append(case)
        return out

    def run(self, fn, case):
        import torch

        model = _build(case)
        res = fn(model, torch.from_numpy(case["x"].copy()), case["threshold"])
        return {"saturated": _to_numpy(res), "hooks_left": _hooks_left(model)}

    def verify(self, case, result):
        _, acts = _forward_numpy(case)
        counts = np.array([a.size for a in acts], dtype=float)        # N * width of each layer
        # a fraction is known to its resolution 1 / count, in float32 or float64 alike
        expect_fraction("saturated", _as_array(result["saturated"]), _saturations(case), counts,
                        mistakes=self.mistakes, case=case)
        expect(result["hooks_left"] == 0, _HOOKS_MSG)


@register
class GradNorms(Exercise):
    name = "ch2_grad_norms"
    title = "gradient norm at each activation's input, recorded with backward hooks"
    hints = (
        "A full backward hook sees, for its module, the gradient at the module's output (grad_output) and at its "
        "input (grad_input) while loss.backward() runs.",
        "Hooks fire in backward order, from the last activation to the first; grad_input[0] has the shape of the "
        "module's input, (N, width). Store each by its layer index, then remove the hooks.",
        "norm_l = sqrt(sum of squares of grad_input[0]) of activation l, with loss = F.cross_entropy(model(x), y) "
        "(the mean over the batch).",
    )
    references = ("bncourse.hooks:HookRecorder", "bncourse.hooks:layer_stats", "bncourse.hooks:weight_grad_norms")
    mistakes = (
        Mistake("backward_order", "the norms are in backward order (last layer first): backward hooks fire from the "
                "output towards the input, so reverse what they recorded (or store by layer index)",
                lambda c: {"norms": _grad_norms(c)["z"][::-1]}),
        Mistake("grad_output", "these are the gradients at the activation's OUTPUT a (grad_output); the exercise "
                "asks for dloss/dz at its INPUT (grad_input[0] of a full backward hook)",
                lambda c: {"norms": _grad_norms(c)["a"]}),
        Mistake("squared", "you returned squared norms; take the square root (torch.linalg.norm or .norm())",
                lambda c: {"norms": _grad_norms(c)["z"] ** 2}),
        Mistake("weight_grads", "these are the norms of the Linear layers' weight gradients, not of dloss/dz",
                lambda c: {"norms": _grad_norms(c)["W"]}),
        Mistake("summed_loss", "the loss was summed over the batch; use the mean cross-entropy (F.cross_entropy's "
                "default)", lambda c: {"norms": len(c["y"]) * _grad_norms(c)["z"]}),
    )

    def cases(self, rng):
        out = []
        for kind, scale in (("sigmoid", 1.0), ("tanh", 2.5), ("relu", 1.4), ("sigmoid", 4.0)):
            out.append(_net_case(rng, kind, [6, 10, 10, 10, 4], 24, scale, with_labels=True))
        return out

    def run(self, fn, case):
        import torch

        model = _build(case)
        res = fn(model, torch.from_numpy(case["x"].copy()), torch.from_numpy(case["y"].copy()))
        return {"norms": _to_numpy(res), "hooks_left": _hooks_left(model)}

    def verify(self, case, result):
        expect_array("norms", _as_array(result["norms"]), _grad_norms(case)["z"], rtol=1e-7, atol=1e-14,
                     mistakes=self.mistakes, case=case)
        expect(result["hooks_left"] == 0, _HOOKS_MSG)


def _grad_norms(case) -> dict[str, np.ndarray]:
    """Independent reference: the network written out by hand, gradients kept with retain_grad. The norms of
    dloss/dz at each activation's input ("z"), of dloss/da at its output ("a"), and of the weight gradients of
    the Linear layers before each activation ("W")."""
    import torch

    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[case["kind"]]
    L = _n_layers(case)
    h = torch.from_numpy(case["x"])
    zs, acts, lin_w = [], [], []
    for i in range(L):
        W = torch.from_numpy(case[f"W{i}"]).requires_grad_(True)
        lin_w.append(W)
        z = h @ W.T + torch.from_numpy(case[f"b{i}"])
        if i < L - 1:
            z.retain_grad()
            h = f(z)
            h.retain_grad()
            zs.append(z)
            acts.append(h)
        else:
            logits = z
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(case["y"]))
    loss.backward()
    return {"z": np.array([float(z.grad.norm()) for z in zs]), "a": np.array([float(a.grad.norm()) for a in acts]),
            "W": np.array([float(W.grad.norm()) for W in lin_w[:-1]])}


# ------------------------------------------------------------------------------------------------
# A derivation: the Kaiming std for leaky ReLU, in either mode
# ------------------------------------------------------------------------------------------------
@register
class KaimingStd(Exercise):
    name = "ch2_kaiming_std"
    title = "Kaiming std for a leaky ReLU with slope a, preserving the forward (fan_in) or backward (fan_out) pass"
    references = ("torch.nn.init:kaiming_normal_", "torch.nn.init:kaiming_uniform_", "torch.nn.init:calculate_gain")
    mistakes = (
        Mistake("fan_out_for_forward", "you used the other fan: mode='fan_in' preserves the forward pass, whose sum "
                "runs over fan_in", lambda c: {"std": _kaiming(c, fan="fan_out")} if c["mode"] == "fan_in" else None),
        Mistake("fan_in_for_backward", "you used the other fan: mode='fan_out' preserves the backward pass, whose sum "
                "runs over fan_out", lambda c: {"std": _kaiming(c, fan="fan_in")} if c["mode"] == "fan_out" else None),
        Mistake("slope_ignored", "the slope is ignored: the negative part keeps a^2 of its second moment, so the gain "
                "is 2 / (1 + a^2), not 2", lambda c: {"std": _kaiming(c, factor=lambda a: 1.0)}),
        Mistake("slope_not_squared", "the slope enters squared: E[f(z)^2] = (1 + a^2) / 2 * Var(z), so use 1 + a^2, "
                "not 1 + a", lambda c: {"std": _kaiming(c, factor=lambda a: 1 + a)}),
        Mistake("one_minus_a_squared", "(1 - a)^2 is not the factor: the two halves of a symmetric z ADD their second "
                "moments, (1 + a^2) / 2",
                lambda c: {"std": _kaiming(c, factor=lambda a: (1 - a) ** 2)} if c["negative_slope"] != 1 else None),
        Mistake("no_factor_2", "the factor 2 is missing: half of a symmetric input is negative, so E[f(z)^2] = (1 + "
                "a^2) / 2 * Var(z) and the variance of the weights is 2 / ((1 + a^2) fan)",
                lambda c: {"std": _kaiming(c) / np.sqrt(2.0)}),
        Mistake("variance", "you returned the variance 2 / ((1 + a^2) fan); the standard deviation is its square root",
                lambda c: {"std": _kaiming(c) ** 2}),
        Mistake("gain_inverted", "(1 + a^2) belongs in the denominator: the negative slope ADDS to the second moment, "
                "so the weights must be smaller, not larger", lambda c: {"std": _kaiming(c, factor=lambda a: 1 / (1 + a * a))}),
    )
    hints = (
        "Repeat He's argument with a leaky ReLU f(z) = z for z > 0 and a z for z < 0: for a symmetric z, what "
        "fraction of E[z^2] survives in E[f(z)^2]?",
        "Half of the mass keeps z^2, the other half becomes a^2 z^2, so E[f(z)^2] = (1 + a^2) / 2 * Var(z). "
        "Forward: Var(z_next) = fan_in * Var(w) * E[f(z)^2]. Backward: the gradient sums over the fan_out units "
        "a weight feeds, each scaled by f'(z), whose square averages to (1 + a^2) / 2 too.",
        "Choose Var(w) so that the factor per layer is 1: Var(w) * fan * (1 + a^2) / 2 = 1, with fan = fan_in "
        "or fan_out according to the mode; return its square root.",
    )

    def cases(self, rng):
        out = []
        for a, mode in ((0.0, "fan_in"), (0.2, "fan_in"), (0.2, "fan_out"), (0.01, "fan_out"), (1.0, "fan_in"),
                        (0.5, "fan_out")):
            fan_in, fan_out = (int(v) for v in rng.choice([20, 64, 100, 300, 784], size=2, replace=False))
            out.append({"fan_in": fan_in, "fan_out": fan_out, "negative_slope": a, "mode": mode})
        return out

    def run(self, fn, case):
        v = _to_numpy(fn(case["fan_in"], case["fan_out"], case["negative_slope"], case["mode"]))
        if isinstance(v, np.ndarray) and v.shape == ():
            v = float(v)
        return {"std": v}

    def verify(self, case, result):
        expect_scalar("std", result["std"], _kaiming(case), rtol=1e-6, mistakes=self.mistakes, case=case)


def _kaiming(case, *, fan: str | None = None, factor=lambda a: 1 + a * a) -> float:
    """sqrt(2 / (factor(a) * fan)), the fan of the case's mode unless ``fan`` names the other one."""
    n = case[fan or case["mode"]]
    return float(np.sqrt(2.0 / (factor(case["negative_slope"]) * n)))


# ------------------------------------------------------------------------------------------------
# Predict, then run: how fast Xavier's init fades through ReLU layers
# ------------------------------------------------------------------------------------------------
@register
class PredictReluXavier(Prediction):
    name = "ch2_predict_relu_xavier"
    title = "predict std(z_8) / std(z_1) in a ReLU stack of width 256 with Xavier's init"
    quantity = "std(z_8) / std(z_1), pre-activations of layer 8 against layer 1"
    truth = 2.0 ** -3.5
    rtol = 0.15
    mistakes = (
        predicted("no_decay", 1.0, "Xavier keeps the variance for a unit with slope 1 on both sides (tanh near 0); "
                  "ReLU zeroes the negative half, and with it half of the second moment, at every layer"),
        predicted("variance_ratio", 2.0 ** -7, "that is the ratio of the VARIANCES (one factor 1/2 per layer); the "
                  "std is its square root"),
        predicted("eight_layers", 2.0 ** -4, "between layer 1 and layer 8 there are 7 layers, not 8"),
        predicted("variance_over_eight", 2.0 ** -8, "that is the variance ratio over 8 layers; there are 7 between "
                  "layer 1 and layer 8, and the std is the square root of the variance ratio"),
        predicted("one_layer", 0.5, "1/2 is the factor of ONE layer, on the variance; it compounds over the 7 layers "
                  "between 1 and 8"),
    )
    hints = (
        "With fan_in = fan_out = 256, Xavier's variance is 1 / 256: the weights alone keep Var(z) the same "
        "from layer to layer when the activation is the identity.",
        "A ReLU keeps the positive half of a symmetric z: E[relu(z)^2] = Var(z) / 2, and the next layer's "
        "Var(z) = fan_in * Var(w) * E[relu(z)^2].",
        "Var(z_{l+1}) = Var(z_l) / 2; from layer 1 to layer 8 that happens 7 times, and the std is the square root "
        "of the variance.",
    )


# ------------------------------------------------------------------------------------------------
# Debugging: an initializer that reads fan_in from the wrong end of weight.shape
# ------------------------------------------------------------------------------------------------
_DEBUG_SHAPES = ((300, 100), (100, 400), (400, 50))      # (in_features, out_features); fan_in != fan_out
_STD_RTOL = 0.04        # a sample std over >= 20 000 weights is within 0.5 % (1 sigma) of the true one
_DEBUG_FAN_IN = np.array([a for a, b in _DEBUG_SHAPES], dtype=float)
_DEBUG_FAN_OUT = np.array([b for a, b in _DEBUG_SHAPES], dtype=float)


@register
class DebugInit(Exercise):
    name = "ch2_debug_init"
    title = "the fixed init_kaiming_(model): He-normal weights (std sqrt(2 / fan_in)), zero biases, every Linear"
    # not kaiming_uniform_: nn.Linear calls it when the checker builds the model
    references = ("torch.nn.init:kaiming_normal_",)
    mistakes = (
        Mistake("fan_in_from_shape_0", "the bug is still there: fan_in was read from weight.shape[0], which is "
                "out_features; an nn.Linear's weight is (out_features, in_features), so fan_in = weight.shape[1]",
                lambda c: {"w_std": np.sqrt(2.0 / _DEBUG_FAN_OUT)}),
        Mistake("default_init", "the weights keep nn.Linear's default init: your function did not change them (did "
                "it loop over model.modules() and write into each Linear's weight in place, under torch.no_grad()?)",
                lambda c: {"w_std": np.sqrt(1.0 / (3.0 * _DEBUG_FAN_IN))}),   # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        Mistake("no_factor_2", "the factor 2 is gone: He's std for ReLU is sqrt(2 / fan_in)",
                lambda c: {"w_std": np.sqrt(1.0 / _DEBUG_FAN_IN)}),
        Mistake("xavier", "that is Xavier's std sqrt(2 / (fan_in + fan_out)); the function should give He's sqrt(2 "
                "/ fan_in)", lambda c: {"w_std": np.sqrt(2.0 / (_DEBUG_FAN_IN + _DEBUG_FAN_OUT))}),
        Mistake("variance_as_std", "the weights have the variance 2 / fan_in as their std: normal_(0, std) takes the "
                "standard deviation", lambda c: {"w_std": 2.0 / _DEBUG_FAN_IN}),
    )
    hints = (
        "Compare each layer's weight std after init with sqrt(2 / in_features): which layers are off, and by "
        "which factor? The factor is the square root of a ratio of two layer sizes.",
        "nn.Linear(in_features, out_features) stores weight with shape (out_features, in_features): the first "
        "dimension is the number of OUTPUTS.",
        "fan_in is weight.shape[1] (or layer.in_features); the rest of the function is right.",
    )

    def cases(self, rng):
        return [{"seed": int(rng.integers(0, 2 ** 31 - 1))}]

    def run(self, fn, case):
        import torch
        from torch import nn

        with torch.random.fork_rng(devices=[]):      # the student's global generator is left as it was
            torch.manual_seed(case["seed"])
            layers = []
            for i, (a, b) in enumerate(_DEBUG_SHAPES):
                layers.append(nn.Linear(a, b))
                if i < len(_DEBUG_SHAPES) - 1:
                    layers.append(nn.ReLU())
            model = nn.Sequential(*layers)
            fn(model)
        res: dict[str, Any] = {}
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            w = lin.weight.detach().double()
            res[f"w_std_{i}"] = float(w.std())
            res[f"w_mean_{i}"] = float(w.mean())
            res[f"w_kurt_{i}"] = float((((w - w.mean()) / w.std()) ** 4).mean())
            res[f"b_absmax_{i}"] = float(lin.bias.detach().abs().max()) if lin.bias is not None else 0.0
            res[f"w_requires_grad_{i}"] = bool(lin.weight.requires_grad)
        return res

    def verify(self, case, result):
        got = np.array([result[f"w_std_{i}"] for i in range(len(_DEBUG_SHAPES))])
        want = np.sqrt(2.0 / _DEBUG_FAN_IN)
        ratio = got / want
        if not np.all(np.abs(ratio - 1) < _STD_RTOL):
            # a sample std is known to a few per cent: a mistake matches when every layer is within _STD_RTOL of it
            message = diagnose(got, want, self.mistakes, rtol=_STD_RTOL, atol=0.0, case=case, output="w_std")
            if message:
                raise CheckFailure(message)
            worst = int(np.argmax(np.abs(ratio - 1)))
            a, b = _DEBUG_SHAPES[worst]
            raise CheckFailure(
                f"the weights of nn.Linear({a}, {b}) have std {got[worst]:.4g}, expected sqrt(2 / {a}) = "
                f"{want[worst]:.4g} (within {100 * _STD_RTOL:g} %, far wider than the sampling noise)")
        for i, (a, b) in enumerate(_DEBUG_SHAPES):
            expect(abs(result[f"w_mean_{i}"]) < 0.05 * want[i],
                   f"the weights of nn.Linear({a}, {b}) are not centred at 0 (mean {result[f'w_mean_{i}']:.3g})")
            expect(result[f"w_kurt_{i}"] > 2.4,
                   f"the weights of nn.Linear({a}, {b}) look uniformly distributed (kurtosis "
                   f"{result[f'w_kurt_{i}']:.2f}; a normal has 3, a uniform 1.8): draw them from a normal with "
                   f"normal_(0, std)")
            expect(result[f"b_absmax_{i}"] == 0.0,
                   f"the bias of nn.Linear({a}, {b}) is not zero: the function sets every bias to 0")
            expect(result[f"w_requires_grad_{i}"],
                   "the weights no longer require grad: write into them in place under torch.no_grad() "
                   "instead of replacing or detaching them")
