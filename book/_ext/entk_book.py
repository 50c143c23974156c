"""Sphinx extension of the eNTK book (loaded through ``sphinx: local_extensions`` in _config.yml).

What Jupyter Book does not do on its own:

* ``landing figures``: at the start of every build, copy one figure of each executed chapter
  (``notebooks/NN_slug.ipynb``) to ``book/_figures/NN_slug.png`` for the landing page's visual
  table of contents. The figure is the first PNG output of a code cell tagged
  ``landing-figure``, else the chapter's first PNG output. The images are extracted, never
  hand-copied, so they refresh whenever a chapter is re-executed.
* ``.md download``: chapter pages get a ``.md`` entry in the download menu (next to ``.ipynb``)
  that serves the chapter's jupytext MyST twin, the file authors edit.
* the ``helpers-module`` directive: the API reference page of one ``helpers`` module -- the
  module docstring, a summary table of every public name (``__all__``), and the full docstring
  of each. Listing the names from ``__all__`` keeps the page complete when a module grows.
* a workaround for an inline script that Sphinx 7.4 emits twice (``dedupe_scripts``).
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import shutil
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.ext.autosummary import Autosummary, import_by_name
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

CHAPTER_GLOB = "notebooks/[0-9][0-9]_*.ipynb"
LANDING_TAG = "landing-figure"


# ----------------------------------------------------------------------------------------
# landing figures
# ----------------------------------------------------------------------------------------


def landing_png(notebook: Path) -> bytes | None:
    """The PNG bytes of the chapter's landing figure, or None when it has no PNG output."""
    nb = json.loads(notebook.read_text(encoding="utf8"))
    first = tagged = None
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("image/png")
            if data is None:
                continue
            if isinstance(data, list):
                data = "".join(data)
            png = base64.b64decode(data)
            if first is None:
                first = png
            if LANDING_TAG in tags and tagged is None:
                tagged = png
    return tagged if tagged is not None else first


def extract_landing_figures(app) -> None:
    src = Path(app.srcdir)
    out_dir = src / app.config.entk_landing_figure_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(src.glob(CHAPTER_GLOB)):
        png = landing_png(notebook)
        target = out_dir / f"{notebook.stem}.png"
        if png is None:
            logger.warning(
                "%s has no PNG output for the landing page; tag one figure cell `%s`",
                notebook.relative_to(src), LANDING_TAG,
            )
            continue
        if not target.exists() or target.read_bytes() != png:  # unchanged files keep their mtime
            target.write_bytes(png)


# ----------------------------------------------------------------------------------------
# .md download of a chapter's jupytext twin
# ----------------------------------------------------------------------------------------


def _md_twin(app, pagename: str) -> Path | None:
    try:
        source = Path(app.env.doc2path(pagename))
    except Exception:
        return None
    if source.suffix != ".ipynb":
        return None
    twin = source.with_suffix(".md")
    return twin if twin.exists() else None


def add_md_download(app, pagename, templatename, context, doctree):
    twin = _md_twin(app, pagename)
    if twin is None:
        return
    rel = f"{pagename}.md"
    dest = Path(app.outdir) / "_sources" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(twin, dest)
    for button in context.get("header_buttons", []):
        if button.get("label") == "download-buttons":
            entries = button["buttons"]
            at = next(
                (i + 1 for i, b in enumerate(entries) if b.get("label") == "download-source-button"),
                len(entries),
            )
            entries.insert(
                at,
                {
                    "type": "link",
                    "url": f"{context['pathto']('_sources', 1)}/{rel}",
                    "text": ".md",
                    "icon": "fas fa-file-lines",
                    "tooltip": "Download the MyST Markdown source (jupytext twin)",
                    "label": "download-md-button",
                },
            )


# ----------------------------------------------------------------------------------------
# API reference: one page per helpers module
# ----------------------------------------------------------------------------------------


