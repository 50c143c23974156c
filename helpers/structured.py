"""A fast, factorised eNTK for models built from dense maps ("structured derivatives").

The layerwise eNTK factorises (seed 000 §7): for a parameter block ``theta^l`` that enters the
model only through a representation ``h^l``,

    grad_{theta^l} z = B^l F^l,   B^l = dz/dh^l (representation -> output),
                                  F^l = dh^l/dtheta^l (parameters -> representation),

so ``Theta^l = B^l F^l F^l^T B^l^T``. For a dense map ``h^l = a^{l-1} W^l`` (``a`` with R rows of
K entries, ``W`` of shape (K, O)) the middle factor is ``F F'^T = (a a'^T) (x) I_O``, hence

    Theta^l_ij(x, x') = sum_{r,s} (a_r(x) . a_s(x')) * sum_o B^l_iro(x) B^l_jso(x')        (*)

and no parameter-sized contraction is needed (Novak et al. 2022, "structured derivatives").
When ``h^l`` reaches the output through an elementwise map ``a^l = phi(h^l)`` followed by a map
that is linear in ``a^l`` with coefficients independent of the input (the last hidden layer of
an MLP, both layers of the modular-addition model), ``B^l(x) = M^l diag(phi'(h^l(x)))`` with a
constant ``M^l``: the class-mean kernel of that layer is then

    (1/C) sum_i Theta^l_ii(x, x') = (a(x) . a(x')) * sum_o s_o phi'_o(x) phi'_o(x') / C,
    s_o = sum_i (M^l_io)^2,

which costs what a closed form costs (seed 002 App. B).

How the structure is found. ``f`` is traced for one example (``helpers._tracing``). A parameter
leaf is *dense* when it is used exactly once, possibly through ``transpose`` / ``reshape`` /
``convert_element_type``, as one operand of a ``dot_general`` without batch dimensions; the other
operand is ``a`` -- an activation, or another parameter (``x @ (U @ V)``, ``W_Q @ W_K.T``,
LoRA's ``A @ B``: formula (*) holds whatever ``a`` is, and two leaves of one product share its
``B``). ``B`` is obtained by adding a zero "probe" to the ``dot_general`` output and
differentiating the model with respect to the probe; the elementwise map ``phi`` and the
linearity of the rest are read off the jaxpr. Every other leaf -- biases, shared or tied weights,
gathers, convolutions, weights inside a ``jit``-ed sub-function or a loop, dense maps with so many
rows that (*) costs more than the Jacobian -- is handed to the exact generic path of
``helpers.ntk`` (per-example Jacobians, blocked by memory). ``analyze(...).summary()`` says
which leaf goes where and why. The result is the same kernel as the generic path to float
tolerance; ``tests/test_zoo.py`` checks this on many architectures against per-example
``jax.jacrev`` in float64.

As in ``helpers.ntk``, examples must not interact; ``helpers.ntk`` checks that before calling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from . import _tracing

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
# call-like primitives whose body may be elementwise (jax.nn.relu is a custom_jvp around a jit).
# custom_vjp calls are not among them: phi' is taken by forward mode, which they do not support.
_CALLS = frozenset("custom_jvp_call pjit jit closed_call".split())
# maps that rearrange a parameter's entries without changing their sum of squares
_REARRANGE = frozenset("transpose reshape convert_element_type copy copy_p".split())
# primitives linear in one operand, used to prove that dz/da does not depend on the input
_LINEAR_ANY = frozenset(
    """add sub add_any neg transpose reshape squeeze expand_dims broadcast_in_dim
    convert_element_type reduce_sum copy copy_p slice concatenate""".split()
)


class StructureError(ValueError):
    """The model cannot be analysed for the factorised path (``method="auto"`` then uses the
    exact generic path for every leaf; ``method="structured"`` raises it)."""


# ----------------------------------------------------------------------------------------
# analysis of the traced model
# ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Dense:
    """One dense use ``h = dot_general(a, W)`` of a parameter leaf."""

    leaf: int  # index of the leaf in tree_leaves(params)
    eqn: int  # index of the dot_general equation
    act_pos: int  # operand position of ``a`` in the dot_general
    out_var: Any  # the jaxpr variable h
    act_perm: tuple  # transposes a to (free dims of a..., contracted dims...)
    out_perm: tuple  # transposes h to (free dims of a..., free dims of W...)
    rows: int  # R: number of free positions of a (1 for an MLP on one example)
    inner: int  # K: size of the contracted dims
    width: int  # O: number of free positions of W
    region: list = field(default_factory=list)  # elementwise equations h -> a_out
    region_vars: set = field(default_factory=set)
    exit_var: Any = None  # a_out = phi(h); None when B is not of the diagonal form
    probe: int = -1  # index of the probe giving B (non-diagonal uses; shared within one eqn)


@dataclass(eq=False)
class StructurePlan:
    """What ``analyze`` found: which leaves use the factorised formula, and how.

    Attributes:
        jaxpr: the traced single-example jaxpr of ``f`` (constants as constvars; no arrays).
        num_leaves: number of parameter leaves.
        num_outputs: C.
        dense: the dense leaves (see ``summary``).
        rest: indices of leaves left to the exact generic path.
        paths: printable path of every leaf.
        reasons: ``{leaf index: why it is generic}``.
        probes: the ``dot_general`` outputs whose sensitivity ``B`` is computed by a probe.
    """

    jaxpr: Any
    num_leaves: int
    num_outputs: int
    dense: list
    rest: list
    paths: list
    reasons: dict = field(default_factory=dict)
    probes: list = field(default_factory=list)

    def summary(self) -> dict[str, str]:
        """``{leaf path: "dense, diagonal" | "dense" | "generic"}`` in leaf order."""
        kind = {i: "generic" for i in range(self.num_leaves)}
        for d in self.dense:
            kind[d.leaf] = "dense, diagonal" if d.exit_var is not None else "dense"
        return {self.paths[i]: kind[i] for i in range(self.num_leaves)}

    def explain(self) -> dict[str, str]:
        """``{leaf path: how it is computed, and for generic leaves why}``."""
        out = self.summary()
        for i, why in self.reasons.items():
            out[self.paths[i]] = f"generic ({why})"
        for d in self.dense:
            if d.exit_var is not None:
                out[self.paths[d.leaf]] = "factorised, diagonal B = M diag(phi'(h)) (closed-form cost)"
            else:
                out[self.paths[d.leaf]] = f"factorised (a.a') B B'^T, R = {d.rows} row(s)"
        return out


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
    """Follow a leaf through rearrangements to a dot_general.

    Returns ``(eqn index, operand position)`` or a string saying why the leaf is not dense.
    """
    v = leaf_var
    while True:
        if v in jaxpr.outvars:
            return "returned by the model without a matrix product"
        n = uses.get(v, 0)
        if n == 0:
            return "unused"
        if n != 1:
            return f"used {n} times (shared or tied weight)"
        idx, eqn = consumer[v]
        name = eqn.primitive.name
        if name in _REARRANGE and len(eqn.invars) == 1 and len(eqn.outvars) == 1:
            out = eqn.outvars[0]
            if int(np.prod(_shape(out), dtype=np.int64)) != int(np.prod(_shape(v), dtype=np.int64)):
                return f"resized by {name}"
            v = out
            continue
        if name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            if lb or rb or len(eqn.invars) != 2:
                return "a matrix product with batch dimensions"
            pos = [i for i, u in enumerate(eqn.invars) if u is v]
            if len(pos) != 1:
                return "both operands of one matrix product"
            return idx, pos[0]
        return f"enters the model through {name}"


def analyze(f: Callable, params: Any, x: Any) -> StructurePlan:
    """Trace ``f`` on one example and find the dense parameter leaves.

    Args:
        f: model ``f(params, x) -> (N, C)``.
        params: pytree of arrays.
        x: inputs ``(N, ...)`` (only ``x[:1]`` is used, for its shape and dtype).

    Returns:
        a ``StructurePlan``; ``plan.summary()`` / ``plan.explain()`` say how each leaf is treated.
    """
    from . import ntk

    call = ntk._Call(f, params, x, None, check_coupling=False, x_name="x")
    return plan_for(call.traced, call.paths)


def plan_for(traced: "_tracing.TracedModel", paths: Sequence[str] | None = None) -> StructurePlan:
    """The plan of a traced model, computed once per model structure (cached)."""
    key = ("plan", traced.key)
    plan = _tracing.cached(key, lambda: _analyze_jaxpr(traced.jaxpr, traced.num_leaves, traced.num_outputs))
    if paths is not None:
        plan = StructurePlan(plan.jaxpr, plan.num_leaves, plan.num_outputs, plan.dense, plan.rest, list(paths), plan.reasons, plan.probes)
    return plan


def _analyze_jaxpr(jaxpr: Jaxpr, num_leaves: int, num_outputs: int) -> StructurePlan:
    if len(jaxpr.invars) != num_leaves + 1 or len(jaxpr.outvars) != 1:
        raise StructureError("unexpected traced signature")
    x_var = jaxpr.invars[-1]
    uses = _uses(jaxpr)
    consumer = {}  # var -> (eqn index, eqn) of its consumer (meaningful when used once)
    for idx, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if _is_var(v):
                consumer[v] = (idx, eqn)
    tainted = _input_dependent(jaxpr, x_var)
    c = num_outputs

    dense, rest, reasons = [], [], {}
    for leaf_idx, leaf_var in enumerate(jaxpr.invars[:-1]):
        found = _dense_use(jaxpr, leaf_var, uses, consumer)
        if isinstance(found, str):
            rest.append(leaf_idx)
            reasons[leaf_idx] = found
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
        if not jnp.issubdtype(a_var.aval.dtype, jnp.floating):
            rest.append(leaf_idx)
            reasons[leaf_idx] = "its matrix product has a non-floating operand"
            continue
        # formula (*) costs about R^2 (K + C^2 O) per pair of examples, the Jacobian C^2 K O:
        # (*) wins unless R^2 is large next to the layer's size (a convolution written as a
        # matrix product over every position); both are exact, this only chooses the cheaper
        if rows * rows > 4 * max(inner, width):
            rest.append(leaf_idx)
            reasons[leaf_idx] = f"a matrix product with R = {rows} rows: cheaper as a Jacobian"
            continue
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
    # two leaves of one product share h (and B); overlapping regions would share tangents:
    # give up the diagonal form for those
    seen: dict = {}
    per_eqn: dict = {}
    for d in dense:
        per_eqn[d.eqn] = per_eqn.get(d.eqn, 0) + 1
        for idx in d.region:
            seen[idx] = seen.get(idx, 0) + 1
    for d in dense:
        if per_eqn[d.eqn] > 1 or any(seen[idx] > 1 for idx in d.region):
            d.region, d.region_vars, d.exit_var = [], set(), None
    probes: list = []
    for d in dense:
        if d.exit_var is None:
            if d.out_var not in probes:
                probes.append(d.out_var)
            d.probe = probes.index(d.out_var)
    rest.sort()
    return StructurePlan(jaxpr, num_leaves, c, dense, rest, [f"leaf{i}" for i in range(num_leaves)], reasons, probes)


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
        d.region_vars = region
        d.exit_var = exit_var


# ----------------------------------------------------------------------------------------
# evaluation of the traced model with probes, taps and tangents
# ----------------------------------------------------------------------------------------


def _binder(eqn):
    """``bind(*invals)`` for an equation. ``Primitive.get_bind_params`` returns the params (newer
    JAX) or ``(sub-functions, params)`` (JAX 0.5-0.6, for call-like primitives)."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)

    def bind(*invals):
        return eqn.primitive.bind(*subfuns, *invals, **params)

    return bind


