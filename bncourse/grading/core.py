"""Grade one submitted notebook, or many in parallel.

For each submission (never modified; all work happens in a temporary directory):

1. read it tolerantly (malformed JSON, not a notebook, too big: a row with the reason);
2. match it with a solutions notebook (by nbgrader ``grade_id`` overlap, then by file name);
3. restore the locked cells (test cells) from the source, run every code cell in a fresh kernel
   with a per-cell and a total time limit, restarting the kernel and replaying the cells that
   worked when a cell kills it or cannot be interrupted;
4. for each exercise of the source (a locked test cell ``check("name", expr)``), draw fresh
   inputs with the grading seed, send them to ``expr`` in the kernel, get plain arrays back and
   verify them in this process. Full points or none, with the reason.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_NOTEBOOK_BYTES = 20_000_000
OUTPUT_CAP_CHARS = 100_000


class SubmissionError(Exception):
    """A submission that cannot be graded at all (the reason is for the row)."""


@dataclass
class ExerciseSpec:
    name: str
    expr: str
    points: float
    grade_id: str


@dataclass
class Source:
    path: str
    assignment: str
    exercises: list[ExerciseSpec]
    locked: dict[str, str]          # grade_id -> source of the locked cell
    grade_ids: set[str]


@dataclass
class ExerciseResult:
    name: str
    points: float
    max_points: float
    status: str                     # passed | failed
    reason: str = ""


@dataclass
class SubmissionResult:
    path: str
    student: str
    assignment: str = ""
    status: str = "graded"          # graded | rejected | grader_error
    reason: str = ""
    exercises: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return float(sum(e.points for e in self.exercises))

    @property
    def max_total(self) -> float:
        return float(sum(e.max_points for e in self.exercises))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"], d["max_total"] = self.total, self.max_total
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SubmissionResult":
        d = dict(d)
        d.pop("total", None)
        d.pop("max_total", None)
        d["exercises"] = [ExerciseResult(**e) for e in d.get("exercises", [])]
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Reading notebooks
# --------------------------------------------------------------------------------------------
def read_notebook(path: str | Path) -> dict:
    """A notebook as a plain dict with string sources; SubmissionError with the reason if impossible."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SubmissionError(f"cannot read the file: {e.strerror}") from None
    if size > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"the notebook is {size / 1e6:.0f} MB, more than the {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB "
                              f"accepted (clear the outputs and submit again)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError("malformed notebook: the file is not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SubmissionError(f"malformed notebook: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                              f"was the file saved completely?") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise SubmissionError("malformed notebook: valid JSON, but not a Jupyter notebook (no list of cells)")
    if raw.get("nbformat") != 4:
        raise SubmissionError(f"unsupported notebook format {raw.get('nbformat')!r}: save it with Jupyter 4+")
    cells = []
    for i, c in enumerate(raw["cells"]):
        if not isinstance(c, dict) or c.get("cell_type") not in ("code", "markdown", "raw"):
            raise SubmissionError(f"malformed notebook: cell {i} is not a valid cell")
        src = c.get("source", "")
        if isinstance(src, list) and all(isinstance(s, str) for s in src):
            src = "".join(src)
        if not isinstance(src, str):
            raise SubmissionError(f"malformed notebook: cell {i} has no text source")
        md = c.get("metadata") if isinstance(c.get("metadata"), dict) else {}
        nbg = md.get("nbgrader") if isinstance(md.get("nbgrader"), dict) else {}
        cells.append({"cell_type": c["cell_type"], "source": src, "nbgrader": nbg})
    return {"cells": cells, "metadata": raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}}


def _check_call(source: str) -> tuple[str, str] | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            return node.args[0].value, ast.unparse(node.args[1])
    return None


def load_source(path: str | Path) -> Source:
    nb = read_notebook(path)
    exercises, locked, ids = [], {}, set()
    for c in nb["cells"]:
        md = c["nbgrader"]
        gid = md.get("grade_id")
        if not gid:
            continue
        ids.add(gid)
        if md.get("locked"):
            locked[gid] = c["source"]
        if md.get("grade") and c["cell_type"] == "code":
            call = _check_call(c["source"])
            if call:
                exercises.append(ExerciseSpec(call[0], call[1], float(md.get("points", 0)), gid))
    stem = Path(path).stem
    return Source(str(path), stem.removesuffix("_exercises"), exercises, locked, ids)


