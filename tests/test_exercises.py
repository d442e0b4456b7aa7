"""Exercise notebooks are generated from the solutions, and handed out they fail only with NotImplementedError."""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest

from bncourse.checks import REGISTRY
from bncourse.exercises import (SolutionMarkerError, exercise_text, make_exercises, stale_exercises,
                                strip_solutions)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*_exercises.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*_exercises.ipynb"))
NBGRADER_KEYS = {"schema_version", "grade", "solution", "locked", "grade_id", "points", "task", "cell_type"}


def _ids(paths):
    return [p.name for p in paths]


@pytest.fixture
def kernel_env(monkeypatch):
    """Kernels started by nbclient find the package even without an editable install."""
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + old if old else ""))
    monkeypatch.setenv("PYTHONHASHSEED", "0")


def test_there_are_exercise_notebooks():
    assert SOLUTIONS, "no solutions/*_exercises.ipynb"
    assert (ROOT / "solutions" / "03_batchnorm_from_scratch_exercises.ipynb") in SOLUTIONS


@pytest.mark.parametrize("src", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_exercises_folder_is_exactly_what_generation_produces(src):
    target = ROOT / "exercises" / src.name
    hint = (f"exercises/{src.name} is out of date with solutions/{src.name}; do not edit it by hand, "
            f"regenerate it with: bncourse make-exercises solutions exercises")
    assert target.exists(), hint
    assert target.read_text(encoding="utf-8") == exercise_text(src), hint


def test_no_stale_exercise_notebooks():
    stale = stale_exercises(ROOT / "solutions", ROOT / "exercises")
    assert not stale, f"exercise notebooks without a solutions notebook: {stale}; delete them"


def test_make_exercises_writes_and_then_reports_nothing_to_do(tmp_path):
    written = make_exercises(ROOT / "solutions", tmp_path / "ex")
    assert sorted(p.name for p in written) == [p.name for p in SOLUTIONS]
    assert make_exercises(ROOT / "solutions", tmp_path / "ex", check=True) == []
    first = written[0]
    first.write_text(first.read_text() + " ")
    assert make_exercises(ROOT / "solutions", tmp_path / "ex", check=True) == [first]


def test_cli_make_exercises(tmp_path, capsys):
    from bncourse.cli import main

    assert main(["make-exercises", str(ROOT / "solutions"), str(tmp_path)]) == 0
    assert main(["make-exercises", str(ROOT / "solutions"), str(tmp_path), "--check"]) == 0
    (tmp_path / SOLUTIONS[0].name).write_text("{}")
    assert main(["make-exercises", str(ROOT / "solutions"), str(tmp_path), "--check"]) == 1
    assert "run: bncourse make-exercises" in capsys.readouterr().out


def test_strip_solutions_keeps_indentation_and_removes_hidden_tests():
    src = ("def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    y = x + 1\n    ### END SOLUTION\n    return y\n"
           "### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS\ncheck('f', f)")
    assert strip_solutions(src) == ("def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
                                    "    return y\ncheck('f', f)")
    assert strip_solutions("### BEGIN SOLUTION\nan answer\n### END SOLUTION", "markdown") == "YOUR ANSWER HERE"
    for bad in ("### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"):
        with pytest.raises(SolutionMarkerError):
            strip_solutions(bad)


def _check_call(source: str):
    """(exercise name, function expression) of a test cell ``check("name", expr)``."""
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "check"]
    assert len(calls) == 1, f"a test cell must call check(...) once:\n{source}"
    name = calls[0].args[0]
    assert isinstance(name, ast.Constant) and isinstance(name.value, str)
    return name.value, ast.unparse(calls[0].args[1])


@pytest.mark.parametrize("src", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_solutions_carry_valid_nbgrader_metadata(src):
    nb = nbformat.read(str(src), as_version=4)
    ids = []
    n_answers = n_tests = 0
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        if md is None:
            assert "### BEGIN SOLUTION" not in cell.source, f"cell {i} has a solution but no nbgrader metadata"
            continue
        assert set(md) <= NBGRADER_KEYS, f"cell {i}: unknown nbgrader keys {set(md) - NBGRADER_KEYS}"
        assert md["schema_version"] == 3
        for key in ("grade", "solution", "locked", "grade_id"):
            assert key in md, f"cell {i}: nbgrader metadata without {key}"
        assert re.fullmatch(r"[A-Za-z0-9_-]+", md["grade_id"]), md["grade_id"]
        ids.append(md["grade_id"])
        if md["solution"]:
            n_answers += 1
            assert not md["locked"] and not md["grade"], f"cell {i}: answer cells are unlocked and ungraded"
            assert "### BEGIN SOLUTION" in cell.source, f"cell {i}: answer cell without solution markers"
        if md["grade"]:
            n_tests += 1
            assert md["locked"] and not md["solution"], f"cell {i}: test cells are locked"
            assert md.get("points", 0) > 0, f"cell {i}: test cell without points"
            name, _expr = _check_call(cell.source)
            assert name in REGISTRY, f"cell {i}: check({name!r}, ...) names no registered exercise"
    assert len(ids) == len(set(ids)), "grade_id values must be unique"
    assert n_answers >= 1 and n_tests >= 1


@pytest.mark.parametrize("src", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_solutions_store_a_clean_top_to_bottom_run(src):
    nb = nbformat.read(str(src), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        "outputs must come from one top-to-bottom run in a fresh kernel"
    for c in code:
        for out in c.outputs:
            assert out.output_type != "error", f"stored error in:\n{c.source}"
            assert not (out.output_type == "stream" and out.name == "stderr"), f"stderr in:\n{c.source}"
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"0x[0-9a-f]{6,}", text), f"memory address in output:\n{text}"


@pytest.mark.parametrize("path", EXERCISES, ids=_ids(EXERCISES))
def test_exercise_notebook_as_handed_out_fails_only_with_not_implemented_error(path, kernel_env):
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append((out.ename, cell))
    others = [(e, c.source[:200]) for e, c in errors if e != "NotImplementedError"]
    assert not others, f"cells failing with something else than NotImplementedError: {others}"
    # every check cell fails: nothing is given away for free
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            assert any(o.output_type == "error" for o in cell.outputs), f"an unsolved check passed:\n{cell.source}"
