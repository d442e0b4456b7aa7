"""The self-check framework: one line after each exercise tells the student what is wrong.

A chapter's checks live in ``bncourse/checks/chN_topic.py``. Every module of this package whose
name starts with ``ch`` is imported automatically by ``bncourse.checks``, so a chapter author only
drops a module in. In the notebook::

    from bncourse.checks import check
    check("bn_forward", batchnorm_forward)        # prints "✓ bn_forward: 4 cases passed" or raises

How an exercise is checked
--------------------------
An :class:`Exercise` has three methods, deliberately split so that the batch grader
(``bncourse grade``) can run them in different processes:

``cases(rng)``
    Draw the inputs. ``rng`` is a seeded :class:`numpy.random.Generator`; return a list of dicts
    whose values are ndarrays or plain scalars (``float``, ``int``, ``bool``, ``str``, ``None``).
    The self-check uses a fixed seed; the grader draws a fresh one at grading time.
``run(fn, case)``
    Call the student's code (``fn`` is whatever the student passed: a function, or a class for a
    module exercise) and return a flat dict of results: ndarrays or plain scalars, nothing else.
    It runs where the student's code lives (the notebook kernel), so it must not call the
    reference implementation (the grader poisons it there, see ``references``) and must not
    judge anything. Turn tensors into arrays here (``t.detach().numpy()``); pass through whatever
    the student returned otherwise, so that :func:`expect_array` can complain about it. It may
    raise :class:`CheckFailure` for a malformed return value ("must return a tuple (out, cache)").
    Each call gets its own copy of the case's arrays; :func:`run_cases` records (under
    ``INPUTS_CHANGED``) which of them the student's code changed in place, and :func:`verify_results`
    fails that after ``verify``, for every exercise (``mutable_inputs`` lists arrays ``run`` may change).
``verify(case, result)``
    Runs in the checker's own process (in the grader: the grader's process, never the student's
    kernel). Compute the reference and compare with :func:`expect_array` / :func:`expect_scalar`,
    raising :class:`CheckFailure` with a message in the student's terms. When the values are wrong
    and match what a known mistake produces, that mistake's message is reported (see below).

Mistakes as data (the canonical form)
-------------------------------------
A common wrong answer is a :class:`Mistake`: a stable ``id`` (unique within the exercise; globally
``"exercise.id"``), the ``message`` the student reads, and ``wrong(case) -> {output: value}``, what a
student who makes that mistake returns, per output name (an output left out: the mistake does not
explain that output; ``None``: it does not apply to this case). An exercise declares them as class
data, ``mistakes = (Mistake("ddof1", "...", lambda c: {...}), ...)``, and ``verify`` passes them on:
``expect_array("out", got, want, mistakes=self.mistakes, case=case)`` (or ``self.expect_outputs``).
They are listed by :func:`all_mistakes`, and ``tests/test_mistake_registry.py`` requires an
independently written wrong implementation for each (``tests/mistakes_chN.py``) that gets exactly
that message. Mistakes are only ever data: a message that is not a declared Mistake cannot be
matched (the old ``{message: outcome}`` dicts built inside ``verify`` are gone).

Worked example
--------------
::

    import numpy as np
    from bncourse.checks.core import Exercise, Mistake, register

    def _normalize(x, eps, ddof=0, axis=0):
        mu = x.mean(axis=axis, keepdims=True)
        return (x - mu) / np.sqrt(x.var(axis=axis, ddof=ddof, keepdims=True) + eps)

    @register
    class Standardize(Exercise):
        name = "standardize"                     # check("standardize", standardize)
        title = "standardize each feature of a batch"
        references = ("bncourse.scaling:StandardScaler",)   # the student must not call these
        mistakes = (
            Mistake("ddof1", "you used the unbiased variance (ddof=1); use the biased 1/N one",
                    lambda c: {"out": _normalize(c["x"], c["eps"], ddof=1)}),
            Mistake("per_sample", "you took the statistics per sample (axis=1) instead of per feature (axis=0)",
                    lambda c: {"out": _normalize(c["x"], c["eps"], axis=1)}),
        )

        def cases(self, rng):
            return [{"x": rng.normal(3.0, 2.0, size=(n, 4)), "eps": eps}
                    for n, eps in ((8, 1e-5), (5, 0.1))]

        def run(self, fn, case):
            return {"out": fn(case["x"], case["eps"])}

        def verify(self, case, result):
            self.expect_outputs(case, result, {"out": _normalize(case["x"], case["eps"])}, rtol=1e-6, atol=1e-8)

What the student sees on failure (a :class:`CheckFailure`, so nbgrader and nbval see an error)::

    CheckFailure: ✗ standardize (standardize each feature of a batch), case 1 of 2
    [x: (8, 4) float64, eps=1e-05]: out is wrong: you used the unbiased variance (ddof=1); ...

``tests/test_checks.py`` runs this example.

Forbidden calls
---------------
``references`` lists the ready-made implementations an exercise asks the student to write (``"module:attr"``:
a function, a class, a NumPy function such as ``"numpy.linalg:cond"``). :func:`run_cases` runs the cases
with them poisoned, in the notebook exactly as in the grader (both use
:func:`bncourse.grading.kernel_side.poisoned`), so ``check`` raises :class:`ForbiddenCall` naming the call and
saying what to do instead (``Exercise.instead``, or a pointer to ``hint``) before the grader would zero it.
List only what a correct answer never needs: ``tests/test_checks_seeds.py`` runs every solution with its
references poisoned.

Tolerances (they must not depend on the seed)
---------------------------------------------
The grader draws fresh cases with a seed chosen at grading time, so the same answer must get the same
verdict under any seed: draw cases whose conditioning is bounded (variances bounded away from 0 unless
the case is about that, no near-ties for a comparison), and set tolerances from the round-off the
computation allows, not from what one seed happened to produce. ``tests/test_checks_seeds.py`` grades
every solution over 50 seeds. For fractions (``(d < t).float().mean()``: float32, known only to its
resolution ``1 / count``) use :func:`expect_fraction`, which accepts any float dtype and compares with
the absolute tolerance :func:`fraction_tolerance`; never a relative tolerance like ``rtol=1e-9``.

Rules that :func:`expect_array` enforces, in this order: the value is a plain ``numpy.ndarray``
(not a list, a tensor, a subclass or an object whose ``==`` is always true), its dtype, its shape
(a named mistake that explains a wrong shape is reported), finite values, then the values.

:func:`check` stops an infinite loop after ``timeout`` seconds (SIGALRM in the main thread; a
``threading.Timer`` + ``_thread.interrupt_main`` where there is no SIGALRM). ``NotImplementedError``
from an unsolved exercise is re-raised unchanged, so a handed-out notebook fails only with it.
"""
from __future__ import annotations

