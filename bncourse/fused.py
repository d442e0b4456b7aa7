"""Why a from-scratch batch norm is slower than ``torch.nn``'s, and two ways to close the gap.

Chapter 3 writes batch norm as a chain of tensor operations (:func:`bncourse.functional.batch_norm`) and lets
autograd do the backward. Every operation in that chain is a separate kernel that reads its inputs from memory and
writes its output back; for a layer this cheap the time goes into those *memory passes*, not into arithmetic.
``torch.nn.BatchNorm2d`` calls one fused kernel each way. This module has the pieces the chapter uses to see and
close the gap:

* :func:`count_passes` runs a function (forward and backward) and counts, for every ATen operation dispatched, how
  many full-size tensors (as many elements as the input) it reads and writes;
* :class:`BatchNormFunction` / :func:`batch_norm_closed_form`: a ``torch.autograd.Function`` whose backward is
  the closed form of Chapter 3, section 4.2, instead of autograd's node-by-node chain;
* :func:`cpp_compiler` and :func:`try_compile`: ``torch.compile`` on CPU generates C++ and needs a working compiler;
  without one these return ``None`` and a message instead of raising.

Shapes: ``x: (N, C)`` or ``(N, C, H, W)`` (any ``(N, C, ...)``), ``weight, bias: (C,)``; statistics per channel over
every dimension but 1 (``m = N * H * W`` values each).
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Callable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["BatchNormFunction", "batch_norm_closed_form", "count_passes", "cpp_compiler", "try_compile"]


def _dims_and_shape(x: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if x.dim() < 2:
        raise ValueError(f"batch norm expects x of shape (N, C, ...); got shape {tuple(x.shape)}")
    dims = (0,) + tuple(range(2, x.dim()))
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    return dims, shape


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm with a hand-written closed-form backward.

    Forward (per channel, over the m values)::

        mean, var = biased statistics;  inv_std = 1 / sqrt(var + eps)
        x_hat = (x - mean) * inv_std;   y = weight * x_hat + bias

    Backward, with ``dx_hat = dy * weight`` (Chapter 3, section 4.2)::

        dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))
        dweight = sum(dy * x_hat);   dbias = sum(dy)

    Only ``x_hat`` (full size) and ``inv_std`` ((C,)) are kept for the backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
        dims, shape = _dims_and_shape(x)
        var, mean = torch.var_mean(x, dim=dims, correction=0)          # (C,) each, biased variance
        inv_std = torch.rsqrt(var + eps)                                # (C,)
        x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)      # shape of x
        ctx.save_for_backward(x_hat, inv_std, weight)
        return torch.addcmul(bias.reshape(shape), x_hat, weight.reshape(shape))   # bias + x_hat * weight

    @staticmethod
    def backward(ctx, dy: Tensor):
        x_hat, inv_std, weight = ctx.saved_tensors
        dims, shape = _dims_and_shape(x_hat)
        m = x_hat.numel() // x_hat.shape[1]                             # values per channel
        dbias = dy.sum(dim=dims)                                        # (C,)
        dweight = (dy * x_hat).sum(dim=dims)                            # (C,)
        # sum(dx_hat) = weight * dbias and sum(dx_hat * x_hat) = weight * dweight: no extra pass needed
        scale = (weight * inv_std).reshape(shape)                       # gamma / sqrt(var + eps)
        dx = scale * (dy - (dbias / m).reshape(shape) - x_hat * (dweight / m).reshape(shape))
        return dx, dweight, dbias, None


def batch_norm_closed_form(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Training-mode batch norm of ``x: (N, C, ...)`` through :class:`BatchNormFunction`."""
    return BatchNormFunction.apply(x, weight, bias, eps)


class _PassCounter(TorchDispatchMode):
    def __init__(self, numel: int):
        super().__init__()
        self.numel = numel
        self.ops: list[tuple[str, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
        flat_out = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, Tensor)]
        reads = sum(t.numel() == self.numel for t in flat_in)
        writes = sum(t.numel() == self.numel for t in flat_out)
        name = str(func.overloadpacket.__name__)
        moves_data = not (func.is_view or name in ("detach", "_unsafe_view", "alias", "lift_fresh"))
        if (reads or writes) and moves_data:
            self.ops.append((name, reads, writes))
        return out


