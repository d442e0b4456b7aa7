"""Plotting helpers. Each is a pure function ``f(..., ax=None) -> ax`` that makes one point.

Every figure gets a title and labelled axes with units; callers end the line with ``;`` or
call ``plt.show()`` so no object repr is stored in the notebook.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .running_stats import simple_moving_average

__all__ = ["plot_layer_histograms", "smooth"]


def _ax(ax):
    return ax if ax is not None else plt.subplots(figsize=(6, 4))[1]


def smooth(values: Sequence[float], window: int = 20) -> np.ndarray:
    """Trailing mean over ``window`` points, for noisy per-step curves (fewer at the start).

    The same as :func:`bncourse.running_stats.simple_moving_average`, which it calls.
    """
    return simple_moving_average(values, window)


def plot_layer_histograms(values_per_layer: Sequence[np.ndarray], *, title: str, xlabel: str,
                          bins: int = 60, range_=None, ax=None):
    """Overlaid histograms (densities) of one quantity per layer, e.g. activations or gradients."""
    ax = _ax(ax)
    for i, v in enumerate(values_per_layer):
        v = np.asarray(v).ravel()
        ax.hist(v, bins=bins, range=range_, density=True, histtype="step", linewidth=1.5,
                label=f"layer {i + 1} (std {v.std():.2g})")
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.legend(fontsize=7)
    return ax
