"""The empirical neural tangent kernel (eNTK) and its collapses.

For a model ``f(params, x) -> (N, C)`` with ``params`` any pytree, the eNTK is

    K_ij(x, x') = sum_mu  d f_i(x) / d theta_mu  *  d f_j(x') / d theta_mu      (seed 002, eq. 3)

i.e. Theta = J J^T with J the Jacobian of the outputs with respect to the parameters
(seed 000 §0). This module computes it densely (in chunks of inputs, so that the Jacobian of
the whole batch never has to exist at once), per parameter group (the layerwise eNTK), as a
matrix-free ``LinearOperator`` built from ``jax.jvp``/``jax.vjp``, and offers the spectral
tools the book uses on it: top eigenpairs (Lanczos through ``scipy.sparse.linalg.eigsh``)
and cliff detection.

Shapes follow the paper's conventions (seed 002 §2.1): the full kernel is ``(N1, N2, C, C)``;
``flatten`` stacks it into ``(N1*C, N2*C)`` with row index ``n*C + i``; ``class_mean`` averages
the diagonal class blocks; ``per_class`` picks one of them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

from . import structured as _structured

__all__ = [
    "entk",
    "class_mean_entk",
    "flatten",
    "class_mean",
    "per_class",
    "layerwise_entk",
    "entk_operator",
    "top_eigenpairs",
    "find_cliffs",
    "drop_ratios",
    "jacobian",
    "linearized_outputs",
    "kernel_regression",
    "check_finite",
]

# Default memory budget for one block of per-example Jacobians (bytes).
_DEFAULT_BLOCK_BYTES = 256 * 2**20

# How entk / class_mean_entk / layerwise_entk compute the kernel:
#   "structured": the factorised eNTK of helpers.structured (Theta^l = (a.a') B B'^T per dense
#                 layer, seed 000 §7), per-example Jacobians only for the leaves it cannot place;
#   "generic":    per-example Jacobians of all parameters, contracted over parameters;
#   "auto":       "structured" when the model has at least one dense parameter leaf, else
#                 "generic" (also "generic" if the structured path fails on an exotic model).
# All three give the same kernel to float tolerance.
_METHODS = ("auto", "structured", "generic")


def _structured_or_none(f, params, x1, x2, same, labels, collapse, block_bytes, method):
    """The kernels by the structured path, or None when the generic path should run."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    if method == "generic":
        return None
    if method == "structured":
        return _structured.structured_kernels(
            f, params, x1, None if same else x2, labels=labels, collapse=collapse, block_bytes=block_bytes
        )
    try:
        if not _structured.cached_plan(f, params, x1).dense:
            return None
        return _structured.structured_kernels(
            f, params, x1, None if same else x2, labels=labels, collapse=collapse, block_bytes=block_bytes
        )
    except Exception:  # an exotic model the analysis did not foresee: the generic path is exact
        return None


# ----------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------


def check_finite(tree: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if any leaf of ``tree`` holds NaN or inf."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "(array)"
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"{name}{where} contains {bad} non-finite value(s) (NaN or inf); "
                "the eNTK needs finite parameters and inputs"
            )


def _as_batch(x: Any, name: str) -> jnp.ndarray:
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape (N, ...), got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a leading batch axis, shape (N, ...); got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {x.shape}); need at least one input")
    check_finite(x, name)
    return jnp.asarray(x)


def _validate(f: Callable, params: Any, x1: Any, x2: Any) -> tuple[jnp.ndarray, jnp.ndarray, int]:
    """Validate inputs; return ``(x1, x2, C)``."""
    if not callable(f):
        raise TypeError(f"f must be callable as f(params, x) -> (N, C); got {type(f).__name__}")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params has no array leaves; the eNTK sums over parameters")
    check_finite(params, "params")
    x1 = _as_batch(x1, "x1")
    x2 = x1 if x2 is None else _as_batch(x2, "x2")
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 and x2 must share the feature shape: x1 has shape {x1.shape} (features "
            f"{x1.shape[1:]}), x2 has shape {x2.shape} (features {x2.shape[1:]})"
        )
    out = jax.eval_shape(f, params, x1[:1])
    if not hasattr(out, "shape") or len(out.shape) != 2:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"f(params, x) must return an array of shape (N, C); for a batch of 1 it returned {got}"
        )
    if out.shape[0] != 1:
        raise ValueError(
            f"f(params, x) must keep the batch axis: for x of shape {x1[:1].shape} it returned "
            f"shape {out.shape}, expected (1, C)"
        )
    return x1, x2, int(out.shape[1])


