"""A fast, factorised eNTK for models built from dense maps ("structured derivatives").

The layerwise eNTK factorises (seed 000 §7): for a parameter block ``theta^l`` that enters the
model only through a representation ``h^l``,

    grad_{theta^l} z = B^l F^l,   B^l = dz/dh^l (representation -> output),
                                  F^l = dh^l/dtheta^l (parameters -> representation),

so ``Theta^l = B^l F^l F^l^T B^l^T``. For a dense map ``h^l = W^l a^{l-1}`` the middle factor is
``F^l F^l^T (x, x') = (a^{l-1}(x) . a^{l-1}(x')) I``, hence

    Theta^l_ij(x, x') = (a^{l-1}(x) . a^{l-1}(x')) * sum_o B^l_io(x) B^l_jo(x')        (*)

and no parameter-sized contraction is needed (Novak et al. 2022, "structured derivatives").
When ``h^l`` reaches the output through an elementwise map ``a^l = phi(h^l)`` followed by a map
that is linear in ``a^l`` with coefficients independent of the input (the last hidden layer of
an MLP, both layers of the modular-addition model), ``B^l(x) = M^l diag(phi'(h^l(x)))`` with a
constant ``M^l``: the class-mean kernel of that layer is then

    (1/C) sum_i Theta^l_ii(x, x') = (a(x) . a(x')) * sum_o s_o phi'_o(x) phi'_o(x') / C,
    s_o = sum_i (M^l_io)^2,

which costs what a closed form costs (seed 002 App. B).

How the structure is found. ``f`` is traced for one example with ``jax.make_jaxpr``. A
parameter leaf is *dense* when it is used exactly once, possibly through ``transpose`` /
``reshape`` / ``convert_element_type``, as one operand of a ``dot_general`` without batch
dimensions; the other operand is ``a``. ``B`` is obtained by adding a zero "probe" to the
``dot_general`` output and differentiating the model with respect to the probe; the
elementwise map ``phi`` and the linearity of the rest are read off the jaxpr. Leaves the
analysis cannot place (biases, shared weights, weights inside a ``jit``-ed sub-function...)
use the generic per-example Jacobian contraction, restricted to those leaves. The result is
the same kernel as ``helpers.ntk.entk`` to float tolerance.

As in ``helpers.ntk``, examples are assumed not to interact (the model is traced on one
example and mapped over the batch with ``vmap``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

__all__ = [
    "StructureError",
    "StructurePlan",
    "analyze",
    "cached_plan",
    "structured_kernels",
    "layer_factors",
    "forward_backward_kernels",
]

_DEFAULT_BLOCK_BYTES = 256 * 2**20

# primitives that act entry by entry (all operands of one shape, or scalars)
_ELEMENTWISE = frozenset(
    """neg sign floor ceil round exp exp2 log log1p expm1 tanh logistic sin cos tan asin acos
    atan sinh cosh asinh acosh atanh sqrt rsqrt cbrt integer_pow pow square abs erf erfc
    erf_inv lgamma digamma max min add sub mul div atan2 convert_element_type copy copy_p
    reduce_precision""".split()
)
# call-like primitives whose body may be elementwise (jax.nn.relu is a custom_jvp around a jit)
_CALLS = frozenset("custom_jvp_call custom_vjp_call custom_vjp_call_jaxpr pjit jit closed_call".split())
# maps that rearrange a parameter's entries without changing their sum of squares
_REARRANGE = frozenset("transpose reshape convert_element_type copy copy_p".split())
# primitives linear in one operand, used to prove that dz/da does not depend on the input
_LINEAR_ANY = frozenset(
    """add sub add_any neg transpose reshape squeeze expand_dims broadcast_in_dim
    convert_element_type reduce_sum copy copy_p slice concatenate""".split()
)


class StructureError(ValueError):
    """The model's structure cannot be analysed (the generic path must be used)."""


# ----------------------------------------------------------------------------------------
# analysis of the traced model
# ----------------------------------------------------------------------------------------


