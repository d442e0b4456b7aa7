"""Generate the student notebooks in ``exercises/`` from the solutions in ``solutions/``.

``solutions/*_exercises.ipynb`` is the only source. For each one, the exercise notebook of the
same name is produced by:

* replacing every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region of a code cell with
  ``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at the marker's indentation (in a
  markdown cell with ``YOUR ANSWER HERE``), as nbgrader's ``ClearSolutions`` does;
* removing every ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` region;
* clearing outputs and execution counts; all metadata (nbgrader's included) is kept.

Output is written deterministically (nbformat's sorted, indented JSON), so ``exercises/`` can be
compared byte for byte with a fresh generation: ``bncourse make-exercises [SOLUTIONS] [EXERCISES]``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

__all__ = ["SolutionMarkerError", "strip_solutions", "exercise_notebook", "exercise_text",
           "make_exercises", "stale_exercises"]

PATTERN = "*_exercises.ipynb"
_BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
_END = re.compile(r"^\s*### END SOLUTION\s*$")
_BEGIN_HIDDEN = re.compile(r"^\s*### BEGIN HIDDEN TESTS\s*$")
_END_HIDDEN = re.compile(r"^\s*### END HIDDEN TESTS\s*$")


class SolutionMarkerError(ValueError):
    """A BEGIN marker without its END (or the other way round)."""


def _replace_regions(source: str, begin, end, replacement, what: str) -> str:
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        if not inside:
            m = begin.match(line)
            if m:
                inside = True
                out.extend(replacement(m.group(1) if m.groups() else ""))
            elif end.match(line):
                raise SolutionMarkerError(f"'### END {what}' without a matching BEGIN")
            else:
                out.append(line)
        elif end.match(line):
            inside = False
        elif begin.match(line):
            raise SolutionMarkerError(f"nested '### BEGIN {what}'")
    if inside:
        raise SolutionMarkerError(f"'### BEGIN {what}' without a matching END")
    return "\n".join(out)


def strip_solutions(source: str, cell_type: str = "code") -> str:
    """The student version of one cell's source."""
    if cell_type == "code":
        def stub(indent: str) -> list[str]:
            return [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
    else:
        def stub(indent: str) -> list[str]:
            return [f"{indent}YOUR ANSWER HERE"]
    source = _replace_regions(source, _BEGIN, _END, stub, "SOLUTION")
    return _replace_regions(source, _BEGIN_HIDDEN, _END_HIDDEN, lambda indent: [], "HIDDEN TESTS")


def exercise_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A stripped copy of a solutions notebook (the input is not modified)."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        try:
            cell.source = strip_solutions(cell.source, cell.cell_type)
        except SolutionMarkerError as e:
            raise SolutionMarkerError(f"cell {i}: {e}") from None
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def exercise_text(solution_path: str | Path) -> str:
    """The exact text of the exercise notebook generated from ``solution_path``."""
    nb = nbformat.read(str(solution_path), as_version=4)
    text = nbformat.writes(exercise_notebook(nb), version=4)
    return text if text.endswith("\n") else text + "\n"


def make_exercises(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises",
                   *, check: bool = False) -> list[Path]:
    """Write (or with ``check=True`` only compare) every exercise notebook.

    Returns the exercise paths that were written (or that differ from what generation produces).
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    sources = sorted(solutions_dir.glob(PATTERN))
    if not sources:
        raise FileNotFoundError(f"no {PATTERN} notebooks in {solutions_dir}")
    changed = []
    for src in sources:
        target = exercises_dir / src.name
        text = exercise_text(src)
        old = target.read_text(encoding="utf-8") if target.exists() else None
        if old != text:
            changed.append(target)
            if not check:
                exercises_dir.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    return changed


def stale_exercises(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises") -> list[Path]:
    """Exercise notebooks whose solutions notebook no longer exists."""
    names = {p.name for p in Path(solutions_dir).glob(PATTERN)}
    return sorted(p for p in Path(exercises_dir).glob(PATTERN) if p.name not in names)
