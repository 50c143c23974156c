"""The eNTK benchmark suite: every implementation, checked equal, then timed in its own process.

    make bench                      # the whole suite (20-45 min on this shared 2-core CPU)
    make bench BENCH_FLAGS=--quick  # small sizes, a smoke run of a few minutes
    make bench-peers                # build neural-tangents' own environment first (.venv-peers)

What it does (``benchmarks/entk_suite``):

1. prepares each workload in a child process: parameters and examples saved as ``.npz``,
   and an independent float64 reference (seed 002 App. B closed forms where they exist,
   per-leaf ``jax.jacrev`` otherwise) -- cached in the data folder;
2. runs every (workload, implementation) in its own process: a first call (tracing and
   compilation included), the check of its output against the reference (an implementation
   whose output differs is reported as a mismatch and not timed), then ``--repeats`` calls
   (median, min, max); the process's peak resident memory (``getrusage``). A process whose
   memory passes ``--mem-cap-gb`` is stopped (the machine is shared) and reported so;
3. neural-tangents' ``empirical_ntk_fn`` (three implementations) runs the same way in the
   peer environment on the same saved inputs;
4. scaling curves of a deep MLP's class-mean kernel in N, width and depth, one process per
   implementation and curve;
5. the largest problem (a flattened kernel of dimension > 10^5 through the operator and
   Lanczos), on one device and sharded over four forced host devices;
6. writes ``results.json``, ``results.md`` and ``bench.png`` (``entk_suite/report.py``).

Speed is reported here and never asserted in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.entk_suite import report  # noqa: E402
from benchmarks.entk_suite.common import RESULT_PREFIX  # noqa: E402

PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
SCALING_IMPLS = ["structured", "generic", "naive", "nt:STRUCTURED_DERIVATIVES", "nt:JACOBIAN_CONTRACTION"]
SCALING = {
    False: {"N": [64, 128, 256, 512, 1024], "width": [64, 128, 256, 512, 1024], "depth": [1, 2, 4, 8]},
    True: {"N": [32, 64, 128], "width": [32, 64, 128], "depth": [1, 2, 4]},
}


def child_env(devices: int = 1) -> dict:
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_child(cmd: list, timeout: float, mem_cap_mb: float, env: dict | None = None, log=None) -> tuple[list, dict]:
    """Run a child; return its RESULT lines (parsed) and how it ended.

    A watcher reads ``/proc/PID/status`` every 0.1 s and stops the child when its resident
    memory passes ``mem_cap_mb``; the child's own ``getrusage`` peak is in its result.
    """
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = {"killed": None, "peak_seen_mb": 0.0}

    def watch():
        status = Path(f"/proc/{proc.pid}/status")
        t0 = time.monotonic()
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss = float(line.split()[1]) / 1024
                        state["peak_seen_mb"] = max(state["peak_seen_mb"], rss)
                        if rss > mem_cap_mb:
                            state["killed"] = f"stopped: resident memory passed the cap of {mem_cap_mb / 1024:.0f} GB"
                            proc.kill()
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                state["killed"] = f"stopped: ran past the time limit of {timeout:.0f} s"
                proc.kill()
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    rows = [json.loads(line[len(RESULT_PREFIX):]) for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
    if log is not None:
        log.write(f"$ {' '.join(map(str, cmd))}\n{err[-3000:]}\n")
        log.flush()
    end = {"returncode": proc.returncode, "killed": state["killed"], "peak_seen_mb": state["peak_seen_mb"]}
    if not rows and state["killed"] is None and proc.returncode:
        end["stderr"] = err.strip().splitlines()[-1][:400] if err.strip() else f"exit code {proc.returncode}"
    return rows, end


def peers_ready() -> bool:
    if not PEER_PYTHON.exists():
        return False
    probe = subprocess.run([str(PEER_PYTHON), "-c", "import neural_tangents"], env=child_env(), capture_output=True)
    return probe.returncode == 0


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(mem, 1) if mem else None,
            "python": platform.python_version()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few minutes")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the first (>= 5 for the record)")
    parser.add_argument("--only", nargs="*", help="workload names (default: all)")
    parser.add_argument("--skip", nargs="*", default=[], help="workload names to leave out")
    parser.add_argument("--no-peers", action="store_true", help="skip neural-tangents")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--no-scaleout", action="store_true")
    parser.add_argument("--mem-cap-gb", type=float, default=8.0, help="stop a child whose memory passes this")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    parser.add_argument("--scale-cap", type=float, default=3.0, help="stop a scaling curve after a point slower than this")
    parser.add_argument("--data", type=Path, help="inputs and references (default _build/bench-data[-quick])")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results, or _build/bench-quick)")
    args = parser.parse_args(argv)
    data = args.data or ROOT / "_build" / ("bench-data-quick" if args.quick else "bench-data")
    out = args.out or (ROOT / "_build" / "bench-quick" if args.quick else ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    log = open(out / "bench.log", "w")
    cap = args.mem_cap_gb * 1024
    py = sys.executable
    started = dt.datetime.now(dt.timezone.utc)
    load_before = [round(v, 2) for v in os.getloadavg()]
    t_suite = time.monotonic()
    have_peers = not args.no_peers and peers_ready()
    print(f"eNTK benchmark suite{' (quick)' if args.quick else ''}: load average {load_before}, "
          f"neural-tangents {'found' if have_peers else 'not run'}", flush=True)

    sys.path.insert(0, str(ROOT))
    from benchmarks.entk_suite.workloads import transformer_available, workloads

    ws = [w for w in workloads(args.quick) if (not args.only or w.name in args.only) and w.name not in args.skip]
    results = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": args.repeats,
        "machine": machine(),
        "load_before": load_before,
        "mem_cap_gb": args.mem_cap_gb,
        "transformer": transformer_available(),
        "skipped": list(args.skip),
        "workloads": [],
        "runs": [],
        "scaling": [],
        "scaleout": [],
    }
    def save_partial():  # after every workload and stage: a stopped suite keeps what it measured
        (out / "results.partial.json").write_text(json.dumps(results, indent=1, default=float) + "\n")

    for w in ws:
        save_partial()
        t0 = time.monotonic()
        rows, end = run_child([py, "-m", "benchmarks.entk_suite.child", "prepare", "--workload", w.name,
                               "--data", str(data)] + (["--quick"] if args.quick else []), args.timeout, cap, log=log)
        entry = {"name": w.name, "title": w.title, "kind": w.kind, "model": w.model, "settings": w.settings,
                 "collapse": w.collapse, "layerwise": w.layerwise, "k": w.k, "impls": w.impls,
                 "prepare_seconds": round(time.monotonic() - t0, 1)}
        if not rows:
            entry["error"] = end.get("killed") or end.get("stderr")
            print(f"  {w.name}: preparation failed: {entry['error']}", flush=True)
        results["workloads"].append(entry)
        if not rows:
            continue
        for impl in w.impls:
            if impl.startswith("nt:"):
                if not have_peers:
                    results["runs"].append({"workload": w.name, "impl": impl, "status": "not run",
                                            "message": "no peer environment (make bench-peers)"})
                    continue
                cmd = [str(PEER_PYTHON), "-m", "benchmarks.entk_suite.peer_nt", impl[3:], "--workload", w.name,
                       "--data", str(data), "--repeats", str(args.repeats)]
            else:
                cmd = [py, "-m", "benchmarks.entk_suite.child", "run", "--workload", w.name, "--impl", impl,
                       "--data", str(data), "--repeats", str(args.repeats)]
            load = round(os.getloadavg()[0], 2)
            rows, end = run_child(cmd, args.timeout, cap, log=log)
            res = rows[-1] if rows else {"workload": w.name, "impl": impl, "status": "stopped" if end["killed"] else "error",
                                         "message": end.get("killed") or end.get("stderr")}
            res["load"] = load
            res["peak_seen_mb"] = end["peak_seen_mb"]
            results["runs"].append(res)
            print(f"  {report.run_line(res)}", flush=True)
    if not args.no_scaling and not args.only:
        for curve, sizes in SCALING[args.quick].items():
            for impl in SCALING_IMPLS:
                if impl.startswith("nt:"):
                    if not have_peers:
                        continue
                    cmd = [str(PEER_PYTHON), "-m", "benchmarks.entk_suite.peer_nt", impl[3:], "--curve", curve]
                else:
                    cmd = [py, "-m", "benchmarks.entk_suite.child", "scale", "--curve", curve, "--impl", impl]
                cmd += ["--sizes", *map(str, sizes), "--repeats", str(args.repeats), "--cap", str(args.scale_cap)]
                rows, end = run_child(cmd, args.timeout, cap, log=log)
                done = {r["size"] for r in rows}
                if end["killed"]:
                    nxt = [s for s in sizes if s not in done]
                    if nxt:
                        rows.append({"curve": curve, "size": nxt[0], "impl": impl, "status": "stopped", "message": end["killed"]})
                results["scaling"].extend(rows)
                print(f"  scaling in {curve}, {impl}: " + ", ".join(
                    f"{r['size']}: {r['median']:.3g} s" if r.get("status") == "ok" else f"{r['size']}: {r['status']}" for r in rows), flush=True)
    save_partial()
    if not args.no_scaleout and not args.only:
        big = ["--p", "13", "--width", "128", "--k", "20"] if args.quick else ["--p", "48", "--width", "512", "--k", "50"]
        for method, devices in [("lanczos", 1), ("sketch", 1), ("lanczos", 4)]:
            cmd = [py, "-m", "benchmarks.entk_suite.scaleout", *big, "--method", method] + (["--mesh"] if devices > 1 else [])
            rows, end = run_child(cmd, args.timeout, cap, env=child_env(devices), log=log)
            res = rows[-1] if rows else {"method": method, "devices": devices, "status": "stopped" if end["killed"] else "error",
                                         "message": end.get("killed") or end.get("stderr")}
            res.setdefault("status", "ok")
            results["scaleout"].append(res)
            print(f"  scale-out {method} on {devices} device(s): " + (
                f"dim {res['dim']}, {res['seconds']:.1f} s, {res['products']} products, residual {res['residual']:.1e}, "
                f"peak {res['peak_rss'] / 1024:.2f} GB" if res["status"] == "ok" else res["message"]), flush=True)
    results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    results["suite_seconds"] = round(time.monotonic() - t_suite, 1)
    results["book"] = report.book_times(ROOT / "book" / "generated" / "variants.json")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    (out / "results.partial.json").unlink(missing_ok=True)
    report.write(results, out)
    print(f"results: {out / 'results.md'}, {out / 'results.json'}, {out / 'bench.png'} "
          f"({results['suite_seconds'] / 60:.1f} min, load {load_before[0]} -> {results['load_after'][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
