"""Execute every chapter under each of its declared variants (``make variants``).

For each ``notebooks/NN_slug.md`` the file ``notebooks/NN_slug.variants.yml`` declares the
chapter's regime and at least two variants (format in CONTRIBUTING.md). This tool

1. validates every variants file against its chapter's ``parameters`` cell (an unknown name, a
   value of the wrong kind, a value that would not reach a parameter computed from it inside the
   cell, a missing ``why``: each is an error naming the file, the variant and the key);
2. executes each (chapter, variant) with papermill from the ``.md`` source into a temporary
   folder (stored outputs untouched), each kernel with one BLAS thread and, when two run side by
   side, one XLA thread. A chapter's runs form a chain (with ``--nbval`` first the nbval check of
   its stored notebook, with ``--with-default`` first its own values, then its variants): chains
   run ``--jobs`` at a time, longest first (by the last recorded times), and the runs of a chain
   one after the other, sharing a JAX compilation cache (``--cold``: not shared), so a variant
   loads the programs its chapter's earlier runs compiled;
3. prints the table chapter x variant -> pass/fail, time, and the first line of the failing
   assertion, writes it as ``_build/variants/results.{json,md}`` (with ``--record`` also as the
   committed copy ``book/generated/variants.{json,md}`` that the book page shows), keeps the
   executed notebook (or nbval's log) of every failure in ``_build/variants/failed/``;
4. exits 1 on any failure or invalid file, 0 otherwise.

    python -m tools.variants --nbval         # what `make test` runs: nbval, then the variants
    python -m tools.variants --with-default --record   # `make variants`: also the chapters' own
                                             # values (their run time for the book) and record
    python -m tools.variants --check         # only validate the variants files (no execution)
    python -m tools.variants --only 06 --only 04
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools import chapters

BUILD = chapters.ROOT / "_build" / "variants"
RECORD = chapters.ROOT / "book" / "generated"


@dataclass
class Job:
    chapter: str  # NN_slug
    variant: str
    parameters: dict
    why: str = ""
    md: str = ""
    expected: float = 0.0  # seconds, from the last record (for scheduling)
    status: str = "pending"  # pass | fail | invalid
    seconds: float | None = None
    cpu_seconds: float | None = None  # kernel + runner CPU time: the run's cost on an idle core
    message: str = ""
    cell: int | None = None
    notebook: str = ""
    kind: str = "papermill"  # or "nbval": the stored notebook checked against a re-execution


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    invalid: list[Job] = field(default_factory=list)  # one row per chapter whose file is invalid
    regimes: dict = field(default_factory=dict)


def plan(sources: list[Path], with_default: bool, min_variants: int = 2, nbval: bool = False) -> Plan:
    """The jobs to run, and a failing row for every chapter with a missing or invalid file.

    With ``nbval``, each chapter's first job checks its stored notebook with nbval (its own
    values, outputs compared); with ``with_default``, it executes the chapter with its own values.
    """
    out = Plan()
    for md in sources:
        path = chapters.variants_path(md)
        try:
            params = chapters.read_parameters(md)
            if not path.exists():
                raise chapters.ChapterError(
                    f"{chapters._shown(path)}: missing; every chapter declares >= {min_variants} variants (CONTRIBUTING.md)"
                )
            spec = chapters.load_variants(path, params, min_variants=min_variants)
        except chapters.ChapterError as err:
            out.invalid.append(Job(md.stem, "(variants file)", {}, status="invalid", message=str(err), md=str(md)))
            continue
        out.regimes[md.stem] = spec.regime
        if nbval:
            out.jobs.append(Job(md.stem, "nbval", {}, "the stored outputs against a re-execution with the chapter's own values",
                                str(md), kind="nbval"))
        if with_default:
            out.jobs.append(Job(md.stem, "default", {}, "the chapter's own parameter values", str(md)))
        for v in spec.variants:
            out.jobs.append(Job(md.stem, v.name, v.parameters, v.why, str(md)))
    return out


def _expected_times(jobs: list[Job], record: Path) -> None:
    try:
        old = json.loads(record.read_text())
        seconds = {(r["chapter"], r["variant"]): r.get("seconds") or 0.0 for r in old.get("runs", [])}
    except (OSError, ValueError, KeyError, TypeError):
        seconds = {}
    by_chapter: dict[str, float] = {}
    for (ch, _), s in seconds.items():
        by_chapter[ch] = max(by_chapter.get(ch, 0.0), s)
    for job in jobs:
        variant = "default" if job.kind == "nbval" else job.variant
        job.expected = seconds.get((job.chapter, variant), by_chapter.get(job.chapter, 60.0))


# JAX's persistent compilation cache, per chapter: every compiled program (any size, any compile
# time) is written to disk, and a later run of the same chapter loads it instead of compiling it
# again. A seed variant has the shapes of the chapter's own run, so it compiles almost nothing;
# compilation is a quarter to two thirds of a chapter's run time on this CPU. A loaded program is
# the same executable, so results are bit-identical.
CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}


def chains(jobs: list[Job]) -> list[list[Job]]:
    """The jobs grouped by chapter, in the given order within a chapter, longest chain first."""
    by_chapter: dict[str, list[Job]] = {}
    for job in jobs:
        by_chapter.setdefault(job.chapter, []).append(job)
    return sorted(by_chapter.values(), key=lambda c: -sum(j.expected for j in c))


def _command(job: Job, folder: Path, cell_timeout: int) -> list[str]:
    if job.kind == "nbval":
        # the stored notebook against its own re-execution, as `make nbval` does for one chapter
        return [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
            f"--nbval-cell-timeout={cell_timeout}", str(Path(job.md).with_suffix(".ipynb")),
        ]
    return [
        sys.executable, "-m", "tools.run_chapter", job.md, "--quiet", "--no-html",
        "--out", str(folder), "--result-json", str(folder / "result.json"),
        "--parameters-json", json.dumps(chapters.as_papermill(job.parameters)),
        "--cell-timeout", str(cell_timeout),
    ]


def _nbval_failure(log_text: str) -> str:
    """The first line that names the failing cell in pytest's output, with the reason."""
    lines = log_text.strip().splitlines()
    for line in lines:
        if line.startswith(("FAILED ", "ERROR ")):
            return line
    return lines[-1] if lines else "pytest produced no output"