def _interpret(plan: StructurePlan, consts: Sequence, leaves: Sequence, x, *, probes=None, tangents=False):
    """Evaluate the traced model on one example.

    Args:
        consts: the traced constants; leaves: the parameter leaves; x: one example.
        probes: ``{var: array}`` added to those variables' values (zeros: for derivatives).
        tangents: also return, for every diagonal dense use, ``phi'(h)`` (jvp of the region
            with a tangent of ones).

    Returns:
        ``(output (C,), {dense index: a}, {dense index: phi'(h)})``.
    """
    jaxpr = plan.jaxpr
    probes = probes or {}
    env = {}
    for v, val in zip(jaxpr.constvars, consts):
        env[v] = val
    for v, val in zip(jaxpr.invars, list(leaves) + [x]):
        env[v] = val

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    tap_at: dict = {}
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
        bind = _binder(eqn)
        if idx in in_region:
            own = plan.dense[in_region[idx]].region_vars
            pos = [i for i, v in enumerate(eqn.invars) if _is_var(v) and v in own and v in tenv]

            def fn(*moving, invals=invals, pos=pos, eqn=eqn, bind=bind):
                vals = list(invals)
                for i, m in zip(pos, moving):
                    vals[i] = m
                out = bind(*vals)
                return out[0] if eqn.primitive.multiple_results else out

            primal, tangent = jax.jvp(fn, tuple(invals[i] for i in pos), tuple(tenv[eqn.invars[i]] for i in pos))
            outs = [primal]
            tenv[eqn.outvars[0]] = tangent
        else:
            outs = bind(*invals)
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
# the factors and the kernel
# ----------------------------------------------------------------------------------------


