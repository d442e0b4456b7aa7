"""Batch norm across devices: a gloo launcher, SyncBatchNorm and ghost batch norm, from scratch.

Data parallelism gives each of W replicas (processes, "ranks") a slice of the global batch of B examples,
B = n_0 + ... + n_{W-1}. A plain batch norm layer then normalizes with the statistics of its own slice; the
gradients are averaged over all replicas by ``DistributedDataParallel``. :class:`SyncBatchNorm` instead
normalizes every slice with the statistics of the whole batch, so W replicas compute exactly what one process
computes on the concatenated batch.

Launcher
    :func:`launch` starts W fresh processes (``torch.multiprocessing``, start method "spawn"), joins them in a
    gloo process group that listens on 127.0.0.1 only, runs ``fn(rank, world_size, *args)`` in each and returns
    the results by rank. Worker functions must be importable (defined in a module, not in a notebook); tensors
    in the results come back as NumPy arrays. The processes are always terminated and joined, also when a
    worker fails, the parent times out or is interrupted.

Merging statistics (per channel; m_r values on replica r, M2 = sum of squared deviations from the mean)
    Chan et al.'s pairwise merge of (m_a, mean_a, M2_a) and (m_b, mean_b, M2_b)::

        m     = m_a + m_b
        delta = mean_b - mean_a
        mean  = mean_a + delta * m_b / m
        M2    = M2_a + M2_b + delta**2 * m_a * m_b / m          # the last term: between the replicas

    biased variance (for normalizing) = M2 / m, unbiased (for ``running_var``) = M2 / (m - 1), with m the
    GLOBAL count. The naive merge of sums (sum x, sum x**2) cancels catastrophically when |mean| >> std.

SyncBatchNorm, training mode (x: (n_r, C, *) on replica r, m = global values per channel, x_hat normalized)
    forward: one all-gather of (m_r, mean_r (C,), M2_r (C,)), merged in rank order on every replica;
    ``y = gamma * (x - mean) / sqrt(M2 / m + eps) + beta``.
    backward: one all-reduce (sum) of the two per-channel sums the closed form needs::

        dx = gamma / sqrt(var + eps) * (dy - sum(dy) / m - x_hat * sum(dy * x_hat) / m)

    where both sums run over all replicas. ``weight.grad`` and ``bias.grad`` stay local sums
    (``sum(dy * x_hat)``, ``sum(dy)`` over the slice); DistributedDataParallel averages them like every other
    parameter gradient.

Ghost batch norm (Hoffer et al. 2017)
    :class:`GhostBatchNorm` normalizes consecutive virtual batches of ``virtual_batch_size`` examples with their
    own statistics inside one large batch: what unsynchronized batch norm does on W replicas with per-device
    batch B / W, done on purpose in one process.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import queue as queue_module
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .functional import batch_norm, reduce_dims
from .nn import _BatchNorm
from .population_stats import chan_merge

__all__ = [
    "WorkerError", "free_port", "launch", "in_sequence", "LAST_PIDS", "listening_addresses", "running_workers",
    "chan_merge", "merge_moments", "naive_merge", "local_moments",
    "CommRecord", "record_communication",
    "SyncBatchNorm", "SyncBatchNormFunction", "GhostBatchNorm",
]

_LOOPBACK = "127.0.0.1"
#: process ids of the workers of the last :func:`launch` (the tests check that they are gone).
LAST_PIDS: list[int] = []


# ----------------------------------------------------------------------------------------------
# The launcher
# ----------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker process raised or died; the message carries its rank and traceback."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOOPBACK, 0))
        return s.getsockname()[1]


def _portable(obj: Any) -> Any:
    """Tensors -> NumPy arrays, recursively (tensors sent through a queue by a process that exits are lost)."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu().numpy().copy()
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_portable(v) for v in obj)
    return obj


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results, timeout: float) -> None:
    # Runs in a fresh (spawned) process.
    os.environ.update(MASTER_ADDR=_LOOPBACK, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    try:
        listen_fd = None
        if rank == 0:
            # TCPStore binds its own server socket to every interface; hand it one bound to loopback instead.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((_LOOPBACK, port))
            sock.listen(128)
            listen_fd = sock.detach()
        store = dist.TCPStore(_LOOPBACK, port, world_size, rank == 0, master_listen_fd=listen_fd,
                              timeout=datetime.timedelta(seconds=timeout))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        report = (rank, "ok", _portable(fn(rank, world_size, *args)))
    except BaseException:
        report = (rank, "error", traceback.format_exc())
    results.put(report)               # before leaving the group, so the root cause is reported first
    if dist.is_initialized():
        dist.destroy_process_group()


def _stop(procs: list) -> None:
    """Terminate and join every process that is still alive (SIGTERM, then SIGKILL after 5 s)."""
    procs = [p for p in procs if p.pid is not None]        # started ones only
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


def _describe_errors(world_size: int, errors: dict[int, str], results, wait: float = 1.0) -> str:
    """Collect the other workers' errors for ``wait`` s; the root cause first, then the ones it caused.

    When one worker raises and leaves, the others fail inside a collective ("Connection reset by peer");
    those tracebacks are listed after the ones that do not come from gloo.
    """
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            rank, status, value = results.get(timeout=0.05)
        except queue_module.Empty:
            continue
        if status == "error":
            errors[rank] = value
    order = sorted(errors, key=lambda r: ("gloo" in errors[r] or "Connection" in errors[r], r))
    return "\n".join(f"worker {r} of {world_size} raised:\n{errors[r]}" for r in order)


def running_workers(pids: list[int] | None = None) -> list[int]:
    """The process ids among ``pids`` (default: the last launch's workers) that still run (zombies excluded)."""
    alive = []
    for pid in LAST_PIDS if pids is None else pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def launch(fn: Callable, world_size: int, *args: Any, timeout: float = 120.0) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes joined in a gloo process group.

    The group's rendezvous (a TCPStore) and gloo's connections listen on 127.0.0.1 only, on a port picked at
    run time. Each worker uses one PyTorch thread. ``fn`` must be importable (a module-level function of a
    module); its return value, with tensors turned into NumPy arrays, comes back in the list at index ``rank``.

    Raises :class:`WorkerError` with the worker's traceback if one raises or dies, ``TimeoutError`` after
    ``timeout`` seconds. In every case (also KeyboardInterrupt) all workers are terminated and joined before
    this function returns or raises.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int (the number of processes), got {world_size!r}")
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, fn, args, results, timeout), daemon=True)
             for r in range(world_size)]
    LAST_PIDS.clear()
    out: dict[int, Any] = {}
    try:
        for p in procs:
            p.start()
            LAST_PIDS.append(p.pid)
        deadline = time.monotonic() + timeout
        while len(out) < world_size:
            try:
                rank, status, value = results.get(timeout=0.1)
            except queue_module.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in out]
                if dead:
                    raise WorkerError(f"worker {dead[0]} of {world_size} died (exit code "
                                      f"{procs[dead[0]].exitcode}) without a result") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world_size} workers did not finish within {timeout:g} s "
                                       f"({len(out)} finished)") from None
                continue
            if status == "error":
                raise WorkerError(_describe_errors(world_size, {rank: value}, results))
            out[rank] = value
    finally:
        _stop(procs)
        results.close()
        results.join_thread()
    return [out[r] for r in range(world_size)]


