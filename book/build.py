"""Build the course website (`make site`): a static HTML book from the notebooks' STORED outputs.

Nothing is executed. The script
1. stages a source tree (default `_build/site-src/`): `book/_config.yml`, `book/_toc.yml`, the pages in `book/`
   with their `<!-- from README: NAME -->` markers replaced by the matching part of README.md (so the landing
   page's course map and the "how to run" page cannot drift from the README), a copy of every `notebooks/*.ipynb`
   and every handed-out `exercises/*.ipynb` (never `solutions/`);
2. runs Sphinx with Jupyter Book 1.x's configuration (MyST-NB, sphinx-book-theme, `execute_notebooks: off`)
   on that tree, fresh each time, into SRC/_build/html (MyST-NB writes the figures it extracts next to it);
3. fails (exit status 1) on any Sphinx warning, listing them: a missing image, a broken cross-reference, a page
   left out of the table of contents, ... are all warnings. A site with one of them is not shipped: it stays
   in SRC/_build/html for inspection, and only a clean build replaces the output folder (default `_build/site/`).

Offline: no extension that fetches anything at build time is loaded (intersphinx, thebe and the comment widgets
are removed from Jupyter Book's defaults; a build under `unshare -n`, with no network at all, is the same).
Math is typeset in the reader's browser by MathJax 3: bundled into the site when the `sphinx-mathjax-offline`
package is installed, otherwise loaded from its CDN (offline, the formulas then show as their LaTeX source).

Usage: python book/build.py [--out DIR] [--src DIR] [--repo DIR] [--quiet]
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Jupyter Book's default extensions that would reach the network (intersphinx fetches inventories at build
# time; thebe and the comment widgets load scripts in the browser) and that the course does not use.
DROPPED_EXTENSIONS = ("sphinx.ext.intersphinx", "sphinx_thebe", "sphinx_comments")
DROPPED_SETTINGS = ("intersphinx_mapping", "comments_config")
# Bundles MathJax 3.2.2 into the site's _static/mathjax/ (24 MB) and points the pages at it, so formulas render
# without a network; without it the pages load MathJax 3 from its CDN. (The distribution's name has hyphens.)
MATHJAX_OFFLINE = "sphinx-mathjax-offline"
# Links from a notebook to a README section become links to the site page that shows that section.
README_ANCHORS = {"the-course": "index.md#the-course", "two-commands": "how_to_run.md#two-commands"}
MARKER = re.compile(r"<!-- from README: ([a-z-]+) -->")


def local_mathjax() -> bool:
    """Whether MathJax is bundled into the site (sphinx-mathjax-offline installed) rather than loaded from a CDN."""
    return importlib.util.find_spec(MATHJAX_OFFLINE) is not None


class SiteError(Exception):
    """Something in the sources that would make a broken or misleading site; the message says what to fix."""


# ---------------------------------------------------------------------------------------------------------------
# Parts of the README


def readme_section(text: str, heading: str) -> str:
    """The body of the `## heading` section of README.md (up to the next `## `), stripped."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if match is None:
        raise SiteError(f"README.md has no '## {heading}' section, which the site shows; restore it or update "
                        f"book/build.py")
    return match.group(1).strip()


def readme_paragraph(text: str, start: str) -> str:
    """The README paragraph that begins with `start` (a bold lead like `**The exercises.**`), lead removed."""
    match = re.search(rf"^{re.escape(start)}(.*?)(?=\n\s*\n|\Z)", text, flags=re.M | re.S)
    if match is None:
        raise SiteError(f"README.md has no paragraph starting with {start!r}, which the site shows; restore it or "
                        f"update book/build.py")
    return match.group(1).strip()


def readme_intro(text: str) -> str:
    """The first paragraph under the README's title: what the course is."""
    match = re.match(r"# [^\n]*\n\s*\n(.*?)(?=\n\s*\n)", text, flags=re.S)
    if match is None:
        raise SiteError("README.md does not start with '# title', a blank line and a paragraph about the course")
    return match.group(1).strip()


def course_map(text: str, chapters: list[str], exercises: dict[str, str]) -> str:
    """The README's course table, each notebook name linked to its page and an exercises column added.

    Fails when the table and notebooks/ disagree (a chapter missing from the table, or a row naming no notebook),
    so the landing page and the README cannot drift apart.
    """
    section = readme_section(text, "The course")
    rows = [line for line in section.splitlines() if line.startswith("|")]
    if len(rows) < 2:
        raise SiteError("README.md's '## The course' section has no course table (| notebook | ... |)")
    header, rule, body = rows[0], rows[1], rows[2:]
    out = [header + " exercises |", rule + "---|"]
    named = []
    for row in body:
        match = re.match(r"\| `([^`]+)` \|", row)
        if match is None:
            raise SiteError(f"README course table row does not start with a `notebook` name: {row[:80]}")
        name = match.group(1)
        if name not in chapters:
            raise SiteError(f"README's course table names `{name}`, but there is no notebooks/{name}.ipynb")
        named.append(name)
        chapter_link = f"| [`{name}`](notebooks/{name}.ipynb) |"
        exercise = exercises.get(name)
        exercise_cell = f" [exercises](exercises/{exercise}.ipynb) |" if exercise else " |"
        out.append(chapter_link + row[match.end():] + exercise_cell)
    missing = [name for name in chapters if name not in named]
    if missing:
        raise SiteError(f"README's course table lacks the chapter(s) {missing}; add a row for each")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Staging


