"""Every chapter is a MyST source paired with an executed notebook, and the two agree.

A chapter's ``notebooks/NN_slug.md`` is what authors edit; ``notebooks/NN_slug.ipynb`` holds the
executed outputs nbval compares. These checks fail when the two drift apart (someone edited
one twin without ``make notebooks``), when a notebook was stored unexecuted or with an error,
or when a chapter lacks its ``parameters`` cell.
"""

from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))


def _cells(nb):
    return [
        (c.cell_type, c.source.strip(), sorted(c.get("metadata", {}).get("tags", [])))
        for c in nb.cells
    ]


def test_there_are_chapters():
    assert SOURCES, "no notebooks/NN_slug.md chapters found"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_pair_in_sync(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{source.name} has no paired {paired.name}; run `make notebooks`"
    md = jupytext.read(source)
    ipynb = nbformat.read(paired, as_version=4)
    md_cells, nb_cells = _cells(md), _cells(ipynb)
    assert len(md_cells) == len(nb_cells), (
        f"{source.name} has {len(md_cells)} cells but {paired.name} has {len(nb_cells)}: "
        "run `make notebooks` to re-pair and re-execute"
    )
    for i, (a, b) in enumerate(zip(md_cells, nb_cells)):
        assert a == b, f"cell {i} differs between {source.name} and {paired.name}: run `make notebooks`"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_executed_cleanly(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), (
        f"{source.name} has no code cell tagged `parameters`"
    )
    assert all(c.get("execution_count") for c in code), f"{source.stem}.ipynb has unexecuted cells"
    for c in code:
        for out in c.get("outputs", []):
            assert out.get("output_type") != "error", (
                f"{source.stem}.ipynb stores an error output: {out.get('ename')}: {out.get('evalue')}"
            )
    assert any("assert" in c.source for c in code), f"{source.name} asserts nothing"