def listening_addresses() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket this process listens on, read from /proc (Linux; [] elsewhere).

    Used to verify that a process group listens on the loopback address only.
    """
    inodes = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    out = []
    for table, width in (("/proc/self/net/tcp", 8), ("/proc/self/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:          # 0A = LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            if width == 8:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:   # four little-endian 32-bit words
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.append((addr, int(hex_port, 16)))
    return sorted(out)


def listening_worker(rank: int, world_size: int) -> list[tuple[str, int]]:
    """A worker that reports :func:`listening_addresses` while its process group is up."""
    dist.barrier()
    return listening_addresses()


def in_sequence(rank: int, world_size: int, calls: list[tuple[Callable, tuple]]) -> list[Any]:
    """A worker that runs several workers one after the other in the same process group (one launch)."""
    return [f(rank, world_size, *a) for f, a in calls]


# ----------------------------------------------------------------------------------------------
# Merging statistics
# ----------------------------------------------------------------------------------------------
def local_moments(x: Tensor) -> tuple[int, Tensor, Tensor]:
    """(m, mean (C,), M2 (C,)) of x: (n, C, *) per channel: m = values per channel, M2 = sum (x - mean)**2."""
    dims = reduce_dims(x)
    m = x.numel() // x.shape[1]
    mean = x.mean(dim=dims)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    m2 = ((x - mean.reshape(shape)) ** 2).sum(dim=dims)
    return m, mean, m2


def merge_moments(counts, means, m2s):
    """Merge per-replica (m_r, mean_r, M2_r) in rank order with :func:`chan_merge`.

    Args: counts: sequence of W numbers; means, m2s: sequences of W arrays/tensors of shape (C,).
    Returns (m, mean (C,), M2 (C,)) of the union.
    """
    m, mean, m2 = counts[0], means[0], m2s[0]
    for r in range(1, len(counts)):
        m, mean, m2 = chan_merge(m, mean, m2, counts[r], means[r], m2s[r])
    return m, mean, m2


def naive_merge(counts, sums, sums_of_squares):
    """The textbook formula var = E[x**2] - E[x]**2 from summed (m_r, sum x, sum x**2): numerically dangerous.

    Returns (m, mean, biased variance). In floating point the two terms are both about mean**2 and
    their difference (the variance) loses about log10(mean**2 / var) of the available digits.
    """
    m = sum(counts)
    s = sum(sums)
    ss = sum(sums_of_squares)
    mean = s / m
    return m, mean, ss / m - mean * mean


# ----------------------------------------------------------------------------------------------
# Recording the communication
# ----------------------------------------------------------------------------------------------
@dataclass
class CommRecord:
    """Collectives issued by this module's layers: one entry (op, numel, bytes) per message."""
    ops: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return len(self.ops)

    @property
    def bytes(self) -> int:
        return sum(b for _, _, b in self.ops)


