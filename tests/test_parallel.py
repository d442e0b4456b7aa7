"""bncourse.parallel: jobs in worker processes give the in-process result, errors surface, workers stop."""
import functools
import os
import time

import pytest
import torch

from bncourse.parallel import default_processes, run_in_processes


def _train_tiny(*, seed: int, steps: int, progress=None):
    # a small float32 regression trained with SGD: enough arithmetic for thread-count effects to show
    torch.manual_seed(seed)
    x = torch.randn(512, 64)
    w_true = torch.randn(64, 1)
    y = x @ w_true + 0.1 * torch.randn(512, 1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(1, steps + 1):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, steps, loss.item())
    return {"losses": losses, "state": model.state_dict(), "pid": os.getpid()}


def _fail(*, after: int, progress=None):
    if after:
        time.sleep(after)
    raise ValueError("job failed on purpose")


def _sleep(*, seconds: float, progress=None):
    time.sleep(seconds)
    return os.getpid()


def test_workers_return_bit_identical_results_to_in_process_runs():
    jobs = {seed: functools.partial(_train_tiny, seed=seed, steps=30) for seed in (0, 1, 2)}
    got = run_in_processes(jobs, desc=lambda s: f"seed {s}", steps=30, processes=2)
    assert list(got) == [0, 1, 2]                                      # the order of jobs
    for seed in (0, 1, 2):
        torch.set_num_threads(1)
        want = _train_tiny(seed=seed, steps=30)
        assert got[seed]["losses"] == want["losses"]                   # exactly, not approximately
        for a, b in zip(got[seed]["state"].values(), want["state"].values()):
            assert torch.equal(a, b)
        assert got[seed]["pid"] != os.getpid()                         # it really ran elsewhere
    assert got[0]["losses"] != got[1]["losses"]


def test_one_process_runs_in_this_process():
    got = run_in_processes({"a": functools.partial(_train_tiny, seed=0, steps=3)}, processes=1)
    assert got["a"]["pid"] == os.getpid()


def test_a_failing_job_raises_here_and_no_worker_is_left_running():
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    jobs = {"slow": functools.partial(_sleep, seconds=30), "bad": functools.partial(_fail, after=0)}
    start = time.monotonic()
    with pytest.raises(ValueError, match="failed on purpose"):
        run_in_processes(jobs, processes=2)
    assert time.monotonic() - start < 20                               # the 30 s job was not waited for
    leftover = {p.pid for p in multiprocessing.active_children()} - before
    assert not leftover


def test_default_processes_respects_the_environment(monkeypatch):
    monkeypatch.setenv("BNCOURSE_PROCESSES", "3")
    assert default_processes(10) == 3 and default_processes(2) == 2
    monkeypatch.delenv("BNCOURSE_PROCESSES")
    monkeypatch.setenv("BNCOURSE_DEVICE", "cpu")
    assert 1 <= default_processes(100) <= len(os.sched_getaffinity(0))
    assert default_processes(1) == 1
