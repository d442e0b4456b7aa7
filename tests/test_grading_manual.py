"""nbgrader's manually graded cells (short written answers, tasks) are reported as "manual", never failed.

A small assignment is built here: one auto-graded exercise (``demo_column_means``), a written answer
(nbgrader ``grade`` + ``solution``, 2 points) and a task (``task``, 1 point). The grader scores the exercise,
lists the two others as "to grade by hand" with the student's text, and keeps them out of the totals;
the table, the CSV and Gradescope's results.json say the same.
"""
from __future__ import annotations

import csv

import nbformat
import pytest

from bncourse.grading.core import SubmissionResult, grade_submission, load_source
from bncourse.grading.report import format_table, gradescope_results, write_csv

pytestmark = pytest.mark.slow

ANSWER = "Axis 0 runs over the examples, so the mean over it is one number per feature."


def _cell(kind, source, **nbgrader):
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    cell.metadata["nbgrader"] = {"schema_version": 3, "grade": False, "solution": False, "locked": False, **nbgrader}
    return cell


def _assignment(answer: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[
        _cell("code", "import numpy as np\nfrom bncourse.checks import check", grade_id="setup", locked=True),
        _cell("code", "def column_means(X):\n    ### BEGIN SOLUTION\n    return X.mean(axis=0)\n    ### END SOLUTION",
              grade_id="means_answer", solution=True),
        _cell("code", 'check("demo_column_means", column_means)', grade_id="means_check", grade=True, locked=True,
              points=1),
        _cell("markdown", "Why is the mean taken over axis 0? (2 points, graded by hand)", grade_id="why_q",
              locked=True),
        _cell("markdown", answer, grade_id="why_axis0", grade=True, solution=True, points=2),
        _cell("markdown", "Plot the means and describe them (1 point, graded by hand).", grade_id="plot_task",
              task=True, points=1),
    ])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    d = tmp_path_factory.mktemp("manual")
    source = d / "09_demo_exercises.ipynb"
    nbformat.write(_assignment(ANSWER), str(source))
    blank = d / "blank" / "09_demo_exercises.ipynb"
    blank.parent.mkdir()
    nbformat.write(_assignment("YOUR ANSWER HERE"), str(blank))
    rows = {name: SubmissionResult.from_dict(grade_submission(str(p), [str(source)], seed=5, sandbox=False))
            for name, p in (("answered", source), ("blank", blank))}
    return source, rows, d


def test_manual_cells_are_read_from_the_source(graded):
    source, _, _ = graded
    src = load_source(source)
    assert [e.name for e in src.exercises] == ["demo_column_means"]
    assert [(m.grade_id, m.points, m.kind) for m in src.manual] == [("why_axis0", 2.0, "answer"),
                                                                    ("plot_task", 1.0, "task")]


def test_manual_cells_are_reported_as_manual_with_the_answer_and_kept_out_of_the_totals(graded):
    _, rows, _ = graded
    r = rows["answered"]
    assert r.status == "graded", r.reason
    by = {e.name: e for e in r.exercises}
    assert (by["demo_column_means"].status, by["demo_column_means"].points) == ("passed", 1.0)
    assert by["why_axis0"].status == "manual" and by["why_axis0"].max_points == 2.0
    assert by["why_axis0"].reason == f"to grade by hand; the answer: {ANSWER}"
    assert by["plot_task"].status == "manual" and "a task" in by["plot_task"].reason
    assert (r.total, r.max_total, r.manual_points) == (1.0, 1.0, 3.0)
    assert "no answer written" in {e.name: e for e in rows["blank"].exercises}["why_axis0"].reason


def test_table_csv_and_gradescope_say_manual(graded):
    _, rows, d = graded
    results = [rows["answered"], rows["blank"]]
    table = format_table(results)
    assert "hand/2" in table and "hand/1" in table and "1/1" in table
    write_csv(results, d / "grades.csv")
    row = next(csv.DictReader((d / "grades.csv").open()))
    assert (row["why_axis0"], row["plot_task"], row["total"], row["manual_points"]) == ("manual", "manual", "1", "3")
    gs = gradescope_results(rows["answered"])
    assert gs["score"] == 1.0
    manual = [t for t in gs["tests"] if "graded by hand" in t["name"]]
    assert [(t["name"], t["max_score"]) for t in manual] == [("why_axis0 (graded by hand, 2 points)", 0.0),
                                                             ("plot_task (graded by hand, 1 point)", 0.0)]
    assert ANSWER in manual[0]["output"]
