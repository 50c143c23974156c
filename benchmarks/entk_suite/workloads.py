"""The benchmark workloads: models, saved inputs, and reference results computed independently.

Every workload is a model, its parameters and examples (saved as ``inputs.npz`` so that every
implementation, including neural-tangents in its own environment, sees the same numbers) and
a reference result that the implementations are checked against before they are timed:

* where seed 002 App. B has a closed form (modular addition, TMS), the closed form, in float64;
* otherwise per-example Jacobians by ``jax.jacrev``/``jax.grad`` in float64, one parameter leaf
  (and for class-mean kernels one output class) at a time, contracted in float64 -- a code
  path that shares nothing with ``helpers.ntk`` beyond the model function;
* for spectra, the top eigenvalues of the closed-form operator (modular addition) or of the
  closed-form dual ``J^T J`` (TMS), in float64.

References are cached in the data folder, keyed by the workload's settings, so a second run
of the suite does not recompute them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .common import save_inputs

# implementations of a kernel workload, in table order; "nt:*" run in the peer environment
KERNEL_IMPLS = [
    "structured",
    "generic",
    "entk_fn:jacobian",
    "entk_fn:vector_products",
    "naive",
    "closed_form",
    "nt:JACOBIAN_CONTRACTION",
    "nt:NTK_VECTOR_PRODUCTS",
    "nt:STRUCTURED_DERIVATIVES",
]


@dataclass
class Workload:
    name: str
    title: str
    kind: str  # "kernel" or "spectrum"
    model: str  # "modular" | "tms" | "mlp" | "transformer"
    settings: dict
    collapse: str | None = None  # kernels: None (full) or "class_mean"
    layerwise: bool = False  # kernels: one kernel per top-level parameter key
    k: int = 0  # spectra: number of eigenpairs
    impls: list = field(default_factory=list)
    tolerance: float = 1e-4  # float32 kernels vs a float64 reference: float32 roundoff of long sums

    def key(self) -> str:
        blob = json.dumps([self.model, self.settings, self.collapse, self.layerwise, self.k], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _modular_settings(quick):
    return {"p": 13, "width": 128} if quick else {"p": 29, "width": 512}


# Sizes of the recorded run (benchmarks/results), cut from the so that the whole suite
# finishes in about 20 min on the shared 2-core CPU; the Performance page states each cut.
# Dense modular kernels: p = 23, n = 256 (the p = 29, n = 512 needs about 15 s per call
# for each of the six slow implementations, six calls each); the top-150 spectrum keeps p = 29,
# n = 512. TMS full kernel: N = 200 (at N = 500 the (N, N, C, C) kernel is 2.5 GB per copy);
# the TMS spectrum keeps N = 500. Deep MLP: width 128 (the naive Jacobian of width 256 at
# N = 500 would be 2.8 GB).
RECORDED_MODULAR_DENSE = {"p": 23, "width": 256}
RECORDED_TMS_FULL_N = 200


def workloads(quick: bool = False, with_transformer: bool | None = None) -> list[Workload]:
    """The suite's workloads (``quick``: small sizes for a smoke run of a few minutes)."""
    mod = _modular_settings(quick)
    dense = mod if quick else dict(RECORDED_MODULAR_DENSE)
    tms = {"N": 100, "n": 20, "m": 5, "S": 0.9} if quick else {"N": 500, "n": 50, "m": 10, "S": 0.9}
    tms_full = tms if quick else dict(tms, N=RECORDED_TMS_FULL_N)
    mlp_sizes = [32, 64, 64, 64, 10] if quick else [32, 128, 128, 128, 10]
    out = [
        Workload(
            "modular_class_mean",
            f"modular addition, class-mean kernel (p = {dense['p']}, n = {dense['width']}, all {dense['p'] ** 2} inputs)",
            "kernel", "modular", dense, collapse="class_mean", impls=list(KERNEL_IMPLS),
        ),
        Workload(
            "modular_layerwise",
            f"modular addition, class-mean kernel per layer (W1, W2; p = {dense['p']}, n = {dense['width']})",
            "kernel", "modular", dense, collapse="class_mean", layerwise=True,
            impls=["structured", "generic", "naive", "closed_form", "nt:JACOBIAN_CONTRACTION",
                   "nt:NTK_VECTOR_PRODUCTS", "nt:STRUCTURED_DERIVATIVES"],
        ),
        Workload(
            "modular_top150",
            f"modular addition, flattened kernel ({mod['p'] ** 3}-dimensional), top {40 if quick else 150} eigenpairs",
            "spectrum", "modular", mod, k=40 if quick else 150,
            impls=["operator:lanczos", "operator:sketch", "closed_form_operator:lanczos"],
            tolerance=1e-4,  # eigenvalues relative to lambda_1: float32 products, Lanczos to convergence
        ),
        Workload(
            "tms_full",
            f"TMS, flattened kernel (N = {tms_full['N']}, n = {tms_full['n']}, m = {tms_full['m']}; "
            f"{tms_full['N'] * tms_full['n']}-dimensional)",
            "kernel", "tms", tms_full, collapse=None, impls=list(KERNEL_IMPLS),
        ),
        Workload(
            "tms_spectrum",
            f"TMS, flattened kernel's top {tms['n']} eigenpairs (N = {tms['N']}, n = {tms['n']}, m = {tms['m']})",
            "spectrum", "tms", tms, k=tms["n"],
            impls=["operator:lanczos", "operator:sketch", "dual", "closed_form_dual"],
            tolerance=1e-4,
        ),
        Workload(
            "mlp_class_mean",
            f"deep MLP {'-'.join(map(str, mlp_sizes))} (tanh, biases), class-mean kernel, N = {100 if quick else 500}",
            "kernel", "mlp", {"sizes": mlp_sizes, "N": 100 if quick else 500}, collapse="class_mean",
            impls=[i for i in KERNEL_IMPLS if i != "closed_form"],
        ),
        Workload(
            "mlp_full",
            f"deep MLP {'-'.join(map(str, mlp_sizes))} (tanh, biases), full kernel, N = {50 if quick else 200}",
            "kernel", "mlp", {"sizes": mlp_sizes, "N": 50 if quick else 200}, collapse=None,
            impls=[i for i in KERNEL_IMPLS if i != "closed_form"],
        ),
    ]
    if with_transformer is None:
        with_transformer = transformer_available()
    if with_transformer:
        tf = {"p": 7, "d_model": 16, "n_heads": 2, "d_head": 4, "d_mlp": 32} if quick else transformer_settings()
        out.append(
            Workload(
                "transformer_class_mean",
                f"one-layer transformer (p = {tf['p']}, d = {tf['d_model']}, {tf['n_heads']} heads of "
                f"{tf['d_head']}, {tf['d_mlp']} neurons), class-mean kernel over all {tf['p'] ** 2} inputs",
                "kernel", "transformer", tf, collapse="class_mean",
                impls=[i for i in KERNEL_IMPLS if i != "closed_form"],
            )
        )
    return out


