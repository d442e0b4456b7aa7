"""Benchmark: from-scratch batch norm against torch.nn, and the staged against the closed-form backward.

Run with ``make bench`` (or ``python benchmarks/bench_batchnorm.py [--threads 2] [--device cpu]``).
Prints median times of forward + backward in milliseconds and the ratios. Not a test: numbers depend
on the machine, so nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bncourse.bn_numpy import batchnorm_backward, batchnorm_backward_staged, batchnorm_forward
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


def bench_modules(device: torch.device, repeat: int):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"\nforward + backward, training mode, float32 on {device} (median of {repeat}, ms)")
    print(f"{'shape':>18} {'bncourse.nn':>12} {'torch.nn':>10} {'ratio':>7}")
    for shape in SHAPES:
        C = shape[1]
        ours = (BatchNorm1d if len(shape) == 2 else BatchNorm2d)(C).to(device)
        theirs = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(C).to(device)
        x = torch.randn(*shape, device=device, requires_grad=True)
        g = torch.randn(*shape, device=device)

        def step(module):
            return lambda: module(x).backward(g)
        t_ours, t_theirs = _median_ms(step(ours), repeat, sync), _median_ms(step(theirs), repeat, sync)
        print(f"{str(shape):>18} {t_ours:12.3f} {t_theirs:10.3f} {t_ours / t_theirs:7.2f}")


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} CPU threads")
    bench_modules(torch.device(args.device), args.repeat)
    bench_numpy_backward(args.repeat)


if __name__ == "__main__":
    main()
