"""``make variants`` (tools/variants.py): validation of the variants files, and the runner on a
tiny fake chapter (tests/fixtures/01_tiny.md) with a passing variant, a failing variant and a
second chapter whose variants file names a parameter that does not exist; the chains of
``make test`` (nbval first, then the variants, sharing compiled programs) on two tiny JAX chapters.

The declared variants of the real chapters are validated here too (no execution: the runs are
the ``make variants`` stage of ``make test``), so a typo in a variants file fails in seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT))

from tools import chapters, variants  # noqa: E402


@pytest.fixture()
def tiny(tmp_path):
    """A folder holding the tiny chapter 01_tiny.md (no variants file yet)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(FIXTURES / "01_tiny.md", folder / "01_tiny.md")
    return folder


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _errors(path: Path) -> str:
    with pytest.raises(chapters.ChapterError) as err:
        chapters.load_variants(path)
    return str(err.value)


# --------------------------------------------------------------------------- the parameters cell


def test_parameters_cell_is_read_with_comments_and_dependencies():
    params = chapters.read_parameters(FIXTURES / "01_tiny.md")
    assert list(params) == ["n", "limit", "rate", "label", "sizes"]
    assert params["n"].value == 3 and params["n"].comment == "how many terms"
    assert params["n"].section == "the claim"
    assert params["label"].value == "terms"
    assert not params["sizes"].literal and params["sizes"].depends_on == ("n",)


def test_tuple_assignments_and_non_parameters():
    params = chapters.parse_parameters("import numpy as np\na, b = 1, (2, 3)  # two\nc = np.pi\nd: int = 4\n")
    assert {k: p.value for k, p in params.items() if p.literal} == {"a": 1, "b": (2, 3), "d": 4}
    assert params["a"].comment == params["b"].comment == "two"
    assert not params["c"].literal and params["c"].depends_on == ()


# --------------------------------------------------------------------------- validation


def test_the_fixture_variants_file_is_valid():
    spec = chapters.load_variants(FIXTURES / "01_tiny.variants.yml")
    assert [v.name for v in spec.variants] == ["n5", "too-many"]
    assert spec.regime == "The claim holds while n < limit."


def test_unknown_parameter_is_an_error_naming_file_variant_and_key(tiny):
    path = _write(tiny, "01_tiny.variants.yml", """\
        regime: n below limit.
        variants:
          - {name: a, why: typo, parameters: {nn: 5}}
          - {name: b, why: fine, parameters: {limit: 20}}
        """)
    message = _errors(path)
    assert "01_tiny.variants.yml" in message and "variant 'a'" in message and "'nn'" in message
    assert "variant 'b'" not in message


def test_yaml_exponent_without_a_dot_is_caught(tiny):
    # PyYAML reads 1e-3 as the string "1e-3"; the chapter would get a string for a float.
    path = _write(tiny, "01_tiny.variants.yml", """\
        regime: r.
        variants:
          - {name: a, why: w, parameters: {rate: 1e-3}}
          - {name: b, why: w, parameters: {rate: 1.0e-3}}
        """)
    message = _errors(path)
    assert "'rate'" in message and "1.0e-3" in message and "variant 'b'" not in message


def test_wrong_kind_of_value(tiny):
    path = _write(tiny, "01_tiny.variants.yml", """\
        regime: r.
        variants:
          - {name: a, why: w, parameters: {limit: 12.5}}
          - {name: b, why: w, parameters: {label: 3}}
        """)
    message = _errors(path)
    assert "'limit' needs an integer" in message and "'label' needs a string" in message


