"""How fast does ``bncourse grade`` grade a class? Copies of one submission, graded with N jobs.

    .venv/bin/python benchmarks/grade_bench.py [--copies 20] [--jobs 2] [--assignment 03_batchnorm_from_scratch]
                                               [--no-sandbox] [--no-prewarm] [--profile]

Prints the wall time, submissions per minute, the time for 100 submissions at that rate, and (with
--profile) where one submission's time goes: kernel start, the notebook's cells, the exercises.
Every copy must get full points, or the numbers mean nothing (the script says so and exits 1).
Not a test: timings depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def profile_one(path: Path, source: str, sandbox: bool) -> dict:
    """Phases of one submission, graded in this process with the steps of ``grade_submission``."""
    from bncourse.grading import core
    from bncourse.grading.sandbox import Limits

    res = core.SubmissionResult(path=str(path), student="x", seed=1)
    t = {}
    t0 = time.perf_counter()
    nb, src = core.read_and_match(res, path, [source])
    cells = core.restore_locked_cells(res, nb, src)
    run = core.NotebookRun(res, cells, limits=Limits() if sandbox else None, cell_timeout=60,
                           deadline=time.monotonic() + 600)
    try:
        t1 = time.perf_counter()
        k = run.kernel = core.Kernel(run.tmp, run.deadline, run.limits)
        k.start()
        k.run("pass", 60)
        t2 = time.perf_counter()
        for c in cells:
            if c.strip():
                k.run(c, 60)
        t3 = time.perf_counter()
        core.grade_exercises(res, run, src, seed=1, exercise_timeout=30)
        t4 = time.perf_counter()
    finally:
        run.close()
    t = {"read and match": t1 - t0, "kernel start": t2 - t1, "notebook cells": t3 - t2, "exercises": t4 - t3}
    t["total"] = sum(t.values())
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--assignment", default="03_batchnorm_from_scratch")
    ap.add_argument("--no-sandbox", action="store_true")
    ap.add_argument("--no-prewarm", action="store_true", help="do not launch the next kernel ahead of time")
    ap.add_argument("--profile", action="store_true", help="also time the phases of one submission")
    args = ap.parse_args(argv)

    from bncourse.grading.core import grade_many

    source = ROOT / "solutions" / f"{args.assignment}_exercises.ipynb"
    tmp = Path(tempfile.mkdtemp(prefix="grade-bench-"))
    try:
        paths = []
        for i in range(args.copies):
            d = tmp / f"student{i:03d}"
            d.mkdir()
            shutil.copy(source, d / source.name)
            paths.append(d / source.name)
        if args.profile:
            for k, v in profile_one(paths[0], str(source), not args.no_sandbox).items():
                print(f"  {k:15s} {v:6.2f} s")
        t0 = time.perf_counter()
        results = grade_many(paths, [str(source)], seed=7, jobs=args.jobs, root=tmp, progress=False,
                             sandbox=not args.no_sandbox, cell_timeout=60, total_timeout=600, exercise_timeout=30,
                             prewarm=not args.no_prewarm)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    full = sum(r.total == r.max_total > 0 for r in results)
    per = [r.seconds for r in results]
    print(f"{args.copies} copies of {source.name}, {args.jobs} job(s), sandbox {'off' if args.no_sandbox else 'on'}, "
          f"prewarm {'off' if args.no_prewarm else 'on'}: "
          f"{wall:.1f} s wall ({args.copies / wall * 60:.1f} submissions/min, {100 * wall / args.copies / 60:.1f} min "
          f"per 100); per submission {min(per):.1f}-{max(per):.1f} s, mean {sum(per) / len(per):.1f} s; "
          f"{full}/{len(results)} full marks")
    if full != len(results):
        print("not every copy got full points: " + "; ".join(
            f"{r.student}: {r.reason or [e.reason for e in r.exercises if e.reason][:1]}" for r in results
            if r.total != r.max_total), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
