"""One implementation of the book's side on one prepared workload, in its own process.

    python -m benchmarks.entk_suite.child prepare --workload NAME --data DIR [--quick]
    python -m benchmarks.entk_suite.child run --workload NAME --impl IMPL --data DIR --repeats R
    python -m benchmarks.entk_suite.child scale --curve N|width|depth --impl IMPL --sizes ... --repeats R

``run`` prints one ``RESULT {json}`` line (``common.measure``); ``scale`` one per size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path

import numpy as np

from . import common


def _run(args) -> dict:
    from .impls import SKETCH_TOLERANCE, build, checker

    folder = Path(args.data) / args.workload
    meta, params, x = common.load_inputs(folder)
    refs = common.references(folder)
    import jax  # noqa: F401 - imported before the baseline memory is read

    fn = build(meta, params, x, args.impl)
    check = checker(meta, params, x, refs)
    tolerance = SKETCH_TOLERANCE if args.impl.endswith(":sketch") else meta["tolerance"]
    return common.measure(fn, check, args.repeats, tolerance)


# ----------------------------------------------------------------------------------------
# scaling curves: a deep tanh MLP's class-mean kernel, one implementation per process
# ----------------------------------------------------------------------------------------

BASE = {"N": 256, "width": 256, "depth": 3, "d_in": 32, "C": 10}


def scale_config(curve: str, size: int) -> dict:
    cfg = dict(BASE)
    cfg[curve] = size
    return cfg


def scale_model(cfg: dict):
    import jax

    from helpers.models import mlp_init

    sizes = [cfg["d_in"]] + [cfg["width"]] * cfg["depth"] + [cfg["C"]]
    params = mlp_init(jax.random.PRNGKey(0), sizes)
    x = jax.random.normal(jax.random.PRNGKey(1), (cfg["N"], cfg["d_in"]))
    return params, x


def _scale(args) -> None:
    import jax

    from helpers.models import mlp_apply

    from .impls import build

    f = lambda p, x: mlp_apply(p, x, activation="tanh")  # noqa: E731
    meta = {"model": "mlp", "settings": {}, "collapse": "class_mean", "layerwise": False, "kind": "kernel"}
    for size in args.sizes:
        cfg = scale_config(args.curve, size)
        params, x = scale_model(cfg)
        n_params = sum(int(np.size(l)) for l in jax.tree_util.tree_leaves(params))
        row = {"curve": args.curve, "size": size, "impl": args.impl, "P": n_params, **cfg}
        try:
            fn = build(meta, jax.tree_util.tree_map(np.asarray, params), np.asarray(x), args.impl)
            t0 = time.perf_counter()
            common.block(fn())
            row["first"] = time.perf_counter() - t0
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                common.block(fn())
                times.append(time.perf_counter() - t0)
            row.update(times=times, median=statistics.median(times), status="ok")
        except Exception as err:  # noqa: BLE001 - recorded, the curve stops here
            row.update(status="error", message=f"{type(err).__name__}: {str(err)[:300]}")
            common.emit(row)
            return
        common.emit(row)
        if row["median"] > args.cap:
            return  # larger sizes would take longer still


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["prepare", "run", "scale"])
    parser.add_argument("--workload")
    parser.add_argument("--impl")
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--curve")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--cap", type=float, default=30.0, help="scale: stop a curve after a point slower than this")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        from .workloads import prepare, workloads

        w = {w.name: w for w in workloads(args.quick)}[args.workload]
        t0 = time.perf_counter()
        prepare(w, Path(args.data))
        common.emit({"workload": w.name, "seconds": time.perf_counter() - t0})
        return
    if args.command == "scale":
        _scale(args)
        return
    try:
        res = _run(args)
    except Exception as err:  # noqa: BLE001 - the driver records the failure
        traceback.print_exc()
        res = {"status": "error", "message": f"{type(err).__name__}: {str(err)[:400]}", "peak_rss": common.peak_rss_mb()}
    res.update(workload=args.workload, impl=args.impl, env=common.environment())
    common.emit(res)


if __name__ == "__main__":
    main()
