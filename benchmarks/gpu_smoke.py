"""GPU smoke check: the from-scratch modules match torch.nn on CUDA, and LeNet trains there.

Run on a machine with a CUDA GPU: ``python benchmarks/gpu_smoke.py``. CI has no GPU, so this is a
script, not a test. It exits non-zero when something disagrees.

Also (chapter 7): ``torch.nn.SyncBatchNorm`` only runs on GPUs, so only here can the from-scratch
``bncourse.distributed.SyncBatchNorm`` be compared with it: two processes share the GPU in a gloo group
(NCCL refuses two ranks on one device) and run both on the same slices, in float64; and
``convert_sync_batchnorm`` of both is shown on LeNet. Without CUDA that part says so and is skipped.
"""
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from bncourse import get_device, seed_everything
from bncourse.distributed import SyncBatchNorm, launch
from bncourse.models import lenet
from bncourse.nn import BatchNorm1d, BatchNorm2d
from bncourse.train import train


def parity(device) -> float:
    worst = 0.0
    for ours_cls, theirs_cls, shape in [(BatchNorm1d, torch.nn.BatchNorm1d, (64, 32)),
                                        (BatchNorm2d, torch.nn.BatchNorm2d, (16, 8, 12, 12))]:
        ours, theirs = ours_cls(shape[1]).to(device).double(), theirs_cls(shape[1]).to(device).double()
        for _ in range(3):
            x = torch.randn(*shape, device=device, dtype=torch.double) * 2 + 1
            xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya, yb = ours(xa), theirs(xb)
            g = torch.randn_like(ya)
            ya.backward(g); yb.backward(g)
            worst = max(worst, (ya - yb).abs().max().item(), (xa.grad - xb.grad).abs().max().item(),
                        (ours.weight.grad - theirs.weight.grad).abs().max().item(),
                        (ours.running_var - theirs.running_var).abs().max().item())
        ours.eval(); theirs.eval()
        worst = max(worst, (ours(x) - theirs(x)).abs().max().item())
    return worst


def sync_parity_worker(rank: int, world_size: int, shape: tuple, splits: list) -> dict:
    """torch.nn.SyncBatchNorm and bncourse's SyncBatchNorm on this rank's slice, on CUDA, float64, 2 steps."""
    device = torch.device("cuda", rank % torch.cuda.device_count())
    gen = torch.Generator().manual_seed(0)                     # the same full batches on every rank
    start = sum(splits[:rank])
    sl = slice(start, start + splits[rank])
    C = shape[1]
    theirs = torch.nn.SyncBatchNorm(C).to(device).double()
    ours = SyncBatchNorm(C, device=device, dtype=torch.float64)
    worst = 0.0
    for _ in range(2):
        x_full = torch.randn(*shape, generator=gen, dtype=torch.float64) * 3 + 1
        dy_full = torch.randn(*shape, generator=gen, dtype=torch.float64)
        xa = x_full[sl].to(device).requires_grad_()
        xb = x_full[sl].to(device).requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        ya.backward(dy_full[sl].to(device))
        yb.backward(dy_full[sl].to(device))
        worst = max(worst, (ya - yb).abs().max().item(), (xa.grad - xb.grad).abs().max().item(),
                    (ours.weight.grad - theirs.weight.grad).abs().max().item(),
                    (ours.bias.grad - theirs.bias.grad).abs().max().item())
        ours.weight.grad = ours.bias.grad = theirs.weight.grad = theirs.bias.grad = None
    worst = max(worst, (ours.running_mean - theirs.running_mean).abs().max().item(),
                (ours.running_var - theirs.running_var).abs().max().item())
    return {"worst": worst}


def sync_batchnorm_smoke() -> bool:
    """Chapter 7: parity with torch.nn.SyncBatchNorm on 2 processes, and convert_sync_batchnorm; True if fine."""
    if not torch.cuda.is_available():
        print("torch.nn.SyncBatchNorm needs CUDA: no GPU here, SyncBatchNorm parity skipped "
              "(chapter 7 checks bncourse's SyncBatchNorm against one process on the concatenated batch on CPU)")
        return True
    ok = True
    for shape, splits in (((10, 3), [6, 4]), ((7, 4, 5, 5), [3, 4])):
        results = launch(sync_parity_worker, 2, shape, splits, timeout=300)
        worst = max(r["worst"] for r in results)
        print(f"bncourse SyncBatchNorm vs torch.nn.SyncBatchNorm, 2 processes on cuda, x {shape} split {splits}, "
              f"float64: max difference {worst:.1e}")
        ok = ok and worst < 1e-10
    model = lenet(bn="torch")
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    converted_torch = torch.nn.SyncBatchNorm.convert_sync_batchnorm(lenet(bn="torch"))
    converted_ours = SyncBatchNorm.convert_sync_batchnorm(lenet(bn="torch"))
    n_torch = sum(type(m) is torch.nn.SyncBatchNorm for m in converted_torch.modules())
    n_ours = sum(type(m) is SyncBatchNorm for m in converted_ours.modules())
    print(f"convert_sync_batchnorm on LeNet: {n_bn} batch norm layers -> {n_torch} torch.nn.SyncBatchNorm, "
          f"{n_ours} bncourse SyncBatchNorm")
    return ok and n_torch == n_ours == n_bn


def main() -> int:
    device = get_device()
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'no GPU'}), torch {torch.__version__}")
    worst = parity(device)
    print(f"bncourse.nn vs torch.nn on {device.type}, float64: max difference {worst:.1e}")
    seed_everything(0)
    x = torch.rand(2048, 1, 28, 28)
    y = (x.mean(dim=(1, 2, 3)) * 10).long().clamp(max=9)          # a learnable synthetic label
    loader = DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0))
    hist = train(lenet(bn="scratch"), loader, epochs=3, lr=1.0, test_loader=loader, device=device, progress=False)
    print(f"LeNet with from-scratch BN on {device.type}: loss {hist.step_loss[0]:.3f} -> {hist.step_loss[-1]:.3f}, "
          f"{hist.examples_per_second:,.0f} examples/s")
    ok = worst < 1e-10 and hist.step_loss[-1] < hist.step_loss[0]
    ok = sync_batchnorm_smoke() and ok
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
