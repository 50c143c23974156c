"""The browser check catches what a reader would see broken, and the reading aids render.

A small book is built with the repository's own ``_config.yml`` (same extensions, MathJax,
theme and local extension as the real book) from ``tests/browser_fixture/``:

* ``notebooks/99_example``: a jupytext chapter (MyST ``.md`` -> executed ``.ipynb``, rendered
  with execution off) that uses every reading-aid convention of CONTRIBUTING.md -- a labelled
  equation cross-referenced with ``{eq}``, a code-cell figure with ``mystnb: figure:`` caption
  and name, ``{numref}``, summary admonitions quoting glued numbers, the link to the notation
  page, a ``landing-figure`` tag;
* ``book/notation``: the book's real notation page;
* ``broken``: written below, with one defect of every kind the check must report.

The build is strict (``-W -n``): the broken page is broken only in ways Sphinx cannot see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "browser_fixture"
sys.path.insert(0, str(ROOT / "tests"))
import browser_check  # noqa: E402

_NO_CHROMIUM = pytest.mark.skipif(
    not Path(browser_check.CHROMIUM).exists(),
    reason=f"{browser_check.CHROMIUM} missing: `make chromium` installs the Debian package (make test does)",
)

BROKEN_MARKDOWN = r"""# A deliberately broken page

A TeX error: $a^^b$; unbalanced braces, which MathJax never finds as math: $\frac{1}{2$

An undefined macro: $\notamacro{x} + 1$

<p>Dollars that were never parsed: $$x^2 + y^2$$</p>

<img src="missing.png" alt="an image that does not exist">

<a href="nowhere.html">a dead link</a> and
<a href="notebooks/99_example.html#no-such-anchor">a dead anchor</a>

<script>console.error("deliberate console error")</script>
<script src="https://example.invalid/tracker.js"></script>
"""


def _broken_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(BROKEN_MARKDOWN))
    cell = nbformat.v4.new_code_cell("1 / 0", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="ZeroDivisionError",
            evalue="division by zero",
            traceback=["ZeroDivisionError                         Traceback (most recent call last)",
                       "ZeroDivisionError: division by zero"],
        )
    ]
    nb.cells.append(cell)
    cell = nbformat.v4.new_code_cell("np.log(0.0)", execution_count=2)
    cell.outputs = [nbformat.v4.new_output(
        "stream", name="stderr", text="RuntimeWarning: divide by zero encountered in log\n")]
    nb.cells.append(cell)
    return nb


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the fixture book strictly and run the browser check on it."""
    mathjax = ROOT / "_vendor" / "mathjax" / "tex-chtml.js"
    assert mathjax.exists(), "MathJax is missing: run `make setup`"
    src = tmp_path_factory.mktemp("fixture_book")
    shutil.copy(ROOT / "_config.yml", src / "_config.yml")
    shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns("_figures", "__pycache__"))
    (src / "_vendor").symlink_to(ROOT / "_vendor")
    for item in FIXTURE.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, src / item.name)
    nbformat.write(_broken_notebook(), src / "broken.ipynb")
    out = src / "out"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter-book")), "build", "--quiet", str(src),
         "--path-output", str(out), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"fixture book failed to build strictly:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    site = out / "_build" / "html"
    shots = out / "_build" / "screenshots"
    report = browser_check.check_site(site, shots, log=lambda *_: None)
    return site, shots, report


def _failures(report, page):
    return [f for f in report.failures if f.page == page]


@_NO_CHROMIUM
def test_good_pages_pass(built):
    _, _, report = built
    bad = [str(f) for f in report.failures if f.page != "broken.html"]
    assert not bad, "the fixture's good pages failed the browser check:\n" + "\n".join(bad)


@_NO_CHROMIUM
def test_every_failure_of_the_broken_page_is_reported(built):
    _, _, report = built
    fails = _failures(report, "broken.html")
    text = "\n".join(str(f) for f in fails)
    expected = {
        "math": ["TeX error", "undefined macro", "not typeset", "raw TeX in text: ... were never parsed: $$x^2"],
        "image": ["missing.png"],
        "link": ["nowhere.html"],
        "anchor": ["no-such-anchor"],
        "cell-error": ["ZeroDivisionError"],
        "stderr": ["divide by zero encountered in log"],
        "console": ["deliberate console error"],
        "external": ["example.invalid"],
    }
    for kind, needles in expected.items():
        details = [f.detail for f in fails if f.kind == kind]
        assert details, f"no [{kind}] failure reported for the broken page; got:\n{text}"
        for needle in needles:
            assert any(needle in d for d in details), f"[{kind}] '{needle}' not reported; got:\n{text}"


@_NO_CHROMIUM
def test_a_screenshot_per_page(built):
    site, shots, report = built
    pages = [p.page for p in report.pages if browser_check.redirect_target(site, p.page) is None]
    assert "broken.html" in pages and "notebooks/99_example.html" in pages
    for page in pages:
        png = shots / (page[: -len(".html")] + ".png")
        assert png.exists() and png.stat().st_size > 10_000, f"no full-page screenshot for {page}"


@_NO_CHROMIUM
def test_reading_aids_render(built):
    """The conventions of CONTRIBUTING.md produce numbered, captioned, cross-referenced output."""
    site, _, _ = built
    html = (site / "notebooks" / "99_example.html").read_text(encoding="utf8")
    # the code-cell figure: a numbered figure with the caption naming the paper's figure
    assert 'id="fig-example-spectrum"' in html
    assert "Fig. 1" in html and "reproduces seed 002 Fig. 1, left" in html
    # the labelled equation has a number and an anchor; {eq} links to it
    assert 'id="equation-eq-example-theta"' in html
    assert 'href="#equation-eq-example-theta"' in html
    # the summary boxes, with glued numbers (rank 5 of a 12 x 5 Gaussian matrix, P = 5)
    assert "What this chapter checks" in html and "What it found" in html
    text = " ".join(re.sub(r"<[^>]+>", "", html).split())
    assert "The rank is 5 for" in text
    # the notation link and the download of the jupytext twin
    assert 'href="../book/notation.html"' in html
    assert (site / "_sources" / "notebooks" / "99_example.md").exists()
    assert "download-md-button" in html
    # cross-document references from the index page
    index = (site / "index.html").read_text(encoding="utf8")
    assert "notebooks/99_example.html#equation-eq-example-theta" in index
    assert "notebooks/99_example.html#fig-example-spectrum" in index
    # the landing figure was extracted from the tagged cell
    assert (site.parent.parent.parent / "book" / "_figures" / "99_example.png").exists()


def test_fixture_chapter_pair_in_sync():
    """The example chapter's .ipynb is its .md executed (refresh: jupytext --to ipynb, then
    jupyter nbconvert --execute --inplace, as `make notebooks` does for the book)."""
    import jupytext

    md = jupytext.read(FIXTURE / "notebooks" / "99_example.md")
    nb = nbformat.read(FIXTURE / "notebooks" / "99_example.ipynb", as_version=4)
    assert [c.source.strip() for c in md.cells] == [c.source.strip() for c in nb.cells]
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
