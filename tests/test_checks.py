"""The self-check framework and the chapter-3 checks: every known mistake gets its own message.

Each test feeds a deliberately wrong implementation to ``check`` and asserts the message names
the mistake. The wrong implementations are written here from scratch (not with the helpers of
``bncourse.checks.ch3_batchnorm``), so the test does not agree with the checks by construction.
"""
from __future__ import annotations

import re
import signal
import time

import numpy as np
import pytest
import torch
from torch import nn

from bncourse.checks import IMPORT_ERRORS, REGISTRY, CheckFailure, CheckTimeout, check, chapter_modules
from bncourse.checks.core import Exercise, expect_array, expect_scalar, register, time_limit
from bncourse.checks.bn_module import forward_mistakes


# ----------------------------------------------------------------------------------------------
# Configurable implementations: right by default, one mistake per flag
# ----------------------------------------------------------------------------------------------
def make_forward(ddof=0, axis=0, eps_mode="inside", power=0.5, center=True, params="ok", ret="tuple"):
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        mu = x.mean(axis=axis, keepdims=True)
        var = ((x - mu) ** 2).sum(axis=axis, keepdims=True) / (np.prod(np.shape(x)) / np.prod(mu.shape) - ddof)
        if eps_mode == "inside":
            denom = (var + eps) ** power
        elif eps_mode == "outside":
            denom = np.sqrt(var) + eps
        else:
            denom = np.sqrt(var)
        x_hat = ((x - mu) if center else x) / denom
        out = {"ok": lambda: gamma * x_hat + beta, "swapped": lambda: beta * x_hat + gamma,
               "no_gamma": lambda: x_hat + beta, "no_beta": lambda: gamma * x_hat,
               "none": lambda: x_hat}[params]()
        if ret == "tuple":
            return out, {}
        return out
    return batchnorm_forward


def make_backward(through_mean=True, through_var=True, use_gamma=True, ddof=0, axis=0,
                  dgamma_mode="ok", dbeta_mode="ok"):
    def batchnorm_backward(dout, x, gamma, eps=1e-5):
        n = x.shape[axis]
        mu = x.mean(axis=axis, keepdims=True)
        xc = x - mu
        var = (xc ** 2).sum(axis=axis, keepdims=True) / (n - ddof)
        std = np.sqrt(var + eps)
        x_hat = xc / std
        dx_hat = dout * gamma if use_gamma else dout
        dxc = dx_hat / std
        if through_var:
            dvar = (dx_hat * xc).sum(axis=axis, keepdims=True) * -0.5 * std ** -3
            dxc = dxc + dvar * 2 * xc / (n - ddof)
        if through_mean:
            dxc = dxc - dxc.mean(axis=axis, keepdims=True)
        dgamma = {"ok": lambda: (dout * x_hat).sum(axis=0), "axis1": lambda: (dout * x_hat).sum(axis=1),
                  "all": lambda: (dout * x_hat).sum(), "none": lambda: dout * x_hat,
                  "swapped": lambda: dout.sum(axis=0), "x": lambda: (dout * x).sum(axis=0)}[dgamma_mode]()
        dbeta = {"ok": lambda: dout.sum(axis=0), "axis1": lambda: dout.sum(axis=1),
                 "all": lambda: np.float64(dout.sum()), "none": lambda: dout,
                 "swapped": lambda: (dout * x_hat).sum(axis=0)}[dbeta_mode]()
        return dxc, dgamma, dbeta
    return batchnorm_backward