import _thread
import contextlib
import json
import signal
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

__all__ = [
    "CheckFailure",
    "CheckTimeout",
    "Exercise",
    "Mistake",
    "Opaque",
    "REGISTRY",
    "all_mistakes",
    "check",
    "describe_case",
    "describe_value",
    "diagnose",
    "default_seed",
    "expect",
    "expect_array",
    "expect_fraction",
    "fraction_tolerance",
    "in_place_message",
    "forbidden_message",
    "expect_scalar",
    "ForbiddenCall",
    "expect_inputs_unchanged",
    "get_exercise",
    "hint",
    "make_cases",
    "register",
    "reset_hints",
    "run_cases",
    "time_limit",
    "verify_results",
]

#: name -> Exercise subclass, filled by :func:`register`.
REGISTRY: dict[str, type["Exercise"]] = {}
#: chapter module -> "ExcType: message" for chapter modules that failed to import.
IMPORT_ERRORS: dict[str, str] = {}


class CheckFailure(AssertionError):
    """The student's answer is wrong; the message says how, in the student's terms."""


class CheckTimeout(CheckFailure):
    """The student's code ran longer than the time limit (probably an infinite loop)."""


class ForbiddenCall(CheckFailure):
    """The student's code called a reference implementation it was asked to write (``Exercise.references``).

    ``reference`` is the ``"module:attribute"`` that was called. The in-notebook :func:`check` and the grader
    raise it for the same calls, so an answer that passes ``check`` never loses its points in the grader
    for a forbidden call."""

    def __init__(self, message: str, reference: str):
        super().__init__(message)
        self.reference = reference


class _Alarm(BaseException):
    # Raised inside the student's code by the timer. A BaseException, so that a student's
    # ``except Exception:`` inside a loop cannot swallow it; turned into CheckTimeout outside.
    pass


class Opaque:
    """Stands for a value that could not travel as a plain array (the grader's wire format)."""

    def __init__(self, type_name: str, text: str = ""):
        self.type_name = type_name
        self.text = text

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


# --------------------------------------------------------------------------------------------
# Mistakes as data
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mistake:
    """A common wrong answer of an exercise, with a stable id.

    Attributes:
        id: unique within its exercise (letters, digits, ``_``); tests and reports refer to it as
            ``"exercise_name.id"``.
        message: what the student reads after "<output> is wrong: ". ``{output}`` in it is replaced by
            the name under which the result is checked (``"{output} was clipped"`` -> ``"Z_test was clipped"``).
        wrong: ``wrong(case) -> {output name: value}``, what a student who makes this mistake returns
            for ``case`` (the exercise's case dict), for every output the mistake explains (arrays or
            numbers). Outputs it leaves out are not diagnosed with it; returning ``None`` says the
            mistake does not apply to this case. It runs in the checker's process (like ``verify``), so
            it may use anything; it is computed lazily, at most once per case, and only when an
            output is wrong. A mistake whose value equals the right answer on a case is skipped there
            (it cannot be told apart).
    """

    id: str
    message: str
    wrong: Callable[[dict], Mapping[str, Any] | None]

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id.isidentifier():
            raise ValueError(f"Mistake id must be an identifier-like string, got {self.id!r}")
        if not isinstance(self.message, str) or not self.message.strip():
            raise ValueError(f"Mistake {self.id!r} needs a message")
        if not callable(self.wrong):
            raise ValueError(f"Mistake {self.id!r}: wrong must be callable: case -> {{output: value}}")

    def text(self, output: str) -> str:
        """The message for the result called ``output``."""
        return self.message.replace("{output}", output)


