"""Look inside a network while it runs: forward and backward hooks, the systematic "print inside forward".

    model = mlp([784, 100, 100, 10], activation="sigmoid")
    with HookRecorder(model) as rec:            # hooks every Sigmoid / Tanh / ReLU module by default
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    rec.names                   # ["2", "4"]: the recorded modules, in forward order
    rec.inputs["2"]             # (N, 100) pre-activation z fed to that activation
    rec.outputs["2"]            # (N, 100) activation a = f(z)
    rec.grad_outputs["2"]       # (N, 100) dloss/da
    rec.grad_inputs["2"]        # (N, 100) dloss/dz
    layer_stats(rec)            # one row per layer: mean, std, % saturated, gradient norms

A forward hook ``hook(module, inputs, output)`` runs right after ``module.forward``; a full backward
hook ``hook(module, grad_inputs, grad_outputs)`` runs when autograd has the gradients with respect to
the module's input and output. Both are stored detached (no graph is kept alive). Remove the hooks
when done (the context manager does); forgotten hooks keep recording and keep memory.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATION_TYPES",
    "HookRecorder",
    "saturation_fraction",
    "layer_stats",
    "weight_grad_norms",
    "update_to_data_ratios",
    "UpdateRatioTracker",
    "percentiles",
    "buffers_restored",
    "module_input",
]

ACTIVATION_TYPES = (nn.Sigmoid, nn.Tanh, nn.ReLU)


def _is_activation(name: str, module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_TYPES)


class HookRecorder:
    """Record inputs, outputs and their gradients of selected modules of ``model``.

    Args:
        model: any ``nn.Module``.
        select: ``select(name, module) -> bool`` picks the modules to hook (default: activations).
        backward: also register full backward hooks (gradients). Turn off for inference-only probes.

    After a forward pass ``inputs[name]`` and ``outputs[name]`` hold the latest tensors; after
    ``loss.backward()`` ``grad_inputs[name]`` and ``grad_outputs[name]`` hold dloss/d(input) and
    dloss/d(output). Each new pass overwrites the previous one.
    """

    def __init__(self, model: nn.Module, select: Callable[[str, nn.Module], bool] = _is_activation,
                 backward: bool = True):
        self.modules: dict[str, nn.Module] = {n: m for n, m in model.named_modules() if n and select(n, m)}
        if not self.modules:
            raise ValueError("HookRecorder selected no module; check the select function "
                             "(by default it hooks nn.Sigmoid, nn.Tanh and nn.ReLU modules)")
        self.names: list[str] = list(self.modules)
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}
        self.grad_inputs: dict[str, Tensor] = {}
        self.grad_outputs: dict[str, Tensor] = {}
        self._handles = []
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
            if backward:
                self._handles.append(module.register_full_backward_hook(self._backward_hook(name)))

    def _forward_hook(self, name):
        def hook(module, inputs, output):
            self.inputs[name] = inputs[0].detach()
            self.outputs[name] = output.detach()
        return hook

    def _backward_hook(self, name):
        def hook(module, grad_inputs, grad_outputs):
            if grad_inputs[0] is not None:
                self.grad_inputs[name] = grad_inputs[0].detach()
            self.grad_outputs[name] = grad_outputs[0].detach()
        return hook

    def clear(self) -> None:
        """Forget the recorded tensors (the hooks stay)."""
        for d in (self.inputs, self.outputs, self.grad_inputs, self.grad_outputs):
            d.clear()

    def remove(self) -> None:
        """Remove every hook this recorder registered."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "HookRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def saturation_fraction(output: Tensor, activation: str | nn.Module, threshold: float = 0.1) -> float:
    """Fraction of units whose local derivative is below ``threshold`` times its maximum.

    Computed from the activation's output ``a = f(z)`` alone:

    ===========  ======================  ==========================  ===================================
    activation   f'(z) from a            max f'                      saturated (threshold 0.1) when
    ===========  ======================  ==========================  ===================================
    sigmoid      a (1 - a)               1/4 at z = 0                a < 0.026 or a > 0.974 (abs z > 3.6)
    tanh         1 - a^2                 1 at z = 0                  abs(a) > 0.949 (abs z > 1.8)
    relu         1 if a > 0 else 0       1                           a == 0 ("dead" for this example)
    ===========  ======================  ==========================  ===================================

    A saturated unit passes almost no gradient back: that is what makes gradients vanish.
    """
    kind = activation if isinstance(activation, str) else type(activation).__name__.lower()
    a = output.detach().double()
    if kind == "sigmoid":
        ratio = a * (1 - a) / 0.25
    elif kind == "tanh":
        ratio = 1 - a ** 2
    elif kind == "relu":
        ratio = (a > 0).double()
    else:
        raise ValueError(f"activation must be 'sigmoid', 'tanh' or 'relu'; got {activation!r}")
    return float((ratio < threshold).double().mean())


