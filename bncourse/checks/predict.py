"""Predict-then-run exercises: the student commits a number (or a choice) before an experiment runs.

Not a chapter module (its name does not start with ``ch``; it registers nothing): chapters subclass one of

:class:`Prediction`
    a number or one of ``choices``, graded against ``truth`` within ``rtol``/``atol``; its ``mistakes``
    (:func:`predicted`, a :class:`~bncourse.checks.core.Mistake` whose wrong value is the prediction a known
    misconception leads to) name them (chapters 1-3).
:class:`PredictNumber`
    a number graded within ``truth ± tolerance`` (absolute); ``near_misses`` names a wrong line of reasoning
    by the interval of answers it leads to (chapters 4-6).
:class:`PredictChoice`
    the set of true statements among lettered options, as ``"ABD"``, ``"a, b, d"`` or a list/set of
    letters, graded exactly; ``wrongly_chosen`` / ``wrongly_left_out`` explain each letter.

In the notebook the answer cell sets a variable, ``None`` until the student commits::

    predicted_kappa = None          # your prediction, a number
    ### BEGIN SOLUTION
    predicted_kappa = 19.0
    ### END SOLUTION

and the locked cell runs ``check("ch1_predict_kappa_corr", predicted_kappa)``; the cell after it runs the
experiment and shows the truth. ``None`` (the handed-out state) raises ``NotImplementedError``, so an
unsolved notebook fails only with that. Every class accepts any real number (Python, NumPy, a 0-d or
one-element array or tensor, in any float precision). No message gives the true value away (the next
cell does).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise, Mistake, describe_value

__all__ = ["Prediction", "PredictNumber", "PredictChoice", "as_number", "as_letters", "predicted"]


def predicted(mistake_id: str, value: Any, message: str) -> Mistake:
    """The mistake of a :class:`Prediction`: a misconception that leads to the prediction ``value``."""
    return Mistake(mistake_id, message, lambda case, value=value: {"prediction": value})

def _plain(v: Any) -> Any:
    """Torch / NumPy scalars and 0-d or 1-element arrays -> Python numbers; anything else unchanged."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    item = getattr(v, "item", None)
    size = getattr(v, "size", None)
    n = size() if callable(size) else size            # torch: size() is a method; numpy: an int
    if callable(item) and (n is None or n == 1 or n == ()):
        try:
            return item()
        except Exception:
            return v
    return v


class Prediction(Exercise):
    """Base class: a committed number (``choices`` empty) or one of ``choices``, graded against ``truth``."""

    #: what is predicted, in the student's words (used in messages)
    quantity: str = "your prediction"
    #: the right answer (a number, or one of ``choices``)
    truth: Any = None
    #: accepted deviation of a number: |prediction - truth| <= atol + rtol * |truth|
    rtol: float = 0.0
    atol: float = 0.0
    #: for a choice: the allowed answers (strings are compared case-insensitively, stripped)
    choices: tuple = ()
    # known wrong predictions: ``mistakes = (predicted("id", value, message), ...)``; a number matches within
    # the same tolerance as the truth

    def cases(self, rng):
        return [{}]          # nothing to draw: the experiment is fixed, the answer is one number

    def run(self, fn, case):
        if fn is None or fn is Ellipsis:
            raise NotImplementedError(f"{self.name}: commit your prediction of {self.quantity} "
                                      f"(replace None) before running the experiment")
        return {"prediction": _plain(fn)}

    # ------------------------------------------------------------------------------------------
    def _norm(self, v):
        return v.strip().lower() if isinstance(v, str) else v

    def _close(self, a: float, b: float) -> bool:
        return abs(a - b) <= self.atol + self.rtol * abs(b)

    def tolerance_text(self) -> str:
        parts = []
        if self.rtol:
            parts.append(f"{100 * self.rtol:g} %")
        if self.atol:
            parts.append(f"{self.atol:g}")
        return " + ".join(parts) or "exact"

    def _wrong_values(self, case):
        for m in self.mistakes:
            yield m.wrong(case)["prediction"], m.text("prediction")

    def verify(self, case, result):
        got = result.get("prediction")
        if self.choices:
            allowed = [self._norm(c) for c in self.choices]
            if self._norm(got) not in allowed:
                raise CheckFailure(f"your prediction {got!r} is not one of the choices "
                                   f"{', '.join(repr(c) for c in self.choices)}")
            if self._norm(got) == self._norm(self.truth):
                return
            for value, message in self._wrong_values(case):
                if self._norm(got) == self._norm(value):
                    raise CheckFailure(f"{self.quantity}: not {got!r}: {message}")
            raise CheckFailure(f"{self.quantity}: not {got!r}; think again, then run the next cell")
        if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
            raise CheckFailure(f"your prediction of {self.quantity} is {describe_value(got)}; commit one number")
        got = float(got)
        if not np.isfinite(got):
            raise CheckFailure(f"your prediction of {self.quantity} is {got}; commit a finite number")
        truth = float(self.truth)
        if self._close(got, truth):
            return
        for value, message in self._wrong_values(case):
            if self._close(got, float(value)) and not self._close(float(value), truth):
                raise CheckFailure(f"{self.quantity}: {got:g} is not it: {message}")
        side = "too high" if got > truth else "too low"
        raise CheckFailure(f"{self.quantity}: {got:g} is {side} (the tolerance is {self.tolerance_text()}); "
                           f"reason it through again (hint({self.name!r})), then run the next cell")


# --------------------------------------------------------------------------------------------
# PredictNumber / PredictChoice (chapters 4-6)
# --------------------------------------------------------------------------------------------
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