@dataclass
class _Dense:
    """One dense use ``h = dot_general(a, W)`` of a parameter leaf."""

    leaf: int  # index of the leaf in tree_leaves(params)
    eqn: int  # index of the dot_general equation
    act_pos: int  # operand position of ``a`` in the dot_general
    out_var: Any  # the jaxpr variable h
    act_perm: tuple  # transposes a to (free dims of a..., contracted dims...)
    out_perm: tuple  # transposes h to (free dims of a..., free dims of W...)
    rows: int  # R: number of free positions of a (1 for an MLP on one example)
    inner: int  # size of the contracted dims
    width: int  # O: number of free positions of W
    region: list = field(default_factory=list)  # elementwise equations h -> a_out
    exit_var: Any = None  # a_out = phi(h); None when B is not of the diagonal form


@dataclass
class StructurePlan:
    """What ``analyze`` found: which leaves use the factorised formula, and how.

    Attributes:
        closed: the traced single-example ``ClosedJaxpr`` of ``f``.
        num_leaves: number of parameter leaves.
        num_outputs: C.
        dense: the dense leaves (see ``summary``).
        rest: indices of leaves left to the per-example Jacobian.
        paths: printable path of every leaf.
    """

    closed: Any
    num_leaves: int
    num_outputs: int
    dense: list
    rest: list
    paths: list

    def summary(self) -> dict[str, str]:
        """``{leaf path: "dense, diagonal" | "dense" | "generic"}`` in leaf order."""
        kind = {i: "generic" for i in range(self.num_leaves)}
        for d in self.dense:
            kind[d.leaf] = "dense, diagonal" if d.exit_var is not None else "dense"
        return {self.paths[i]: kind[i] for i in range(self.num_leaves)}


def _is_var(v) -> bool:
    return not isinstance(v, Literal)


def _shape(v) -> tuple:
    return tuple(v.aval.shape)


def _sub_jaxprs(eqn) -> list:
    out = []
    for val in eqn.params.values():
        if isinstance(val, ClosedJaxpr):
            out.append(val.jaxpr)
        elif isinstance(val, Jaxpr):
            out.append(val)
    return out


