"""Finding, parametrising and executing the book's chapters (shared by ``make chapter``,
``make variants`` and ``make pages``).

A chapter is ``notebooks/NN_slug.md`` (MyST, what authors edit), paired with the executed
``NN_slug.ipynb``. Every chapter opens with a code cell tagged ``parameters``; papermill runs a
chapter with other values by inserting an ``injected-parameters`` cell right after it. This module

* reads the parameters cell (names, default values, their comments, and which parameters are
  computed from others inside the cell),
* validates a set of new values against it (unknown names, a value of the wrong kind, a value
  that would not reach a parameter computed from it),
* reads and validates ``notebooks/NN_slug.variants.yml``,
* executes a chapter with papermill from its ``.md`` source into a folder outside the tracked
  files, and reports the first line of the failing assertion.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import tempfile
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHAPTER_GLOB = "[0-9][0-9]_*.md"
VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
RESERVED_VARIANTS = {"default"}  # the chapter's own values, run by `make variants`

# Environment of every chapter kernel started by these tools: CPU JAX, one BLAS thread (as the
# Makefile), no progress bars unless the caller asks for them.
KERNEL_ENV = {
    "JAX_PLATFORMS": "cpu",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}
# When two chapters run side by side on two cores, each XLA process computes single-threaded
# (Eigen's matmul thread pool off), so the two do not fight over the cores.
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


class ChapterError(ValueError):
    """A chapter, its parameters or its variants file is not usable as asked."""


# --------------------------------------------------------------------------------------------
# chapters


def chapter_sources(directory: Path = NOTEBOOKS) -> list[Path]:
    """The chapter sources ``NN_slug.md`` of ``directory``, in order."""
    return sorted(Path(directory).glob(CHAPTER_GLOB))


def find_chapter(spec: str, directory: Path = NOTEBOOKS) -> Path:
    """The ``.md`` source named by ``spec``: ``06``, ``6``, ``06_modular_addition`` or a path."""
    spec = str(spec).strip()
    path = Path(spec)
    if path.suffix in (".md", ".ipynb") and path.exists():
        md = path.with_suffix(".md").resolve()
        if not md.exists():
            raise ChapterError(f"NB={spec}: {md.name} (the chapter source) does not exist")
        return md
    sources = chapter_sources(directory)
    stem = path.stem if path.suffix in (".md", ".ipynb") else spec
    if stem.isdigit():
        stem = f"{int(stem):02d}"
    hits = [s for s in sources if s.stem == stem or s.stem.split("_")[0] == stem]
    if len(hits) != 1:
        names = ", ".join(s.stem for s in sources) or "none"
        raise ChapterError(f"NB={spec!r} names no single chapter; the chapters are: {names}")
    return hits[0]


# --------------------------------------------------------------------------------------------
# the parameters cell


@dataclass
class Parameter:
    """One assignment of a chapter's ``parameters`` cell."""

    name: str
    source: str  # the right-hand side as written
    value: Any = None  # its value when it is a literal
    literal: bool = False
    comment: str = ""  # the trailing comment: what it means, why this value
    section: str = ""  # the last full-line comment above it
    depends_on: tuple[str, ...] = ()  # earlier parameters its right-hand side reads


def read_notebook(md: Path):
    import jupytext

    return jupytext.read(Path(md))


def parameters_cell(nb, where: str = "the chapter") -> str:
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ChapterError(f"{where} needs exactly one code cell tagged `parameters`; found {len(cells)}")
    return cells[0].source