def _factor_functions(plan: StructurePlan):
    """Per-batch maps of ``(consts, leaves, x)`` (pure, not jitted): forward taps (a, phi'),
    backward (B per probe), and the constant sensitivity M of diagonal uses. Built from the
    plan's jaxpr alone; the traced constants are arguments, never baked into compiled code."""
    dense = plan.dense
    c = plan.num_outputs

    def forward(consts, leaves, x):
        def one(xi):
            _, acts, derivs = _interpret(plan, consts, leaves, xi, tangents=True)
            a_out = [jnp.transpose(acts[k], dn.act_perm).reshape(dn.rows, dn.inner) for k, dn in enumerate(dense)]
            d_out = {
                k: jnp.transpose(derivs[k], dn.out_perm).reshape(dn.rows, dn.width)
                for k, dn in enumerate(dense)
                if dn.exit_var is not None
            }
            return a_out, d_out

        return jax.vmap(one)(x)

    nondiag = [k for k, dn in enumerate(dense) if dn.exit_var is None]

    def backward(consts, leaves, x):
        """``{dense index: B (N, C, R, O)}`` for the non-diagonal uses: one probe per distinct
        matrix-product output (two leaves of one product share it), each leaf's B read off with
        its own arrangement of the product's axes."""

        def model(probe_vals, xi):
            probes = dict(zip(plan.probes, probe_vals))
            return _interpret(plan, consts, leaves, xi, probes=probes)[0]

        zeros = [jnp.zeros(_shape(v), v.aval.dtype) for v in plan.probes]

        def one(xi):
            jb = jax.jacrev(model)(zeros, xi)
            return {
                k: jnp.transpose(jb[dense[k].probe], (0,) + tuple(1 + p for p in dense[k].out_perm)).reshape(
                    c, dense[k].rows, dense[k].width
                )
                for k in nondiag
            }

        return jax.vmap(one)(x)

    def constant_sensitivity(consts, leaves, x0):
        """M = dz/da_out for diagonal uses (the same for every input), at one example."""
        diag = [k for k, dn in enumerate(dense) if dn.exit_var is not None]
        zeros = [jnp.zeros(_shape(dense[k].exit_var), dense[k].exit_var.aval.dtype) for k in diag]

        def model(probe_vals):
            probes = {dense[k].exit_var: p for k, p in zip(diag, probe_vals)}
            return _interpret(plan, consts, leaves, x0, probes=probes)[0]

        jm = jax.jacrev(model)(zeros)
        return {
            k: jnp.transpose(j, (0,) + tuple(1 + p for p in dense[k].out_perm)).reshape(c, dense[k].rows, dense[k].width)
            for j, k in zip(jm, diag)
        }

    return forward, backward, constant_sensitivity


