"""Run independent jobs (training runs, one per seed) in worker processes, one CPU thread each.

Five seeds of a network are five independent programs. On a CPU with ``P`` cores they finish
about ``P`` times sooner side by side than one after the other, and each gives **bit for bit the
result it gives alone**: every worker uses one PyTorch thread, the thread count the chapters'
stored outputs were made with (see :func:`bncourse.repro.seed_everything`). One process per core
beats one process with ``P`` threads here: LeNet's layers are too small to split well across
threads, and threads that wait on a busy core spin instead of sleeping.

::

    from functools import partial
    from bncourse.parallel import run_in_processes
    jobs = {seed: partial(my_module.train_one, seed=seed, lr=1.0) for seed in range(5)}
    results = run_in_processes(jobs, desc=lambda seed: f"seed {seed}", steps=2350)   # {seed: result}

A job is a function of a module (not one defined in the notebook: workers are started with
``spawn`` and import it afresh), usually with its arguments bound by ``functools.partial``. It
is called as ``job(progress=report)``; ``report(step, total, loss)`` moves that job's progress bar
in the notebook (pass it on as the ``progress`` argument of :func:`bncourse.train.train`).
Whatever it returns comes back through ``torch.save``/``torch.load`` (tensors, modules,
dataclasses).

Workers are always stopped: when all jobs are done, when a job raises (its traceback is
re-raised here) and when the cell is interrupted. ``BNCOURSE_PROCESSES=1`` runs the jobs one after
the other in this process (as does a CUDA device: one GPU is not shared well between processes).
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue as queue_module
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Hashable, Mapping

import torch
from tqdm.auto import tqdm

__all__ = ["default_processes", "run_in_processes"]

_QUEUE = None                       # in a worker: where progress reports go


def default_processes(n_jobs: int) -> int:
    """How many worker processes to use for ``n_jobs`` jobs.

    ``BNCOURSE_PROCESSES`` if set; 1 on a CUDA device (unless ``BNCOURSE_DEVICE=cpu``); otherwise
    the number of cores this process may run on, at most ``n_jobs``.
    """
    if os.environ.get("BNCOURSE_PROCESSES"):
        return max(1, min(int(os.environ["BNCOURSE_PROCESSES"]), n_jobs))
    if torch.cuda.is_available() and os.environ.get("BNCOURSE_DEVICE", "") != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, n_jobs))


class _Reporter:
    """``report(step, total, loss)`` inside a worker: sends at most one message per ``interval`` seconds."""

    def __init__(self, key, interval: float = 1.0):
        self.key, self.interval, self.last = key, interval, 0.0

    def __call__(self, step: int, total: int | None, loss: float) -> None:
        now = time.monotonic()
        if _QUEUE is not None and (now - self.last >= self.interval or step == total):
            self.last = now
            _QUEUE.put((self.key, step, loss))


def _init_worker(progress_queue) -> None:
    global _QUEUE
    _QUEUE = progress_queue
    torch.set_num_threads(1)


def _run_job(job: Callable, key) -> bytes:
    result = job(progress=_Reporter(key))
    buffer = io.BytesIO()
    torch.save(result, buffer)
    return buffer.getvalue()


def _load(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False)


def run_in_processes(jobs: Mapping[Hashable, Callable], *, desc: Callable[[Hashable], str] = str,
                     steps: int | None = None, processes: int | None = None) -> dict:
    """Run every job of ``jobs`` in worker processes and return what each returned.

    Args:
        jobs: ``{key: job}``, each job a picklable callable (a module-level function or a
            ``functools.partial`` of one), called as ``job(progress=report)``; started in this
            order (put the longest first).
        desc: the progress bar's label for a key.
        steps: the number of steps each job reports (the bars' total), if known.
        processes: worker processes; default :func:`default_processes`.

    Returns:
        ``{key: what the job returned}``, in the order of ``jobs``.
    """
    jobs = dict(jobs)
    processes = processes or default_processes(len(jobs))
    bars = {key: tqdm(total=steps, desc=desc(key), leave=False, mininterval=2.0) for key in jobs}
    results: dict = {}
    try:
        if processes == 1:
            for key, job in jobs.items():
                bar = bars[key]
                results[key] = job(progress=lambda step, total, loss, bar=bar: _move(bar, step, loss))
            return results
        return _run_pool(jobs, bars, processes)
    finally:
        for bar in bars.values():
            bar.close()


def _move(bar, step: int, loss: float) -> None:
    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    bar.update(step - bar.n)


def _run_pool(jobs: dict, bars: dict, processes: int) -> dict:
    context = mp.get_context("spawn")
    progress_queue = context.Queue()
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_init_worker,
                               initargs=(progress_queue,))
    results: dict = {}
    finished = False
    try:
        futures = {pool.submit(_run_job, job, key): key for key, job in jobs.items()}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(progress_queue, bars)
            for future in done:
                results[futures[future]] = _load(future.result())    # re-raises a worker's exception
        _drain(progress_queue, bars)
        finished = True
    finally:
        if not finished:                                               # an error or an interrupt: stop now
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()
        progress_queue.join_thread()
    return {key: results[key] for key in jobs}


def _drain(progress_queue, bars: dict) -> None:
    while True:
        try:
            key, step, loss = progress_queue.get_nowait()
        except queue_module.Empty:
            return
        _move(bars[key], step, loss)
