"""In-place changes of the caller's arrays are named in every exercise that hands the student arrays.

Each function solution of ``solutions/`` is wrapped so that, after computing its (right) answer, it adds 1 to every
float array it was given, the "harmless clean-up" of a student who writes ``x -= mu`` on an argument. ``check``
must then fail with a message about the in-place change (``bncourse.checks.core.run_cases`` records it for every
exercise, ``verify_results`` fails it), never pass and never blame the values. Module and prediction exercises
take no arrays; the BatchNorm modules' in-place case is in ``tests/test_checks_ch3.py``.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from bncourse.checks import CheckFailure, check
from bncourse.grading.core import load_source
from test_checks_seeds import SOLUTIONS, _solution_namespace

_NAMESPACES: dict = {}


def _function_exercises():
    for path in SOLUTIONS:
        for spec in load_source(path).exercises:
            yield pytest.param(path, spec, id=spec.name)


def _vandal(fn, touched: list):
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        flat = []
        for a in (*args, *kwargs.values()):
            flat.extend(a if isinstance(a, (list, tuple)) else [a])     # a list of per-replica arrays, too
        for a in flat:
            if type(a) is np.ndarray and a.dtype.kind == "f" and a.size and a.flags.writeable:
                out = out.copy() if out is a else out
                a += 1.0
                touched.append(True)
        return out
    return wrapped


@pytest.mark.parametrize("path, spec", list(_function_exercises()))
def test_in_place_change_is_named(path, spec):
    if path not in _NAMESPACES:
        _NAMESPACES[path] = _solution_namespace(path)
    fn = eval(spec.expr, _NAMESPACES[path])
    if inspect.isclass(fn) or not callable(fn):
        pytest.skip("a class or a value: no array reaches the student's code as an argument")
    touched: list = []
    try:
        check(spec.name, _vandal(fn, touched), quiet=True, allow_references=True)
    except CheckFailure as failure:
        assert touched, f"{spec.name} failed although no array was changed: {failure}"
        assert "in place" in str(failure), str(failure)
        return
    assert not touched, f"{spec.name}: the caller's arrays were changed in place and check passed"
    pytest.skip("no float array reaches the student's code as an argument")