def _assemble(plan: StructurePlan, labels: tuple, collapse, same: bool):
    """Contract the per-example factors into ``{label: kernel}`` by formula (*) (dense leaves)."""
    dense = plan.dense
    c = plan.num_outputs

    def run(f1, f2, m):
        a1, d1, s1 = f1
        a2, d2, s2 = f2
        out = {}

        def add(label, term):
            out[label] = term if label not in out else out[label] + term

        for k, dn in enumerate(dense):
            label = labels[dn.leaf]
            n1, n2 = a1[k].shape[0], a2[k].shape[0]
            if dn.rows == 1:
                gram = a1[k][:, 0, :] @ a2[k][:, 0, :].T  # (N1, N2)
            else:
                gram = jnp.einsum("ark,bsk->abrs", a1[k], a2[k])  # (N1, N2, R, R)
            if dn.exit_var is not None:
                mk = m[k]  # (C, R, O): B(x) = M diag(phi'(h(x)))
                if collapse == "class_mean":
                    weight = jnp.einsum("iro,iso->rso", mk, mk)
                    if dn.rows == 1:
                        term = gram * ((d1[k][:, 0, :] * weight[0, 0]) @ d2[k][:, 0, :].T)
                    else:
                        term = jnp.einsum("abrs,rso,aro,bso->ab", gram, weight, d1[k], d2[k])
                    add(label, term / c)
                    continue
                b1 = mk[None] * d1[k][:, None]
                b2 = b1 if same else mk[None] * d2[k][:, None]
            else:
                b1, b2 = s1[k], s2[k]  # (N, C, R, O)
            if collapse == "class_mean":
                if dn.rows == 1:
                    term = gram * (b1.reshape(n1, -1) @ b2.reshape(n2, -1).T)
                else:
                    term = jnp.einsum("abrs,airo,biso->ab", gram, b1, b2)
                add(label, term / c)
            elif dn.rows == 1:
                add(label, gram[:, :, None, None] * jnp.einsum("aio,bjo->abij", b1[:, :, 0], b2[:, :, 0]))
            else:
                add(label, jnp.einsum("abrs,airo,bjso->abij", gram, b1, b2))
        return out

    return run


