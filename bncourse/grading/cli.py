"""``bncourse grade SUBMISSION_OR_DIR --solutions solutions/``.

Each submission's kernel runs in a bubblewrap sandbox (``sandbox.py``); without bubblewrap the command
refuses to grade unless ``--no-sandbox`` is given.

Exit codes: 0 grading worked (whatever the scores), 1 the grader itself failed on some
submission (see the rows marked grader_error), 2 bad command line (no submissions, no solutions),
3 no sandbox available (install bubblewrap, or pass --no-sandbox).
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
    p.add_argument("--assignment", default=None,
                   help="the assignment being graded (a solutions notebook's name without _exercises.ipynb, "
                        "e.g. 03_batchnorm_from_scratch); a submission of another assignment is flagged as such")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run the kernels WITHOUT the bubblewrap sandbox, with the grader's rights (only inside a "
                        "throwaway container such as Gradescope's; every row of the report says so)")
    p.add_argument("--memory-limit", type=float, default=4.0,
                   help="GiB of address space per sandboxed kernel (default 4)")
    p.set_defaults(func=run_grade)


def run_grade(args: argparse.Namespace) -> int:
    from .core import find_sources, find_submissions, grade_many
    from .report import format_table, write_csv, write_gradescope

    try:
        found = find_sources(args.solutions)
        paths, root = find_submissions(args.submission)
    except FileNotFoundError as e:
        print(f"bncourse grade: {e}", file=sys.stderr)
        return 2
    sources = [s.path for s in found]
    if args.assignment and args.assignment not in {s.assignment for s in found}:
        print(f"bncourse grade: no solutions notebook for assignment {args.assignment!r} in {args.solutions} "
              f"(there are: {', '.join(s.assignment for s in found)})", file=sys.stderr)
        return 2
    if not paths:
        print(f"bncourse grade: no .ipynb files in {args.submission}", file=sys.stderr)
        return 2
    from .sandbox import Limits, unavailable_reason

    if not args.no_sandbox:
        why = unavailable_reason()
        if why is not None:
            print(f"bncourse grade: cannot sandbox the submissions: {why}", file=sys.stderr)
            return 3
    limits = Limits(memory_bytes=int(args.memory_limit * (1 << 30)))
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    t0 = time.perf_counter()
    results = grade_many(paths, sources, seed=seed, jobs=max(1, args.jobs), root=root,
                         progress=not args.no_progress, cell_timeout=args.cell_timeout,
                         total_timeout=args.total_timeout, exercise_timeout=args.exercise_timeout,
                         sandbox=not args.no_sandbox, limits=limits, assignment=args.assignment)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(results, out / "grades.csv")
    write_gradescope(results, out, single=root is None)
    (out / "details.json").write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    print(format_table(results))
    print(f"\n{len(results)} notebook(s) graded in {elapsed:.1f} s with {args.jobs} job(s), seed {seed}; "
          f"results in {out}/ (grades.csv, details.json, Gradescope results.json)")
    if args.no_sandbox:
        print("WARNING: graded without a sandbox (--no-sandbox); every row says so", file=sys.stderr)
    errors = [r for r in results if r.status == "grader_error"]
    for r in errors:
        print(f"grader error on {r.path}: {r.reason}", file=sys.stderr)
    return 1 if errors else 0