class _OutcomeCache(threading.local):
    """``wrong(case)`` of each mistake, computed once per case (the last case verified; per thread)."""

    def __init__(self):
        self.case: Any = None
        self.values: dict[int, tuple[Mistake, Any]] = {}

    def get(self, mistake: Mistake, case: Any) -> Any:
        if self.case is not case:
            self.case, self.values = case, {}
        hit = self.values.get(id(mistake))
        if hit is None or hit[0] is not mistake:
            try:
                with np.errstate(all="ignore"):
                    value = mistake.wrong(case)
            except Exception:          # a mistake that cannot even be computed for this case cannot match
                value = None
            hit = (mistake, value)
            self.values[id(mistake)] = hit
        return hit[1]


_OUTCOMES = _OutcomeCache()


def _as_candidates(mistakes: Any, case: Any, output: str | None, label: str | None = None) -> list[tuple[str, Any]]:
    """``[(message, zero-argument callable giving the outcome), ...]`` for the Mistake objects ``mistakes``."""
    if not mistakes:
        return []
    if isinstance(mistakes, Mapping):
        raise TypeError("mistakes must be Mistake objects (declared as the exercise's data), not a dict")
    if case is None or output is None:
        raise TypeError("Mistake objects need the case and the output name: expect_array(..., case=case)")
    out = []
    for m in mistakes:
        if not isinstance(m, Mistake):
            raise TypeError(f"mistakes must be Mistake objects, got {m!r}")

        def outcome(m=m):
            values = _OUTCOMES.get(m, case)
            if values is None or output not in values:
                raise LookupError(output)             # this mistake does not explain this output
            return values[output]
        out.append((m.text(label or output), outcome))
    return out


# --------------------------------------------------------------------------------------------
# Exercises and the registry
# --------------------------------------------------------------------------------------------
class Exercise:
    """Base class of an auto-checked exercise; see the module docstring for the contract."""

    #: what students type: ``check(name, fn)``; letters, digits and ``_``; unique across chapters.
    name: str = ""
    #: one line shown in messages.
    title: str = ""
    #: ``"module:attribute"`` of reference implementations the student's code must not call
    #: (functions or classes). The grader poisons them inside the student's kernel before ``run``.
    references: tuple[str, ...] = ()
    #: what to use instead of a forbidden reference, shown when the student calls one (optional; e.g.
    #: ``"compute the eigenvalues with np.linalg.eigvalsh and divide the largest by the smallest"``).
    instead: str = ""
    #: the hint ladder, most general first: the concept, then the shapes, then the formula.
    #: :func:`hint` shows the next rung each time it is called. A hint never contains the code.
    hints: tuple[str, ...] = ()
    #: the common wrong answers, as data (:class:`Mistake`); ``verify`` passes them to the comparisons.
    mistakes: tuple[Mistake, ...] = ()
    #: case arrays that ``run`` itself may change (none by default): every other array of a case that differs
    #: after ``run`` was changed in place by the student's code, which :func:`verify_results` fails
    mutable_inputs: tuple[str, ...] = ()
    #: how the in-place message names a case array (default: its key), e.g. ``{"x1": "x"}``
    input_labels: Mapping[str, str] = {}
    #: the subject of the in-place message
    in_place_subject: str = "your function"

    def cases(self, rng: np.random.Generator) -> list[dict]:
        raise NotImplementedError

    def run(self, fn: Any, case: dict) -> dict:
        raise NotImplementedError

    def verify(self, case: dict, result: dict) -> None:
        raise NotImplementedError

    # helpers for verify ------------------------------------------------------------------------
    def mistake(self, mistake_id: str) -> Mistake:
        """The declared mistake with this id (KeyError naming the known ids)."""
        for m in self.mistakes:
            if m.id == mistake_id:
                return m
        raise KeyError(f"{self.name} declares no mistake {mistake_id!r} "
                       f"(it has: {', '.join(m.id for m in self.mistakes) or 'none'})")

    def expect_outputs(self, case: dict, result: Mapping[str, Any], want: Mapping[str, Any], *,
                       rtol: float = 1e-6, atol: float = 1e-8) -> None:
        """:func:`expect_array` for every output in ``want`` (in its order), diagnosing with ``self.mistakes``."""
        for output, value in want.items():
            expect_array(output, result[output], value, rtol=rtol, atol=atol, mistakes=self.mistakes, case=case)


def all_mistakes() -> dict[tuple[str, str], Mistake]:
    """Every declared :class:`Mistake` of every registered exercise: ``{(exercise name, id): Mistake}``."""
    out: dict[tuple[str, str], Mistake] = {}
    for name in sorted(REGISTRY):
        for m in REGISTRY[name].mistakes:
            out[(name, m.id)] = m
    return out


def _check_mistakes(cls: type[Exercise]) -> None:
    mistakes = cls.mistakes
    if not isinstance(mistakes, tuple) or not all(isinstance(m, Mistake) for m in mistakes):
        raise ValueError(f"{cls.__qualname__}.mistakes must be a tuple of Mistake objects")
    seen: set[str] = set()
    for m in mistakes:
        if m.id in seen:
            raise ValueError(f"{cls.__qualname__} declares the mistake id {m.id!r} twice")
        seen.add(m.id)


