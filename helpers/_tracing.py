"""Trace a model once per call; compile once per model structure.

Every kernel path needs compiled functions of the model ``f``. Caching them by the identity of
``f`` (as ``jax.jit`` does) has two faults for a library: a fresh ``lambda`` wrapping the same
model misses the cache, and a cache keyed by ``f`` keeps whatever ``f`` closes over alive (the
arrays a closure captured stay in memory as long as the entry does). So this module keys the
cache by *what the model computes*:

* at each call, ``f`` is traced for one example with ``jax.make_jaxpr`` (about a millisecond for
  the book's models); arrays ``f`` closes over become the jaxpr's constants;
* the key is the printed jaxpr (primitives, shapes, dtypes, literal values, sub-jaxprs) plus the
  identity of any custom differentiation rule it calls;
* compiled functions are built from the *jaxpr*, never from ``f``, and take the constants as
  arguments at every call, so a cache entry holds no array and no reference to ``f``.

Two models that print the same jaxpr and use the same custom rules compute the same function
of ``(constants, parameters, input)``, so sharing compiled code between them is exact.

The per-example kernels assume that the model treats examples independently: row ``n`` of
``f(params, x)`` depends on ``x[n]`` alone. ``check_independent`` tests that on a probe batch
(values, and a directional derivative in parameters and in the other inputs) and raises a
``ValueError`` for models that mix examples (batch normalisation, centring by the batch mean).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, jaxpr_as_fun

__all__ = ["TracedModel", "trace_model", "cached", "check_independent", "CouplingError"]

_CACHE: "OrderedDict[Any, Any]" = OrderedDict()
_CACHE_SIZE = 64


class CouplingError(ValueError):
    """The model's output for one example depends on the other examples of the batch."""


def cached(key: Any, build: Callable[[], Any]) -> Any:
    """Least-recently-used cache of compiled objects (which must not hold arrays)."""
    try:
        hit = _CACHE.pop(key)
    except KeyError:
        hit = build()
    _CACHE[key] = hit
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return hit


def cache_clear() -> None:
    _CACHE.clear()