def find_sources(solutions: str | Path) -> list[Source]:
    p = Path(solutions)
    paths = [p] if p.is_file() else sorted(p.glob("*_exercises.ipynb")) or sorted(p.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no solutions notebooks in {solutions}")
    return [load_source(x) for x in paths]


def match_source(nb: dict, path: Path, sources: list[Source]) -> Source:
    ids = {c["nbgrader"].get("grade_id") for c in nb["cells"] if c["nbgrader"].get("grade_id")}
    best = max(sources, key=lambda s: len(s.grade_ids & ids))
    if best.grade_ids & ids:
        return best
    if ids:  # an nbgrader notebook, but of another assignment
        names = ", ".join(Path(s.path).name for s in sources)
        raise SubmissionError(f"wrong assignment: this notebook's exercises ({', '.join(sorted(ids)[:3])}, ...) "
                              f"belong to none of {names}")
    for s in sources:
        if s.assignment and s.assignment in path.stem:
            return s
    names = ", ".join(Path(s.path).name for s in sources)
    raise SubmissionError(f"wrong assignment: this notebook contains none of the exercises of {names}")


# --------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------
def _kernel_env() -> dict[str, str]:
    import bncourse

    pkg_parent = str(Path(next(iter(bncourse.__path__))).resolve().parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MPLBACKEND="Agg", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("JPY_PARENT_PID", None)
    return env


class Kernel:
    """A fresh IPython kernel in ``cwd`` that runs source text with a time limit, capping outputs."""

    def __init__(self, cwd: str, deadline: float):
        self.cwd = cwd
        self.deadline = deadline
        self.client = None

    def start(self) -> None:
        import nbformat
        from nbclient import NotebookClient

        class _Capped(NotebookClient):
            kept = 0

            def output(self, outs, msg, display_id, cell_index):  # keep errors, cap the rest
                if msg["msg_type"] != "error":
                    text = json.dumps(msg.get("content", {}))[:OUTPUT_CAP_CHARS]
                    if self.kept > OUTPUT_CAP_CHARS:
                        return None
                    self.kept += len(text)
                return super().output(outs, msg, display_id, cell_index)

        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")])
        self.client = _Capped(nb, kernel_name="python3", timeout=60, allow_errors=True,
                              interrupt_on_timeout=True, record_timing=False, startup_timeout=60,
                              error_on_timeout={"ename": "GraderTimeout", "evalue": "time limit", "traceback": []})
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel(cwd=self.cwd, env=_kernel_env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.client.start_new_kernel_client()

    def run(self, source: str, timeout: float) -> tuple[str, str]:
        """("ok" | "error" | "timeout" | "dead", detail)."""
        import nbformat
        from nbclient.exceptions import DeadKernelError

        left = self.deadline - time.monotonic()
        if left <= 1:
            return "timeout", "total time limit reached"
        limit = max(1, math.ceil(min(timeout, left)))
        self.client.timeout = limit
        self.client.kept = 0
        cell = nbformat.v4.new_code_cell(source)
        started = time.monotonic()
        try:
            cell = self.client.execute_cell(cell, 0, store_history=False)
        except DeadKernelError:
            return "dead", "the kernel died"
        except Exception as e:  # nbclient internals (e.g. iopub timeout)
            return "error", f"{type(e).__name__}: {e}"
        if time.monotonic() - started >= limit - 0.5:
            return "timeout", f"stopped after {limit} s"
        for out in cell.outputs:
            if out.output_type == "error":
                if out.ename == "GraderTimeout" or (out.ename == "KeyboardInterrupt"
                                                    and time.monotonic() - started >= limit - 0.5):
                    return "timeout", f"stopped after {limit} s"
                return "error", f"{out.ename}: {out.evalue}"[:500]
        return "ok", ""

    def responsive(self) -> bool:
        return self.run("pass", 5)[0] == "ok"

    def stop(self) -> None:
        if self.client is not None:
            try:
                self.client._cleanup_kernel()
            except Exception:
                pass
            self.client = None


# --------------------------------------------------------------------------------------------
# Grading one submission
# --------------------------------------------------------------------------------------------
def student_name(path: Path, root: Path | None) -> str:
    if root is not None:
        rel = path.relative_to(root)
        if len(rel.parts) > 1:
            return rel.parts[0]
    return path.stem


def _cells_to_run(nb: dict, source: Source) -> tuple[list[str], list[str]]:
    from .kernel_side import OUTPUT_CAP_SOURCE

    notes = []
    cells = [OUTPUT_CAP_SOURCE % {"limit": OUTPUT_CAP_CHARS}]
    restored = set()
    test_ids = {e.grade_id for e in source.exercises}
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        gid = c["nbgrader"].get("grade_id")
        if gid in source.locked:
            if c["source"] != source.locked[gid]:
                notes.append(f"locked cell {gid} was edited; the original was restored")
            restored.add(gid)
            if gid in test_ids:   # the grader runs its own check of this exercise, with fresh inputs
                continue
            cells.append(source.locked[gid])
        else:
            cells.append(c["source"])
    missing = [e.grade_id for e in source.exercises if e.grade_id not in restored]
    if missing:
        notes.append(f"test cells missing from the notebook: {', '.join(missing)} (graded anyway)")
    return cells, notes


def _explain(kind: str, error: str | None, spec: ExerciseSpec, reference: str | None) -> str:
    if kind == "missing":
        return f"{spec.expr} is not defined ({error}); did its cell run without errors?"
    if kind == "not_implemented":
        return "not implemented: the code still raises NotImplementedError"
    if kind == "reference":
        return (f"calls the reference implementation {reference.replace(':', '.')} instead of implementing "
                f"it: no points")
    if kind == "timeout":
        return "stopped by the time limit: an infinite loop, or far too slow"
    return error or kind


def _grade_exercise(kernel: Kernel, tmp: Path, spec: ExerciseSpec, seed: int, timeout: float) -> tuple[str, str]:
    """("passed" | "failed" | "dead" | "hung", reason)."""
    from bncourse.checks import core as checks
    from .kernel_side import RUN_SOURCE

    try:
        ex = checks.get_exercise(spec.name)
    except KeyError as e:
        return "failed", f"grader: {e.args[0]}"
    cases = checks.make_cases(ex, seed)
    arrays, meta = checks.to_wire(cases)
    base = tmp / f"_grader_{spec.name}"
    np.savez(f"{base}_cases.npz", **arrays)
    Path(f"{base}_cases.json").write_text(meta)
    out_npz, out_json = Path(f"{base}_out.npz"), Path(f"{base}_out.json")
    for p in (out_npz, out_json):
        p.unlink(missing_ok=True)
    src = RUN_SOURCE % {"expr": spec.expr, "name": spec.name, "cases_npz": f"{base}_cases.npz",
                        "cases_json": f"{base}_cases.json", "out_npz": str(out_npz), "out_json": str(out_json),
                        "timeout": timeout}
    status, detail = kernel.run(src, timeout + 10)
    if status == "dead":
        return "dead", "the kernel died while running this exercise (os._exit, a crash, or out of memory)"
    if status == "timeout":
        return "hung", f"stopped by the time limit ({detail}): an infinite loop, or far too slow"
    try:
        report = json.loads(out_json.read_text())
        st = report["status"]
        with np.load(out_npz, allow_pickle=False) as z:
            wire = {k: z[k] for k in z.files}
        results = checks.from_wire(wire, report["meta"])
    except Exception:
        why = f" ({detail})" if status == "error" else ""
        return "failed", f"no results came back from the notebook's kernel{why}"
    if st.get("kind"):
        return "failed", _explain(st["kind"], st.get("error"), spec, st.get("reference"))
    if len(results) != len(cases):
        return "failed", "no results came back from the notebook's kernel"
    try:
        checks.verify_results(ex, cases, results)
    except checks.CheckFailure as e:
        return "failed", str(e)
    except Exception as e:
        return "failed", f"could not verify the results: {type(e).__name__}: {e}"
    return "passed", ""


def grade_submission(path: str, sources: list[str], *, seed: int, cell_timeout: float = 30.0,
                     total_timeout: float = 300.0, exercise_timeout: float = 10.0,
                     root: str | None = None) -> dict:
    """Grade one notebook; always returns a result dict (``SubmissionResult.to_dict``), never raises."""
    t0 = time.monotonic()
    p = Path(path)
    res = SubmissionResult(path=str(path), student=student_name(p, Path(root) if root else None), seed=seed)
    _grade_into(res, p, sources, seed=seed, cell_timeout=cell_timeout, total_timeout=total_timeout,
                exercise_timeout=exercise_timeout)
    res.seconds = round(time.monotonic() - t0, 2)
    return res.to_dict()


def _grade_into(res: SubmissionResult, p: Path, sources: list[str], *, seed: int, cell_timeout: float,
                total_timeout: float, exercise_timeout: float) -> None:
    tmp = None
    kernel = None
    try:
        srcs = [load_source(s) for s in sources]
        try:
            nb = read_notebook(p)
            source = match_source(nb, p, srcs)
        except SubmissionError as e:
            res.status, res.reason = "rejected", str(e)
            return
        res.assignment = source.assignment
        cells, res.notes = _cells_to_run(nb, source)
        tmp = Path(tempfile.mkdtemp(prefix="bncourse-grade-"))
        deadline = time.monotonic() + total_timeout
        bad: set[int] = set()        # cells that killed the kernel or could not be interrupted

        def fresh_kernel() -> Kernel:
            k = Kernel(str(tmp), deadline)
            k.start()
            return k

        def run_notebook() -> Kernel:
            attempts = 0
            while True:
                attempts += 1
                k = fresh_kernel()
                restart = False
                for i, src in enumerate(cells):
                    if i in bad or not src.strip():
                        continue
                    status, detail = k.run(src, cell_timeout)
                    if status == "error" and attempts == 1 and i:
                        res.notes.append(f"code cell {i} raised {detail.splitlines()[0][:200]}")
                    elif status == "timeout":
                        res.notes.append(f"code cell {i} was stopped by the time limit ({detail}): infinite loop?")
                        bad.add(i)     # do not wait for it again when the notebook is replayed
                        if time.monotonic() >= deadline - 1:
                            res.notes.append("the total time limit was reached")
                            return k
                        if not k.responsive():
                            restart = True
                            break
                    elif status == "dead":
                        res.notes.append(f"code cell {i} killed the kernel (sys.exit/os._exit/crash); "
                                         f"it is skipped and the notebook replayed without it")
                        bad.add(i)
                        restart = True
                        break
                if not restart or attempts >= 4 or time.monotonic() >= deadline - 1:
                    return k
                k.stop()

        kernel = run_notebook()
        for spec in source.exercises:
            if time.monotonic() >= deadline - 1:
                outcome, reason = "failed", "not graded: the total time limit was reached"
            else:
                outcome, reason = _grade_exercise(kernel, tmp, spec, seed, exercise_timeout)
                if outcome in ("dead", "hung"):
                    kernel.stop()
                    kernel = run_notebook()
            passed = outcome == "passed"
            res.exercises.append(ExerciseResult(spec.name, spec.points if passed else 0.0, spec.points,
                                                "passed" if passed else "failed", reason))
        res.notes = list(dict.fromkeys(res.notes))
    except Exception as e:  # the grader's own failure: a row, and exit code 1
        res.status = "grader_error"
        res.reason = f"internal grader error: {type(e).__name__}: {e}"
        res.notes.append(traceback.format_exc(limit=5))
    finally:
        if kernel is not None:
            kernel.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def find_submissions(target: str | Path) -> tuple[list[Path], Path | None]:
    t = Path(target)
    if t.is_file():
        return [t], None
    if not t.is_dir():
        raise FileNotFoundError(f"{target}: no such file or directory")
    subs = sorted(p for p in t.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return subs, t


def grade_many(paths: list[Path], sources: list[str], *, seed: int, jobs: int = 2, root: Path | None = None,
               progress: bool = True, **options: Any) -> list[SubmissionResult]:
    """Grade submissions in parallel (a process per job); results in the order of ``paths``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    results: dict[int, SubmissionResult] = {}
    kwargs = dict(seed=seed, root=str(root) if root else None, **options)
    bar = tqdm(total=len(paths), desc="grading", unit="notebook", disable=not progress, file=sys.stderr)
    if jobs <= 1:
        for i, p in enumerate(paths):
            results[i] = SubmissionResult.from_dict(grade_submission(str(p), sources, **kwargs))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(grade_submission, str(p), sources, **kwargs): i for i, p in enumerate(paths)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    results[i] = SubmissionResult.from_dict(fut.result())
                except Exception as e:
                    p = paths[i]
                    results[i] = SubmissionResult(str(p), student_name(p, root), status="grader_error",
                                                  reason=f"internal grader error: {type(e).__name__}: {e}", seed=seed)
                bar.update()
    bar.close()
    return [results[i] for i in range(len(paths))]