_RECORDS: list[CommRecord] = []


@contextlib.contextmanager
def record_communication() -> Iterator[CommRecord]:
    """Record every collective a :class:`SyncBatchNorm` issues inside the block (payload per replica)."""
    rec = CommRecord()
    _RECORDS.append(rec)
    try:
        yield rec
    finally:
        _RECORDS.remove(rec)


def _note(op: str, t: Tensor) -> None:
    for rec in _RECORDS:
        rec.ops.append((op, t.numel(), t.numel() * t.element_size()))


def _world(group) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _all_gather_moments(m: int, mean: Tensor, m2: Tensor, group) -> tuple[Any, Tensor, Tensor]:
    """All-gather (m_r, mean_r, M2_r) packed as one tensor of 2C + 1 values; merge in rank order."""
    world = _world(group)
    if world == 1:
        return m, mean, m2
    C = mean.numel()
    packed = torch.cat([mean.new_tensor([float(m)]), mean, m2])        # (2C + 1,)
    gathered = [torch.empty_like(packed) for _ in range(world)]
    _note("all_gather", packed)
    dist.all_gather(gathered, packed, group=group)
    counts = [g[0] for g in gathered]
    means = [g[1:C + 1] for g in gathered]
    m2s = [g[C + 1:] for g in gathered]
    return merge_moments(counts, means, m2s)


def _all_reduce_sum(t: Tensor, group) -> Tensor:
    if _world(group) == 1:
        return t
    _note("all_reduce", t)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


