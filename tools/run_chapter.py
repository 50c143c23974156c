"""Run one chapter with your own parameter values (``make chapter NB=06 ARGS="-p p 31 -p seed 3"``).

The chapter is executed by papermill from its ``.md`` source, with the values injected after its
``parameters`` cell, into ``_build/chapters/NN_slug/<time>_<values>/`` (ignored by git; the stored
outputs in ``notebooks/`` are never touched). The executed notebook and its HTML rendering are
written there and their paths printed. Cell output and progress bars stream to the terminal.
When a claim does not hold for the values, the chapter's own assertion message is printed and
the exit status is 1.

    python -m tools.run_chapter 06 -p p 31 -p seed 3
    python -m tools.run_chapter 04_kernel_drift -y "widths: [64, 256]"

Options besides the papermill-style ``-p/-r/-y/-f``:
    --out DIR         write into DIR instead (it must lie outside the tracked files)
    --quiet           no streaming of cell output
    --no-html         skip the HTML rendering
    --result-json F   also write the result as JSON (used by ``make variants``)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

from tools import chapters


def _slug(values: dict) -> str:
    text = "_".join(f"{k}{v}" for k, v in values.items()) or "defaults"
    text = re.sub(r"[^A-Za-z0-9.=-]+", "", text.replace(" ", ""))[:60]
    return text or "values"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chapter", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("chapter", help="06, 06_modular_addition or notebooks/06_modular_addition.md")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--no-html", action="store_true")
    parser.add_argument("--result-json", type=Path, default=None)
    parser.add_argument("--parameters-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cell-timeout", type=int, default=900)
    own, rest = _split(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(own)
    try:
        md = chapters.find_chapter(args.chapter)
        values = chapters.parse_cli_parameters(rest)
        if args.parameters_json:
            values.update(json.loads(args.parameters_json))
        params = chapters.read_parameters(md)
        problems = chapters.check_values(values, params, f"{md.stem}")
        if problems:
            raise chapters.ChapterError("\n".join(problems))
    except chapters.ChapterError as err:
        print(f"make chapter: {err}", file=sys.stderr)
        return 2
    out = args.out
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = chapters.ROOT / "_build" / "chapters" / md.stem / f"{stamp}_{_slug(values)}"
    out = out.resolve()
    if _tracked_inside(out):
        print(f"make chapter: --out {out} holds tracked files; choose a folder outside them", file=sys.stderr)
        return 2
    ipynb = out / f"{md.stem}.ipynb"
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "its own values"
    if not args.quiet:
        print(f"running {md.stem} with {shown}", flush=True)
    result = chapters.execute(md, ipynb, values, stream=not args.quiet, cell_timeout=args.cell_timeout)
    html = None
    if not args.no_html and Path(result.output).exists():
        html = chapters.render_html(ipynb, ipynb.with_suffix(".html"))
    (out / "parameters.json").write_text(json.dumps(values, indent=1) + "\n")
    if args.result_json:
        chapters.write_json(
            args.result_json,
            {"ok": result.ok, "seconds": round(result.seconds, 2), "cpu_seconds": round(_cpu_seconds(), 2),
             "message": result.message, "cell": result.cell, "notebook": str(ipynb)},
        )
    if not args.quiet:
        print()
        print(f"executed notebook: {ipynb}")
        if html:
            print(f"HTML rendering:    {html}")
    if result.ok:
        if not args.quiet:
            print(f"{md.stem} passed with {shown} in {result.seconds:.0f} s")
        return 0
    where = f" (cell In [{result.cell}])" if result.cell else ""
    print(f"{md.stem} FAILED with {shown}{where}: {result.message}", file=sys.stderr)
    return 1


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children (the kernel).

    On a loaded machine the wall time of a run says more about the load than about the chapter;
    its CPU time is close to what the run takes on an idle core.
    """
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# papermill-style options and how many words each takes (with its own name)
_PAPERMILL = {"-p": 3, "--parameters": 3, "-r": 3, "--parameters_raw": 3,
              "-y": 2, "--parameters_yaml": 2, "-f": 2, "--parameters_file": 2}


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate the papermill-style parameter options from this tool's own arguments."""
    own, rest, i = [], [], 0
    while i < len(argv):
        n = _PAPERMILL.get(argv[i], 0)
        if n:
            rest += argv[i : i + n]
            i += n
        else:
            own.append(argv[i])
            i += 1
    return own, rest


def _tracked_inside(folder: Path) -> bool:
    """Whether git tracks any file at or below ``folder`` (or ``folder`` is the repository root)."""
    import subprocess

    try:
        rel = folder.relative_to(chapters.ROOT)
    except ValueError:
        return False
    if str(rel) == ".":
        return True
    res = subprocess.run(
        ["git", "ls-files", "--", str(rel)], cwd=chapters.ROOT, capture_output=True, text=True, check=False
    )
    return bool(res.stdout.strip())


if __name__ == "__main__":
    sys.exit(main())
