"""The code the grader runs inside the student's kernel, tested here without a kernel."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from bncourse.checks import core as checks
from bncourse.grading import kernel_side


def test_capped_stream_passes_the_limit_then_one_note():
    buf = io.StringIO()
    s = kernel_side.CappedStream(buf, 10)
    s.write("12345678")
    s.write("abcdef")
    s.write("more")
    s.write("and more")
    assert buf.getvalue() == "12345678ab" + kernel_side.SUPPRESSED
    assert s.getvalue() == buf.getvalue()          # everything else is the wrapped stream's


def test_trap_records_the_reference_and_raises():
    trap = kernel_side.make_trap("pkg.mod:fn")
    kernel_side.HITS.clear()
    with pytest.raises(RuntimeError, match="reference implementation pkg.mod:fn may not be used"):
        trap(1, k=2)
    assert kernel_side.HITS == ["pkg.mod:fn"]
    assert not trap.__code__.co_freevars           # so it can replace a function's __code__


def test_poisoned_catches_aliases_and_copies_then_restores():
    import types

    import bncourse.bn_numpy as bn
    from bncourse.bn_numpy import batchnorm_forward as alias      # bound before grading

    copy = types.FunctionType(bn.batchnorm_forward.__code__, bn.__dict__)
    x, g, b = np.ones((4, 3)), np.ones(3), np.zeros(3)
    with kernel_side.poisoned(["bncourse.bn_numpy:batchnorm_forward"]) as hits:
        with pytest.raises(RuntimeError):
            bn.batchnorm_forward(x, g, b)
        with pytest.raises(RuntimeError):
            alias(x, g, b)
        copy(x, g, b, 1e-5)                                       # runs, but the profiler notices
    assert hits.count("bncourse.bn_numpy:batchnorm_forward") == 3
    out, _ = bn.batchnorm_forward(x, g, b)                         # restored
    assert alias is bn.batchnorm_forward and out.shape == (4, 3)


def _own_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, {}


def _run(tmp_path, get_fn, name="bn_forward", seed=3):
    ex = checks.get_exercise(name)
    cases = checks.make_cases(ex, seed)
    arrays, meta = checks.to_wire(cases)
    np.savez(tmp_path / "cases.npz", **arrays)
    (tmp_path / "cases.json").write_text(meta)
    status = kernel_side.run_exercise(get_fn, name, str(tmp_path / "cases.npz"), str(tmp_path / "cases.json"),
                                      str(tmp_path / "out.npz"), str(tmp_path / "out.json"), 5.0)
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["status"] == status
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        results = checks.from_wire({k: z[k] for k in z.files}, report["meta"])
    return ex, cases, status, results


def test_run_exercise_writes_results_the_grader_verifies(tmp_path):
    ex, cases, status, results = _run(tmp_path, lambda: _own_forward)
    assert status["kind"] is None and len(results) == len(cases)
    checks.verify_results(ex, cases, results)


@pytest.mark.parametrize("get_fn, kind", [
    (lambda: undefined_name, "missing"),                                                   # noqa: F821
    (lambda: (lambda *a: (_ for _ in ()).throw(NotImplementedError())), "not_implemented"),
    (lambda: (lambda *a: 1 / 0), "failure"),
    (lambda: __import__("bncourse.bn_numpy").bn_numpy.batchnorm_forward, "reference"),
])
def test_run_exercise_reports_why_there_are_no_results(tmp_path, get_fn, kind):
    _, _, status, results = _run(tmp_path, get_fn)
    assert status["kind"] == kind and results == []


def test_launcher_sets_the_limits_then_runs_the_command():
    import subprocess
    import sys
    from pathlib import Path

    import bncourse.grading as grading

    launcher = Path(grading.__file__).with_name("_launcher.py")
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE))"
    out = subprocess.run([sys.executable, "-I", "-S", str(launcher), '{"NOFILE": 77, "CORE": 0}', "0", "--",
                          sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(77, 77) (0, 0)"
