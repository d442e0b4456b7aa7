"""From-scratch layer/instance/group norm against torch.nn, and the shared-statistics mask."""
import numpy as np
import pytest
import torch
from torch import nn

from bncourse import normalizations as nz


def _x(shape=(3, 6, 5, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2.5 + 1.5).requires_grad_(True)


def _randomize(*modules, seed=1):
    g = torch.Generator().manual_seed(seed)
    for name in ("weight", "bias"):
        p = torch.randn(getattr(modules[0], name).shape, generator=g, dtype=torch.float64)
        for m in modules:
            with torch.no_grad():
                getattr(m, name).copy_(p)


def _compare(ours, theirs, x):
    x2 = x.detach().clone().requires_grad_(True)
    y1, y2 = ours(x), theirs(x2)
    assert torch.allclose(y1, y2, atol=1e-10), (y1 - y2).abs().max()
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-10)
    assert torch.allclose(ours.weight.grad, theirs.weight.grad, atol=1e-10)
    assert torch.allclose(ours.bias.grad, theirs.bias.grad, atol=1e-10)


def test_layer_norm_matches_torch_on_images():
    ours, theirs = nz.LayerNorm((6, 5, 4)).double(), nn.LayerNorm((6, 5, 4)).double()
    _randomize(ours, theirs)
    _compare(ours, theirs, _x())


def test_layer_norm_matches_torch_on_sequences():
    ours, theirs = nz.LayerNorm(7).double(), nn.LayerNorm(7).double()
    _randomize(ours, theirs)
    _compare(ours, theirs, _x((2, 9, 7)))


def test_instance_norm_matches_torch():
    ours, theirs = nz.InstanceNorm2d(6).double(), nn.InstanceNorm2d(6, affine=True).double()
    _randomize(ours, theirs)
    _compare(ours, theirs, _x())


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm_matches_torch(groups):
    ours, theirs = nz.GroupNorm(groups, 6).double(), nn.GroupNorm(groups, 6).double()
    _randomize(ours, theirs)
    _compare(ours, theirs, _x())


def test_batch_norm_train_matches_torch_functional():
    x = _x().detach()
    w, b = torch.rand(6, dtype=torch.float64) + 0.5, torch.randn(6, dtype=torch.float64)
    want = nn.functional.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    assert torch.allclose(nz.batch_norm_train(x, w, b), want, atol=1e-10)


def test_group_norm_extremes_are_layer_and_instance_norm():
    x = _x().detach()
    assert torch.allclose(nz.group_norm(x, 1), nz.layer_norm(x), atol=1e-12)
    assert torch.allclose(nz.group_norm(x, 6), nz.instance_norm(x), atol=1e-12)
    with pytest.raises(ValueError, match="divide"):
        nz.group_norm(x, 4)


@pytest.mark.parametrize("kind", nz.KINDS)
def test_mask_is_exactly_the_values_that_move_the_statistics(kind):
    # Changing a value inside the mask changes the normalized output at (n=0, c=0, first position);
    # changing one outside leaves it unchanged. This ties the figure to the implementations.
    n, c, h, w = 3, 6, 2, 2
    x = _x((n, c, h, w)).detach()
    fn = {"batch": nz.batch_norm_train, "layer": nz.layer_norm, "instance": nz.instance_norm,
          "group": lambda t: nz.group_norm(t, 2)}[kind]
    mask = nz.shared_statistics_mask(kind, n, c, h * w, groups=2)
    base = fn(x)[0, 0, 0, 0]
    for i in range(n):
        for j in range(c):
            for s in range(h * w):
                if (i, j, s) == (0, 0, 0):
                    continue
                x2 = x.clone()
                x2[i, j, s // w, s % w] += 3.0
                moved = not torch.isclose(fn(x2)[0, 0, 0, 0], base, atol=1e-12)
                assert moved == mask[i, j, s], (kind, i, j, s)


def test_plot_has_one_panel_per_kind():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    fig = nz.plot_normalization_axes()
    assert len(fig.axes) == 4
    assert [a.get_title() for a in fig.axes][0] == "batch norm"
    plt.close(fig)
