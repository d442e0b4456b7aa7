"""Reproducibility and device selection: one call at the top of every chapter."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "get_device"]


def seed_everything(seed: int = 0, threads: int | None = 1) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch, fix PyTorch's CPU thread count, and return a NumPy Generator.

    The thread count is fixed because float32 sums are reduced in a different order with a
    different number of threads, and stored notebook outputs would then differ in the last
    printed digit. One thread is the default: the course's small models gain little from more,
    and the test suite runs two notebooks at once on a 2-core machine, where two kernels with
    two threads each were measured 10-40x slower per step (the threads spin-wait on each other).
    Pass ``threads=None`` to keep PyTorch's own choice.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return np.random.default_rng(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA when present (or ``prefer``, e.g. "cpu"), CPU otherwise.

    The environment variable ``BNCOURSE_DEVICE`` overrides both, e.g. ``BNCOURSE_DEVICE=cpu``
    to reproduce the stored CPU outputs on a GPU machine.
    """
    choice = os.environ.get("BNCOURSE_DEVICE") or prefer
    if choice:
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