def _chunks(n: int, size: int):
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _functions(traced, plan, mesh=None):
    def build():
        forward, backward, constant_sensitivity = _factor_functions(plan)
        return _tracing.per_example(forward, mesh), _tracing.per_example(backward, mesh), jax.jit(constant_sensitivity)

    return _tracing.cached(("structured-fns", traced.key, mesh), build)


def factor_bytes(plan: StructurePlan, itemsize: int) -> int:
    """Bytes of the per-example factors of the dense leaves, for one example."""
    c = plan.num_outputs
    return itemsize * (
        sum(dn.rows * dn.inner + dn.rows * dn.width for dn in plan.dense)
        + c * sum(dn.rows * dn.width for dn in plan.dense if dn.exit_var is None)
    )


def dense_kernels_fn(plan: StructurePlan, labels: tuple, collapse, same: bool):
    """A pure function ``(consts, leaves, x1, x2) -> {label: kernel}`` over the dense leaves,
    all examples at once (for fusing into one compiled program with the generic leaves)."""
    forward, backward, constant_sensitivity = _factor_functions(plan)
    assemble = _assemble(plan, labels, collapse, same)
    diag = any(dn.exit_var is not None for dn in plan.dense)

    def factors(consts, leaves, x):
        fa, fd = forward(consts, leaves, x)
        jb = backward(consts, leaves, x) if plan.probes else {}
        return fa, fd, jb

    def run(consts, leaves, x1, x2):
        f1 = factors(consts, leaves, x1)
        f2 = f1 if same else factors(consts, leaves, x2)
        m = constant_sensitivity(consts, leaves, x1[0]) if diag else {}
        return assemble(f1, f2, m)

    return run


