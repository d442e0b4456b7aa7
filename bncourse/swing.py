"""Chapter 5's swing study: train a BN network once and evaluate it with several kinds of BN statistics.

In eval mode a BN layer normalizes with stored statistics. This module compares four ways of
getting them, all for the *same* trained weights:

``running``     PyTorch's exponential moving average, momentum 0.1 (what ``model.eval()`` uses)
``ema <m>``     the same average with another momentum ``m``, tracked by :class:`ExtraEMAs` during
                the same training run (momentum does not change the weights: training mode
                normalizes with batch statistics, so several averages can ride along for free)
``cumulative``  batch statistics averaged with equal weights over a pass of training batches at
                the final weights, BN layers in training mode (``momentum=None``; the paper's
                Algorithm 2 and ``torch.optim.swa_utils.update_bn``)
``exact``       the mean and variance of each BN layer's input over training images, measured in
                eval mode, layer after layer (:func:`sequential_population_statistics`)

:func:`train_recording` trains once with one progress bar and records all of them after every
epoch. :func:`branch_last_epoch` re-runs the last epoch from a saved state with another learning
rate schedule (a controlled comparison: everything before it is identical).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .population_stats import bn_modules, merge_block, population_statistics
from .train import History, evaluate, train

__all__ = ["ExtraEMAs", "with_statistics", "sequential_population_statistics", "statistics_of",
           "SwingRecord", "evaluate_statistics", "train_recording", "branch_last_epoch"]


def _batch_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and unbiased variance of a BN input: x (N, C) or (N, C, H, W) -> (C,), (C,)."""
    dims = (0,) if x.dim() == 2 else (0, 2, 3)
    var, mean = torch.var_mean(x, dim=dims, correction=1)
    return mean, var


class ExtraEMAs:
    """Extra running averages of every BN layer's batch statistics, kept by forward pre-hooks.

    For each momentum ``m`` in ``momenta`` and each BN layer, in training mode only::

        mean_m <- (1 - m) * mean_m + m * batch_mean       (start 0)
        var_m  <- (1 - m) * var_m  + m * batch_var        (start 1; unbiased batch variance)

    the update ``torch.nn.BatchNorm`` applies to ``running_mean``/``running_var`` (so momentum 0.1
    reproduces them). The hooks read the layer's input and change nothing in the model.
    Call :meth:`remove` when done.
    """

    def __init__(self, model: nn.Module, momenta=(0.01,)):
        self.momenta = tuple(momenta)
        self.layers = [m for _, m in bn_modules(model)]
        self.stats = {m: [(torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var))
                          for bn in self.layers] for m in self.momenta}
        self._handles = [bn.register_forward_pre_hook(self._hook(i)) for i, bn in enumerate(self.layers)]

    def _hook(self, index: int):
        def hook(module, inputs):
            if not module.training or module is not self.layers[index]:
                return                                   # eval mode, or a deep copy of the model
            with torch.no_grad():
                batch_mean, batch_var = _batch_mean_var(inputs[0])
                for m in self.momenta:
                    mean, var = self.stats[m][index]
                    mean.mul_(1 - m).add_(batch_mean, alpha=m)
                    var.mul_(1 - m).add_(batch_var, alpha=m)
        return hook

    def statistics(self, momentum: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(mean (C,), var (C,)), ...]``, one pair per BN layer, for one of the momenta."""
        return [(mean.clone(), var.clone()) for mean, var in self.stats[momentum]]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def statistics_of(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The stored ``(running_mean, running_var)`` of every BN layer of ``model``, copied."""
    return [(bn.running_mean.detach().clone(), bn.running_var.detach().clone()) for _, bn in bn_modules(model)]


