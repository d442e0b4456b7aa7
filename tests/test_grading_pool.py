"""The kernel pool: the next submission's kernel is launched ahead of time, used once, never shared.

Graded unsandboxed here (fast, and the pool is the same with the sandbox: ``tests/test_grading.py`` and
``tests/test_grading_sandbox.py`` grade whole classes through it with bubblewrap).
"""
from __future__ import annotations

import math

import nbformat
import pytest

from bncourse.grading import core
from test_grading_manual import _assignment

pytestmark = pytest.mark.slow

def _class(tmp_path, n):
    nb = _assignment("an answer")
    source = tmp_path / "09_demo_exercises.ipynb"
    nbformat.write(nb, str(source))
    paths = []
    for i in range(n):
        p = tmp_path / f"s{i}" / source.name
        p.parent.mkdir()
        nbformat.write(nb, str(p))
        paths.append(p)
    return source, paths


def test_each_submission_gets_its_own_prelaunched_kernel_and_nothing_is_left(tmp_path, monkeypatch):
    launched, connected = [], []
    real_launch, real_connect = core.Kernel.launch, core.Kernel.connect

    def launch(self):
        launched.append(self)
        real_launch(self)

    def connect(self):
        connected.append(self)
        real_connect(self)

    monkeypatch.setattr(core.Kernel, "launch", launch)
    monkeypatch.setattr(core.Kernel, "connect", connect)
    source, paths = _class(tmp_path, 3)
    results = core.grade_many(paths, [str(source)], seed=3, jobs=1, root=tmp_path, progress=False, sandbox=False)
    assert [r.total for r in results] == [1.0, 1.0, 1.0], [r.to_dict() for r in results]
    # 3 kernels, each used by one submission: the 2nd and 3rd were launched while the one before was graded
    assert len(launched) == 3 and len(set(map(id, connected))) == 3
    assert len({k.tmp for k in launched}) == 3                  # its own directory each
    assert all(k.client is None for k in launched)               # all stopped, no spare left behind
    assert core._pool().spare is None


def test_a_prelaunched_kernel_has_the_preloaded_modules_bound_to_no_name(tmp_path):
    pool = core.KernelPool()
    pool.prelaunch(None)
    tmp, kernel = pool.take(None)
    assert pool.spare is None
    kernel.deadline = math.inf
    try:
        kernel.connect()
        status, _ = kernel.run("import sys\nassert {'numpy', 'torch', 'bncourse.checks'} <= set(sys.modules)\n"
                               "assert 'numpy' not in globals() and 'm' not in globals()", 60)
        assert status == "ok"
    finally:
        kernel.stop()
    pool.prelaunch(None)
    assert pool.take(object()) is None          # launched with other limits: stopped, not used
    assert pool.spare is None