def _factors(traced, plan, leaves, x, block_bytes, mesh=None):
    """Per-example factors of the dense leaves for a batch, computed in chunks (each chunk
    padded to one shape, and sharded over the mesh's devices when there is one)."""
    forward, backward, _ = _functions(traced, plan, mesh)
    per_example = factor_bytes(plan, np.dtype(traced.out_dtype).itemsize)
    n = x.shape[0]
    chunk = _tracing.chunk_size(n, per_example, block_bytes, mesh)
    consts = traced.consts
    parts = []
    for a in range(0, n, chunk):
        xb = _tracing.place(x[a : a + chunk], chunk, mesh)
        fa, fd = forward(consts, leaves, xb)
        jb = backward(consts, leaves, xb) if plan.probes else {}
        keep = min(chunk, n - a)
        parts.append(jax.tree_util.tree_map(lambda v: v[:keep], (fa, fd, jb)))
    if len(parts) == 1:
        return parts[0]
    return jax.tree_util.tree_map(lambda *p: jnp.concatenate(p, axis=0), *parts)


def dense_kernels(traced, plan, leaves, x1, x2, labels, collapse, block_bytes, mesh=None) -> dict:
    """``{label: kernel}`` summed over the dense leaves only (``x2=None``: ``x2 = x1``).

    Labels of leaves that are all generic are absent. Internal: ``helpers.ntk`` adds the
    generic leaves' kernels and validates inputs.
    """
    if not plan.dense:
        return {}
    same = x2 is None
    f1 = _factors(traced, plan, leaves, x1, block_bytes, mesh)
    f2 = f1 if same else _factors(traced, plan, leaves, x2, block_bytes, mesh)
    _, _, constant_sensitivity = _functions(traced, plan)
    m = constant_sensitivity(traced.consts, leaves, x1[0]) if any(dn.exit_var is not None for dn in plan.dense) else {}
    assemble = _tracing.cached(
        ("structured-assemble", traced.key, tuple(labels), collapse, same),
        lambda: jax.jit(_assemble(plan, tuple(labels), collapse, same)),
    )
    return assemble(f1, f2, m)


# ----------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------


