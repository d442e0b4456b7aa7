"""Gradescope in one command: ``bncourse gradescope ASSIGNMENT`` builds the autograder zip.

Gradescope's "autograder" contract (its documentation, "Autograder Specifications"): the zip holds
``setup.sh`` (run once, as root, when the image is built; it installs what the grader needs) and
``run_autograder`` (run for every submission, with the student's files in ``/autograder/submission``;
it must write ``/autograder/results/results.json``). The zip built here holds::

    setup.sh                   installs Python, the pinned requirements (requirements.lock) and the package
    run_autograder             runs ``python -m bncourse.grading.gradescope run`` on /autograder/submission
    requirements.lock          the exact versions the course is tested with
    package/                   the bncourse package, with a minimal pyproject.toml
    solutions/NAME.ipynb       the solutions notebook of the assignment (the grader's source of truth)
    config.json                assignment, sandbox mode, time limits

``run`` grades the notebook(s) in the submission folder with :func:`core.grade_submission` (a fresh seed
per submission) and writes ``results.json`` in Gradescope's format (:func:`report.gradescope_results`).

The sandbox inside Gradescope
-----------------------------
Gradescope runs ``run_autograder`` as root inside its own throwaway container, where bubblewrap usually
cannot create namespaces. So the default sandbox mode of the zip is ``auto``: the bubblewrap sandbox when it
works there, else grading without it (``--no-sandbox``), which every results.json then says in its output.
Without the sandbox the student's kernel runs with the grader's rights inside that container: it could read
the solutions notebook copied into it and write results.json itself. The container is discarded after each
submission, so no classmate is affected, but for graded work that matters build with ``--sandbox always``
(the autograder then refuses to grade where no sandbox can be made) and check on a test submission that it
works on your Gradescope image, or grade locally with ``bncourse grade`` (sandboxed) and upload the scores.
"""
from __future__ import annotations

import argparse
import json
import secrets
import stat
import sys
import time
import zipfile
from pathlib import Path

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip bubblewrap
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bncourse needs Python 3.11 or newer (requirements.lock); choose the Ubuntu 24.04 base image" >&2
    exit 1
fi
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
# torch's CPU wheels (the lock pins torch; the default index would pull several GB of CUDA packages)
/autograder/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock
/autograder/venv/bin/pip install --no-deps ./package
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission; it writes /autograder/results/results.json.
# AUTOGRADER_ROOT and BNCOURSE_PYTHON exist for testing this script outside Gradescope.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${BNCOURSE_PYTHON:-$ROOT/venv/bin/python}"
mkdir -p "$ROOT/results"
cd "$ROOT/source"
exec "$PYTHON" -m bncourse.grading.gradescope run \
    --config "$ROOT/source/config.json" \
    --solutions "$ROOT/source/solutions" \
    --submission "$ROOT/submission" \
    --results "$ROOT/results/results.json"
"""

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "bncourse"
version = "{version}"
requires-python = ">=3.10"

[tool.setuptools.packages.find]
include = ["bncourse*"]
"""

SANDBOX_MODES = ("auto", "always", "never")


def _package_files(pkg: Path) -> list[Path]:
    return sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".pyo"))