def register(cls: type[Exercise]) -> type[Exercise]:
    """Class decorator: make an :class:`Exercise` available to :func:`check` and the grader."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__qualname__}.name must be an identifier-like string, got {name!r}")
    old = REGISTRY.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"exercise name {name!r} is registered twice: by {old.__module__}.{old.__qualname__} and by "
            f"{cls.__module__}.{cls.__qualname__}; pick another name"
        )
    _check_mistakes(cls)
    REGISTRY[name] = cls
    return cls


def get_exercise(name: str) -> Exercise:
    """A fresh instance of the registered exercise ``name`` (KeyError with the known names)."""
    try:
        return REGISTRY[name]()
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none"
        extra = ""
        if IMPORT_ERRORS:
            extra = "; these check modules failed to import: " + "; ".join(
                f"{m}: {e}" for m, e in sorted(IMPORT_ERRORS.items()))
        raise KeyError(f"no exercise called {name!r} (known: {known}){extra}") from None


def default_seed(name: str) -> int:
    """The fixed seed of the self-check for exercise ``name`` (stable across runs and machines)."""
    return zlib.crc32(name.encode("utf-8"))


def make_cases(ex: Exercise, seed: int) -> list[dict]:
    cases = ex.cases(np.random.default_rng(seed))
    if not cases:
        raise ValueError(f"exercise {ex.name!r} produced no cases")
    return cases


# --------------------------------------------------------------------------------------------
# Describing values in the student's terms
# --------------------------------------------------------------------------------------------
def describe_value(v: Any) -> str:
    if isinstance(v, Opaque):
        return f"a {v.type_name}"
    if v is None:
        return "None"
    t = type(v)
    mod = t.__module__
    if mod.startswith("torch") and t.__name__ in ("Tensor", "Parameter"):
        return f"a torch.Tensor of shape {tuple(v.shape)}"
    if isinstance(v, np.ndarray):
        return f"a {mod}.{t.__qualname__} of shape {v.shape} and dtype {v.dtype}"
    if isinstance(v, (list, tuple)):
        return f"a {t.__name__} of length {len(v)}"
    if isinstance(v, (bool, int, float, complex, np.generic)):
        return f"a {t.__name__} ({v!r})"
    return f"an object of type {mod}.{t.__qualname__}" if mod != "builtins" else f"a {t.__name__}"


def describe_case(case: Mapping[str, Any]) -> str:
    parts = []
    for k, v in case.items():
        if isinstance(v, np.ndarray):
            parts.append(f"{k}: {v.shape} {v.dtype}")
        elif isinstance(v, float):
            parts.append(f"{k}={v:g}")
        else:
            parts.append(f"{k}={v!r}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------
def expect(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailure` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailure(message)


def _resolve(candidate: Any) -> Any:
    return candidate() if callable(candidate) else candidate


def diagnose(got: np.ndarray, want: Any, mistakes: Any, *, rtol: float = 1e-6, atol: float = 1e-8,
             case: Mapping[str, Any] | None = None, output: str | None = None, label: str | None = None) -> str | None:
    """The message of the first mistake whose outcome matches ``got``, or None.

    ``mistakes`` is a sequence of :class:`Mistake` with the ``case`` being verified and the ``output``
    name; each mistake's ``wrong(case)[output]`` is computed only when needed. A mistake whose
    outcome equals ``want`` for this case cannot be told apart from the right answer and is skipped;
    so is one that cannot be computed or does not explain this output. ``label`` (default: ``output``)
    replaces ``{output}`` in a Mistake's message.
    """
    candidates = _as_candidates(mistakes, case, output, label)
    if not candidates:
        return None
    got = np.asarray(got)
    want = np.asarray(want)
    for message, candidate in candidates:
        try:
            cand = np.asarray(_resolve(candidate))
        except Exception:  # a mistake that cannot even be computed for this case cannot match
            continue
        if cand.shape != got.shape:
            continue
        if cand.shape == want.shape and np.allclose(cand, want, rtol=rtol, atol=atol, equal_nan=True):
            continue
        with np.errstate(all="ignore"):
            if np.allclose(got, cand, rtol=rtol, atol=atol, equal_nan=True):
                return message
    return None


def _check_plain_array(name: str, got: Any) -> None:
    if type(got) is np.ndarray:
        return
    if isinstance(got, np.ndarray):
        raise CheckFailure(
            f"{name} is a {type(got).__module__}.{type(got).__qualname__}, a subclass of numpy.ndarray; "
            f"return a plain numpy.ndarray (np.asarray(...))")
    t = type(got)
    if isinstance(got, Opaque):
        tn = got.type_name
    else:
        tn = f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__name__
    if got is None:
        hint = "did you forget a return statement?"
    elif tn.startswith("torch") or tn.endswith("Tensor"):
        hint = "this exercise works in NumPy; convert with .detach().numpy() or use NumPy operations"
    elif tn in ("list", "tuple"):
        hint = "build it with NumPy operations (or np.array(...)) instead of a Python " + tn
    elif tn in ("float", "int", "bool", "complex") or tn.startswith("numpy.float") or tn.startswith("numpy.int"):
        hint = "you returned a single number; keep the array (check which axis you reduced over)"
    else:
        hint = "return a plain numpy.ndarray"
    raise CheckFailure(f"{name} is {describe_value(got)}, expected a numpy.ndarray: {hint}")


def expect_array(name: str, got: Any, want: Any, *, rtol: float = 1e-6, atol: float = 1e-8,
                 mistakes: Any = None, dtype: Any = None, case: Mapping[str, Any] | None = None,
                 output: str | None = None) -> None:
    """Check a result array: type, dtype, shape, finiteness, then values (naming known mistakes).

    Args:
        name: what the student calls this result (``"out"``, ``"dx"``, ``"running_var"``).
        got: the student's value.
        want: the reference (array-like).
        rtol, atol: tolerance of ``np.allclose(got, want)``; also used to match mistakes.
        mistakes: :class:`Mistake` objects (``self.mistakes``), with ``case``.
        dtype: the required dtype (default: the dtype of ``want``).
        case: the case being verified (needed with Mistake objects).
        output: the key of this result in each mistake's ``wrong(case)`` (default: ``name``).
    """
    want = np.asarray(want)
    kw = {"case": case, "output": output or name, "label": name}
    if isinstance(got, (int, float, np.number)) and not isinstance(got, (bool, np.bool_)) and want.ndim:
        message = diagnose(np.asarray(got), want, mistakes, rtol=rtol, atol=atol, **kw)
        if message:
            raise CheckFailure(f"{name} is a single number instead of an array of shape {want.shape}: {message}")
    _check_plain_array(name, got)
    expected_dtype = np.dtype(dtype) if dtype is not None else want.dtype
    if got.dtype != expected_dtype:
        hint = ""
        if got.dtype.kind == "f" and expected_dtype.kind == "f" and got.itemsize < expected_dtype.itemsize:
            hint = " (something converted to lower precision; keep the input's dtype)"
        elif got.dtype.kind in "iub" and expected_dtype.kind == "f":
            hint = " (integer or boolean result: check for integer division or a comparison)"
        elif got.dtype == object:
            hint = " (an array of Python objects: build it with NumPy operations)"
        raise CheckFailure(f"{name} has dtype {got.dtype}, expected {expected_dtype}{hint}")
    if got.shape != want.shape:
        message = diagnose(got, want, mistakes, rtol=rtol, atol=atol, **kw)
        if message:
            raise CheckFailure(f"{name} has shape {got.shape} instead of {want.shape}: {message}")
        raise CheckFailure(f"{name} has shape {got.shape}, expected {want.shape}")
    with np.errstate(all="ignore"):
        if np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            return
    message = diagnose(got, want, mistakes, rtol=rtol, atol=atol, **kw)
    if message:
        raise CheckFailure(f"{name} is wrong: {message}")
    bad_nonfinite = ~np.isfinite(got) & np.isfinite(want)
    if bad_nonfinite.any():
        idx = tuple(int(i) for i in np.argwhere(bad_nonfinite)[0])
        raise CheckFailure(
            f"{name} contains {int(bad_nonfinite.sum())} NaN/inf value(s) where the answer is finite, "
            f"first at index {idx} (a division by zero or the square root of a negative number?)")
    with np.errstate(all="ignore"):
        err = np.abs(got - want) - (atol + rtol * np.abs(want))
    err = np.where(np.isnan(err), np.inf, err)
    idx = np.unravel_index(int(np.argmax(err)), got.shape) if got.ndim else ()
    n_bad = int((err > 0).sum())
    idx_t = tuple(int(i) for i in idx)
    raise CheckFailure(
        f"{name} has wrong values: {n_bad} of {got.size} entries differ beyond rtol={rtol:g}, atol={atol:g}; "
        f"the worst at index {idx_t}: got {got[idx].item()!r}, expected {want[idx].item()!r}")


def expect_scalar(name: str, got: Any, want: float, *, rtol: float = 1e-6, atol: float = 1e-8,
                  mistakes: Any = None, case: Mapping[str, Any] | None = None, output: str | None = None) -> None:
    """Check a single number (a Python or NumPy real scalar, not an array or a bool); ``mistakes``,
    ``case`` and ``output`` as for :func:`expect_array`."""
    if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
        raise CheckFailure(f"{name} is {describe_value(got)}, expected a single number")
    if np.isclose(float(got), float(want), rtol=rtol, atol=atol):
        return
    message = diagnose(np.asarray(float(got)), np.asarray(float(want)), mistakes, rtol=rtol, atol=atol,
                       case=case, output=output or name, label=name)
    if message:
        raise CheckFailure(f"{name} is wrong: {message}")
    raise CheckFailure(f"{name} is {float(got)!r}, expected {float(want)!r}")


def fraction_tolerance(count: Any) -> Any:
    """Absolute tolerance for a fraction ``k / count``: a quarter of its resolution ``1 / count`` (so a
    count off by one is caught), never below 1e-6 (the float32 round-off of a mean over a million entries).
    ``count`` may be an array (one denominator per entry, e.g. per layer of different widths)."""
    tol = np.maximum(0.25 / np.maximum(np.asarray(count, dtype=np.float64), 1.0), 1e-6)
    return float(tol) if tol.ndim == 0 else tol


def expect_fraction(name: str, got: Any, want: Any, count: Any, *, mistakes: Any = None,
                    case: Mapping[str, Any] | None = None, output: str | None = None) -> None:
    """Check a fraction ``k / count`` (share of saturated units, of correct predictions...), scalar or array.

    A fraction is only known to its resolution ``1 / count``, and students compute it in whatever
    precision their tensors have: ``(d < t).float().mean()`` is float32, exact only to about 6e-8. So,
    unlike :func:`expect_array`, any real float dtype (and, for a scalar, a Python or NumPy number or a
    0-d array) is accepted, and values are compared with the absolute tolerance
    :func:`fraction_tolerance` (``count``) instead of a relative one. Use it for every fraction; a
    generic ``rtol=1e-9`` rejects correct float32 answers.

    Args:
        name: what the student calls this result.
        got: the student's value.
        want: the exact fraction(s), float64.
        count: how many things the fraction is taken over (its denominator); an int, or an array
            broadcastable to ``want`` (one denominator per entry).
        mistakes, case, output: as for :func:`expect_array`.
    """
    want = np.asarray(want, dtype=np.float64)
    kw = {"case": case, "output": output or name, "label": name}
    atol = fraction_tolerance(count)
    if isinstance(got, (bool, np.bool_)):
        raise CheckFailure(f"{name} is {describe_value(got)}, expected a fraction between 0 and 1 (a comparison "
                           f"gives booleans; average them as floats)")
    if want.ndim == 0 and isinstance(got, (int, float, np.integer, np.floating)):
        got = np.asarray(got)
    if want.ndim == 0 and type(got) is np.ndarray and got.size == 1:
        got = got.reshape(())
    _check_plain_array(name, got)
    if got.dtype.kind not in "fiu":
        raise CheckFailure(f"{name} has dtype {got.dtype}, expected floating-point fractions"
                           + (" (booleans: average them as floats, e.g. .float().mean() or .mean())"
                              if got.dtype.kind == "b" else ""))
    if got.shape != want.shape:
        message = diagnose(got, want, mistakes, rtol=0.0, atol=float(np.min(atol)), **kw)
        if message:
            raise CheckFailure(f"{name} has shape {got.shape} instead of {want.shape}: {message}")
        raise CheckFailure(f"{name} has shape {got.shape}, expected {want.shape}")
    got64 = got.astype(np.float64)
    with np.errstate(all="ignore"):
        if np.allclose(got64, want, rtol=0.0, atol=atol, equal_nan=True):
            return
        message = diagnose(got64, want, mistakes, rtol=0.0, atol=float(np.min(atol)), **kw)
        if message:
            raise CheckFailure(f"{name} is wrong: {message}")
        counts = np.broadcast_to(np.asarray(count, dtype=np.float64), want.shape)
        if np.all(counts > 1) and np.allclose(got64, want * counts, rtol=0.0, atol=0.5):
            raise CheckFailure(f"{name} holds counts, not fractions: divide by the number of entries")
    if not np.all(np.isfinite(got64)):
        raise CheckFailure(f"{name} contains NaN/inf; a fraction is a finite number between 0 and 1")
    if np.any(got64 < -atol) or np.any(got64 > 1 + atol):
        raise CheckFailure(f"{name} has values outside [0, 1] (from {got64.min():.4g} to {got64.max():.4g}); "
                           f"a fraction is a count divided by the number of entries")
    err = np.abs(got64 - want) - atol
    idx = np.unravel_index(int(np.argmax(err)), got64.shape) if got64.ndim else ()
    raise CheckFailure(
        f"{name} has wrong values: {int((err > 0).sum())} of {got64.size} differ by more than a quarter of "
        f"the resolution 1/count; the worst"
        + (f" at index {tuple(int(i) for i in idx)}" if got64.ndim else "")
        + f": got {got64[idx]:.6g}, expected {want[idx]:.6g}")


# --------------------------------------------------------------------------------------------
# Time limits
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: float | None, message: str = "time limit exceeded") -> Iterator[None]:
    """Raise :class:`CheckTimeout` (``message``) if the body runs longer than ``seconds``.

    Uses SIGALRM when called in the main thread of a POSIX process (the alarm repeats every 0.25 s,
    so code that catches the first one still stops), else a thread that calls ``_thread.interrupt_main``
    (also every 0.25 s, with Ctrl-C's default handler installed for the duration). Neither can interrupt a single long C call; the grader has its own
    per-cell limit for that. Off the main thread without SIGALRM there is no limit.
    """
    if not seconds or seconds <= 0:
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    if main and hasattr(signal, "SIGALRM"):
        def _handler(signum, frame):
            raise _Alarm()

        old_handler = signal.signal(signal.SIGALRM, _handler)
        signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
        try:
            yield
        except _Alarm:
            raise CheckTimeout(message) from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
    elif main:
        # Ctrl-C's default handler for the duration, so the simulated SIGINT becomes KeyboardInterrupt even where
        # some library left its own handler; and, like the alarm above, repeated every 0.25 s until the body stops.
        fired, done = threading.Event(), threading.Event()

        def _fire():
            if done.wait(seconds):
                return
            fired.set()
            while not done.wait(0.25 if fired.is_set() else 0):
                _thread.interrupt_main()

        old_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Thread(target=_fire, daemon=True, name="bncourse-time-limit")
        timer.start()
        try:
            yield
        except KeyboardInterrupt:
            if fired.is_set():
                raise CheckTimeout(message) from None
            raise
        finally:
            done.set()
            timer.join()
            signal.signal(signal.SIGINT, old_sigint)
    else:
        yield


# --------------------------------------------------------------------------------------------
# Running and verifying
# --------------------------------------------------------------------------------------------
def _copy_case(case: Mapping[str, Any]) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case.items()}


#: the key under which :func:`run_cases` records, in every result, the names of the case's arrays that the
#: student's code changed in place (comma-separated, "" if none; a plain string, so it crosses the grader's wire)
INPUTS_CHANGED = "_inputs_changed"


def _same_array(a: Any, b: np.ndarray) -> bool:
    if type(a) is not np.ndarray or a.shape != b.shape or a.dtype != b.dtype:
        return False
    try:
        return bool(np.array_equal(a, b, equal_nan=b.dtype.kind in "fc"))
    except TypeError:                      # object arrays
        return bool(np.array_equal(a, b))


def changed_case_arrays(ex: Exercise, original: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """Comma-separated names of ``original``'s arrays that differ in ``given`` (the copy the student's code got),
    except the exercise's ``mutable_inputs``."""
    return ",".join(k for k, v in original.items()
                    if isinstance(v, np.ndarray) and k not in ex.mutable_inputs and not _same_array(given.get(k), v))


