"""Helpers shared by the chapter check modules (not a chapter module: it registers nothing).

``to_numpy`` / ``unpack``
    what ``run`` does to a student's return value: tensors become fresh NumPy arrays, anything else passes
    through for :func:`~bncourse.checks.core.expect_array` to judge; a tuple of the wrong length fails
    with the expected names.
``snapshot`` / ``changed_inputs`` / ``expect_inputs_unchanged`` and ``call_watching`` / ``in_place_message``
    in-place mutation of the caller's arrays, recorded in ``run`` (a comma-separated string of names,
    which travels over the grader's wire) and failed in ``verify``.
``swapped_order_message``
    a message when two results came back in each other's places.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, describe_value, expect

__all__ = ["to_numpy", "unpack", "snapshot", "changed_inputs", "expect_inputs_unchanged", "call_watching",
           "in_place_message", "swapped_order_message"]


def to_numpy(v: Any) -> Any:
    """A torch tensor -> a fresh NumPy array (detached, on the CPU); anything else unchanged."""
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
        return v.detach().cpu().numpy().copy()
    return v


def unpack(ret: Any, fn_name: str, names: tuple[str, ...]) -> tuple:
    """``ret`` if it is a tuple of ``len(names)`` values, else a CheckFailure naming what to return."""
    if not isinstance(ret, tuple) or len(ret) != len(names):
        raise CheckFailure(f"{fn_name} must return a tuple ({', '.join(names)}); it returned {describe_value(ret)}")
    return ret


def snapshot(case: dict) -> dict:
    """Copies of the case's arrays, taken in ``run`` before the student's code sees them."""
    return {k: v.copy() for k, v in case.items() if isinstance(v, np.ndarray)}


def changed_inputs(before: dict, case: dict) -> str:
    """Comma-separated names of the arrays the student's code changed in place ("" if none)."""
    return ",".join(k for k, v in before.items() if not np.array_equal(case[k], v, equal_nan=True))


def expect_inputs_unchanged(result: dict) -> None:
    """Fail naming the inputs that the student's function modified in place (``run`` recorded them)."""
    names = result.get("inputs_changed") or ""
    expect(not names, f"your function changed its input(s) {names.replace(',', ', ')} in place (an in-place operator "
                      f"such as -= or /=, or a slice assignment, on an argument); the caller's arrays must stay "
                      f"as they were: compute into new arrays")


# --------------------------------------------------------------------------------------------
# In-place mutation of the caller's arrays
# --------------------------------------------------------------------------------------------
def call_watching(fn: Any, args: dict[str, Any]) -> tuple[Any, str]:
    """Call ``fn(*args.values())``; return its result and the names of the array arguments it modified in place.

    ``args`` maps the argument names the student sees (``"x"``, ``"gamma"``) to the values passed, in order.
    The names come back comma-separated (``""`` when nothing changed), a plain string for the grader's wire.
    """
    before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    ret = fn(*args.values())
    changed = [k for k, v in before.items() if not np.array_equal(args[k], v, equal_nan=True)]
    return ret, ", ".join(changed)


def in_place_message(changed: str) -> str:
    """The failure message for :func:`call_watching`'s names (empty string: no failure)."""
    if not changed:
        return ""
    return (f"your function changed {changed} in place (the caller's array{'s' if ',' in changed else ''}); compute "
            f"new arrays instead (x - mu, not x -= mu; np.sum(...) into a new name) and leave the inputs as they were")


def swapped_order_message(result: dict, names: tuple[str, str], wants: tuple[Any, Any], *,
                          rtol: float = 1e-9, atol: float = 1e-10) -> str:
    """A message when the two results came back in each other's places (``(var, mean)`` for ``(mean, var)``)."""
    a, b = (result.get(k) for k in names)
    wa, wb = (np.asarray(w) for w in wants)
    if not all(type(v) is np.ndarray for v in (a, b)):
        return ""
    if a.shape != wb.shape or b.shape != wa.shape:
        return ""
    if wa.shape == wb.shape and np.allclose(wa, wb, rtol=rtol, atol=atol):
        return ""
    with np.errstate(all="ignore"):
        if np.allclose(a, wb, rtol=rtol, atol=atol) and np.allclose(b, wa, rtol=rtol, atol=atol):
            return (f"your function returned its two results in the wrong order: return ({names[0]}, {names[1]}), "
                    f"not ({names[1]}, {names[0]})")
    return ""