def make_module(momentum_reversed=False, bessel=True, update_in_eval=False, eval_batch_stats=False,
                var_init=1.0, detach_stats=False, update=True, replace=False, ddof_norm=0):
    class BatchNorm1d(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
            super().__init__()
            self.eps, self.momentum, self.affine = eps, momentum, affine
            if affine:
                self.weight = nn.Parameter(torch.ones(num_features))
                self.bias = nn.Parameter(torch.zeros(num_features))
            if track_running_stats:
                self.register_buffer("running_mean", torch.zeros(num_features))
                self.register_buffer("running_var", torch.full((num_features,), var_init))
                self.register_buffer("num_batches_tracked", torch.tensor(0))
            else:
                self.running_mean = self.running_var = self.num_batches_tracked = None

        def forward(self, x):
            batch = self.training or self.running_mean is None or eval_batch_stats
            mean, var = x.mean(0), x.var(0, unbiased=False)
            if batch and ddof_norm:
                var = x.var(0, unbiased=True)
            if detach_stats:
                mean, var = mean.detach(), var.detach()
            if self.running_mean is not None and update and (self.training or update_in_eval):
                if self.training:
                    self.num_batches_tracked += 1
                n = x.shape[0]
                m = 1 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
                if momentum_reversed:
                    m = 1 - m
                if replace:
                    m = 1.0
                unb = x.var(0, unbiased=bessel).detach()
                with torch.no_grad():
                    self.running_mean.copy_((1 - m) * self.running_mean + m * mean.detach())
                    self.running_var.copy_((1 - m) * self.running_var + m * unb)
            if not batch:
                mean, var = self.running_mean, self.running_var
            out = (x - mean) / torch.sqrt(var + self.eps)
            return self.weight * out + self.bias if self.affine else out
    return BatchNorm1d


def failure(name, fn, **kw) -> str:
    with pytest.raises(CheckFailure) as info:
        check(name, fn, **kw)
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# Right answers pass
# ----------------------------------------------------------------------------------------------
def test_right_answers_pass(capsys):
    check("bn_forward", make_forward())
    check("bn_backward_staged", make_backward())
    check("bn_backward", make_backward())
    check("bn_module", make_module())
    check("bn_module", nn.BatchNorm1d, allow_references=True)   # torch's own module is the specification
    out = capsys.readouterr().out.splitlines()
    assert out == ["✓ bn_forward: 4 cases passed", "✓ bn_backward_staged: 4 cases passed",
                   "✓ bn_backward: 4 cases passed", "✓ bn_module: 5 cases passed", "✓ bn_module: 5 cases passed"]


def test_bncourse_reference_passes_its_own_checks():
    from bncourse import bn_numpy
    from bncourse.nn import BatchNorm1d

    check("bn_forward", bn_numpy.batchnorm_forward, quiet=True, allow_references=True)
    check("bn_module", BatchNorm1d, quiet=True, allow_references=True)
    for name, bw in (("bn_backward", bn_numpy.batchnorm_backward),
                     ("bn_backward_staged", bn_numpy.batchnorm_backward_staged)):
        def adapted(dout, x, gamma, eps=1e-5, bw=bw):
            _, cache = bn_numpy.batchnorm_forward(x, gamma, np.zeros_like(gamma), eps)
            return bw(dout, cache)
        check(name, adapted, quiet=True, allow_references=True)


def test_fresh_seed_draws_other_inputs_and_still_passes():
    seen = []

    def spy(x, gamma, beta, eps=1e-5):
        seen.append(x.copy())
        return make_forward()(x, gamma, beta, eps)

    check("bn_forward", spy, quiet=True)
    check("bn_forward", spy, quiet=True, seed=12345)
    assert not np.array_equal(seen[0], seen[4])


# ----------------------------------------------------------------------------------------------
# Forward mistakes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, expected", [
    ({"ddof": 1}, "unbiased variance"),
    ({"axis": 1}, "per sample (axis=1"),
    ({"axis": None}, "over the whole batch at once"),
    ({"eps_mode": "missing"}, "eps is missing"),
    ({"eps_mode": "outside"}, "eps is outside the square root"),
    ({"power": 1.0}, "divided by the variance instead of the standard deviation"),
    ({"center": False}, "did not subtract the batch mean"),
    ({"params": "swapped"}, "gamma and beta are swapped"),
    ({"params": "no_gamma"}, "gamma is missing"),
    ({"params": "no_beta"}, "beta is missing"),
    ({"params": "none"}, "gamma and beta are missing"),
])
def test_forward_mistake_is_named(kwargs, expected):
    msg = failure("bn_forward", make_forward(**kwargs))
    assert expected in msg
    assert msg.startswith("✗ bn_forward")