def in_place_message(ex: Exercise, names: str) -> str:
    """What the student reads when their code changed the case arrays ``names`` (comma-separated) in place."""
    labels = ", ".join(ex.input_labels.get(k, k) for k in names.split(","))
    return (f"{ex.in_place_subject} changed its input(s) {labels} in place (an in-place operator such as -= or /=, "
            f"a slice assignment, or a torch method ending in _ such as sub_, on an argument); the caller's arrays "
            f"must stay as they were: compute into new arrays")


def expect_inputs_unchanged(ex: Exercise, result: Mapping[str, Any]) -> None:
    """Fail if :func:`run_cases` recorded that the student's code changed the caller's arrays in place.

    :func:`verify_results` calls it after every ``verify`` (so no exercise can miss it); an exercise calls it
    first thing in ``verify`` when a mutated input would otherwise surface as a less helpful "wrong values"."""
    names = result.get(INPUTS_CHANGED) or ""
    if isinstance(names, str) and names:
        raise CheckFailure(in_place_message(ex, names))


def _reference_label(ref: str) -> str:
    return ref.replace(":", ".")


def forbidden_message(ex: Exercise, reference: str) -> str:
    """What the student reads when their code called the reference ``reference`` of ``ex``."""
    instead = ex.instead or (f"write it with the operations the exercise's instructions describe "
                             f"(hint({ex.name!r}) shows the way)")
    return (f"✗ {ex.name} ({ex.title}): your code calls {_reference_label(reference)}, the reference "
            f"implementation of what this exercise asks you to write yourself; the grader gives no points for an "
            f"answer that calls it (even indirectly). Instead, {instead}.")


