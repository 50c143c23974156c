"""``make chapter``: one chapter with the reader's values, through papermill, outside the tracked
files, failing with the chapter's own assertion message; progress bars reach the terminal.

The chapter is the tiny fixture tests/fixtures/01_tiny.md (a real chapter takes a minute).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "tests" / "fixtures" / "01_tiny.md"


def _make_chapter(args: str):
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "chapter", f"NB={CHAPTER.relative_to(ROOT)}", f"ARGS={args}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


def _status(*paths):
    res = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *paths],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return res.stdout


def _ignored(path: Path) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT).returncode == 0


def test_make_chapter_with_changed_parameters_leaves_tracked_files_alone():
    source, status = CHAPTER.read_bytes(), _status("tests/fixtures")
    res = _make_chapter("-p n 6 -p label parts -y 'sizes: [6, 4]'")
    assert res.returncode == 0, res.stdout + res.stderr
    ipynb = Path(re.search(r"executed notebook: (\S+)", res.stdout).group(1))
    html = Path(re.search(r"HTML rendering: +(\S+)", res.stdout).group(1))
    try:
        assert ipynb.exists() and html.exists() and html.read_text().lstrip().startswith("<!DOCTYPE html>")
        assert _ignored(ipynb) and _ignored(html), "the outputs must lie outside the tracked files"
        assert CHAPTER.read_bytes() == source and _status("tests/fixtures") == status
        # the values reached the chapter: its printed line, streamed and stored
        assert "parts: 6, total 7.50, sizes [6, 4]" in res.stdout
        nb = nbformat.read(ipynb, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "n = 6" in injected[0].source
        # the progress bar went to the terminal; the stored copy keeps only its final state
        assert "summing" in res.stderr and "6/6" in res.stderr
        stderr = [o["text"] for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
        assert stderr and all("\r" not in t for t in stderr) and "6/6" in stderr[0]
    finally:
        shutil.rmtree(ipynb.parent, ignore_errors=True)


def test_make_chapter_fails_with_the_chapters_assertion_message():
    res = _make_chapter("-p n 12 -y 'sizes: [12, 4]'")
    assert res.returncode != 0
    assert "AssertionError: the claim needs n < limit; got n=12, limit=10" in res.stderr
    folder = Path(re.search(r"executed notebook: (\S+)", res.stdout).group(1)).parent
    shutil.rmtree(folder, ignore_errors=True)


def test_make_chapter_refuses_an_unknown_parameter_before_running():
    res = _make_chapter("-p nn 5")
    assert res.returncode != 0
    assert "unknown parameter 'nn'" in res.stderr and "it has: n, limit" in res.stderr
    assert "executed notebook" not in res.stdout


def test_make_chapter_without_nb_prints_usage():
    res = subprocess.run(["make", "-s", "chapter"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "usage: make chapter NB=06" in res.stderr
