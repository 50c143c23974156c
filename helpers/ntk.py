"""The empirical neural tangent kernel (eNTK) and its collapses.

For a model ``f(params, x) -> (N, C)`` with ``params`` any pytree of floating-point arrays, the
eNTK is

    K_ij(x, x') = sum_mu  d f_i(x) / d theta_mu  *  d f_j(x') / d theta_mu      (seed 002, eq. 3)

i.e. Theta = J J^T with J the Jacobian of the outputs with respect to the parameters
(seed 000 §0). This module computes it densely, per parameter group (the layerwise eNTK), as a
matrix-free ``LinearOperator`` built from ``jax.jvp``/``jax.vjp``, as a jittable function of
``(params, x1, x2)`` (``entk_fn``), and offers the spectral tools the book uses on it: top
eigenpairs (Lanczos through ``scipy.sparse.linalg.eigsh``) and cliff detection.

How the dense kernels are computed (``method=``):

* ``"structured"``: the factorised eNTK of ``helpers.structured``: a weight used once as an
  operand of a matrix product costs ``(a.a') B B'^T`` (seed 000 §7), with closed-form cost
  after an elementwise layer; every other leaf goes to the generic path below.
* ``"generic"``: per-example Jacobians (``jax.vjp`` over the output basis, vmapped over
  examples), contracted over parameters in blocks sized by ``block_bytes``: blocks of output
  classes (for the class-mean collapse) or of parameters, each one large matrix product, so that
  no Jacobian is computed twice for the same block and the products run at matrix-multiply
  speed. For the full kernel of a model with many outputs, NTK-vector products
  (``J (J^T e)``, vmapped ``jvp`` of ``vjp``) replace the contraction when an estimate of the
  floating-point work (XLA's cost analysis of the model) says they are cheaper.
* ``"auto"`` (default): ``"structured"`` when the analysis finds a factorisable leaf, else
  ``"generic"``. It falls back to ``"generic"`` only on ``structured.StructureError`` (the
  documented "cannot analyse this model" signal); any other error propagates.

Compiled functions are cached per model *structure* (``helpers._tracing``): repeated calls,
including calls with a fresh ``lambda`` around the same model, cost no compilation, and the
cache holds no arrays.

Every per-example kernel assumes that examples do not interact. Each call checks that on a
probe batch and raises ``ValueError`` for models that mix examples (batch normalisation in
training mode, centring by the batch mean); ``entk_operator`` differentiates the whole batch
and is the tool for those.

Shapes follow the paper's conventions (seed 002 §2.1): the full kernel is ``(N1, N2, C, C)``;
``flatten`` stacks it into ``(N1*C, N2*C)`` with row index ``n*C + i`` (seed 002 stacks
per-class blocks, row ``i*N + n``: the same matrix with rows and columns permuted, hence the
same eigenvalues and permuted eigenvectors); ``class_mean`` averages the diagonal class blocks;
``per_class`` picks one of them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator, eigsh

from . import _checks
from . import _tracing
from . import structured as _structured

__all__ = [
    "entk",
    "class_mean_entk",
    "flatten",
    "class_mean",
    "per_class",
    "layerwise_entk",
    "entk_operator",
    "entk_fn",
    "explain",
    "top_eigenpairs",
    "find_cliffs",
    "drop_ratios",
    "jacobian",
    "linearized_outputs",
    "kernel_regression",
    "check_finite",
]

# Default memory budget for one block of per-example Jacobians or factors (bytes). 1 GiB: up to
# there the whole call is one fused program (one vmapped jacrev, one matrix product), which is
# what makes the generic path at least as fast as the naive contraction; with 256 MiB the
# modular class-mean kernel (p = 23, n = 256, an 860 MB Jacobian) took four passes and was
# about 1.4x slower than the naive contraction (benchmarks/generic_block_budget.py). Peak
# memory is about twice the block; pass a smaller block_bytes on a small machine.
_DEFAULT_BLOCK_BYTES = 2**30

_METHODS = ("auto", "structured", "generic")


# ----------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------


def check_finite(tree: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if any leaf of ``tree`` holds NaN or inf."""
    _checks.finite_tree(tree, name)


def _as_batch(x: Any, name: str) -> jnp.ndarray:
    if isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x)
        except Exception as err:  # ragged
            raise TypeError(f"{name} must be an array of shape (N, ...); got a ragged {type(x).__name__}") from err
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape (N, ...); got {_checks.describe(x)}")
    kind = np.dtype(x.dtype).kind
    if kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array of shape (N, ...); got dtype {x.dtype}")
    if len(x.shape) < 1:
        raise ValueError(f"{name} must have a leading batch axis, shape (N, ...); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example; got an empty batch of shape {tuple(x.shape)}")
    if kind == "f":
        host = np.asarray(x)  # on the host: an eager device op would compile per shape
        if not np.all(np.isfinite(host)):
            bad = int(host.size - np.count_nonzero(np.isfinite(host)))
            raise ValueError(f"{name} must be finite; got {bad} NaN or inf value(s) in shape {tuple(x.shape)}")
    return jnp.asarray(x)


def _params(params: Any) -> Any:
    _checks.params_tree(params, "params")
    return jax.tree_util.tree_map(jnp.asarray, params)


def _validate(f: Callable, params: Any, x1: Any, x2: Any) -> tuple[jnp.ndarray, jnp.ndarray, int]:
    """Validate the arguments of a kernel function; return ``(x1, x2, C)``.

    ``f`` must be callable; ``params`` a pytree of finite floating-point arrays; ``x1``/``x2``
    finite batches with the same example shape on which ``f`` returns ``(N, C)``.
    """
    _checks.function(f, "f", "f(params, x) -> (N, C)")
    params = _params(params)
    x1 = _as_batch(x1, "x1")
    x2 = x1 if x2 is None else _as_batch(x2, "x2")
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x2 must have the example shape of x1: x1 has shape {x1.shape} (examples "
            f"{x1.shape[1:]}), x2 has shape {x2.shape} (examples {x2.shape[1:]})"
        )
    if np.dtype(x1.dtype).kind != np.dtype(x2.dtype).kind:
        raise TypeError(f"x2 must have the kind of dtype of x1 ({x1.dtype}); got {x2.dtype}")
    traced = _tracing.trace_model(f, params, x1)
    return x1, x2, traced.num_outputs