def test_forward_must_return_a_tuple():
    assert "must return a tuple (out, cache)" in failure("bn_forward", make_forward(ret="array"))


def _wrong_4d(axes, ddof=0):
    def f(x, gamma, beta, eps):
        mu = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, ddof=ddof, keepdims=True)
        return gamma.reshape(1, -1, 1, 1) * (x - mu) / np.sqrt(var + eps) + beta.reshape(1, -1, 1, 1)
    return f


@pytest.mark.parametrize("axes, expected", [
    ((1, 2, 3), "per sample over (C, H, W)"),
    ((2, 3), "instance norm"),
    ((0,), "over the batch axis only (axis=0)"),
])
def test_4d_statistics_over_the_wrong_axes_are_named(axes, expected):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(4, 3, 5, 6))
    gamma, beta, eps = rng.uniform(0.5, 2, 3), rng.uniform(-1, 1, 3), 1e-5
    want = _wrong_4d((0, 2, 3))(x, gamma, beta, eps)
    case = {"x": x, "gamma": gamma, "beta": beta, "eps": eps}
    with pytest.raises(CheckFailure, match=re.escape(expected)):
        expect_array("out", _wrong_4d(axes)(x, gamma, beta, eps), want, mistakes=forward_mistakes(4), case=case)
    expect_array("out", want, want, mistakes=forward_mistakes(4), case=case)


# ----------------------------------------------------------------------------------------------
# Backward mistakes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bn_backward", "bn_backward_staged"])
@pytest.mark.parametrize("kwargs, expected", [
    ({"through_mean": False, "through_var": False}, "stop-gradient"),
    ({"through_mean": False}, "ignores the path through the batch mean:"),
    ({"through_var": False}, "ignores the path through the batch variance"),
    ({"use_gamma": False}, "forgets the factor gamma"),
    ({"ddof": 1}, "unbiased variance"),
    ({"axis": 1}, "per sample"),
    ({"dgamma_mode": "axis1"}, "dgamma is summed over the wrong axes"),
    ({"dgamma_mode": "all"}, "dgamma is summed over all axes"),
    ({"dgamma_mode": "none"}, "dgamma is not summed"),
    ({"dgamma_mode": "x"}, "dgamma uses x instead of the normalized x_hat"),
    ({"dgamma_mode": "swapped", "dbeta_mode": "swapped"}, "dgamma and dbeta are swapped"),
    ({"dbeta_mode": "axis1"}, "dbeta is summed over the wrong axes"),
    ({"dbeta_mode": "all"}, "dbeta is"),
    ({"dbeta_mode": "none"}, "dbeta is not summed"),
])
def test_backward_mistake_is_named(name, kwargs, expected):
    msg = failure(name, make_backward(**kwargs))
    assert expected in msg, msg


def test_backward_wrong_axes_message_reports_the_shape():
    msg = failure("bn_backward", make_backward(dgamma_mode="axis1"))
    assert "dgamma has shape (8,) instead of (5,)" in msg


# ----------------------------------------------------------------------------------------------
# Module mistakes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, expected", [
    ({"momentum_reversed": True}, "momentum convention is reversed"),
    ({"bessel": False}, "without Bessel's correction"),
    ({"update_in_eval": True}, "updated in eval (inference) mode"),
    ({"eval_batch_stats": True}, "eval mode normalized with the batch statistics"),
    ({"var_init": 0.0}, "running_var must start at 1"),
    ({"detach_stats": True}, "without gradient"),
    ({"update": False}, "was not updated in training mode"),
    ({"replace": True}, "replaced by the batch mean instead of averaged"),
    ({"ddof_norm": 1}, "unbiased variance"),
])
def test_module_mistake_is_named(kwargs, expected):
    msg = failure("bn_module", make_module(**kwargs))
    assert expected in msg, msg


