"""The suite's results (``results.json``) as a Markdown table and a plot.

    python -m benchmarks.entk_suite.report [benchmarks/results/results.json]

regenerates ``results.md`` and ``bench.png`` beside the JSON. The book's Performance page
includes ``results.md`` and shows ``bench.png`` (both are committed with the JSON, and
``tests/test_bench_suite.py`` checks that the committed Markdown is what this module makes of
the committed JSON). Everything here is a function of the JSON: nothing is typed in.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

LABELS = {
    "structured": "helpers.ntk, structured",
    "generic": "helpers.ntk, generic",
    "entk_fn:jacobian": "ntk.entk_fn, jacobian",
    "entk_fn:vector_products": "ntk.entk_fn, vector products",
    "naive": "naive (whole Jacobian, one GEMM)",
    "closed_form": "closed form (seed 002 App. B)",
    "nt:JACOBIAN_CONTRACTION": "neural-tangents, JACOBIAN_CONTRACTION",
    "nt:NTK_VECTOR_PRODUCTS": "neural-tangents, NTK_VECTOR_PRODUCTS",
    "nt:STRUCTURED_DERIVATIVES": "neural-tangents, STRUCTURED_DERIVATIVES",
    "operator:lanczos": "entk_operator + Lanczos",
    "operator:sketch": "entk_operator + sketch",
    "closed_form_operator:lanczos": "closed-form operator + Lanczos",
    "dual": "dual J^T J (tms.flattened_eigenpairs)",
    "closed_form_dual": "closed-form dual (tms.closed_form_dual)",
}

# the dominant cost of each method for the class-mean kernel of an MLP with L hidden layers of
# width w, C outputs, N examples, P ~ L w^2 parameters; the exponents it predicts in N, w, L
THEORY = {
    "structured": ("N C P + N^2 C L w", "1 to 2", "1 to 2 (2 once w >> N)", "1"),
    "generic": ("N C P + N^2 C P", "1 to 2 (2 once N >> 1)", "2", "1"),
    "naive": ("N C P + N^2 C P", "1 to 2 (2 once N >> 1)", "2", "1"),
    "nt:STRUCTURED_DERIVATIVES": ("N C P + N^2 C L w", "1 to 2", "1 to 2 (2 once w >> N)", "1"),
    "nt:JACOBIAN_CONTRACTION": ("N C P + N^2 C P", "1 to 2 (2 once N >> 1)", "2", "1"),
}


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def _sci(v):
    return "-" if v is None else f"{v:.1e}"


def run_line(res: dict) -> str:
    """One line for the console."""
    head = f"{res.get('workload')}, {res.get('impl')}:"
    if res.get("status") == "ok":
        return (f"{head} median {res['median']:.4g} s ({res['min']:.3g}-{res['max']:.3g}), first {res['first']:.3g} s, "
                f"peak {res['peak_rss']:.0f} MB, error {res['error']:.1e}")
    if res.get("status") == "mismatch":
        return f"{head} MISMATCH error {res['error']:.2e} > {res['tolerance']:.0e} (not timed)"
    return f"{head} {res.get('status')}: {_message(res)}"


def _message(res: dict) -> str:
    """The reason a run did not finish, without repeating its status ("stopped: stopped: ...")."""
    msg = str(res.get("message") or "")
    prefix = f"{res.get('status')}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def book_times(path: Path):
    """Per-chapter times of the chapters' own values in the last recorded ``make variants``."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    rows = [
        {"chapter": r["chapter"], "seconds": r.get("seconds"), "cpu_seconds": r.get("cpu_seconds"), "status": r.get("status")}
        for r in rec.get("runs", [])
        if r.get("variant") == "default"
    ]
    if not rows:
        return None
    return {"started": rec.get("started"), "jobs": rec.get("jobs"), "load_before": rec.get("load_before"),
            "load_after": rec.get("load_after"), "chapters": rows}


def _runs(results, workload):
    return {r["impl"]: r for r in results["runs"] if r.get("workload") == workload}


def _med(runs, impl):
    r = runs.get(impl)
    return r["median"] if r and r.get("status") == "ok" else None