def with_statistics(model: nn.Module, stats) -> nn.Module:
    """A deep copy of ``model`` whose BN layers use ``stats`` (``[(mean, var), ...]``, one per layer)."""
    target = copy.deepcopy(model)
    layers = [bn for _, bn in bn_modules(target)]
    if len(layers) != len(stats):
        raise ValueError(f"model has {len(layers)} BN layers, got statistics for {len(stats)}")
    with torch.no_grad():
        for bn, (mean, var) in zip(layers, stats):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    return target


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N * ..., C) float64: one row per value of each channel."""
    return x.detach().transpose(0, 1).reshape(x.shape[1], -1).T.double()


def sequential_population_statistics(model: nn.Sequential, x: torch.Tensor, *, batch_size: int = 1024) -> nn.Sequential:
    """Exact population statistics of every BN layer of a ``Sequential``, in about one forward pass.

    Same result as ``population_statistics(model, loader, method="exact")`` (each BN layer gets the
    float64 mean and unbiased variance of its eval-mode input over all of ``x``, with the earlier
    BN layers already using their new statistics), but instead of one pass over the data per BN
    layer it walks the layers once: the activations of all of ``x`` are kept (in chunks of
    ``batch_size``) at the input of the next ``Conv2d``, ``Linear`` or BN layer and moved forward
    layer by layer. Memory: the largest such activation of all of ``x`` (for LeNet on 60,000 images,
    the first convolution's output, about 0.8 GB in float32).

    Args:
        model: an ``nn.Sequential`` whose BN layers track running statistics; not changed.
        x: (N, ...) training inputs the statistics are measured on, on the model's device.

    Returns:
        A deep copy of ``model`` with the new statistics, in eval mode.
    """
    target = copy.deepcopy(model).eval()
    layers = list(target)
    bn_ids = {id(bn) for _, bn in bn_modules(target)}
    chunks = list(torch.split(x, batch_size))                 # activations at the current point
    start = 0                                                  # index of the first layer not yet applied
    with torch.no_grad():
        for i, layer in enumerate(layers):
            if not (isinstance(layer, (nn.Conv2d, nn.Linear)) or id(layer) in bn_ids):
                continue
            # move the stored activations forward to the input of layer i
            chunks = [nn.Sequential(*layers[start:i])(c) for c in chunks] if i > start else chunks
            start = i
            if id(layer) not in bn_ids:
                continue
            count, mean, m2 = 0, None, None
            for c in chunks:
                count, mean, m2 = merge_block(count, mean, m2, _rows(c))
            if count < 2:
                raise ValueError("need at least 2 values per feature for a variance")
            layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
            layer.running_var.copy_((m2 / (count - 1)).to(layer.running_var.dtype))
    return target


def evaluate_statistics(model: nn.Module, test_loader, stats_x: torch.Tensor, *, extra: dict | None = None,
                        stats_batch_size: int = 256, statistics_out: dict | None = None) -> dict[str, float]:
    """Test accuracy of ``model``'s current weights with each kind of BN statistics.

    Args:
        model: a trained BN network (``nn.Sequential``); not changed.
        test_loader: the test batches.
        stats_x: (n, ...) training images that the cumulative and exact statistics are measured on.
        extra: ``{momentum: [(mean, var), ...]}`` (e.g. from :meth:`ExtraEMAs.statistics`), evaluated
            too (keys ``"ema <m>"``).
        stats_batch_size: batch size of the cumulative pass (the training batch size).
        statistics_out: if given, filled with ``{"cumulative": [(mean, var), ...], "exact": [...]}``,
            the statistics measured here (one pair per BN layer).

    Returns:
        ``{"running": acc, "ema <m>": acc, ..., "cumulative": acc, "exact": acc}``.
    """
    out = {"running": evaluate(model, test_loader)[1]}
    for m, stats in (extra or {}).items():
        out[f"ema {m:g}"] = evaluate(with_statistics(model, stats), test_loader)[1]
    cumulative = population_statistics(model, torch.split(stats_x, stats_batch_size), method="cumulative")
    out["cumulative"] = evaluate(cumulative, test_loader)[1]
    exact = sequential_population_statistics(model, stats_x)
    out["exact"] = evaluate(exact, test_loader)[1]
    if statistics_out is not None:
        statistics_out.update(cumulative=statistics_of(cumulative), exact=statistics_of(exact))
    return out


@dataclass
class SwingRecord:
    """What :func:`train_recording` keeps for one run."""
    history: History
    model: nn.Module | None = None                                   # the trained network
    extra_stats: dict = field(default_factory=dict)                  # momentum -> final extra EMAs
    test_acc: dict[str, list[float]] = field(default_factory=dict)   # kind -> one value per epoch
    eval_seconds: float = 0.0                                        # time of the extra evaluations
    last_epoch_start: dict | None = None                             # state to branch the last epoch from
    states_before_end: dict[int, dict] = field(default_factory=dict)  # steps before the end -> state_dict
    final_test_acc: dict[str, float] = field(default_factory=dict)   # kind -> after training, statistics on all images
    final_statistics: dict[str, list] = field(default_factory=dict)  # "cumulative"/"exact" -> [(mean, var), ...]


def _state(model, train_loader):
    return {"model": copy.deepcopy(model.state_dict()),
            "generator": train_loader.generator.get_state() if train_loader.generator is not None else None}


def train_recording(model: nn.Module, train_loader, test_loader, stats_x: torch.Tensor, *, epochs: int,
                    lr: float, momenta=(0.01,), extra_per_epoch: bool = False, keep_states_before_end=(),
                    desc: str = "training", progress=True) -> SwingRecord:
    """Train with SGD (one progress bar) and record every kind of BN statistics after each epoch.

    After every epoch the test accuracy is measured with the running statistics and with cumulative
    and exact statistics measured on ``stats_x`` (see :func:`evaluate_statistics`); one extra EMA
    per momentum in ``momenta`` is tracked during training (evaluated every epoch only if
    ``extra_per_epoch``; its final value is kept in ``record.extra_stats``). The state at the start of the last epoch (weights,
    buffers and the shuffling generator) is saved for :func:`branch_last_epoch`, and the weights
    ``k`` steps before the end for each ``k`` in ``keep_states_before_end`` (to measure drift).
    """
    extra = ExtraEMAs(model, momenta)
    record = SwingRecord(history=History())
    total_steps = epochs * len(train_loader)

    def on_step(step, m):
        if total_steps - step in keep_states_before_end:
            record.states_before_end[total_steps - step] = copy.deepcopy(m.state_dict())

    def on_epoch(epoch, m, hist):
        if epoch == epochs - 1:
            # here, not after the epoch's last step: the sampler draws once more when the epoch ends
            record.last_epoch_start = _state(m, train_loader)
        start = time.perf_counter()
        extras = {mom: extra.statistics(mom) for mom in extra.momenta} if extra_per_epoch else None
        for kind, acc in evaluate_statistics(m, test_loader, stats_x, extra=extras).items():
            record.test_acc.setdefault(kind, []).append(acc)
        record.eval_seconds += time.perf_counter() - start

    if epochs == 1:
        record.last_epoch_start = _state(model, train_loader)
    try:
        record.history = train(model, train_loader, epochs=epochs, lr=lr, progress=progress, desc=desc,
                               on_step=on_step, on_epoch=on_epoch)
    finally:
        extra.remove()
    record.model = model
    record.extra_stats = {mom: extra.statistics(mom) for mom in extra.momenta}
    record.states_before_end[0] = copy.deepcopy(model.state_dict())
    return record


def branch_last_epoch(model: nn.Module, saved: dict, train_loader, *, lr_schedule, desc: str = "last epoch",
                      progress=True) -> tuple[nn.Module, History]:
    """Re-run the last epoch from ``saved`` (see :class:`SwingRecord`) with learning rate ``lr_schedule(step)``.

    ``model`` is a network of the same architecture; it is loaded with the saved weights and
    buffers, and the loader's shuffling generator is put back to its saved state, so the branch
    sees the same batches in the same order as the original last epoch. ``lr_schedule(i)`` gives
    the learning rate of step ``i = 0, 1, ...`` of the epoch. Returns ``(model, history)``.
    """
    model.load_state_dict(saved["model"])
    if saved["generator"] is not None:
        train_loader.generator.set_state(saved["generator"])
    opt = torch.optim.SGD(model.parameters(), lr=lr_schedule(0))

    def on_step(step, m):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step)               # step counts from 1: the next step's rate

    hist = train(model, train_loader, epochs=1, optimizer=opt, progress=progress, desc=desc, on_step=on_step)
    return model, hist
