"""The ``bncourse`` command.

    bncourse make-exercises [SOLUTIONS_DIR] [EXERCISES_DIR] [--check]
    bncourse grade SUBMISSION_OR_DIR --solutions solutions/ [--out DIR] [--jobs N]
                   [--cell-timeout S] [--total-timeout S] [--seed N] [--assignment NAME]
                   [--memory-limit GIB] [--no-sandbox]
    bncourse gradescope ASSIGNMENT [--solutions solutions/] [--out ZIP] [--sandbox auto|always|never]
    bncourse get-data fashion-mnist [--dest DIR] [--url URL]
"""
from __future__ import annotations

import argparse
import sys


def _make_exercises(args: argparse.Namespace) -> int:
    from .exercises import make_exercises, stale_exercises

    changed = make_exercises(args.solutions_dir, args.exercises_dir, check=args.check)
    stale = stale_exercises(args.solutions_dir, args.exercises_dir)
    for p in stale:
        print(f"warning: {p} has no solutions notebook any more", file=sys.stderr)
    if args.check:
        for p in changed:
            print(f"out of date: {p}")
        if changed:
            print(f"run: bncourse make-exercises {args.solutions_dir} {args.exercises_dir}")
        return 1 if changed else 0
    for p in changed:
        print(f"wrote {p}")
    if not changed:
        print("exercises are up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bncourse", description="Batch normalization course tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-exercises", help="generate exercises/ from solutions/")
    p.add_argument("solutions_dir", nargs="?", default="solutions")
    p.add_argument("exercises_dir", nargs="?", default="exercises")
    p.add_argument("--check", action="store_true", help="only report out-of-date notebooks (exit 1 if any)")
    p.set_defaults(func=_make_exercises)

    from .grading.cli import add_grade_parser
    from .grading.gradescope import add_gradescope_parser
    from .get_data import add_get_data_parser
    add_grade_parser(sub)
    add_gradescope_parser(sub)
    add_get_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
