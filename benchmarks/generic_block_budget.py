"""The generic eNTK path against the naive contraction, at two memory budgets.

The modular-addition class-mean kernel (p = 23, n = 256, all 529 inputs, float32) through
``helpers.ntk.class_mean_entk(method="generic")`` with ``block_bytes`` = 256 MiB (the old
default: its 860 MB Jacobian is built in four passes) and 1 GiB (the default: one fused program),
and the naive contraction (one vmapped ``jax.jacrev`` of the flattened parameters, one matrix
product). Both outputs are checked against each other before timing; best and median of 5
calls after compilation. Writes benchmarks/results/generic_block_budget.txt.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from helpers import modular, ntk

P, WIDTH, REPS = 23, 256, 5
OUT = Path(__file__).resolve().parent / "results" / "generic_block_budget.txt"


def timed(fn):
    result = np.asarray(fn())  # compile and warm up
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        np.asarray(fn())
        times.append(time.perf_counter() - start)
    return result, min(times), float(np.median(times))


def main() -> None:
    params = modular.init_params(jax.random.PRNGKey(0), P, WIDTH)
    x = jnp.asarray(modular.make_data(P).x)
    flat, unravel = ravel_pytree(params)

    def single(theta, xi):
        return modular.apply(unravel(theta), xi[None])[0]

    @jax.jit
    def naive(theta):
        jac = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(theta, x)
        rows = jac.reshape(jac.shape[0], -1)
        return rows @ rows.T / jac.shape[1]

    load = os.getloadavg()[0]
    ref, best, med = timed(lambda: naive(flat))
    lines = [f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.2f}",
             f"modular class-mean kernel, p = {P}, n = {WIDTH}, N = {x.shape[0]}, float32; best / median of {REPS} calls [s]",
             f"naive contraction           {best:7.2f} {med:7.2f}"]
    for mib in (256, 1024):
        out, best_g, med_g = timed(lambda: ntk.class_mean_entk(modular.apply, params, x, method="generic", block_bytes=mib * 2**20))
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        if err > 1e-5:  # float32 sums over ~2e4 parameters
            raise AssertionError(f"generic path (block_bytes {mib} MiB) differs from the naive contraction by {err:.1e}")
        lines.append(f"generic, block {mib:4d} MiB  {best_g:7.2f} {med_g:7.2f}   naive/generic (median) {med / med_g:.2f}x")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