def transformer_available() -> bool:
    """Is ``helpers.transformer`` (chapter 9's model) in this checkout?"""
    try:
        from helpers import transformer  # noqa: F401
    except ImportError:
        return False
    return hasattr(transformer, "apply") and hasattr(transformer, "init_params")


def transformer_settings() -> dict:
    """The chapter's size, read from the parameters cell of notebooks/09_transformer.md."""
    defaults = {"p": 31, "d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 128}
    md = Path(__file__).resolve().parents[2] / "notebooks" / "09_transformer.md"
    try:
        from tools import chapters

        params = chapters.read_parameters(md)
        return {k: int(params[k].value if hasattr(params[k], "value") else params[k]) for k in defaults}
    except Exception:  # noqa: BLE001 - the chapter or its parameters cell is not there yet
        return defaults


# ----------------------------------------------------------------------------------------
# models (the book's functions; peer_nt.py writes the same models in plain JAX)
# ----------------------------------------------------------------------------------------


def model_fn(model: str, settings: dict) -> Callable:
    if model == "modular":
        from helpers import modular

        return modular.apply
    if model == "tms":
        from helpers import tms

        return tms.apply
    if model == "mlp":
        from helpers.models import mlp_apply

        return lambda p, x: mlp_apply(p, x, activation="tanh")
    if model == "transformer":
        from helpers import transformer

        return transformer.apply
    raise ValueError(f"unknown model {model!r}")


def make_inputs(w: Workload) -> tuple[dict, np.ndarray]:
    """Parameters (nested dict of float32 arrays) and examples of a workload."""
    import jax

    s = w.settings
    key = jax.random.PRNGKey(0)
    if w.model == "modular":
        from helpers import modular

        params = modular.init_params(key, s["p"], s["width"])
        x = modular.make_data(s["p"], seed=0).x
    elif w.model == "tms":
        from helpers import tms

        k1, k2 = jax.random.split(key)
        params = tms.init_params(s["n"], s["m"], key=k1)
        # a small nonzero bias, so the ReLU gates of the closed form are not all decided by W
        params["b"] = 0.05 * jax.random.normal(k2, (s["n"],))
        x = tms.make_data(s["N"], s["n"], s["S"], key=jax.random.PRNGKey(1))
    elif w.model == "mlp":
        from helpers.models import mlp_init

        params = mlp_init(key, s["sizes"])
        x = jax.random.normal(jax.random.PRNGKey(1), (s["N"], s["sizes"][0]))
    elif w.model == "transformer":
        from helpers import transformer

        params = transformer.init_params(
            key, s["p"], d_model=s["d_model"], n_heads=s["n_heads"], d_head=s["d_head"], d_mlp=s["d_mlp"]
        )
        x = transformer.one_hot_inputs(s["p"])
    else:
        raise ValueError(w.model)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    return params, np.asarray(x, np.float32)


# ----------------------------------------------------------------------------------------
# independent references
# ----------------------------------------------------------------------------------------


def modular_operator(params: dict, x: np.ndarray, dtype=np.float64):
    """The flattened modular-addition eNTK as a ``LinearOperator`` from the closed form.

    Seed 002 App. B (eqs. 16 and 18 with the factors of ``helpers.modular.apply``): with
    ``h = x W1^T / sqrt(2p)`` ``(N, n)``,

        K1[a i, b j] = 2/(p n^2) sum_k W2_ik W2_jk h_ak h_bk (x_a . x_b),
        K2[a i, b j] = delta_ij sum_k h_ak^2 h_bk^2 / n^2,

    rows ordered ``a*C + i`` as ``helpers.ntk.flatten``. A product costs O(N n (C + 2p)): the
    overlap ``x_a . x_b`` is applied as ``x (x^T t)``. Written here (not in helpers) because it
    is the benchmark's independent check of the operator path.
    """
    from scipy.sparse.linalg import LinearOperator

    w1 = np.asarray(params["W1"], dtype)
    w2 = np.asarray(params["W2"], dtype)
    x = np.asarray(x, dtype)
    n, d = w1.shape
    c = w2.shape[0]
    N = x.shape[0]
    h = x @ w1.T / np.sqrt(d)
    hsq = h**2
    scale = 4.0 / (d * n**2)

    def matmat(V):
        m = V.shape[1] if np.ndim(V) == 2 else 1
        Vt = np.asarray(V, dtype).reshape(N, c, m).transpose(0, 2, 1)  # (N, m, C)
        t = h[:, None, :] * (Vt @ w2)  # h_bk sum_j W2_jk V_bj, (N, m, n)
        s = (x @ (x.T @ t.reshape(N, -1))).reshape(N, m, n)  # sum_b (x_a . x_b) t_b
        out1 = scale * (h[:, None, :] * s) @ w2.T  # (N, m, C)
        out2 = (hsq @ (hsq.T @ Vt.reshape(N, -1))).reshape(N, m, c) / n**2
        return (out1 + out2).transpose(0, 2, 1).reshape(N * c, m)

    return LinearOperator((N * c, N * c), matvec=lambda v: matmat(v)[:, 0], rmatvec=lambda v: matmat(v)[:, 0],
                          matmat=matmat, dtype=dtype)


def _per_leaf_reference(apply, params, x, collapse):
    """Float64 eNTK from ``jax.grad``/``jax.jacrev`` per leaf (and per class for class means)."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params))
    x64 = jnp.asarray(x, jnp.float64)
    n = x.shape[0]
    c = int(jax.eval_shape(lambda p, xx: apply(p, xx), jax.tree_util.tree_unflatten(treedef, leaves), x64[:1]).shape[1])
    total = np.zeros((n, n) if collapse == "class_mean" else (n, n, c, c))
    for l in range(len(leaves)):

        def g(leaf, xi, l=l):
            full = list(leaves)
            full[l] = leaf
            return apply(jax.tree_util.tree_unflatten(treedef, full), xi[None])[0]

        if collapse == "class_mean":
            row = jax.jit(jax.vmap(jax.grad(lambda leaf, xi, i: g(leaf, xi)[i]), in_axes=(None, 0, None)))
            for i in range(c):
                J = np.asarray(row(leaves[l], x64, i)).reshape(n, -1)
                total += J @ J.T
        else:
            J = np.asarray(jax.jit(jax.vmap(jax.jacrev(g), in_axes=(None, 0)))(leaves[l], x64)).reshape(n * c, -1)
            total += (J @ J.T).reshape(n, c, n, c).transpose(0, 2, 1, 3)
    return total / c if collapse == "class_mean" else total


def reference(w: Workload, params: dict, x: np.ndarray, folder: Path) -> None:
    """Compute and save the workload's reference arrays (``ref_NAME.npy``)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    if w.kind == "spectrum":
        if w.model == "modular":
            from scipy.sparse.linalg import eigsh

            op = modular_operator(p64, x)
            v0 = np.random.default_rng(1).standard_normal(op.shape[0])
            lam = eigsh(op, k=w.k, which="LA", tol=1e-12, v0=v0, return_eigenvectors=False)
        else:
            from helpers import tms

            gram = tms.closed_form_dual(p64, np.asarray(x, np.float64))
            lam = np.linalg.eigvalsh((gram + gram.T) / 2)[-w.k :]
        np.save(folder / "ref_eigenvalues.npy", np.sort(lam)[::-1])
        return
    if w.model == "modular":
        from helpers import modular

        kernels = modular.closed_form_kernels(p64, np.asarray(x, np.float64), collapse=w.collapse)
        if w.layerwise:
            for name, k in kernels.items():
                np.save(folder / f"ref_{name}.npy", np.asarray(k))
        else:
            np.save(folder / "ref_kernel.npy", np.asarray(kernels["W1"]) + np.asarray(kernels["W2"]))
        return
    if w.model == "tms":
        from helpers import tms

        n, c = x.shape[0], x.shape[1]
        out = np.lib.format.open_memmap(folder / "ref_kernel.npy", mode="w+", dtype=np.float32, shape=(n, n, c, c))
        x64 = np.asarray(x, np.float64)
        for a in range(0, n, 25):  # rows in chunks: the float64 kernel would need 5 GB at N = 500
            out[a : a + 25] = tms.closed_form_entk(p64, x64[a : a + 25], x64).astype(np.float32)
        out.flush()
        return
    kernel = _per_leaf_reference(model_fn(w.model, w.settings), p64, x, w.collapse)
    np.save(folder / "ref_kernel.npy", kernel.astype(np.float32 if kernel.ndim == 4 else np.float64))


def prepare(w: Workload, root: Path) -> Path:
    """Save inputs and reference of ``w`` under ``root/NAME`` (reused when the settings match)."""
    folder = root / w.name
    meta = {"name": w.name, "key": w.key(), "model": w.model, "settings": w.settings, "collapse": w.collapse,
            "layerwise": w.layerwise, "k": w.k, "kind": w.kind, "tolerance": w.tolerance}
    stamp = folder / "prepared.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == w.key():
        return folder
    for old in folder.glob("ref_*.npy"):
        old.unlink()
    params, x = make_inputs(w)
    save_inputs(folder, meta, params, x)
    reference(w, params, x, folder)
    stamp.write_text(json.dumps(meta))
    return folder
