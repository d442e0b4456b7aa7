"""The course website (`make site`): built from the stored outputs into a temporary folder, then checked.

Plain Python reads every HTML page: each chapter and exercise notebook has its page, no solution reaches the site,
every internal `href`/`src` (and `#anchor`) resolves to a file of the site, every figure the notebooks stored is an
image on its page, the landing page links every chapter, the formulas are there as MathJax input, and no page loads
anything from outside but MathJax. Then headless Chromium opens the landing page and a chapter from a loopback HTTP
server (every request elsewhere blocked): every image decodes (naturalWidth > 0), the sidebar lists every chapter,
the formulas are typeset when MathJax is bundled, the search finds a chapter, and screenshots go to
`test-artifacts/site/`. The build itself is shown to refuse a missing image, a broken link, a README that lacks a
chapter and a solution in a handed-out notebook, on a one-chapter repository made here.
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from browser import artifact, chromium_page, skip_reason

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
EXERCISES = sorted(path.stem for path in (ROOT / "exercises").glob("*_exercises.ipynb"))
# the only thing a page may load from outside the site: MathJax, which draws the formulas in the reader's browser
ALLOWED_EXTERNAL_HOSTS = {"cdn.jsdelivr.net"}
BROWSER_CHAPTER = "01_input_scaling"          # the chapter opened in Chromium: ten figures, formulas, tables


class _Page(HTMLParser):
    """What the checks need from one HTML page: links, images, ids, math, and external resources."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []   # (tag, url) for every href/src
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.math = 0                            # elements MathJax typesets (class "math")
        self.text: list[str] = []
        self.pre: list[str] = []                 # the text of every <pre> block (code cells and outputs)
        self._in_pre = 0

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self._in_pre += 1
            self.pre.append("")
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append((tag, attrs[key]))
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if "math" in (attrs.get("class") or "").split():
            self.math += 1

    def handle_endtag(self, tag):
        if tag == "pre" and self._in_pre:
            self._in_pre -= 1

    def handle_data(self, data):
        self.text.append(data)
        if self._in_pre:
            self.pre[-1] += data

    def code_lines(self) -> set[str]:
        return {_squeeze(line).strip() for block in self.pre for line in block.splitlines()}


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _stored_pngs(notebook: Path) -> int:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built by `book/build.py --out` into a temporary folder (a user's `_build/` is left alone)."""
    pytest.importorskip("jupyter_book", reason="the site extra is not installed (pip install -e '.[site]')")
    out = tmp_path_factory.mktemp("site") / "site"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "book" / "build.py"), "--out", str(out), "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"book/build.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert "make site:" in result.stdout, result.stdout
    print(f"site built in {seconds:.1f} s")
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_every_chapter_and_exercise_has_a_page(site):
    assert len(CHAPTERS) >= 8 and len(EXERCISES) >= 7, (CHAPTERS, EXERCISES)
    expected = ([f"notebooks/{name}.html" for name in CHAPTERS] + [f"exercises/{name}.html" for name in EXERCISES]
                + ["index.html", "how_to_run.html", "exercises/index.html"])
    missing = [page for page in expected if not (site / page).is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    for name in CHAPTERS:                        # the page is the chapter: its title is the notebook's first heading
        first_heading = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
        title = "".join(first_heading["cells"][0]["source"]).splitlines()[0].lstrip("# ").strip()
        assert title in "".join(_parse(site / "notebooks" / f"{name}.html").text), (name, title)


def test_no_solution_reaches_the_site(site):
    assert not list(site.rglob("*solutions*")), "a solutions file was copied into the site"
    for page in _pages(site):
        text = page.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text, f"{page.relative_to(site)} shows a solution region"
    for name in EXERCISES:
        on_page = _parse(site / "exercises" / f"{name}.html").code_lines()
        handed_out = _code_lines(ROOT / "exercises" / f"{name}.ipynb")
        # control: every code line of the handed-out notebook is a line of code on its page
        missing = [line for line in handed_out if line not in on_page]
        assert not missing, f"{name}: code lines of the notebook not found on its page: {missing[:3]}"
        assert "raise NotImplementedError()" in on_page, name
        solution = _code_lines(ROOT / "solutions" / f"{name}.ipynb") - handed_out
        assert len(solution) >= 4, f"{name}: too few solution lines to check ({len(solution)})"
        shown = [line for line in solution if line in on_page]
        assert not shown, f"{name}: solution code on the exercise page: {shown[:3]}"


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _code_lines(notebook: Path) -> set[str]:
    """The distinctive lines of a notebook's code cells (whitespace squeezed, 20 characters or more), which
    includes every solution line that a student could not have guessed from the handed-out notebook."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    lines = ("".join(cell["source"]).splitlines() for cell in cells if cell["cell_type"] == "code")
    return {_squeeze(line).strip() for cell_lines in lines for line in cell_lines if len(line.strip()) >= 20}


def test_every_internal_link_resolves(site):
    broken, checked = [], 0
    for page in _pages(site):
        for tag, url in _parse(page).links:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith(("mailto:", "data:", "javascript:")):
                continue
            checked += 1
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site.resolve() not in target.resolve().parents:
                broken.append(f"{page.relative_to(site)}: <{tag}> {url}")
                continue
            if parts.fragment and target.suffix == ".html" and parts.fragment not in _parse(target).ids:
                broken.append(f"{page.relative_to(site)}: <{tag}> {url} (no id {parts.fragment!r})")
    assert checked > 1000, f"only {checked} internal links found: is the parser reading the pages?"
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])


def test_every_stored_figure_is_an_image_on_its_page(site):
    total = 0
    for name in CHAPTERS:
        page = site / "notebooks" / f"{name}.html"
        images = _parse(page).images
        expected = _stored_pngs(ROOT / "notebooks" / f"{name}.ipynb")
        assert len(images) == expected, f"{name}: {len(images)} <img> on the page, {expected} PNGs stored"
        for src in images:
            path = (page.parent / unquote(urlsplit(src).path)).resolve()
            assert path.is_file() and path.stat().st_size > 1000, f"{name}: image {src} missing or empty"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name}: {src} is not a PNG"
        total += expected
    assert total >= 20, f"only {total} figures in all chapters"


def test_progress_bars_are_a_note_where_they_ran(site):
    """The stored tqdm widgets (a bar at 0 %, and CDN JavaScript to draw it) become one note per cell."""
    notes = 0
    for name in CHAPTERS:
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
        with_bars = sum(any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
                            for output in cell.get("outputs", [])) for cell in cells)
        text = re.sub(r"\s+", " ", "".join(_parse(site / "notebooks" / f"{name}.html").text))
        assert text.count("here while the cell runs in Jupyter)") == with_bars, name
        notes += with_bars
    assert notes >= 10, notes


def test_landing_page_links_every_chapter_and_exercise_notebook(site):
    links = {urlsplit(url).path for tag, url in _parse(site / "index.html").links if tag == "a"}
    for name in CHAPTERS:
        assert f"notebooks/{name}.html" in links, f"the landing page does not link chapter {name}"
    for name in EXERCISES:
        assert f"exercises/{name}.html" in links, f"the landing page does not link {name}"
    text = re.sub(r"\s+", " ", "".join(_parse(site / "index.html").text))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| (.{40})", readme, flags=re.M)     # the README's course map
    assert len(rows) == len(CHAPTERS)
    for name, teaches in rows:                   # the course map is the README's, row by row
        assert re.sub(r"\s+", " ", teaches.replace("`", ""))[:30] in text, (name, teaches)
    how_to_run = "".join(_parse(site / "how_to_run.html").text)
    for command in ("make course", "make test", "bncourse get-data fashion-mnist"):
        assert command in how_to_run, command


def test_formulas_reach_mathjax(site):
    """Math is written for MathJax (typeset in the browser); the LaTeX must be on the page, in math elements."""
    for name in CHAPTERS:
        markdown = "".join("".join(cell["source"]) for cell in
                           json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
                           if cell["cell_type"] == "markdown")
        if "$" not in markdown:
            continue
        page = _parse(site / "notebooks" / f"{name}.html")
        assert page.math > 0, f"{name}: formulas in the notebook, no math element on the page"
        assert "mathjax" in (site / "notebooks" / f"{name}.html").read_text(encoding="utf-8").lower()
    html = (site / "notebooks" / "03_batchnorm_from_scratch.html").read_text(encoding="utf-8")
    assert r"\hat" in html or r"\frac" in html, "chapter 3's LaTeX is missing from its page"


def test_pages_load_nothing_from_outside_but_mathjax(site):
    external = set()
    for page in _pages(site):
        for tag, url in _parse(page).links:
            parts = urlsplit(url)
            if tag != "a" and parts.netloc:        # a script, stylesheet, image, font, frame: fetched on load
                external.add((tag, parts.netloc))
    hosts = {host for tag, host in external}
    assert hosts <= ALLOWED_EXTERNAL_HOSTS, f"pages load resources from {sorted(external)}"
    for page in _pages(site):                     # the stored progress bars are left out, and with them the widgets
        assert "widget-view+json" not in page.read_text(encoding="utf-8"), page.relative_to(site)


# ---------------------------------------------------------------------------------------------------------------
# The build refuses a broken site: planted faults in a one-chapter repository

_PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg=="
_README = """# tiny course

A one-chapter course that exists only in this test.

## Two commands

`make course` and `make test`.

## The course

| notebook | what it teaches | runs in |
|---|---|---|
| `00_start_here` | one figure | 1 s |

**Studying alone.** Read it.

**The exercises.** One of them.
"""


def _notebook(cells: list[dict]) -> str:
    return json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}},
                       "nbformat": 4, "nbformat_minor": 5})


def _tiny_repo(root: Path, chapter_markdown: str, readme: str = _README, exercise_code: str = "raise "
               "NotImplementedError()") -> Path:
    """A repository with one chapter (a markdown cell and a stored figure) and its exercise notebook."""
    (root / "notebooks").mkdir(parents=True)
    (root / "exercises").mkdir()
    (root / "README.md").write_text(readme, encoding="utf-8")
    figure = {"output_type": "display_data", "metadata": {},
              "data": {"image/png": _PIXEL, "text/plain": "<Figure size 1x1 with 0 Axes>"}}
    (root / "notebooks" / "00_start_here.ipynb").write_text(_notebook([
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": chapter_markdown},
        {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": 1, "source": "plot()",
         "outputs": [figure]}]), encoding="utf-8")
    (root / "exercises" / "00_start_here_exercises.ipynb").write_text(_notebook([
        {"cell_type": "markdown", "id": "c", "metadata": {}, "source": "# Tiny exercises"},
        {"cell_type": "code", "id": "d", "metadata": {}, "execution_count": None, "source": exercise_code,
         "outputs": []}]), encoding="utf-8")
    return root


def _build(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "book" / "build.py"), "--repo", str(repo),
                           "--out", str(tmp_path / "site"), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_build_fails_on_a_missing_image_and_a_broken_link(tmp_path):
    pytest.importorskip("jupyter_book", reason="the site extra is not installed (pip install -e '.[site]')")
    repo = _tiny_repo(tmp_path / "repo", "# Chapter 1 — tiny\n\n![the loss](loss_curve.png)\n\n"
                      "Next: [chapter 2](02_missing_chapter.ipynb).")
    result = _build(repo, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "make site: FAILED, 2 Sphinx warning" in result.stderr, result.stderr   # the two faults, nothing else
    assert "loss_curve.png" in result.stderr, result.stderr        # each planted fault is named
    assert "02_missing_chapter" in result.stderr, result.stderr
    assert not (tmp_path / "site").exists(), "the failed build was put where a good site goes"


@pytest.mark.parametrize("fault, message", [
    ("readme-row", "README's course table lacks the chapter(s) ['00_start_here']"),
    ("readme-section", "README.md has no '## Two commands' section"),
    ("solution", "contains a solution region"),
])
def test_build_refuses_sources_that_would_mislead(tmp_path, fault, message):
    readme, exercise = _README, "raise NotImplementedError()"
    if fault == "readme-row":
        readme = readme.replace("| `00_start_here` | one figure | 1 s |\n", "")
    elif fault == "readme-section":
        readme = readme.replace("## Two commands", "## Three commands")
    else:
        exercise = "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"
    repo = _tiny_repo(tmp_path / "repo", "# Chapter 1 — tiny", readme=readme, exercise_code=exercise)
    result = _build(repo, tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "site").exists(), "a site was written from sources the build refused"


# ---------------------------------------------------------------------------------------------------------------
# In the browser


@pytest.fixture(scope="module")
def server(site):
    """The site over HTTP on a free loopback port (what a reader's browser sees from a web server)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser_page():
    """A page in headless Debian chromium (tests/browser.py: playwright, no download, fresh profile)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with chromium_page(viewport=(1300, 900)) as page:
        yield page


def _open(page, url: str) -> list[str]:
    """Open `url`, blocking every request that leaves the loopback server; returns the blocked URLs."""
    blocked = []

    def route(request_route):
        if urlsplit(request_route.request.url).hostname == "127.0.0.1":
            request_route.continue_()
        else:
            blocked.append(request_route.request.url)
            request_route.abort()
    page.unroute("**/*")
    page.route("**/*", route)
    page.goto(url, wait_until="load")
    page.wait_for_function("Array.from(document.images).every(image => image.complete)", timeout=30_000)
    return blocked


def _images(page) -> list[dict]:
    return page.evaluate("Array.from(document.images).map(image => "
                         "({src: image.getAttribute('src'), width: image.naturalWidth}))")


def test_landing_page_in_chromium(server, browser_page):
    page = browser_page
    blocked = _open(page, f"{server}/index.html")
    assert {urlsplit(url).hostname for url in blocked} <= ALLOWED_EXTERNAL_HOSTS, blocked
    assert all(image["width"] > 0 for image in _images(page)), _images(page)
    sidebar = page.eval_on_selector_all("nav.bd-docs-nav a", "links => links.map(link => link.href)")
    for name in CHAPTERS + EXERCISES:
        assert any(href.endswith(f"/{name}.html") for href in sidebar), f"{name} is not in the sidebar"
    table_links = page.eval_on_selector_all("article table a", "links => links.map(link => link.href)")
    assert sum(href.endswith(".html") for href in table_links) == len(CHAPTERS) + len(EXERCISES)
    page.screenshot(path=str(artifact("landing.png", sub="site")))


def _mathjax_is_bundled(site: Path) -> bool:
    """True when the site carries its own MathJax (sphinx-mathjax-offline installed), False when it uses the CDN."""
    sources = [url for tag, url in _parse(site / "notebooks" / f"{BROWSER_CHAPTER}.html").links
               if tag == "script" and "mathjax" in url.lower()]
    assert len(sources) == 1, sources
    return not urlsplit(sources[0]).netloc


def test_chapter_in_chromium(site, server, browser_page):
    page = browser_page
    blocked = _open(page, f"{server}/notebooks/{BROWSER_CHAPTER}.html")
    if _mathjax_is_bundled(site):                # nothing at all from outside, and the formulas are typeset
        assert not blocked, blocked
        page.wait_for_function("document.querySelectorAll('mjx-container').length > 0", timeout=30_000)
        typeset = page.evaluate("document.querySelectorAll('mjx-container').length")
        assert typeset >= _parse(site / "notebooks" / f"{BROWSER_CHAPTER}.html").math
    else:                                        # the formulas need MathJax from its CDN, blocked here
        assert {urlsplit(url).hostname for url in blocked} <= ALLOWED_EXTERNAL_HOSTS, blocked
    images = _images(page)
    assert len(images) == _stored_pngs(ROOT / "notebooks" / f"{BROWSER_CHAPTER}.ipynb") > 0
    assert all(image["width"] > 0 for image in images), [image for image in images if not image["width"]]
    page.screenshot(path=str(artifact("chapter.png", sub="site")))
    page.locator("article img").first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifact("chapter-figure.png", sub="site")))


def test_search_works_offline_in_chromium(server, browser_page):
    """The sidebar's search runs in the page on the site's own index: a term of chapter 4 finds chapter 4."""
    page = browser_page
    blocked = _open(page, f"{server}/search.html?q=Bessel")
    assert {urlsplit(url).hostname for url in blocked} <= ALLOWED_EXTERNAL_HOSTS, blocked
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    found = page.eval_on_selector_all("#search-results ul.search li a", "links => links.map(link => link.href)")
    assert any(urlsplit(href).path.endswith("/notebooks/04_train_vs_inference.html") for href in found), found
