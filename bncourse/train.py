"""A small, readable training loop: seeded, device-agnostic, with a progress bar.

    history = train(model, train_loader, epochs=3, lr=0.1, test_loader=test_loader)
    history.step_loss      # one value per optimisation step
    history.epoch_test_acc # one value per epoch

Classification with cross-entropy; plain SGD by default (the course's experiments use it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .repro import get_device

__all__ = ["History", "train", "evaluate", "accuracy"]


@dataclass
class History:
    """What :func:`train` records. Step lists have one entry per optimisation step."""
    step_loss: list[float] = field(default_factory=list)
    step_acc: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)       # step index of each evaluation
    eval_test_acc: list[float] = field(default_factory=list)
    epoch_train_loss: list[float] = field(default_factory=list)
    epoch_train_acc: list[float] = field(default_factory=list)
    epoch_test_loss: list[float] = field(default_factory=list)
    epoch_test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0          # wall time of the whole call (training, evaluation, callbacks)
    train_seconds: float = 0.0    # time in the optimisation steps alone (forward, backward, update)
    examples: int = 0

    @property
    def examples_per_second(self) -> float:
        """Examples per second of the whole call, evaluation included."""
        return self.examples / self.seconds if self.seconds > 0 else float("nan")

    @property
    def train_examples_per_second(self) -> float:
        """Training throughput: examples per second of optimisation steps only (what d2l reports)."""
        return self.examples / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def diverged(self) -> bool:
        return any(not torch.isfinite(torch.tensor(v)) for v in self.step_loss)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``logits: (N, K)`` whose argmax equals ``labels: (N,)``."""
    return (logits.argmax(dim=1) == labels).float().mean().item()


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy over ``loader``, in eval mode (running statistics).

    The model's previous mode (train or eval) is restored afterwards.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += len(y)
    model.train(was_training)
    return loss_sum / count, correct / count


def train(model: nn.Module, train_loader, *, epochs: int = 1, lr: float = 0.1, test_loader=None,
          optimizer: torch.optim.Optimizer | None = None, device=None, eval_every: int | None = None,
          max_steps: int | None = None, progress: bool | Callable[[int, int | None, float], None] = True,
          desc: str = "training",
          on_step: Callable[[int, nn.Module], None] | None = None,
          on_epoch: Callable[[int, nn.Module, History], None] | None = None) -> History:
    """Train ``model`` with cross-entropy and SGD (or ``optimizer``), recording a :class:`History`.

    Args:
        model: maps (N, ...) inputs to (N, K) logits; moved to ``device``.
        train_loader, test_loader: iterables of ``(x, y)`` batches.
        epochs, lr: as usual; ``lr`` is ignored when ``optimizer`` is given.
        device: ``None`` picks CUDA when present, else CPU.
        eval_every: also evaluate test accuracy every this many steps (for accuracy-vs-step plots).
        max_steps: stop after this many optimisation steps.
        progress: show one tqdm progress bar over all steps of all epochs, with the latest loss
            as its postfix; or a function called as ``progress(step, total_steps, loss)`` after
            every step instead of the bar (how :mod:`bncourse.parallel` reports from its workers).
        on_step: called as ``on_step(step, model)`` after every step (e.g. to record activations).
        on_epoch: called as ``on_epoch(epoch, model, history)`` after every epoch (``epoch`` counts
            from 1), after the test evaluation; its time is not part of ``history.train_seconds``.

    Training stops early, with ``history.diverged`` True, if the loss becomes NaN or infinite.
    """
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    hist = History()
    total = epochs * len(train_loader) if hasattr(train_loader, "__len__") else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    # At most one refresh every 2 s: in a notebook every refresh is a widget message, and a long cell's messages
    # pile up until the cell ends (nbval reads them only then); beyond about a thousand queued messages ZMQ drops
    # the rest, the end-of-cell message included, and nbval reports "Timeout ... waiting for output".
    report = progress if callable(progress) else None
    bar = tqdm(total=total, desc=desc, disable=not progress or report is not None, leave=False, mininterval=2.0)
    step = 0
    start = time.perf_counter()
    for _epoch in range(epochs):
        model.train()
        loss_sum, correct, count = 0.0, 0, 0
        for x, y in train_loader:
            step_start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            value = loss.item()
            batch_correct = (logits.argmax(dim=1) == y).sum().item()
            hist.step_loss.append(value)
            hist.step_acc.append(batch_correct / len(y))
            loss_sum += value * len(y)
            correct += batch_correct
            count += len(y)
            hist.examples += len(y)
            hist.train_seconds += time.perf_counter() - step_start
            if on_step is not None:
                on_step(step, model)
            if eval_every and test_loader is not None and step % eval_every == 0:
                hist.eval_steps.append(step)
                hist.eval_test_acc.append(evaluate(model, test_loader, device)[1])
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            bar.update(1)
            if report is not None:
                report(step, total, value)
            if not torch.isfinite(loss) or (max_steps is not None and step >= max_steps):
                break
        hist.epoch_train_loss.append(loss_sum / max(count, 1))
        hist.epoch_train_acc.append(correct / max(count, 1))
        if test_loader is not None:
            test_loss, test_acc = evaluate(model, test_loader, device)
            hist.epoch_test_loss.append(test_loss)
            hist.epoch_test_acc.append(test_acc)
        if on_epoch is not None:
            on_epoch(_epoch + 1, model, hist)
        if hist.diverged or (max_steps is not None and step >= max_steps):
            break
    hist.seconds = time.perf_counter() - start
    bar.close()
    return hist