def _num_params(params: Any) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _chunk_size(num_outputs: int, num_params: int, itemsize: int, block_bytes: int) -> int:
    per_example = max(1, num_outputs * num_params * itemsize)
    return max(1, int(block_bytes // per_example))


# ----------------------------------------------------------------------------------------
# Jacobians and the dense kernel
# ----------------------------------------------------------------------------------------


def jacobian(f: Callable, params: Any, x: Any) -> jnp.ndarray:
    """The per-example Jacobian, flattened over parameters.

    Args:
        f: model, ``f(params, x) -> (N, C)``.
        params: pytree of arrays (P numbers in all).
        x: inputs, ``(N, ...)``.

    Returns:
        ``(N, C, P)``, ``J[n, i, mu] = d f_i(x_n) / d theta_mu``, parameters in the order of
        ``jax.flatten_util.ravel_pytree(params)``. Materialises N*C*P numbers: for large
        models use ``entk`` (chunked) or ``entk_operator`` (matrix-free) instead.
    """
    x, _, _ = _validate(f, params, x, None)
    return _jacobian_flat(f, params, x)


def _jacobian_flat(f: Callable, params: Any, x: jnp.ndarray) -> jnp.ndarray:
    # One reverse-mode Jacobian per example, vmapped over the batch: the cost is linear in N
    # (``jacrev`` of the batched function would back-propagate N*C cotangents through all N
    # examples). Assumes, as every model in the book does, that examples do not interact.
    def single(p, xi):
        return f(p, xi[None])[0]

    jac = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(params, x)
    n = x.shape[0]
    parts = [leaf.reshape(n, leaf.shape[1], -1) for leaf in jax.tree_util.tree_leaves(jac)]
    return jnp.concatenate(parts, axis=-1)


def _block_kernels(
    f: Callable,
    params: Any,
    x1: jnp.ndarray,
    x2: jnp.ndarray,
    same: bool,
    contract: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
    out_shape: tuple[int, ...],
    num_outputs: int,
    block_bytes: int,
) -> np.ndarray:
    """Fill a kernel block by block, never holding more than two chunks of Jacobians."""
    leaves = jax.tree_util.tree_leaves(params)
    itemsize = np.dtype(jnp.result_type(*leaves)).itemsize
    chunk = _chunk_size(num_outputs, _num_params(params), itemsize, block_bytes)
    jac = jax.jit(lambda p, x: _jacobian_flat(f, p, x))
    contract = jax.jit(contract)
    n1, n2 = x1.shape[0], x2.shape[0]
    starts1 = list(range(0, n1, chunk))
    starts2 = list(range(0, n2, chunk))
    # Everything fits in one block each: compute both Jacobians once.
    if len(starts1) == 1 and len(starts2) == 1:
        j1 = jac(params, x1)
        j2 = j1 if same else jac(params, x2)
        return np.asarray(contract(j1, j2))
    result = np.zeros(out_shape, dtype=np.float64 if itemsize == 8 else np.float32)
    for a in starts1:
        j1 = jac(params, x1[a : a + chunk])
        for b in starts2:
            if same and b < a:
                continue  # filled by symmetry below
            j2 = j1 if (same and a == b) else jac(params, x2[b : b + chunk])
            block = np.asarray(contract(j1, j2))
            result[a : a + chunk, b : b + chunk] = block
            if same and b > a:
                # K(x2_b, x1_a) is the transpose in both the input and the class axes
                mirrored = block.transpose(1, 0, 3, 2) if block.ndim == 4 else block.T
                result[b : b + chunk, a : a + chunk] = mirrored
    return result


def entk(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    method: str = "auto",
) -> np.ndarray:
    """The full empirical NTK.

    Args:
        f: model, ``f(params, x) -> (N, C)``.
        params: pytree of arrays.
        x1: inputs, ``(N1, ...)``.
        x2: inputs, ``(N2, ...)`` with the same feature shape; ``None`` means ``x1``.
        block_bytes: memory budget for one chunk of per-example Jacobians.
        method: ``"auto"`` (default), ``"structured"`` (the factorised eNTK of
            ``helpers.structured``: dense layers cost ``(a.a') B B'^T``, no parameter-sized
            contraction) or ``"generic"`` (per-example Jacobians contracted over parameters).
            Same kernel to float tolerance; ``"auto"`` picks ``"structured"`` when the model
            has dense layers.

    Returns:
        ``(N1, N2, C, C)`` with ``K[n, m, i, j] = sum_mu df_i(x1_n)/dtheta_mu df_j(x2_m)/dtheta_mu``
        (seed 002 eq. 3).
    """
    same = x2 is None
    x1, x2, c = _validate(f, params, x1, x2)
    fast = _structured_or_none(f, params, x1, x2, same, None, None, block_bytes, method)
    if fast is not None:
        return fast[None]
    def contract(j1, j2):
        # one plain matrix product over parameters: (a*i, P) @ (P, b*j), then reorder the axes
        n1, n2 = j1.shape[0], j2.shape[0]
        k = j1.reshape(n1 * c, -1) @ j2.reshape(n2 * c, -1).T
        return k.reshape(n1, c, n2, c).transpose(0, 2, 1, 3)

    return _block_kernels(
        f, params, x1, x2, same, contract, (x1.shape[0], x2.shape[0], c, c), c, block_bytes
    )


def class_mean_entk(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    method: str = "auto",
) -> np.ndarray:
    """The class-mean eNTK ``(1/C) sum_i K_ii(x, x')`` without forming the full kernel.

    Equal to ``class_mean(entk(f, params, x1, x2))`` but needs only ``(N1, N2)`` memory for
    the result and one chunk of Jacobians at a time (seed 002 §2.1, the collapse used for
    the modular-addition cliffs). ``method`` as in ``entk``; with the structured path an
    elementwise layer followed by a map linear in its output costs what a closed form costs.

    Returns:
        ``(N1, N2)``.
    """
    same = x2 is None
    x1, x2, c = _validate(f, params, x1, x2)
    fast = _structured_or_none(f, params, x1, x2, same, None, "class_mean", block_bytes, method)
    if fast is not None:
        return fast[None]
    def contract(j1, j2):
        # sum over classes and parameters at once: (a, C*P) @ (C*P, b)
        return j1.reshape(j1.shape[0], -1) @ j2.reshape(j2.shape[0], -1).T / c

    return _block_kernels(
        f, params, x1, x2, same, contract, (x1.shape[0], x2.shape[0]), c, block_bytes
    )


# ----------------------------------------------------------------------------------------
# collapses (seed 002 §2.1)
# ----------------------------------------------------------------------------------------


def _check_full_kernel(K: Any, name: str = "K") -> np.ndarray:
    K = np.asarray(K)
    if K.ndim != 4 or K.shape[2] != K.shape[3]:
        raise ValueError(f"{name} must be a full eNTK of shape (N1, N2, C, C); got shape {K.shape}")
    return K


def flatten(K: Any) -> np.ndarray:
    """Flatten ``(N1, N2, C, C)`` to ``(N1*C, N2*C)``; row ``n*C + i``, column ``m*C + j``."""
    K = _check_full_kernel(K)
    n1, n2, c, _ = K.shape
    return K.transpose(0, 2, 1, 3).reshape(n1 * c, n2 * c)


def class_mean(K: Any) -> np.ndarray:
    """Mean over classes of the diagonal blocks, ``(1/C) sum_i K[:, :, i, i]`` -> ``(N1, N2)``."""
    K = _check_full_kernel(K)
    return np.einsum("abii->ab", K) / K.shape[2]


def per_class(K: Any, c: int) -> np.ndarray:
    """One class's block ``K[:, :, c, c]`` -> ``(N1, N2)``."""
    K = _check_full_kernel(K)
    if not isinstance(c, (int, np.integer)) or isinstance(c, bool):
        raise TypeError(f"c must be an integer class index; got {type(c).__name__}")
    if not 0 <= c < K.shape[2]:
        raise ValueError(f"c must lie in [0, {K.shape[2]}) for a kernel with C = {K.shape[2]}; got {c}")
    return K[:, :, c, c]


# ----------------------------------------------------------------------------------------
# layerwise eNTK
# ----------------------------------------------------------------------------------------


def _group_labels(params: Any, groups: Any) -> tuple[list[str], list[Any]]:
    """Return (group names in order, one label per leaf of params)."""
    leaves_with_path = jax.tree_util.tree_leaves_with_path(params)
    if groups is None:
        if not isinstance(params, Mapping):
            raise TypeError(
                "groups=None uses the top-level keys of a dict of params, but params is a "
                f"{type(params).__name__}; pass groups as a pytree of labels"
            )
        labels = [str(path[0].key) for path, _ in leaves_with_path]
        names = [str(k) for k in params.keys() if any(l == str(k) for l in labels)]
        return names, labels
    if isinstance(groups, Mapping) and isinstance(params, Mapping) and all(
        isinstance(v, (list, tuple)) for v in groups.values()
    ):
        owner: dict[str, str] = {}
        for name, keys in groups.items():
            for k in keys:
                if k not in params:
                    raise ValueError(f"groups[{name!r}] names key {k!r}, which params does not have; keys are {list(params)}")
                if k in owner:
                    raise ValueError(f"groups must partition params: key {k!r} is in both {owner[k]!r} and {name!r}")
                owner[k] = name
        missing = [k for k in params if k not in owner]
        if missing:
            raise ValueError(f"groups must partition params: keys {missing} belong to no group")
        labels = [owner[path[0].key] for path, _ in leaves_with_path]
        return list(groups.keys()), labels
    # a pytree of labels with the structure of params
    try:
        label_leaves = jax.tree_util.tree_structure(params).flatten_up_to(groups)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "groups must be None, a dict {group: [top-level keys]}, or a pytree of labels with "
            f"the structure of params ({jax.tree_util.tree_structure(params)}); got {groups!r}"
        ) from err
    names = list(dict.fromkeys(label_leaves))
    return names, list(label_leaves)


def layerwise_entk(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    groups: Any = None,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    collapse: str | None = None,
    method: str = "auto",
) -> dict[str, np.ndarray]:
    """The eNTK restricted to each group of parameters (the layerwise eNTK, seed 002 §2.1).

    Args:
        f, params, x1, x2: as in ``entk``.
        groups: ``None`` (one group per top-level key of a dict of params), a dict
            ``{group: [top-level keys]}`` partitioning those keys, or a pytree with the
            structure of ``params`` whose leaves are group labels.
        collapse: ``None`` for full ``(N1, N2, C, C)`` kernels or ``"class_mean"`` for
            ``(N1, N2)`` class-mean kernels.
        method: ``"auto"`` | ``"structured"`` | ``"generic"``, as in ``entk``.

    Returns:
        dict group -> kernel. The groups sum to ``entk`` (Theta = sum_l Theta^l, seed 000 §7).
    """
    same = x2 is None
    x1, x2, c = _validate(f, params, x1, x2)
    if collapse not in (None, "class_mean"):
        raise ValueError(f"collapse must be None or 'class_mean'; got {collapse!r}")
    names, labels = _group_labels(params, groups)
    fast = _structured_or_none(f, params, x1, x2, same, labels, collapse, block_bytes, method)
    if fast is not None and all(name in fast for name in names):
        return {name: fast[name] for name in names}
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = {}
    for name in names:
        idx = [i for i, lab in enumerate(labels) if lab == name]

        def f_group(sub, x, idx=idx):
            full = list(leaves)
            for i, leaf in zip(idx, sub):
                full[i] = leaf
            return f(jax.tree_util.tree_unflatten(treedef, full), x)

        sub = [leaves[i] for i in idx]
        xx2 = None if same else x2
        if collapse == "class_mean":
            out[name] = class_mean_entk(f_group, sub, x1, xx2, block_bytes=block_bytes, method="generic")
        else:
            out[name] = entk(f_group, sub, x1, xx2, block_bytes=block_bytes, method="generic")
    return out


# ----------------------------------------------------------------------------------------
# matrix-free operator
# ----------------------------------------------------------------------------------------


def entk_operator(f: Callable, params: Any, x: Any, *, collapse: str = "flat") -> LinearOperator:
    """The eNTK on a batch as a matrix-free ``scipy.sparse.linalg.LinearOperator``.

    A product ``K v`` is one ``jax.vjp`` (``J^T v``) followed by one ``jax.jvp``
    (``J (J^T v)``): neither the Jacobian nor the kernel is ever formed.

    Args:
        f: model, ``f(params, x) -> (N, C)``.
        params: pytree of arrays.
        x: inputs, ``(N, ...)``.
        collapse: ``"flat"`` for the flattened kernel ``(N*C, N*C)`` (row ``n*C + i``), or
            ``"class_mean"`` for the ``(N, N)`` class-mean kernel.

    Returns:
        a symmetric ``LinearOperator`` accepting vectors and ``(dim, k)`` blocks.
    """
    x, _, c = _validate(f, params, x, None)
    if collapse not in ("flat", "class_mean"):
        raise ValueError(f"collapse must be 'flat' or 'class_mean'; got {collapse!r}")
    n = x.shape[0]
    dtype = np.dtype(jnp.result_type(*jax.tree_util.tree_leaves(params)))
    model = lambda p: f(p, x)
    _, pullback = jax.vjp(model, params)

    def product(v):
        (tangent,) = pullback(v)
        return jax.jvp(model, (params,), (tangent,))[1]

    if collapse == "flat":
        dim = n * c

        @jax.jit
        def mv(v):
            return product(v.reshape(n, c)).reshape(dim)

    else:
        dim = n

        eye = jnp.eye(c, dtype=dtype)

        @jax.jit
        def mv(v):
            # (1/C) sum_i J_i J_i^T v: one vjp/jvp pair per class, batched with vmap, keeping
            # only the diagonal class block (cross-class terms J_j J_i^T must not enter).
            def one_class(e):
                return product(v[:, None] * e[None, :]) @ e

            return jax.vmap(one_class)(eye).sum(axis=0) / c

    batched = jax.jit(jax.vmap(mv, in_axes=1, out_axes=1))

    def matvec(v):
        v = np.asarray(v, dtype=dtype).reshape(dim)
        return np.asarray(mv(jnp.asarray(v)))

    def matmat(V):
        V = np.asarray(V, dtype=dtype).reshape(dim, -1)
        return np.asarray(batched(jnp.asarray(V)))

    return LinearOperator((dim, dim), matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=dtype)


# ----------------------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------------------


def top_eigenpairs(A: Any, k: int, *, tol: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues of a symmetric matrix or operator, and their eigenvectors.

    Dense arrays use a full symmetric eigendecomposition (``numpy.linalg.eigh``); a
    ``LinearOperator`` uses Lanczos (``scipy.sparse.linalg.eigsh``, ``which="LA"``), which
    needs ``k < dim``.

    Args:
        A: ``(D, D)`` symmetric array or ``LinearOperator``.
        k: number of eigenpairs, ``1 <= k <= D`` (``< D`` for an operator).
        tol: Lanczos tolerance (0 means machine precision).
        seed: seeds the Lanczos start vector, so results are reproducible.

    Returns:
        ``(eigenvalues (k,), eigenvectors (D, k))``, eigenvalues in descending order.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer; got {type(k).__name__}")
    if isinstance(A, LinearOperator):
        d0, d1 = A.shape
        if d0 != d1:
            raise ValueError(f"A must be square; the operator has shape {A.shape}")
        if not 1 <= k < d0:
            raise ValueError(
                f"k must satisfy 1 <= k < {d0} for a Lanczos solve on an operator of shape "
                f"{A.shape}; got k = {k} (use a dense matrix to get all eigenpairs)"
            )
        v0 = np.random.default_rng(seed).standard_normal(d0).astype(A.dtype)
        vals, vecs = eigsh(A, k=k, which="LA", tol=tol, v0=v0)
    else:
        A = np.asarray(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square (D, D) matrix or a LinearOperator; got shape {A.shape}")
        if not np.all(np.isfinite(A)):
            raise ValueError("A contains NaN or inf")
        scale = max(np.abs(A).max(), np.finfo(A.dtype if A.dtype.kind == "f" else np.float64).tiny)
        if np.abs(A - A.T).max() > 1e-6 * scale:
            raise ValueError("A must be symmetric; max |A - A^T| is " f"{np.abs(A - A.T).max():.3g} of scale {scale:.3g}")
        if not 1 <= k <= A.shape[0]:
            raise ValueError(f"k must satisfy 1 <= k <= {A.shape[0]} for a matrix of shape {A.shape}; got k = {k}")
        vals, vecs = np.linalg.eigh((A + A.T) / 2)
        vals, vecs = vals[-k:], vecs[:, -k:]
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order]


def drop_ratios(eigenvalues: Any, *, rel_floor: float = 1e-9) -> np.ndarray:
    """Consecutive ratios ``lambda_k / lambda_{k+1}`` of a descending spectrum.

    Entry ``k - 1`` is the drop after the k-th eigenvalue. Eigenvalues at or below
    ``rel_floor * lambda_1`` are numerical zeros (the kernel's null space): the ratio is not
    defined there and is returned as ``nan``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size < 2:
        raise ValueError(f"eigenvalues must be a 1-D array of at least 2 values; got shape {lam.shape}")
    if not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues contain NaN or inf")
    if np.any(np.diff(lam) > 1e-12 * max(abs(lam[0]), 1e-300)):
        raise ValueError("eigenvalues must be sorted in descending order (as top_eigenpairs returns them)")
    floor = rel_floor * lam[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = lam[:-1] / lam[1:]
    ratios[(lam[:-1] <= floor) | (lam[1:] <= floor)] = np.nan
    return ratios


def find_cliffs(
    eigenvalues: Any,
    *,
    min_ratio: float = 1.5,
    prominence: float = 5.0,
    window: int = 10,
    top: int | None = None,
    rel_floor: float = 1e-9,
) -> np.ndarray:
    """Positions of the spectral cliffs of a descending spectrum.

    A *cliff* (seed 002 §2) is a large drop between consecutive ordered eigenvalues. The
    position ``k`` of a cliff is the number of eigenvalues above the drop (so a constant mode
    followed by a block of 56 eigenvalues gives cliffs at ``k = 1`` and ``k = 57``).

    Criterion. Let ``d_k = log(lambda_k / lambda_{k+1})`` for the eigenvalues above
    ``rel_floor * lambda_1`` (below that they are numerical zeros: the drop into the null space
    is a rank effect, not a cliff, and is never reported). ``k`` is a cliff when

    * ``lambda_k / lambda_{k+1} >= min_ratio`` (the drop is large in absolute terms), and
    * ``d_k >= prominence * median(d_j : 0 < |j - k| <= window)`` (it stands out from the
      drops around it, so the smooth head of a power law is not a cliff).

    With ``top=m`` the criterion is replaced by "the m largest drops" (returned in increasing
    ``k``), the measurement used in the book's reproductions.

    Returns:
        sorted integer array of cliff positions ``k`` (1-based counts).
    """
    if min_ratio <= 1:
        raise ValueError(f"min_ratio must exceed 1 (a ratio of consecutive eigenvalues); got {min_ratio}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer; got {window!r}")
    ratios = drop_ratios(eigenvalues, rel_floor=rel_floor)
    valid = np.isfinite(ratios)
    d = np.where(valid, np.log(np.where(valid, ratios, 1.0)), -np.inf)
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"top must be a positive integer; got {top!r}")
        n_valid = int(valid.sum())
        if top > n_valid:
            raise ValueError(f"top = {top} exceeds the {n_valid} drops between nonzero eigenvalues")
        ks = np.argsort(-d, kind="stable")[:top] + 1
        return np.sort(ks)
    cliffs = []
    idx = np.flatnonzero(valid)
    for k in idx:
        if d[k] < math.log(min_ratio):
            continue
        around = idx[(np.abs(idx - k) <= window) & (idx != k)]
        local = np.median(d[around]) if around.size else 0.0
        if d[k] >= prominence * max(local, 0.0):
            cliffs.append(k + 1)
    return np.array(cliffs, dtype=int)


# ----------------------------------------------------------------------------------------
# the linearised network (seed 003; seed 002 App. A)
# ----------------------------------------------------------------------------------------


def linearized_outputs(kernel: Any, f0: Any, y: Any, times: Any, *, lr: float = 1.0, discrete: bool = False) -> np.ndarray:
    """Training-set outputs of the linearised model under gradient descent on ``0.5 ||f - y||^2``.

    Continuous time: ``f_t = y + exp(-lr K t) (f0 - y)`` (seed 003). Discrete steps
    (``discrete=True``): ``f_t = y + (I - lr K)^t (f0 - y)`` (seed 002 App. A).

    Args:
        kernel: ``(D, D)`` flattened training kernel.
        f0: ``(D,)`` initial outputs (flattened like the kernel rows).
        y: ``(D,)`` targets.
        times: ``(T,)`` times (steps).

    Returns:
        ``(T, D)`` predicted outputs.
    """
    K = np.asarray(kernel, dtype=np.float64)
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if K.ndim != 2 or K.shape != (f0.size, f0.size):
        raise ValueError(f"kernel must be (D, D) with D = f0.size = {f0.size}; got shape {K.shape}")
    if y.shape != f0.shape:
        raise ValueError(f"y must have the shape of f0 {f0.shape}; got {y.shape}")
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    lam, U = np.linalg.eigh((K + K.T) / 2)
    lam = np.clip(lam, 0.0, None)
    coeff = U.T @ (f0 - y)
    if discrete:
        decay = (1.0 - lr * lam)[None, :] ** t[:, None]
    else:
        decay = np.exp(-lr * lam[None, :] * t[:, None])
    return y[None, :] + (decay * coeff[None, :]) @ U.T


def kernel_regression(k_test_train: Any, k_train_train: Any, y_train: Any, *, ridge: float = 0.0) -> np.ndarray:
    """Kernel regression ``K(x, X) K(X, X)^{-1} y`` (seed 002 eq. 1), the t -> infinity limit.

    Args:
        k_test_train: ``(M, D)``; k_train_train: ``(D, D)``; y_train: ``(D,)`` or ``(D, k)``.
        ridge: optional ``ridge * I`` added to ``K(X, X)`` before solving.

    Returns:
        ``(M,)`` or ``(M, k)`` predictions (relative to a zero initial function).
    """
    Kxx = np.asarray(k_train_train, dtype=np.float64)
    Kt = np.asarray(k_test_train, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64)
    if Kxx.ndim != 2 or Kxx.shape[0] != Kxx.shape[1]:
        raise ValueError(f"k_train_train must be square (D, D); got {Kxx.shape}")
    if Kt.ndim != 2 or Kt.shape[1] != Kxx.shape[0]:
        raise ValueError(f"k_test_train must be (M, {Kxx.shape[0]}); got {Kt.shape}")
    if y.shape[0] != Kxx.shape[0]:
        raise ValueError(f"y_train must have {Kxx.shape[0]} rows; got shape {y.shape}")
    return Kt @ np.linalg.solve(Kxx + ridge * np.eye(Kxx.shape[0]), y)