def parse_parameters(source: str, where: str = "the parameters cell") -> dict[str, Parameter]:
    """The parameters assigned in ``source`` (a parameters cell), in order of assignment."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ChapterError(f"{where} is not valid Python: {err}") from err
    lines = source.splitlines()
    trailing, full_line = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            text = tok.string.lstrip("#").strip()
            if lines[row - 1][:col].strip():
                trailing[row] = text
            else:
                full_line[row] = text
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        names: list[str] = []
        values: list[ast.expr] = []
        for target in targets:
            if isinstance(target, ast.Name):
                names.append(target.id)
                values.append(value)
            elif isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts):
                names.extend(e.id for e in target.elts)
                if isinstance(value, ast.Tuple) and len(value.elts) == len(target.elts):
                    values.extend(value.elts)
                else:
                    values.extend([value] * len(target.elts))
        comment = " ".join(trailing[r] for r in range(stmt.lineno, stmt.end_lineno + 1) if r in trailing)
        above = [r for r in full_line if r < stmt.lineno]
        section = full_line[max(above)] if above else ""
        for name, expr in zip(names, values):
            src = ast.get_source_segment(source, expr) or ""
            try:
                val, literal = ast.literal_eval(expr), True
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                val, literal = None, False
            reads = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
            deps = tuple(sorted(reads & set(params)))
            params[name] = Parameter(name, src, val, literal, comment, section, deps)
    return params


def read_parameters(md: Path) -> dict[str, Parameter]:
    md = Path(md)
    return parse_parameters(parameters_cell(read_notebook(md), md.name), f"the parameters cell of {md.name}")


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "sequence"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


_NEEDS = {
    "bool": "True or False",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "sequence": "a list",
    "dict": "a mapping",
}


def check_values(values: dict, params: dict[str, Parameter], where: str) -> list[str]:
    """Problems with running a chapter whose parameters cell is ``params`` with ``values``.

    ``where`` prefixes each message (e.g. ``"notebooks/06_x.variants.yml, variant 'p31'"``).
    """
    problems = []
    for key, value in values.items():
        if key not in params:
            problems.append(
                f"{where}: unknown parameter '{key}': the parameters cell has no such name "
                f"(it has: {', '.join(params)})"
            )
            continue
        default = params[key]
        if not default.literal or default.value is None:
            continue  # a computed default: any kind may be meant
        want, got = _kind(default.value), _kind(value)
        ok = want == got or (want == "float" and got == "int")
        if not ok:
            hint = ""
            if got == "str" and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", str(value)):
                hint = f" (YAML reads {value} as a string; write it with a decimal point, e.g. 1.0e-3)"
            problems.append(
                f"{where}: parameter '{key}' needs {_NEEDS.get(want, want)} like its default "
                f"{default.source}; got {value!r}{hint}"
            )
    for name, param in params.items():
        moved = [d for d in param.depends_on if d in values]
        if moved and name not in values:
            problems.append(
                f"{where}: sets {', '.join(repr(m) for m in moved)}, but '{name} = {param.source}' is "
                f"computed from it inside the parameters cell, before papermill injects the new values, "
                f"so '{name}' would keep its default: compute '{name}' in a cell after the parameters cell "
                f"(then it follows any injected value), or set it here too"
            )
    return problems


def as_papermill(value: Any) -> Any:
    """``value`` with tuples turned into lists (papermill writes a tuple as a string)."""
    if isinstance(value, (list, tuple)):
        return [as_papermill(v) for v in value]
    if isinstance(value, dict):
        return {k: as_papermill(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# variants files


@dataclass
class Variant:
    name: str
    why: str
    parameters: dict = field(default_factory=dict)


@dataclass
class Variants:
    path: Path
    chapter: Path
    regime: str
    variants: list[Variant]


def variants_path(md: Path) -> Path:
    return Path(md).with_suffix(".variants.yml")


def load_variants(path: Path, params: dict[str, Parameter] | None = None, min_variants: int = 2) -> Variants:
    """Read and validate ``NN_slug.variants.yml``; every problem is listed in one ChapterError."""
    import yaml

    path = Path(path)
    shown = _shown(path)
    chapter = path.with_name(path.name[: -len(".variants.yml")] + ".md")
    problems: list[str] = []
    if not chapter.exists():
        raise ChapterError(f"{shown}: no chapter {chapter.name} next to it")
    if params is None:
        params = read_parameters(chapter)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ChapterError(f"{shown}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ChapterError(f"{shown}: needs a mapping with the keys 'regime' and 'variants'; got {_kind(data)}")
    for key in data:
        if key not in ("regime", "variants"):
            problems.append(f"{shown}: unknown key '{key}' (allowed: regime, variants)")
    regime = data.get("regime")
    if not isinstance(regime, str) or not regime.strip():
        problems.append(f"{shown}: 'regime' must state, in a sentence or two, where the chapter's claims hold")
        regime = ""
    entries = data.get("variants")
    if not isinstance(entries, list):
        problems.append(f"{shown}: 'variants' must be a list of {{name, why, parameters}}; got {_kind(entries)}")
        entries = []
    elif len(entries) < min_variants:
        problems.append(f"{shown}: declares {len(entries)} variant(s); at least {min_variants} are needed")
    variants, seen = [], set()
    for i, entry in enumerate(entries):
        label = f"{shown}, variant #{i + 1}"
        if not isinstance(entry, dict):
            problems.append(f"{label}: must be a mapping with name, why, parameters; got {_kind(entry)}")
            continue
        for key in entry:
            if key not in ("name", "why", "parameters"):
                problems.append(f"{label}: unknown key '{key}' (allowed: name, why, parameters)")
        name = entry.get("name")
        if not isinstance(name, str) or not VARIANT_NAME.match(name):
            problems.append(f"{label}: 'name' must be letters, digits, '-' and '_'; got {name!r}")
            name = f"#{i + 1}"
        elif name in seen or name in RESERVED_VARIANTS:
            problems.append(f"{label}: the name '{name}' is " + ("used twice" if name in seen else "reserved"))
        seen.add(name)
        label = f"{shown}, variant '{name}'"
        why = entry.get("why")
        if not isinstance(why, str) or not why.strip():
            problems.append(f"{label}: 'why' must say in a few words what the variant changes and why")
            why = ""
        values = entry.get("parameters")
        if not isinstance(values, dict) or not values:
            problems.append(f"{label}: 'parameters' must be a non-empty mapping name -> value; got {values!r}")
            values = {}
        problems += check_values(values, params, label)
        variants.append(Variant(name, why.strip(), values))
    if problems:
        raise ChapterError("\n".join(problems))
    return Variants(path, chapter, " ".join(regime.split()), variants)


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# parameters from a command line (papermill's -p / -r / -y / -f)


def parse_cli_parameters(args: list[str]) -> dict:
    """Parse papermill-style parameter options into a dict.

    ``-p NAME VALUE`` (VALUE read as a Python literal when it is one: ``31``, ``1e-3``,
    ``[1,2,3]``, ``True``; otherwise a string), ``-r NAME VALUE`` (always a string),
    ``-y YAML`` (a YAML mapping), ``-f FILE`` (a YAML file).
    """
    import yaml

    values: dict = {}
    i = 0
    while i < len(args):
        opt = args[i]
        if opt in ("-p", "--parameters", "-r", "--parameters_raw"):
            if i + 2 >= len(args):
                raise ChapterError(f"{opt} needs a NAME and a VALUE (e.g. -p seed 3); got {' '.join(args[i:])!r}")
            name, raw = args[i + 1], args[i + 2]
            if opt in ("-p", "--parameters"):
                try:
                    value = ast.literal_eval(raw)
                except (ValueError, SyntaxError, TypeError):
                    value = raw
            else:
                value = raw
            values[name] = value
            i += 3
        elif opt in ("-y", "--parameters_yaml", "-f", "--parameters_file"):
            if i + 1 >= len(args):
                raise ChapterError(f"{opt} needs an argument")
            text = Path(args[i + 1]).read_text() if opt in ("-f", "--parameters_file") else args[i + 1]
            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise ChapterError(f"{opt} needs a YAML mapping name: value; got {text!r}")
            values.update(data)
            i += 2
        else:
            raise ChapterError(
                f"unknown option {opt!r} in ARGS: use -p NAME VALUE, -r NAME VALUE, -y 'YAML' or -f FILE.yml"
            )
    return values


# --------------------------------------------------------------------------------------------
# execution


@dataclass
class RunResult:
    ok: bool
    seconds: float
    message: str = ""  # first line of the failure ("AssertionError: ...")
    cell: int | None = None  # execution count of the failing cell
    output: str = ""  # the executed notebook


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CR = re.compile(r"[^\n]*\r(?=[^\n])")


def first_line(ename: str, evalue: str, traceback: list[str] | None = None) -> str:
    """``"AssertionError: <first line of the message>"``, or the failing line when there is no message."""
    evalue = (evalue or "").strip()
    if evalue:
        return f"{ename}: {evalue.splitlines()[0]}"
    for line in _ANSI.sub("", "\n".join(traceback or [])).splitlines():
        if line.lstrip().startswith("---->"):
            return f"{ename} at: {line.split('---->', 1)[1].strip().split(' ', 1)[-1].strip()}"
    return ename


def clean_streams(nb) -> None:
    """Keep only the final state of progress bars (text after the last carriage return)."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            last = merged[-1] if merged else None
            if (out.get("output_type") == "stream" and last is not None
                    and last.get("output_type") == "stream" and last.get("name") == out.get("name")):
                last["text"] += out["text"]  # consecutive writes to one stream: one output
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream" and "\r" in out.get("text", ""):
                out["text"] = _CR.sub("", out["text"])
        if "outputs" in cell:
            cell["outputs"] = merged