def test_module_must_be_an_nn_module():
    class NotAModule:
        def __init__(self, *a, **k):
            pass
    assert "must create a torch.nn.Module" in failure("bn_module", NotAModule)


# ----------------------------------------------------------------------------------------------
# Type, dtype and shape come before values
# ----------------------------------------------------------------------------------------------
class AlwaysEqual:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    shape = (8, 5)
    dtype = np.dtype("float64")


class SneakyArray(np.ndarray):
    def __eq__(self, other):
        return np.ones(self.shape, dtype=bool)


@pytest.mark.parametrize("value, expected", [
    (AlwaysEqual(), "is an object of type test_checks.AlwaysEqual, expected a numpy.ndarray"),
    ([[0.0] * 5] * 8, "is a list of length 8, expected a numpy.ndarray"),
    (np.zeros((8, 5), dtype=np.float32), "has dtype float32, expected float64"),
    (np.zeros((8, 5), dtype=np.int64), "has dtype int64, expected float64"),
    (np.zeros((5, 8)), "has shape (5, 8), expected (8, 5)"),
    (torch.zeros(8, 5, dtype=torch.float64), "is a torch.Tensor"),
    (None, "did you forget a return statement"),
    (np.zeros((8, 5)).view(SneakyArray), "a subclass of numpy.ndarray"),
    (1.0, "single number"),
])
def test_type_dtype_and_shape_are_checked_before_values(value, expected):
    def fn(x, gamma, beta, eps=1e-5):
        return value, {}
    msg = failure("bn_forward", fn)
    assert expected in msg, msg


def test_nan_is_reported_as_such():
    def fn(x, gamma, beta, eps=1e-5):
        out, cache = make_forward()(x, gamma, beta, eps)
        out[0, 0] = np.nan
        return out, cache
    assert "NaN/inf" in failure("bn_forward", fn)


def test_generic_wrong_values_point_at_the_worst_entry():
    def fn(x, gamma, beta, eps=1e-5):
        out, cache = make_forward()(x, gamma, beta, eps)
        out[2, 2] += 1.0
        return out, cache
    msg = failure("bn_forward", fn)
    assert "1 of 40 entries differ" in msg and "index (2, 2)" in msg


def test_expect_scalar():
    expect_scalar("loss", 1.0, 1.0)
    with pytest.raises(CheckFailure, match="expected a single number"):
        expect_scalar("loss", np.ones(1), 1.0)
    from bncourse.checks.core import Mistake
    off_by_one = (Mistake("off_by_one", "off by one", lambda c: {"loss": c["want"] + 1}),)
    with pytest.raises(CheckFailure, match="loss is wrong: off by one"):
        expect_scalar("loss", 2.0, 1.0, mistakes=off_by_one, case={"want": 1.0})


# ----------------------------------------------------------------------------------------------
# Exceptions, time limits, NotImplementedError
# ----------------------------------------------------------------------------------------------
def test_infinite_loop_is_stopped_with_a_clear_message():
    def stuck(x, gamma, beta, eps=1e-5):
        while True:
            try:
                pass
            except Exception:    # a student's catch-all cannot swallow the timeout
                pass
    t0 = time.perf_counter()
    with pytest.raises(CheckTimeout, match="stopped after 0.5 s; it is probably stuck in an infinite loop"):
        check("bn_forward", stuck, timeout=0.5)
    assert time.perf_counter() - t0 < 3


