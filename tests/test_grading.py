"""``bncourse grade`` on honest, broken and hostile submissions, built here from the solutions notebook.

One grading run (the real command line, two parallel jobs) grades every submission of the class
below; each test then reads its row. Every broken or hostile submission gets a row with a clear
reason and the run finishes.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
from pathlib import Path

import nbformat
import pytest

from bncourse.grading.core import load_source, read_notebook, SubmissionError

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "03_batchnorm_from_scratch_exercises.ipynb"
EXERCISE = ROOT / "exercises" / "03_batchnorm_from_scratch_exercises.ipynb"
FULL = {e.name: e.points for e in load_source(SOLUTION).exercises}     # the solution's points, per exercise
assert {"bn_forward", "bn_backward_staged", "bn_backward", "bn_module"} <= set(FULL)

pytestmark = pytest.mark.slow


def _nb(path=SOLUTION):
    return nbformat.read(str(path), as_version=4)


def _answer(nb, gid, source):
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == gid:
            c.source = source
            return nb
    raise KeyError(gid)


def _insert(nb, index, source):
    nb.cells.insert(index, nbformat.v4.new_code_cell(source))
    return nb


def _class() -> dict:
    """student name -> notebook (or raw text)."""
    subs: dict = {}
    subs["honest"] = _nb()
    subs["unsolved"] = _nb(EXERCISE)
    subs["fake_check"] = _insert(_nb(EXERCISE), 2, (
        "def check(*args, **kwargs):\n    print('✓ all cases passed')\n"
        "np.allclose = lambda *a, **k: True\nnp.testing.assert_allclose = lambda *a, **k: None\n"
        "np.array_equal = lambda *a, **k: True"))
    subs["malformed"] = '{"cells": [ {"cell_type": "code", "source": "x = 1"'
    subs["not_a_notebook"] = "[1, 2, 3]"
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('my chapter 4 homework')")])
    other.cells[0].metadata["nbgrader"] = {"schema_version": 3, "grade": False, "solution": True, "locked": False,
                                           "grade_id": "ch4_running_stats_answer"}
    subs["wrong_assignment"] = other

    nb = _nb()
    _answer(nb, "ch3_bn_forward_answer", "def bn_forward(x, gamma, beta, eps=1e-5):\n    return x, {}")
    _answer(nb, "ch3_bn_backward_staged_answer",
            "def batchnorm_backward_staged(dout, x, gamma, eps=1e-5):\n    return 1 / 0")
    _answer(nb, "ch3_bn_backward_answer",
            "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n    shape = (8, 5)\n"
            "def batchnorm_backward(dout, x, gamma, eps=1e-5):\n"
            "    return AlwaysEqual(), AlwaysEqual(), AlwaysEqual()")
    _answer(nb, "ch3_bn_module_answer", "class BatchNorm1d(nn.BatchNorm1d):\n    pass")
    subs["mixed_bad"] = nb

    nb = _nb()
    _insert(nb, 2, "import sys\nsys.exit()")
    _insert(nb, 3, "print('spam ' * 10_000_000)")
    _insert(nb, 4, "while True:\n    pass")
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == "ch3_bn_forward_check":
            c.source = "pass  # the check is in the way"
    subs["noisy_but_right"] = nb

    subs["os_exit"] = _insert(_nb(), 2, "import os\nos._exit(3)")
    subs["stubborn_loop"] = _insert(_nb(), 2, (
        "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except BaseException:\n        pass"))

    nb = _nb()
    _answer(nb, "ch3_bn_forward_answer",
            "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n    while True:\n        pass")
    _answer(nb, "ch3_bn_backward_staged_answer",
            "import os, signal\ndef batchnorm_backward_staged(dout, x, gamma, eps=1e-5):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)")
    subs["loop_and_kill"] = nb

    nb = _nb()
    _answer(nb, "ch3_bn_forward_answer", (
        "from bncourse.bn_numpy import batchnorm_forward as _reference\n"
        "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n    return _reference(x, gamma, beta, eps)"))
    _answer(nb, "ch3_bn_backward_staged_answer", (
        "import types\nimport bncourse.bn_numpy as _bn\n"
        "_copy = types.FunctionType(_bn.batchnorm_backward.__code__, _bn.__dict__)\n"
        "_fwd = types.FunctionType(_bn.batchnorm_forward.__code__, _bn.__dict__)\n"
        "def batchnorm_backward_staged(dout, x, gamma, eps=1e-5):\n"
        "    _, cache = _fwd(x, gamma, 0 * gamma, eps)\n    return _copy(dout, cache)"))
    subs["uses_reference"] = nb

    nb = _nb()     # saved by an editor that drops cell metadata, under another name (see the fixture)
    for c in nb.cells:
        c.metadata.pop("nbgrader", None)
    subs["stripped"] = nb
    return subs


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from bncourse.cli import main

    sub_dir = tmp_path_factory.mktemp("submissions")
    for name, nb in _class().items():
        d = sub_dir / name
        d.mkdir()
        target = d / ("homework.ipynb" if name == "stripped" else "03_batchnorm_from_scratch_exercises.ipynb")
        if isinstance(nb, str):
            target.write_text(nb)
        else:
            nbformat.write(nb, str(target))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sub_dir.rglob("*") if p.is_file()}
    out = tmp_path_factory.mktemp("out")
    from bncourse.grading.sandbox import unavailable_reason

    no_sandbox = ["--no-sandbox"] if unavailable_reason() else []    # these cases hold with and without it
    rc = main(["grade", str(sub_dir), "--solutions", str(ROOT / "solutions"), "--out", str(out), "--jobs", "2",
               "--cell-timeout", "15", "--exercise-timeout", "10", "--total-timeout", "240", "--no-progress",
               "--seed", "2024", *no_sandbox])
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sub_dir.rglob("*") if p.is_file()}
    rows = {r["student"]: r for r in json.loads((out / "details.json").read_text())}
    return {"rc": rc, "rows": rows, "out": out, "unchanged": before == after}


def _scores(row):
    return {e["name"]: e["points"] for e in row["exercises"]}


def _reason(row, name):
    return next(e["reason"] for e in row["exercises"] if e["name"] == name)


def test_run_finishes_with_exit_code_0_and_leaves_submissions_untouched(graded):
    assert graded["rc"] == 0
    assert graded["unchanged"]
    assert all(r["status"] != "grader_error" for r in graded["rows"].values()), graded["rows"]


def test_honest_solution_gets_full_points(graded):
    assert _scores(graded["rows"]["honest"]) == FULL


def test_unsolved_exercise_gets_zero(graded):
    row = graded["rows"]["unsolved"]
    assert _scores(row) == dict.fromkeys(FULL, 0.0)
    assert "NotImplementedError" in _reason(row, "bn_forward")


def test_redefining_check_and_patching_numpy_earn_nothing(graded):
    row = graded["rows"]["fake_check"]
    assert _scores(row) == dict.fromkeys(FULL, 0.0)
    assert "NotImplementedError" in _reason(row, "bn_module")


@pytest.mark.parametrize("student, words", [
    ("malformed", "malformed notebook: not valid JSON"),
    ("not_a_notebook", "not a Jupyter notebook"),
    ("wrong_assignment", "wrong assignment"),
])
def test_unreadable_or_foreign_notebooks_get_a_row_with_the_reason(graded, student, words):
    row = graded["rows"][student]
    assert row["status"] == "rejected" and words in row["reason"]


def test_missing_function_exception_always_equal_and_torch_subclass(graded):
    row = graded["rows"]["mixed_bad"]
    assert _scores(row) == {**FULL, **dict.fromkeys(("bn_forward", "bn_backward_staged", "bn_backward", "bn_module"), 0.0)}
    assert "batchnorm_forward is not defined" in _reason(row, "bn_forward")
    assert "ZeroDivisionError" in _reason(row, "bn_backward_staged")
    assert "expected a numpy.ndarray" in _reason(row, "bn_backward")
    assert "calls torch.nn.modules.batchnorm._NormBase, the reference implementation" in _reason(row, "bn_module")


def test_sys_exit_enormous_output_interruptible_loop_and_edited_test_cell(graded):
    row = graded["rows"]["noisy_but_right"]
    assert _scores(row) == FULL
    notes = " ".join(row["notes"])
    assert "SystemExit" in notes
    assert "stopped by the time limit" in notes
    assert "locked cell ch3_bn_forward_check was edited" in notes


def test_a_cell_that_kills_the_kernel_is_skipped(graded):
    row = graded["rows"]["os_exit"]
    assert _scores(row) == FULL
    assert any("killed the kernel" in n for n in row["notes"])


def test_an_uninterruptible_loop_is_skipped(graded):
    row = graded["rows"]["stubborn_loop"]
    assert _scores(row) == FULL
    assert any("stopped by the time limit" in n for n in row["notes"])


def test_infinite_loop_and_self_kill_inside_exercises(graded):
    row = graded["rows"]["loop_and_kill"]
    assert _scores(row) == {**FULL, "bn_forward": 0.0, "bn_backward_staged": 0.0}
    assert "time limit" in _reason(row, "bn_forward")
    assert "kernel died" in _reason(row, "bn_backward_staged")


def test_calling_the_reference_implementation_earns_nothing(graded):
    row = graded["rows"]["uses_reference"]
    assert _scores(row) == {**FULL, "bn_forward": 0.0, "bn_backward_staged": 0.0}
    assert "calls bncourse.bn_numpy.batchnorm_forward, the reference implementation" in _reason(row, "bn_forward")
    assert "calls bncourse.bn_numpy." in _reason(row, "bn_backward_staged")


def test_notebook_without_nbgrader_metadata_is_matched_by_its_content_and_graded(graded):
    row = graded["rows"]["stripped"]
    assert row["assignment"] == "03_batchnorm_from_scratch" and _scores(row) == FULL
    assert any("no nbgrader metadata" in n for n in row["notes"])


def test_csv_has_one_row_per_student_and_a_column_per_exercise(graded):
    with open(graded["out"] / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(graded["rows"])
    assert {"student", *FULL, "total", "max_total", "status", "reason"} <= set(rows[0])
    honest = next(r for r in rows if r["student"] == "honest")
    assert honest["total"] == honest["max_total"] == f"{sum(FULL.values()):g}"


def test_gradescope_results_json_shape(graded):
    res = json.loads((graded["out"] / "gradescope" / "honest" / "results.json").read_text())
    assert res["score"] == sum(FULL.values()) and {"execution_time", "output", "visibility", "stdout_visibility", "tests"} <= set(res)
    for t in res["tests"]:
        assert set(t) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert t["status"] in ("passed", "failed") and t["visibility"] == "visible"


# ----------------------------------------------------------------------------------------------
# Fast unit tests (no kernel)
# ----------------------------------------------------------------------------------------------
def test_read_notebook_reasons(tmp_path):
    cases = {"a.ipynb": ("", "not valid JSON"), "b.ipynb": ('{"cells": 3}', "not a Jupyter notebook"),
             "c.ipynb": ('{"cells": [], "nbformat": 3}', "unsupported notebook format"),
             "d.ipynb": ('{"cells": [{"cell_type": "code", "source": 5}], "nbformat": 4}', "no text source")}
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SubmissionError, match=words):
            read_notebook(tmp_path / name)
    (tmp_path / "e.ipynb").write_bytes(b"\xff\xfe")
    with pytest.raises(SubmissionError, match="not UTF-8"):
        read_notebook(tmp_path / "e.ipynb")


def test_cli_exit_code_2_without_submissions(tmp_path, capsys):
    from bncourse.cli import main

    assert main(["grade", str(tmp_path), "--solutions", str(ROOT / "solutions"), "--no-progress"]) == 2
    assert main(["grade", str(tmp_path / "nope.ipynb"), "--solutions", str(ROOT / "solutions")]) == 2


def _plain(nb) -> dict:
    return {"cells": [{"cell_type": c.cell_type, "source": c.source, "nbgrader": c.metadata.get("nbgrader", {})}
                      for c in nb.cells]}


def test_match_source_by_content_by_name_and_by_assignment():
    from bncourse.grading.core import find_sources, match_source

    sources = find_sources(ROOT / "solutions")
    stripped = _nb()
    for c in stripped.cells:
        c.metadata.pop("nbgrader", None)
    nb = _plain(stripped)
    assert match_source(nb, Path("homework.ipynb"), sources).assignment == "03_batchnorm_from_scratch"
    with pytest.raises(SubmissionError, match="this is the notebook of 03_batchnorm_from_scratch, not of 04_"):
        match_source(_plain(_nb()), Path("x.ipynb"), sources, assignment="04_inference_and_running_stats")
    empty = {"cells": [{"cell_type": "code", "source": "print(1)", "nbgrader": {}}]}
    with pytest.raises(SubmissionError, match="no nbgrader metadata and none of the check"):
        match_source(empty, Path("homework.ipynb"), sources)
    assert match_source(empty, Path("03_batchnorm_from_scratch_exercises (1).ipynb"),
                        sources).assignment == "03_batchnorm_from_scratch"


def test_no_sandbox_grades_and_every_row_says_so(tmp_path, capsys):
    """``--no-sandbox`` (e.g. inside Gradescope's container): the kernel runs as a plain subprocess,
    and the table, the CSV and Gradescope's output all say the grading was unsandboxed."""
    from bncourse.cli import main
    from bncourse.grading.core import UNSANDBOXED_NOTE

    sub = tmp_path / "03_batchnorm_from_scratch_exercises.ipynb"
    sub.write_bytes(EXERCISE.read_bytes())
    out = tmp_path / "out"
    assert main(["grade", str(sub), "--solutions", str(ROOT / "solutions"), "--out", str(out), "--no-progress",
                 "--no-sandbox", "--seed", "1", "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert "UNSANDBOXED" in captured.out and "without a sandbox" in captured.err
    with open(out / "grades.csv") as f:
        row = next(csv.DictReader(f))
    assert row["sandboxed"] == "no" and row["total"] == "0"
    results = json.loads((out / "results.json").read_text())
    assert UNSANDBOXED_NOTE in results["output"]
    assert "NotImplementedError" in results["tests"][0]["output"]