def _elementwise_body(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if len(eqn.outvars) != 1:
            return False
        shape = _shape(eqn.outvars[0])
        if any(_shape(v) not in ((), shape) for v in eqn.invars):
            return False
        name = eqn.primitive.name
        if name in _CALLS:
            subs = _sub_jaxprs(eqn)
            if not subs or not all(_elementwise_body(s) for s in subs):
                return False
        elif name not in _ELEMENTWISE:
            return False
    return True


def _is_elementwise(eqn, region: set, shape: tuple) -> bool:
    """Does ``eqn`` act entry by entry on its region operands, all of shape ``shape``?"""
    if len(eqn.outvars) != 1 or _shape(eqn.outvars[0]) != shape:
        return False
    for v in eqn.invars:
        if _is_var(v) and v in region:
            if _shape(v) != shape:
                return False
        elif _shape(v) not in ((), shape):
            return False
    name = eqn.primitive.name
    if name in _ELEMENTWISE:
        return True
    if name in _CALLS:
        subs = _sub_jaxprs(eqn)
        return bool(subs) and all(_elementwise_body(s) for s in subs)
    return False


def _uses(jaxpr) -> dict:
    count: dict = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if _is_var(v):
                count[v] = count.get(v, 0) + 1
    for v in jaxpr.outvars:
        if _is_var(v):
            count[v] = count.get(v, 0) + 1
    return count


def _input_dependent(jaxpr, x_var) -> set:
    tainted = {x_var}
    for eqn in jaxpr.eqns:
        if any(_is_var(v) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return tainted


def _linear_constant_downstream(jaxpr, start_eqn: int, var, tainted: set) -> bool:
    """Is the output a linear function of ``var`` with input-independent coefficients?"""
    desc = {var}
    for eqn in jaxpr.eqns[start_eqn:]:
        pos = [i for i, v in enumerate(eqn.invars) if _is_var(v) and v in desc]
        if not pos:
            continue
        name = eqn.primitive.name
        others = [v for i, v in enumerate(eqn.invars) if i not in pos]
        if name in ("dot_general", "mul"):
            ok = len(pos) == 1 and all(not (_is_var(v) and v in tainted) for v in others)
        elif name == "div":
            ok = pos == [0] and not (_is_var(eqn.invars[1]) and eqn.invars[1] in tainted)
        elif name in _LINEAR_ANY:
            ok = True
        else:
            ok = False
        if not ok:
            return False
        desc.update(eqn.outvars)
    return True


def _dense_use(jaxpr, leaf_var, uses: dict, consumer: dict):
    """Follow a leaf through rearrangements to a dot_general; return (eqn index, operand pos)."""
    v = leaf_var
    while True:
        if uses.get(v, 0) != 1 or v in jaxpr.outvars:
            return None
        idx, eqn = consumer[v]
        name = eqn.primitive.name
        if name in _REARRANGE and len(eqn.invars) == 1 and len(eqn.outvars) == 1:
            out = eqn.outvars[0]
            if int(np.prod(_shape(out), dtype=np.int64)) != int(np.prod(_shape(v), dtype=np.int64)):
                return None
            v = out
            continue
        if name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            if lb or rb or len(eqn.invars) != 2:
                return None
            pos = [i for i, u in enumerate(eqn.invars) if u is v]
            if len(pos) != 1:
                return None
            return idx, pos[0]
        return None


def analyze(f: Callable, params: Any, x: Any) -> StructurePlan:
    """Trace ``f`` on one example and find the dense parameter leaves.

    Args:
        f: model ``f(params, x) -> (N, C)``.
        params: pytree of arrays.
        x: inputs ``(N, ...)`` (only ``x[:1]`` is used, for its shape and dtype).

    Returns:
        a ``StructurePlan``; ``plan.summary()`` says how each leaf will be treated.
    """
    x = jnp.asarray(x)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    paths = [jax.tree_util.keystr(p) or f"leaf{i}" for i, (p, _) in enumerate(jax.tree_util.tree_leaves_with_path(params))]

    def single(leaf_list, xi):
        return f(jax.tree_util.tree_unflatten(treedef, leaf_list), xi[None])[0]

    closed = jax.make_jaxpr(single)(list(leaves), x[0])
    jaxpr = closed.jaxpr
    if len(jaxpr.invars) != len(leaves) + 1 or len(jaxpr.outvars) != 1:
        raise StructureError("unexpected traced signature")
    out_shape = _shape(jaxpr.outvars[0])
    if len(out_shape) != 1:
        raise StructureError(f"f must return (N, C); traced output per example has shape {out_shape}")
    x_var = jaxpr.invars[-1]
    uses = _uses(jaxpr)
    consumer = {}  # var -> (eqn index, eqn) of its consumer (meaningful when used once)
    for idx, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if _is_var(v):
                consumer[v] = (idx, eqn)
    tainted = _input_dependent(jaxpr, x_var)

    dense, rest = [], []
    for leaf_idx, leaf_var in enumerate(jaxpr.invars[:-1]):
        found = _dense_use(jaxpr, leaf_var, uses, consumer)
        if found is None:
            rest.append(leaf_idx)
            continue
        idx, w_pos = found
        eqn = jaxpr.eqns[idx]
        a_pos = 1 - w_pos
        (lc, rc), _ = eqn.params["dimension_numbers"]
        a_con, w_con = (lc, rc) if a_pos == 0 else (rc, lc)
        a_var, w_var = eqn.invars[a_pos], eqn.invars[w_pos]
        a_shape, w_shape = _shape(a_var), _shape(w_var)
        a_free = [d for d in range(len(a_shape)) if d not in a_con]
        w_free = [d for d in range(len(w_shape)) if d not in w_con]
        n_af, n_wf = len(a_free), len(w_free)
        # dot_general output: (lhs free..., rhs free...)
        if a_pos == 0:
            out_perm = tuple(range(n_af)) + tuple(range(n_af, n_af + n_wf))
        else:
            out_perm = tuple(range(n_wf, n_wf + n_af)) + tuple(range(n_wf))
        rows = int(np.prod([a_shape[d] for d in a_free], dtype=np.int64))
        inner = int(np.prod([a_shape[d] for d in a_con], dtype=np.int64))
        width = int(np.prod([w_shape[d] for d in w_free], dtype=np.int64))
        d = _Dense(
            leaf=leaf_idx,
            eqn=idx,
            act_pos=a_pos,
            out_var=eqn.outvars[0],
            act_perm=tuple(a_free) + tuple(a_con),
            out_perm=out_perm,
            rows=rows,
            inner=inner,
            width=width,
        )
        _find_region(jaxpr, d, tainted)
        dense.append(d)
    # overlapping regions would share tangents: give up the diagonal form for those
    seen: dict = {}
    for d in dense:
        for idx in d.region:
            seen[idx] = seen.get(idx, 0) + 1
    for d in dense:
        if any(seen[idx] > 1 for idx in d.region):
            d.region, d.exit_var = [], None
    return StructurePlan(closed, len(leaves), int(out_shape[0]), dense, rest, paths)


def _find_region(jaxpr, d: _Dense, tainted: set) -> None:
    """Grow the elementwise region after h; set ``d.region``/``d.exit_var`` if B = M diag(phi')."""
    h = d.out_var
    shape = _shape(h)
    region = {h}
    eqns = []
    below = {h}  # everything computed from h
    for idx in range(d.eqn + 1, len(jaxpr.eqns)):
        eqn = jaxpr.eqns[idx]
        if any(_is_var(v) and v in below for v in eqn.invars):
            below.update(eqn.outvars)
    for idx in range(d.eqn + 1, len(jaxpr.eqns)):
        eqn = jaxpr.eqns[idx]
        if not any(_is_var(v) and v in region for v in eqn.invars):
            continue
        # elementwise in h, and its other operands must not themselves depend on h
        if _is_elementwise(eqn, region, shape) and not any(
            _is_var(v) and v not in region and v in below for v in eqn.invars
        ):
            region.add(eqn.outvars[0])
            eqns.append(idx)
    region_eqns = set(eqns)
    exits = set()
    for idx, eqn in enumerate(jaxpr.eqns):
        if idx in region_eqns:
            continue
        exits.update(v for v in eqn.invars if _is_var(v) and v in region)
    exits.update(v for v in jaxpr.outvars if _is_var(v) and v in region)
    if len(exits) != 1:
        return
    (exit_var,) = exits
    if not jnp.issubdtype(exit_var.aval.dtype, jnp.floating):
        return
    if _linear_constant_downstream(jaxpr, d.eqn + 1, exit_var, tainted):
        d.region = eqns
        d.exit_var = exit_var


# ----------------------------------------------------------------------------------------
# evaluation of the traced model with probes, taps and tangents
# ----------------------------------------------------------------------------------------


def _interpret(plan: StructurePlan, leaves: Sequence, x, *, probes=None, tangents=False, consts=None):
    """Evaluate the traced model on one example.

    Args:
        leaves: the parameter leaves.
        x: one example.
        probes: ``{var: array}`` added to those variables' values (zeros: for derivatives).
        tangents: also return, for every diagonal dense use, ``phi'(h)`` (jvp of the region
            with a tangent of ones).

    Returns:
        ``(output (C,), {dense index: a}, {dense index: phi'(h)})``.
    """
    closed = plan.closed
    jaxpr = closed.jaxpr
    probes = probes or {}
    env = {}
    for v, val in zip(jaxpr.constvars, closed.consts if consts is None else consts):
        env[v] = val
    for v, val in zip(jaxpr.invars, list(leaves) + [x]):
        env[v] = val

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    tap_at = {}
    for k, dn in enumerate(plan.dense):
        tap_at.setdefault(dn.eqn, []).append(k)
    start_at = {dn.eqn: k for k, dn in enumerate(plan.dense) if tangents and dn.exit_var is not None}
    in_region = {}
    if tangents:
        for k, dn in enumerate(plan.dense):
            if dn.exit_var is not None:
                for idx in dn.region:
                    in_region[idx] = k
    acts, derivs = {}, {}
    tenv = {}

    for idx, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        bind_params = eqn.primitive.get_bind_params(eqn.params)
        if idx in in_region:
            pos = [i for i, v in enumerate(eqn.invars) if _is_var(v) and v in tenv]

            def fn(*moving, invals=invals, pos=pos, eqn=eqn, bind_params=bind_params):
                vals = list(invals)
                for i, m in zip(pos, moving):
                    vals[i] = m
                out = eqn.primitive.bind(*vals, **bind_params)
                return out[0] if eqn.primitive.multiple_results else out

            primal, tangent = jax.jvp(fn, tuple(invals[i] for i in pos), tuple(tenv[eqn.invars[i]] for i in pos))
            outs = [primal]
            tenv[eqn.outvars[0]] = tangent
        else:
            outs = eqn.primitive.bind(*invals, **bind_params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for k in tap_at.get(idx, ()):
            acts[k] = invals[plan.dense[k].act_pos]
        for v, val in zip(eqn.outvars, outs):
            if v in probes:
                val = val + probes[v]
            env[v] = val
        if idx in start_at:
            h = eqn.outvars[0]
            tenv[h] = jnp.ones_like(env[h])
    if tangents:
        for k, dn in enumerate(plan.dense):
            if dn.exit_var is not None:
                derivs[k] = tenv.get(dn.exit_var, None)
                if derivs[k] is None:  # empty region: a = h
                    derivs[k] = jnp.ones_like(env[dn.out_var])
    return read(jaxpr.outvars[0]), acts, derivs


# ----------------------------------------------------------------------------------------
# the kernel
# ----------------------------------------------------------------------------------------


def _factor_functions(plan: StructurePlan, c: int):
    """jitted per-batch maps: forward taps (a, phi'), backward (B of non-diagonal uses, J_rest)."""
    dense = plan.dense
    nondiag = [k for k, dn in enumerate(dense) if dn.exit_var is None]

    # the traced constants are passed as arguments, not baked into the compiled functions
    # (XLA would otherwise try to constant-fold whatever the model computes from them)
    def forward(leaves, x, consts):
        def one(xi):
            _, acts, derivs = _interpret(plan, leaves, xi, tangents=True, consts=consts)
            a_out = []
            for k, dn in enumerate(dense):
                a = jnp.transpose(acts[k], dn.act_perm).reshape(dn.rows, dn.inner)
                a_out.append(a)
            d_out = {}
            for k, dn in enumerate(dense):
                if dn.exit_var is not None:
                    d_out[k] = jnp.transpose(derivs[k], dn.out_perm).reshape(dn.rows, dn.width)
            return a_out, d_out

        return jax.vmap(one)(x)

    def backward(leaves, x, consts):
        rest_vals = [leaves[i] for i in plan.rest]

        def model(rest, probe_vals, xi):
            full = list(leaves)
            for i, val in zip(plan.rest, rest):
                full[i] = val
            probes = {dense[k].out_var: p for k, p in zip(nondiag, probe_vals)}
            return _interpret(plan, full, xi, probes=probes, consts=consts)[0]

        zeros = [jnp.zeros(_shape(dense[k].out_var), leaves[dense[k].leaf].dtype) for k in nondiag]

        def one(xi):
            jr, jb = jax.jacrev(model, argnums=(0, 1))(rest_vals, zeros, xi)
            jr = [j.reshape(c, -1) for j in jr]
            jb = [jnp.transpose(j, (0,) + tuple(1 + p for p in dense[k].out_perm)).reshape(c, dense[k].rows, dense[k].width) for j, k in zip(jb, nondiag)]
            return jr, jb

        return jax.vmap(one)(x)

    def constant_sensitivity(leaves, x0, consts):
        """M = dz/da_out for diagonal uses (the same for every input), at one example."""
        diag = [k for k, dn in enumerate(dense) if dn.exit_var is not None]
        zeros = [jnp.zeros(_shape(dense[k].exit_var), dense[k].exit_var.aval.dtype) for k in diag]

        def model(probe_vals):
            probes = {dense[k].exit_var: p for k, p in zip(diag, probe_vals)}
            return _interpret(plan, leaves, x0, probes=probes, consts=consts)[0]

        jm = jax.jacrev(model)(zeros)
        return {k: jnp.transpose(j, (0,) + tuple(1 + p for p in dense[k].out_perm)).reshape(c, dense[k].rows, dense[k].width) for j, k in zip(jm, diag)}

    consts = list(plan.closed.consts)
    with_consts = lambda fn: (lambda leaves, x: fn(leaves, x, consts))
    return with_consts(jax.jit(forward)), with_consts(jax.jit(backward)), with_consts(jax.jit(constant_sensitivity)), nondiag


def _chunks(n: int, size: int):
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _assemble(plan: StructurePlan, c: int, nondiag: list, labels: tuple, names: tuple, collapse, same: bool):
    """Contract the per-example factors into ``{label: kernel}`` by formula (*)."""
    dense = plan.dense

    def run(f1, f2, m):
        a1, d1, r1, s1 = f1
        a2, d2, r2, s2 = f2
        n1, n2 = a1[0].shape[0] if dense else r1[0].shape[0], a2[0].shape[0] if dense else r2[0].shape[0]
        out = {}

        def add(label, term):
            out[label] = term if label not in out else out[label] + term

        for k, dn in enumerate(dense):
            label = labels[dn.leaf]
            gram = jnp.einsum("ark,bsk->abrs", a1[k], a2[k])  # (N1, N2, R, R)
            if dn.exit_var is not None:
                mk = m[k]  # (C, R, O): B(x) = M diag(phi'(h(x)))
                if collapse == "class_mean":
                    weight = jnp.einsum("iro,iso->rso", mk, mk)
                    if dn.rows == 1:
                        term = gram[:, :, 0, 0] * ((d1[k][:, 0, :] * weight[0, 0]) @ d2[k][:, 0, :].T)
                    else:
                        term = jnp.einsum("abrs,rso,aro,bso->ab", gram, weight, d1[k], d2[k])
                    add(label, term / c)
                    continue
                b1 = mk[None] * d1[k][:, None]
                b2 = b1 if same else mk[None] * d2[k][:, None]
            else:
                j = nondiag.index(k)
                b1, b2 = s1[j], s2[j]  # (N, C, R, O)
            if collapse == "class_mean":
                if dn.rows == 1:
                    term = gram[:, :, 0, 0] * (b1.reshape(n1, -1) @ b2.reshape(n2, -1).T)
                else:
                    term = jnp.einsum("abrs,airo,biso->ab", gram, b1, b2)
                add(label, term / c)
            elif dn.rows == 1:
                add(label, gram[:, :, 0, 0, None, None] * jnp.einsum("aio,bjo->abij", b1[:, :, 0], b2[:, :, 0]))
            else:
                add(label, jnp.einsum("abrs,airo,bjso->abij", gram, b1, b2))

        for j, leaf_idx in enumerate(plan.rest):
            if collapse == "class_mean":
                add(labels[leaf_idx], jnp.einsum("aip,bip->ab", r1[j], r2[j]) / c)
            else:
                add(labels[leaf_idx], jnp.einsum("aip,bjp->abij", r1[j], r2[j]))
        shape = (n1, n2) if collapse == "class_mean" else (n1, n2, c, c)
        dtype = jnp.result_type(*[v.dtype for v in out.values()]) if out else jnp.float32
        return {name: out.get(name, jnp.zeros(shape, dtype)) for name in names}

    return jax.jit(run)


# Compiled functions per (model, parameter structure, example shape): like ``jax.jit``, this
# treats ``f`` as a pure function (globals it reads are baked in at the first call).
_CACHE: dict = {}
_CACHE_SIZE = 32


def _cached(key, build):
    if key is None:
        return build()
    try:
        hit = _CACHE.pop(key)
    except (KeyError, TypeError):
        hit = None
    if hit is None:
        hit = build()
        try:
            _CACHE[key] = hit
        except TypeError:
            return hit
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    else:
        _CACHE[key] = hit  # most recently used last
    return hit


class _Captured:
    """Compares by the identity of the captured objects, and keeps them alive while cached
    (so that an id cannot be reused by a new object)."""

    def __init__(self, objects):
        self.objects = tuple(objects)
        self._ids = tuple(id(o) for o in self.objects)

    def __hash__(self):
        return hash(self._ids)

    def __eq__(self, other):
        return isinstance(other, _Captured) and self._ids == other._ids


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _model_key(f, params, x):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    avals = tuple((tuple(np.shape(l)), str(jnp.asarray(l).dtype) if not hasattr(l, "dtype") else str(l.dtype)) for l in leaves)
    # what f closes over (closure cells, partial arguments) is part of the key, so that a
    # rebound captured value is traced afresh; globals read by f are not (as with jax.jit)
    objects = [c.cell_contents for c in (getattr(f, "__closure__", None) or ()) if _filled(c)]
    if hasattr(f, "func") and hasattr(f, "args"):
        objects += [f.func, *f.args, *getattr(f, "keywords", {}).values()]
    key = (f, _Captured(objects), treedef, avals, tuple(x.shape[1:]), str(x.dtype))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _build(f, params, x):
    plan = analyze(f, params, x)
    return (plan,) + _factor_functions(plan, plan.num_outputs)


def cached_plan(f: Callable, params: Any, x: Any) -> StructurePlan:
    """``analyze(f, params, x)``, reusing the analysis of an earlier call with the same model."""
    x = jnp.asarray(x)
    return _cached(_model_key(f, params, x), lambda: _build(f, params, x))[0]


def structured_kernels(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    *,
    labels: Sequence[Any] | None = None,
    collapse: str | None = None,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
) -> dict:
    """The eNTK by the factorised formula (*), summed over groups of parameter leaves.

    Args:
        f: model ``f(params, x) -> (N, C)``.
        params: pytree of arrays.
        x1: ``(N1, ...)``; x2: ``(N2, ...)`` or ``None`` (= ``x1``).
        labels: one hashable label per leaf of ``params`` (``None``: all leaves in one group
            labelled ``None``).
        collapse: ``None`` for ``(N1, N2, C, C)`` kernels, ``"class_mean"`` for ``(N1, N2)``.
        block_bytes: memory budget for one chunk of per-example factors.

    Returns:
        ``{label: kernel}`` (numpy, labels in order of first appearance); the labels' kernels
        sum to the eNTK (seed 000 §7).

    Inputs are not validated here beyond the options; ``helpers.ntk`` validates before calling.
    """
    if collapse not in (None, "class_mean"):
        raise ValueError(f"collapse must be None or 'class_mean'; got {collapse!r}")
    same = x2 is None
    x1 = jnp.asarray(x1)
    x2 = x1 if same else jnp.asarray(x2)
    leaves = list(jax.tree_util.tree_leaves(params))
    if labels is None:
        labels = [None] * len(leaves)
    labels = tuple(labels)
    if len(labels) != len(leaves):
        raise ValueError(f"labels must give one label per leaf ({len(leaves)}); got {len(labels)}")
    names = tuple(dict.fromkeys(labels))
    key = _model_key(f, params, x1)

    plan, forward, backward, constant_sensitivity, nondiag = _cached(key, lambda: _build(f, params, x1))
    c = plan.num_outputs
    dense = plan.dense
    assemble = _cached(
        None if key is None else key + ("assemble", labels, collapse, same),
        lambda: _assemble(plan, c, nondiag, labels, names, collapse, same),
    )
    itemsize = np.dtype(jnp.result_type(*leaves)).itemsize
    per_example = itemsize * (
        sum(dn.rows * dn.inner + dn.rows * dn.width for dn in dense)
        + c * sum(dense[k].rows * dense[k].width for k in nondiag)
        + c * sum(int(np.size(leaves[i])) for i in plan.rest)
    )
    chunk = max(1, int(block_bytes // max(per_example, 1)))
    need_backward = bool(nondiag or plan.rest)

    def factors(x):
        parts = []
        for a, b in _chunks(x.shape[0], chunk):
            fa, fd = forward(leaves, x[a:b])
            jr, jb = backward(leaves, x[a:b]) if need_backward else ([], [])
            parts.append((fa, fd, jr, jb))
        if len(parts) == 1:
            return parts[0]
        return jax.tree_util.tree_map(lambda *p: jnp.concatenate(p, axis=0), *parts)

    f1 = factors(x1)
    f2 = f1 if same else factors(x2)
    m = constant_sensitivity(leaves, x1[0]) if any(dn.exit_var is not None for dn in dense) else {}
    out = assemble(f1, f2, m)
    return {name: np.asarray(out[name]) for name in names}


def layer_factors(f: Callable, params: Any, x: Any) -> dict[str, dict[str, np.ndarray]]:
    """The two factors of every dense parameter leaf: ``a^{l-1}(x)`` and ``B^l(x) = dz/dh^l``.

    For ``h^l = W^l a^{l-1}`` (seed 000 §7, seed 001 §4) the leaf's eNTK is
    ``Theta^l_ij(x, x') = sum_rs (a_r(x) . a_s(x')) sum_o B_iro(x) B_jso(x')``.

    Args:
        f: model ``f(params, x) -> (N, C)``; params: pytree; x: ``(N, ...)``.

    Returns:
        ``{leaf path: {"activations": (N, R, K), "sensitivities": (N, C, R, O)}}`` for the dense
        leaves (R = 1 for an MLP; K = fan-in, O = fan-out). Leaves that are not dense maps
        (biases, shared weights) are absent: see ``analyze(...).summary()``.
    """
    x = jnp.asarray(x)
    leaves = list(jax.tree_util.tree_leaves(params))
    plan, forward, backward, constant_sensitivity, nondiag = _cached(_model_key(f, params, x), lambda: _build(f, params, x))
    acts, derivs = forward(leaves, x)
    sens = backward(leaves, x)[1] if nondiag or plan.rest else []
    m = constant_sensitivity(leaves, x[0]) if any(dn.exit_var is not None for dn in plan.dense) else {}
    out = {}
    for k, dn in enumerate(plan.dense):
        if dn.exit_var is not None:
            b = m[k][None] * derivs[k][:, None]
        else:
            b = sens[nondiag.index(k)]
        out[plan.paths[dn.leaf]] = {"activations": np.asarray(acts[k]), "sensitivities": np.asarray(b)}
    return out


def forward_backward_kernels(f: Callable, params: Any, x: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dense leaf, the representation Gram and the (class-mean) sensitivity kernel.

    ``F^l(x, x') = sum_r a_r(x) . a_r(x')`` (the forward kernel: what the layer reads) and
    ``B^l(x, x') = (1/C) sum_i sum_ro B_iro(x) B_iro(x')`` (the backward kernel: how the output
    depends on what the layer writes), seed 001 §4. For an MLP (R = 1) the leaf's class-mean
    eNTK is their entrywise product, ``Theta^l = F^l * B^l``.

    Returns:
        ``{leaf path: (F (N, N), B (N, N))}``.
    """
    out = {}
    for path, fac in layer_factors(f, params, x).items():
        a, b = fac["activations"], fac["sensitivities"]
        n, c = b.shape[:2]
        forward_k = np.einsum("ark,brk->ab", a, a)
        backward_k = b.reshape(n, -1) @ b.reshape(n, -1).T / c
        out[path] = (forward_k, backward_k)
    return out
