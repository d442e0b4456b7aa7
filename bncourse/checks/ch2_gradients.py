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

from .core import CheckFailure, Exercise, expect, expect_array, expect_scalar, register
from .predict import Prediction

try:   # the framework's fraction comparison (absolute tolerance at the fraction's resolution)
    from .core import expect_fraction
except ImportError:  # pragma: no cover - an older core without it: the same rule, written here
    def expect_fraction(name, got, want, count, *, mistakes=None):
        want = np.asarray(want, dtype=np.float64)
        atol = np.maximum(0.25 / np.maximum(np.asarray(count, dtype=np.float64), 1.0), 1e-6)
        if type(got) is np.ndarray and got.dtype.kind == "f":
            got = got.astype(np.float64)
        expect_array(name, got, want, rtol=0.0, atol=float(np.min(atol)), mistakes=mistakes)

__all__ = ["InitStd", "LayerSaturation", "GradNorms", "KaimingStd", "PredictReluXavier", "DebugInit"]


def _to_numpy(v: Any) -> Any:
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return v


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
        fi, fo, scheme = case["fan_in"], case["fan_out"], case["scheme"]
        if scheme == "xavier":
            want = np.sqrt(2.0 / (fi + fo))
            mistakes = {
                "you returned the variance 2 / (fan_in + fan_out); the standard deviation is its square root":
                    2.0 / (fi + fo),
                "that is the bound of Xavier's UNIFORM init, sqrt(6 / (fan_in + fan_out)); the normal init's std is "
                "sqrt(2 / (fan_in + fan_out))": np.sqrt(6.0 / (fi + fo)),
                "you used only fan_in (LeCun's 1 / fan_in); Xavier averages fan_in and fan_out: "
                "sqrt(2 / (fan_in + fan_out))": np.sqrt(1.0 / fi),
                "the factor 2 is missing: Xavier's variance is 2 / (fan_in + fan_out)": np.sqrt(1.0 / (fi + fo)),
                "that is Kaiming's std sqrt(2 / fan_in); Xavier is sqrt(2 / (fan_in + fan_out))": np.sqrt(2.0 / fi),
            }
        else:
            want = np.sqrt(2.0 / fi)
            mistakes = {
                "you used fan_out instead of fan_in: Kaiming's forward-pass std is sqrt(2 / fan_in) (fan_in = number "
                "of inputs of a unit = weight.shape[1] of an nn.Linear)": np.sqrt(2.0 / fo),
                "the factor 2 is missing (that is LeCun's init): ReLU zeroes half its inputs, so He doubles the "
                "variance: sqrt(2 / fan_in)": np.sqrt(1.0 / fi),
                "you returned the variance 2 / fan_in; the standard deviation is its square root": 2.0 / fi,
                "that is the bound of Kaiming's UNIFORM init, sqrt(6 / fan_in); the normal init's std is "
                "sqrt(2 / fan_in)": np.sqrt(6.0 / fi),
                "that is Xavier's std; Kaiming (for ReLU) is sqrt(2 / fan_in)": np.sqrt(2.0 / (fi + fo)),
            }
        # rtol 1e-6: a float32 computation (torch.tensor(2 / fan_in).sqrt()) is a right answer
        expect_scalar("std", result["std"], want, rtol=1e-6, mistakes=mistakes)


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
        kind, thr = case["kind"], case["threshold"]
        zs, acts = _forward_numpy(case)
        want = np.array([_saturation(a, kind, thr) for a in acts])
        got = _as_array(result["saturated"])
        counts = np.array([a.size for a in acts], dtype=float)        # N * width of each layer
        mistakes = {
            "these are percentages; return fractions between 0 and 1": 100 * want,
            "you measured the pre-activations z; the statistic is about the activation's output a = f(z), "
            "whose local derivative is computed from a (sigmoid: a(1-a), tanh: 1-a^2)":
                np.array([_saturation(z, kind, thr) for z in zs]),
        }
        if kind == "sigmoid":
            mistakes["compare the derivative with threshold * its maximum: sigmoid's derivative a(1-a) peaks at 0.25, "
                     "so divide by 0.25 first"] = np.array([_saturation(a, kind, thr, normalize=False) for a in acts])
        mistakes["the fractions are in reverse order: return one per activation module in forward order (the "
                 "first hidden layer first)"] = want[::-1]
        # a fraction is known to its resolution 1 / count, in float32 or float64 alike
        expect_fraction("saturated", got, want, counts, mistakes=mistakes)
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
        import torch

        # independent reference: the same network written out by hand, gradients kept with retain_grad
        kind = case["kind"]
        f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[kind]
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
        y = torch.from_numpy(case["y"])
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        want = np.array([float(z.grad.norm()) for z in zs])
        n = len(case["y"])
        expect_array("norms", _as_array(result["norms"]), want, rtol=1e-7, atol=1e-14, mistakes={
            "the norms are in backward order (last layer first): backward hooks fire from the output towards the "
            "input, so reverse what they recorded (or store by layer index)": want[::-1],
            "these are the gradients at the activation's OUTPUT a (grad_output); the exercise asks for dloss/dz at "
            "its INPUT (grad_input[0] of a full backward hook)": np.array([float(a.grad.norm()) for a in acts]),
            "you returned squared norms; take the square root (torch.linalg.norm or .norm())": want ** 2,
            "these are the norms of the Linear layers' weight gradients, not of dloss/dz":
                np.array([float(W.grad.norm()) for W in lin_w[:-1]]),
            "the loss was summed over the batch; use the mean cross-entropy (F.cross_entropy's default)": n * want,
        })
        expect(result["hooks_left"] == 0, _HOOKS_MSG)