def test_a_parameter_computed_in_the_cell_must_be_set_with_its_input(tiny):
    # papermill injects after the parameters cell: sizes = [n, 4] would keep n = 3.
    path = _write(tiny, "01_tiny.variants.yml", """\
        regime: r.
        variants:
          - {name: a, why: w, parameters: {n: 4}}
          - {name: b, why: w, parameters: {n: 4, sizes: [4, 4]}}
        """)
    message = _errors(path)
    assert "variant 'a'" in message and "'sizes'" in message and "variant 'b'" not in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("variants: []\n", "'regime'"),
        ("regime: r.\nvariant: []\n", "unknown key 'variant'"),
        ("regime: r.\nvariants:\n  - {name: a, why: w, parameters: {n: 4, sizes: [4, 4]}}\n", "at least 2"),
        ("regime: r.\nvariants:\n  - {name: a, why: w, parameters: {limit: 9}}\n  - {name: a, why: w, parameters: {limit: 8}}\n", "used twice"),
        ("regime: r.\nvariants:\n  - {name: a b, why: w, parameters: {limit: 9}}\n  - {name: c, why: w, parameters: {limit: 8}}\n", "'name'"),
        ("regime: r.\nvariants:\n  - {name: a, parameters: {limit: 9}}\n  - {name: c, why: w, parameters: {limit: 8}}\n", "'why'"),
        ("regime: r.\nvariants:\n  - {name: a, why: w}\n  - {name: c, why: w, parameters: {limit: 8}}\n", "'parameters'"),
        ("regime: r.\nvariants:\n  - {name: default, why: w, parameters: {limit: 9}}\n  - {name: c, why: w, parameters: {limit: 8}}\n", "reserved"),
        ("regime: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_files(tiny, text, expected):
    path = tiny / "01_tiny.variants.yml"
    path.write_text(text)
    assert expected in _errors(path)


def test_cli_parameters_like_papermill():
    got = chapters.parse_cli_parameters(
        ["-p", "p", "31", "-p", "lr", "1e-3", "-p", "seeds", "[1, 2]", "-p", "activation", "relu",
         "-r", "tag", "7", "-y", "width: 64"]
    )
    assert got == {"p": 31, "lr": 1e-3, "seeds": [1, 2], "activation": "relu", "tag": "7", "width": 64}
    with pytest.raises(chapters.ChapterError, match="NAME and a VALUE"):
        chapters.parse_cli_parameters(["-p", "seed"])
    with pytest.raises(chapters.ChapterError, match="unknown option"):
        chapters.parse_cli_parameters(["--seed", "3"])


def test_find_chapter():
    first = chapters.chapter_sources()[0]
    assert chapters.find_chapter(first.stem[:2]) == first
    assert chapters.find_chapter(str(int(first.stem[:2]))) == first
    assert chapters.find_chapter(first.stem) == first
    with pytest.raises(chapters.ChapterError, match="the chapters are"):
        chapters.find_chapter("99")


# --------------------------------------------------------------------------- the real chapters


@pytest.mark.parametrize("source", chapters.chapter_sources(), ids=lambda p: p.stem)
def test_declared_variants_of_the_chapters_are_valid(source):
    path = chapters.variants_path(source)
    assert path.exists(), f"{path.name} is missing: every chapter declares >= 2 variants (CONTRIBUTING.md)"
    chapters.load_variants(path)  # raises with every problem listed


# --------------------------------------------------------------------------- the runner


def test_runner_on_a_tiny_chapter(tiny, tmp_path):
    shutil.copy(FIXTURES / "01_tiny.variants.yml", tiny / "01_tiny.variants.yml")
    shutil.copy(FIXTURES / "01_tiny.md", tiny / "02_tiny.md")
    _write(tiny, "02_tiny.variants.yml", """\
        regime: r.
        variants:
          - {name: a, why: typo, parameters: {nn: 5}}
          - {name: b, why: w, parameters: {limit: 20}}
        """)
    before = sorted(p.name for p in tiny.iterdir())
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "tools.variants", "--notebooks", str(tiny), "--out", str(out),
         "--record-dir", str(tmp_path / "rec"), "--jobs", "2", "--then", "echo THEN-RAN"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "exit status 0) ---\nTHEN-RAN" in res.stdout, res.stdout  # --then's output, after the table
    report = json.loads((out / "results.json").read_text())
    rows = {(r["chapter"], r["variant"]): r for r in report["runs"]}
    assert set(rows) == {("01_tiny", "n5"), ("01_tiny", "too-many"), ("02_tiny", "(variants file)")}
    assert rows["01_tiny", "n5"]["status"] == "pass"
    fail = rows["01_tiny", "too-many"]
    assert fail["status"] == "fail"
    assert fail["message"] == "AssertionError: the claim needs n < limit; got n=12, limit=10"
    assert Path(fail["notebook"]).exists(), "the failing run's executed notebook is kept"
    invalid = rows["02_tiny", "(variants file)"]
    assert invalid["status"] == "invalid" and "02_tiny.variants.yml" in invalid["message"] and "'nn'" in invalid["message"]
    assert report["passed"] == 1 and report["failed"] == 2
    # the printed table and the Markdown copy carry the same verdicts
    table = res.stdout
    assert "PASS    01_tiny" in table and "FAIL    01_tiny" in table and "n < limit; got n=12" in table
    assert "INVALID 02_tiny" in table
    md = (out / "results.md").read_text()
    assert "| 01_tiny | too-many |" in md and "**FAIL**" in md
    # nothing written next to the chapters, nothing recorded without --record
    assert sorted(p.name for p in tiny.iterdir()) == before
    assert not (tmp_path / "rec").exists()
    import nbformat

    nb = nbformat.read(fail["notebook"], as_version=4)
    assert [o["ename"] for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"] == ["AssertionError"]


def test_then_runs_after_the_chains_and_its_failure_fails_the_run(tmp_path):
    """--then (the strict book build in `make test`): started once no chain is waiting, its output
    kept, its exit status returned; main fails on it even when every chapter passes."""
    lines = []
    after = variants.run([], 2, tmp_path, tmp_path / "failed", 60, lines.append, then="echo built; exit 3")
    assert after["returncode"] == 3 and after["log"] == "built\n" and after["seconds"] >= 0
    assert lines and lines[0].startswith("FAIL echo built; exit 3")
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "01_x.md").write_text(JAX_CHAPTER)
    (folder / "01_x.variants.yml").write_text("regime: r.\nvariants: []\n")
    res = subprocess.run(
        [sys.executable, "-m", "tools.variants", "--notebooks", str(folder), "--out", str(tmp_path / "o"), "--only", "01",
         "--min-variants", "0", "--then", "echo built; exit 3"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert "0 failed" in res.stdout and "exit status 3" in res.stdout and res.returncode == 1, res.stdout + res.stderr


JAX_CHAPTER = """\
---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# A tiny chapter that compiles one JAX program

```{code-cell} ipython3
:tags: [parameters]

expect_cached = False    # whether compiled programs of an earlier run must be there already
```

```{code-cell} ipython3
import os
from pathlib import Path

cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
found = sorted(os.listdir(cache)) if cache and os.path.isdir(cache) else []
assert bool(found) == expect_cached, f"{len(found)} compiled program(s) there before compiling; expected some: {expect_cached}"
assert cache is None or Path(cache).name == "STEM", cache
import jax
import jax.numpy as jnp

print(int(jax.jit(lambda x: (x * x).sum())(jnp.arange(4))))
```
"""


def _jax_chapter(folder: Path, stem: str, stored_output: str) -> None:
    """``stem``.md, its variants file, and its stored .ipynb with ``stored_output`` as the print."""
    import jupytext
    import nbformat

    md = folder / f"{stem}.md"
    md.write_text(JAX_CHAPTER.replace("STEM", stem))
    nb = jupytext.read(md)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored_output)]
    nb.cells[-1].execution_count = 1
    nbformat.write(nb, folder / f"{stem}.ipynb")
    _write(folder, f"{stem}.variants.yml", """\
        regime: r.
        variants:
          - {name: again, why: compiled programs of the nbval run are found, parameters: {expect_cached: true}}
          - {name: again2, why: and of both earlier runs, parameters: {expect_cached: true}}
        """)


def test_chains_run_nbval_first_and_share_a_chapters_compiled_programs(tmp_path):
    """`make test`'s chapter stage (--nbval): per chapter, nbval on the stored notebook, then the
    variants, one after the other; a variant finds the programs the earlier runs compiled (the
    chapter's own cache folder), and a stored output that differs fails nbval, named by cell."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _jax_chapter(folder, "01_jaxtiny", "14\n")
    _jax_chapter(folder, "02_jaxtiny", "15\n")  # stale stored output: nbval must fail on it
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "tools.variants", "--notebooks", str(folder), "--out", str(out), "--nbval", "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    report = json.loads((out / "results.json").read_text())
    rows = {(r["chapter"], r["variant"]): r for r in report["runs"]}
    assert [k for k in rows if k[0] == "01_jaxtiny"] == [("01_jaxtiny", "nbval"), ("01_jaxtiny", "again"), ("01_jaxtiny", "again2")]
    assert all(rows["01_jaxtiny", v]["status"] == "pass" for v in ("nbval", "again", "again2")), res.stdout
    stale = rows["02_jaxtiny", "nbval"]
    assert stale["status"] == "fail" and "Cell 1" in stale["message"], stale
    assert Path(ROOT / stale["notebook"]).read_text().count("15") >= 1, "nbval's log is kept"
    assert rows["02_jaxtiny", "again"]["status"] == "pass"  # the variants still run after a failed nbval
    assert res.returncode == 1 and report["shared_compilation"] is True
    # without the shared cache the variants compile everything, and their assertion says so
    cold = subprocess.run(
        [sys.executable, "-m", "tools.variants", "--notebooks", str(folder), "--out", str(out), "--only", "01",
         "--cold", "--jobs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert cold.returncode == 1 and rows["again"]["status"] == "fail"
    assert rows["again"]["message"].startswith("AssertionError: 0 compiled program(s) there before compiling"), rows


# --------------------------------------------------------------------------- the book's tables


def test_pages_tables_come_from_the_parameters_cell_and_the_record(tiny, tmp_path):
    from tools import pages

    shutil.copy(FIXTURES / "01_tiny.variants.yml", tiny / "01_tiny.variants.yml")
    out = tmp_path / "generated"
    out.mkdir()
    record = {
        "finished": "2026-01-01T00:00:00+00:00", "machine": "x86_64, 2 cores", "jobs": 2,
        "load_before": [0.1, 0.1, 0.1], "wall_seconds": 30.0, "passed": 2, "failed": 1,
        "runs": [
            {"chapter": "01_tiny", "variant": "default", "parameters": {}, "status": "pass", "seconds": 12.0,
             "cpu_seconds": 10.0, "message": ""},
            {"chapter": "01_tiny", "variant": "n5", "parameters": {"n": 5}, "status": "pass", "seconds": 9.0, "message": ""},
            {"chapter": "01_tiny", "variant": "too-many", "parameters": {"n": 12}, "status": "fail", "seconds": 7.0,
             "message": "AssertionError: the claim needs n < limit"},
        ],
    }
    (out / "variants.json").write_text(json.dumps(record))
    assert pages.main(["--notebooks", str(tiny), "--out", str(out)]) == 0
    params = (out / "parameters.md").read_text()
    assert "| `n` | `3` | *the claim*: how many terms | `5` (n5), `12` (too-many) |" in params
    assert "(computed from `n`)" in params and "**Regime.** The claim holds while n \\< limit." in params
    assert "with its own values 12 s (10 s of CPU), its variants 7-9 s" in params
    times = (out / "chapter_times.md").read_text()
    assert "| 12 | 10 | 7-9 |  |" in times
    results = (out / "variants.md").read_text()
    assert "| 01_tiny | too-many | `n=12` | **FAIL** | 7 |  | `AssertionError: the claim needs n < limit` |" in results
    declared = (out / "declared_variants.md").read_text()
    assert "outside the regime, so the chapter's assertion must fail" in declared
