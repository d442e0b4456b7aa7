"""``bncourse gradescope``: the autograder zip round-trips in a fake ``/autograder`` tree, offline.

The zip is built with the real command, unpacked into ``tmp/autograder/source`` as Gradescope does, and its
own ``run_autograder`` script runs (with ``AUTOGRADER_ROOT`` pointing at the fake tree and this test's Python
instead of the venv ``setup.sh`` would build; ``PYTHONPATH`` is the zip's package, so the packaged copy is
what grades) on the solved and the handed-out notebook (generated from it here) in ``autograder/submission``. Gradescope's container
is the usual place for unsandboxed grading, so the zip is built with ``--sandbox never`` here (the ``auto``
mode is tested separately) and results.json must say so.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bncourse.cli import main

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_input_scaling"
SOLUTION = ROOT / "solutions" / f"{ASSIGNMENT}_exercises.ipynb"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("zip") / "autograder.zip"
    rc = main(["gradescope", ASSIGNMENT, "--solutions", str(ROOT / "solutions"), "--out", str(out),
               "--sandbox", "never", "--cell-timeout", "60"])
    assert rc == 0
    return out


def _unpack(zip_path: Path, tmp: Path) -> Path:
    root = tmp / "autograder"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
        for info in zf.infolist():                    # extractall drops the permission bits
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(root / "source" / info.filename, mode)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return root


def _run_autograder(root: Path, notebook: Path | None, name: str = "homework.ipynb") -> dict:
    if notebook is not None:
        shutil.copy(notebook, root / "submission" / name)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "AUTOGRADER_ROOT": str(root),
           "BNCOURSE_PYTHON": sys.executable, "PYTHONPATH": str(root / "source" / "package"),
           "PYTHONHASHSEED": "0"}
    proc = subprocess.run([str(root / "source" / "run_autograder")], env=env, cwd=str(root), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "results" / "results.json").is_file()
    return json.loads((root / "results" / "results.json").read_text())


def test_zip_holds_what_gradescope_needs(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as zf:
        names = set(zf.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        config = json.loads(zf.read("config.json"))
        setup = zf.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "requirements.lock", "config.json",
            f"solutions/{SOLUTION.name}", "package/pyproject.toml", "package/bncourse/__init__.py",
            "package/bncourse/grading/gradescope.py", "package/bncourse/checks/core.py"} <= names
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert not any("__pycache__" in n or n.startswith("solutions/0") and ASSIGNMENT not in n for n in names)
    assert not any(n.startswith(("exercises/", "notebooks/", "tests/")) for n in names)
    assert config["assignment"] == ASSIGNMENT and config["sandbox"] == "never" and config["points"] > 0
    assert "requirements.lock" in setup and "./package" in setup


def test_solution_gets_full_points_and_exercise_zero_in_results_json(autograder_zip, tmp_path):
    from bncourse.grading.core import load_source

    points = {e.name: e.points for e in load_source(SOLUTION).exercises}
    solved = _run_autograder(_unpack(autograder_zip, tmp_path / "a"), SOLUTION)
    assert solved["score"] == sum(points.values())
    assert {t["name"]: t["score"] for t in solved["tests"]} == points
    assert all(t["status"] == "passed" and t["max_score"] == points[t["name"]] for t in solved["tests"])
    assert "WITHOUT a sandbox" in solved["output"]
    assert set(solved) >= {"score", "execution_time", "output", "tests", "visibility", "stdout_visibility"}

    from bncourse.exercises import exercise_text

    handed_out = tmp_path / "handed_out.ipynb"          # generated here, as make-exercises does
    handed_out.write_text(exercise_text(SOLUTION))
    unsolved = _run_autograder(_unpack(autograder_zip, tmp_path / "b"), handed_out)
    assert unsolved["score"] == 0
    assert {t["name"]: t["score"] for t in unsolved["tests"]} == dict.fromkeys(points, 0.0)
    assert all("NotImplementedError" in t["output"] for t in unsolved["tests"])


def test_the_packaged_copy_grades_and_an_empty_submission_gets_a_reason(autograder_zip, tmp_path):
    root = _unpack(autograder_zip, tmp_path)
    res = _run_autograder(root, None)
    assert res["score"] == 0 and "no Jupyter notebook" in res["output"]
    env = {"PYTHONPATH": str(root / "source" / "package"), "PATH": os.environ.get("PATH", "")}
    where = subprocess.run([sys.executable, "-c", "import bncourse.grading.gradescope as g; print(g.__file__)"],
                           env=env, cwd=str(root), capture_output=True, text=True, timeout=120).stdout.strip()
    assert Path(where).is_relative_to(root / "source" / "package"), where


def test_auto_mode_follows_the_sandbox_and_always_refuses_without_it(tmp_path, monkeypatch):
    from bncourse.grading import gradescope, sandbox

    out = tmp_path / "z.zip"
    gradescope.build_autograder(ROOT / "solutions", out, assignment=ASSIGNMENT, sandbox="always")
    root = _unpack(out, tmp_path)
    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: "no user namespaces here")
    shutil.copy(SOLUTION, root / "submission" / "x.ipynb")
    res = gradescope.run_autograder(root / "source" / "config.json", root / "source" / "solutions",
                                    root / "submission", root / "results" / "results.json")
    assert res["score"] == 0 and "no user namespaces here" in res["output"] and "--sandbox always" in res["output"]
    assert json.loads((root / "results" / "results.json").read_text()) == res


def test_command_line_errors(tmp_path, capsys):
    assert main(["gradescope", "no_such_assignment", "--solutions", str(ROOT / "solutions"),
                 "--out", str(tmp_path / "z.zip")]) == 2
    assert "no solutions notebook for assignment 'no_such_assignment'" in capsys.readouterr().err
    assert not (tmp_path / "z.zip").exists()
