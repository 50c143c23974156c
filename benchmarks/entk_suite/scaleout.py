"""The largest problem run here: the top of the spectrum of a flattened eNTK too large to form.

    python -m benchmarks.entk_suite.scaleout --p 48 --width 512 --k 50 --method lanczos [--mesh]

The modular-addition model on all ``p^2`` inputs: the flattened kernel has dimension ``p^3``
(110 592 for p = 48; as a dense float32 matrix it would take 49 GB). Its top ``k`` eigenpairs
come from ``ntk.top_eigenpairs`` on ``ntk.entk_operator`` (one vjp and one jvp per product,
neither the Jacobian nor the kernel formed). Reported: the time of the solve (after one product
compiled the operator; compilation reported apart), the number of products, the solver's
residuals, an independent residual ``||K u - lambda u|| / lambda_1`` of every returned pair
with the closed-form operator of seed 002 App. B (``workloads.modular_operator``, float64),
and the peak resident memory of the process.

With ``--mesh`` the operator is sharded over every device of a one-axis
``jax.sharding.Mesh`` (run with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` to get
four CPU devices); the driver compares its eigenvalues with the single-device run's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import common


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--p", type=int, default=48)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--method", choices=["lanczos", "sketch"], default="lanczos")
    parser.add_argument("--mesh", action="store_true")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from helpers import modular, ntk

    from .impls import SKETCH
    from .workloads import modular_operator

    params = modular.init_params(jax.random.PRNGKey(0), args.p, args.width)
    x = jnp.asarray(modular.make_data(args.p, seed=0).x)
    mesh = None
    if args.mesh:
        from jax.sharding import Mesh

        mesh = Mesh(np.array(jax.devices()), ("data",))
    before = common.rss_mb()
    t0 = time.perf_counter()
    op = ntk.entk_operator(modular.apply, params, x, mesh=mesh)
    dim = op.shape[0]
    v = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    op.matvec(v)  # compiles the product
    if args.method == "sketch":
        op.matmat(np.zeros((dim, (1 + SKETCH["oversample_factor"]) * args.k), np.float32))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.method == "sketch":
        lam, vecs, info = ntk.top_eigenpairs(op, args.k, method="sketch", return_info=True,
                                             oversample=SKETCH["oversample_factor"] * args.k,
                                             power_iters=SKETCH["power_iters"])
    else:
        lam, vecs, info = ntk.top_eigenpairs(op, args.k, method="lanczos", return_info=True)
    solve_s = time.perf_counter() - t0
    peak = common.peak_rss_mb()
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    check = modular_operator(p64, np.asarray(x))
    V = np.asarray(vecs, np.float64)
    resid = np.linalg.norm(check.matmat(V) - V * lam[None, :], axis=0) / lam[0]
    n_params = sum(int(np.size(l)) for l in jax.tree_util.tree_leaves(params))
    common.emit({
        "p": args.p, "width": args.width, "N": int(x.shape[0]), "C": args.p, "P": n_params, "dim": int(dim),
        "dense_gb": dim * dim * 4 / 1e9, "k": args.k, "method": args.method, "devices": len(jax.devices()),
        "mesh": bool(args.mesh), "compile": compile_s, "seconds": solve_s, "products": info["products"],
        "solver_residual": float(np.max(info["residuals"])), "residual": float(resid.max()),
        "rss_before": before, "peak_rss": peak, "eigenvalues": [float(l) for l in lam],
        "env": common.environment(),
    })


if __name__ == "__main__":
    main()
