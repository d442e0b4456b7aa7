"""Checks for chapter 2, vanishing and exploding gradients.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch2_init_std``          ``init_std(fan_in, fan_out, scheme) -> float``: the normal-init standard deviation of
                          ``"xavier"`` (Glorot) or ``"kaiming"`` (He, for ReLU)
``ch2_layer_saturation``  ``layer_saturation(model, x, threshold) -> (L,) array``: with forward hooks, the fraction of
                          units of each activation module whose local derivative is below ``threshold`` times its
                          maximum (sigmoid, tanh; for ReLU: outputs equal to 0)
``ch2_grad_norms``        ``grad_norms(model, x, y) -> (L,) array``: with backward hooks, the Frobenius norm of
                          d(mean cross-entropy)/dz at the input z of each activation module

``model`` is an ``nn.Sequential`` of ``Linear`` and activation modules in float64; ``x`` a float64 tensor (N, D);
``y`` an int64 tensor (N,). Hooks must be removed before the function returns.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise, expect, expect_array, expect_scalar, register

__all__ = ["InitStd", "LayerSaturation", "GradNorms"]


def _to_numpy(v: Any) -> Any:
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return v


@register
class InitStd(Exercise):
    name = "ch2_init_std"
    title = "Xavier and Kaiming standard deviations"
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
        expect_scalar("std", result["std"], want, rtol=1e-9, mistakes=mistakes)


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
        got = result["saturated"]
        if isinstance(got, (list, tuple)) and len(got) == len(want) and all(isinstance(v, (float, int)) for v in got):
            raise CheckFailure("saturated is a Python list; return np.array(...) of one fraction per activation layer")
        mistakes = {
            "these are percentages; return fractions between 0 and 1": 100 * want,
            "you measured the pre-activations z; the statistic is about the activation's output a = f(z), "
            "whose local derivative is computed from a (sigmoid: a(1-a), tanh: 1-a^2)":
                np.array([_saturation(z, kind, thr) for z in zs]),
        }
        if kind == "sigmoid":
            mistakes["compare the derivative with threshold * its maximum: sigmoid's derivative a(1-a) peaks at 0.25, "
                     "so divide by 0.25 first"] = np.array([_saturation(a, kind, thr, normalize=False) for a in acts])
        expect_array("saturated", got, want, rtol=1e-9, atol=1e-12, mistakes=mistakes)
        expect(result["hooks_left"] == 0, _HOOKS_MSG)


@register
class GradNorms(Exercise):
    name = "ch2_grad_norms"
    title = "gradient norm at each activation's input, recorded with backward hooks"
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
        expect_array("norms", result["norms"], want, rtol=1e-7, atol=1e-14, mistakes={
            "these are the gradients at the activation's OUTPUT a (grad_output); the exercise asks for dloss/dz at "
            "its INPUT (grad_input[0] of a full backward hook)": np.array([float(a.grad.norm()) for a in acts]),
            "you returned squared norms; take the square root (torch.linalg.norm or .norm())": want ** 2,
            "these are the norms of the Linear layers' weight gradients, not of dloss/dz":
                np.array([float(W.grad.norm()) for W in lin_w[:-1]]),
            "the loss was summed over the batch; use the mean cross-entropy (F.cross_entropy's default)": n * want,
        })
        expect(result["hooks_left"] == 0, _HOOKS_MSG)
