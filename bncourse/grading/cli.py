"""``bncourse grade SUBMISSION_OR_DIR --solutions solutions/``.

Exit codes: 0 grading worked (whatever the scores), 1 the grader itself failed on some
submission (see the rows marked grader_error), 2 bad command line (no submissions, no solutions).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path


def add_grade_parser(sub) -> None:
    p = sub.add_parser("grade", help="grade submitted notebooks against the solutions",
                       description="Grade one submitted notebook or a folder of them (searched recursively; "
                                   "a file in a sub-folder is named after the sub-folder, e.g. alice/03_....ipynb).")
    p.add_argument("submission", help="a .ipynb file or a folder of them")
    p.add_argument("--solutions", default="solutions", help="solutions notebook or folder (default: solutions)")
    p.add_argument("--out", default="grading-output", help="output folder (default: grading-output)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded in parallel")
    p.add_argument("--cell-timeout", type=float, default=30.0, help="seconds per notebook cell (default 30)")
    p.add_argument("--total-timeout", type=float, default=300.0, help="seconds per submission (default 300)")
    p.add_argument("--exercise-timeout", type=float, default=10.0, help="seconds per exercise's cases (default 10)")
    p.add_argument("--seed", type=int, default=None, help="seed of the grading inputs (default: drawn now)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_grade)


def run_grade(args: argparse.Namespace) -> int:
    from .core import find_sources, find_submissions, grade_many
    from .report import format_table, write_csv, write_gradescope

    try:
        sources = [s.path for s in find_sources(args.solutions)]
        paths, root = find_submissions(args.submission)
    except FileNotFoundError as e:
        print(f"bncourse grade: {e}", file=sys.stderr)
        return 2
    if not paths:
        print(f"bncourse grade: no .ipynb files in {args.submission}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    t0 = time.perf_counter()
    results = grade_many(paths, sources, seed=seed, jobs=max(1, args.jobs), root=root,
                         progress=not args.no_progress, cell_timeout=args.cell_timeout,
                         total_timeout=args.total_timeout, exercise_timeout=args.exercise_timeout)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(results, out / "grades.csv")
    write_gradescope(results, out, single=root is None)
    (out / "details.json").write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    print(format_table(results))
    print(f"\n{len(results)} notebook(s) graded in {elapsed:.1f} s with {args.jobs} job(s), seed {seed}; "
          f"results in {out}/ (grades.csv, details.json, Gradescope results.json)")
    errors = [r for r in results if r.status == "grader_error"]
    for r in errors:
        print(f"grader error on {r.path}: {r.reason}", file=sys.stderr)
    return 1 if errors else 0