class _Call:
    """The validated, traced arguments of one kernel call."""

    def __init__(self, f, params, x1, x2, *, check_coupling=True, x_name="x1", mesh=None):
        _checks.function(f, "f", "f(params, x) -> (N, C)")
        self.params = _params(params)
        self.same = x2 is None
        self.x1 = _as_batch(x1, x_name)
        self.x2 = self.x1 if self.same else _as_batch(x2, "x2")
        if self.x1.shape[1:] != self.x2.shape[1:]:
            raise ValueError(
                f"x2 must have the example shape of x1: x1 has shape {self.x1.shape} (examples "
                f"{self.x1.shape[1:]}), x2 has shape {self.x2.shape} (examples {self.x2.shape[1:]})"
            )
        if np.dtype(self.x1.dtype).kind != np.dtype(self.x2.dtype).kind:
            raise TypeError(f"x2 must have the kind of dtype of x1 ({self.x1.dtype}); got {self.x2.dtype}")
        self.leaves = list(jax.tree_util.tree_leaves(self.params))
        self.traced = _tracing.trace_model(f, self.params, self.x1)
        self.c = self.traced.num_outputs
        self.paths = [
            jax.tree_util.keystr(p) or f"leaf{i}"
            for i, (p, _) in enumerate(jax.tree_util.tree_leaves_with_path(self.params))
        ]
        if check_coupling:
            _tracing.check_independent(self.traced, f, self.params, self.x1, None if self.same else self.x2)
        self.n1, self.n2 = int(self.x1.shape[0]), int(self.x2.shape[0])
        self.mesh = _check_mesh(mesh)
        if self.mesh is not None:
            self._shard()

    def _shard(self):
        """Data parallelism: examples sharded over every device of the mesh (padded with copies
        of the first example to a multiple of the device count; the padding is cut from the
        result), parameters and constants replicated. XLA partitions the compiled programs."""
        from jax.sharding import NamedSharding, PartitionSpec

        k = int(self.mesh.devices.size)
        batch = NamedSharding(self.mesh, PartitionSpec(tuple(self.mesh.axis_names)))
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def pad(x):
            x = np.asarray(x)
            n = x.shape[0]
            m = -(-n // k) * k
            if m != n:
                x = np.concatenate([x, np.repeat(x[:1], m - n, axis=0)], axis=0)
            return jax.device_put(x, batch)

        self.x1 = pad(self.x1)
        self.x2 = self.x1 if self.same else pad(self.x2)
        self.leaves = [jax.device_put(leaf, replicated) for leaf in self.leaves]
        self.traced.consts = [jax.device_put(c, replicated) for c in self.traced.consts]

    def trim(self, kernel):
        """Cut the padding examples of a sharded call from a kernel ``(N1', N2', ...)``."""
        if self.mesh is None:
            return kernel
        return kernel[: self.n1, : self.n2]


def _check_mesh(mesh: Any):
    if mesh is None:
        return None
    from jax.sharding import Mesh

    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (or None for one device); got {_checks.describe(mesh)}")
    return mesh


def _check_block_bytes(block_bytes: Any) -> int:
    return _checks.integer(block_bytes, "block_bytes", low=1)


# ----------------------------------------------------------------------------------------
# the generic path: per-example Jacobians, contracted in blocks
# ----------------------------------------------------------------------------------------


def _push(g: Callable, p: Any, t: Any, forward: bool):
    """``J t`` for ``J`` the Jacobian of ``g`` at ``p``: by ``jax.jvp``, or, for models with
    custom_vjp rules (no forward mode), as the vjp of the (linear) vjp: ``J t = (u -> J^T u)^T t``."""
    if forward:
        return jax.jvp(g, (p,), (t,))[1]
    out, pull = jax.vjp(g, p)
    _, pull2 = jax.vjp(lambda u: pull(u)[0], jnp.zeros_like(out))
    return pull2(t)[0]


def _forward_mode(traced: _tracing.TracedModel) -> bool:
    return _tracing.cached(("forward-mode", traced.key), lambda: not _tracing.has_custom_vjp(traced.jaxpr))


def _forward_flops(traced: _tracing.TracedModel) -> float:
    """XLA's estimate of the floating-point work of one forward pass on one example."""

    def build():
        single = traced.single()
        consts = [jax.ShapeDtypeStruct(np.shape(c), jnp.asarray(c).dtype) for c in traced.consts]
        leaves = [jax.ShapeDtypeStruct(s, d) for s, d in zip(traced.leaf_shapes, traced.leaf_dtypes)]
        xi = jax.ShapeDtypeStruct(traced.x_shape, traced.x_dtype)
        try:
            cost = jax.jit(single).lower(consts, leaves, xi).cost_analysis()
            if isinstance(cost, (list, tuple)):
                cost = cost[0] if cost else {}
            flops = float(cost.get("flops", 0.0)) if cost else 0.0
        except Exception:  # noqa: BLE001 - no estimate: fall back on one multiply-add per weight
            flops = 0.0
        return max(flops, 2.0 * sum(int(np.prod(s, dtype=np.int64)) for s in traced.leaf_shapes))

    return _tracing.cached(("flops", traced.key), build)


def _substituted(single, consts, leaves, leaf_idx, sub, xi):
    """The model on one example with the leaves ``leaf_idx`` replaced by ``sub`` (the variables
    the Jacobian is taken with respect to); every other leaf is held fixed."""
    full = list(leaves)
    for i, s in zip(leaf_idx, sub):
        full[i] = s
    return single(consts, full, xi)


def _grad_fn(traced: _tracing.TracedModel, leaf_idx: tuple, mesh=None):
    """jitted ``(consts, leaves, x (n, ...), cls (k,)) -> [(n, k, P_l) per leaf in leaf_idx]``:
    the rows ``cls`` of each example's Jacobian with respect to the chosen leaves."""

    def build():
        single = traced.single()
        c = traced.num_outputs

        def fn(consts, leaves, x, cls):
            sub = [leaves[i] for i in leaf_idx]

            def one(xi):
                out, pull = jax.vjp(lambda s: _substituted(single, consts, leaves, leaf_idx, s, xi), sub)
                basis = jax.nn.one_hot(cls, c, dtype=out.dtype)
                (grads,) = jax.vmap(pull)(basis)
                return [gr.reshape(cls.shape[0], -1) for gr in grads]

            return jax.vmap(one)(x)

        return _tracing.per_example(fn, mesh, extra=1)

    return _tracing.cached(("grad", traced.key, leaf_idx, mesh), build)


def _vp_fn(traced: _tracing.TracedModel, leaf_idx: tuple):
    """jitted ``(consts, leaves, x1 (N1, ...), xcols (k, ...), cls (k,)) -> (k, N1, C)``: columns
    ``K[:, m, :, j] = J(x1) J_j(x_m)^T`` of the kernel restricted to the chosen leaves, by one
    vjp (J^T e) and one vmapped jvp (J t) per column."""

    def build():
        single = traced.single()
        c = traced.num_outputs
        forward = _forward_mode(traced)

        def fn(consts, leaves, x1, xcols, cls):
            sub = [leaves[i] for i in leaf_idx]

            def g(sub, xi):
                return _substituted(single, consts, leaves, leaf_idx, sub, xi)

            def tangent(xm, j):
                out, pull = jax.vjp(lambda s: g(s, xm), sub)
                (t,) = pull(jax.nn.one_hot(j, c, dtype=out.dtype))
                return t

            tangents = jax.vmap(tangent)(xcols, cls)

            def column(t):
                return jax.vmap(lambda xi: _push(lambda s: g(s, xi), sub, t, forward))(x1)

            return jax.vmap(column)(tangents)

        return jax.jit(fn)

    return _tracing.cached(("vp", traced.key, leaf_idx), build)


def _jacobian_rows(call: _Call, x, leaf_idx: tuple, cls: np.ndarray, slices: list, budget: int) -> jnp.ndarray:
    """``(N, len(cls), sum of slice widths)``: the Jacobian rows ``cls`` of every example of ``x``
    with respect to the parameter slices ``[(leaf, start, stop), ...]`` (leaves in ``leaf_idx``)."""
    itemsize = np.dtype(call.traced.out_dtype).itemsize
    full_width = sum(int(np.prod(call.traced.leaf_shapes[i], dtype=np.int64)) for i in leaf_idx)
    per_example = len(cls) * full_width * itemsize
    # one example's rows is the smallest unit: a budget below it is exceeded by that much
    n = x.shape[0]
    chunk = _tracing.chunk_size(n, per_example, budget, call.mesh)
    fn = _grad_fn(call.traced, leaf_idx, call.mesh)
    cls_j = jnp.asarray(cls, dtype=jnp.int32)
    pos = {leaf: k for k, leaf in enumerate(leaf_idx)}
    parts = []
    for a in range(0, n, chunk):
        xb = _tracing.place(x[a : a + chunk], chunk, call.mesh)
        grads = fn(call.traced.consts, call.leaves, xb, cls_j)
        cols = [grads[pos[leaf]][:, :, s0:s1] for leaf, s0, s1 in slices]
        block = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
        parts.append(block[: min(chunk, n - a)])
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)