def public_names(module) -> list[str]:
    """Public names of a module: ``__all__`` if it has one, else what it defines itself."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n for n, obj in vars(module).items()
            if not n.startswith("_") and getattr(obj, "__module__", None) == module.__name__
        ]
    return list(names)


def first_paragraph(obj) -> str:
    """The first paragraph of an object's docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def comment_above(module, name: str) -> list[str]:
    """The ``#`` comment lines right above ``NAME = ...`` in the module source (a constant's doc)."""
    try:
        lines = inspect.getsource(module).splitlines()
    except (OSError, TypeError):
        return []
    for i, line in enumerate(lines):
        if line.startswith(f"{name} =") or line.startswith(f"{name}:"):
            j = i
            while j > 0 and lines[j - 1].startswith("#"):
                j -= 1
            return [ln.lstrip("#").strip() for ln in lines[j:i]]
    return []


def describe_value(value) -> str:
    if isinstance(value, dict):
        return "dict with keys " + ", ".join(repr(k) for k in value)
    text = repr(value)
    return text if len(text) <= 120 else type(value).__name__


class FirstParagraphAutosummary(Autosummary):
    """``autosummary`` whose summary is the docstring's whole first paragraph.

    The stock directive cuts the first sentence at the first ". ", which falls inside inline
    literals of formulas such as ``r . T`` and leaves broken markup.
    """

    def get_items(self, names):
        items = []
        for display, sig, summary, real in super().get_items(names):
            try:
                _, obj, _, _ = import_by_name(real)
                summary = first_paragraph(obj)
            except ImportError:
                pass
            items.append((display, sig, summary, real))
        return items


class HelpersModule(SphinxDirective):
    """``.. helpers-module:: helpers.ntk``: docstring, summary table and members of a module.

    Use it inside an ``{eval-rst}`` block: the generated autodoc directives are reStructuredText.
    """

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        module = importlib.import_module(name)
        names = public_names(module)
        routines = [n for n in names if callable(getattr(module, n))]
        constants = [n for n in names if n not in routines]
        # automodule makes `name` the current module, so the names below are relative to it
        lines = [f".. automodule:: {name}", "", ".. rubric:: Summary", ""]
        lines += [".. helpers-autosummary::", "   :nosignatures:", ""] + [f"   {n}" for n in routines] + [""]
        if constants:
            lines += [".. rubric:: Constants", ""]
            for n in constants:
                lines += [f".. py:data:: {n}", f"   :value: {describe_value(getattr(module, n))}", ""]
                lines += [f"   {ln}" for ln in comment_above(module, n)] + [""]
        lines += [".. rubric:: Reference", ""]
        for n in routines:
            if inspect.isclass(getattr(module, n)):
                lines += [f".. autoclass:: {n}", "   :members:", ""]
            else:
                lines += [f".. autofunction:: {n}", ""]
        parent = nodes.Element()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), self.content_offset, parent)
        return parent.children


# ----------------------------------------------------------------------------------------
# a duplicated script
# ----------------------------------------------------------------------------------------


def dedupe_scripts(app, pagename, templatename, context, doctree):
    """Drop the second copy of an inline script.

    sphinx-thebe registers its inline ``const THEBE_JS_URL = ...`` script after the builder
    starts; Sphinx 7.4 then lists it twice (once with filename ``None``, once with ``''``), and
    the second copy throws "Identifier 'THEBE_JS_URL' has already been declared" on every
    page, which the browser check reports as a console error.
    """
    seen, keep = set(), []
    for js in context.get("script_files", []):
        key = (js.filename or "", js.priority, tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            keep.append(js)
    context["script_files"][:] = keep


def setup(app):
    app.add_config_value("entk_landing_figure_dir", "book/_figures", "env")
    app.connect("builder-inited", extract_landing_figures)
    # after sphinx-book-theme has built its header buttons (priority 501)
    app.connect("html-page-context", add_md_download, priority=502)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.add_directive("helpers-module", HelpersModule)
    app.add_directive("helpers-autosummary", FirstParagraphAutosummary)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
