"""bncourse: the reference library of an open textbook on batch normalization.

Modules, one job each:

=====================  ==========================================================
``scaling``            standardization, min-max, PCA and ZCA whitening
``bn_numpy``           batch norm forward and backward (staged, closed form) in NumPy
``functional``         batch norm as a PyTorch function, from scratch
``fused``              the closed-form backward as an ``autograd.Function``; memory passes; ``torch.compile``
``nn``                 ``BatchNorm1d`` and ``BatchNorm2d`` modules, drop-in for ``torch.nn``
``running_stats``      moving averages, momentum conventions, bias and Bessel corrections
``gradcheck``          finite-difference gradient checks
``folding``            inference BN folded into an affine map or the preceding Linear/Conv2d
``population_stats``   exact population statistics of every BN layer after training
``swing``              chapter 5's recorder: inference statistics per epoch (EMA, cumulative, exact), branches
``normalizations``     layer, instance and group norm from scratch
``distributed``        data parallelism on gloo: launcher, SyncBatchNorm and ghost batch norm from scratch
``conditioning``       Hessian condition numbers and gradient-descent step counts
``hooks``              forward/backward hook recorders: activations, gradients, saturation
``landscape``          loss-landscape smoothness measurements (Santurkar et al.), noisy BN
``data``               bundled, synthetic and Fashion-MNIST data (no network needed)
``models``             MLP and LeNet with or without batch norm
``train``              a small training loop with a progress bar
``parallel``           independent runs side by side in worker processes, one thread each
``lenet_runs``         chapter 5's training runs as functions of their settings (for ``parallel``)
``plots``              plotting helpers
``repro``              seeding and device selection
``checks``             self-checks for the exercises
``exercises``          generates exercises/ from solutions/
``grading``            the batch grader behind ``bncourse grade``
=====================  ==========================================================
"""
from importlib.metadata import PackageNotFoundError, version

from .repro import get_device, seed_everything

try:
    __version__ = version("bncourse")          # one source: pyproject.toml
except PackageNotFoundError:                   # imported from a copied source tree, not installed
    __version__ = "0+unknown"
__all__ = ["seed_everything", "get_device", "__version__"]
