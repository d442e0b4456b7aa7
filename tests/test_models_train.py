"""Models and the training loop: shapes, BN placement, and that training on separable data learns."""
import torch
from torch.utils.data import DataLoader, TensorDataset

from bncourse import seed_everything
from bncourse.models import lenet, mlp
from bncourse.nn import BatchNorm1d
from bncourse.train import evaluate, train


def test_lenet_with_scratch_and_torch_bn_agree_when_seeded():
    x = torch.randn(8, 1, 28, 28)
    torch.manual_seed(0)
    a = lenet(bn="scratch")
    torch.manual_seed(0)
    b = lenet(bn="torch")
    torch.testing.assert_close(a(x), b(x))
    assert all(m.bias is None for m in a if isinstance(m, (torch.nn.Conv2d,)) )


def test_mlp_drops_the_bias_before_bn():
    m = mlp([4, 8, 3], bn="scratch")
    assert m[1].bias is None and isinstance(m[2], BatchNorm1d) and m[-1].bias is not None


def test_training_learns_a_separable_problem():
    seed_everything(0)
    x = torch.randn(512, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    model = mlp([2, 16, 2], activation="relu", bn="scratch")
    hist = train(model, loader, epochs=3, lr=0.5, test_loader=loader, progress=False, device="cpu")
    assert len(hist.step_loss) == 3 * 16
    assert hist.epoch_test_acc[-1] > 0.95
    assert evaluate(model, loader)[1] == hist.epoch_test_acc[-1]
    assert not hist.diverged and hist.examples_per_second > 0