def test_time_limit_thread_fallback(monkeypatch):
    import bncourse.checks.core as core
    monkeypatch.delattr(core.signal, "SIGALRM")
    t0 = time.perf_counter()
    with pytest.raises(CheckTimeout, match="too slow"):
        with time_limit(0.3, "too slow"):
            while time.perf_counter() - t0 < 30:          # bounded: a test must not spin forever if this breaks
                pass
    assert time.perf_counter() - t0 < 10


def test_time_limit_thread_fallback_outlasts_a_swallowed_interrupt_and_a_foreign_handler(monkeypatch):
    import bncourse.checks.core as core
    monkeypatch.delattr(core.signal, "SIGALRM")
    swallowed = []
    previous = signal.signal(signal.SIGINT, lambda *a: swallowed.append(1))     # a library's leftover handler
    try:
        t0 = time.perf_counter()
        with pytest.raises(CheckTimeout, match="too slow"):
            with time_limit(0.3, "too slow"):
                while time.perf_counter() - t0 < 30:
                    try:
                        while time.perf_counter() - t0 < 30:
                            pass
                    except KeyboardInterrupt:                  # student code that swallows the first interrupt
                        swallowed.append("student")
                        if swallowed.count("student") > 1:
                            raise
        assert time.perf_counter() - t0 < 10
        assert swallowed == ["student", "student"], "the second interrupt stops it; the foreign handler never ran"
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler, "the caller's handler is back"
    finally:
        signal.signal(signal.SIGINT, previous)


def test_student_exception_is_wrapped_with_the_case():
    def boom(x, gamma, beta, eps=1e-5):
        raise ValueError("operands could not be broadcast")
    msg = failure("bn_forward", boom)
    assert "your code raised ValueError: operands could not be broadcast" in msg
    assert "case 1 of 4 [x: (8, 5) float64" in msg


def test_not_implemented_error_passes_through_unchanged():
    def stub(x, gamma, beta, eps=1e-5):
        raise NotImplementedError()
    with pytest.raises(NotImplementedError):
        check("bn_forward", stub)


def test_student_cannot_corrupt_the_inputs_the_checker_verifies_against_and_in_place_changes_are_named():
    # the right output, then the inputs zeroed: verify still sees the original inputs (so the output passes),
    # and the shared in-place mechanism of core names the arrays that were changed, in every exercise
    def vandal(x, gamma, beta, eps=1e-5):
        out, cache = make_forward()(x, gamma, beta, eps)
        x[:] = 0.0
        gamma[:] = 0.0
        return out, cache
    with pytest.raises(CheckFailure) as info:
        check("bn_forward", vandal, quiet=True)
    assert str(info.value).endswith(
        "x: (8, 5) float64, gamma: (5,) float64, beta: (5,) float64, eps=1e-05]: your function changed its "
        "input(s) x, gamma in place (an in-place operator such as -= or /=, a slice assignment, or a torch method "
        "ending in _ such as sub_, on an argument); the caller's arrays must stay as they were: compute into new "
        "arrays")


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------
def test_every_chapter_module_imports():
    assert "ch3_batchnorm" in chapter_modules()
    assert IMPORT_ERRORS == {}
    assert {"bn_forward", "bn_backward_staged", "bn_backward", "bn_module"} <= set(REGISTRY)


def test_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="no exercise called 'bn_froward'.*bn_forward"):
        check("bn_froward", make_forward())


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="registered twice"):
        @register
        class Dup(Exercise):
            name = "bn_forward"


def test_every_exercise_has_a_title_and_draws_cases():
    for name, cls in REGISTRY.items():
        ex = cls()
        assert ex.title, name
        assert ex.cases(np.random.default_rng(0)), name


