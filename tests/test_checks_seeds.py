"""Every solution gets the same verdict under any grading seed, with its references poisoned.

The grader draws fresh cases with a seed chosen at grading time; an answer that passes ``check`` in the
notebook must not fail for an unlucky seed (tolerances that depend on the draw, ill-conditioned cases), and
nothing an exercise forbids (``Exercise.references``) may be needed by its correct answer. Here each
solutions notebook's code cells (all but the graded ``check`` cells) run in this process to define the
solution functions, and each exercise is graded the grader's way (``run_cases`` with the references
poisoned, then ``verify_results``) on 50 seeds: the first 25 integers and 25 grading-sized ones.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from bncourse.checks import core as checks
from bncourse.grading.core import load_source, read_notebook

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*_exercises.ipynb"))
SEEDS = [*range(25), *(int(s) for s in np.random.SeedSequence(20261124).generate_state(25) % 2**31)]
# Per-chapter exercises whose verdict is known to depend on the seed (reported to their authors); a strict
# xfail, so the test says when they are fixed.
KNOWN_SEED_DEPENDENT: set[str] = set()


def _solution_namespace(path: Path) -> dict:
    # Agg for figures the solution cells draw, set in-process: an MPLBACKEND set in os.environ would reach every
    # notebook kernel this pytest worker starts later (--nbval-current-env) and silently drop their figures.
    matplotlib.use("Agg")
    nb = read_notebook(path)
    ns: dict = {"__name__": "__solutions__"}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or cell["nbgrader"].get("grade"):
            continue
        src = "\n".join(line for line in cell["source"].splitlines() if not line.lstrip().startswith(("%", "!")))
        exec(compile(src, str(path), "exec"), ns)
    return ns


_NAMESPACES: dict[Path, dict] = {}


def _exercises():
    for path in SOLUTIONS:
        for spec in load_source(path).exercises:
            yield pytest.param(path, spec, id=spec.name,
                               marks=[pytest.mark.xfail(strict=True, reason="seed-dependent verdict")]
                               if spec.name in KNOWN_SEED_DEPENDENT else [])


def test_there_are_solutions_with_exercises():
    assert SOLUTIONS and sum(len(load_source(p).exercises) for p in SOLUTIONS) >= 20


@pytest.mark.parametrize("path, spec", list(_exercises()))
def test_solution_passes_under_fifty_grading_seeds_with_references_poisoned(path, spec):
    if path not in _NAMESPACES:
        _NAMESPACES[path] = _solution_namespace(path)
    fn = eval(spec.expr, _NAMESPACES[path])
    ex = checks.get_exercise(spec.name)
    failures = []
    for seed in [checks.default_seed(spec.name), *SEEDS]:
        cases = checks.make_cases(ex, seed)
        try:
            results = checks.run_cases(ex, fn, cases, timeout=60)
            checks.verify_results(ex, cases, results)
        except checks.CheckFailure as e:
            failures.append(f"seed {seed}: {e}")
    assert not failures, f"{len(failures)} of {len(SEEDS) + 1} seeds fail:\n" + "\n".join(failures[:3])
