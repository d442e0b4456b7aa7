"""bncourse.nn.BatchNorm1d/2d are drop-in replacements for torch.nn's: same state, outputs, gradients, stats."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from bncourse import functional as Fs
from bncourse.nn import BatchNorm1d, BatchNorm2d

CASES = [(BatchNorm1d, torch.nn.BatchNorm1d, (8, 5)),
         (BatchNorm1d, torch.nn.BatchNorm1d, (4, 5, 7)),
         (BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 6))]


def _pair(ours, theirs, C, **kw):
    a, b = ours(C, **kw).double(), theirs(C, **kw).double()
    if a.weight is not None:
        with torch.no_grad():
            w, c = torch.randn(C, dtype=torch.double), torch.randn(C, dtype=torch.double)
            a.weight.copy_(w); b.weight.copy_(w); a.bias.copy_(c); b.bias.copy_(c)
    return a, b


@pytest.mark.parametrize("ours, theirs, shape", CASES)
@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3},
                                {"affine": False}, {"track_running_stats": False}])
def test_train_then_eval_matches_torch(ours, theirs, shape, kw):
    torch.manual_seed(0)
    a, b = _pair(ours, theirs, shape[1], **kw)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert list(a.state_dict()) == list(b.state_dict())
    for _ in range(4):
        x = torch.randn(*shape, dtype=torch.double) * 3 + 2
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = a(xa), b(xb)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(ya, yb)
        torch.testing.assert_close(xa.grad, xb.grad)
        if a.weight is not None:
            torch.testing.assert_close(a.weight.grad, b.weight.grad)
            torch.testing.assert_close(a.bias.grad, b.bias.grad)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(ta, tb, msg=f"buffer {name} differs")
    a.eval(); b.eval()
    x = torch.randn(*shape, dtype=torch.double)
    torch.testing.assert_close(a(x), b(x))
    if a.track_running_stats:
        torch.testing.assert_close(a(x[:1]), b(x[:1]))      # one sample is fine in eval mode


def test_running_var_is_unbiased_and_normalization_biased():
    torch.manual_seed(1)
    bn = BatchNorm1d(3, momentum=1.0).double()               # momentum 1: running = last batch
    x = torch.randn(5, 3, dtype=torch.double)
    y = bn(x)
    torch.testing.assert_close(bn.running_var, x.var(dim=0, unbiased=True))
    torch.testing.assert_close(y.var(dim=0, unbiased=False), torch.full((3,), 1.0, dtype=torch.double),
                               rtol=0, atol=1e-4)


def test_momentum_none_is_the_cumulative_average():
    torch.manual_seed(2)
    bn = BatchNorm1d(2, momentum=None).double()
    batches = [torch.randn(6, 2, dtype=torch.double) + i for i in range(5)]
    for x in batches:
        bn(x)
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0))
    assert int(bn.num_batches_tracked) == 5


def test_load_state_dict_from_torch_module():
    theirs = torch.nn.BatchNorm2d(4)
    theirs(torch.randn(3, 4, 2, 2))
    ours = BatchNorm2d(4)
    ours.load_state_dict(theirs.state_dict())
    theirs.eval(); ours.eval()
    x = torch.randn(2, 4, 2, 2)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("module, x, message", [
    (BatchNorm1d(3), torch.randn(1, 3), "more than 1 value per channel"),
    (BatchNorm2d(3), torch.randn(1, 3, 1, 1), "more than 1 value per channel"),
    (BatchNorm1d(3), torch.randn(4, 3, 2, 2), "Use BatchNorm2d"),
    (BatchNorm2d(3), torch.randn(4, 3), "Use BatchNorm1d"),
    (BatchNorm1d(3), torch.randn(4, 5), "got input with 5 channels"),
    (BatchNorm2d(3), torch.randn(4, 5, 2, 2), "got input with 5 channels"),
])
def test_refuses_what_torch_refuses_with_a_clearer_message(module, x, message):
    reference = (torch.nn.BatchNorm1d if isinstance(module, BatchNorm1d) else torch.nn.BatchNorm2d)(3)
    with pytest.raises((ValueError, RuntimeError)):
        reference(x)                                          # torch refuses it too
    with pytest.raises(ValueError, match=message):
        module(x)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="weight on the NEW batch statistic"):
        BatchNorm1d(3, momentum=0.9 + 1)
    with pytest.raises(ValueError, match="keep-old alpha of 0.9.*is momentum=0.1") as info:
        BatchNorm1d(3, momentum=-0.1)
    assert "paper" not in str(info.value)          # the paper has no momentum; 0.9 is d2l's and CS231n's
    with pytest.raises(ValueError, match="positive int"):
        BatchNorm1d(0)


def test_mode_is_explicit_not_guessed_from_grad_mode():
    bn = BatchNorm1d(2)
    with torch.no_grad():
        bn(torch.randn(4, 2))                                 # still training mode under no_grad
    assert int(bn.num_batches_tracked) == 1


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), c=st.integers(1, 5), momentum=st.floats(0.0, 1.0), seed=st.integers(0, 999))
def test_functional_matches_torch_functional(n, c, momentum, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 3, generator=g, dtype=torch.double)
    w, b = torch.randn(c, generator=g, dtype=torch.double), torch.randn(c, generator=g, dtype=torch.double)
    rm1, rv1 = torch.zeros(c, dtype=torch.double), torch.ones(c, dtype=torch.double)
    rm2, rv2 = rm1.clone(), rv1.clone()
    ours = Fs.batch_norm(x, rm1, rv1, w, b, True, momentum, 1e-5)
    theirs = torch.nn.functional.batch_norm(x, rm2, rv2, w, b, True, momentum, 1e-5)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(rm1, rm2)
    torch.testing.assert_close(rv1, rv2)