def _run_all(ex: Exercise, fn: Any, cases: list[dict], timeout: float | None) -> list[dict]:
    results = []
    where = f"{ex.name} ({ex.title})"
    with time_limit(timeout, f"✗ {where}: your code was stopped after {timeout:g} s; it is probably stuck "
                             f"in an infinite loop (check the loop conditions) or far too slow"):
        for i, case in enumerate(cases):
            try:
                given = _copy_case(case)
                result = ex.run(fn, given)
                if isinstance(result, Mapping):
                    result = {**result, INPUTS_CHANGED: changed_case_arrays(ex, case, given)}
                results.append(result)
            except (NotImplementedError, CheckTimeout, _Alarm):
                raise
            except CheckFailure as e:
                raise CheckFailure(
                    f"✗ {where}, case {i + 1} of {len(cases)} [{describe_case(case)}]: {e}") from None
            except Exception as e:
                raise CheckFailure(
                    f"✗ {where}, case {i + 1} of {len(cases)} [{describe_case(case)}]: your code raised "
                    f"{type(e).__name__}: {e}") from e
    return results


def run_cases(ex: Exercise, fn: Any, cases: list[dict], *, timeout: float | None = 5.0,
              forbid_references: bool = True) -> list[dict]:
    """Call ``ex.run(fn, case)`` for every case, inside one time limit.

    Each call gets its own copy of the inputs. ``NotImplementedError`` and :class:`CheckFailure`
    propagate unchanged; any other exception becomes a :class:`CheckFailure` that names it.

    With ``forbid_references`` (the default, and what the grader does in the student's kernel), the
    exercise's ``references`` are poisoned while the cases run
    (:func:`bncourse.grading.kernel_side.poisoned`): a call to one, direct or through an alias or a copy
    of its code, raises :class:`ForbiddenCall` naming it, whatever else the code did. So ``check`` in the
    notebook reports exactly the calls the grader zeroes.
    """
    refs = list(ex.references) if forbid_references else []
    if not refs:
        return _run_all(ex, fn, cases, timeout)
    from bncourse.grading.kernel_side import poisoned

    error: BaseException | None = None
    results: list[dict] = []
    with poisoned(refs) as hits:
        try:
            results = _run_all(ex, fn, cases, timeout)
        except KeyboardInterrupt:
            raise
        except BaseException as e:       # a trap raised inside the student's code, or any other failure
            error = e
        called = list(hits)
    if called:
        raise ForbiddenCall(forbidden_message(ex, called[0]), called[0]) from None
    if error is not None:
        raise error
    return results


