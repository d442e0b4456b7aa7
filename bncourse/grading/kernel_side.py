"""Code that runs INSIDE the student's kernel (imported there as ``bncourse.grading.kernel_side``).

The grader sends one short cell per exercise (see ``core.exercise_cell``) that imports this module and
calls :func:`run_exercise`. It evaluates the function expression of the exercise's test cell in the
student's namespace and runs ``Exercise.run`` on the inputs the grader wrote through
``checks.core.run_cases``, which poisons the reference implementations (``Exercise.references``) with
:func:`poisoned` exactly as the in-notebook ``check`` does, and writes the results back as ``.npz`` (numeric arrays
only, no pickle) plus JSON. It never judges anything: verification happens in the grader's process.
Everything here is best effort against a hostile kernel (the student can patch this module too); what
the grader relies on is only that results are plain arrays it verifies itself (see ``grading/__init__``).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import sys
import types
from typing import Any, Callable, Iterator

SUPPRESSED = "\n[grader: further output suppressed]\n"


class CappedStream:
    """A text stream that passes on at most ``limit`` characters, then one note, then nothing."""

    def __init__(self, stream: Any, limit: int):
        self._stream, self._left, self._noted = stream, limit, False

    def write(self, text: str) -> int:
        if self._left <= 0:
            if not self._noted:
                self._noted = True
                self._stream.write(SUPPRESSED)
            return len(text)
        keep = text[: self._left]
        self._left -= len(text)
        self._stream.write(keep)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def cap_output(limit: int) -> None:
    """Cap what the notebook's cells print (the grader caps the messages it receives as well)."""
    sys.stdout = CappedStream(sys.stdout, limit)
    sys.stderr = CappedStream(sys.stderr, limit)


# --------------------------------------------------------------------------------------------
# Poisoning the reference implementations
# --------------------------------------------------------------------------------------------
HITS: list[str] = []          # references called while an exercise ran
_REF = "__bncourse_reference__"


def _trap_template(*args: Any, **kwargs: Any) -> None:  # its code object is copied into the poisoned functions
    __import__("sys").modules["bncourse.grading.kernel_side"].HITS.append("__bncourse_reference__")
    raise RuntimeError("the reference implementation __bncourse_reference__ may not be used here")


def make_trap(ref: str) -> types.FunctionType:
    """A function that records a call to ``ref`` and raises; its code has no free variables, so it can
    replace the ``__code__`` of the reference itself (catching aliases bound before the grading)."""
    code = _trap_template.__code__
    consts = tuple(c.replace(_REF, ref) if isinstance(c, str) and _REF in c else c for c in code.co_consts)
    return types.FunctionType(code.replace(co_consts=consts), {"__builtins__": __builtins__}, "_trap")


@contextlib.contextmanager
def poisoned(references: list[str]) -> Iterator[list[str]]:
    """Within the block, each ``"module:attr"`` reference raises when called (and any copy of its code is
    noticed by a profiler); yields the list of references hit."""
    HITS.clear()
    restore: list[tuple[Any, str, Any]] = []
    codes: dict[types.CodeType, str] = {}
    found = []
    for ref in references:      # import everything first: a module imported while another reference is
        modname, _, attr = ref.partition(":")      # poisoned would bind the trap for good (``from .x import f``)
        try:
            mod = importlib.import_module(modname)
            found.append((ref, mod, attr, getattr(mod, attr)))
        except Exception:
            continue
    for ref, mod, attr, obj in found:
        trap = make_trap(ref)
        if isinstance(obj, type):
            for klass in obj.__mro__:
                if klass.__module__.startswith(("torch.nn.modules.module", "builtins")):
                    continue
                for v in vars(klass).values():
                    if isinstance(v, types.FunctionType):
                        codes[v.__code__] = ref
            restore.append((obj, "__init__", obj.__dict__.get("__init__")))
            obj.__init__ = trap
        else:
            # numpy's public functions are dispatcher objects wrapping a plain function: remember its code too,
            # so a call through an alias bound before grading (``from numpy.linalg import cond``) is noticed
            inner = getattr(obj, "_implementation", None) or getattr(obj, "__wrapped__", None)
            if isinstance(inner, types.FunctionType):
                codes[inner.__code__] = ref
            if isinstance(obj, types.FunctionType):
                codes[obj.__code__] = ref
                if not obj.__code__.co_freevars:
                    restore.append((obj, "__code__", obj.__code__))
                    obj.__code__ = trap.__code__
            restore.append((mod, attr, obj))
            setattr(mod, attr, trap)

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            hit = codes.get(frame.f_code)
            if hit is not None:
                HITS.append(hit)

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        yield HITS
    finally:
        sys.setprofile(previous)
        for obj, attr, old in reversed(restore):
            if old is None:
                with contextlib.suppress(AttributeError):
                    delattr(obj, attr)
            else:
                setattr(obj, attr, old)


# --------------------------------------------------------------------------------------------
# Running one exercise
# --------------------------------------------------------------------------------------------
def run_exercise(get_fn: Callable[[], Any], name: str, cases_npz: str, cases_json: str, out_npz: str,
                 out_json: str, timeout: float) -> dict:
    """Run exercise ``name`` on the grader's cases with the function ``get_fn()``; write the results.

    Returns the status dict it wrote (``kind`` is None when the function ran on every case)."""
    import numpy as np

    from bncourse.checks import core

    status: dict[str, Any] = {"error": None, "kind": None, "reference": None}
    results = None
    try:
        fn = get_fn()
    except BaseException as e:
        status.update(kind="missing", error=f"{type(e).__name__}: {e}")
    else:
        ex = core.get_exercise(name)
        with np.load(cases_npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        with open(cases_json) as f:
            cases = core.from_wire(arrays, f.read())
        try:     # run_cases poisons the exercise's references, exactly as check() does in the notebook
            results = core.run_cases(ex, fn, cases, timeout=timeout)
        except NotImplementedError:
            status.update(kind="not_implemented", error="NotImplementedError")
        except core.ForbiddenCall as e:
            status.update(kind="reference", reference=e.reference, error=None)
        except core.CheckTimeout as e:
            status.update(kind="timeout", error=str(e))
        except core.CheckFailure as e:
            status.update(kind="failure", error=str(e))
        except BaseException as e:
            status.update(kind="exception", error=f"{type(e).__name__}: {e}")
    arrays, meta = core.to_wire(results or [])
    np.savez(out_npz, **arrays)
    with open(out_json, "w") as f:
        json.dump({"status": status, "meta": meta}, f)
    return status
