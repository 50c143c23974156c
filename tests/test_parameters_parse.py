"""Every line of every chapter's `parameters` cell is one papermill can parse.

papermill infers each parameter's name, type and help from `name = value  # comment`; a comment
holding '=' defeats its parser, and `make chapter` / `make variants` then warn 'Unable to parse
line' and can no longer type-check the reader's value for that parameter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter_line(notebook, caplog):
    with caplog.at_level(logging.WARNING):
        params = pm.inspect_notebook(str(notebook))
    unparsed = [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert not unparsed, f"{notebook.name}: " + "; ".join(unparsed)
    assert params, f"{notebook.name} has no parameters cell papermill can find"
