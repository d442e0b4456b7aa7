"""Predict-then-run exercises: the student commits a number (or a choice) before an experiment runs.

Not a chapter module (its name does not start with ``ch``): chapters import :class:`Prediction` and
register subclasses. In the notebook the answer cell sets a variable, ``None`` until the student commits::

    predicted_kappa = None          # your prediction, a number
    ### BEGIN SOLUTION
    predicted_kappa = 19.0
    ### END SOLUTION

and the locked cell runs ``check("ch1_predict_kappa", predicted_kappa)``; the cell after it runs the
experiment and shows the truth. ``None`` (the handed-out state) raises ``NotImplementedError``, so an
unsolved notebook fails only with that. The verdict compares with :attr:`Prediction.truth` within the
tolerance the instructions state (:attr:`rtol`, :attr:`atol`); a wrong prediction that matches a known
misconception gets its message, and no message gives the true value away (the next cell does).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import CheckFailure, Exercise

__all__ = ["Prediction"]


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
    #: known wrong predictions: ((value, message), ...); a number matches within the same tolerance
    wrong: tuple = ()

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

    def verify(self, case, result):
        got = result.get("prediction")
        if self.choices:
            allowed = [self._norm(c) for c in self.choices]
            if self._norm(got) not in allowed:
                raise CheckFailure(f"your prediction {got!r} is not one of the choices "
                                   f"{', '.join(repr(c) for c in self.choices)}")
            if self._norm(got) == self._norm(self.truth):
                return
            for value, message in self.wrong:
                if self._norm(got) == self._norm(value):
                    raise CheckFailure(f"{self.quantity}: not {got!r}: {message}")
            raise CheckFailure(f"{self.quantity}: not {got!r}; think again, then run the next cell")
        if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
            from .core import describe_value
            raise CheckFailure(f"your prediction of {self.quantity} is {describe_value(got)}; commit one number")
        got = float(got)
        if not np.isfinite(got):
            raise CheckFailure(f"your prediction of {self.quantity} is {got}; commit a finite number")
        truth = float(self.truth)
        if self._close(got, truth):
            return
        for value, message in self.wrong:
            if self._close(got, float(value)) and not self._close(float(value), truth):
                raise CheckFailure(f"{self.quantity}: {got:g} is not it: {message}")
        side = "too high" if got > truth else "too low"
        raise CheckFailure(f"{self.quantity}: {got:g} is {side} (the tolerance is {self.tolerance_text()}); "
                           f"reason it through again (hint({self.name!r})), then run the next cell")
