"""Timing, memory and the child-process protocol of the benchmark suite.

Imported by the book's environment and by the peer environment (neural-tangents under
JAX 0.4.25, numpy < 2), so it uses numpy and the standard library only.

Protocol. The driver starts one process per (workload, implementation). The process loads the
workload's saved inputs (``inputs.npz``: parameters and examples) and its reference result
(``ref_*.npy``, computed independently and saved by the ``prepare`` step), builds the
implementation, and calls ``measure``: one first call (tracing and compilation included), the
check of that output against the reference (an implementation whose output differs is not
timed), then ``repeats`` further calls. It prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULT_PREFIX = "RESULT "


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (``getrusage`` ``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """The process's resident memory now (``/proc/self/status``), or the peak where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def block(out: Any) -> Any:
    """Wait for asynchronous JAX results (a pytree of arrays, or numpy arrays)."""
    leaves = out.values() if isinstance(out, dict) else (out if isinstance(out, (list, tuple)) else [out])
    for leaf in leaves:
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
        elif isinstance(leaf, (dict, list, tuple)):
            block(leaf)
    return out


def load_inputs(folder: Path) -> tuple[dict, dict, np.ndarray]:
    """``(meta, params, x)`` of a prepared workload; ``params`` nested back from ``a/b`` keys."""
    meta = json.loads((folder / "meta.json").read_text())
    data = np.load(folder / "inputs.npz")
    params: dict = {}
    for key in meta["param_keys"]:
        node = params
        *path, last = key.split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = np.asarray(data["p:" + key])
    return meta, params, np.asarray(data["x"])


def save_inputs(folder: Path, meta: dict, params: dict, x: np.ndarray) -> None:
    """Save parameters (a nested dict of arrays), examples and metadata for the children."""
    folder.mkdir(parents=True, exist_ok=True)
    flat: dict = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}/")
            else:
                flat[f"{prefix}{k}"] = np.asarray(v)

    walk(params, "")
    meta = dict(meta, param_keys=list(flat))
    np.savez(folder / "inputs.npz", x=np.asarray(x), **{"p:" + k: v for k, v in flat.items()})
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def references(folder: Path) -> dict[str, np.ndarray]:
    """The reference arrays of a workload, memory-mapped (``ref_NAME.npy`` -> ``{NAME: array}``)."""
    return {p.stem[4:]: np.load(p, mmap_mode="r") for p in sorted(folder.glob("ref_*.npy"))}


def rel_diff(a: Any, ref: np.ndarray) -> float:
    """``max |a - ref| / max |ref|``, in chunks of the leading axis (no full-size temporary)."""
    a = np.asarray(a)
    if a.shape != ref.shape:
        raise ValueError(f"shape {a.shape} differs from the reference's {ref.shape}")
    num, den = 0.0, 0.0
    step = max(1, int(2**26 // max(1, int(np.prod(ref.shape[1:], dtype=np.int64)))))
    for s in range(0, ref.shape[0], step):
        r = np.asarray(ref[s : s + step], dtype=np.float64)
        num = max(num, float(np.abs(a[s : s + step].astype(np.float64) - r).max()))
        den = max(den, float(np.abs(r).max()))
    return num / max(den, 1e-300)


def measure(fn: Callable[[], Any], check: Callable[[Any], dict], repeats: int, tolerance: float) -> dict:
    """Time ``fn``: the first call, the check of its output, then ``repeats`` more calls.

    Returns a dict with ``first`` (seconds, compilation included), ``times`` (the further
    calls), ``median``, ``min``, ``max``, ``compile`` (first minus median: tracing and
    compilation), the check's numbers (``error`` and any others), ``rss_before``/``peak_rss``
    (MB) and ``status`` (``"ok"`` or ``"mismatch"``: not timed further).
    """
    before = rss_mb()
    t0 = time.perf_counter()
    out = block(fn())
    first = time.perf_counter() - t0
    checked = check(out)
    del out
    res: dict = {"first": first, "rss_before": before, **checked}
    if not checked["error"] <= tolerance:
        res.update(status="mismatch", peak_rss=peak_rss_mb(), tolerance=tolerance)
        return res
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    res.update(
        status="ok",
        tolerance=tolerance,
        times=times,
        median=med,
        min=min(times),
        max=max(times),
        compile=max(first - med, 0.0),
        peak_rss=peak_rss_mb(),
    )
    return res


def emit(result: dict) -> None:
    """Print the result line the driver reads."""
    print(RESULT_PREFIX + json.dumps(result, default=float), flush=True)
    sys.stdout.flush()


def environment() -> dict:
    """Versions and threads, recorded with every result."""
    import jax

    return {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "pid": os.getpid(),
    }