def verify_results(ex: Exercise, cases: list[dict], results: list[Any]) -> None:
    """Verify every case; raise :class:`CheckFailure` naming the first failing case."""
    for i, (case, result) in enumerate(zip(cases, results)):
        try:
            if not isinstance(result, Mapping):
                raise CheckFailure(f"internal: run() returned {describe_value(result)}, not a dict")
            ex.verify(case, result)
            expect_inputs_unchanged(ex, result)
        except CheckFailure as e:
            raise CheckFailure(
                f"✗ {ex.name} ({ex.title}), case {i + 1} of {len(cases)} [{describe_case(case)}]: {e}"
            ) from None


def check(name: str, fn: Any, timeout: float = 5.0, seed: int | None = None, *, quiet: bool = False,
          allow_references: bool = False) -> None:
    """Check the student's ``fn`` for exercise ``name``; print one pass line or raise CheckFailure.

    Args:
        name: the exercise, e.g. ``"bn_forward"``.
        fn: the student's function (or class, for a module exercise).
        timeout: seconds before the student's code is stopped (infinite loop).
        seed: inputs seed; default: a fixed seed per exercise (the grader passes a fresh one).
        quiet: do not print the pass line.
        allow_references: let ``fn`` call the exercise's reference implementations (for tests that check
            the references against their own exercise; a student's answer never gets this: the grader
            gives no points for a call to a reference, and :class:`ForbiddenCall` says so here first).
    """
    ex = get_exercise(name)
    cases = make_cases(ex, default_seed(name) if seed is None else seed)
    results = run_cases(ex, fn, cases, timeout=timeout, forbid_references=not allow_references)
    verify_results(ex, cases, results)
    if not quiet:
        print(f"✓ {name}: {len(cases)} cases passed")