def layer_stats(rec: HookRecorder, threshold: float = 0.1) -> list[dict]:
    """One dict per recorded activation, in forward order.

    Keys: ``layer`` (1-based), ``name``, ``kind``, ``z_std`` (pre-activation std), ``a_mean``,
    ``a_std``, ``saturated`` (fraction, see :func:`saturation_fraction`), and when gradients were
    recorded ``grad_a_norm`` / ``grad_z_norm``: the Frobenius norm of dloss/da and dloss/dz.
    """
    rows = []
    for i, name in enumerate(rec.names):
        module, z, a = rec.modules[name], rec.inputs.get(name), rec.outputs.get(name)
        if a is None:
            raise RuntimeError(f"no forward pass recorded for {name!r}; run the model inside the recorder")
        kind = type(module).__name__.lower()
        row = {"layer": i + 1, "name": name, "kind": kind, "z_std": float(z.double().std()),
               "a_mean": float(a.double().mean()), "a_std": float(a.double().std()),
               "saturated": saturation_fraction(a, kind, threshold)}
        if name in rec.grad_outputs:
            row["grad_a_norm"] = float(rec.grad_outputs[name].double().norm())
        if name in rec.grad_inputs:
            row["grad_z_norm"] = float(rec.grad_inputs[name].double().norm())
        rows.append(row)
    return rows


def _linear_weights(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [(n, m.weight) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def weight_grad_norms(model: nn.Module) -> list[float]:
    """Frobenius norm of ``weight.grad`` of every ``nn.Linear``, in order (call after backward)."""
    out = []
    for name, w in _linear_weights(model):
        if w.grad is None:
            raise RuntimeError(f"Linear {name!r} has no gradient yet: call loss.backward() first")
        out.append(float(w.grad.double().norm()))
    return out


def update_to_data_ratios(model: nn.Module, lr: float) -> list[float]:
    """``std(lr * grad) / std(weight)`` for each ``nn.Linear`` weight: the relative size of one SGD step.

    A common rule of thumb (Karpathy) puts a healthy value near ``1e-3``: much smaller and the layer
    barely learns, much larger and each step rewrites the weights.
    """
    out = []
    for name, w in _linear_weights(model):
        if w.grad is None:
            raise RuntimeError(f"Linear {name!r} has no gradient yet: call loss.backward() first")
        out.append(float((lr * w.grad).double().std() / w.detach().double().std()))
    return out


class UpdateRatioTracker:
    """Measure the update that an optimizer step really made: ``std(W_after - W_before) / std(W_before)``.

    Works for any optimizer (momentum, Adam), unlike :func:`update_to_data_ratios`::

        tracker = UpdateRatioTracker(model)
        tracker.before(); opt.step(); tracker.after()    # appends one row to tracker.history
    """

    def __init__(self, model: nn.Module):
        self.weights = _linear_weights(model)
        self.history: list[list[float]] = []
        self._before: list[Tensor] | None = None

    def before(self) -> None:
        self._before = [w.detach().clone() for _, w in self.weights]

    def after(self) -> list[float]:
        if self._before is None:
            raise RuntimeError("call before() ahead of the optimizer step")
        row = [float((w.detach() - w0).double().std() / w0.double().std())
               for (_, w), w0 in zip(self.weights, self._before)]
        self.history.append(row)
        self._before = None
        return row


def percentiles(values: Tensor | Iterable[float], qs=(15, 50, 85)) -> list[float]:
    """The ``qs`` percentiles of ``values`` (the paper's 15th / 50th / 85th plot)."""
    v = torch.as_tensor(values).detach().double().flatten()
    return [float(torch.quantile(v, q / 100.0)) for q in qs]



@contextmanager
def buffers_restored(model: nn.Module) -> Iterator[nn.Module]:
    """Save every buffer of ``model`` (batch norm's ``running_mean``, ``running_var``,
    ``num_batches_tracked``) and the train/eval mode of every module; put them back on exit.

    Lets a measurement run the model in training mode without leaving a trace::

        with buffers_restored(model):
            model.train()
            model(x_probe)          # BN normalizes with x_probe's own statistics and updates its buffers
        # buffers and modes are exactly as before
    """
    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    modes = {name: m.training for name, m in model.named_modules()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])
        for name, m in model.named_modules():
            m.training = modes[name]


@torch.no_grad()
def module_input(model: nn.Module, x: Tensor, module: nn.Module, *, batch_stats: bool = True) -> Tensor:
    """The input that ``module`` (a submodule of ``model``) receives when ``model`` runs on ``x``.

    Args:
        model: the network; left exactly as it was (buffers and train/eval modes restored).
        x: a batch, e.g. (N, D).
        module: the submodule whose input is recorded, e.g. one ``nn.Sigmoid``.
        batch_stats: True runs ``model`` in training mode, so every batch norm layer normalizes with
            the statistics of ``x`` itself: what the next layer sees during training (the paper's
            training network). False runs it in eval mode (running statistics, as at inference).
            Other train-mode behaviour (dropout) also follows this flag.

    Returns:
        the module's first input, detached, e.g. (N, C) pre-activations.
    """
    with buffers_restored(model), HookRecorder(model, select=lambda n, m: m is module, backward=False) as rec:
        model.train(batch_stats)
        model(x)
    return rec.inputs[rec.names[0]]
