"""CONTRIBUTING.md's "Adding an exercise in 25 lines" runs as written: the check registers, the right answer passes,
each wrong implementation of its table gets exactly its mistake's message, and an in-place change is named by
the shared mechanism without a line in the exercise."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bncourse.checks import REGISTRY, CheckFailure, check

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def _recipe_blocks() -> list[str]:
    text = CONTRIBUTING.read_text(encoding="utf-8")
    section = text[text.index("## Adding an exercise in 25 lines"):]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def recipe():
    check_code, table_code = _recipe_blocks()[:2]
    namespace: dict = {"__name__": "recipe"}
    exec(compile(check_code, "CONTRIBUTING.md", "exec"), namespace)
    table: dict = {"MISTAKES": {}, "np": np}
    exec(compile(table_code, "CONTRIBUTING.md", "exec"), table)
    try:
        yield namespace, table["MISTAKES"]
    finally:
        REGISTRY.pop("ch1_centre_columns", None)


def test_the_recipe_is_short():
    check_code = _recipe_blocks()[0]
    lines = [ln for ln in check_code.splitlines() if ln.strip()]
    assert len(lines) <= 30, len(lines)


def test_recipe_exercise_passes_the_right_answer_and_names_each_mistake(recipe, capsys):
    namespace, mistakes = recipe
    exercise = REGISTRY["ch1_centre_columns"]()
    assert {mid for _, mid in mistakes} == {m.id for m in exercise.mistakes}
    check("ch1_centre_columns", lambda X: X - X.mean(axis=0))
    assert capsys.readouterr().out == "✓ ch1_centre_columns: 2 cases passed\n"
    for (name, mid), wrong in mistakes.items():
        with pytest.raises(CheckFailure) as info:
            check(name, wrong, quiet=True)
        assert str(info.value).endswith("]: Z is wrong: " + exercise.mistake(mid).message), str(info.value)


def test_recipe_exercise_names_an_in_place_change_without_code_of_its_own(recipe):
    def centre_in_place(X):
        X -= X.mean(axis=0)
        return X
    with pytest.raises(CheckFailure) as info:
        check("ch1_centre_columns", centre_in_place, quiet=True)
    assert str(info.value).endswith(
        "]: your function changed its input(s) X in place (an in-place operator such as -= or /=, a slice "
        "assignment, or a torch method ending in _ such as sub_, on an argument); the caller's arrays must stay "
        "as they were: compute into new arrays")