def test_hint_ladder_climbs_one_rung_per_call_and_stops_at_the_last():
    from bncourse.checks import REGISTRY, hint, reset_hints
    name = sorted(REGISTRY)[0]
    cls = REGISTRY[name]
    saved = cls.hints
    cls.hints = ("the concept", "the shapes", "the formula")
    try:
        reset_hints(name)
        shown = [hint(name) for _ in range(4)]
        assert shown[0] == f"hint 1 of 3 for {name}: the concept"
        assert shown[1] == f"hint 2 of 3 for {name}: the shapes"
        assert shown[2].startswith(f"hint 3 of 3 for {name}: the formula") and "last hint" in shown[2]
        assert shown[3] == shown[2]
        reset_hints(name)
        assert hint(name).startswith("hint 1 of 3")
    finally:
        cls.hints = saved
        reset_hints(name)


# ----------------------------------------------------------------------------------------------
# Forbidden calls: check() in the notebook reports exactly what the grader zeroes
# ----------------------------------------------------------------------------------------------
def _hessian(X):
    A = np.hstack([X, np.ones((len(X), 1))])
    return A.T @ A / len(X)


def _cond_by_eigenvalues(X):
    lam = np.linalg.eigvalsh(_hessian(X))
    return float(lam[-1] / lam[0])


def _cond_by_numpy(X):
    return float(np.linalg.cond(_hessian(X)))


class _CondExercise(Exercise):
    """A test-only exercise that forbids numpy.linalg.cond (chapter modules may choose otherwise)."""
    name = "test_only_condition_number"
    title = "condition number of A^T A / N"
    references = ("numpy.linalg:cond",)

    def cases(self, rng):
        return [{"X": rng.normal(size=(20, 3)) * np.array([1.0, 3.0, 10.0])} for _ in range(3)]

    def run(self, fn, case):
        return {"kappa": fn(case["X"])}

    def verify(self, case, result):
        lam = np.linalg.eigvalsh(_hessian(case["X"]))
        expect_scalar("kappa", result["kappa"], lam[-1] / lam[0], rtol=1e-8)


@pytest.fixture
def cond_exercise():
    register(_CondExercise)
    try:
        yield _CondExercise.name
    finally:
        REGISTRY.pop(_CondExercise.name, None)


def test_forbidden_numpy_call_is_reported_by_check_with_what_to_do_instead(cond_exercise):
    from numpy.linalg import cond as bound_before_check       # an alias: the module attribute is not used

    from bncourse.checks import ForbiddenCall

    check(cond_exercise, _cond_by_eigenvalues, quiet=True)      # the same maths without it passes
    for fn in (_cond_by_numpy, lambda X: float(bound_before_check(_hessian(X)))):
        with pytest.raises(ForbiddenCall) as info:
            check(cond_exercise, fn, quiet=True)
        message = str(info.value)
        assert info.value.reference == "numpy.linalg:cond"
        assert "calls numpy.linalg.cond" in message and "no points" in message
        assert "Instead, " in message and f"hint({cond_exercise!r})" in message
    assert np.linalg.cond(np.eye(2)) == 1.0                   # restored afterwards
    check(cond_exercise, _cond_by_numpy, quiet=True, allow_references=True)


def test_forbidden_call_wins_over_the_error_the_trap_raises_and_names_the_instead_text(cond_exercise, monkeypatch):
    from bncourse.checks import ForbiddenCall

    def swallowing(X):          # the trap's RuntimeError is caught by the student's code: still reported
        try:
            return _cond_by_numpy(X)
        except RuntimeError:
            return 0.0

    monkeypatch.setattr(_CondExercise, "instead", "use np.linalg.eigvalsh")
    with pytest.raises(ForbiddenCall, match="Instead, use np.linalg.eigvalsh"):
        check(cond_exercise, swallowing, quiet=True)


