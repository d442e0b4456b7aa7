import os
import stat

import pytest
import torch

from bncourse.functional import batch_norm as bn_functional
from bncourse.fused import batch_norm_closed_form, count_passes, cpp_compiler, try_compile


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6)])
def test_closed_form_function_matches_torch(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    w = torch.rand(shape[1], dtype=torch.float64) + 0.5
    b = torch.randn(shape[1], dtype=torch.float64)
    dy = torch.randn(*shape, dtype=torch.float64)
    grads = []
    for fn in (batch_norm_closed_form,
               lambda a, g, c: torch.nn.functional.batch_norm(a, None, None, g, c, training=True)):
        inputs = [t.clone().requires_grad_(True) for t in (x, w, b)]
        out = fn(*inputs)
        out.backward(dy)
        grads.append([out.detach()] + [t.grad for t in inputs])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_closed_form_function_passes_gradcheck():
    torch.manual_seed(1)
    inputs = (torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True),
              torch.rand(2, dtype=torch.float64, requires_grad=True),
              torch.randn(2, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda a, g, c: batch_norm_closed_form(a, g, c), inputs)


def test_count_passes_sees_the_fused_kernel_as_one_operation():
    x, dy = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    w, b = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    fused = count_passes(lambda v: torch.nn.functional.batch_norm(v, None, None, w, b, training=True), x, dy)
    assert [op for op, _, _ in fused["forward"]] == ["native_batch_norm"]
    assert fused["forward_passes"] == 2 and fused["backward_passes"] == 3    # read x, write y; read x, dy, write dx
    scratch = count_passes(lambda v: bn_functional(v, None, None, w, b, training=True), x, dy)
    closed = count_passes(lambda v: batch_norm_closed_form(v, w, b), x, dy)
    assert scratch["backward_passes"] > closed["backward_passes"] > fused["backward_passes"]
    assert all(op not in ("view", "expand", "detach") for op, _, _ in scratch["backward"])   # views move no data


@pytest.fixture
def compiler_setting():
    from torch._inductor import config
    saved = config.cpp.cxx
    yield config
    config.cpp.cxx = saved
    from torch._inductor import cpp_builder
    cpp_builder.cpp_compiler_search.cache_clear()


def test_missing_compiler_gives_a_note_not_an_error(compiler_setting):
    compiler_setting.cpp.cxx = (None, "/nonexistent/g++")          # simulate a machine without one
    compiler, message = cpp_compiler()
    assert compiler is None and "no working C++ compiler" in message and "apt-get install g++" in message
    x = torch.randn(4, 3, requires_grad=True)
    compiled, note = try_compile(lambda v: v * 2, x, grad_output=torch.ones(4, 3))
    assert compiled is None and note == message


def test_broken_compiler_gives_a_note_not_an_error(compiler_setting, tmp_path):
    fake = tmp_path / "g++"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'g++ (fake) 1.0'; exit 0; fi\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    compiler_setting.cpp.cxx = (None, str(fake))
    assert cpp_compiler()[0] == str(fake)
    torch._dynamo.reset()
    x = torch.randn(5, 3, requires_grad=True)
    old_cache = os.environ.get("TORCHINDUCTOR_FORCE_DISABLE_CACHES")
    os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"            # make it really compile
    try:
        compiled, note = try_compile(lambda v: (v * 3 + 1).sum(dim=0), x, grad_output=torch.ones(3))
    finally:
        if old_cache is None:
            os.environ.pop("TORCHINDUCTOR_FORCE_DISABLE_CACHES")
        else:
            os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = old_cache
        torch._dynamo.reset()
    assert compiled is None and note.startswith("torch.compile failed")
