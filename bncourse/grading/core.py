"""Grade one submitted notebook, or many in parallel.

For each submission (only ever read; all work happens in a temporary directory), in the named steps of
:func:`grade_submission` (see ``grading/__init__.py`` for the threat model):

1. read it tolerantly (malformed JSON, not a notebook, too big: a row with the reason);
2. match it with a solutions notebook (by nbgrader ``grade_id`` overlap; without nbgrader metadata by
   its ``check(...)`` calls and exercise functions, then by file name);
3. restore the locked cells (test cells) from the source, run every code cell in a fresh kernel
   (inside the bubblewrap sandbox of ``sandbox.py`` unless ``sandbox=False``) with a per-cell and a
   total time limit, restarting the kernel and replaying the cells that worked when a cell kills it
   or cannot be interrupted;
4. for each exercise of the source (a locked test cell ``check("name", expr)``), draw fresh
   inputs with the grading seed, send them to ``expr`` in the kernel, get plain arrays back and
   verify them in this process. Full points or none, with the reason;
5. nbgrader's manually graded cells (written answers, tasks) are reported as "manual" with the student's
   text, outside the auto-graded totals.
"""
from __future__ import annotations

import ast
import json
import math
import os
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
class ManualSpec:
    """An nbgrader manually graded cell: a written answer (``grade`` and ``solution``) or a task (``task``)."""
    grade_id: str
    points: float
    kind: str                       # "answer" | "task"


@dataclass
class Source:
    path: str
    assignment: str
    exercises: list[ExerciseSpec]
    locked: dict[str, str]          # grade_id -> source of the locked cell
    grade_ids: set[str]
    manual: list[ManualSpec] = field(default_factory=list)