@pytest.mark.parametrize("fn, kind", [(_cond_by_numpy, "reference"), (_cond_by_eigenvalues, None)])
def test_grader_side_and_check_agree_on_forbidden_calls(tmp_path, cond_exercise, fn, kind):
    import json

    from bncourse.checks import core
    from bncourse.grading import kernel_side
    from bncourse.grading.core import ExerciseSpec, _explain

    ex = core.get_exercise(cond_exercise)
    arrays, meta = core.to_wire(core.make_cases(ex, 7))
    np.savez(tmp_path / "c.npz", **arrays)
    (tmp_path / "c.json").write_text(meta)
    status = kernel_side.run_exercise(lambda: fn, ex.name, str(tmp_path / "c.npz"), str(tmp_path / "c.json"),
                                      str(tmp_path / "o.npz"), str(tmp_path / "o.json"), 5.0)
    assert status["kind"] == kind
    assert json.loads((tmp_path / "o.json").read_text())["status"] == status
    if kind:
        with pytest.raises(CheckFailure) as info:
            check(ex.name, fn, quiet=True)
        spec = ExerciseSpec(ex.name, "fn", 1.0, "gid")
        assert _explain(kind, status["error"], spec, status["reference"]) == str(info.value)


def test_poisoning_imports_every_module_first_so_no_trap_leaks():
    # bncourse.nn binds bncourse.functional.batch_norm at import; poisoning both must not leave a trap behind
    import subprocess
    import sys

    code = ("from bncourse.grading.kernel_side import poisoned\n"
            "with poisoned(['bncourse.functional:batch_norm', 'bncourse.nn:BatchNorm1d']): pass\n"
            "import torch, bncourse.nn as m\n"
            "print(tuple(m.BatchNorm1d(3)(torch.randn(4, 3)).shape))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "(4, 3)", out.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# Fractions: resolution-aware, any float dtype
# ----------------------------------------------------------------------------------------------
def test_expect_fraction_accepts_float32_means_and_names_counts_percentages_and_off_by_one():
    from bncourse.checks import expect_fraction

    d = torch.from_numpy(np.random.default_rng(0).uniform(size=(3, 37)))
    want = (d < 0.3).double().mean(dim=1).numpy()
    got32 = (d.float() < 0.3).float().mean(dim=1).numpy()
    assert got32.dtype == np.float32 and not np.array_equal(got32.astype(np.float64), want)
    with pytest.raises(CheckFailure, match="3 of 3 entries differ"):
        expect_array("f", got32.astype(np.float64), want, rtol=1e-9, atol=1e-12)   # the generic default's false rejection
    expect_fraction("f", got32, want, 37)
    expect_fraction("f", np.float32(want[0]), want[0], 37)
    expect_fraction("f", float(want[0]), want[0], 37)
    expect_fraction("f", got32, want, np.array([37, 37, 37]))
    cases = [(want * 37, "holds counts, not fractions"),
             (want * 100, "percentages"),
             (want + 1 / 37, "differ by more than a quarter of the resolution"),
             ((d < 0.3).numpy(), "dtype bool"),
             (list(want), "expected a numpy.ndarray"),
             (want[:2], "has shape (2,)")]
    from bncourse.checks.core import Mistake
    percent = (Mistake("percent", "these are percentages", lambda c: {"f": want * 100}),)
    for got, fragment in cases:
        with pytest.raises(CheckFailure) as info:
            expect_fraction("f", got, want, 37, mistakes=percent, case={})
        assert fragment in str(info.value), str(info.value)


# ----------------------------------------------------------------------------------------------
# Mistakes as data (core.Mistake): the worked example of core's docstring runs, and the API's rules hold
# ----------------------------------------------------------------------------------------------
def _docstring_example() -> str:
    import bncourse.checks.core as core
    doc = core.__doc__
    start = doc.index("Worked example")
    block = doc[doc.index("::\n", start) + 3:doc.index("What the student sees", start)]
    import textwrap
    return textwrap.dedent(block)


@pytest.fixture
def docstring_exercise():
    namespace: dict = {}
    exec(compile(_docstring_example(), "core-docstring-example", "exec"), namespace)
    try:
        yield namespace
    finally:
        REGISTRY.pop("standardize", None)


def test_core_docstring_example_runs_and_names_its_mistakes(docstring_exercise, capsys):
    from bncourse.checks.core import all_mistakes

    def right(x, eps):
        return (x - x.mean(0)) / np.sqrt(x.var(0) + eps)

    def unbiased(x, eps):
        return (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps)

    check("standardize", right)
    assert capsys.readouterr().out == "✓ standardize: 2 cases passed\n"
    with pytest.raises(CheckFailure) as info:
        check("standardize", unbiased, quiet=True)
    assert str(info.value) == (
        "✗ standardize (standardize each feature of a batch), case 1 of 2 [x: (8, 4) float64, eps=1e-05]: "
        "out is wrong: you used the unbiased variance (ddof=1); use the biased 1/N one")
    assert set(all_mistakes()) >= {("standardize", "ddof1"), ("standardize", "per_sample")}


def test_mistake_ids_are_checked_and_unique_per_exercise():
    from bncourse.checks.core import Mistake
    with pytest.raises(ValueError, match="identifier"):
        Mistake("no eps", "eps is missing", lambda c: {})
    with pytest.raises(ValueError, match="twice"):
        @register
        class TwoIds(Exercise):
            name = "two_ids"
            mistakes = (Mistake("a", "one", lambda c: {}), Mistake("a", "two", lambda c: {}))
    assert "two_ids" not in REGISTRY
    with pytest.raises(ValueError, match="tuple of Mistake"):
        @register
        class DictMistakes(Exercise):
            name = "dict_mistakes"
            mistakes = {"message": np.zeros(2)}
    assert "dict_mistakes" not in REGISTRY


def test_mistakes_as_data_are_computed_once_per_case_per_output_and_skipped_where_they_do_not_apply():
    from bncourse.checks.core import Mistake, diagnose
    calls = []

    def doubled(case):
        calls.append(1)
        return {"a": 2 * case["x"]}                  # explains "a" only

    def not_here(case):
        return None                                   # does not apply to this case

    def broken(case):
        raise ZeroDivisionError                       # cannot be computed: cannot match

    ms = (Mistake("broken", "broken", broken), Mistake("not_here", "not here", not_here),
          Mistake("doubled", "{output} is doubled", doubled))
    case = {"x": np.arange(3.0)}
    assert diagnose(2 * case["x"], case["x"], ms, case=case, output="a") == "a is doubled"
    assert diagnose(2 * case["x"], case["x"], ms, case=case, output="b") is None
    assert diagnose(2 * case["x"], case["x"], ms, case=case, output="a") == "a is doubled"
    assert len(calls) == 1
    with pytest.raises(TypeError, match="case"):
        diagnose(2 * case["x"], case["x"], ms)
    # mistakes are data: a {message: outcome} dict is refused
    with pytest.raises(TypeError, match="not a dict"):
        diagnose(2 * case["x"], case["x"], {"doubled": 2 * case["x"]})
    # a mistake equal to the right answer on this case cannot be told apart, so it is skipped
    zero = {"x": np.zeros(3)}
    assert diagnose(np.ones(3), zero["x"], ms, case=zero, output="a") is None


def test_in_place_record_crosses_the_graders_wire():
    """The grader runs the cases in the student's kernel and verifies in its own process: the names of the
    arrays changed in place travel as a plain string (to_wire / from_wire) and fail there as they do in check."""
    from bncourse.checks import core

    def vandal(x, gamma, beta, eps=1e-5):
        out = make_forward()(x, gamma, beta, eps)
        gamma *= 2.0
        return out

    ex = core.get_exercise("bn_forward")
    cases = core.make_cases(ex, 12345)
    results = core.run_cases(ex, vandal, cases)
    assert results[0][core.INPUTS_CHANGED] == "gamma"
    arrays, meta = core.to_wire(results)
    back = core.from_wire(arrays, meta)
    assert back[0][core.INPUTS_CHANGED] == "gamma"
    with pytest.raises(CheckFailure, match=re.escape("your function changed its input(s) gamma in place")):
        core.verify_results(ex, cases, back)