def rewrite_readme_links(markdown: str, where: str) -> str:
    """`[text](../README.md#section)` in a notebook becomes a link to the site page that shows that section."""
    def replace(match: re.Match) -> str:
        anchor = match.group(1)
        if anchor not in README_ANCHORS:
            raise SiteError(f"{where} links to README.md#{anchor}, a section the site does not show; link to one "
                            f"of {sorted(README_ANCHORS)} or add it to README_ANCHORS in book/build.py")
        return f"](../{README_ANCHORS[anchor]})"
    return re.sub(r"\]\(\.\./README\.md#([a-z0-9-]+)\)", replace, markdown)


def stage_chapter(source: Path, target: Path) -> int:
    """Copy a chapter, its stored progress-bar widgets replaced by a note. Returns the number of widgets dropped.

    The tqdm bars are ipywidgets: their stored text is the bar at 0 %, and drawing them would load widget
    JavaScript from a CDN, so the site shows, where a cell's first bar was, one italic line saying that bars run
    there in Jupyter (the printed results after them stay).
    """
    notebook = json.loads(source.read_text(encoding="utf-8"))
    dropped = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            cell["source"] = rewrite_readme_links(text, f"notebooks/{source.name}")
        outputs = cell.get("outputs", [])
        widgets = [i for i, output in enumerate(outputs) if WIDGET_MIME in output.get("data", {})]
        if widgets:
            bars = "a progress bar" if len(widgets) == 1 else f"{len(widgets)} progress bars"
            note = {"output_type": "display_data", "metadata": {},
                    "data": {"text/markdown": f"*({bars} here while the cell runs in Jupyter)*"}}
            cell["outputs"] = ([output for i, output in enumerate(outputs[:widgets[0]]) if i not in widgets]
                               + [note] + [output for i, output in enumerate(outputs) if i > widgets[0]
                                           and i not in widgets])
            dropped += len(widgets)
    notebook["metadata"].pop("widgets", None)
    target.write_text(json.dumps(notebook, ensure_ascii=False, indent=1), encoding="utf-8")
    return dropped


def stage_exercise(source: Path, target: Path) -> None:
    """Copy a handed-out exercise notebook, after checking that it is one (no solution, no outputs)."""
    text = source.read_text(encoding="utf-8")
    if "BEGIN SOLUTION" in text or "END SOLUTION" in text:
        raise SiteError(f"exercises/{source.name} contains a solution region; regenerate the handed-out "
                        f"notebooks with `make exercises` (the site must not show solutions)")
    notebook = json.loads(text)
    with_outputs = [i for i, cell in enumerate(notebook["cells"]) if cell.get("outputs")]
    if with_outputs:
        raise SiteError(f"exercises/{source.name} has stored outputs in cells {with_outputs}; handed-out "
                        f"notebooks have none: regenerate them with `make exercises`")
    shutil.copyfile(source, target)


def fill_markers(page: Path, parts: dict[str, str]) -> str:
    text = page.read_text(encoding="utf-8")

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in parts:
            raise SiteError(f"book/{page.name}: unknown marker '{match.group(0)}'; known: {sorted(parts)}")
        return parts[name]
    return MARKER.sub(replace, text)


def stage(src: Path, repo: Path = ROOT) -> dict:
    """Write the Sphinx source tree into `src` (emptied first) from the repository `repo` (its notebooks/,
    exercises/ and README.md; the pages and configuration always come from this book/). Returns counts."""
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    (src / "exercises").mkdir()

    chapters = sorted(path.stem for path in (repo / "notebooks").glob("*.ipynb"))
    exercise_files = sorted((repo / "exercises").glob("*_exercises.ipynb"))
    exercises = {path.stem.removesuffix("_exercises"): path.stem for path in exercise_files}
    orphans = [name for name in exercises if name not in chapters]
    if orphans:
        raise SiteError(f"exercise notebooks without a chapter: {orphans}")
    if not chapters:
        raise SiteError(f"no notebooks in {repo / 'notebooks'}")

    readme = (repo / "README.md").read_text(encoding="utf-8")
    parts = {
        "intro": readme_intro(readme),
        "course-map": course_map(readme, chapters, exercises),
        "two-commands": readme_section(readme, "Two commands"),
        "studying-alone": readme_paragraph(readme, "**Studying alone.**"),
        "the-exercises": readme_paragraph(readme, "**The exercises.**"),
    }
    for name in ("_config.yml", "_toc.yml"):
        shutil.copyfile(BOOK / name, src / name)
    for page in ("index.md", "how_to_run.md"):
        (src / page).write_text(fill_markers(BOOK / page, parts), encoding="utf-8")
    (src / "exercises" / "index.md").write_text(fill_markers(BOOK / "exercises_index.md", parts),
                                                encoding="utf-8")

    dropped = 0
    for name in chapters:
        dropped += stage_chapter(repo / "notebooks" / f"{name}.ipynb", src / "notebooks" / f"{name}.ipynb")
    for path in exercise_files:
        stage_exercise(path, src / "exercises" / path.name)
    return {"chapters": len(chapters), "exercises": len(exercise_files), "widgets_dropped": dropped}


