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


def test_xavier_init_as_d2l_train_ch6():
    torch.manual_seed(0)
    default = lenet()
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), lenet(init="default").parameters()))
    torch.manual_seed(0)
    net = lenet(bn="torch", init="xavier")
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1)                      # BN parameters untouched
    fc = net[9]                                                  # Linear(256, 120): Xavier is larger than default
    assert fc.weight.std() > 2 * default[9].weight.std()


def test_train_reports_training_time_and_calls_on_epoch():
    seed_everything(0)
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    calls = []
    hist = train(mlp([2, 4, 2], activation="relu"), loader, epochs=2, lr=0.1, progress=False, device="cpu",
                 on_epoch=lambda epoch, model, h: calls.append((epoch, len(h.step_loss))))
    assert calls == [(1, 4), (2, 8)]
    assert 0 < hist.train_seconds <= hist.seconds
    assert hist.train_examples_per_second >= hist.examples_per_second
