"""Grading outputs: a terminal table, a CSV (one row per student) and Gradescope ``results.json``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .core import UNSANDBOXED_NOTE, SubmissionResult

__all__ = ["sandboxed", "exercise_columns", "format_table", "write_csv", "gradescope_results", "write_gradescope"]


def exercise_columns(results: list[SubmissionResult]) -> list[str]:
    cols: list[str] = []
    for r in results:
        for e in r.exercises:
            if e.name not in cols:
                cols.append(e.name)
    return cols


def sandboxed(r: SubmissionResult) -> bool:
    return UNSANDBOXED_NOTE not in r.notes


def _fmt(x: float) -> str:
    return f"{x:g}"


def format_table(results: list[SubmissionResult]) -> str:
    cols = exercise_columns(results)
    header = ["student", *cols, "total", "note"]
    rows = []
    for r in results:
        by = {e.name: e for e in r.exercises}
        cells = [r.student]
        for c in cols:
            e = by.get(c)
            if e is None:
                cells.append("-")
            elif e.status == "manual":
                cells.append(f"hand/{_fmt(e.max_points)}")
            else:
                cells.append(f"{_fmt(e.points)}/{_fmt(e.max_points)}")
        cells.append(f"{_fmt(r.total)}/{_fmt(r.max_total)}" if r.status == "graded" else "0")
        note = r.reason or next((f"{e.name}: {e.reason}" for e in r.exercises if e.reason and e.status != "manual"),
                                "")
        if not sandboxed(r):
            note = "UNSANDBOXED" + (f"; {note}" if note else "")
        cells.append(note.splitlines()[0][:90] if note else "")
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    widths[-1] = min(widths[-1], 90)
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def write_csv(results: list[SubmissionResult], path: str | Path) -> None:
    cols = exercise_columns(results)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook", "assignment", *cols, "total", "max_total", "manual_points", "status",
                    "reason", "seed", "sandboxed"])
        for r in results:
            by = {e.name: e for e in r.exercises}
            cells = ["" if c not in by else "manual" if by[c].status == "manual" else _fmt(by[c].points) for c in cols]
            w.writerow([r.student, r.path, r.assignment, *cells, _fmt(r.total), _fmt(r.max_total),
                        _fmt(r.manual_points), r.status, r.reason, r.seed, "yes" if sandboxed(r) else "no"])


def gradescope_results(r: SubmissionResult) -> dict:
    """One submission in Gradescope's ``results.json`` shape.

    A manually graded cell becomes a test worth 0 with the student's answer in its output (grade it with a
    manually graded question of the Gradescope assignment); the score is the auto-graded total."""
    tests = []
    for e in r.exercises:
        if e.status == "manual":
            unit = "point" if e.max_points == 1 else "points"
            tests.append({"name": f"{e.name} (graded by hand, {_fmt(e.max_points)} {unit})", "score": 0.0,
                          "max_score": 0.0, "output": e.reason, "visibility": "visible"})
        else:
            tests.append({"name": e.name, "score": e.points, "max_score": e.max_points, "status": e.status,
                          "output": e.reason or "passed", "visibility": "visible"})
    output = r.reason or ("; ".join(r.notes[:5]) if r.notes else "graded")
    if not sandboxed(r) and UNSANDBOXED_NOTE not in output:
        output = f"{UNSANDBOXED_NOTE}; {output}"
    if r.status != "graded":
        tests.append({"name": "notebook", "score": 0.0, "max_score": 0.0, "status": "failed",
                      "output": r.reason, "visibility": "visible"})
    return {"score": r.total, "execution_time": round(r.seconds), "output": output,
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def write_gradescope(results: list[SubmissionResult], out_dir: str | Path, single: bool) -> list[Path]:
    """``OUT/results.json`` for one submission; ``OUT/gradescope/<student>/results.json`` for several."""
    out_dir = Path(out_dir)
    written = []
    for r in results:
        target = out_dir / "results.json" if single else out_dir / "gradescope" / r.student / "results.json"
        if not single and len([x for x in results if x.student == r.student]) > 1:
            target = out_dir / "gradescope" / r.student / f"{Path(r.path).stem}.results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(gradescope_results(r), indent=1) + "\n")
        written.append(target)
    return written