def count_passes(fn: Callable[[Tensor], Tensor], x: Tensor, dy: Tensor) -> dict:
    """Run ``fn(x).backward(dy)`` and count the full-size memory passes of every ATen operation.

    A *pass* is one full-size tensor (``x.numel()`` elements) read or written by one operation. Views and
    detaches move no data and are not counted. A fused kernel is one operation, so what it does inside
    (for ``torch.nn``'s kernel: a statistics pass and a normalizing pass over x) is not seen here.

    Returns:
        ``{"forward": [(op, reads, writes), ...], "backward": [...], "forward_passes": int,
        "backward_passes": int}``.
    """
    x = x.detach().requires_grad_(True)
    with _PassCounter(x.numel()) as forward_counter:
        y = fn(x)
    with _PassCounter(x.numel()) as backward_counter:
        y.backward(dy)
    result = {"forward": forward_counter.ops, "backward": backward_counter.ops}
    for key in ("forward", "backward"):
        result[f"{key}_passes"] = sum(r + w for _, r, w in result[key])
    result["forward_ops"] = Counter(name for name, _, _ in forward_counter.ops)
    return result


def cpp_compiler() -> tuple[str | None, str]:
    """The C++ compiler ``torch.compile`` would use on CPU, or ``None`` and why not.

    Inductor looks for ``$CXX`` (default ``g++``; its ``torch._inductor.config.cpp.cxx``) and runs
    ``<compiler> --version``.
    """
    try:
        from torch._inductor import cpp_builder
        cpp_builder.cpp_compiler_search.cache_clear()                 # re-read the configuration
        return cpp_builder.get_cpp_compiler(), "found"
    except Exception as error:                                        # InvalidCxxCompiler, ImportError, ...
        return None, (
            f"no working C++ compiler for torch.compile on CPU ({type(error).__name__}). Install one "
            f"(Debian/Ubuntu: apt-get install g++; macOS: xcode-select --install) or set CXX to its path; "
            f"everything else in the chapter runs without it."
        )


def try_compile(fn: Callable, *example_inputs: Tensor, grad_output: Tensor | None = None):
    """``torch.compile(fn)``, compiled now on ``example_inputs`` (forward, and backward if ``grad_output``).

    Inductor's on-disk cache is bypassed when ``ATEN_CPU_CAPABILITY`` is set (an emulated, older CPU): in
    torch 2.13 that variable changes the generated code but not the cache key, so a cache filled on the real
    CPU hands back vectorized code that then fails to build. A failed compile is also retried once without
    the cache.

    Returns:
        ``(compiled, message)``: ``compiled`` is ``None`` when no C++ compiler is found or compiling fails,
        and ``message`` then says why (it never raises for a missing or broken compiler).
    """
    from torch._inductor import config as inductor_config

    compiler, message = cpp_compiler()
    if compiler is None:
        return None, message
    attempts = [True] if os.environ.get("ATEN_CPU_CAPABILITY") else [False, True]
    for attempt, disable_caches in enumerate(attempts):
        if attempt:
            torch._dynamo.reset()                                     # forget the failed attempt
        compiled = torch.compile(fn)
        try:
            with inductor_config.patch(force_disable_caches=disable_caches), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*force_disable_caches")   # says the cache is off
                inputs = [t.detach().requires_grad_(t.requires_grad) for t in example_inputs]
                out = compiled(*inputs)
                if grad_output is not None:
                    out.backward(grad_output)
        except Exception as error:                                    # a broken toolchain, missing headers
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            message = f"torch.compile failed with {compiler} ({type(error).__name__}: {first_line[:200]})"
            continue
        return compiled, f"compiled with {compiler}"
    torch._dynamo.reset()
    return None, message
