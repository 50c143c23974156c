"""neural-tangents' ``empirical_ntk_fn`` on a prepared workload, in the peer environment.

Run by the driver as ``.venv-peers/bin/python -m benchmarks.entk_suite.peer_nt IMPL ...``
(neural-tangents 0.6.5, JAX 0.4.25, numpy < 2; ``make bench-peers`` builds it). It imports
neither ``helpers`` nor the book's JAX: the models are written again below in plain JAX, and
the output is checked against the same saved reference as every other implementation, so a
model written differently here would show as a mismatch, not as a time.

``empirical_ntk_fn`` is called with ``vmap_axes=0`` (examples are independent, which lets it
vmap over the batch: its fastest setting for these models) and ``trace_axes=(-1,)`` for
class-mean kernels (neural-tangents averages over traced axes: the class mean) or ``()`` for
full kernels (layout ``(N1, N2, C, C)``), and compiled with ``jax.jit``.
"""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path

import numpy as np

from . import common


def _mlp(params, x):
    import jax.numpy as jnp

    names = sorted(params, key=lambda s: int(s.removeprefix("layer")))
    h = x
    for i, name in enumerate(names):
        w = params[name]["w"]
        h = (h @ w) / jnp.sqrt(w.shape[0]) + params[name]["b"]
        if i < len(names) - 1:
            h = jnp.tanh(h)
    return h


def _modular(params, x):
    import jax.numpy as jnp

    w1, w2 = params["W1"], params["W2"]
    h = (x @ w1.T) / jnp.sqrt(w1.shape[1])
    return (h**2) @ w2.T / w1.shape[0]


def _tms(params, x):
    import jax

    return jax.nn.relu((x @ params["w"].T) @ params["w"] + params["b"])


def _transformer(params, x):
    import jax
    import jax.numpy as jnp

    resid = jnp.einsum("ntv,vd->ntd", x, params["embed"]) + params["pos"]
    d_head = params["W_Q"].shape[2]
    query = jnp.einsum("nd,hde->nhe", resid[:, 2], params["W_Q"])
    keys = jnp.einsum("ntd,hde->nhte", resid, params["W_K"])
    values = jnp.einsum("ntd,hde->nhte", resid, params["W_V"])
    scores = jnp.einsum("nhe,nhte->nht", query, keys) / float(np.sqrt(d_head))
    pattern = jax.nn.softmax(scores, axis=-1)
    mixed = jnp.einsum("nht,nhte->nhe", pattern, values)
    resid_mid = resid[:, 2] + jnp.einsum("nhe,hed->nd", mixed, params["W_O"])
    neurons = jax.nn.relu(resid_mid @ params["W_in"])
    resid_post = resid_mid + neurons @ params["W_out"]
    return resid_post @ params["unembed"]


MODELS = {"mlp": _mlp, "modular": _modular, "tms": _tms, "transformer": _transformer}


def build(meta, params, x, implementation):
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt

    f = MODELS[meta["model"]]
    params = jax.tree_util.tree_map(jnp.asarray, params)
    xj = jnp.asarray(x)
    class_mean = meta["collapse"] == "class_mean"
    impl = nt.NtkImplementation[implementation]

    def kernel_fn(g):
        fn = nt.empirical_ntk_fn(g, trace_axes=(-1,) if class_mean else (), vmap_axes=0, implementation=impl)
        return jax.jit(lambda p: fn(xj, None, p))

    if meta["layerwise"]:
        fns = {}
        for name in params:
            g = lambda q, xx, name=name: f({**params, name: q}, xx)  # noqa: E731 - other layers fixed
            fns[name] = kernel_fn(g)

        return lambda: {name: fn(params[name]) for name, fn in fns.items()}
    fn = kernel_fn(f)
    return lambda: fn(params)


def _scale(args) -> None:
    """A scaling curve of the deep tanh MLP's class-mean kernel (the sizes of ``child.BASE``;
    parameters drawn with numpy here: the curve times shapes, its values are checked on the
    main workloads)."""
    import statistics
    import time

    import jax
    import jax.numpy as jnp

    from .child import scale_config

    meta = {"model": "mlp", "collapse": "class_mean", "layerwise": False}
    for size in args.sizes:
        cfg = scale_config(args.curve, size)
        rng = np.random.default_rng(0)
        sizes = [cfg["d_in"]] + [cfg["width"]] * cfg["depth"] + [cfg["C"]]
        params = {
            f"layer{i + 1}": {"w": rng.standard_normal((a, b)).astype(np.float32),
                              "b": 0.1 * rng.standard_normal(b).astype(np.float32)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        }
        x = rng.standard_normal((cfg["N"], cfg["d_in"])).astype(np.float32)
        n_params = sum(int(np.size(l)) for l in jax.tree_util.tree_leaves(params))
        row = {"curve": args.curve, "size": size, "impl": "nt:" + args.implementation, "P": n_params, **cfg}
        try:
            fn = build(meta, params, x, args.implementation)
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
            return


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("implementation", choices=["JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES"])
    parser.add_argument("--workload")
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--curve", help="a scaling curve instead of a workload: N, width or depth")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--cap", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.curve:
        _scale(args)
        return
    folder = Path(args.data) / args.workload
    try:
        meta, params, x = common.load_inputs(folder)
        refs = common.references(folder)
        import jax  # noqa: F401
        import neural_tangents  # noqa: F401 - imported (with TensorFlow) before the baseline memory

        if meta["kind"] != "kernel":
            raise ValueError("neural-tangents computes dense kernels only")
        fn = build(meta, params, x, args.implementation)
        if meta["layerwise"]:
            check = lambda out: {"error": max(common.rel_diff(out[k], refs[k]) for k in refs)}  # noqa: E731
        else:
            check = lambda out: {"error": common.rel_diff(out, refs["kernel"])}  # noqa: E731
        res = common.measure(fn, check, args.repeats, meta["tolerance"])
    except Exception as err:  # noqa: BLE001 - the driver records the failure
        traceback.print_exc()
        res = {"status": "error", "message": f"{type(err).__name__}: {str(err)[:400]}", "peak_rss": common.peak_rss_mb()}
    import neural_tangents as nt

    res.update(workload=args.workload, impl="nt:" + args.implementation,
               env=dict(common.environment(), neural_tangents=getattr(nt, "__version__", "0.6.5")))
    common.emit(res)


if __name__ == "__main__":
    main()
