"""Benchmark: from-scratch batch norm against torch.nn, and the staged against the closed-form backward.

Run with ``make bench`` (or ``python benchmarks/bench_batchnorm.py [--threads 2] [--device cpu] [--no-compile]``).
Prints median times of forward + backward in milliseconds and the ratios:

* ``bncourse.nn`` (from scratch, autograd backward), ``closed-form`` (the same forward with the hand-written
  backward of ``bncourse.fused.BatchNormFunction``) and ``torch.nn``, eager;
* with ``torch.compile`` (Chapter 3, section 8): the from-scratch module and ``torch.nn`` compiled, each on its
  shape, with the outputs and gradients checked against eager ``torch.nn``. Without a working C++ compiler
  (CPU) the compiled columns say why and are left out.

Compiling takes tens of seconds per shape the first time (Inductor caches the result on disk). Not a test:
numbers depend on the machine, so nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bncourse.bn_numpy import batchnorm_backward, batchnorm_backward_staged, batchnorm_forward
from bncourse.fused import batch_norm_closed_form, try_compile
from bncourse.nn import BatchNorm1d, BatchNorm2d

SHAPES = [(256, 120), (256, 1024), (256, 6, 24, 24), (64, 64, 32, 32)]


def _median_ms(fn, repeat: int, sync=lambda: None) -> float:
    fn(); sync()                                     # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(); sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_modules(device: torch.device, repeat: int, compile_: bool = True):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"\nforward + backward, training mode, float32 on {device} (median of {repeat}, ms; "
          f"ratios to eager torch.nn)")
    header = f"{'shape':>18} {'bncourse.nn':>12} {'closed-form':>12} {'torch.nn':>10} {'ours/torch':>11}"
    if compile_:
        header += f" {'ours comp.':>11} {'torch comp.':>12} {'ours c./torch':>14} {'ours c./torch c.':>17} {'compile s':>10}"
    print(header)
    note_printed = False
    for shape in SHAPES:
        C = shape[1]
        ours = (BatchNorm1d if len(shape) == 2 else BatchNorm2d)(C).to(device)
        theirs = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(C).to(device)
        x = torch.randn(*shape, device=device, requires_grad=True)
        g = torch.randn(*shape, device=device)
        weight = torch.ones(C, device=device, requires_grad=True)
        bias = torch.zeros(C, device=device, requires_grad=True)

        def step(fn):
            return lambda: fn(x).backward(g)
        t_ours = _median_ms(step(ours), repeat, sync)
        t_closed = _median_ms(step(lambda v: batch_norm_closed_form(v, weight, bias)), repeat, sync)
        t_theirs = _median_ms(step(theirs), repeat, sync)
        line = f"{str(shape):>18} {t_ours:12.3f} {t_closed:12.3f} {t_theirs:10.3f} {t_ours / t_theirs:11.2f}"
        if compile_:
            start = time.perf_counter()
            ours_c, note = try_compile(ours, x, grad_output=g)
            theirs_c, _ = try_compile(theirs, x, grad_output=g) if ours_c is not None else (None, note)
            seconds = time.perf_counter() - start
            if ours_c is None:
                if not note_printed:
                    print(f"  (compiled columns left out: {note})")
                    note_printed = True
            else:
                _check_same(ours_c, theirs, x, g)
                t_oc, t_tc = _median_ms(step(ours_c), repeat, sync), _median_ms(step(theirs_c), repeat, sync)
                line += (f" {t_oc:11.3f} {t_tc:12.3f} {t_oc / t_theirs:14.2f} {t_oc / t_tc:17.2f} {seconds:10.0f}")
        print(line)


def _check_same(fn, reference, x, g):
    """Outputs and input gradients of ``fn`` and ``reference`` agree to float32 round-off."""
    results = []
    for f in (fn, reference):
        x_in = x.detach().clone().requires_grad_(True)
        out = f(x_in)
        out.backward(g)
        results.append((out.detach(), x_in.grad))
    for a, b in zip(*results):
        rel = ((a - b).abs().max() / a.abs().max()).item()
        if rel > 1e-4:
            raise AssertionError(f"compiled and eager results differ by {rel:.1e} (relative)")


def bench_numpy_backward(repeat: int):
    print(f"\nNumPy backward, float64 (median of {repeat}, ms)")
    print(f"{'shape':>18} {'staged':>8} {'closed':>8} {'ratio':>7}")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.normal(size=shape)
        C = shape[1]
        _, cache = batchnorm_forward(x, np.ones(C), np.zeros(C))
        dout = rng.normal(size=shape)
        t_staged = _median_ms(lambda: batchnorm_backward_staged(dout, cache), repeat)
        t_closed = _median_ms(lambda: batchnorm_backward(dout, cache), repeat)
        print(f"{str(shape):>18} {t_staged:8.3f} {t_closed:8.3f} {t_staged / t_closed:7.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile columns")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} CPU threads")
    bench_modules(torch.device(args.device), args.repeat, compile_=not args.no_compile)
    bench_numpy_backward(args.repeat)


if __name__ == "__main__":
    main()