# ----------------------------------------------------------------------------------------------
# SyncBatchNorm
# ----------------------------------------------------------------------------------------------
class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm with statistics of the batch on all replicas; closed-form backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group):
        C = x.shape[1]
        shape = (1, C) + (1,) * (x.dim() - 2)
        m_local, mean_local, m2_local = local_moments(x)                      # int, (C,), (C,)
        m, mean, m2 = _all_gather_moments(m_local, mean_local, m2_local, group)
        m = float(m)
        if m <= 1:
            raise ValueError(f"Expected more than 1 value per channel over all replicas when training, got {m:g} "
                             f"(input of shape {tuple(x.shape)} on this replica)")
        var = m2 / m                                                          # biased: normalizes
        invstd = torch.rsqrt(var + eps)                                       # (C,)
        x_hat = (x - mean.reshape(shape)) * invstd.reshape(shape)
        y = x_hat
        if weight is not None:
            y = x_hat * weight.reshape(shape) + bias.reshape(shape)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * (m2 / (m - 1)))  # unbiased, GLOBAL count
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.m, ctx.group, ctx.has_affine = m, group, weight is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x_hat, invstd, weight = ctx.saved_tensors
        C = dy.shape[1]
        shape = (1, C) + (1,) * (dy.dim() - 2)
        dims = reduce_dims(dy)
        sum_dy_local = dy.sum(dim=dims)                                       # (C,)  = dbeta on this replica
        sum_dy_xhat_local = (dy * x_hat).sum(dim=dims)                        # (C,)  = dgamma on this replica
        packed = _all_reduce_sum(torch.cat([sum_dy_local, sum_dy_xhat_local]), ctx.group)   # (2C,) one message
        sum_dy, sum_dy_xhat = packed[:C], packed[C:]
        scale = invstd if weight is None else weight * invstd                 # (C,)
        dx = scale.reshape(shape) * (dy - (sum_dy / ctx.m).reshape(shape)
                                     - x_hat * (sum_dy_xhat / ctx.m).reshape(shape))
        dweight = sum_dy_xhat_local if ctx.has_affine else None
        dbias = sum_dy_local if ctx.has_affine else None
        return dx, dweight, dbias, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the global batch over all replicas of a process group.

    Same constructor as ``torch.nn.SyncBatchNorm`` (which runs only on GPUs); works on CPU (gloo) and GPU.
    Without an initialized process group, or with one process, it is ordinary batch norm.

    Training: forward all-gathers each replica's (m_r, mean_r (C,), M2_r (C,)) and merges them with Chan's
    formula; normalizes with the biased global variance; ``running_var`` gets the unbiased global variance
    M2 / (m - 1) with m the global count. Backward all-reduces (sum dy, sum dy * x_hat), 2C values.
    Eval: running statistics, no communication.

    Shape:
        Input: (N, C, *) with N the per-replica batch. Output: same shape.
    """
    _expected_dims = (2, 3, 4, 5)
    _layout = "(N, C, *)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training or self.running_mean is None):
            return batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                              self.eps)
        if not self.training:     # eval without running statistics: this replica's batch, like torch.nn
            return batch_norm(input, None, None, self.weight, self.bias, True, 0.0, self.eps)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        rm = self.running_mean if self.track_running_stats else None
        rv = self.running_var if self.track_running_stats else None
        return SyncBatchNormFunction.apply(input, self.weight, self.bias, rm, rv, factor, self.eps,
                                            self.process_group)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Replace every batch norm layer (torch.nn's or bncourse.nn's, not ghost BN) of ``module`` by this class.

        Parameters and buffers are copied, so the converted model computes the same as before with one
        replica. Like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; returns the (possibly new) module.
        """
        out = module
        keep = (cls, GhostBatchNorm)          # ghost batch norm is deliberately unsynchronized
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, _BatchNorm)) and not isinstance(module, keep):
            p = next(iter(module.parameters()), module.running_mean)
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group, device=None if p is None else p.device, dtype=None if p is None else p.dtype)
            with torch.no_grad():
                if module.affine:
                    out.weight.copy_(module.weight)
                    out.bias.copy_(module.bias)
                if module.track_running_stats:
                    out.running_mean.copy_(module.running_mean)
                    out.running_var.copy_(module.running_var)
                    out.num_batches_tracked.copy_(module.num_batches_tracked)
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.process_group is None else ", process_group=custom")


