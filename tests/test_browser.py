"""The course as a student meets it: JupyterLab 4 from the project's environment, driven in headless Chromium.

Each test starts from what a student does (open a notebook, Run > Run All Cells, type an answer in a cell) and
checks what the student then sees on the page, read from JupyterLab's DOM: the prompts ``[n]:``, the kernel status,
the rendered outputs. Notebooks are run from a temporary copy, so the repository's files are never modified.
Screenshots of every stage go to ``test-artifacts/browser/``.

Run only these: ``.venv/bin/python -m pytest -m browser tests/test_browser.py``. They skip, saying why, where Debian's
chromium or the playwright package is missing (see ``tests/browser.py``), or fail with BNCOURSE_REQUIRE_BROWSER=1.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from browser import ROOT, artifact, chromium_page, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(autouse=True, scope="module")
def _needs_browser():
    require_browser()               # skips, saying what is missing (fails instead with BNCOURSE_REQUIRE_BROWSER=1)

JUPYTER = ROOT / ".venv" / "bin" / "jupyter"
CHAPTER = "notebooks/04_train_vs_inference.ipynb"          # 15 s under nbval; trains with bncourse.train's bar
SOLUTIONS = "solutions/01_input_scaling_exercises.ipynb"     # a few seconds, no data download
EXERCISES = "exercises/01_input_scaling_exercises.ipynb"
START_HERE = "notebooks/00_start_here.ipynb"                # what `make course` opens

# Bounded but generous: CI has 2 cores and runs nbval on other notebooks next to this.
SERVER_START_S = 120
PAGE_LOAD_MS = 120_000
RUN_ALL_S = 300

VISIBLE_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
ERROR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'   # stderr and tracebacks


# ---------------------------------------------------------------------------------------------------------------
# JupyterLab, started and always stopped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on 127.0.0.1 with a random token, its state (workspaces, user settings, runtime files,
    config) in ``state``: nothing is read from or written to the user's ``~/.jupyter``. ``via_make``: started by
    the Makefile's ``course`` recipe itself (which opens notebooks/00_start_here.ipynb), in the folder ``root``."""

    def __init__(self, root: Path, state: Path, open_path: str | None = None, via_make: bool = False):
        self.root, self.state, self.open_path, self.via_make = root, state, open_path, via_make
        self.token = secrets.token_hex(24)
        self.port = _free_port()
        self.log = state / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def start(self) -> "Lab":
        options = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                   f"--LabApp.user_settings_dir={self.state / 'user-settings'}"]
        if self.via_make:
            # the real `make course` recipe, in the copy, with the project's environment (never reinstalled: -o)
            venv = ROOT / ".venv"
            cmd = ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-o", str(venv / ".bncourse-installed"),
                   "course", f"VENV={venv}", f"LAB_WORKSPACES={self.state / 'workspaces'}",
                   "LAB_ARGS=" + " ".join(options)]
        else:
            cmd = [str(JUPYTER), "lab", *options, f"--ServerApp.root_dir={self.root}",
                   f"--LabApp.workspaces_dir={self.state / 'workspaces'}"]
            if os.geteuid() == 0:
                cmd.append("--allow-root")
            if self.open_path:
                cmd.append(self.open_path)
        env = {**os.environ,
               "JUPYTER_CONFIG_DIR": str(self.state / "config"),
               "JUPYTER_DATA_DIR": str(self.state / "data"),
               "JUPYTER_RUNTIME_DIR": str(self.state / "runtime")}
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Shut the server and its kernels down; kill whatever is left (kernels run in sessions of their own)."""
        if self.proc is None:
            return
        try:
            import psutil
            family = [psutil.Process(self.proc.pid)] + psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:                                   # psutil missing, or the server already gone
            family = []
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)    # make and jupyter: the server shuts its kernels down
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for process in family:                              # kernels run in sessions of their own
            try:
                process.kill()
            except Exception:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no server log)"


def _copy_course(dest: Path) -> Path:
    """The notebooks a test opens, copied, in the repository's layout (relative links keep working)."""
    for rel in (CHAPTER, SOLUTIONS, EXERCISES, START_HERE):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    shutil.copy2(ROOT / "README.md", dest / "README.md")
    return dest


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    server = Lab(_copy_course(base / "course"), base / "state", open_path=START_HERE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------------
# What the page shows


NOTEBOOK_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const cells = Array.from(panel.querySelectorAll('.jp-Notebook .jp-Cell'));
  const code = cells.filter(c => c.classList.contains('jp-CodeCell'));
  const prompt = c => ((c.querySelector('.jp-InputArea-prompt') || {}).textContent || '').trim();
  const running = code.filter(c => prompt(c) === '[*]:');
  return {
    cells: cells.length,
    prompts: code.map(prompt),
    kernel: (panel.querySelector('.jp-Notebook-ExecutionIndicator')
             || document.querySelector('.jp-Notebook-ExecutionIndicator') || {dataset: {}}).dataset.status || null,
    errors: Array.from(panel.querySelectorAll('%s')).map(e => e.textContent.slice(0, 600)),
    stdout: Array.from(panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'))
               .map(e => e.textContent),
  };
}""" % ERROR_OUTPUT

PROGRESS_WIDGET = ".jp-OutputArea-output .jupyter-widgets.widget-hprogress"     # ipywidgets' (Float|Int)Progress

# Records, as it happens, every progress-bar widget put into the output of a cell that is running (prompt [*]:);
# a bar lives only while its loop runs (bncourse.train's closes with leave=False), too briefly for polling.
WATCH_PROGRESS = """() => {
  window.__bncourseProgress = [];
  const observer = new MutationObserver(() => {
    for (const bar of document.querySelectorAll('%s')) {
      const cell = bar.closest('.jp-CodeCell');
      const prompt = cell && cell.querySelector('.jp-InputArea-prompt');
      if (prompt && prompt.textContent.trim() === '[*]:' && !bar.dataset.bncourseSeen) {
        bar.dataset.bncourseSeen = '1';
        window.__bncourseProgress.push(Array.from(cell.parentNode.children).indexOf(cell));
      }
    }
  });
  observer.observe(document.body, {childList: true, subtree: true});
}""" % PROGRESS_WIDGET

POPUPS = """() => Array.from(document.querySelectorAll('.Toastify__toast, .jp-toast-message, .jp-Dialog'))
                   .map(e => e.className.split(' ')[0] + ': ' + e.textContent.slice(0, 200))"""

TABS = """() => Array.from(document.querySelectorAll('#jp-main-dock-panel .lm-TabBar-tab .lm-TabBar-tabLabel'))
                   .map(e => e.textContent)"""


def _state(page) -> dict:
    return page.evaluate(NOTEBOOK_STATE)


def _open_notebook(page, lab: Lab, rel: str, reset: bool = True) -> int:
    """Open ``rel`` as a student would (its /lab/tree URL), wait until every cell is on the page and the kernel is
    idle; return the number of cells. ``reset``: with JupyterLab's ``?reset``, so that tabs saved by an earlier test
    on the same server are not reopened."""
    n_cells = len(nbformat.read(ROOT / rel, as_version=4).cells)
    page.goto(lab.url(f"lab/tree/{rel}" + ("?reset" if reset else "")), timeout=PAGE_LOAD_MS)
    page.wait_for_function(f"(document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)') || document)"
                           f".querySelectorAll('.jp-Notebook .jp-Cell').length === {n_cells}", timeout=PAGE_LOAD_MS)
    page.wait_for_selector(VISIBLE_PANEL + ' .jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           timeout=PAGE_LOAD_MS)
    return n_cells


def _menu(page, menu: str, command: str) -> None:
    """Click a menu of the menu bar, then one of its items (by the command it runs)."""
    page.click(f'.lm-MenuBar-itemLabel:text-is("{menu}")')
    page.click(f'.lm-Menu-item[data-command="{command}"]')


def _run_all(page, *, expect_complete: bool, screenshot_running: str | None = None) -> dict:
    """Edit > Clear Outputs of All Cells, then Run > Run All Cells, and wait until the kernel is idle with no cell
    waiting. Clearing first makes every prompt ``[ ]:``, so the counts read after are this run's, not the stored
    ones. Returns the last state, plus ``progressCells``: the indices of the cells that showed a progress-bar
    widget while they ran."""
    _menu(page, "Edit", "editmenu:clear-all")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-CodeCell .jp-InputArea-prompt')).every(p => p.textContent.trim() === '[ ]:')")
    if screenshot_running:
        artifact(screenshot_running).unlink(missing_ok=True)          # none left from an earlier run
    page.evaluate(WATCH_PROGRESS)
    _menu(page, "Run", "runmenu:run-all")
    started = time.monotonic()
    while True:
        state = _state(page)
        if screenshot_running and page.evaluate("window.__bncourseProgress.length > 0"):
            try:                                             # best effort: the bar may be gone already
                page.locator(PROGRESS_WIDGET).first.scroll_into_view_if_needed(timeout=1000)
                page.screenshot(path=artifact(screenshot_running), timeout=5000)
            except Exception:
                pass
            screenshot_running = None
        waiting = any(p == "[*]:" for p in state["prompts"])
        started_any = any(p not in ("[ ]:", "") for p in state["prompts"])
        if state["kernel"] == "idle" and started_any and not waiting:
            break
        assert time.monotonic() - started < RUN_ALL_S, f"Run All did not finish in {RUN_ALL_S} s: {state['prompts']}"
        time.sleep(0.2)
    if expect_complete:
        counts = [p for p in state["prompts"] if p.startswith("[") and p[1:-2].isdigit()]
        assert len(counts) == len(state["prompts"]), f"cells not run: {state['prompts']}"
    state["progressCells"] = page.evaluate("window.__bncourseProgress")     # indices of cells that showed a bar
    return state


def _assert_opens_clean(page) -> None:
    """No news or update toast, no "Build recommended" (or any other) dialog."""
    assert page.evaluate(POPUPS) == [], "JupyterLab opened with a pop-up (see make setup's overrides.json)"
    assert page.locator("text=official Jupyter news").count() == 0
    assert page.locator("text=Build recommended").count() == 0


# ---------------------------------------------------------------------------------------------------------------
# The tests


def test_chapter_runs_all_with_no_error_and_a_progress_widget(lab):
    with chromium_page() as page:
        _open_notebook(page, lab, CHAPTER)
        page.screenshot(path=artifact("chapter-opened.png"))
        _assert_opens_clean(page)
        state = _run_all(page, expect_complete=True, screenshot_running="chapter-progress-widget.png")
        page.screenshot(path=artifact("chapter-after-run-all.png"))
    assert state["errors"] == [], f"error output in {CHAPTER}: {state['errors']}"
    # bncourse.train's bar is tqdm.auto: in JupyterLab a widget; a text bar would be stderr, failing the line above
    assert state["progressCells"], f"no progress-bar widget was shown while a training cell of {CHAPTER} ran"
    # and only in the cells whose stored outputs (nbconvert's run) hold a widget: the training cells
    with_bar = {i for i, c in enumerate(nbformat.read(ROOT / CHAPTER, as_version=4).cells) if c.cell_type == "code"
                and any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.outputs)}
    assert set(state["progressCells"]) <= with_bar, (state["progressCells"], sorted(with_bar))


def test_solutions_notebook_runs_all_and_every_check_passes(lab):
    nb = nbformat.read(ROOT / SOLUTIONS, as_version=4)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    with chromium_page() as page:
        _open_notebook(page, lab, SOLUTIONS)
        state = _run_all(page, expect_complete=True)
        page.screenshot(path=artifact("solutions-after-run-all.png"))
    assert state["errors"] == [], f"error output in {SOLUTIONS}: {state['errors']}"
    passed = [line for text in state["stdout"] for line in text.splitlines() if line.startswith("✓ ")]
    names = [re.search(r'check\("(\w+)"', c.source).group(1) for c in graded]     # check("ch1_zca", ...)
    assert [line.split(":")[0][2:] for line in passed] == names, (passed, names)
    assert all(line.endswith("passed") for line in passed), passed


def _answer_cell(rel: str) -> tuple[int, str, int]:
    """The first exercise: index of its answer cell in the handed-out notebook, the correct answer (the solutions
    notebook's cell without the SOLUTION markers), and the index of the graded cell after it."""
    exercise = nbformat.read(ROOT / rel, as_version=4)
    solution = nbformat.read(ROOT / SOLUTIONS, as_version=4)
    i = next(k for k, c in enumerate(exercise.cells) if c.metadata.get("nbgrader", {}).get("solution")
             and c.cell_type == "code")
    grade_id = exercise.cells[i].metadata["nbgrader"]["grade_id"]
    source = next(c.source for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    answer = "\n".join(line for line in source.splitlines() if "### BEGIN SOLUTION" not in line
                       and "### END SOLUTION" not in line)
    assert exercise.cells[i + 1].metadata["nbgrader"].get("grade"), "the graded cell follows the answer cell"
    return i, answer, i + 1


def test_exercise_stub_raises_then_a_typed_answer_passes_its_check(lab):
    answer_index, answer, check_index = _answer_cell(EXERCISES)
    with chromium_page() as page:
        _open_notebook(page, lab, EXERCISES)
        state = _run_all(page, expect_complete=False)
        page.screenshot(path=artifact("exercise-after-run-all.png"))
        cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
        check_cell = cells.nth(check_index)
        # as handed out, the first check stops the run with the stub's NotImplementedError, and only that
        assert len(state["errors"]) == 1, state["errors"]
        assert "NotImplementedError" in check_cell.locator(ERROR_OUTPUT).text_content()

        # the student clicks into the answer cell, selects everything, types the answer
        editor = cells.nth(answer_index).locator(".cm-content")
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(answer)
        typed = "\n".join(cells.nth(answer_index).locator(".cm-line").all_text_contents())
        assert typed.replace("\u00a0", " ").rstrip() == answer.rstrip(), "the editor holds other text than typed"
        page.keyboard.press("Shift+Enter")                  # run the answer cell, move to the check
        page.keyboard.press("Shift+Enter")                  # run the check
        check_cell.locator('.jp-OutputArea-output:has-text("✓ ")').wait_for(timeout=RUN_ALL_S * 1000)
        page.wait_for_selector(VISIBLE_PANEL + ' .jp-Notebook-ExecutionIndicator[data-status="idle"]',
                               timeout=PAGE_LOAD_MS)
        check_cell.scroll_into_view_if_needed()
        page.screenshot(path=artifact("exercise-answer-passes.png"))
        text = check_cell.locator(".jp-OutputArea").text_content()
        assert "✓ ch1_standardize:" in text and "passed" in text, text
        assert check_cell.locator(ERROR_OUTPUT).count() == 0


def _wait_saved(state: Path, paths: list[str], timeout_s: float = 60) -> None:
    """Wait until JupyterLab's saved workspace (written to disk a moment after each change) names every path."""
    deadline = time.monotonic() + timeout_s
    while True:
        saved = "".join(f.read_text(errors="replace") for f in (state / "workspaces").glob("*"))
        if all(f"notebook:{p}" in saved for p in paths):
            return
        assert time.monotonic() < deadline, f"the workspace does not list {paths} after {timeout_s} s: {saved[:500]}"
        time.sleep(0.25)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make, to start the course as `make course` does")
def test_make_course_opens_clean_with_no_stale_tabs(tmp_path):
    """A student's second `make course`: the first visit left tabs open in the saved workspace; the next
    `make course` (the real recipe, same state folders) opens 00_start_here alone, with no pop-up: no news or
    update toast (make setup's overrides.json), no "Build recommended"."""
    course = _copy_course(tmp_path / "course")
    first = Lab(course, tmp_path / "state", via_make=True).start()
    try:
        with chromium_page() as page:
            _open_notebook(page, first, START_HERE, reset=False)       # the URL make course opens
            _wait_saved(tmp_path / "state", [START_HERE])
            _open_notebook(page, first, SOLUTIONS, reset=False)        # another notebook: the first tab comes back
            page.wait_for_function(f"({TABS})().length === 2")
            _wait_saved(tmp_path / "state", [START_HERE, SOLUTIONS])
            tabs_first = page.evaluate(TABS)
    finally:
        first.stop()

    second = Lab(course, tmp_path / "state", via_make=True).start()
    try:
        with chromium_page() as page:
            _open_notebook(page, second, START_HERE, reset=False)
            page.wait_for_timeout(3000)                     # toasts and dialogs come a moment after the page
            page.screenshot(path=artifact("make-course-reopened.png"))
            tabs = page.evaluate(TABS)
            _assert_opens_clean(page)
    finally:
        second.stop()
    assert tabs == [Path(START_HERE).name], f"stale tabs restored: {tabs} (first visit: {tabs_first})"
