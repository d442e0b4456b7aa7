"""Predict-then-run questions of chapters 4-6: the student commits a number or a set of letters first.

Not a chapter module (its name does not start with ``ch``; it registers nothing): ``ch4_inference``,
``ch5_cnn`` and ``ch6_beyond`` subclass :class:`PredictNumber` and :class:`PredictChoice`.

In the notebook the answer cell reads::

    predicted_steps = None            # your prediction, a whole number of steps
    ### BEGIN SOLUTION
    predicted_steps = 152
    ### END SOLUTION

and the locked cell calls ``check("ch4_predict_var_steps", predicted_steps)``; the cell after it runs the
experiment and shows the truth. ``None`` (a prediction not yet made) raises ``NotImplementedError``, so a
handed-out notebook fails only with that, as for a function that is not written yet.

:class:`PredictNumber` accepts any real number (Python, NumPy, a 0-d or one-element array or tensor, in any
float precision) and grades it within ``truth ± tolerance`` (absolute); ``near_misses`` names a known wrong
line of reasoning by the interval of answers it leads to. No message gives the true value away (the
experiment cell does).

:class:`PredictChoice` accepts the chosen letters as a string (``"ABD"``, ``"a, b, d"``) or a list, tuple or
set of letters, and grades the set exactly; ``wrongly_chosen`` and ``wrongly_left_out`` explain each letter.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise

__all__ = ["PredictNumber", "PredictChoice", "as_number", "as_letters"]

_NOT_YET = ("you have not made your prediction yet: replace None in the answer cell by your {what}, and commit it "
            "before you run the experiment below")


def as_number(value: Any, what: str = "prediction") -> float:
    """A student's prediction as a Python float; NotImplementedError for None, CheckFailure if not a number."""
    if value is None or value is Ellipsis:
        raise NotImplementedError(_NOT_YET.format(what=what))
    if type(value).__module__.startswith("torch") and hasattr(value, "numel"):
        if value.numel() != 1:
            raise CheckFailure(f"the {what} must be a single number; you gave a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise CheckFailure(f"the {what} must be a single number; you gave an array of shape {value.shape}")
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CheckFailure(f"the {what} must be a number; you gave a {type(value).__name__} ({value!r})")
    out = float(value)
    if not np.isfinite(out):
        raise CheckFailure(f"the {what} must be a finite number; you gave {out!r}")
    return out


def as_letters(value: Any, options: tuple[str, ...]) -> str:
    """The chosen letters, upper case, sorted, without repeats (``"ABD"``); CheckFailure for anything else."""
    if value is None or value is Ellipsis:
        raise NotImplementedError(_NOT_YET.format(what="choice (a string of letters such as \"AC\")"))
    if isinstance(value, str):
        items = [ch for ch in value if not ch.isspace() and ch not in ",;/+"]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = []
        for v in value:
            if not isinstance(v, str):
                raise CheckFailure(f"give the letters of your choice as strings, e.g. \"AC\" or {{'A', 'C'}}; "
                                   f"you gave {type(v).__name__} {v!r} among them")
            items.extend(ch for ch in v if not ch.isspace())
    else:
        raise CheckFailure(f"give the letters of your choice as a string such as \"AC\" (or a set of letters); "
                           f"you gave a {type(value).__name__}")
    letters = sorted({ch.upper() for ch in items})
    unknown = [ch for ch in letters if ch not in options]
    if unknown:
        raise CheckFailure(f"{', '.join(repr(u) for u in unknown)} is not one of the options {', '.join(options)}")
    if not letters:
        raise CheckFailure("you chose no option at all; pick at least one letter")
    return "".join(letters)


class PredictNumber(Exercise):
    """A numeric prediction, graded within ``truth ± tolerance`` (both ends included)."""

    truth: float = 0.0
    tolerance: float = 0.0
    #: what the number is, for messages ("the predicted number of steps")
    quantity: str = "your prediction"
    #: ``{message: (low, high)}``: a known wrong reasoning and the answers it leads to
    near_misses: dict[str, tuple[float, float]] = {}

    def cases(self, rng):
        return [{"question": self.name}]

    def run(self, fn, case):
        return {"value": as_number(fn)}

    def verify(self, case, result):
        got = result.get("value")
        if isinstance(got, (bool, np.bool_)) or not isinstance(got, (int, float, np.integer, np.floating)):
            raise CheckFailure(f"{self.quantity} must be a number")
        got = float(got)
        if abs(got - self.truth) <= self.tolerance * (1 + 1e-12) + 1e-300:
            return
        for message, (low, high) in self.near_misses.items():
            if low <= got <= high:
                raise CheckFailure(f"{self.quantity} = {got:g} is outside the accepted range: {message}")
        side = "too high" if got > self.truth else "too low"
        raise CheckFailure(f"{self.quantity} = {got:g} is {side} (accepted within ±{self.tolerance:g} of the "
                           f"answer); reason it through again (hint({self.name!r})), then run the experiment below")


class PredictChoice(Exercise):
    """A multiple-choice prediction: the set of true statements, graded exactly."""

    options: tuple[str, ...] = ()
    answer: str = ""
    #: ``{letter: why it is wrong}`` for options that must not be chosen
    wrongly_chosen: dict[str, str] = {}
    #: ``{letter: why it is true}`` for options that must be chosen
    wrongly_left_out: dict[str, str] = {}

    def cases(self, rng):
        return [{"question": self.name}]

    def run(self, fn, case):
        return {"letters": as_letters(fn, self.options)}

    def verify(self, case, result):
        got = result.get("letters")
        if not isinstance(got, str):
            raise CheckFailure("the choice must be a string of letters")
        chosen, right = set(got), set(self.answer)
        if chosen == right:
            return
        extra = sorted(chosen - right)
        missing = sorted(right - chosen)
        parts = [f"{ch} is not true: {self.wrongly_chosen.get(ch, 'run the experiment below and look again')}"
                 for ch in extra]
        parts += [f"one you left out is true: {self.wrongly_left_out.get(ch, 'run the experiment below')}"
                  for ch in missing]
        raise CheckFailure(f"you chose {got}; " + "; ".join(parts))


# --------------------------------------------------------------------------------------------
# In-place mutation of the caller's arrays (shared by the exercises of chapters 4-6)
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
