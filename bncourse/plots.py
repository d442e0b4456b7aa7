"""Plotting helpers. Each is a pure function ``f(..., ax=None) -> ax`` that makes one point.

Every figure gets a title and labelled axes with units; callers end the line with ``;`` or
call ``plt.show()`` so no object repr is stored in the notebook.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_curves", "plot_layer_histograms", "plot_loss_contours", "smooth"]


def _ax(ax):
    return ax if ax is not None else plt.subplots(figsize=(6, 4))[1]


def smooth(values: Sequence[float], window: int = 20) -> np.ndarray:
    """Trailing mean over ``window`` points, for noisy per-step curves."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) < window:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:window] / np.arange(1, window)
    return np.concatenate([head, (c[window:] - c[:-window]) / window])


def plot_curves(curves: Mapping[str, Sequence[float]], *, x: Mapping[str, Sequence[float]] | None = None,
                title: str, xlabel: str, ylabel: str, logy: bool = False, ax=None, **kw):
    """One line per entry of ``curves`` (label -> y values), optional per-label x values."""
    ax = _ax(ax)
    for label, y in curves.items():
        xs = x[label] if x is not None and label in x else np.arange(1, len(y) + 1)
        ax.plot(xs, y, label=label, **kw)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return ax


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


def plot_loss_contours(loss_fn, w_range, b_range, *, paths: Mapping[str, np.ndarray] | None = None,
                       title: str, xlabel: str, ylabel: str, levels: int = 30, ax=None):
    """Contours of ``loss_fn(w1, w2)`` on a grid, with optional descent paths (T, 2) drawn on top."""
    ax = _ax(ax)
    W1, W2 = np.meshgrid(np.linspace(*w_range, 200), np.linspace(*b_range, 200))
    Z = np.vectorize(loss_fn)(W1, W2) if not hasattr(loss_fn, "grid") else loss_fn.grid(W1, W2)
    ax.contour(W1, W2, Z, levels=levels, cmap="viridis", linewidths=0.8)
    for label, p in (paths or {}).items():
        p = np.asarray(p)
        ax.plot(p[:, 0], p[:, 1], ".-", markersize=3, label=f"{label} ({len(p) - 1} steps)")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if paths:
        ax.legend(fontsize=8)
    return ax