_HINTS_SHOWN: dict[str, int] = {}


def hint(name: str) -> str:
    """Print and return the next hint for exercise ``name`` (concept, then shapes, then formula).

    Each call climbs one rung of the exercise's ladder; the last rung says so and is repeated
    by later calls (:func:`reset_hints` starts over). Hints never print the solution code.
    """
    ex = get_exercise(name)
    ladder = tuple(ex.hints)
    if not ladder:
        text = f"no hints are written for {name!r}; re-read the exercise's instructions and the cell above it"
        print(text)
        return text
    shown = _HINTS_SHOWN.get(name, 0)
    rung = min(shown, len(ladder) - 1)
    _HINTS_SHOWN[name] = shown + 1
    text = f"hint {rung + 1} of {len(ladder)} for {name}: {ladder[rung]}"
    if rung == len(ladder) - 1:
        text += " (the last hint; calling hint again repeats it)"
    print(text)
    return text


def reset_hints(name: str | None = None) -> None:
    """Start the hint ladder of ``name`` (or of every exercise) from the first rung again."""
    if name is None:
        _HINTS_SHOWN.clear()
    else:
        _HINTS_SHOWN.pop(name, None)


# --------------------------------------------------------------------------------------------
# Wire format between the grader and the student's kernel: npz arrays (no pickle) + JSON scalars
# --------------------------------------------------------------------------------------------
_PLAIN_SCALARS = (bool, int, float, str, type(None))


def to_wire(records: list[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], str]:
    """Split a list of flat dicts into npz-able numeric arrays and a JSON string for the rest.

    Anything that is not a plain numeric ndarray or a plain scalar travels as its type name only.
    """
    arrays: dict[str, np.ndarray] = {}
    meta: list[dict] = []
    for i, rec in enumerate(records):
        m: dict[str, Any] = {}
        for k, v in rec.items():
            key = f"{i}__{k}"
            if type(v) is np.ndarray and v.dtype.kind in "biufc":
                arrays[key] = v
                m[k] = {"array": key}
            elif type(v) in _PLAIN_SCALARS:
                if isinstance(v, float) and not np.isfinite(v):
                    m[k] = {"float": repr(v)}
                else:
                    m[k] = {"value": v}
            elif isinstance(v, np.generic) and type(v).__module__ == "numpy" and v.dtype.kind in "biuf":
                m[k] = {"value": v.item() if np.isfinite(v) else repr(float(v)), "numpy": v.dtype.str}
            else:
                t = type(v)
                tn = f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__name__
                if type(v) is np.ndarray:
                    tn = f"numpy.ndarray of dtype {v.dtype}"
                m[k] = {"opaque": tn}
        meta.append(m)
    return arrays, json.dumps(meta)


def from_wire(arrays: Mapping[str, np.ndarray], meta_json: str) -> list[dict]:
    """Inverse of :func:`to_wire`; non-plain values come back as :class:`Opaque`."""
    meta = json.loads(meta_json)
    if not isinstance(meta, list):
        raise ValueError("malformed results")
    out = []
    for m in meta:
        rec: dict[str, Any] = {}
        for k, spec in m.items():
            if "array" in spec:
                a = arrays[spec["array"]]
                if type(a) is not np.ndarray or a.dtype.kind not in "biufc":
                    raise ValueError("malformed results")
                rec[k] = a
            elif "float" in spec:
                rec[k] = float(spec["float"])
            elif "value" in spec:
                v = spec["value"]
                if "numpy" in spec:
                    v = np.dtype(spec["numpy"]).type(float(v) if isinstance(v, str) else v)
                elif type(v) not in _PLAIN_SCALARS:
                    v = Opaque(type(v).__name__)
                rec[k] = v
            else:
                rec[k] = Opaque(str(spec.get("opaque", "unknown object")))
        out.append(rec)
    return out