def cached_plan(f: Callable, params: Any, x: Any) -> StructurePlan:
    """``analyze(f, params, x)`` (the analysis is cached per model structure)."""
    return analyze(f, params, x)


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

    Leaves the analysis cannot factorise are computed exactly by the generic path; the result
    is ``helpers.ntk.layerwise_entk(..., method="structured")`` with one group per label.

    Args:
        f: model ``f(params, x) -> (N, C)``.
        params: pytree of arrays.
        x1: ``(N1, ...)``; x2: ``(N2, ...)`` or ``None`` (= ``x1``).
        labels: one hashable label per leaf of ``params`` (``None``: all leaves in one group
            labelled ``None``).
        collapse: ``None`` for ``(N1, N2, C, C)`` kernels, ``"class_mean"`` for ``(N1, N2)``.
        block_bytes: memory budget for one block of per-example factors or Jacobians.

    Returns:
        ``{label: kernel}`` (numpy, labels in order of first appearance); the labels' kernels
        sum to the eNTK (seed 000 §7).
    """
    from . import ntk  # the generic path and the input checks live there

    leaves = jax.tree_util.tree_leaves(params)
    if labels is None:
        labels = [None] * len(leaves)
    labels = list(labels)
    if len(labels) != len(leaves):
        raise ValueError(f"labels must give one label per leaf of params ({len(leaves)}); got {len(labels)}")
    if collapse not in (None, "class_mean"):
        raise ValueError(f"collapse must be None or 'class_mean'; got {collapse!r}")
    return ntk._kernels_by_label(f, params, x1, x2, labels, collapse, block_bytes, "structured")


def _all_factors(f, params, x):
    """Validate, trace and compute every dense leaf's factors on a batch: ``(plan, a, phi', B of
    the non-diagonal uses, M of the diagonal uses)``."""
    from . import ntk

    call = ntk._Call(f, params, x, None, x_name="x")
    traced, x, leaves = call.traced, call.x1, call.leaves
    plan = plan_for(traced, call.paths)
    acts, derivs, sens = _factors(traced, plan, leaves, x, _DEFAULT_BLOCK_BYTES)
    _, _, constant_sensitivity = _functions(traced, plan)
    m = constant_sensitivity(traced.consts, leaves, x[0]) if any(dn.exit_var is not None for dn in plan.dense) else {}
    return plan, acts, derivs, sens, m


def layer_factors(f: Callable, params: Any, x: Any) -> dict[str, dict[str, np.ndarray]]:
    """The two factors of every dense parameter leaf: ``a^{l-1}(x)`` and ``B^l(x) = dz/dh^l``.

    For ``h^l = a^{l-1} W^l`` (seed 000 §7, seed 001 §4) the leaf's eNTK is
    ``Theta^l_ij(x, x') = sum_rs (a_r(x) . a_s(x')) sum_o B_iro(x) B_jso(x')``.

    Args:
        f: model ``f(params, x) -> (N, C)``; params: pytree; x: ``(N, ...)``.

    Returns:
        ``{leaf path: {"activations": (N, R, K), "sensitivities": (N, C, R, O)}}`` for the dense
        leaves (R = 1 for an MLP; K = fan-in, O = fan-out). Leaves that are not dense maps
        (biases, shared weights) are absent: see ``analyze(...).explain()``.
    """
    plan, acts, derivs, sens, m = _all_factors(f, params, x)
    out = {}
    for k, dn in enumerate(plan.dense):
        if dn.exit_var is not None:
            b = m[k][None] * derivs[k][:, None]
        else:
            b = sens[k]
        out[plan.paths[dn.leaf]] = {"activations": np.asarray(acts[k]), "sensitivities": np.asarray(b)}
    return out


def forward_backward_kernels(f: Callable, params: Any, x: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dense leaf, the representation Gram and the (class-mean) sensitivity kernel.

    ``F^l(x, x') = sum_r a_r(x) . a_r(x')`` (the forward kernel: what the layer reads) and
    ``B^l(x, x') = (1/C) sum_i sum_ro B_iro(x) B_iro(x')`` (the backward kernel: how the output
    depends on what the layer writes), seed 001 §4. For an MLP (R = 1) the leaf's class-mean
    eNTK is their entrywise product, ``Theta^l = F^l * B^l``. For a diagonal use
    (``B = M diag(phi')``) the backward kernel is ``(phi'(x) * s) . phi'(x') / C`` with
    ``s_ro = sum_i M_iro^2``, without forming the ``(N, C, R, O)`` sensitivities.

    Returns:
        ``{leaf path: (F (N, N), B (N, N))}``.
    """
    plan, acts, derivs, sens, m = _all_factors(f, params, x)
    c = plan.num_outputs
    out = {}
    for k, dn in enumerate(plan.dense):
        a = np.asarray(acts[k])
        n = a.shape[0]
        forward_k = np.einsum("ark,brk->ab", a, a)
        if dn.exit_var is not None:
            s = np.asarray((m[k] ** 2).sum(axis=0)).reshape(-1)  # (R*O,)
            d = np.asarray(derivs[k]).reshape(n, -1)
            backward_k = (d * s) @ d.T / c
        else:
            b = np.asarray(sens[k]).reshape(n, -1)
            backward_k = b @ b.T / c
        out[plan.paths[dn.leaf]] = (forward_k, backward_k)
    return out
