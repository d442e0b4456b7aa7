"""Headless Chromium for the tests: Debian's ``chromium`` driven by the Python ``playwright`` package.

No browser is ever downloaded: playwright starts the system's binary through ``executable_path``. The machine the
suite runs on (CI, a student's laptop) may have no network, so the flags below switch off everything Chromium
would fetch on its own (component updates, sync, field trials, QUIC probes).

    from browser import artifact, chromium_page, require_browser   # tests/ is on sys.path under pytest

    @pytest.fixture(autouse=True)
    def _needs_browser():
        require_browser()           # skips with the reason (or fails, with BNCOURSE_REQUIRE_BROWSER=1)

    with chromium_page(viewport=(1400, 900)) as page:
        page.goto(url)
        page.screenshot(path=artifact("x.png"))

``skip_reason()`` names what is missing (the chromium binary or the playwright package), so a skipped browser
test says why; install with ``apt install chromium`` and ``pip install -e .[test]``. With
``BNCOURSE_REQUIRE_BROWSER=1`` (for CI) ``require_browser()`` fails instead of skipping.
Set ``BNCOURSE_CHROMIUM=/path/to/chrome`` to use another Chromium build.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"          # gitignored; screenshots go in subfolders (browser/, site/)

# Debian's /usr/bin/chromium is a shell launcher that adds flags of its own and then execs the real binary in
# /usr/lib/chromium/; starting the real binary directly gives the test exactly the flags below and nothing else.
_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")

FLAGS = [
    "--disable-gpu",                         # no GPU on CI; software rendering is what the screenshots show
    "--disable-dev-shm-usage",               # containers often have a tiny /dev/shm
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",       # no field trials, safe-browsing lists, ... (there is no network)
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
]


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when none is installed."""
    override = os.environ.get("BNCOURSE_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (a sentence for ``pytest.skip``), or None when they can."""
    if chromium_path() is None:
        return ("no Chromium here: the browser tests drive Debian's chromium (sudo apt install chromium), "
                "or set BNCOURSE_CHROMIUM to a Chromium binary")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e .[test] (no browser download is needed)"
    return None


def require_browser() -> None:
    """Skip the calling test, saying why, when the browser cannot run here; fail instead when the environment sets
    ``BNCOURSE_REQUIRE_BROWSER=1`` (CI does, so that a missing chromium cannot turn the browser tests into skips)."""
    import pytest

    reason = skip_reason()
    if reason is None:
        return
    if os.environ.get("BNCOURSE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"BNCOURSE_REQUIRE_BROWSER=1, but {reason}", pytrace=False)
    pytest.skip(reason)


def launch_args() -> list[str]:
    """The command-line flags: FLAGS, plus --no-sandbox when running as root (Chromium refuses to start as root
    with its sandbox on; as a normal user the sandbox stays on)."""
    args = list(FLAGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1400, 900), timeout_ms: float = 60_000):
    """Yield a playwright ``Page`` in a fresh headless Chromium with an empty profile; everything is closed after.

    viewport: (width, height) in CSS pixels. timeout_ms: the default for every wait and action on the page (generous:
    CI machines have 2 cores and run notebooks next to this).
    """
    reason = skip_reason()
    if reason is not None:
        raise RuntimeError(reason)
    from playwright.sync_api import sync_playwright

    from playwright.sync_api import Error as PlaywrightError

    width, height = viewport
    with tempfile.TemporaryDirectory(prefix="bncourse-chromium-") as profile, sync_playwright() as pw:
        def launch(args):
            return pw.chromium.launch_persistent_context(
                profile,                              # a new, empty user-data-dir: nothing from an earlier visit
                executable_path=chromium_path(),
                headless=True,
                args=args,
                viewport={"width": width, "height": height},
                env={**os.environ, "HOME": profile},  # nothing written to the user's ~/.config or ~/.cache
                timeout=timeout_ms,
            )
        try:
            context = launch(launch_args())
        except PlaywrightError as error:
            # a normal user on a system without unprivileged user namespaces (some Ubuntu and container setups):
            # Chromium's sandbox cannot start; the pages the tests open are the course's own, on 127.0.0.1
            if "sandbox" not in str(error).lower() or "--no-sandbox" in launch_args():
                raise
            context = launch(launch_args() + ["--no-sandbox"])
        try:
            context.set_default_timeout(timeout_ms)
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()


def artifact(name: str, sub: str = "browser") -> Path:
    """Path for a screenshot: test-artifacts/<sub>/<name>, the folder created."""
    folder = ARTIFACTS / sub
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
