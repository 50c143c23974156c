"""The API reference part of the book covers every helpers module and builds cleanly.

The pages ``book/api/<module>.md`` are generated from the docstrings at build time (the
``helpers-module`` directive of ``book/_ext/entk_book.py``, which lists every name in the
module's ``__all__``). These checks fail early, with the name of the module or function, when a
new module has no page, or when a docstring would break the strict (``-W -n``) book build.
"""

from __future__ import annotations

import importlib
import inspect
import io
import pkgutil
import re
from pathlib import Path

import pytest
import yaml
from docutils import nodes
from docutils.core import publish_doctree
from docutils.parsers.rst import Directive, directives, roles
from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring

import helpers

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.iter_modules(helpers.__path__) if not m.name.startswith("_"))


def _toc_files(node) -> set[str]:
    files = set()
    if isinstance(node, dict):
        if "file" in node:
            files.add(node["file"])
        for value in node.values():
            files |= _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files |= _toc_files(item)
    return files


@pytest.mark.parametrize("name", MODULES)
def test_every_module_has_an_api_page(name):
    page = ROOT / "book" / "api" / f"{name}.md"
    assert page.exists(), (
        f"helpers.{name} has no API page: create book/api/{name}.md with\n"
        f"# `helpers.{name}`\n\n```{{eval-rst}}\n.. helpers-module:: helpers.{name}\n```\n"
        "and list it under the API reference part of _toc.yml and in book/api/index.md"
    )
    assert f".. helpers-module:: helpers.{name}" in page.read_text(encoding="utf8")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf8"))
    assert f"book/api/{name}" in _toc_files(toc), f"book/api/{name} is not in _toc.yml"
    assert f"({name}.md)" in (ROOT / "book" / "api" / "index.md").read_text(encoding="utf8"), (
        f"book/api/index.md does not list helpers.{name}"
    )


class _AnyOption(dict):
    def __missing__(self, key):  # accept any option (``:type:`` from napoleon)
        return directives.unchanged


class _AnyDirective(Directive):
    """Stands in for Sphinx directives (``.. attribute::`` from napoleon) in plain docutils."""

    has_content = True
    optional_arguments = 10
    final_argument_whitespace = True
    option_spec = _AnyOption()

    def run(self):
        return []


for _name in ("attribute", "method", "rubric", "versionadded", "seealso", "math"):
    directives.register_directive(_name, _AnyDirective)
for _role in ("math", "func", "class", "mod", "obj", "meth", "attr", "data", "eq", "cite"):
    roles.register_generic_role(_role, nodes.literal)


def _docstrings():
    cfg = Config(napoleon_use_param=True, napoleon_use_rtype=True)
    for name in MODULES:
        module = importlib.import_module(f"helpers.{name}")
        yield pytest.param(inspect.getdoc(module) or "", id=f"helpers.{name}")
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                what = "class" if inspect.isclass(obj) else "function"
                text = str(GoogleDocstring(inspect.getdoc(obj) or "", cfg, what=what))
                yield pytest.param(text, id=f"helpers.{name}.{attr}")


@pytest.mark.parametrize("text", list(_docstrings()))
def test_docstring_is_valid_restructuredtext(text, request):
    """A docstring that docutils warns about would fail the -W build of the API pages."""
    where = request.node.callspec.id
    stream = io.StringIO()
    publish_doctree(text, settings_overrides={"warning_stream": stream, "report_level": 2, "halt_level": 5})
    problems = [ln for ln in stream.getvalue().splitlines() if re.match(r"^<string>:\d+: \(\w+/\d\)", ln)]
    assert not problems, (
        f"the docstring of {where} is not valid reStructuredText, so the API reference would not "
        "build with -W:\n" + "\n".join(problems) + "\n(a formula block needs '::' at the end of the "
        "line before it; wrap |x| and *args in ``double backticks``)"
    )