def run(
    jobs: list[Job], n_jobs: int, workdir: Path, failed_dir: Path, cell_timeout: int, echo, share_compiled: bool = True,
    then: str | None = None,
) -> dict | None:
    """Execute ``jobs``, filling in their results: one chain per chapter (its own-values run or
    nbval first, then its variants), ``n_jobs`` chains at a time, longest first.

    ``then``, a shell command, starts in the first slot that frees once every chain has started
    (``make test`` runs the strict book build there: it needs none of the runs, and it takes the
    core that the last chain leaves idle). Returns ``{"returncode", "seconds", "log"}`` for it.

    The runs of a chain are sequential and, with ``share_compiled``, share a JAX persistent
    compilation cache in ``workdir/jax-cache/<chapter>``: a variant loads the programs the
    chapter's earlier runs compiled. No two processes ever use one cache folder at the same time
    (JAX writes its entries without a lock, so a concurrent reader could see half a file).
    """
    base = chapters.kernel_env(jobs=n_jobs, progress="0")
    base["PYTHONPATH"] = str(chapters.ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    for key in ("JAX_COMPILATION_CACHE_DIR", *CACHE_ENV):
        base.pop(key, None)
    waiting = chains(jobs)
    running: list[tuple[Job, subprocess.Popen, Path, float, list[Job], dict]] = []
    after: dict | None = None if then is None else {"proc": None, "returncode": None, "seconds": None,
                                                     "log": workdir / "then.log"}

    def start(rest: list[Job], env: dict) -> None:
        if not rest:
            return
        job, rest = rest[0], rest[1:]
        folder = workdir / job.chapter / job.variant
        folder.mkdir(parents=True, exist_ok=True)
        log_path = workdir / f"{job.chapter}__{job.variant}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                _command(job, folder, cell_timeout), cwd=chapters.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        running.append((job, proc, log_path, time.monotonic(), rest, env))

    def after_running() -> bool:
        return after is not None and after["proc"] is not None and after["returncode"] is None

    while waiting or running or (after is not None and after["returncode"] is None):
        while waiting and len(running) + after_running() < n_jobs:
            chain = waiting.pop(0)
            env = dict(base)
            if share_compiled:
                env["JAX_COMPILATION_CACHE_DIR"] = str(workdir / "jax-cache" / chain[0].chapter)
                env.update(CACHE_ENV)
            start(chain, env)
        if after is not None and after["proc"] is None and not waiting and len(running) < n_jobs:
            with open(after["log"], "w") as log:
                after["proc"] = subprocess.Popen(then, shell=True, cwd=chapters.ROOT, stdout=log, stderr=subprocess.STDOUT)
            after["t0"] = time.monotonic()
        time.sleep(0.2)
        if after_running() and after["proc"].poll() is not None:
            after["returncode"] = after["proc"].returncode
            after["seconds"] = time.monotonic() - after["t0"]
            echo(f"{'pass' if after['returncode'] == 0 else 'FAIL'} {then} ({after['seconds']:.0f} s, beside the chapters)")
        for item in list(running):
            job, proc, log_path, t0, rest, env = item
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            running.remove(item)
            job.seconds = time.monotonic() - t0
            # the run's processor time: the runner and its reaped children (the kernel)
            job.cpu_seconds = usage.ru_utime + usage.ru_stime
            _collect(job, proc.returncode, log_path, workdir, failed_dir)
            echo(_line(job))
            start(rest, env)
    if after is not None:
        after["log"] = after["log"].read_text(errors="replace")
        del after["proc"]
    return after


def _collect(job: Job, returncode: int, log_path: Path, workdir: Path, failed_dir: Path) -> None:
    log_text = log_path.read_text() if log_path.exists() else ""
    if job.kind == "nbval":
        job.status = "pass" if returncode == 0 else "fail"
        if job.status == "fail":
            job.message = _nbval_failure(log_text)
            failed_dir.mkdir(parents=True, exist_ok=True)
            keep = failed_dir / f"{job.chapter}__nbval.log"
            shutil.copyfile(log_path, keep)
            job.notebook = _rel(keep)
        return
    result = workdir / job.chapter / job.variant / "result.json"
    try:
        res = json.loads(result.read_text())
        job.status = "pass" if res["ok"] else "fail"
        job.message, job.cell = res["message"], res["cell"]
    except (OSError, ValueError, KeyError):
        lines = log_text.strip().splitlines()
        job.status, job.message = "fail", (lines[-1] if lines else f"runner exited with {returncode}")
    if job.status == "fail":
        nb = workdir / job.chapter / job.variant / f"{job.chapter}.ipynb"
        if nb.exists():
            failed_dir.mkdir(parents=True, exist_ok=True)
            keep = failed_dir / f"{job.chapter}__{job.variant}.ipynb"
            shutil.copyfile(nb, keep)
            job.notebook = _rel(keep)


def _first(message: str) -> str:
    lines = message.strip().splitlines()
    if not lines:
        return ""
    return lines[0] + (f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else "")


def _params_text(values: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()) or "(its own values)"


def _line(job: Job) -> str:
    t = f"{job.seconds:6.1f} s" if job.seconds is not None else "      -"
    t += f"  (cpu {job.cpu_seconds:5.1f} s)" if job.cpu_seconds is not None else " " * 16
    msg = f"  {_first(job.message)}" if job.status != "pass" and job.message else ""
    return f"{job.status.upper():7s} {job.chapter:26s} {job.variant:18s} {t}{msg}"


def table_text(rows: list[Job]) -> str:
    """The plain-text table printed at the end."""
    lines = [f"{'result':7s} {'chapter':26s} {'variant':18s} {'wall time':>8s} {'(cpu time)':>15s}  first line of the failure", "-" * 110]
    lines += [_line(j) for j in rows]
    return "\n".join(lines)


def _md_code(text: str) -> str:
    """``text`` as a code span in a Markdown table cell (no emphasis, math or links inside)."""
    text = " ".join(text.split()).replace("|", "\\|")
    if not text:
        return ""
    return f"``{text}``" if "`" in text else f"`{text}`"


def table_markdown(report: dict) -> str:
    """The results as a Markdown table (included by the book page)."""
    when = report["finished"][:16].replace("T", " ")
    head = [
        f"Run of {when} UTC on {report['machine']}, {report['jobs']} chapter(s) at a time, "
        f"load average {report['load_before']} before; {report['passed']} passed, "
        f"{report['failed']} failed, wall time {report['wall_seconds'] / 60:.1f} min.",
        "",
        "| chapter | variant | parameters | result | wall (s) | CPU (s) | first line of the failure |",
        "|---|---|---|---|---:|---:|---|",
    ]
    body = []
    for r in report["runs"]:
        result = {"pass": "pass", "fail": "**FAIL**", "invalid": "**INVALID**"}[r["status"]]
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
        cpu = "" if r.get("cpu_seconds") is None else f"{r['cpu_seconds']:.0f}"
        message = _md_code(_first(r["message"])) if r["message"] and r["status"] != "pass" else ""
        params = _md_code(_params_text(r["parameters"])) if r["variant"] != "(variants file)" else ""
        body.append(f"| {r['chapter']} | {r['variant']} | {params} | {result} | {seconds} | {cpu} | {message} |")
    return "\n".join(head + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make variants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-j", type=int, default=2, help="chapters executed at a time (default 2)")
    parser.add_argument("--notebooks", type=Path, default=chapters.NOTEBOOKS, help="folder of the chapters")
    parser.add_argument("--only", action="append", default=[], help="run only these chapters (06, 06_slug)")
    parser.add_argument("--with-default", action="store_true", help="also run each chapter with its own values")
    parser.add_argument("--nbval", action="store_true",
                        help="first check each chapter's stored outputs with nbval (what `make test` runs)")
    parser.add_argument("--cold", action="store_true",
                        help="no compilation cache shared by a chapter's runs: every run compiles all it uses")
    parser.add_argument("--record", action="store_true", help="also write book/generated/variants.{json,md}")
    parser.add_argument("--then", metavar="COMMAND",
                        help="a shell command to run in the first slot that frees once every chain has started "
                             "(its output is printed at the end; its failure fails the run)")
    parser.add_argument("--check", action="store_true", help="validate the variants files only")
    parser.add_argument("--out", type=Path, default=BUILD, help="where results.{json,md} go")
    parser.add_argument("--record-dir", type=Path, default=RECORD)
    parser.add_argument("--min-variants", type=int, default=2)
    parser.add_argument("--cell-timeout", type=int, default=900)
    parser.add_argument("--longest-first", action="store_true",
                        help="print the chapters' .ipynb paths, longest recorded run first, and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1; got {args.jobs}")

    sources = chapters.chapter_sources(args.notebooks)
    if args.longest_first:
        # for nbval under xdist (--no-loadscope-reorder): the longest chapters start first, so
        # the last one to finish is a short one and the other core is not left idle long
        jobs = [Job(md.stem, "default", {}, md=str(md)) for md in sources]
        _expected_times(jobs, args.record_dir / "variants.json")
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i].expected)
        print(" ".join(_rel(Path(jobs[i].md).with_suffix(".ipynb")) for i in order))
        return 0
    if args.only:
        try:
            wanted = {chapters.find_chapter(s, args.notebooks) for s in args.only}
        except chapters.ChapterError as err:
            parser.error(str(err))
        sources = [s for s in sources if s in wanted]
    if not sources:
        print(f"make variants: no chapters {chapters.CHAPTER_GLOB} in {args.notebooks}", file=sys.stderr)
        return 1
    todo = plan(sources, args.with_default, args.min_variants, nbval=args.nbval)
    for bad in todo.invalid:
        print(f"INVALID {bad.message}", file=sys.stderr, flush=True)
    if args.check:
        n = sum(1 for j in todo.jobs if j.variant != "default")
        print(f"{len(sources) - len(todo.invalid)} variants file(s) valid ({n} variants), {len(todo.invalid)} invalid")
        return 1 if todo.invalid else 0

    _expected_times(todo.jobs, args.record_dir / "variants.json")
    load = [round(x, 2) for x in os.getloadavg()]
    print(
        f"make variants: {len(todo.jobs)} run(s) of {len(sources)} chapter(s), {args.jobs} chapter(s) at a time, "
        f"{'each run compiling all it uses' if args.cold else 'runs of a chapter sharing compiled programs'} "
        f"(load average {load[0]})",
        flush=True,
    )
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    failed_dir = args.out / "failed"
    shutil.rmtree(failed_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="entk-variants-") as tmp:
        after = run(todo.jobs, args.jobs, Path(tmp), failed_dir, args.cell_timeout, lambda s: print(s, flush=True),
                    share_compiled=not args.cold, then=args.then)
    wall = time.monotonic() - t0

    order = {md.stem: i for i, md in enumerate(sources)}
    rows = sorted(todo.jobs + todo.invalid, key=lambda j: (order[j.chapter], j.variant not in ("nbval", "default")))
    report = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "jobs": args.jobs,
        "shared_compilation": not args.cold,
        "load_before": load,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(wall, 1),
        "passed": sum(j.status == "pass" for j in rows),
        "failed": sum(j.status != "pass" for j in rows),
        "regimes": todo.regimes,
        "runs": [
            {k: v for k, v in asdict(j).items() if k not in ("md", "expected")}
            | {"seconds": None if j.seconds is None else round(j.seconds, 1),
               "cpu_seconds": None if j.cpu_seconds is None else round(j.cpu_seconds, 1)}
            for j in rows
        ],
    }
    chapters.write_json(args.out / "results.json", report)
    (args.out / "results.md").write_text(table_markdown(report))
    if args.record:
        from tools import pages

        chapters.write_json(args.record_dir / "variants.json", report)
        pages.main(["--notebooks", str(args.notebooks), "--out", str(args.record_dir)])
    print()
    print(table_text(rows))
    print()
    print(
        f"{report['passed']} passed, {report['failed']} failed in {wall / 60:.1f} min "
        f"(load average {load[0]} before, {report['load_after'][0]} after); "
        f"table: {_rel(args.out / 'results.md')}" + (f", recorded in {_rel(args.record_dir)}" if args.record else "")
    )
    if failed_dir.exists():
        print(f"executed notebooks of the failures: {_rel(failed_dir)}/")
    if after is not None:
        print(f"\n--- {args.then} (run beside the last chapters: {after['seconds']:.0f} s, exit status {after['returncode']}) ---")
        print(after["log"].rstrip())
        if after["returncode"] != 0:
            return 1
    return 0 if report["failed"] == 0 else 1


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(chapters.ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