# ---------------------------------------------------------------------------------------------------------------
# Sphinx


class _Tee(io.TextIOBase):
    """Sphinx's warning stream: shown as it comes, and kept to fail the build afterwards."""

    def __init__(self, stream):
        self.stream, self.lines = stream, []

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.lines.extend(line for line in text.splitlines() if line.strip())
        return len(text)


def sphinx_build(src: Path, out: Path, quiet: bool) -> list[str]:
    """Build HTML from `src` into `out` (emptied first) with Jupyter Book's configuration. Returns the warnings."""
    from jupyter_book.config import get_final_config
    from sphinx.application import Sphinx
    from sphinx.util.console import nocolor
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    if not sys.stderr.isatty():
        nocolor()

    config, _ = get_final_config(user_yaml=src / "_config.yml", sourcedir=src, raise_on_invalid=True,
                                 cli_config={"external_toc_path": "_toc.yml", "latex_individualpages": False})
    config["extensions"] = [name for name in config["extensions"] if name not in DROPPED_EXTENSIONS]
    if local_mathjax():
        config["extensions"].append(MATHJAX_OFFLINE)
    for key in DROPPED_SETTINGS:              # settings of the dropped extensions, which Sphinx would warn about
        config.pop(key, None)
    if out.exists():
        shutil.rmtree(out)
    warnings = _Tee(sys.stderr)
    with patch_docutils(str(src)), docutils_namespace():
        app = Sphinx(srcdir=str(src), confdir=None, outdir=str(out), doctreedir=str(src / "_build" / "doctrees"),
                     buildername="html", confoverrides=config, status=None if quiet else sys.stdout,
                     warning=warnings, freshenv=True)
        app.build(force_all=True)
    if app.statuscode:
        warnings.lines.append(f"Sphinx exited with status {app.statuscode}")
    # The pydata and book themes copy two of their Jinja macro files into _static as if they were pages; they
    # are never linked, and their unrendered `{{ pathto(...) }}` links would only look broken.
    for leftover in (out / "_static").glob("*webpack-macros.html"):
        leftover.unlink()
    return warnings.lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "site",
                        help="where the HTML goes (emptied first; default: _build/site)")
    parser.add_argument("--src", type=Path, default=None,
                        help="where the staged source tree goes (emptied first; default: OUT-src next to OUT)")
    parser.add_argument("--repo", type=Path, default=ROOT,
                        help="the repository whose notebooks/, exercises/ and README.md are built (default: this one)")
    parser.add_argument("--quiet", action="store_true", help="show only warnings and the summary")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    src = (args.src or out.with_name(out.name + "-src")).resolve()

    start = time.perf_counter()
    try:
        counts = stage(src, args.repo.resolve())
    except SiteError as exc:
        print(f"make site: {exc}", file=sys.stderr)
        return 1
    partial = src / "_build" / "html"
    warnings = sphinx_build(src, partial, args.quiet)
    seconds = time.perf_counter() - start
    if warnings:
        print(f"\nmake site: FAILED, {len(warnings)} Sphinx warning line(s); the site would have broken links, "
              f"missing images or pages outside the table of contents:", file=sys.stderr)
        for line in warnings:                    # paths in the staged tree mirror the repository's
            print(f"  {line.replace(str(src) + '/', '')}", file=sys.stderr)
        print(f"make site: {out} left as it was; the failed build is in {partial}", file=sys.stderr)
        return 1
    if out.exists():
        shutil.rmtree(out)
    shutil.move(partial, out)
    print(f"make site: built in {seconds:.1f} s (chapters: {counts['chapters']}, exercise notebooks: "
          f"{counts['exercises']}, stored progress-bar widgets left out: {counts['widgets_dropped']}): "
          f"{out / 'index.html'}")
    print("make site: formulas are drawn by " + ("MathJax bundled into the site (_static/mathjax), offline too"
          if local_mathjax() else "MathJax loaded from its CDN (offline they show as LaTeX; installing "
          f"{MATHJAX_OFFLINE} bundles it)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