# ----------------------------------------------------------------------------------------------
# Ghost batch norm
# ----------------------------------------------------------------------------------------------
class GhostBatchNorm(_BatchNorm):
    """Batch norm over consecutive virtual batches ("ghost batches") of ``virtual_batch_size`` examples.

    Training: x: (N, C, *) is split along N into chunks of ``virtual_batch_size`` (the last may be smaller);
    each chunk is normalized with its own mean and biased variance, and each chunk is one step of the running
    averages (as ``torch.cat([bn(c) for c in x.split(virtual_batch_size)])`` with one shared ``bn``). Eval:
    running statistics, exactly like ordinary batch norm. Hoffer et al. (2017) use it to keep the noise of
    small-batch statistics when training with large batches.

    Shape:
        Input: (N, C, *). Output: same shape.
    """
    _expected_dims = (2, 3, 4, 5)
    _layout = "(N, C, *)"

    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if not isinstance(virtual_batch_size, int) or virtual_batch_size < 1:
            raise ValueError(f"virtual_batch_size must be a positive int, got {virtual_batch_size!r}")
        self.virtual_batch_size = virtual_batch_size

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return super().forward(input)
        self._check_input_dim(input)
        N, C, vb = input.shape[0], input.shape[1], self.virtual_batch_size
        if N % vb or self.momentum is None:
            # the definition: one ordinary batch norm step per ghost batch
            return torch.cat([super(GhostBatchNorm, self).forward(chunk) for chunk in input.split(vb)])
        # the same, all ghost batches at once: (G, vb, C, *) with statistics over vb and the spatial dims
        if vb * input[0].numel() // C <= 1:
            raise ValueError(f"a ghost batch of {vb} example(s) of shape {tuple(input.shape[1:])} has one value "
                             f"per channel: batch norm needs more than 1")
        G = N // vb
        xg = input.reshape((G, vb) + tuple(input.shape[1:]))
        dims = (1,) + tuple(range(3, xg.dim()))
        var, mean = torch.var_mean(xg, dim=dims, correction=0, keepdim=True)    # (G, 1, C, 1...) each
        out = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(input.shape)
        if self.affine:
            shape = (1, C) + (1,) * (input.dim() - 2)
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            m = vb * input[0].numel() // C                                          # values per channel and ghost batch
            with torch.no_grad():
                for g in range(G):                                                  # one running-average step each
                    self.num_batches_tracked.add_(1)
                    self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean[g].flatten())
                    self.running_var.mul_(1 - self.momentum).add_(self.momentum * var[g].flatten() * m / (m - 1))
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"


# ----------------------------------------------------------------------------------------------
# Workers the chapter and the tests launch (module-level, so that spawned processes can import them)
# ----------------------------------------------------------------------------------------------
def _slice(splits: list[int], rank: int) -> slice:
    start = sum(splits[:rank])
    return slice(start, start + splits[rank])


def parity_worker(rank: int, world_size: int, case: dict) -> dict:
    """Train-mode steps of :class:`SyncBatchNorm` on this rank's slice of full batches, then one eval step.

    ``case``: ``xs``, ``dys``: lists (one per step) of full float64 batches (B, C, *); ``splits``: the W slice
    sizes (they may differ); ``weight``, ``bias``: (C,); ``momentum``, ``eps``. Returns per step the slice's
    output ``y``, input gradient ``dx`` and the LOCAL parameter gradients, then the running statistics and the
    eval-mode output of the slice of ``x_eval``.
    """
    sl = _slice(case["splits"], rank)
    C = case["xs"][0].shape[1]
    bn = SyncBatchNorm(C, eps=case["eps"], momentum=case["momentum"], dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(case["weight"]))
        bn.bias.copy_(torch.from_numpy(case["bias"]))
    out: dict[str, list] = {"y": [], "dx": [], "dweight": [], "dbias": []}
    for x_full, dy_full in zip(case["xs"], case["dys"]):
        x = torch.from_numpy(x_full[sl]).requires_grad_()
        bn.weight.grad = bn.bias.grad = None
        y = bn(x)
        y.backward(torch.from_numpy(dy_full[sl]))
        out["y"].append(y)
        out["dx"].append(x.grad)
        out["dweight"].append(bn.weight.grad.clone())
        out["dbias"].append(bn.bias.grad.clone())
    bn.eval()
    out["eval_y"] = bn(torch.from_numpy(case["x_eval"][sl]))
    out["running_mean"], out["running_var"] = bn.running_mean, bn.running_var
    out["num_batches_tracked"] = int(bn.num_batches_tracked)
    return out