def goals(results: dict) -> list[dict]:
    """The issue's goals, each with the measured ratio(s) and whether it is met."""
    out = []
    kernel_ws = [w for w in results["workloads"] if w["kind"] == "kernel" and "error" not in w]

    rows = []
    for w in kernel_ws:
        runs = _runs(results, w["name"])
        s = _med(runs, "structured")
        nts = {k: _med(runs, k) for k in runs if k.startswith("nt:")}
        ok_nts = {k: v for k, v in nts.items() if v is not None}
        if s is None or not nts:
            continue
        if ok_nts:
            best = min(ok_nts, key=ok_nts.get)
            rows.append({"workload": w["name"], "ratio": ok_nts[best] / s, "against": best})
        else:
            rows.append({"workload": w["name"], "ratio": None, "against": "no neural-tangents run finished"})
    out.append({"goal": "structured >= 1x neural-tangents' fastest, every workload", "rows": rows,
                "met": bool(rows) and all(r["ratio"] is None or r["ratio"] >= 1 for r in rows), "higher_is_better": True})

    rows = []
    for w in kernel_ws:
        runs = _runs(results, w["name"])
        s, c = _med(runs, "structured"), _med(runs, "closed_form")
        if s is not None and c is not None:
            rows.append({"workload": w["name"], "ratio": s / c, "against": "closed_form"})
    out.append({"goal": "structured within 2x of the closed form", "rows": rows,
                "met": bool(rows) and all(r["ratio"] <= 2 for r in rows), "higher_is_better": False})

    rows = []
    for w in kernel_ws:
        runs = _runs(results, w["name"])
        g, n = _med(runs, "generic"), _med(runs, "naive")
        if g is None or "naive" not in runs:
            continue
        if n is None:
            rows.append({"workload": w["name"], "ratio": None, "against": f"naive: {runs['naive'].get('status')}"})
        else:
            rows.append({"workload": w["name"], "ratio": n / g, "against": "naive"})
    out.append({"goal": "generic >= 1x the naive contraction, every workload", "rows": rows,
                "met": bool(rows) and all(r["ratio"] is None or r["ratio"] >= 1 for r in rows), "higher_is_better": True})

    rows = []
    for w in results["workloads"]:
        if w["name"] == "modular_top150":
            runs = _runs(results, w["name"])
            for impl in ("operator:lanczos", "operator:sketch"):
                m = _med(runs, impl)
                if m is not None:
                    rows.append({"workload": w["name"], "seconds": m, "against": impl})
    best = min((r["seconds"] for r in rows), default=None)
    out.append({"goal": "flattened modular top-150 eigenpairs <= 30 s", "rows": rows,
                "met": best is not None and best <= 30 and not results["quick"], "seconds": best})

    book = results.get("book")
    total = sum(r["seconds"] or 0 for r in book["chapters"]) if book else None
    cpu = sum(r["cpu_seconds"] or 0 for r in book["chapters"]) if book else None
    out.append({"goal": "whole book executed <= 5 min", "rows": [], "seconds": total, "cpu_seconds": cpu,
                "met": total is not None and total <= 300})
    return out


