"""bncourse.distributed: the merge formulas, SyncBatchNorm and GhostBatchNorm against torch.nn, on real gloo groups.

The reference is always single-process ``torch.nn.BatchNorm`` on the concatenated batch. Launches are few (each
starts fresh Python processes that import torch): one 3-process launch carries the parity cases, the training
equivalences and the loopback check; three small ones check that workers are cleaned up after an error, an
interrupt and a timeout.
"""
import _thread
import os
import threading
import time

import numpy as np
import pytest
import torch

from bncourse.distributed import (LAST_PIDS, GhostBatchNorm, SyncBatchNorm, WorkerError, chan_merge, in_sequence,
                                  launch, listening_worker, merge_moments, naive_merge, parity_worker, train_worker)
from bncourse.nn import BatchNorm2d as ScratchBatchNorm2d


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One PyTorch thread, as in the workers (two spin-waiting threads on a loaded 2-core machine are 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gone(pids):
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        with open(f"/proc/{pid}/stat") as f:           # still listed: must not be running (a zombie at most)
            assert f.read().split()[2] == "Z", f"worker {pid} is still running"
    return True


# ---- in one process ------------------------------------------------------------------------------------------
def test_chan_merge_equals_the_statistics_of_the_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.normal(r, 1 + r, size=(n, 4)) for r, n in enumerate((5, 1, 7, 3))]
    m, mean, m2 = merge_moments([len(p) for p in parts], [p.mean(0) for p in parts],
                                [((p - p.mean(0)) ** 2).sum(0) for p in parts])
    x = np.concatenate(parts)
    assert m == 16
    np.testing.assert_allclose(mean, x.mean(0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(m2 / m, x.var(0), rtol=1e-13)
    np.testing.assert_allclose(m2 / (m - 1), x.var(0, ddof=1), rtol=1e-13)
    # the between term matters: without it the merged M2 is too small
    assert (m2 - sum(((p - p.mean(0)) ** 2).sum(0) for p in parts)).min() > 1.0
    # order does not matter beyond round-off
    assert np.allclose(chan_merge(3, 1.0, 2.0, 5, 4.0, 7.0)[2], chan_merge(5, 4.0, 7.0, 3, 1.0, 2.0)[2])


def test_naive_sum_of_squares_fails_in_float32_and_chan_does_not():
    rng = np.random.default_rng(1)
    parts = [(1e4 + rng.normal(size=1000)).astype(np.float32) for _ in range(4)]
    true_var = np.concatenate(parts).astype(np.float64).var()
    _, _, naive = naive_merge([np.float32(len(p)) for p in parts], [p.sum(dtype=np.float32) for p in parts],
                              [(p * p).sum(dtype=np.float32) for p in parts])
    m, _, m2 = merge_moments([np.float32(len(p)) for p in parts], [p.mean(dtype=np.float32) for p in parts],
                             [((p - p.mean(dtype=np.float32)) ** 2).sum(dtype=np.float32) for p in parts])
    assert abs(naive - true_var) / true_var > 0.5          # mean 1e4, std 1: E[x^2] and E[x]^2 agree to 8 digits
    assert abs(m2 / m - true_var) / true_var < 1e-3


def _copy_bn(src, dst):
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)


@pytest.mark.parametrize("momentum, affine, shape", [(0.1, True, (8, 3)), (None, True, (6, 3, 2, 2)),
                                                     (0.3, False, (5, 3, 4))])
def test_sync_batch_norm_without_a_group_is_batch_norm(momentum, affine, shape):
    torch.manual_seed(0)
    ours = SyncBatchNorm(3, momentum=momentum, affine=affine, dtype=torch.float64)
    ref_cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)]
    ref = ref_cls(3, momentum=momentum, affine=affine, dtype=torch.float64)
    if affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 2.0)
            ours.bias.normal_()
        _copy_bn(ours, ref)
    for _ in range(3):
        x = (torch.randn(*shape, dtype=torch.float64) * 3 + 2).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        dy = torch.randn(*shape, dtype=torch.float64)
        ours(x).backward(dy)
        ref(x2).backward(dy)
        assert torch.allclose(x.grad, x2.grad, atol=1e-12)
    assert torch.allclose(ours.running_mean, ref.running_mean, atol=1e-13)
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-13)
    if affine:
        assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-12)
        assert torch.allclose(ours.bias.grad, ref.bias.grad, atol=1e-12)
    ours.eval(), ref.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.allclose(ours(x), ref(x), atol=1e-13)