@dataclass
class ExerciseResult:
    name: str
    points: float
    max_points: float
    status: str                     # passed | failed | manual (graded by hand; not in the totals)
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
        """Points of the auto-graded exercises (manually graded cells are not in it)."""
        return float(sum(e.points for e in self.exercises if e.status != "manual"))

    @property
    def max_total(self) -> float:
        return float(sum(e.max_points for e in self.exercises if e.status != "manual"))

    @property
    def manual_points(self) -> float:
        """Points of the cells left to grade by hand."""
        return float(sum(e.max_points for e in self.exercises if e.status == "manual"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"], d["max_total"], d["manual_points"] = self.total, self.max_total, self.manual_points
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SubmissionResult":
        d = dict(d)
        for k in ("total", "max_total", "manual_points"):
            d.pop(k, None)
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
    """The graded exercises (locked ``check("name", expr)`` cells), locked cells and manually graded cells
    (nbgrader written answers: ``grade`` and ``solution``; tasks: ``task``) of a solutions notebook."""
    nb = read_notebook(path)
    exercises, locked, ids, manual = [], {}, set(), []
    for c in nb["cells"]:
        md = c["nbgrader"]
        gid = md.get("grade_id")
        if not gid:
            continue
        ids.add(gid)
        if md.get("locked"):
            locked[gid] = c["source"]
        if md.get("task"):
            manual.append(ManualSpec(gid, float(md.get("points", 0)), "task"))
        elif md.get("grade") and md.get("solution"):
            manual.append(ManualSpec(gid, float(md.get("points", 0)), "answer"))
        elif md.get("grade") and c["cell_type"] == "code":
            call = _check_call(c["source"])
            if call:
                exercises.append(ExerciseSpec(call[0], call[1], float(md.get("points", 0)), gid))
    stem = Path(path).stem
    return Source(str(path), stem.removesuffix("_exercises"), exercises, locked, ids, manual)


def find_sources(solutions: str | Path) -> list[Source]:
    p = Path(solutions)
    paths = [p] if p.is_file() else sorted(p.glob("*_exercises.ipynb")) or sorted(p.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no solutions notebooks in {solutions}")
    return [load_source(x) for x in paths]


def _defined_names(nb: dict) -> set[str]:
    """Top-level functions, classes and assigned names of the notebook's code cells."""
    names: set[str] = set()
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(c["source"])
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _checked_names(nb: dict) -> set[str]:
    """Exercise names of the ``check("name", ...)`` calls in the notebook's code cells."""
    found = set()
    for c in nb["cells"]:
        if c["cell_type"] == "code" and "check" in c["source"]:
            call = _check_call(c["source"])
            if call:
                found.add(call[0])
    return found


def content_score(nb: dict, source: Source) -> int:
    """How many of the source's exercises the notebook checks or defines the function of."""
    checked, defined = _checked_names(nb), _defined_names(nb)
    return sum((e.name in checked) + (e.expr in defined) for e in source.exercises)


def match_source(nb: dict, path: Path, sources: list[Source], assignment: str | None = None) -> Source:
    """The solutions notebook this submission answers: by nbgrader ``grade_id`` overlap; for a notebook
    without nbgrader metadata (stripped by an editor, cells copied into a new notebook), by its
    ``check(...)`` calls and the exercise functions it defines, then by file name. With ``assignment``,
    a notebook of another assignment is rejected as such."""
    names = ", ".join(Path(s.path).name for s in sources)
    ids = {c["nbgrader"].get("grade_id") for c in nb["cells"] if c["nbgrader"].get("grade_id")}
    best = max(sources, key=lambda s: len(s.grade_ids & ids))
    if best.grade_ids & ids:
        found = best
    elif ids:  # an nbgrader notebook, but of another assignment
        raise SubmissionError(f"wrong assignment: this notebook's exercises ({', '.join(sorted(ids)[:3])}, ...) "
                              f"belong to none of {names}")
    else:
        scores = {id(s): content_score(nb, s) for s in sources}
        by_name = [s for s in sources if s.assignment and s.assignment in path.stem]
        top = max(scores.values())
        candidates = [s for s in sources if scores[id(s)] == top] if top else by_name
        candidates = [s for s in candidates if s in by_name] or candidates
        if not candidates:
            raise SubmissionError(
                f"wrong assignment: this notebook has no nbgrader metadata and none of the check(...) calls or "
                f"exercise functions of {names}, and its file name matches none of them; submit the notebook "
                f"that was handed out (with its cells' metadata) or name the file after the assignment")
        found = candidates[0]
    if assignment and found.assignment != assignment:
        raise SubmissionError(f"wrong assignment: this is the notebook of {found.assignment}, "
                              f"not of {assignment}")
    return found


# --------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------
MAX_RESULT_BYTES = 16_000_000      # results of one exercise (.npz), checked before they are parsed
MAX_STATUS_BYTES = 1_000_000       # its status (.json)


def _capped_npz(data: bytes) -> dict[str, np.ndarray]:
    """Arrays of an .npz held in memory, refusing pickles and members that expand past the cap."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        if sum(i.file_size for i in zf.infolist()) > MAX_RESULT_BYTES:
            raise ValueError("the results expand to more than the size accepted")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


#: Imported by every kernel when it starts, before any cell of the notebook (so before any student code runs):
#: what nearly every submission imports anyway. Bound to no name in the notebook's namespace.
PRELOAD_MODULES = ("numpy", "torch", "bncourse.checks", "bncourse.grading.kernel_side")
PRELOAD_ARGUMENT = ("--IPKernelApp.exec_lines=[\"[__import__(m) for m in "
                    + repr(PRELOAD_MODULES).replace('"', "'") + "]; pass\"]")   # '; pass': nothing displayed


class Kernel:
    """A fresh IPython kernel that runs source text with a time limit, capping outputs.

    With ``limits`` (a :class:`sandbox.Limits`) it runs inside a bubblewrap sandbox (see ``sandbox.py``);
    with None, as a plain subprocess of the grader (``--no-sandbox``). ``tmp`` is the grader's own
    directory for this submission: ``tmp/in`` holds what the grader sends (read-only in the sandbox).
    """

    def __init__(self, tmp: Path, deadline: float, limits=None):
        self.tmp = Path(tmp)
        self.deadline = deadline
        self.limits = limits
        self.client = None
        self.inbox = self.tmp / "in"
        self.inbox.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.inbox, 0o755)
        self.workdir = self.tmp / "work"      # unsandboxed only
        self.workdir.mkdir(exist_ok=True)

    @property
    def sandboxed(self) -> bool:
        return self.limits is not None

    def inbox_path(self, name: str) -> str:
        """Where the kernel sees the file ``name`` the grader wrote into ``self.inbox``."""
        from .sandbox import INBOX

        return f"{INBOX}/{name}" if self.sandboxed else str(self.inbox / name)

    def outbox_path(self, name: str) -> str:
        """Where the kernel writes a result file ``name`` for the grader."""
        from .sandbox import OUTBOX

        return f"{OUTBOX}/{name}" if self.sandboxed else str(self.workdir / ".grader" / name)

    def read_result(self, name: str, cap: int) -> bytes:
        """A result file the kernel wrote, read without following symbolic links, at most ``cap`` bytes."""
        from .sandbox import OUTBOX, read_beneath

        if self.sandboxed:
            root, rel = self.client.km.root_fd(), f"{OUTBOX}/{name}"
        else:
            root, rel = os.open(self.tmp, os.O_PATH | os.O_DIRECTORY), f"work/.grader/{name}"
        try:
            return read_beneath(root, rel, cap)
        finally:
            os.close(root)

    def launch(self) -> None:
        """Start the kernel process (sandboxed or not) and return at once; it imports ``PRELOAD_MODULES`` before
        it answers, so a kernel launched ahead of time (:class:`KernelPool`) is warm when :meth:`connect` is called."""
        import nbformat
        from nbclient import NotebookClient

        from .sandbox import SandboxKernelManager, kernel_env, package_dir

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
        extra = dict(kernel_manager_class=SandboxKernelManager) if self.sandboxed else {}
        self.client = _Capped(nb, kernel_name="python3", timeout=60, allow_errors=True,
                              interrupt_on_timeout=True, record_timing=False, startup_timeout=60,
                              shutdown_kernel="immediate",
                              error_on_timeout={"ename": "GraderTimeout", "evalue": "time limit", "traceback": []},
                              extra_arguments=[PRELOAD_ARGUMENT], **extra)
        km = self.client.km = self.client.create_kernel_manager()
        if self.sandboxed:
            # only the package directory is mounted, so its parent on the path exposes nothing else; it lets a
            # package that is not installed (on PYTHONPATH, as in the Gradescope zip) import in the sandbox
            km.setup_sandbox(self.inbox, kernel_env(extra_path=str(package_dir().parent)), self.limits)
            km.kernel_spec.interrupt_mode = "message"    # a signal would reach bubblewrap, not the kernel
            env = {"PATH": "/usr/bin:/bin"}   # bubblewrap's own; the kernel's is set by --setenv
        else:
            (self.workdir / ".grader").mkdir(exist_ok=True)
            env = kernel_env(extra_path=str(package_dir().parent), workdir=str(self.workdir))
        self.client.start_new_kernel(cwd=str(self.workdir), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def connect(self) -> None:
        """Wait until the launched kernel is ready (it has imported ``PRELOAD_MODULES``) and connect to it."""
        self.client.start_new_kernel_client()

    def start(self) -> None:
        self.launch()
        self.connect()

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
        finally:
            if self.sandboxed and self.client.km is not None:
                self.client.km.kill_strays()     # nothing a cell started keeps running after it
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
    notes = []
    cells = [f"from bncourse.grading.kernel_side import cap_output as __bncourse_cap\n"
             f"__bncourse_cap({OUTPUT_CAP_CHARS})\ndel __bncourse_cap"]
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
    if not any(c["nbgrader"].get("grade_id") for c in nb["cells"]):
        notes.append("the notebook has no nbgrader metadata (an editor stripped it, or cells were copied into a "
                     "new notebook): matched by its check(...) calls and functions; locked cells were not "
                     "restored; every exercise is still graded")
    elif missing:
        notes.append(f"test cells missing from the notebook: {', '.join(missing)} (graded anyway)")
    return cells, notes


def _explain(kind: str, error: str | None, spec: ExerciseSpec, reference: str | None) -> str:
    if kind == "missing":
        return f"{spec.expr} is not defined ({error}); did its cell run without errors?"
    if kind == "not_implemented":
        return "not implemented: the code still raises NotImplementedError"
    if kind == "reference":     # the same message as the in-notebook check()
        from bncourse.checks import core as checks

        try:
            return checks.forbidden_message(checks.get_exercise(spec.name), reference or "")
        except KeyError:
            return f"calls the reference implementation {(reference or '').replace(':', '.')}: no points"
    if kind == "timeout":
        return "stopped by the time limit: an infinite loop, or far too slow"
    return error or kind


def exercise_cell(spec: ExerciseSpec, cases_npz: str, cases_json: str, out_npz: str, out_json: str,
                  timeout: float) -> str:
    """The cell the grader runs in the student's kernel for one exercise (see ``kernel_side.run_exercise``)."""
    return (f"from bncourse.grading.kernel_side import run_exercise as __bncourse_run\n"
            f"try:\n"
            f"    __bncourse_run(lambda: ({spec.expr}), {spec.name!r}, {cases_npz!r}, {cases_json!r},\n"
            f"                   {out_npz!r}, {out_json!r}, {timeout!r})\n"
            f"finally:\n"
            f"    del __bncourse_run\n")


def _grade_exercise(kernel: Kernel, spec: ExerciseSpec, seed: int, timeout: float) -> tuple[str, str]:
    """("passed" | "failed" | "dead" | "hung", reason)."""
    import secrets

    from bncourse.checks import core as checks

    try:
        ex = checks.get_exercise(spec.name)
    except KeyError as e:
        return "failed", f"grader: {e.args[0]}"
    cases = checks.make_cases(ex, seed)
    arrays, meta = checks.to_wire(cases)
    base = f"{spec.name}-{secrets.token_hex(4)}"      # a new name each time: never a stale result
    np.savez(kernel.inbox / f"{base}_cases.npz", **arrays)
    (kernel.inbox / f"{base}_cases.json").write_text(meta)
    src = exercise_cell(spec, kernel.inbox_path(f"{base}_cases.npz"), kernel.inbox_path(f"{base}_cases.json"),
                        kernel.outbox_path(f"{base}_out.npz"), kernel.outbox_path(f"{base}_out.json"), timeout)
    status, detail = kernel.run(src, timeout + 10)
    if status == "dead":
        return "dead", "the kernel died while running this exercise (os._exit, a crash, or out of memory)"
    if status == "timeout":
        return "hung", f"stopped by the time limit ({detail}): an infinite loop, or far too slow"
    try:
        report = json.loads(kernel.read_result(f"{base}_out.json", MAX_STATUS_BYTES))
        st = report["status"]
        wire = _capped_npz(kernel.read_result(f"{base}_out.npz", MAX_RESULT_BYTES))
        results = checks.from_wire(wire, report["meta"])
    except Exception as e:
        from .sandbox import ResultTooLarge

        if isinstance(e, ResultTooLarge) or "expand to more" in str(e):
            return "failed", f"the results are too large ({e})"
        why = f" ({detail})" if status == "error" else ""
        return "failed", f"no results came back from the notebook's kernel{why}"
    if not isinstance(st, dict):
        return "failed", "no results came back from the notebook's kernel"
    if st.get("kind"):
        return "failed", _explain(str(st["kind"]), st.get("error") and str(st["error"])[:2000], spec,
                                  str(st.get("reference") or ""))
    if len(results) != len(cases):
        return "failed", "no results came back from the notebook's kernel"
    try:
        checks.verify_results(ex, cases, results)
    except checks.CheckFailure as e:
        return "failed", str(e)
    except Exception as e:
        return "failed", f"could not verify the results: {type(e).__name__}: {e}"
    return "passed", ""


UNSANDBOXED_NOTE = "graded WITHOUT a sandbox (--no-sandbox): the notebook ran with the grader's rights"


def grade_submission(path: str, sources: list[str], *, seed: int, cell_timeout: float = 30.0,
                     total_timeout: float = 300.0, exercise_timeout: float = 10.0,
                     root: str | None = None, sandbox: bool = True, limits=None,
                     assignment: str | None = None, prewarm_next: bool = False) -> dict:
    """Grade one notebook; always returns a result dict (``SubmissionResult.to_dict``), never raises.

    The steps, in order: :func:`read_and_match`, :func:`restore_locked_cells`, :meth:`NotebookRun.run`
    (run every cell, restarting the kernel without the cells that killed it), :func:`grade_exercises`,
    :func:`record_manual` (nbgrader's manually graded cells: reported as "manual", not scored).
    ``sandbox=False`` runs the kernel without bubblewrap (the row says so); ``limits`` is a
    :class:`sandbox.Limits` (default: ``Limits()``). With ``assignment``, a notebook of another
    assignment is rejected as such. With ``prewarm_next``, the kernel of the next submission graded in
    this process is launched now (:class:`KernelPool`); a kernel launched so for this one is used.
    """
    from .sandbox import Limits

    t0 = time.monotonic()
    p = Path(path)
    res = SubmissionResult(path=str(path), student=student_name(p, Path(root) if root else None), seed=seed)
    run = None
    try:
        matched = read_and_match(res, p, sources, assignment)
        if matched is not None:
            nb, source = matched
            cells = restore_locked_cells(res, nb, source)
            kernel_limits = (limits or Limits()) if sandbox else None
            pool = _pool()
            warm = pool.take(kernel_limits)
            if prewarm_next:
                pool.prelaunch(kernel_limits)
            run = NotebookRun(res, cells, limits=kernel_limits, cell_timeout=cell_timeout,
                              deadline=time.monotonic() + total_timeout, warm=warm)
            run.run()
            grade_exercises(res, run, source, seed=seed, exercise_timeout=exercise_timeout)
            record_manual(res, nb, source)
    except Exception as e:  # the grader's own failure: a row, and exit code 1
        res.status = "grader_error"
        res.reason = f"internal grader error: {type(e).__name__}: {e}"
        res.notes.append(traceback.format_exc(limit=5))
    finally:
        if run is not None:
            run.close()
    if not sandbox:
        res.notes.insert(0, UNSANDBOXED_NOTE)
    res.notes = list(dict.fromkeys(res.notes))
    res.seconds = round(time.monotonic() - t0, 2)
    return res.to_dict()


def read_and_match(res: SubmissionResult, p: Path, sources: list[str],
                   assignment: str | None = None) -> tuple[dict, Source] | None:
    """Step 1: read the notebook and find its solutions notebook; None (row rejected, with the reason) if
    either is impossible."""
    srcs = [load_source(s) for s in sources]
    try:
        nb = read_notebook(p)
        source = match_source(nb, p, srcs, assignment)
    except SubmissionError as e:
        res.status, res.reason = "rejected", str(e)
        return None
    res.assignment = source.assignment
    return nb, source


def restore_locked_cells(res: SubmissionResult, nb: dict, source: Source) -> list[str]:
    """Step 2: the code cells to run, with the locked cells restored from the source (notes say which)."""
    cells, notes = _cells_to_run(nb, source)
    res.notes.extend(notes)
    return cells


class NotebookRun:
    """Step 3: the notebook's cells run in a fresh kernel (sandboxed when ``limits`` is given); a cell that
    kills the kernel or cannot be interrupted is skipped and the notebook replayed without it."""

    MAX_ATTEMPTS = 4

    def __init__(self, res: SubmissionResult, cells: list[str], *, limits, cell_timeout: float, deadline: float,
                 warm: "tuple[Path, Kernel] | None" = None):
        self.res, self.cells, self.limits = res, cells, limits
        self.cell_timeout, self.deadline = cell_timeout, deadline
        self.bad: set[int] = set()        # cells that killed the kernel or could not be interrupted
        # a kernel launched ahead of time for this submission (KernelPool): its own fresh directory and sandbox
        self.tmp, self._warm = warm if warm is not None else (Path(tempfile.mkdtemp(prefix="bncourse-grade-")), None)
        self.kernel: Kernel | None = None

    def _new_kernel(self) -> "Kernel":
        k, self._warm = self._warm, None
        if k is not None:
            k.deadline = self.deadline
            try:
                k.connect()
                return k
            except Exception:     # it died before it was needed: start another
                k.stop()
        k = Kernel(self.tmp, self.deadline, self.limits)
        k.start()
        return k

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline - 1

    def run(self) -> Kernel:
        """Run the notebook (again) in a new kernel; returns that kernel, ready for the exercises."""
        self.close_kernel()
        notes = self.res.notes
        attempts = 0
        while True:
            attempts += 1
            k = self.kernel = self._new_kernel()
            restart = False
            for i, src in enumerate(self.cells):
                if i in self.bad or not src.strip():
                    continue
                status, detail = k.run(src, self.cell_timeout)
                if status == "error" and attempts == 1 and i:
                    notes.append(f"code cell {i} raised {detail.splitlines()[0][:400] if detail else 'an error'}")
                elif status == "timeout":
                    notes.append(f"code cell {i} was stopped by the time limit ({detail}): infinite loop?")
                    self.bad.add(i)     # do not wait for it again when the notebook is replayed
                    if self.out_of_time():
                        notes.append("the total time limit was reached")
                        return k
                    if not k.responsive():
                        restart = True
                        break
                elif status == "dead":
                    notes.append(f"code cell {i} killed the kernel (sys.exit/os._exit/crash/a sandbox limit); "
                                 f"it is skipped and the notebook replayed without it")
                    self.bad.add(i)
                    restart = True
                    break
            if not restart or attempts >= self.MAX_ATTEMPTS or self.out_of_time():
                return k
            self.close_kernel()

    def close_kernel(self) -> None:
        if self.kernel is not None:
            self.kernel.stop()
            self.kernel = None

    def close(self) -> None:
        self.close_kernel()
        if self._warm is not None:
            self._warm.stop()
            self._warm = None
        shutil.rmtree(self.tmp, ignore_errors=True)


class KernelPool:
    """One kernel launched ahead of time per grading process, for the next submission.

    While a submission is graded, the kernel of the next one starts and imports ``PRELOAD_MODULES`` (about
    half of a small submission's time), so that work overlaps with grading instead of following it. A
    kernel from the pool is used by exactly one submission and stopped after it: every submission still
    gets a fresh kernel in a fresh sandbox with its own directory, launched before any student code exists.
    """

    def __init__(self) -> None:
        self.spare: tuple[Path, Kernel, Any] | None = None

    def take(self, limits) -> tuple[Path, Kernel] | None:
        """The spare kernel (and its directory) if it was launched with ``limits``, else None."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        tmp, kernel, spare_limits = spare
        if spare_limits != limits:
            kernel.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        return tmp, kernel

    def prelaunch(self, limits) -> None:
        """Launch the kernel of the next submission now (returns at once)."""
        if self.spare is not None:
            return
        tmp = Path(tempfile.mkdtemp(prefix="bncourse-grade-"))
        kernel = Kernel(tmp, math.inf, limits)
        try:
            kernel.launch()
        except Exception:
            kernel.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            return
        self.spare = (tmp, kernel, limits)

    def close(self) -> None:
        if self.spare is not None:
            tmp, kernel, _ = self.spare
            self.spare = None
            kernel.stop()
            shutil.rmtree(tmp, ignore_errors=True)


_POOL = KernelPool()
_POOL_FINALIZER = None


def _pool() -> KernelPool:
    """This process's pool; its spare kernel is stopped when the process exits (also a pool worker's)."""
    global _POOL_FINALIZER
    if _POOL_FINALIZER is None:
        import multiprocessing.util

        _POOL_FINALIZER = multiprocessing.util.Finalize(_POOL, _POOL.close, exitpriority=10)
    return _POOL


def grade_exercises(res: SubmissionResult, run: NotebookRun, source: Source, *, seed: int,
                    exercise_timeout: float) -> None:
    """Step 4: each exercise on fresh inputs in the kernel, verified here; full points or none."""
    for spec in source.exercises:
        if run.out_of_time() or run.kernel is None:
            outcome, reason = "failed", "not graded: the total time limit was reached"
        else:
            outcome, reason = _grade_exercise(run.kernel, spec, seed, exercise_timeout)
            if outcome in ("dead", "hung"):
                run.run()
        passed = outcome == "passed"
        res.exercises.append(ExerciseResult(spec.name, spec.points if passed else 0.0, spec.points,
                                            "passed" if passed else "failed", reason))


MANUAL_ANSWER_CHARS = 2000


def record_manual(res: SubmissionResult, nb: dict, source: Source) -> None:
    """Step 5: a row entry "manual" for each manually graded cell (a written answer or a task), with the
    student's text for the person who grades it; not in the auto-graded totals."""
    by_id = {c["nbgrader"].get("grade_id"): c for c in nb["cells"] if c["nbgrader"].get("grade_id")}
    for m in source.manual:
        cell = by_id.get(m.grade_id)
        text = (cell["source"].strip() if cell is not None else "")
        if cell is None:
            reason = "to grade by hand: the cell is missing from the notebook"
        elif m.kind == "task":
            reason = "to grade by hand (a task: see the cells after it)"
        elif not text or text in ("YOUR ANSWER HERE", "# YOUR CODE HERE\nraise NotImplementedError()"):
            reason = "to grade by hand: no answer written"
        else:
            cut = text[:MANUAL_ANSWER_CHARS] + (" [...]" if len(text) > MANUAL_ANSWER_CHARS else "")
            reason = f"to grade by hand; the answer: {cut}"
        res.exercises.append(ExerciseResult(m.grade_id, 0.0, m.points, "manual", reason))


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
    """Grade submissions in parallel (a process per job); results in the order of ``paths``.

    Each process launches the kernel of its next submission while it grades the current one
    (:class:`KernelPool`; ``prewarm=False`` turns that off)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    results: dict[int, SubmissionResult] = {}
    bar = tqdm(total=len(paths), desc="grading", unit="notebook", disable=not progress, file=sys.stderr)
    warm = options.pop("prewarm", True)
    kwargs = dict(seed=seed, root=str(root) if root else None, **options)
    if jobs <= 1:
        try:
            for i, p in enumerate(paths):
                results[i] = SubmissionResult.from_dict(grade_submission(
                    str(p), sources, prewarm_next=warm and i + 1 < len(paths), **kwargs))
                bar.update()
        finally:
            _pool().close()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(grade_submission, str(p), sources, prewarm_next=warm and i + jobs < len(paths),
                                   **kwargs): i for i, p in enumerate(paths)}
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
