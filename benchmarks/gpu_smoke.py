"""GPU smoke check: the from-scratch modules match torch.nn on CUDA, and LeNet trains there.

Run on a machine with a CUDA GPU: ``python benchmarks/gpu_smoke.py``. CI has no GPU, so this is a
script, not a test. It exits non-zero when something disagrees.
"""
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from bncourse import get_device, seed_everything
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
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