def slopes(results: dict) -> list[dict]:
    """Log-log slopes of each scaling curve over its last three finished points."""
    out = []
    curves = sorted({(r["curve"], r["impl"]) for r in results["scaling"]}, key=lambda t: (t[0], t[1]))
    for curve, impl in curves:
        pts = sorted((r for r in results["scaling"] if r["curve"] == curve and r["impl"] == impl and r.get("status") == "ok"),
                     key=lambda r: r["size"])
        stop = [r for r in results["scaling"] if r["curve"] == curve and r["impl"] == impl and r.get("status") != "ok"]
        slope = None
        if len(pts) >= 3:
            xs = np.log([r["size"] for r in pts[-3:]])
            ys = np.log([r["median"] for r in pts[-3:]])
            slope = float(np.polyfit(xs, ys, 1)[0])
        out.append({"curve": curve, "impl": impl, "sizes": [r["size"] for r in pts], "medians": [r["median"] for r in pts],
                    "slope": slope, "stopped": stop[0].get("message") if stop else None,
                    "stopped_at": stop[0]["size"] if stop else None})
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    envs = [r["env"] for r in results["runs"] if "env" in r]
    book_env = next((e for e in envs if "neural_tangents" not in e), {})
    peer_env = next((e for e in envs if "neural_tangents" in e), None)
    L = []
    L.append("<!-- generated by benchmarks/entk_suite/report.py from results.json; do not edit by hand -->")
    L.append("")
    L.append(f"Run of {results['started']}{' (quick mode: small sizes)' if results['quick'] else ''}: "
             f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, **shared with other jobs** "
             f"(load average {results['load_before'][0]} before, {results['load_after'][0]} after; the load "
             f"at the start of each process is in `results.json`). JAX {book_env.get('jax', '?')} on CPU, float32"
             + (f"; neural-tangents {peer_env.get('neural_tangents')} under JAX {peer_env.get('jax')}" if peer_env else "")
             + f". Times: median of {results['repeats']} calls after a first call; spread = min-max of those calls; "
             "compile = first call minus median (tracing and compilation). Memory: the process's peak resident "
             "memory (`getrusage`), including the interpreter and JAX (and TensorFlow for neural-tangents); "
             f"processes that passed {results['mem_cap_gb']:.0f} GB were stopped. Every output was checked against "
             "an independent float64 reference before it was timed (error = max |K - K_ref| / max |K_ref|; for "
             "spectra, the largest eigenvalue error relative to lambda_1, and the residual "
             "max ||K u - lambda u|| / lambda_1 under an independent operator).")
    for extra in results.get("separate_runs", []):
        L.append("")
        L.append(f"Run separately (`--only`) at {extra['started']} and merged into this table: "
                 f"{', '.join(extra['workloads'])} (load average {extra['load_before'][0]} before, "
                 f"{extra['load_after'][0]} after).")
    L.append("")
    L.append("### Goals")
    L.append("")
    L.append("| goal | measured | met |")
    L.append("|---|---|---|")
    for g in goals(results):
        if "seconds" in g and not g["rows"] and g["goal"].startswith("whole book"):
            meas = ("no recorded `make variants` run" if g["seconds"] is None else
                    f"{g['seconds']:.0f} s wall ({g['cpu_seconds']:.0f} s CPU) over the chapters' own values")
        elif "seconds" in g:
            meas = "; ".join(f"`{r['against']}` {r['seconds']:.1f} s" for r in g["rows"]) or "not run"
        else:
            meas = "; ".join(
                f"{r['workload']}: " + (f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-") + f" (vs `{r['against']}`)"
                for r in g["rows"]) or "not run"
        unmeasured = g["goal"].startswith("whole book") and g.get("seconds") is None
        L.append(f"| {g['goal']} | {meas} | {'not measured' if unmeasured else 'yes' if g['met'] else '**no**'} |")
    L.append("")
    L.append("Ratios: neural-tangents' or naive time / ours (higher is better), structured time / closed-form "
             "time (lower is better).")
    for w in results["workloads"]:
        L.append("")
        L.append(f"### {w['title']}")
        L.append("")
        if "error" in w:
            L.append(f"Preparation failed: {w['error']}")
            continue
        runs = _runs(results, w["name"])
        spectrum = w["kind"] == "spectrum"
        base_impl = "operator:lanczos" if spectrum else "structured"
        base = _med(runs, base_impl)
        if spectrum:
            L.append("| implementation | median [s] | spread [s] | compile [s] | peak memory [MB] | eigenvalue error | residual | products | time / Lanczos |")
            L.append("|---|---|---|---|---|---|---|---|---|")
        else:
            L.append("| implementation | median [s] | spread [s] | compile [s] | peak memory [MB] | error | time / structured |")
            L.append("|---|---|---|---|---|---|---|")
        for impl in w["impls"]:
            r = runs.get(impl)
            name = f"`{LABELS.get(impl, impl)}`"
            if r is None:
                continue
            if r.get("status") == "ok":
                cells = [_fmt(r["median"]), f"{_fmt(r['min'])}-{_fmt(r['max'])}", _fmt(r["compile"]), _fmt(r["peak_rss"], 4)]
                if spectrum:
                    cells += [_sci(r["error"]), _sci(r.get("residual")), str(r.get("products") or "-")]
                else:
                    cells += [_sci(r["error"])]
                cells.append(_fmt(r["median"] / base) + "x" if base else "-")
            elif r.get("status") == "mismatch":
                msg = f"output differs from the reference: error {r['error']:.1e} > {r['tolerance']:.0e}; not timed"
                cells = [msg] + ["-"] * (7 if spectrum else 5)
            else:
                msg = _message(r).replace("|", "/").replace("\n", " ")[:160]
                cells = [f"{r.get('status')}: {msg}"] + ["-"] * (7 if spectrum else 5)
            L.append(f"| {name} | " + " | ".join(cells) + " |")
    sl = slopes(results)
    if sl:
        L.append("")
        L.append("### Scaling: a deep tanh MLP's class-mean kernel")
        L.append("")
        from .child import BASE

        L.append(f"Base: N = {BASE['N']} examples, width {BASE['width']}, depth {BASE['depth']} hidden layers, "
                 f"{BASE['d_in']} inputs, C = {BASE['C']} outputs; one parameter varies. Slope: least-squares "
                 "log-log slope over the last three points of each curve (a curve stops after a point slower "
                 "than the cap, or a process stopped for memory). Theory: the method's dominant cost (P ~ L w^2 "
                 "parameters) and the exponents it predicts.")
        L.append("")
        L.append("| varied | implementation | sizes | median [s] | slope | theory: cost | theory: exponent |")
        L.append("|---|---|---|---|---|---|---|")
        col = {"N": 1, "width": 2, "depth": 3}
        for s in sl:
            th = THEORY.get(s["impl"], ("-", "-", "-", "-"))
            sizes = ", ".join(map(str, s["sizes"])) + (f"; stopped at {s['stopped_at']}" if s["stopped_at"] else "")
            meds = ", ".join(_fmt(v) for v in s["medians"])
            slope = "-" if s["slope"] is None else f"{s['slope']:.2f}"
            L.append(f"| {s['curve']} | `{LABELS.get(s['impl'], s['impl'])}` | {sizes} | {meds} | "
                     f"{slope} | {th[0]} | {th[col[s['curve']]]} |")
    if results["scaleout"]:
        L.append("")
        L.append("### The largest problem: the top of a flattened kernel too large to form")
        L.append("")
        L.append("| solver | devices | dimension | dense float32 | k | solve [s] | compile [s] | products | residual | solver residual | peak memory [MB] |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results["scaleout"]:
            if r.get("status") != "ok":
                L.append(f"| {r.get('method')} | {r.get('devices')} | {r.get('status')}: {r.get('message')} |" + " - |" * 8)
                continue
            L.append(f"| {r['method']} | {r['devices']}{' (mesh)' if r['mesh'] else ''} | {r['dim']} | {r['dense_gb']:.0f} GB | "
                     f"{r['k']} | {_fmt(r['seconds'])} | {_fmt(r['compile'])} | {r['products']} | {_sci(r['residual'])} | "
                     f"{_sci(r['solver_residual'])} | {_fmt(r['peak_rss'], 4)} |")
        one = next((r for r in results["scaleout"] if r.get("status") == "ok" and not r["mesh"] and r["method"] == "lanczos"), None)
        mesh = next((r for r in results["scaleout"] if r.get("status") == "ok" and r["mesh"]), None)
        if one and mesh:
            a, b = np.asarray(one["eigenvalues"]), np.asarray(mesh["eigenvalues"])
            L.append("")
            L.append(f"Sharded over {mesh['devices']} forced host devices vs one device: largest eigenvalue difference "
                     f"{np.abs(a - b).max() / a[0]:.1e} of lambda_1 (the four devices share the same two cores: "
                     "this checks the code path, not a speed-up).")
    book = results.get("book")
    if book:
        L.append("")
        L.append("### The book's chapters (the last recorded `make variants`, the chapters' own values)")
        L.append("")
        L.append(f"Recorded {book['started']}, {book['jobs']} chapters at a time, load average {book['load_before'][0]} "
                 f"before and {book['load_after'][0]} after. CPU time is the kernel's and runner's processor time "
                 "(close to the time on an idle core whatever the load).")
        L.append("")
        L.append("| chapter | wall [s] | CPU [s] | status |")
        L.append("|---|---|---|---|")
        for r in book["chapters"]:
            L.append(f"| {r['chapter']} | {_fmt(r['seconds'])} | {_fmt(r['cpu_seconds'])} | {r['status']} |")
        tw = sum(r["seconds"] or 0 for r in book["chapters"])
        tc = sum(r["cpu_seconds"] or 0 for r in book["chapters"])
        L.append(f"| all | {tw:.0f} | {tc:.0f} | |")
    L.append("")
    L.append(f"The suite took {results['suite_seconds'] / 60:.1f} min.")
    return "\n".join(L) + "\n"


MARKERS = {"structured": ("o", "C0"), "generic": ("s", "C1"), "entk_fn:jacobian": ("^", "C2"),
           "entk_fn:vector_products": ("v", "C2"), "naive": ("x", "C3"), "closed_form": ("*", "k"),
           "nt:JACOBIAN_CONTRACTION": ("D", "C4"), "nt:NTK_VECTOR_PRODUCTS": ("d", "C4"),
           "nt:STRUCTURED_DERIVATIVES": ("P", "C4"), "operator:lanczos": ("o", "C5"), "operator:sketch": ("s", "C5"),
           "closed_form_operator:lanczos": ("*", "C7"), "dual": ("^", "C6"), "closed_form_dual": ("*", "C6")}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = plt.figure(figsize=(12, 11))
    gs = fig.add_gridspec(2, 3, height_ratios=[1.2, 1], hspace=0.55)
    ax = fig.add_subplot(gs[0, :])
    names = [w["name"] for w in results["workloads"]]
    seen = set()
    for yi, w in enumerate(results["workloads"]):
        runs = _runs(results, w["name"])
        for impl, r in runs.items():
            if r.get("status") != "ok":
                continue
            mk, col = MARKERS.get(impl, ("o", "gray"))
            lab = LABELS.get(impl, impl) if impl not in seen else None
            seen.add(impl)
            ax.errorbar(r["median"], yi, xerr=[[r["median"] - r["min"]], [r["max"] - r["median"]]], fmt=mk, color=col,
                        ms=8, mfc="none" if impl.startswith("nt:") else col, label=lab, capsize=2)
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("median time per call [s] (bars: min-max)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title(f"eNTK implementations on a shared {results['machine']['cores']}-core CPU "
                 f"(load {results['load_before'][0]}), float32")
    sl = slopes(results)
    for i, curve in enumerate(["N", "width", "depth"]):
        a = fig.add_subplot(gs[1, i])
        for s in sl:
            if s["curve"] != curve or not s["sizes"]:
                continue
            mk, col = MARKERS.get(s["impl"], ("o", "gray"))
            lab = LABELS.get(s["impl"], s["impl"]).split(",")[0 if s["impl"] in ("naive",) else -1].strip()
            if s["impl"].startswith("nt:"):
                lab = "NT " + lab
            slope = "" if s["slope"] is None else f" ({s['slope']:.2f})"
            a.loglog(s["sizes"], s["medians"], marker=mk, color=col, mfc="none" if s["impl"].startswith("nt:") else col,
                     label=lab.replace("naive (whole Jacobian", "naive").replace(" one GEMM)", "") + slope)
        a.set_xscale("log", base=2)
        a.xaxis.set_major_formatter(ScalarFormatter())
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel({"N": "examples N", "width": "width w", "depth": "hidden layers L"}[curve])
        a.set_ylabel("median time [s]" if i == 0 else "")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=6, title="slope of the last 3 points", title_fontsize=6, loc="upper left")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    out = Path(out)
    (out / "results.md").write_text(markdown(results))
    try:
        plot(results, out / "bench.png")
    except ImportError:  # matplotlib is a dependency of the book, not of the library
        pass


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "results" / "results.json"
    write(json.loads(path.read_text()), path.parent)
    print(f"wrote {path.parent / 'results.md'} and {path.parent / 'bench.png'}")


if __name__ == "__main__":
    main()
