"""Every declared mistake has an independently written wrong implementation that gets exactly its message.

An exercise's common mistakes are data (``Exercise.mistakes``, :class:`bncourse.checks.core.Mistake`, listed by
:func:`bncourse.checks.core.all_mistakes`). For each one, a table in ``tests/mistakes_chN.py``
(``MISTAKES = {(exercise name, mistake id): wrong implementation}``) holds what a student who makes that mistake
would write: plain code written here as a student would, never built from the mistake's own ``wrong`` function or
from ``bncourse.checks``. This test

* fails for a declared mistake without a wrong implementation, and for a table entry that names no declared
  mistake (so "every named mistake is tested" is enforced, not a convention);
* runs ``check(name, wrong_implementation)`` and requires the failure to end with ``": " + the whole message``
  (``{output}`` in a message stands for the result's name); no fragment matching;
* requires the correct answer of every exercise that declares mistakes to pass: the solution notebooks' answers are
  graded on 50 seeds by ``tests/test_checks_seeds.py``, so here each such exercise must be in a solutions notebook;
  a table module may add independent right answers in ``CORRECT = {exercise name: implementation}``, checked here.

Every named mistake of a function, module or debugging exercise is a declared Mistake (``core.diagnose`` refuses
anything else), so this test guards all of them. The predict-then-run questions of chapters 4-6 (``PredictNumber``'s
``near_misses``, ``PredictChoice``'s per-letter reasons) name misconceptions by interval or letter, not by a wrong
output; their chapter tests check those messages.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from bncourse.checks import CheckFailure, ForbiddenCall, check
from bncourse.checks.core import all_mistakes, get_exercise
from bncourse.grading.core import load_source

HERE = Path(__file__).resolve().parent
TABLE_MODULES = sorted(p.stem for p in HERE.glob("mistakes_ch*.py"))


def _tables() -> tuple[dict, dict]:
    wrong: dict = {}
    correct: dict = {}
    for module_name in TABLE_MODULES:
        module = importlib.import_module(module_name)
        for key, impl in module.MISTAKES.items():
            assert key not in wrong, f"{key} has a wrong implementation in two tables"
            wrong[key] = impl
        correct.update(getattr(module, "CORRECT", {}))
    return wrong, correct


WRONG, CORRECT = _tables()
DECLARED = all_mistakes()


def test_there_are_tables_and_declared_mistakes():
    assert TABLE_MODULES and len(DECLARED) >= 40


def test_every_declared_mistake_has_a_wrong_implementation_and_every_entry_a_declared_mistake():
    missing = sorted(set(DECLARED) - set(WRONG))
    undeclared = sorted(set(WRONG) - set(DECLARED))
    assert not missing, f"declared mistakes without a wrong implementation in tests/mistakes_chN.py: {missing}"
    assert not undeclared, f"table entries naming no declared mistake: {undeclared}"


def _expected_pattern(message: str) -> re.Pattern:
    parts = [re.escape(p) for p in message.split("{output}")]
    return re.compile(": " + "(.+?)".join(parts) + r"\Z", re.DOTALL)


@pytest.mark.parametrize("name, mistake_id", sorted(set(DECLARED) & set(WRONG)), ids=lambda v: str(v))
def test_wrong_implementation_gets_exactly_its_message(name, mistake_id):
    message = get_exercise(name).mistake(mistake_id).message
    with pytest.raises(CheckFailure) as info:
        check(name, WRONG[name, mistake_id], quiet=True, allow_references=True)
    text = str(info.value)
    assert not isinstance(info.value, ForbiddenCall), text
    assert _expected_pattern(message).search(text), f"expected the message of {name}.{mistake_id}:\n  {message}\ngot:\n  {text}"


def test_every_exercise_with_mistakes_has_a_graded_solution():
    solved = {spec.name for path in sorted((HERE.parent / "solutions").glob("*_exercises.ipynb"))
              for spec in load_source(path).exercises}
    names = {name for name, _ in DECLARED}
    assert names <= solved | set(CORRECT), sorted(names - solved - set(CORRECT))


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_independent_right_answer_passes(name):
    check(name, CORRECT[name], quiet=True)
