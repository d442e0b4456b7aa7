"""nbgrader's own generate_assignment and autograde accept the solutions notebook:
full points for the solution, zero for the unsolved exercise. A manually graded written answer added to
the source (what an instructor may add, see tests/test_grading_manual.py for bncourse grade) is left
for a human by nbgrader too."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "03_batchnorm_from_scratch_exercises.ipynb"
ASSIGNMENT = "ch3"
NOTEBOOK = SOLUTION.name

pytestmark = pytest.mark.slow


def _nbgrader(course: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "nbgrader"), *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_nbgrader_generate_and_autograde(tmp_path):
    pytest.importorskip("nbgrader")
    course = tmp_path / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    import nbformat

    from bncourse.grading.core import load_source

    auto = sum(e.points for e in load_source(SOLUTION).exercises)
    nb = nbformat.read(str(SOLUTION), as_version=4)
    written = nbformat.v4.new_markdown_cell("Batch norm uses the batch's statistics in training because ...")
    written.metadata["nbgrader"] = {"schema_version": 3, "grade": True, "solution": True, "locked": False,
                                    "points": 2, "grade_id": "written_answer"}
    nb.cells.append(written)
    nbformat.write(nb, str(course / "source" / ASSIGNMENT / NOTEBOOK))
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'bncourse'\n"
        f"c.CourseDirectory.db_assignments = [dict(name={ASSIGNMENT!r})]\n"
        "c.CourseDirectory.db_students = [dict(id='solved'), dict(id='unsolved')]\n"
        "c.ExecutePreprocessor.timeout = 300\n")
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")   # alembic
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONHASHSEED"] = "0"
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jupyter-config")   # no user config leaks in

    _nbgrader(course, env, "generate_assignment", ASSIGNMENT, "--force")
    released = course / "release" / ASSIGNMENT / NOTEBOOK
    assert "raise NotImplementedError()" in released.read_text()

    for student, nb in (("solved", course / "source" / ASSIGNMENT / NOTEBOOK), ("unsolved", released)):
        d = course / "submitted" / student / ASSIGNMENT
        d.mkdir(parents=True)
        shutil.copy(nb, d / NOTEBOOK)
    _nbgrader(course, env, "autograde", ASSIGNMENT, "--force")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        subs = {sid: gb.find_submission(ASSIGNMENT, sid) for sid in ("solved", "unsolved")}
        scores = {sid: (s.score, s.max_score) for sid, s in subs.items()}
        manual = {sid: s.needs_manual_grade for sid, s in subs.items()}
    assert scores["solved"] == (auto, auto + 2), scores          # the written answer waits for a human
    assert scores["unsolved"] == (0.0, auto + 2), scores
    assert manual == {"solved": True, "unsolved": False}          # an answer left as handed out gets 0 at once
