"""Chapter 5's training runs, each a function of its settings, so that they can run side by side.

Every function here loads its data, seeds everything with ``seed``, builds LeNet and trains it
with one CPU thread. Called in a worker process (:func:`bncourse.parallel.run_in_processes`) it
returns the same result, bit for bit, as called in the notebook: a run depends on its arguments
only. All use Fashion-MNIST (60,000 training and 10,000 test images) and plain SGD, as d2l's
``train_ch6`` does; ``progress`` is passed on to :func:`bncourse.train.train`.
"""
from __future__ import annotations

from torch import nn

from .data import fashion_mnist_loaders, load_fashion_mnist
from .models import lenet
from .repro import seed_everything
from .swing import SwingRecord, branch_last_epoch, evaluate_statistics, train_recording
from .train import History, train

__all__ = ["train_lenet", "train_lenet_recording", "rerun_last_epoch_decayed"]


def train_lenet(*, seed: int, lr: float, epochs: int, bn: str | None = None, init: str = "xavier",
                batch_size: int = 256, desc: str = "LeNet", progress=True) -> tuple[nn.Module, History]:
    """Train ``lenet(bn=bn, init=init)``; test accuracy after every epoch. Returns ``(model, history)``."""
    seed_everything(seed)
    train_loader, test_loader = fashion_mnist_loaders(batch_size, seed=seed)
    model = lenet(bn=bn, init=init)
    history = train(model, train_loader, epochs=epochs, lr=lr, test_loader=test_loader, desc=desc,
                    progress=progress)
    return model, history


def train_lenet_recording(*, seed: int, lr: float, epochs: int, n_sample: int, momenta=(0.01,),
                          keep_states_before_end=(10,), batch_size: int = 256, desc: str = "LeNet with BN",
                          progress=True) -> SwingRecord:
    """Train LeNet with ``torch.nn`` BN (Xavier init) with :func:`bncourse.swing.train_recording`.

    After every epoch the test accuracy is recorded with running, cumulative and exact statistics,
    the last two measured on the first ``n_sample`` training images. After training,
    ``record.final_test_acc`` holds every kind (the extra EMAs included) with the cumulative and
    exact statistics measured on **all** 60,000 training images, and ``record.final_statistics``
    those statistics.
    """
    seed_everything(seed)
    x_train, _ = load_fashion_mnist("train")                      # (60000, 1, 28, 28)
    train_loader, test_loader = fashion_mnist_loaders(batch_size, seed=seed)
    model = lenet(bn="torch", init="xavier")
    record = train_recording(model, train_loader, test_loader, x_train[:n_sample], epochs=epochs, lr=lr,
                             momenta=momenta, keep_states_before_end=keep_states_before_end, desc=desc,
                             progress=progress)
    record.final_test_acc = evaluate_statistics(model, test_loader, x_train, extra=record.extra_stats,
                                                statistics_out=record.final_statistics)
    return record


def rerun_last_epoch_decayed(*, seed: int, saved: dict, lr: float, n_sample: int, batch_size: int = 256,
                             desc: str = "last epoch again", progress=True) -> dict[str, float]:
    """Re-run the last epoch from ``saved`` with the learning rate falling linearly from ``lr`` to 0.

    Step ``i`` of the epoch's ``S`` steps uses ``lr * (1 - i / S)``; the batches are the original
    last epoch's, in the same order (see :func:`bncourse.swing.branch_last_epoch`). Returns the
    test accuracy with each kind of statistics, cumulative and exact measured on the first
    ``n_sample`` training images.
    """
    seed_everything(seed)
    x_train, _ = load_fashion_mnist("train")
    train_loader, test_loader = fashion_mnist_loaders(batch_size, seed=seed)
    steps = len(train_loader)
    model, _ = branch_last_epoch(lenet(bn="torch", init="xavier"), saved, train_loader,
                                 lr_schedule=lambda i: lr * (1 - i / steps), desc=desc, progress=progress)
    return evaluate_statistics(model, test_loader, x_train[:n_sample])
