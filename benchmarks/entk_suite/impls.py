"""The implementations timed on the book's side (neural-tangents is in ``peer_nt.py``).

``build(meta, params, x, impl)`` returns a function of no arguments computing the workload's
result and ``kind`` -- the shape of what it returns:

* kernels: an array ``(N, N)`` (class mean) or ``(N, N, C, C)`` (full), or for a layerwise
  workload a dict ``{top-level key: kernel}``;
* spectra: ``(eigenvalues (k,), eigenvectors (N*C, k), info)``.

Implementations:

* ``structured`` / ``generic``: ``helpers.ntk`` with that ``method`` (dense kernels);
* ``entk_fn:jacobian`` / ``entk_fn:vector_products``: ``jax.jit(ntk.entk_fn(...))``;
* ``naive``: the whole per-example Jacobian ``(N, C, P)`` (``jax.vmap(jax.jacrev)`` on the
  flattened parameters), then one matrix product, in one compiled program;
* ``closed_form``: seed 002 App. B (``helpers.modular.closed_form_kernels``,
  ``helpers.tms.closed_form_entk``), the floor that no general method can beat;
* ``operator:lanczos`` / ``operator:sketch``: ``ntk.top_eigenpairs(ntk.entk_operator(...))``;
* ``closed_form_operator:lanczos``: the same solver on the closed-form operator
  (``workloads.modular_operator``), the floor for the spectrum;
* ``dual`` / ``closed_form_dual``: ``helpers.tms.flattened_eigenpairs`` through the
  ``P x P`` dual ``J^T J`` (``dual_kernel`` by JAX, or ``closed_form_dual``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .workloads import model_fn, modular_operator


# randomised subspace iteration: a block of 2k vectors, 8 power iterations (with the default
# 10 extra vectors and 4 iterations the top 150 of the modular kernel at initialisation, which
# has no gap after eigenvalue 150, were off by 1 % of lambda_1)
SKETCH = {"oversample_factor": 1, "power_iters": 8}
# a sketch with a fixed number of products is approximate: its eigenvalues are checked to this
# tolerance (relative to lambda_1) and its error is reported beside its time
SKETCH_TOLERANCE = 1e-2


def _naive(f: Callable, params: Any, x, collapse, layerwise: bool):
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    def kernel_of(sub, rebuild):
        flat, unravel = ravel_pytree(sub)

        def single(theta, xi):
            return f(rebuild(unravel(theta)), xi[None])[0]

        J = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(flat, x)  # (N, C, P): all of it
        n, c, _ = J.shape
        if collapse == "class_mean":
            flatJ = J.reshape(n, -1)
            return flatJ @ flatJ.T / c
        flatJ = J.reshape(n * c, -1)
        return (flatJ @ flatJ.T).reshape(n, c, n, c).transpose(0, 2, 1, 3)

    if not layerwise:
        return jax.jit(lambda p: kernel_of(p, lambda q: q)), None

    def all_layers(p):
        return {name: kernel_of(p[name], lambda q, name=name: {**p, name: q}) for name in p}

    return jax.jit(all_layers), None


def build(meta: dict, params: dict, x: np.ndarray, impl: str) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    from helpers import ntk

    f = model_fn(meta["model"], meta["settings"])
    collapse, layerwise = meta["collapse"], meta["layerwise"]
    params = jax.tree_util.tree_map(jnp.asarray, params)
    xj = jnp.asarray(x)

    if meta["kind"] == "spectrum":
        k = meta["k"]
        if impl == "operator:lanczos":
            return lambda: ntk.top_eigenpairs(ntk.entk_operator(f, params, xj), k, method="lanczos", return_info=True)
        if impl == "operator:sketch":
            return lambda: ntk.top_eigenpairs(
                ntk.entk_operator(f, params, xj), k, method="sketch", return_info=True,
                oversample=SKETCH["oversample_factor"] * k, power_iters=SKETCH["power_iters"],
            )
        if impl == "closed_form_operator:lanczos":
            return lambda: ntk.top_eigenpairs(modular_operator(params, x, np.float32), k, method="lanczos", return_info=True)
        if impl in ("dual", "closed_form_dual"):
            from helpers import tms

            def run():
                gram = tms.closed_form_dual(params, xj) if impl == "closed_form_dual" else None
                lam, vecs = tms.flattened_eigenpairs(f, params, xj, k=k, n_values=k, gram=gram)
                return lam, vecs, {"method": impl, "products": None, "residuals": None}

            return run
        raise ValueError(f"unknown implementation {impl!r} for a spectrum")

    if impl in ("structured", "generic"):
        if layerwise:
            return lambda: ntk.layerwise_entk(f, params, xj, collapse=collapse, method=impl)
        if collapse == "class_mean":
            return lambda: ntk.class_mean_entk(f, params, xj, method=impl)
        return lambda: ntk.entk(f, params, xj, method=impl)
    if impl.startswith("entk_fn:"):
        if layerwise:
            raise ValueError("entk_fn has no parameter groups")
        kernel = jax.jit(ntk.entk_fn(f, collapse=collapse, implementation=impl.split(":")[1]))
        return lambda: kernel(params, xj)
    if impl == "naive":
        fn, _ = _naive(f, params, xj, collapse, layerwise)
        return lambda: fn(params)
    if impl == "closed_form":
        if meta["model"] == "modular":
            from helpers import modular

            if layerwise:
                return lambda: modular.closed_form_kernels(params, xj, collapse=collapse)

            def total():
                k = modular.closed_form_kernels(params, xj, collapse=collapse)
                return k["W1"] + k["W2"]

            return total
        if meta["model"] == "tms":
            from helpers import tms

            return lambda: tms.closed_form_entk(params, xj)
        raise ValueError(f"no closed form for the {meta['model']} model")
    raise ValueError(f"unknown implementation {impl!r}")


def checker(meta: dict, params: dict, x: np.ndarray, refs: dict) -> Callable[[Any], dict]:
    """The check of an output against the workload's reference (``{"error": ...}`` and more)."""
    from .common import rel_diff

    if meta["kind"] == "kernel":
        if meta["layerwise"]:
            return lambda out: {"error": max(rel_diff(out[name], refs[name]) for name in refs)}
        return lambda out: {"error": rel_diff(out, refs["kernel"])}

    lam_ref = np.asarray(refs["eigenvalues"], np.float64)

    def check(out):
        lam, vecs, info = out
        lam = np.asarray(lam, np.float64)
        err = float(np.abs(lam - lam_ref).max() / lam_ref[0])
        res = {"error": err, "products": info.get("products"), "solver": info.get("method")}
        if info.get("residuals") is not None:
            res["solver_residual"] = float(np.max(info["residuals"]))
        # an independent residual ||K u - lambda u|| / lambda_1 of the returned eigenvectors
        if meta["model"] == "modular":
            op = modular_operator(params, x)
        else:
            from helpers import ntk, tms

            op = ntk.entk_operator(tms.apply, params, x)
        V = np.asarray(vecs, np.float64)
        KV = op.matmat(V.astype(op.dtype)).astype(np.float64)
        res["residual"] = float((np.linalg.norm(KV - V * lam[None, :], axis=0) / lam_ref[0]).max())
        return res

    return check
