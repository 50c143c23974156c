"""Time the eNTK three ways, side by side, in one run.

* structured: ``helpers.ntk`` with ``method="structured"`` (the factorised eNTK of
  ``helpers.structured``: per dense layer (a.a') B B'^T; diagonal Jacobians of elementwise
  layers, seed 000 §7 and Novak et al. 2022);
* generic: ``method="generic"`` (per-example Jacobians, chunked, contracted over parameters);
* naive: the whole per-example Jacobian ``J (N, C, P)`` materialised, then ``J J^T``.

Workloads: the modular-addition class-mean kernel (p = 29, width 512, all 841 inputs; the
model of ``helpers.modular``) and a deep tanh MLP with biases (class-mean and full kernel).
The slow paths are called once ("first call", compilation included, which is small next to
their run time); the structured path is also timed as the best of ``--repeats`` further calls
("repeat": compiled functions are cached per model). The speed-up compares the generic path's
single call with the structured path's repeat time (or first call, for the slow paths). The
structured result is checked against the others on every workload ("max rel diff"). Speed is
reported here and never asserted in tests.

Run from the repository root (about 5-10 minutes on a 2-core CPU):

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_entk.py > benchmarks/results/bench_entk.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from helpers import modular, ntk
from helpers.models import make_mlp


def naive_kernel(f, params, x, collapse):
    jac = np.asarray(ntk.jacobian(f, params, x))  # (N, C, P), all at once
    n, c, _ = jac.shape
    if collapse == "class_mean":  # (1/C) sum_i J_i J_i^T = one (N, C*P) Gram matrix
        flat = jac.reshape(n, -1)
        return flat @ flat.T / c
    flat = jac.reshape(n * c, -1)
    return (flat @ flat.T).reshape(n, c, n, c).transpose(0, 2, 1, 3)


def timed(fn, repeats):
    """(result, time of the first call, best time of ``repeats`` further calls or nan)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = np.nan
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = np.nanmin([best, time.perf_counter() - t0])
    return out, first, best


def run(name, f, params, x, collapse, repeats, skip_naive=False):
    kernel = ntk.class_mean_entk if collapse == "class_mean" else ntk.entk
    rows = []
    fast, first, best = timed(lambda: kernel(f, params, x, method="structured"), repeats)
    rows.append(("structured", first, best, 0.0))
    generic, first, best = timed(lambda: kernel(f, params, x, method="generic"), 0)
    err = float(np.abs(fast - generic).max() / np.abs(generic).max())
    rows.append(("generic", first, best, err))
    if err > 1e-4:
        raise SystemExit(f"{name}: structured and generic kernels differ by {err:.2e}")
    if not skip_naive:
        naive, first, best = timed(lambda: naive_kernel(f, params, x, collapse), 0)
        rows.append(("naive", first, best, float(np.abs(fast - naive).max() / np.abs(naive).max())))
    n_params = sum(np.size(l) for l in jax.tree_util.tree_leaves(params))
    print(f"\n## {name}: N = {x.shape[0]} inputs, P = {n_params} parameters, kernel {collapse or 'full'}")
    print(f"{'method':<12}{'first call [s]':>16}{'repeat [s]':>12}{'speed-up':>10}{'max rel diff':>15}")
    base = rows[1][1]  # the generic path's single call
    for label, first, best, err in rows:
        speed = base / (best if np.isfinite(best) else first)
        print(f"{label:<12}{first:>16.3f}{best:>12.4f}{speed:>10.1f}{err:>15.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-naive", action="store_true", help="skip the materialised Jacobian (4.3 GB for modular)")
    args = parser.parse_args()
    print("# eNTK benchmark: structured vs generic vs naive")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}")
    print("times in seconds; 'first call' includes tracing and compilation; 'repeat' is the best of")
    print(f"{args.repeats} further calls of the structured path (compiled functions are cached); speed-up:")
    print("generic single call / this method's time; 'max rel diff' is against the structured kernel.")
    print("float32 throughout.")

    p, width = 29, 512
    data = modular.make_data(p, seed=0)
    params = modular.init_params(jax.random.PRNGKey(0), p, width)
    run(f"modular addition (p = {p}, width {width})", modular.apply, params, jnp.asarray(data.x), "class_mean", args.repeats, args.skip_naive)

    f, params = make_mlp([32, 256, 256, 256, 10], key=jax.random.PRNGKey(0), activation="tanh")
    x = jax.random.normal(jax.random.PRNGKey(1), (500, 32))
    run("deep MLP 32-256-256-256-10, tanh, biases", f, params, x, "class_mean", args.repeats, args.skip_naive)
    run("deep MLP 32-256-256-256-10, tanh, biases", f, params, x[:200], None, args.repeats, args.skip_naive)


if __name__ == "__main__":
    main()