class _Ident:
    """A key component comparing by identity (for custom-rule objects that hash by id)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _Ident) and other.obj is self.obj


def _rules(jaxpr: Jaxpr, out: list) -> None:
    """Collect the custom differentiation rules (and sub-jaxprs' consts) that printing omits."""
    for eqn in jaxpr.eqns:
        for name, val in eqn.params.items():
            if isinstance(val, ClosedJaxpr):
                _rules(val.jaxpr, out)
                for c in val.consts:  # an inner closed jaxpr with constants: key by identity
                    out.append(_Ident(c))
            elif isinstance(val, Jaxpr):
                _rules(val, out)
            elif isinstance(val, (list, tuple)):
                for v in val:
                    if isinstance(v, ClosedJaxpr):
                        _rules(v.jaxpr, out)
                    elif isinstance(v, Jaxpr):
                        _rules(v, out)
            elif callable(val) and not isinstance(val, type):
                # custom_jvp/vjp rules, callbacks. linear_util.WrappedFun hashes by its function
                # and transformations (what jax itself caches on); plain functions by identity.
                # ``out_trees`` thunks are rebuilt at every trace and carry no semantics.
                if name == "out_trees":
                    continue
                try:
                    hash(val)
                    out.append((name, val))
                except TypeError:
                    out.append((name, _Ident(val)))


def has_custom_vjp(jaxpr: Jaxpr) -> bool:
    """Does the jaxpr call a custom_vjp rule (no forward-mode derivative)?"""
    for eqn in jaxpr.eqns:
        if "custom_vjp" in eqn.primitive.name:
            return True
        for val in eqn.params.values():
            subs = val if isinstance(val, (list, tuple)) else [val]
            for sub in subs:
                if isinstance(sub, ClosedJaxpr) and has_custom_vjp(sub.jaxpr):
                    return True
                if isinstance(sub, Jaxpr) and has_custom_vjp(sub):
                    return True
    return False


def _structural_key(closed: ClosedJaxpr) -> tuple:
    rules: list = []
    _rules(closed.jaxpr, rules)
    consts = tuple((tuple(np.shape(c)), str(jnp.asarray(c).dtype)) for c in closed.consts)
    return (str(closed.jaxpr), consts, tuple(rules))


@dataclass(eq=False)
class TracedModel:
    """One example of ``f`` traced to a jaxpr.

    Attributes:
        jaxpr: the open jaxpr of ``single(leaves, x_one) -> (C,)`` (constants as constvars).
        consts: the constants for this call (what ``f`` closes over).
        key: hashable structural key (see the module docstring).
        treedef: the parameter pytree structure.
        num_outputs: C.
        leaf_shapes, leaf_dtypes: of the parameter leaves.
        x_shape, x_dtype: of one example.
    """

    jaxpr: Jaxpr
    consts: list
    key: tuple
    treedef: Any
    num_outputs: int
    out_dtype: Any
    leaf_shapes: tuple
    leaf_dtypes: tuple
    x_shape: tuple
    x_dtype: Any

    @property
    def num_leaves(self) -> int:
        return len(self.leaf_shapes)

    def single(self) -> Callable:
        """``single(consts, leaves, x_one) -> (C,)``, built from the jaxpr alone."""
        jaxpr = self.jaxpr

        def run(consts, leaves, xi):
            (out,) = jaxpr_as_fun(ClosedJaxpr(jaxpr, list(consts)))(*leaves, xi)
            return out

        return run


def _describe_tree(params: Any) -> str:
    leaves_with_path = jax.tree_util.tree_leaves_with_path(params)
    parts = [f"{jax.tree_util.keystr(p) or '(array)'}: {tuple(np.shape(l))}" for p, l in leaves_with_path[:8]]
    more = "" if len(leaves_with_path) <= 8 else f", ... ({len(leaves_with_path)} leaves)"
    return "{" + ", ".join(parts) + more + "}"


def trace_model(f: Callable, params: Any, x: Any) -> TracedModel:
    """Trace ``f`` on one example of ``x`` (shape ``(N, ...)``; only ``x[:1]`` is used).

    Raises ``TypeError`` naming ``f``/``params``/``x`` when the model cannot be evaluated on
    them (a params pytree that does not match the model, an input of the wrong shape), and
    ``ValueError`` when the model does not return ``(N, C)``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def single(leaf_list, xi):
        return f(jax.tree_util.tree_unflatten(treedef, leaf_list), xi[None])[0]

    def batch_of_one(leaf_list, xi):
        return f(jax.tree_util.tree_unflatten(treedef, leaf_list), xi[None])

    example = jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype)
    try:
        closed = jax.make_jaxpr(single)(list(leaves), example)
    except Exception as err:  # noqa: BLE001 - re-raised with the arguments named
        try:  # distinguish "f fails" from "f returns something other than (N, C)"
            out = jax.eval_shape(batch_of_one, list(leaves), example)
        except Exception:  # noqa: BLE001
            out = None
        if out is not None:
            got = getattr(out, "shape", type(out).__name__)
            raise ValueError(
                f"f(params, x) must return an array of shape (N, C) for x of shape (N, ...); for a "
                f"batch of one example it returned {got}"
            ) from err
        raise TypeError(
            f"f(params, x) failed for params {_describe_tree(params)} and x with examples of shape "
            f"{tuple(x.shape[1:])} ({x.dtype}): {type(err).__name__}: {err}. Check that params is "
            f"the pytree the model expects and that x has the model's input shape"
        ) from err
    if len(closed.jaxpr.outvars) != 1 or len(closed.jaxpr.outvars[0].aval.shape) != 1:
        out = jax.eval_shape(batch_of_one, list(leaves), example)
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"f(params, x) must return an array of shape (N, C) for x of shape (N, ...); for a batch "
            f"of one example it returned {got}"
        )
    out = closed.jaxpr.outvars[0].aval
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"f(params, x) must return floating-point outputs; got dtype {out.dtype}")
    return TracedModel(
        jaxpr=closed.jaxpr,
        consts=list(closed.consts),
        key=_structural_key(closed) + (str(treedef),),
        treedef=treedef,
        num_outputs=int(out.shape[0]),
        out_dtype=out.dtype,
        leaf_shapes=tuple(tuple(np.shape(l)) for l in leaves),
        leaf_dtypes=tuple(str(jnp.asarray(l).dtype) if not hasattr(l, "dtype") else str(l.dtype) for l in leaves),
        x_shape=tuple(x.shape[1:]),
        x_dtype=x.dtype,
    )


# ----------------------------------------------------------------------------------------
# per-example programs, on one device or data-parallel over a mesh
# ----------------------------------------------------------------------------------------


def _shard_map(fn, mesh, in_specs, out_specs):
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map  # JAX < 0.7

    return shard_map(fn, mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def per_example(fn: Callable, mesh: Any = None, extra: int = 0) -> Callable:
    """``jit`` of ``fn(consts, leaves, x, *extra)`` whose outputs all have a leading example axis.

    With a ``jax.sharding.Mesh``, every device runs ``fn`` on its own examples (``shard_map``:
    examples split over all mesh axes, constants, parameters and the ``extra`` arguments
    replicated). The per-device program is the single-device program, so the result cannot
    depend on how XLA would partition it (automatic partitioning of a vmapped convolution's
    weight gradient gave wrong Jacobians in JAX 0.10.2).
    """
    if mesh is None:
        return jax.jit(fn)
    from jax.sharding import PartitionSpec as P

    axes = tuple(mesh.axis_names)
    in_specs = (P(), P(), P(axes)) + (P(),) * extra
    return jax.jit(_shard_map(fn, mesh, in_specs, P(axes)))


def chunk_size(n: int, per_example_bytes: int, budget: int, mesh: Any = None) -> int:
    """Examples per chunk under a memory budget (a multiple of the mesh's device count)."""
    k = 1 if mesh is None else int(mesh.devices.size)
    chunk = max(1, int(budget // max(per_example_bytes, 1)))
    chunk = max(k, chunk // k * k)
    return min(chunk, -(-n // k) * k)


def place(x: Any, size: int, mesh: Any = None):
    """A chunk of examples padded to ``size`` rows (copies of its first row: one shape, one
    compiled program) and, with a mesh, sharded over its devices."""
    n = x.shape[0]
    if n != size:
        x = jnp.concatenate([jnp.asarray(x), jnp.repeat(jnp.asarray(x[:1]), size - n, axis=0)], axis=0)
    if mesh is None:
        return x
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.device_put(x, NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names))))


# ----------------------------------------------------------------------------------------
# do examples interact?
# ----------------------------------------------------------------------------------------

_PROBE = 3  # examples in the probe batch


def _tolerance(dtype) -> float:
    # outputs of a batched and a one-example evaluation of the same independent model differ by
    # rounding only (matmul kernels sum in another order): 1e4 units of roundoff is far above
    # that and far below what a model that mixes examples produces (an O(1) relative change)
    return 1e4 * float(jnp.finfo(dtype).eps)


_VERDICTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


_ADVICE = (
    "Per-example kernels (entk, class_mean_entk, layerwise_entk, jacobian) are undefined for such a "
    "model. Use ntk.entk_operator(f, params, x), which differentiates the whole batch, or make the "
    "model act on examples independently (e.g. batch statistics passed in as constants)."
)


def check_independent(traced: TracedModel, f: Callable, params: Any, x: Any, x2: Any = None, *, advice: str = _ADVICE) -> None:
    """Raise ``CouplingError`` if row ``n`` of ``f(params, x)`` depends on other rows of ``x``.

    On a probe batch (the first examples of ``x``, and of ``x2``), compares the batched model
    with the model evaluated one example at a time: the outputs, and their derivative along a
    random direction in parameter space and (for floating inputs) along a random perturbation
    of the other examples. A model that treats examples independently agrees to rounding.
    Independence is a property of the model's structure: a passed check is remembered per
    function object and traced structure, so repeated calls do not repeat it.
    """
    # host-side slicing: eager device ops would compile a kernel for every new shape
    probe = np.asarray(x[:_PROBE]) if isinstance(x, np.ndarray) else np.asarray(x)[:_PROBE]
    if x2 is not None and probe.shape[0] < _PROBE:
        probe = np.concatenate([probe, np.asarray(x2)[: _PROBE - probe.shape[0]]], axis=0)
    m = probe.shape[0]
    if m < 2:
        return  # one example: the batch of one is the definition of its kernel
    memo_key = (traced.key, m)
    try:
        seen = _VERDICTS.get(f)
    except TypeError:  # not weak-referenceable
        seen = None
    if seen is not None and memo_key in seen:
        return
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def batched(leaf_list, xb):
        return f(jax.tree_util.tree_unflatten(treedef, leaf_list), xb)

    closed_b = jax.make_jaxpr(batched)(list(leaves), probe)
    out_aval = closed_b.jaxpr.outvars[0].aval if len(closed_b.jaxpr.outvars) == 1 else None
    if out_aval is None or tuple(out_aval.shape) != (m, traced.num_outputs):
        got = None if out_aval is None else tuple(out_aval.shape)
        raise ValueError(
            f"f(params, x) must return shape (N, C); for a batch of {m} examples it returned {got}, "
            f"expected {(m, traced.num_outputs)}"
        )
    floating_x = bool(jnp.issubdtype(probe.dtype, jnp.floating))
    single = traced.single()
    jaxpr_b = closed_b.jaxpr

    def build():
        # reverse mode only (models with custom_vjp rules have no forward mode): compare
        # u . f(X) differentiated in the parameters, batched against one example at a time, and
        # the first row's sensitivity to the other rows of X
        def run(consts_s, consts_b, leaf_list, xb, cotangent):
            def fb(leaf_list, xb):
                (out,) = jaxpr_as_fun(ClosedJaxpr(jaxpr_b, list(consts_b)))(*leaf_list, xb)
                return out

            def fs(leaf_list):
                return jax.vmap(lambda xi: single(consts_s, leaf_list, xi))(xb)

            out_b, pull_b = jax.vjp(fb, leaf_list, xb) if floating_x else jax.vjp(lambda p: fb(p, xb), leaf_list)
            out_s, pull_s = jax.vjp(fs, leaf_list)
            grads_b = pull_b(cotangent)
            (grads_s,) = pull_s(cotangent)
            d_jvp = jnp.stack([jnp.abs(a - b).max() for a, b in zip(jax.tree_util.tree_leaves(grads_b[0]), jax.tree_util.tree_leaves(grads_s))]).max()
            scale_g = jnp.stack([jnp.abs(a).max() for a in jax.tree_util.tree_leaves(grads_s)]).max()
            if floating_x:
                row0 = jnp.zeros_like(cotangent).at[0].set(cotangent[0])
                dx = pull_b(row0)[1]
                cross = jnp.abs(dx[1:]).max()
            else:
                cross = jnp.zeros((), out_b.dtype)
            finite = jnp.all(jnp.isfinite(out_b)) & jnp.all(jnp.isfinite(out_s))
            scale = jnp.maximum(jnp.abs(out_s).max(), scale_g)
            return finite, jnp.abs(out_b - out_s).max(), d_jvp, cross, scale

        return jax.jit(run)

    run = cached(("coupling", traced.key, _structural_key(closed_b), m), build)
    rng = np.random.default_rng(0)
    cotangent = rng.standard_normal((m, traced.num_outputs)).astype(np.dtype(traced.out_dtype))
    finite, d_out, d_jvp, cross, scale = run(traced.consts, closed_b.consts, list(leaves), probe, cotangent)
    if not bool(finite):
        raise ValueError(
            f"f(params, x) returns NaN or inf on the first {m} examples of x; the eNTK needs a "
            "model that is finite there"
        )
    d_out, d_jvp, cross, scale = float(d_out), float(d_jvp), float(cross), float(scale)
    if not np.isfinite(scale):
        scale = 1.0  # a NaN derivative one example at a time: the comparison below reports it
    tol = _tolerance(traced.out_dtype) * max(scale, float(jnp.finfo(traced.out_dtype).tiny))
    if not (d_out <= tol and d_jvp <= tol and cross <= tol):
        raise CouplingError(
            "f mixes examples: row n of f(params, x) depends on the other rows of x (on a probe "
            f"batch of {m}: batched vs one-at-a-time outputs differ by {d_out:.3g}, their parameter "
            f"gradients by {d_jvp:.3g}, the first row's gradient reaches the other rows with size {cross:.3g}; "
            f"scale {scale:.3g}; batch normalisation in training mode and centring by the batch mean "
            f"do this). {advice}"
        )
    try:
        _VERDICTS.setdefault(f, set()).add(memo_key)
    except TypeError:
        pass