def build_autograder(solutions: str | Path, out: str | Path, *, assignment: str | None = None,
                     requirements: str | Path | None = None, sandbox: str = "auto",
                     cell_timeout: float = 30.0, total_timeout: float = 300.0,
                     exercise_timeout: float = 10.0) -> dict:
    """Write the Gradescope autograder zip ``out`` for one assignment; returns what went in.

    Args:
        solutions: a solutions notebook, or the folder of them (then ``assignment`` picks one).
        out: the zip to write.
        assignment: e.g. ``"03_batchnorm_from_scratch"`` (a solutions notebook's name without
            ``_exercises.ipynb``); required when ``solutions`` is a folder with several.
        requirements: the pinned requirements (default: ``requirements.lock`` next to the package).
        sandbox: ``auto`` (bubblewrap where it works, else unsandboxed, said in every result),
            ``always`` (refuse without it) or ``never``.
    """
    from bncourse import __version__ as version

    from .core import find_sources
    from .sandbox import package_dir

    if sandbox not in SANDBOX_MODES:
        raise ValueError(f"sandbox must be one of {SANDBOX_MODES}, not {sandbox!r}")
    found = find_sources(solutions)
    if assignment is not None:
        chosen = [s for s in found if s.assignment == assignment]
        if not chosen:
            raise ValueError(f"no solutions notebook for assignment {assignment!r} in {solutions} "
                             f"(there are: {', '.join(s.assignment for s in found)})")
    elif len(found) == 1:
        chosen = found
    else:
        raise ValueError(f"{solutions} holds {len(found)} assignments; name one of: "
                         f"{', '.join(s.assignment for s in found)}")
    source = chosen[0]
    if not source.exercises:
        raise ValueError(f"{source.path} has no graded check(...) cells")
    pkg = package_dir()
    req = Path(requirements) if requirements else pkg.parent / "requirements.lock"
    if not req.is_file():
        raise FileNotFoundError(f"no pinned requirements at {req} (pass requirements=...)")
    config = {"assignment": source.assignment, "sandbox": sandbox, "cell_timeout": cell_timeout,
              "total_timeout": total_timeout, "exercise_timeout": exercise_timeout,
              "points": sum(e.points for e in source.exercises)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = []

    def add(zf: zipfile.ZipFile, arcname: str, data: bytes | str, executable: bool = False) -> None:
        info = zipfile.ZipInfo(arcname, date_time=(2024, 1, 1, 0, 0, 0))    # reproducible zips
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
        zf.writestr(info, data)
        names.append(arcname)

    with zipfile.ZipFile(out, "w") as zf:
        add(zf, "setup.sh", SETUP_SH, executable=True)
        add(zf, "run_autograder", RUN_AUTOGRADER, executable=True)
        add(zf, "requirements.lock", req.read_bytes())
        add(zf, "config.json", json.dumps(config, indent=1) + "\n")
        add(zf, f"solutions/{Path(source.path).name}", Path(source.path).read_bytes())
        add(zf, "package/pyproject.toml", PYPROJECT.format(version=version))
        for p in _package_files(pkg):
            add(zf, f"package/bncourse/{p.relative_to(pkg).as_posix()}", p.read_bytes())
    return {"zip": str(out), "assignment": source.assignment, "points": config["points"],
            "exercises": [e.name for e in source.exercises], "files": names}


# --------------------------------------------------------------------------------------------
# Inside Gradescope: grade /autograder/submission, write results.json
# --------------------------------------------------------------------------------------------
def _notebooks(submission: Path) -> list[Path]:
    return sorted(p for p in submission.rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("._"))


def _failure(message: str, seconds: float) -> dict:
    return {"score": 0.0, "execution_time": round(seconds), "output": message, "visibility": "visible",
            "stdout_visibility": "hidden", "tests": []}


def run_autograder(config_path: str | Path, solutions: str | Path, submission: str | Path,
                   results: str | Path, *, seed: int | None = None) -> dict:
    """Grade the submission folder against the assignment of ``config_path``; write and return results.json.

    Several notebooks in the submission: each is graded and the best graded one counts (the output
    names the others). Never raises for a bad submission: results.json then says why, with score 0."""
    from .core import SubmissionResult, find_sources, grade_submission
    from .report import gradescope_results
    from .sandbox import Limits, unavailable_reason

    t0 = time.monotonic()
    cfg = json.loads(Path(config_path).read_text())
    out_path = Path(results)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write(res: dict) -> dict:
        out_path.write_text(json.dumps(res, indent=1) + "\n")
        return res

    mode = cfg.get("sandbox", "auto")
    why = unavailable_reason() if mode != "never" else "the autograder was built with --sandbox never"
    if why is not None and mode == "always":
        return write(_failure(f"the grader could not create its sandbox here ({why}); this autograder was built "
                              f"with --sandbox always, so nothing was graded. Tell your instructor.",
                              time.monotonic() - t0))
    sandbox = why is None
    sources = [s.path for s in find_sources(solutions) if s.assignment == cfg["assignment"]]
    paths = _notebooks(Path(submission))
    if not paths:
        return write(_failure(f"no Jupyter notebook (.ipynb) in your submission; upload the notebook of "
                              f"{cfg['assignment']}", time.monotonic() - t0))
    rows = []
    for p in paths:
        d = grade_submission(str(p), sources, seed=seed if seed is not None else secrets.randbelow(2**31),
                             cell_timeout=cfg.get("cell_timeout", 30.0),
                             total_timeout=cfg.get("total_timeout", 300.0),
                             exercise_timeout=cfg.get("exercise_timeout", 10.0),
                             root=str(submission), sandbox=sandbox, limits=Limits() if sandbox else None,
                             assignment=cfg["assignment"])
        rows.append(SubmissionResult.from_dict(d))
    best = max(rows, key=lambda r: (r.status == "graded", r.total))
    res = gradescope_results(best)
    if len(rows) > 1:
        others = ", ".join(f"{Path(r.path).name} ({r.total:g})" for r in rows if r is not best)
        res["output"] = f"graded {Path(best.path).name}; also found: {others}. " + res["output"]
    res["execution_time"] = round(time.monotonic() - t0)
    return write(res)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bncourse.grading.gradescope")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="grade a Gradescope submission folder (what run_autograder calls)")
    r.add_argument("--config", required=True)
    r.add_argument("--solutions", required=True)
    r.add_argument("--submission", required=True)
    r.add_argument("--results", required=True)
    r.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        run_autograder(args.config, args.solutions, args.submission, args.results, seed=args.seed)
    except Exception as e:       # the grader's own failure: still a results.json that says so
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(_failure(
            f"internal grader error: {type(e).__name__}: {e}; tell your instructor", 0.0)) + "\n")
        print(f"internal grader error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# The command: bncourse gradescope ASSIGNMENT
# --------------------------------------------------------------------------------------------
def add_gradescope_parser(sub) -> None:
    p = sub.add_parser(
        "gradescope", help="build a Gradescope autograder zip for one assignment",
        description="Build the autograder zip Gradescope expects (setup.sh, run_autograder, the pinned "
                    "requirements, the package, the solutions notebook). Upload it as the assignment's "
                    "autograder (Ubuntu 24.04 base image: Python 3.11+). Inside Gradescope's container bubblewrap "
                    "usually cannot run, so by default (--sandbox auto) it grades without the sandbox there, "
                    "as with `bncourse grade --no-sandbox`, and every result says so.")
    p.add_argument("assignment", help="e.g. 03_batchnorm_from_scratch (a solutions notebook's name without "
                                      "_exercises.ipynb), or a solutions notebook")
    p.add_argument("--solutions", default="solutions", help="solutions folder (default: solutions)")
    p.add_argument("--out", default=None, help="the zip to write (default: ASSIGNMENT-autograder.zip)")
    p.add_argument("--requirements", default=None, help="pinned requirements (default: requirements.lock)")
    p.add_argument("--sandbox", choices=SANDBOX_MODES, default="auto",
                   help="auto: bubblewrap where the container allows it, else unsandboxed and said so (default); "
                        "always: refuse to grade without it; never: always unsandboxed")
    p.add_argument("--cell-timeout", type=float, default=30.0)
    p.add_argument("--total-timeout", type=float, default=300.0)
    p.add_argument("--exercise-timeout", type=float, default=10.0)
    p.set_defaults(func=run_gradescope_command)


def run_gradescope_command(args: argparse.Namespace) -> int:
    solutions, assignment = args.solutions, args.assignment
    if assignment.endswith(".ipynb"):
        solutions, assignment = assignment, Path(assignment).stem.removesuffix("_exercises")
    out = args.out or f"{assignment}-autograder.zip"
    try:
        info = build_autograder(solutions, out, assignment=assignment, requirements=args.requirements,
                                sandbox=args.sandbox, cell_timeout=args.cell_timeout,
                                total_timeout=args.total_timeout, exercise_timeout=args.exercise_timeout)
    except (ValueError, FileNotFoundError) as e:
        print(f"bncourse gradescope: {e}", file=sys.stderr)
        return 2
    print(f"wrote {info['zip']}: {info['assignment']}, {len(info['exercises'])} exercises, {info['points']:g} points, "
          f"sandbox {args.sandbox}. Upload it as the assignment's autograder (Gradescope: Configure Autograder, "
          f"Ubuntu 24.04 base image).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