def _blocks(call: _Call, leaf_idx: list, collapse, budget: int) -> list:
    """Split (output classes) x (parameters) into blocks whose Jacobian rows for every example
    fit in ``budget``: ``[(classes, leaves of the block, [(leaf, start, stop), ...]), ...]``."""
    itemsize = np.dtype(call.traced.out_dtype).itemsize
    n_rows = call.x1.shape[0] + (0 if call.same else call.x2.shape[0])
    capacity = max(1, int(budget // (n_rows * itemsize)))  # numbers per example in one block
    c = call.c
    sizes = {i: int(np.prod(call.traced.leaf_shapes[i], dtype=np.int64)) for i in leaf_idx}
    total = sum(sizes.values())
    classes = np.arange(c)
    if collapse == "class_mean":
        # classes are separable: (1/C) sum_i J_i J_i^T
        if c * total <= capacity:
            class_chunks = [classes]
        elif total <= capacity:
            per = max(1, capacity // total)
            class_chunks = [classes[a : a + per] for a in range(0, c, per)]
        else:
            class_chunks = [classes[a : a + 1] for a in range(c)]
        per_class = 1 if len(class_chunks) > 1 else c
        width = max(1, capacity // per_class)
    else:
        class_chunks = [classes]
        width = max(1, capacity // c)
    # pack parameter slices into blocks of at most ``width`` parameters
    packs: list = []
    current: list = []
    room = width
    for leaf in leaf_idx:
        start = 0
        while start < sizes[leaf]:
            take = min(room, sizes[leaf] - start)
            current.append((leaf, start, start + take))
            start += take
            room -= take
            if room == 0:
                packs.append(current)
                current, room = [], width
    if current:
        packs.append(current)
    out = []
    for cls in class_chunks:
        for pack in packs:
            leaves_in = tuple(dict.fromkeys(leaf for leaf, _, _ in pack))
            out.append((cls, leaves_in, pack))
    return out


def _use_vector_products(call: _Call, leaf_idx: list, collapse) -> bool:
    """Full kernels only: are NTK-vector products cheaper than the Jacobian contraction?"""
    if collapse is not None or call.mesh is not None or not _forward_mode(call.traced):
        return False
    flops = _forward_flops(call.traced)
    n1, n2, c = call.x1.shape[0], call.x2.shape[0], call.c
    p = sum(int(np.prod(call.traced.leaf_shapes[i], dtype=np.int64)) for i in leaf_idx)
    contraction = 2.0 * n1 * n2 * c * c * p + 3.0 * (n1 + (0 if call.same else n2)) * c * flops
    # per column: a vjp on one example (~3 forward passes) and the tangent half of a jvp on
    # every example of x1 (~1.5 forward passes each)
    products = n2 * c * (3.0 + 1.5 * n1) * flops
    # matrix products run closer to peak than vmapped jvps: demand a clear margin
    return products < 0.5 * contraction


def _generic_group(call: _Call, leaf_idx: list, collapse, budget: int) -> jnp.ndarray:
    """The kernel restricted to the leaves ``leaf_idx`` by the generic path."""
    n1, n2, c = call.x1.shape[0], call.x2.shape[0], call.c
    dtype = call.traced.out_dtype
    if _use_vector_products(call, leaf_idx, collapse):
        return _vector_product_group(call, tuple(leaf_idx), budget)
    result = None
    for cls, leaves_in, pack in _blocks(call, leaf_idx, collapse, budget):
        j1 = _jacobian_rows(call, call.x1, leaves_in, cls, pack, budget)
        j2 = j1 if call.same else _jacobian_rows(call, call.x2, leaves_in, cls, pack, budget)
        if collapse == "class_mean":
            term = j1.reshape(n1, -1) @ j2.reshape(n2, -1).T
        else:
            term = (j1.reshape(n1 * c, -1) @ j2.reshape(n2 * c, -1).T).reshape(n1, c, n2, c).transpose(0, 2, 1, 3)
        result = term if result is None else result + term
    if result is None:
        shape = (n1, n2) if collapse == "class_mean" else (n1, n2, c, c)
        return jnp.zeros(shape, dtype)
    return result / c if collapse == "class_mean" else result


def _vector_product_group(call: _Call, leaf_idx: tuple, budget: int) -> jnp.ndarray:
    n1, n2, c = call.x1.shape[0], call.x2.shape[0], call.c
    itemsize = np.dtype(call.traced.out_dtype).itemsize
    p = sum(int(np.prod(call.traced.leaf_shapes[i], dtype=np.int64)) for i in leaf_idx)
    per_column = itemsize * (2 * p + n1 * c * 4)
    cols = max(1, min(n2 * c, int(budget // max(per_column, 1))))
    fn = _vp_fn(call.traced, leaf_idx)
    m_idx = np.repeat(np.arange(n2), c)
    j_idx = np.tile(np.arange(c), n2)
    out = []
    for a in range(0, n2 * c, cols):
        m = m_idx[a : a + cols]
        j = j_idx[a : a + cols]
        k = len(m)
        if k < cols:  # pad to one shape
            m = np.concatenate([m, np.zeros(cols - k, int)])
            j = np.concatenate([j, np.zeros(cols - k, int)])
        block = fn(call.traced.consts, call.leaves, call.x1, call.x2[jnp.asarray(m)], jnp.asarray(j, dtype=jnp.int32))
        out.append(block[:k])
    cols_all = jnp.concatenate(out, axis=0) if len(out) > 1 else out[0]  # (N2*C, N1, C)
    return cols_all.reshape(n2, c, n1, c).transpose(2, 0, 3, 1)


# ----------------------------------------------------------------------------------------
# dispatch: structured leaves + generic leaves, per label
# ----------------------------------------------------------------------------------------


def _plan(call: _Call, method: str):
    """The structured plan, or None when the generic path computes every leaf."""
    _checks.choice(method, "method", _METHODS)
    if method == "generic":
        return None
    try:
        plan = _structured.plan_for(call.traced, call.paths)
    except _structured.StructureError:
        if method == "structured":
            raise
        return None
    if method == "auto" and not plan.dense:
        return None
    return plan


def _contract_fn(traced: _tracing.TracedModel, leaf_idx: tuple, collapse, same: bool):
    """A pure function ``(consts, leaves, x1, x2) -> kernel`` over the leaves ``leaf_idx``: the
    per-example Jacobians of all examples and all classes, contracted leaf by leaf."""
    single = traced.single()
    c = traced.num_outputs

    def jac(consts, leaves, x):
        def one(xi):
            return jax.jacrev(lambda s: _substituted(single, consts, leaves, leaf_idx, s, xi))([leaves[i] for i in leaf_idx])

        return [j.reshape(j.shape[0], c, -1) for j in jax.vmap(one)(x)]

    def run(consts, leaves, x1, x2):
        j1 = jac(consts, leaves, x1)
        j2 = j1 if same else jac(consts, leaves, x2)
        n1, n2 = x1.shape[0], x2.shape[0]
        if collapse == "class_mean":
            return sum(a.reshape(n1, -1) @ b.reshape(n2, -1).T for a, b in zip(j1, j2)) / c
        k = sum(a.reshape(n1 * c, -1) @ b.reshape(n2 * c, -1).T for a, b in zip(j1, j2))
        return k.reshape(n1, c, n2, c).transpose(0, 2, 1, 3)

    return run


def _fused_fn(call: _Call, plan, labels: tuple, collapse, groups: tuple):
    """One compiled program for the whole call (used when everything fits in one block)."""

    def build():
        dense_run = _structured.dense_kernels_fn(plan, labels, collapse, call.same) if plan is not None else None
        generic_runs = [(name, _contract_fn(call.traced, idx, collapse, call.same)) for name, idx in groups]

        def run(consts, leaves, x1, x2):
            out = dict(dense_run(consts, leaves, x1, x2)) if dense_run is not None else {}
            for name, g in generic_runs:
                term = g(consts, leaves, x1, x2)
                out[name] = term if name not in out else out[name] + term
            return out

        return jax.jit(run)

    key = ("fused", call.traced.key, labels, collapse, call.same, plan is not None, groups)
    return _tracing.cached(key, build)


def _kernels_for(call: _Call, labels: list, collapse, block_bytes: int, method: str) -> dict:
    """``{label: kernel (numpy)}``, labels in order of first appearance."""
    block_bytes = _check_block_bytes(block_bytes)
    names = list(dict.fromkeys(labels))
    plan = _plan(call, method)
    generic_leaves = list(range(len(call.leaves))) if plan is None else list(plan.rest)
    groups = tuple(
        (name, tuple(i for i in generic_leaves if labels[i] == name))
        for name in names
        if any(labels[i] == name for i in generic_leaves)
    )
    itemsize = np.dtype(call.traced.out_dtype).itemsize
    n_total = call.x1.shape[0] + (0 if call.same else call.x2.shape[0])
    p_generic = sum(int(np.prod(call.traced.leaf_shapes[i], dtype=np.int64)) for i in generic_leaves)
    one_block = n_total * (
        (_structured.factor_bytes(plan, itemsize) if plan is not None else 0) + call.c * p_generic * itemsize
    )
    vector_products = any(_use_vector_products(call, list(idx), collapse) for _, idx in groups)
    if one_block <= block_bytes and not vector_products and call.mesh is None:
        fn = _fused_fn(call, plan, tuple(labels), collapse, groups)
        out = fn(call.traced.consts, call.leaves, call.x1, call.x2)
        return {name: np.asarray(call.trim(out[name])) for name in names}
    out: dict = {}
    if plan is not None:
        out.update(
            _structured.dense_kernels(
                call.traced, plan, call.leaves, call.x1, None if call.same else call.x2, labels, collapse, block_bytes, call.mesh
            )
        )
    for name, idx in groups:
        term = _generic_group(call, list(idx), collapse, block_bytes)
        out[name] = term if name not in out else out[name] + term
    return {name: np.asarray(call.trim(out[name])) for name in names}


def _kernels_by_label(f, params, x1, x2, labels, collapse, block_bytes, method) -> dict:
    call = _Call(f, params, x1, x2)
    return _kernels_for(call, list(labels), collapse, block_bytes, method)


# ----------------------------------------------------------------------------------------
# public kernels
# ----------------------------------------------------------------------------------------


def jacobian(f: Callable, params: Any, x: Any) -> jnp.ndarray:
    """The per-example Jacobian, flattened over parameters.

    Args:
        f: model, ``f(params, x) -> (N, C)``.
        params: pytree of floating-point arrays (P numbers in all).
        x: inputs, ``(N, ...)``.

    Returns:
        ``(N, C, P)``, ``J[n, i, mu] = d f_i(x_n) / d theta_mu``, parameters in the order of
        ``jax.flatten_util.ravel_pytree(params)``. Materialises N*C*P numbers: for large
        models use ``entk`` (blocked) or ``entk_operator`` (matrix-free) instead.
    """
    call = _Call(f, params, x, None, x_name="x")
    return _jacobian_of(call)


def _jacobian_of(call: _Call) -> jnp.ndarray:
    leaf_idx = tuple(range(len(call.leaves)))
    fn = _grad_fn(call.traced, leaf_idx)
    grads = fn(call.traced.consts, call.leaves, call.x1, jnp.arange(call.c, dtype=jnp.int32))
    return jnp.concatenate(grads, axis=-1) if len(grads) > 1 else grads[0]


def _jacobian_flat(f: Callable, params: Any, x: jnp.ndarray) -> jnp.ndarray:
    """``jacobian`` for callers that validated already (kept for helpers.curvature)."""
    return _jacobian_of(_Call(f, params, x, None, x_name="x"))


def _whole_kernel(f, params, x1, x2, collapse, block_bytes, method, mesh):
    call = _Call(f, params, x1, x2, mesh=mesh)
    return _kernels_for(call, [0] * len(call.leaves), collapse, block_bytes, method)[0]


def entk(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    method: str = "auto",
    mesh: Any = None,
) -> np.ndarray:
    """The full empirical NTK.

    Args:
        f: model, ``f(params, x) -> (N, C)``; row ``n`` must depend on ``x[n]`` only (checked).
        params: pytree of floating-point arrays.
        x1: inputs, ``(N1, ...)``.
        x2: inputs, ``(N2, ...)`` with the same example shape; ``None`` means ``x1``.
        block_bytes: memory budget for one block of per-example Jacobians or factors.
        method: ``"auto"`` (default), ``"structured"`` or ``"generic"`` (module docstring).
            The same kernel to float tolerance.
        mesh: a ``jax.sharding.Mesh``: examples are sharded over all its devices (data
            parallel; one host or several under ``jax.distributed``), parameters replicated.
            ``None``: the default device.

    Returns:
        ``(N1, N2, C, C)`` with ``K[n, m, i, j] = sum_mu df_i(x1_n)/dtheta_mu df_j(x2_m)/dtheta_mu``
        (seed 002 eq. 3).
    """
    return _whole_kernel(f, params, x1, x2, None, block_bytes, method, mesh)


def class_mean_entk(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    method: str = "auto",
    mesh: Any = None,
) -> np.ndarray:
    """The class-mean eNTK ``(1/C) sum_i K_ii(x, x')`` without forming the full kernel.

    Equal to ``class_mean(entk(f, params, x1, x2))`` (seed 002 §2.1, the collapse used for the
    modular-addition cliffs). Arguments as in ``entk``.

    Returns:
        ``(N1, N2)``.
    """
    return _whole_kernel(f, params, x1, x2, "class_mean", block_bytes, method, mesh)


def explain(f: Callable, params: Any, x: Any) -> dict[str, str]:
    """How ``entk`` (``method="auto"``) computes each parameter leaf, and why.

    Returns:
        ``{leaf path: "factorised ..." | "generic (reason)"}``; raises ``ValueError`` for a
        model that mixes examples, as the kernels do.
    """
    call = _Call(f, params, x, None, x_name="x")
    try:
        plan = _structured.plan_for(call.traced, call.paths)
    except _structured.StructureError as err:
        return {p: f"generic (the model could not be analysed: {err})" for p in call.paths}
    return plan.explain()


# ----------------------------------------------------------------------------------------
# a jittable kernel function
# ----------------------------------------------------------------------------------------


def entk_fn(
    f: Callable,
    *,
    collapse: str | None = None,
    diagonal: bool = False,
    implementation: str = "jacobian",
) -> Callable:
    """A pure, jittable and vmappable eNTK function ``kernel(params, x1, x2=None)``.

    The counterpart of neural-tangents' ``empirical_ntk_fn`` for researchers who want the
    kernel inside their own ``jax.jit``/``jax.vmap``/``jax.grad`` code. It does no input
    checks, no example-independence check and no Python-side blocking: use ``entk`` for
    those and for the factorised speed-up.

    Args:
        f: model ``f(params, x) -> (N, C)`` acting on examples independently.
        collapse: ``None`` (``(N1, N2, C, C)``), ``"class_mean"`` (``(N1, N2)``, mean of the
            diagonal class blocks) or ``"trace"`` (``(N1, N2)``, their sum).
        diagonal: only the pairs ``(x1_n, x2_n)`` (``x2`` defaults to ``x1``, so the kernel's
            diagonal): ``(N, C, C)`` or ``(N,)``.
        implementation: ``"jacobian"`` (per-example Jacobians contracted per leaf) or
            ``"vector_products"`` (``J (J^T e)`` by vmapped ``jvp``/``vjp``: no Jacobian
            is stored; cheaper for full kernels of models with many outputs).

    Returns:
        ``kernel(params, x1, x2=None) -> array``.
    """
    _checks.function(f, "f", "f(params, x) -> (N, C)")
    _checks.choice(collapse, "collapse", (None, "class_mean", "trace"))
    _checks.boolean(diagonal, "diagonal")
    _checks.choice(implementation, "implementation", ("jacobian", "vector_products"))

    def single(p, xi):
        return f(p, xi[None])[0]

    def collapse_full(k):  # k: (..., C, C)
        if collapse is None:
            return k
        tr = jnp.trace(k, axis1=-2, axis2=-1)
        return tr / k.shape[-1] if collapse == "class_mean" else tr

    def by_jacobian(params, x1, x2):
        j1 = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(params, x1)
        j2 = j1 if x2 is None else jax.vmap(jax.jacrev(single), in_axes=(None, 0))(params, x2)
        l1 = [a.reshape(a.shape[0], a.shape[1], -1) for a in jax.tree_util.tree_leaves(j1)]
        l2 = [a.reshape(a.shape[0], a.shape[1], -1) for a in jax.tree_util.tree_leaves(j2)]
        c = l1[0].shape[1]
        if collapse is not None:
            spec = "aip,aip->a" if diagonal else "aip,bip->ab"
            k = sum(jnp.einsum(spec, a, b) for a, b in zip(l1, l2))
            return k / c if collapse == "class_mean" else k
        spec = "aip,ajp->aij" if diagonal else "aip,bjp->abij"
        return sum(jnp.einsum(spec, a, b) for a, b in zip(l1, l2))

    def by_products(params, x1, x2):
        x2 = x1 if x2 is None else x2
        c = jax.eval_shape(single, params, x1[0]).shape[0]
        basis = jnp.eye(c, dtype=jax.eval_shape(single, params, x1[0]).dtype)

        def tangents(xm):  # J(xm)^T e_j for every class j: a pytree with leading axis C
            _, pull = jax.vjp(lambda p: single(p, xm), params)
            return jax.vmap(lambda e: pull(e)[0])(basis)

        forward = not _tracing.has_custom_vjp(jax.make_jaxpr(single)(params, x1[0]).jaxpr)

        def push(xi, t):  # J(xi) t for a stack of tangents t: (C_t, C)
            return jax.vmap(lambda tt: _push(lambda p: single(p, xi), params, tt, forward))(t)

        if diagonal:
            k = jax.vmap(lambda xa, xb: push(xa, tangents(xb)).T)(x1, x2)  # (N, C, C)
        else:
            t_all = jax.vmap(tangents)(x2)  # leaves (N2, C, ...)
            k = jax.vmap(lambda t: jax.vmap(lambda xi: push(xi, t))(x1))(t_all)  # (N2, N1, C_j, C_i)
            k = k.transpose(1, 0, 3, 2)
        return collapse_full(k)

    impl = by_jacobian if implementation == "jacobian" else by_products

    def kernel(params, x1, x2=None):
        if diagonal and x2 is not None and x1.shape[0] != x2.shape[0]:
            raise ValueError(f"x2 must have as many examples as x1 for diagonal=True; got {x2.shape[0]} and {x1.shape[0]}")
        return impl(params, x1, x2)

    return kernel


# ----------------------------------------------------------------------------------------
# collapses (seed 002 §2.1)
# ----------------------------------------------------------------------------------------


def _check_full_kernel(K: Any, name: str = "K") -> np.ndarray:
    K = _checks.array(K, name, ndim=4)
    if K.shape[2] != K.shape[3]:
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
    if isinstance(groups, Mapping) and isinstance(params, Mapping) and groups and all(
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
        return [n for n in groups.keys() if n in labels], labels
    # a pytree of labels with the structure of params
    try:
        label_leaves = jax.tree_util.tree_structure(params).flatten_up_to(groups)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "groups must be None, a dict {group: [top-level keys]}, or a pytree of labels with "
            f"the structure of params ({jax.tree_util.tree_structure(params)}); got {groups!r}"
        ) from err
    for lab in label_leaves:
        try:
            hash(lab)
        except TypeError as err:
            raise TypeError(f"groups must hold hashable labels; got {_checks.describe(lab)}") from err
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
    mesh: Any = None,
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
        mesh: shard examples over a ``jax.sharding.Mesh``, as in ``entk``.

    Returns:
        dict group -> kernel. The groups sum to ``entk`` (Theta = sum_l Theta^l, seed 000 §7).
    """
    _checks.choice(collapse, "collapse", (None, "class_mean"))
    call = _Call(f, params, x1, x2, mesh=mesh)
    names, labels = _group_labels(call.params, groups)
    kernels = _kernels_for(call, labels, collapse, block_bytes, method)
    return {name: kernels[name] for name in names}


# ----------------------------------------------------------------------------------------
# matrix-free operator
# ----------------------------------------------------------------------------------------


def _operator_fns(key, jaxpr_b, c, n, collapse, forward):
    """Compiled products of the batch kernel J J^T (J: Jacobian of the whole batch)."""

    def build():
        from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

        def model(consts, leaves, x):
            (out,) = jaxpr_as_fun(ClosedJaxpr(jaxpr_b, list(consts)))(*leaves, x)
            return out

        def product(consts, leaves, x, v):  # v: (N, C) -> J J^T v, (N, C)
            out, pull = jax.vjp(lambda p: model(consts, p, x), leaves)
            (t,) = pull(v.astype(out.dtype))
            return _push(lambda p: model(consts, p, x), leaves, t, forward)

        if collapse == "flat":

            def mv(consts, leaves, x, v):
                return product(consts, leaves, x, v.reshape(n, c)).reshape(n * c)

        else:

            def mv(consts, leaves, x, v):
                # (1/C) sum_i J_i J_i^T v: one vjp/jvp pair per class, batched with vmap, keeping
                # only the diagonal class block (cross-class terms J_j J_i^T must not enter).
                eye = jnp.eye(c, dtype=v.dtype)

                def one_class(e):
                    return product(consts, leaves, x, v[:, None] * e[None, :]) @ e

                return jax.vmap(one_class)(eye).sum(axis=0) / c

        return jax.jit(mv), jax.jit(jax.vmap(mv, in_axes=(None, None, None, 1), out_axes=1))

    return _tracing.cached(key, build)


def entk_operator(f: Callable, params: Any, x: Any, *, collapse: str = "flat", mesh: Any = None) -> LinearOperator:
    """The eNTK on a batch as a matrix-free ``scipy.sparse.linalg.LinearOperator``.

    A product ``K v`` is one ``jax.vjp`` (``J^T v``) followed by one ``jax.jvp``
    (``J (J^T v)``): neither the Jacobian nor the kernel is ever formed. ``J`` is the Jacobian
    of the whole batch ``f(params, x)``, so the operator is defined for models that mix
    examples too (batch normalisation), where the per-example kernels refuse.

    Args:
        f: model, ``f(params, x) -> (N, C)``.
        params: pytree of floating-point arrays.
        x: inputs, ``(N, ...)``.
        collapse: ``"flat"`` for the flattened kernel ``(N*C, N*C)`` (row ``n*C + i``), or
            ``"class_mean"`` for the ``(N, N)`` class-mean kernel.
        mesh: a ``jax.sharding.Mesh``: examples (and the vectors the operator multiplies) are
            sharded over its devices, parameters replicated; N must be a multiple of the number
            of devices (the operator's dimension cannot be padded).

    Returns:
        a symmetric ``LinearOperator`` accepting vectors and ``(dim, k)`` blocks, in the dtype of
        the model's outputs.
    """
    _checks.choice(collapse, "collapse", ("flat", "class_mean"))
    _checks.function(f, "f", "f(params, x) -> (N, C)")
    params = _params(params)
    x = _as_batch(x, "x")
    traced = _tracing.trace_model(f, params, x)  # checks that f runs and returns (N, C)
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def batched(leaf_list, xb):
        return f(jax.tree_util.tree_unflatten(treedef, leaf_list), xb)

    closed = jax.make_jaxpr(batched)(list(leaves), x)
    n, c = x.shape[0], traced.num_outputs
    out_shape = tuple(closed.jaxpr.outvars[0].aval.shape)
    if out_shape != (n, c):
        raise ValueError(f"f(params, x) must return shape (N, C) = ({n}, {c}) for x of shape {x.shape}; got {out_shape}")
    dtype = np.dtype(traced.out_dtype)
    key = ("operator", _tracing._structural_key(closed), str(treedef), collapse, n, c)
    mv, batched_mv = _operator_fns(key, closed.jaxpr, c, n, collapse, not _tracing.has_custom_vjp(closed.jaxpr))
    consts = list(closed.consts)
    dim = n * c if collapse == "flat" else n
    mesh = _check_mesh(mesh)
    put_v, put_m = jnp.asarray, jnp.asarray
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        k = int(mesh.devices.size)
        if n % k:
            raise ValueError(f"x must hold a multiple of the mesh's {k} devices for a sharded operator; got N = {n}")
        axes = tuple(mesh.axis_names)
        replicated = NamedSharding(mesh, PartitionSpec())
        x = jax.device_put(x, NamedSharding(mesh, PartitionSpec(axes)))
        leaves = [jax.device_put(leaf, replicated) for leaf in leaves]
        consts = [jax.device_put(cst, replicated) for cst in consts]
        put_v = lambda v: jax.device_put(v, NamedSharding(mesh, PartitionSpec(axes)))  # noqa: E731
        put_m = lambda v: jax.device_put(v, NamedSharding(mesh, PartitionSpec(axes, None)))  # noqa: E731

    def matvec(v):
        v = np.asarray(v, dtype=dtype).reshape(dim)
        return np.asarray(mv(consts, leaves, x, put_v(v)))

    def matmat(V):
        V = np.asarray(V, dtype=dtype).reshape(dim, -1)
        return np.asarray(batched_mv(consts, leaves, x, put_m(V)))

    return LinearOperator((dim, dim), matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=dtype)


# ----------------------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------------------


class _Counted(LinearOperator):
    """Wraps an operator and counts the vectors it is applied to."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.dtype, op.shape)
        self.op = op
        self.products = 0

    def _matvec(self, v):
        self.products += 1
        return self.op.matvec(v)

    def _matmat(self, V):
        self.products += V.shape[1]
        return self.op.matmat(V)

    def _rmatvec(self, v):
        return self._matvec(v)


def _sketch(op: LinearOperator, k: int, oversample: int, power_iters: int, seed: int):
    """Randomised subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4) for the top of a
    positive semi-definite operator, then Rayleigh-Ritz. Hand-written because SciPy has no
    randomised eigensolver for a LinearOperator; every product is a block (``matmat``), which
    the eNTK operator evaluates as one vmapped jvp/vjp."""
    d = op.shape[0]
    width = min(d, k + oversample)
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(op.matmat(rng.standard_normal((d, width)).astype(op.dtype)))[0]
    for _ in range(power_iters):
        Q = np.linalg.qr(op.matmat(Q))[0]
    AQ = op.matmat(Q)
    T = Q.T @ AQ
    vals, W = np.linalg.eigh((T + T.T) / 2)
    vals, W = vals[-k:], W[:, -k:]
    return vals, Q @ W


def top_eigenpairs(
    A: Any,
    k: int,
    *,
    tol: float = 0.0,
    seed: int = 0,
    method: str = "auto",
    oversample: int = 10,
    power_iters: int = 4,
    return_info: bool = False,
):
    """The ``k`` largest eigenvalues of a symmetric matrix or operator, and their eigenvectors.

    Dense arrays use LAPACK's symmetric solver for the top ``k`` only
    (``scipy.linalg.eigh(..., subset_by_index=...)``). A ``LinearOperator`` (e.g.
    ``entk_operator``, for kernels too large to materialise) uses Lanczos
    (``scipy.sparse.linalg.eigsh``, ``which="LA"``, needs ``k < dim``) or, with
    ``method="sketch"``, randomised subspace iteration on blocks of ``k + oversample`` vectors
    (cheaper per product on the eNTK operator; accuracy set by ``power_iters`` and the gap).

    Args:
        A: ``(D, D)`` symmetric array or ``LinearOperator``.
        k: number of eigenpairs, ``1 <= k <= D`` (``< D`` for an operator).
        tol: Lanczos tolerance (0 means machine precision).
        seed: seeds the Lanczos start vector or the sketch, so results are reproducible.
        method: ``"auto"`` (dense: LAPACK; operator: Lanczos), ``"lanczos"`` or ``"sketch"``.
        oversample, power_iters: of the sketch.
        return_info: also return ``{"method", "products", "residuals"}``: the number of
            operator-vector products the solver used, and ``||A v - lambda v|| / lambda_1`` for
            each pair (checked with ``k`` more products, not counted).

    Returns:
        ``(eigenvalues (k,), eigenvectors (D, k))``, eigenvalues in descending order (and the
        info dict when ``return_info``).
    """
    _checks.real(tol, "tol", low=0.0)
    _checks.integer(seed, "seed", low=0)
    _checks.choice(method, "method", ("auto", "lanczos", "sketch"))
    oversample = _checks.integer(oversample, "oversample", low=0)
    power_iters = _checks.integer(power_iters, "power_iters", low=0)
    _checks.boolean(return_info, "return_info")
    if isinstance(A, LinearOperator):
        d0, d1 = A.shape
        if d0 != d1:
            raise ValueError(f"A must be square; the operator has shape {A.shape}")
        k = _checks.integer(k, "k", low=1)
        if not k < d0:
            raise ValueError(
                f"k must satisfy 1 <= k < {d0} for an operator of shape {A.shape}; got k = {k} "
                "(use a dense matrix to get all eigenpairs)"
            )
        op = _Counted(A)
        if method == "sketch":
            vals, vecs = _sketch(op, k, oversample, power_iters, seed)
            used = "sketch"
        else:
            v0 = np.random.default_rng(seed).standard_normal(d0).astype(A.dtype)
            vals, vecs = eigsh(op, k=k, which="LA", tol=tol, v0=v0)
            used = "lanczos"
        products = op.products
        if not (np.all(np.isfinite(vals)) and np.all(np.isfinite(vecs))):
            raise ValueError("A (the operator) produced NaN or inf: its products are not finite")
        apply = A.matmat
    else:
        A = _checks.symmetric(A, "A", rtol=1e-6, kind="float" if np.asarray(A).dtype.kind == "f" else "real")
        k = _checks.integer(k, "k", low=1, high=A.shape[0])
        d = A.shape[0]
        if method == "sketch":
            vals, vecs = _sketch(aslinearoperator_dense(A), k, oversample, power_iters, seed)
            used, products = "sketch", None
        else:
            vals, vecs = scipy.linalg.eigh((A + A.T) / 2, subset_by_index=[d - k, d - 1])
            used, products = "lapack", None
        apply = lambda V: A @ V  # noqa: E731
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    if not return_info:
        return vals, vecs
    resid = np.linalg.norm(apply(vecs) - vecs * vals[None, :], axis=0) / max(abs(vals[0]), np.finfo(np.float64).tiny)
    return vals, vecs, {"method": used, "products": products, "residuals": resid}


def aslinearoperator_dense(A: np.ndarray) -> LinearOperator:
    from scipy.sparse.linalg import aslinearoperator

    return aslinearoperator(A)


def drop_ratios(eigenvalues: Any, *, rel_floor: float = 1e-9) -> np.ndarray:
    """Consecutive ratios ``lambda_k / lambda_{k+1}`` of a descending spectrum.

    Entry ``k - 1`` is the drop after the k-th eigenvalue. Eigenvalues at or below
    ``rel_floor * lambda_1`` are numerical zeros (the kernel's null space): the ratio is not
    defined there and is returned as ``nan``.
    """
    lam = _checks.array(eigenvalues, "eigenvalues", ndim=1, min_len=2).astype(np.float64)
    rel_floor = _checks.real(rel_floor, "rel_floor", low=0.0, high=1.0, high_open=True)
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
    min_ratio = _checks.real(min_ratio, "min_ratio (a ratio of consecutive eigenvalues)", low=1.0, low_open=True)
    prominence = _checks.real(prominence, "prominence", low=0.0)
    window = _checks.integer(window, "window", low=1)
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
        kernel: ``(D, D)`` flattened training kernel (symmetric).
        f0: ``(D,)`` initial outputs (flattened like the kernel rows).
        y: ``(D,)`` targets.
        times: ``(T,)`` non-negative times (integer steps when ``discrete``).
        lr: positive learning rate.

    Returns:
        ``(T, D)`` predicted outputs.
    """
    K = _checks.symmetric(kernel, "kernel", rtol=1e-6).astype(np.float64)
    f0 = _checks.array(f0, "f0").astype(np.float64).reshape(-1)
    y = _checks.array(y, "y").astype(np.float64).reshape(-1)
    if K.shape != (f0.size, f0.size):
        raise ValueError(f"kernel must be (D, D) with D = f0.size = {f0.size}; got shape {K.shape}")
    if y.shape != f0.shape:
        raise ValueError(f"y must have the shape of f0 {f0.shape}; got {y.shape}")
    lr = _checks.real(lr, "lr", low=0.0, low_open=True)
    _checks.boolean(discrete, "discrete")
    t = _checks.array(times, "times").astype(np.float64).reshape(-1)
    if np.any(t < 0):
        raise ValueError(f"times must be non-negative; got minimum {t.min()}")
    if discrete and np.any(t != np.round(t)):
        raise ValueError("times must be integer step counts when discrete=True")
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
        k_test_train: ``(M, D)``; k_train_train: ``(D, D)`` symmetric; y_train: ``(D,)`` or ``(D, k)``.
        ridge: optional ``ridge * I`` (``ridge >= 0``) added to ``K(X, X)`` before solving.

    Returns:
        ``(M,)`` or ``(M, k)`` predictions (relative to a zero initial function).
    """
    Kxx = _checks.symmetric(k_train_train, "k_train_train", rtol=1e-6).astype(np.float64)
    Kt = _checks.array(k_test_train, "k_test_train", ndim=2).astype(np.float64)
    y = _checks.array(y_train, "y_train", ndim=(1, 2)).astype(np.float64)
    ridge = _checks.real(ridge, "ridge", low=0.0)
    if Kt.shape[1] != Kxx.shape[0]:
        raise ValueError(f"k_test_train must be (M, {Kxx.shape[0]}) to match k_train_train; got {Kt.shape}")
    if y.shape[0] != Kxx.shape[0]:
        raise ValueError(f"y_train must have {Kxx.shape[0]} rows to match k_train_train; got shape {y.shape}")
    system = Kxx + ridge * np.eye(Kxx.shape[0])
    try:
        solution = scipy.linalg.solve(system, y, assume_a="sym")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError) as err:
        raise ValueError(f"k_train_train (+ ridge * I) is singular; pass ridge > 0 ({err})") from err
    return Kt @ solution