def kernel_env(jobs: int = 1, progress: str = "0") -> dict:
    """The environment for chapter kernels (inherited by papermill's kernel subprocess)."""
    env = dict(os.environ)
    env.update(KERNEL_ENV)
    env["HELPERS_PROGRESS"] = progress
    if jobs > 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + XLA_ONE_THREAD).strip()
    return env


def execute(
    md: Path,
    output: Path,
    parameters: dict | None = None,
    *,
    cwd: Path | None = None,
    stream: bool = False,
    cell_timeout: int = 900,
) -> RunResult:
    """Execute chapter ``md`` with ``parameters`` injected; write the executed notebook to ``output``.

    The notebook is built from the ``.md`` source (so unsynchronised edits count), the kernel runs
    in ``cwd`` (default: the chapter's folder, as nbval does) and inherits this process's
    environment. With ``stream``, the cells' stdout and stderr (progress bars included) are
    copied to this process's as they arrive.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    md, output = Path(md), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    nb = read_notebook(md)
    nb.metadata.get("jupytext", {}).pop("formats", None)  # the executed copy is not paired
    values = {k: as_papermill(v) for k, v in (parameters or {}).items()}
    t0 = time.monotonic()
    result = RunResult(ok=True, seconds=0.0, output=str(output))
    with tempfile.TemporaryDirectory(prefix="entk-chapter-") as tmp:
        source = Path(tmp) / (md.stem + ".ipynb")
        nbformat.write(nb, source)
        try:
            papermill.execute_notebook(
                str(source),
                str(output),
                parameters=values,
                cwd=str(cwd or md.parent),
                progress_bar=False,
                log_output=False,
                stdout_file=_Passthrough("stdout") if stream else None,
                stderr_file=_Passthrough("stderr") if stream else None,
                execution_timeout=cell_timeout,
                kernel_name="python3",
                # the kernel's own log (e.g. ipykernel's warning about TCP without encryption on
                # a local kernel) would interleave with the chapter's output on the terminal
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except PapermillExecutionError as err:
            result = RunResult(False, 0.0, first_line(err.ename, err.evalue, err.traceback), err.exec_count, str(output))
        except Exception as err:  # noqa: BLE001 - a dead kernel or a timeout is a failure to report
            message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            result = RunResult(False, 0.0, message.rstrip(": "), None, str(output))
    result.seconds = time.monotonic() - t0
    if output.exists():
        executed = nbformat.read(output, as_version=4)
        clean_streams(executed)
        nbformat.write(executed, output)
    return result


class _Passthrough:
    """A file-like object papermill writes cell output to: this process's stdout/stderr."""

    def __init__(self, name: str):
        self.name = name

    def write(self, text: str) -> None:
        import sys

        stream = getattr(sys, self.name)
        stream.write(text)

    def flush(self) -> None:
        import sys

        getattr(sys, self.name).flush()


def render_html(ipynb: Path, html: Path) -> Path:
    """The HTML rendering of an executed notebook (nbconvert's lab template)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(ipynb, as_version=4))
    Path(html).write_text(body)
    return Path(html)


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