# ------------------------------------------------------------------------------------------------
# A derivation: the Kaiming std for leaky ReLU, in either mode
# ------------------------------------------------------------------------------------------------
@register
class KaimingStd(Exercise):
    name = "ch2_kaiming_std"
    title = "Kaiming std for a leaky ReLU with slope a, preserving the forward (fan_in) or backward (fan_out) pass"
    references = ("torch.nn.init:kaiming_normal_", "torch.nn.init:kaiming_uniform_", "torch.nn.init:calculate_gain")
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
        fi, fo, a, mode = case["fan_in"], case["fan_out"], case["negative_slope"], case["mode"]
        fan, other = (fi, fo) if mode == "fan_in" else (fo, fi)
        want = np.sqrt(2.0 / ((1 + a * a) * fan))
        expect_scalar("std", result["std"], want, rtol=1e-6, mistakes={
            f"you used the other fan: mode={mode!r} preserves the "
            f"{'forward pass, whose sum runs over fan_in' if mode == 'fan_in' else 'backward pass, whose sum runs over fan_out'}":
                np.sqrt(2.0 / ((1 + a * a) * other)),
            "the slope is ignored: the negative part keeps a^2 of its second moment, so the gain is "
            "2 / (1 + a^2), not 2": np.sqrt(2.0 / fan),
            "the slope enters squared: E[f(z)^2] = (1 + a^2) / 2 * Var(z), so use 1 + a^2, not 1 + a":
                np.sqrt(2.0 / ((1 + a) * fan)),
            "(1 - a)^2 is not the factor: the two halves of a symmetric z ADD their second moments, "
            "(1 + a^2) / 2": np.sqrt(2.0 / ((1 - a) ** 2 * fan)) if a != 1 else np.nan,
            "the factor 2 is missing: half of a symmetric input is negative, so E[f(z)^2] = (1 + a^2) / 2 * Var(z) "
            "and the variance of the weights is 2 / ((1 + a^2) fan)": np.sqrt(1.0 / ((1 + a * a) * fan)),
            "you returned the variance 2 / ((1 + a^2) fan); the standard deviation is its square root":
                2.0 / ((1 + a * a) * fan),
            "(1 + a^2) belongs in the denominator: the negative slope ADDS to the second moment, so the weights "
            "must be smaller, not larger": np.sqrt(2.0 * (1 + a * a) / fan),
        })


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
    wrong = (
        (1.0, "Xavier keeps the variance for a unit with slope 1 on both sides (tanh near 0); ReLU zeroes the "
              "negative half, and with it half of the second moment, at every layer"),
        (2.0 ** -7, "that is the ratio of the VARIANCES (one factor 1/2 per layer); the std is its square root"),
        (2.0 ** -4, "between layer 1 and layer 8 there are 7 layers, not 8"),
        (2.0 ** -8, "that is the variance ratio over 8 layers; there are 7 between layer 1 and layer 8, and the "
                    "std is the square root of the variance ratio"),
        (0.5, "1/2 is the factor of ONE layer, on the variance; it compounds over the 7 layers between 1 and 8"),
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


@register
class DebugInit(Exercise):
    name = "ch2_debug_init"
    title = "the fixed init_kaiming_(model): He-normal weights (std sqrt(2 / fan_in)), zero biases, every Linear"
    # not kaiming_uniform_: nn.Linear calls it when the checker builds the model
    references = ("torch.nn.init:kaiming_normal_",)
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
        fan_in = np.array([a for a, b in _DEBUG_SHAPES], dtype=float)
        fan_out = np.array([b for a, b in _DEBUG_SHAPES], dtype=float)
        want = np.sqrt(2.0 / fan_in)
        default = np.sqrt(1.0 / (3.0 * fan_in))       # nn.Linear's own init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        candidates = {
            "the bug is still there: fan_in was read from weight.shape[0], which is out_features; an nn.Linear's "
            "weight is (out_features, in_features), so fan_in = weight.shape[1]": np.sqrt(2.0 / fan_out),
            "the weights keep nn.Linear's default init: your function did not change them (did it loop over "
            "model.modules() and write into each Linear's weight in place, under torch.no_grad()?)": default,
            "the factor 2 is gone: He's std for ReLU is sqrt(2 / fan_in)": np.sqrt(1.0 / fan_in),
            "that is Xavier's std sqrt(2 / (fan_in + fan_out)); the function should give He's sqrt(2 / fan_in)":
                np.sqrt(2.0 / (fan_in + fan_out)),
            "the weights have the variance 2 / fan_in as their std: normal_(0, std) takes the standard deviation":
                2.0 / fan_in,
        }
        ratio = got / want
        if not np.all(np.abs(ratio - 1) < _STD_RTOL):
            for message, alt in candidates.items():
                if np.all(np.abs(got / alt - 1) < _STD_RTOL):
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