def torch_sync_bn_on_cpu(rank: int, world_size: int) -> str:
    """What ``torch.nn.SyncBatchNorm`` says when asked to train on CPU tensors in a process group."""
    bn = nn.SyncBatchNorm(3)
    try:
        bn(torch.randn(4, 3))
    except Exception as e:          # noqa: BLE001 - the message is the result
        return f"{type(e).__name__}: {e}"
    return "it ran"


def replica_stats_worker(rank: int, world_size: int, x_full: np.ndarray) -> dict:
    """One train-mode step of plain ``torch.nn.BatchNorm1d`` on this rank's equal slice of x_full: (B, C).

    Returns the slice's own mean and biased variance, the output, and the layer's running statistics.
    """
    n = x_full.shape[0] // world_size
    x = torch.from_numpy(x_full[rank * n:(rank + 1) * n])
    bn = nn.BatchNorm1d(x.shape[1], dtype=x.dtype)
    y = bn(x)
    return {"slice_mean": x.mean(0), "slice_var": x.var(0, unbiased=False), "y": y,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def _counting_hook(state: list, bucket):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    buf = bucket.buffer()
    state.append(buf.numel() * buf.element_size())
    return allreduce_hook(None, bucket)


def train_worker(rank: int, world_size: int, data: tuple, cfg: dict) -> dict:
    """Data-parallel SGD with ``DistributedDataParallel``: the same global batch split over the replicas.

    ``data``: (x_train (N, D), y_train (N,), x_test, y_test) NumPy arrays. ``cfg``: ``widths`` (MLP, ReLU,
    batch norm after each hidden Linear), ``bn`` ("local": torch.nn.BatchNorm1d on each replica's slice;
    "sync": :class:`SyncBatchNorm`), ``global_batch`` B (divisible by W), ``steps``, ``lr``, ``seed``,
    ``dtype``; ``bn="ghost"`` with ``virtual_batch``: :class:`GhostBatchNorm` (meant for one process).
    ``momentum``: SGD's (default 0). Every replica draws the same shuffled order and takes its B / W slice of each global batch.
    Returns, from every rank: the test accuracy in eval mode with its own running statistics, the mean
    training loss over the last ``steps // 5`` steps, the flattened parameters, and the seconds per step.
    """
    from torch.nn.parallel import DistributedDataParallel

    from .models import mlp
    dtype = getattr(torch, cfg.get("dtype", "float64"))
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in data)
    x_train, x_test = x_train.to(dtype), x_test.to(dtype)
    B = cfg["global_batch"]
    if B % world_size:
        raise ValueError(f"global batch {B} is not divisible by {world_size} replicas")
    n = B // world_size
    torch.manual_seed(cfg["seed"])
    model = mlp(cfg["widths"], activation="relu", bn="torch").to(dtype)
    if cfg["bn"] == "sync":
        model = SyncBatchNorm.convert_sync_batchnorm(model)
    elif cfg["bn"] == "ghost":
        for i, layer in enumerate(model):
            if isinstance(layer, nn.BatchNorm1d):
                model[i] = GhostBatchNorm(layer.num_features, cfg["virtual_batch"], dtype=dtype)
    elif cfg["bn"] != "local":
        raise ValueError(f"bn must be 'local', 'sync' or 'ghost', got {cfg['bn']!r}")
    # One process without a group: plain training, the reference the replicas are compared with.
    # broadcast_buffers=False: each replica keeps its own running statistics (with the default, rank 0's are copied
    # to the others before every forward, one more message per step; rank 0's own are the same either way).
    if dist.is_initialized():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)      # torch 2.13 renames the argument
            ddp = DistributedDataParallel(model, broadcast_buffers=False)
    else:
        ddp = model
    opt = torch.optim.SGD(ddp.parameters(), lr=cfg["lr"], momentum=cfg.get("momentum", 0.0))
    order = torch.Generator().manual_seed(cfg["seed"])
    per_epoch = x_train.shape[0] // B
    losses = []
    t0 = time.perf_counter()
    for step in range(cfg["steps"]):
        if step % per_epoch == 0:
            perm = torch.randperm(x_train.shape[0], generator=order)
        start = (step % per_epoch) * B + rank * n
        idx = perm[start:start + n]
        loss = nn.functional.cross_entropy(ddp(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = (time.perf_counter() - t0) / cfg["steps"]
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).to(torch.float64).mean().item()
    return {"acc": acc, "loss": float(np.mean(losses[-max(1, cfg["steps"] // 5):])), "seconds_per_step": seconds,
            "params": torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()}


def cost_worker(rank: int, world_size: int, cfg: dict) -> dict:
    """Seconds per training step with plain and with synchronized batch norm, and what each step sends.

    ``cfg``: ``width``, ``layers`` (hidden Linear + BN + ReLU blocks), ``batch`` (per replica), ``repeats``
    (blocks of ``steps`` steps, alternating plain and synchronized so that both see the same machine load),
    ``steps``. Returns the median seconds per step of each, the messages and bytes per step of the BN layers
    (recorded) and of DDP's gradient all-reduce (a counting communication hook), per replica.
    """
    from torch.nn.parallel import DistributedDataParallel

    from .models import mlp
    torch.manual_seed(0)
    widths = [cfg["width"]] * (cfg["layers"] + 1) + [10]
    models = {"plain": mlp(widths, activation="relu", bn="torch")}
    models["sync"] = SyncBatchNorm.convert_sync_batchnorm(mlp(widths, activation="relu", bn="torch"))
    ddps, opts, buckets = {}, {}, {}
    for k, mdl in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ddps[k] = DistributedDataParallel(mdl, broadcast_buffers=False)
        buckets[k] = []
        ddps[k].register_comm_hook(buckets[k], _counting_hook)
        opts[k] = torch.optim.SGD(mdl.parameters(), lr=0.01)
    x = torch.randn(cfg["batch"], cfg["width"], generator=torch.Generator().manual_seed(rank))
    y = torch.randint(0, 10, (cfg["batch"],), generator=torch.Generator().manual_seed(rank))

    def step(k):
        loss = nn.functional.cross_entropy(ddps[k](x), y)
        opts[k].zero_grad()
        loss.backward()
        opts[k].step()

    for k in models:                         # warm-up, and one step recorded
        step(k)
        buckets[k].clear()
        with record_communication() as rec:
            step(k)
        models[k].comm = (rec.messages, rec.bytes, len(buckets[k]), sum(buckets[k]))
    times: dict[str, list[float]] = {"plain": [], "sync": []}
    for _ in range(cfg["repeats"]):
        for k in models:
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(cfg["steps"]):
                step(k)
            times[k].append((time.perf_counter() - t0) / cfg["steps"])
    out = {f"{k}_seconds": float(np.median(v)) for k, v in times.items()}
    for k, mdl in models.items():
        out[f"{k}_bn_messages"], out[f"{k}_bn_bytes"], out[f"{k}_grad_messages"], out[f"{k}_grad_bytes"] = mdl.comm
    out["parameters"] = sum(p.numel() for p in models["plain"].parameters())
    return out