def test_convert_sync_batchnorm_replaces_and_copies():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Sequential(ScratchBatchNorm2d(4)))
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
        model[1].weight.fill_(2.0)
    model.eval()
    x = torch.randn(2, 1, 6, 6)
    want = model(x)
    conv = SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(conv[1]) is SyncBatchNorm and type(conv[3][0]) is SyncBatchNorm
    assert not conv[1].training and conv[1].weight[0].item() == 2.0 and conv[1].running_mean[0].item() == 0.5
    assert torch.allclose(conv(x), want, atol=1e-6)
    ghost = torch.nn.Sequential(GhostBatchNorm(4, 2))
    assert type(SyncBatchNorm.convert_sync_batchnorm(ghost)[0]) is GhostBatchNorm


@pytest.mark.parametrize("n, vb", [(12, 4), (10, 4), (9, 9)])
def test_ghost_batch_norm_is_batch_norm_per_chunk(n, vb):
    torch.manual_seed(1)
    ghost = GhostBatchNorm(3, vb, dtype=torch.float64)
    ref = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 2.0)
    _copy_bn(ghost, ref)
    x = (torch.randn(n, 3, 2, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    dy = torch.randn_like(x)
    ghost(x).backward(dy)
    torch.cat([ref(c) for c in x2.split(vb)]).backward(dy)
    assert torch.allclose(x.grad, x2.grad, atol=1e-12) and torch.allclose(ghost.weight.grad, ref.weight.grad, atol=1e-12)
    assert torch.allclose(ghost.running_var, ref.running_var, atol=1e-13)
    assert int(ghost.num_batches_tracked) == int(ref.num_batches_tracked) == -(-n // vb)
    ghost.eval(), ref.eval()
    assert torch.allclose(ghost(x2), ref(x2), atol=1e-13)
    # and it is not plain batch norm when there is more than one chunk
    if vb < n:
        full = torch.nn.functional.batch_norm(x2, None, None, training=True)
        assert (GhostBatchNorm(3, vb, affine=False, dtype=torch.float64)(x2) - full).abs().max() > 1e-3


# ---- real process groups -------------------------------------------------------------------------------------
def _parity_case(rng, shape, splits, steps=2):
    C = shape[1]
    return {"xs": [rng.normal(2.0, 3.0, size=shape) for _ in range(steps)],
            "dys": [rng.normal(size=shape) for _ in range(steps)], "splits": splits,
            "weight": rng.uniform(0.5, 2.0, size=C), "bias": rng.normal(size=C), "momentum": 0.1, "eps": 1e-5,
            "x_eval": rng.normal(size=shape)}


def _reference(case):
    C = case["xs"][0].shape[1]
    ref = (torch.nn.BatchNorm2d if case["xs"][0].ndim == 4 else torch.nn.BatchNorm1d)(C, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(case["weight"]))
        ref.bias.copy_(torch.from_numpy(case["bias"]))
    steps = []
    for x_full, dy_full in zip(case["xs"], case["dys"]):
        x = torch.from_numpy(x_full).requires_grad_()
        ref.weight.grad = ref.bias.grad = None
        y = ref(x)
        y.backward(torch.from_numpy(dy_full))
        steps.append((y.detach().numpy(), x.grad.numpy(), ref.weight.grad.numpy().copy(), ref.bias.grad.numpy().copy()))
    ref.eval()
    return steps, ref(torch.from_numpy(case["x_eval"])).detach().numpy(), ref.running_mean.numpy(), ref.running_var.numpy()


def _data(rng, n=240, d=12):
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return x, y, x[:60], y[:60]


@pytest.fixture(scope="module")
def three_workers():
    rng = np.random.default_rng(0)
    cases = [_parity_case(rng, (10, 3), [4, 3, 3]), _parity_case(rng, (7, 2, 3, 3), [1, 4, 2]),
             _parity_case(rng, (9, 4, 5), [3, 3, 3])]
    data = _data(rng)
    cfg = {"widths": [12, 16, 16, 3], "global_batch": 12, "steps": 30, "lr": 0.1, "seed": 0}
    calls = [(parity_worker, (c,)) for c in cases] + [
        (train_worker, (data, dict(cfg, bn="sync"))), (train_worker, (data, dict(cfg, bn="local"))),
        (listening_worker, ())]
    t0 = time.perf_counter()
    results = launch(in_sequence, 3, calls, timeout=120)
    return {"cases": cases, "data": data, "cfg": cfg, "results": results, "pids": list(LAST_PIDS),
            "seconds": time.perf_counter() - t0}


@pytest.mark.parametrize("k", [0, 1, 2], ids=["(N,C) uneven", "(N,C,H,W) one-example replica", "(N,C,L) even"])
def test_sync_batch_norm_matches_one_process_on_the_concatenated_batch(three_workers, k):
    case = three_workers["cases"][k]
    per_rank = [r[k] for r in three_workers["results"]]
    steps, eval_y, running_mean, running_var = _reference(case)
    for s, (y, dx, dw, db) in enumerate(steps):
        np.testing.assert_allclose(np.concatenate([p["y"][s] for p in per_rank]), y, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.concatenate([p["dx"][s] for p in per_rank]), dx, rtol=0, atol=1e-12)
        # parameter gradients are local sums; summed over the replicas they are the full batch's
        np.testing.assert_allclose(sum(p["dweight"][s] for p in per_rank), dw, rtol=0, atol=1e-11)
        np.testing.assert_allclose(sum(p["dbias"][s] for p in per_rank), db, rtol=0, atol=1e-11)
    for p in per_rank:
        np.testing.assert_allclose(p["running_mean"], running_mean, rtol=0, atol=1e-13)
        np.testing.assert_allclose(p["running_var"], running_var, rtol=0, atol=1e-12)
        assert p["num_batches_tracked"] == len(steps)
    np.testing.assert_allclose(np.concatenate([p["eval_y"] for p in per_rank]), eval_y, rtol=0, atol=1e-12)


def test_sync_training_on_three_replicas_equals_one_process(three_workers):
    one = train_worker(0, 1, three_workers["data"], dict(three_workers["cfg"], bn="local"))
    for r in three_workers["results"]:
        synced = r[3]
        assert np.abs(synced["params"] - one["params"]).max() < 1e-10
        assert synced["acc"] == one["acc"]


def test_unsynchronized_training_is_ghost_batch_norm(three_workers):
    # 3 replicas with 4 examples each and plain BN compute what GhostBatchNorm(virtual_batch=4) computes
    cfg = dict(three_workers["cfg"], bn="ghost", virtual_batch=4)
    ghost = train_worker(0, 1, three_workers["data"], cfg)
    one = train_worker(0, 1, three_workers["data"], dict(three_workers["cfg"], bn="local"))
    local = three_workers["results"][0][4]
    assert np.abs(local["params"] - ghost["params"]).max() < 1e-10
    assert np.abs(local["params"] - one["params"]).max() > 1e-3


def test_the_group_listens_on_loopback_only_and_workers_are_gone(three_workers):
    addresses = [a for r in three_workers["results"] for a in r[5]]
    assert addresses, "the workers listen on nothing? (the store and gloo's pairs should show up)"
    assert {addr for addr, _ in addresses} == {"127.0.0.1"}, addresses
    assert _gone(three_workers["pids"])


def fail_on_rank_one(rank, world_size):
    import torch.distributed as dist
    if rank == 1:
        raise RuntimeError("deliberate failure on rank 1")
    dist.barrier()                 # rank 0 waits for rank 1 forever: the launcher must end it
    return "unreachable"


def sleep_forever(rank, world_size):
    while True:
        time.sleep(0.05)


def test_a_failing_worker_raises_with_its_traceback_and_nothing_is_left_running():
    with pytest.raises(WorkerError, match="(?s)worker 1 of 2 raised.*deliberate failure on rank 1"):
        launch(fail_on_rank_one, 2, timeout=60)
    assert len(LAST_PIDS) == 2 and _gone(LAST_PIDS)


def test_an_interrupt_ends_the_workers():
    timer = threading.Timer(2.0, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            launch(sleep_forever, 2, timeout=60)
    finally:
        timer.cancel()
    assert len(LAST_PIDS) == 2 and _gone(LAST_PIDS)


def test_a_timeout_ends_the_workers():
    with pytest.raises(TimeoutError, match="did not finish within 3 s"):
        launch(sleep_forever, 1, timeout=3)
    assert len(LAST_PIDS) == 1 and _gone(LAST_PIDS)
