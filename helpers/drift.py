"""Kernel drift: how the empirical NTK moves during training (seed 000 §1, §3; seed 003).

Notation (seed 000 §0): ``theta`` (P parameters), ``z = f(theta)`` the O = N*C outputs on a
batch, ``J = dz/dtheta`` (O, P), ``Theta = J J^T`` the eNTK, ``r = dL/dz`` the residual,
``H_z = d^2 L / dz^2`` the output Hessian and ``T_aij = d^2 z_a / dtheta_i dtheta_j`` the map
curvature. All kernels here are *flattened* ``(N*C, N*C)`` with row ``n*C + i``, as in
``helpers.ntk.flatten``.

Under gradient flow ``theta' = -J^T r`` (seed 000 §3)::

    J'_ai      = -sum_{j,b} T_aij J_bj r_b,
    Xi_abc     = sum_{ij} T_aij J_bj J_ci                          (symmetric in b, c),
    Theta'_ac  = -sum_b r_b (Xi_abc + Xi_cab),

and first-order perturbation theory of ``Theta = sum_mu lambda_mu u_mu u_mu^T`` under
``V = Theta'`` gives::

    lambda'_mu = u_mu^T V u_mu,      u'_mu = sum_{nu != mu} (u_nu^T V u_mu) / (lambda_mu - lambda_nu) u_nu.

Neither ``T`` (O x P x P) nor ``Xi`` is needed for the velocity: ``J'`` is one
forward-over-reverse product, the jvp of the Jacobian along the direction ``-J^T r``.

Public functions
----------------

Kernels and their motion::

    ``flat_kernel``               Theta on a batch, ``(N*C, N*C)``.
    ``one_hidden_layer_kernel``   Theta of a one-hidden-layer ``helpers.models`` MLP in closed
                                  form (jittable, differentiable, vmappable over seeds).
    ``infinite_width_kernel``     its infinite-width limit K_inf (Gauss-Hermite quadrature).
    ``kernel_velocity``           Theta' under gradient flow with residual r (matrix-free in T).
    ``kernel_derivative``         d/de kernel_fn(theta + e d) along any update d (Adam, SGD, ...).
    ``map_curvature_contraction`` Xi ``(O, O, O)`` for small O.
    ``velocity_from_contraction`` Theta' from Xi and r (the seed's formula, literally).

Spectral motion::

    ``spectra``                   descending eigenpairs of one kernel or a stack of them.
    ``perturbation_rates``        lambda' and u' from (Theta, V).
    ``subspace_rotation_rate``    speed at which the top-k eigenspace leaves itself.
    ``perturbation_ratio``        eigenvalue rate / eigenvector rate from (Theta, V): the seed's
                                  ``|V_diag| gap / |V_off|`` (the "10^4").
    ``timescale_ratio``           the same ratio measured along a recorded trajectory, as a
                                  ratio of path lengths (each interval weighted by its length).
    ``spectral_speeds``           per-interval eigenvalue and eigenvector speeds.
    ``principal_angles``          between two subspaces (``scipy.linalg.subspace_angles``).
    ``relative_drift``            ||K1 - K0||_F / ||K0||_F.
    ``eigenspace_change``         principal angles and eigenvalue change of the top k.
    ``loglog_slope``              slopes of log(value) against log(width) per seed, with a
                                  Student-t confidence interval over seeds.
    ``confidence_interval``       mean, standard deviation and Student-t interval over seeds.

Training and recording::

    ``train_recording``           a batch of models (seeds) trained at once with optax,
                                  parameters and the next update recorded at given steps.
    ``train_to_loss``             a batch of models trained by gradient descent until each
                                  reaches a fraction of its initial loss.
    ``kernel_trajectory``         flat kernels at a list of parameter snapshots.
    ``train_with_kernels``        ``helpers.train.train`` plus the kernel at every snapshot.

Output curvature::

    ``softmax_output_hessian``    H_z = diag(p) - p p^T per example, block diagonal.
    ``residual_dynamics``         r(t) = exp(-lr H_z Theta t) r0 (or its discrete-step version).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
import scipy.special
import scipy.stats
from jax.flatten_util import ravel_pytree

from . import _checks
from . import models as _models
from . import ntk as _ntk
from . import train as _train

__all__ = [
    "flat_kernel",
    "one_hidden_layer_kernel",
    "infinite_width_kernel",
    "kernel_velocity",
    "kernel_derivative",
    "map_curvature_contraction",
    "velocity_from_contraction",
    "spectra",
    "perturbation_rates",
    "subspace_rotation_rate",
    "perturbation_ratio",
    "timescale_ratio",
    "spectral_speeds",
    "principal_angles",
    "relative_drift",
    "eigenspace_change",
    "loglog_slope",
    "confidence_interval",
    "train_recording",
    "train_to_loss",
    "kernel_trajectory",
    "train_with_kernels",
    "softmax_output_hessian",
    "residual_dynamics",
]


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------


def _model_batch(f: Any, params: Any, x: Any) -> tuple[jnp.ndarray, int, int]:
    """Validate ``(f, params, x)`` for a model ``f(params, x) -> (N, C)``; return ``(x, N, C)``."""
    _checks.function(f, "f", "f(params, x) -> (N, C)")
    _checks.params_tree(params, "params")
    x = _checks.array(x, "x", kind="real")
    if x.ndim < 1:
        raise ValueError(f"x must have a leading batch axis, shape (N, ...); got shape {x.shape}")
    x = jnp.asarray(x)
    try:
        out = jax.eval_shape(f, params, x[:1])
    except Exception as err:  # a params pytree or an input that does not fit the model
        raise ValueError(
            f"params and x must fit the model f: f(params, x[:1]) with x of shape {tuple(x.shape)} "
            f"raised {type(err).__name__}: {err}"
        ) from err
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != 1:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"f(params, x) must return (N, C); for x of shape {tuple(x[:1].shape)} it returned {got}")
    return x, int(x.shape[0]), int(out.shape[1])


def _check_residual(residual: Any, n: int, c: int, name: str = "residual") -> jnp.ndarray:
    r = _checks.array(residual, name, kind="real")
    if r.shape not in ((n, c), (n * c,)):
        raise ValueError(f"{name} must have shape (N, C) = ({n}, {c}) or (N*C,) = ({n * c},) to match f(params, x); got shape {r.shape}")
    return jnp.asarray(r).reshape(n * c)


def _symmetric(a: Any, name: str) -> np.ndarray:
    """A finite symmetric (D, D) matrix in float64, symmetrised (rounding-level asymmetry allowed)."""
    arr = _checks.array(a, name, ndim=2, kind="real")
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (D, D) matrix; got shape {arr.shape}")
    # float32 kernels are symmetric to ~1e3 float32 roundoffs; float64 ones much better
    eps = np.finfo(arr.dtype).eps if arr.dtype.kind == "f" else np.finfo(np.float64).eps
    arr = _checks.symmetric(arr.astype(np.float64), name, rtol=max(1e3 * eps, 1e-10))
    return (arr + arr.T) / 2


def _check_k(k: Any, dim: int, name: str = "k", *, strict: bool = False) -> int:
    upper = dim - 1 if strict else dim
    if upper < 1:
        raise ValueError(f"{name} needs a matrix of dimension >= {2 if strict else 1}; got dimension {dim}")
    return _checks.integer(k, name, low=1, high=upper)


def _check_ks(k: Any, dim: int, *, strict: bool = True) -> tuple[list[int], bool]:
    """``k`` as a list of ints (and whether a single int was given)."""
    if isinstance(k, (list, tuple, np.ndarray)):
        ks = list(np.asarray(k).reshape(-1)) if isinstance(k, np.ndarray) else list(k)
        if not ks:
            raise ValueError("k must be a positive integer or a non-empty sequence of them; got an empty sequence")
        return [_check_k(int(v) if isinstance(v, np.integer) else v, dim, strict=strict) for v in ks], False
    return [_check_k(k, dim, strict=strict)], True


def _check_direction(direction: Any, params: Any, name: str = "direction") -> None:
    p_def = jax.tree_util.tree_structure(params)
    d_def = jax.tree_util.tree_structure(direction)
    if p_def != d_def:
        raise ValueError(f"{name} must be a pytree with the structure of params {p_def}; got {d_def}")
    for (path, pl), dl in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(direction)):
        where = jax.tree_util.keystr(path)
        if np.shape(dl) != np.shape(pl):
            raise ValueError(f"{name}{where} must have the shape of params{where} {np.shape(pl)}; got {np.shape(dl)}")
        if np.asarray(dl).dtype.kind != "f":
            raise TypeError(f"{name}{where} must be a floating-point array; got dtype {np.asarray(dl).dtype}")
    _checks.finite_tree(direction, name)


# ----------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------


def flat_kernel(f: Callable, params: Any, x: Any) -> np.ndarray:
    """The flattened eNTK ``Theta = J J^T`` on a batch: ``helpers.ntk.flatten(helpers.ntk.entk(...))``.

    Args:
        f: model ``f(params, x) -> (N, C)``; params: pytree; x: ``(N, ...)``.

    Returns:
        ``(N*C, N*C)``, row ``n*C + i``.
    """
    x, _, _ = _model_batch(f, params, x)
    return _ntk.flatten(_ntk.entk(f, params, x))


def _activation(name: Any) -> tuple[Callable, Callable]:
    _checks.choice(name, "activation", sorted(_models.ACTIVATIONS))
    act = _models.ACTIVATIONS[name]
    # elementwise derivative of the activation (autodiff of a scalar function, vectorised)
    deriv = jnp.vectorize(jax.grad(lambda h: act(h)))
    return act, deriv


def _layers_of(params: Any) -> tuple[Any, Any, Any, Any]:
    if not isinstance(params, dict) or set(params) != {"layer1", "layer2"}:
        got = sorted(params) if isinstance(params, dict) else _checks.describe(params)
        raise ValueError(f"params must be a one-hidden-layer MLP {{'layer1': ..., 'layer2': ...}} from helpers.models.mlp_init; got {got}")
    l1, l2 = params["layer1"], params["layer2"]
    for name, layer in (("layer1", l1), ("layer2", l2)):
        if not isinstance(layer, dict) or "w" not in layer or not set(layer) <= {"w", "b"}:
            raise ValueError(f"params['{name}'] must be a dict with 'w' (and optionally 'b'); got {_checks.describe(layer) if not isinstance(layer, dict) else sorted(layer)}")
    w1, w2 = l1["w"], l2["w"]
    if np.ndim(w1) != 2 or np.ndim(w2) != 2 or np.shape(w1)[1] != np.shape(w2)[0]:
        raise ValueError(f"params['layer1']['w'] (d, n) and params['layer2']['w'] (n, C) must share the width n; got {np.shape(w1)} and {np.shape(w2)}")
    b1, b2 = l1.get("b"), l2.get("b")
    if b1 is not None and np.shape(b1) != (np.shape(w1)[1],):
        raise ValueError(f"params['layer1']['b'] must have shape ({np.shape(w1)[1]},); got {np.shape(b1)}")
    if b2 is not None and np.shape(b2) != (np.shape(w2)[1],):
        raise ValueError(f"params['layer2']['b'] must have shape ({np.shape(w2)[1]},); got {np.shape(b2)}")
    return w1, b1, w2, b2


def _is_concrete(tree: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def one_hidden_layer_kernel(params: Any, x: Any, *, activation: str = "tanh", output_scale: Any = 1.0) -> jnp.ndarray:
    """The eNTK of a one-hidden-layer ``helpers.models`` MLP in closed form (NTK parametrisation).

    For ``f(x) = alpha (sigma(x W1 / sqrt(d) + b1) W2 / sqrt(n) + b2)`` (``models.mlp_apply`` with
    ``parametrization="ntk"``), with ``s_k(x) = sigma(h_k(x))`` and ``s'_k(x)`` its derivative,

        K_ij(x, x') = alpha^2 [ delta_ij (s(x).s(x') / n + [b2])
                                + (1/n) sum_k W2_ki W2_kj s'_k(x) s'_k(x') (x.x' / d + [b1]) ],

    the bracketed terms present when the layer has a bias. Pure ``jax.numpy``: it can be jitted,
    vmapped over a batch of parameter sets (seeds) and differentiated (``kernel_derivative``).
    Shapes are checked always; finiteness only on concrete (non-traced) inputs.

    Args:
        params: ``{"layer1": {"w": (d, n), "b": (n,)}, "layer2": {"w": (n, C), "b": (C,)}}``
            (biases optional).
        x: ``(N, d)``.
        activation: a key of ``helpers.models.ACTIVATIONS``.
        output_scale: ``alpha`` (a float, or a traced scalar).

    Returns:
        ``(N*C, N*C)`` flattened kernel (row ``n*C + i``), a ``jax.Array``.
    """
    act, deriv = _activation(activation)
    w1, b1, w2, b2 = _layers_of(params)
    concrete = _is_concrete((params, x, output_scale))
    if concrete:
        _checks.params_tree(params, "params")
        x = _checks.array(x, "x", ndim=2, kind="real")
        output_scale = _checks.real(output_scale, "output_scale")
    elif np.ndim(x) != 2:
        raise ValueError(f"x must have shape (N, d); got shape {np.shape(x)}")
    d, n = np.shape(w1)
    if np.shape(x)[1] != d:
        raise ValueError(f"x must have d = {d} features to match params['layer1']['w'] {np.shape(w1)}; got shape {np.shape(x)}")
    x = jnp.asarray(x, dtype=jnp.result_type(w1))
    pre = x @ w1 / jnp.sqrt(d) + (0.0 if b1 is None else b1)
    s, ds = act(pre), deriv(pre)  # (N, n)
    c = np.shape(w2)[1]
    readout = s @ s.T / n + (0.0 if b2 is None else 1.0)  # (N, N), times delta_ij
    inputs = x @ x.T / d + (0.0 if b1 is None else 1.0)  # (N, N)
    hidden = jnp.einsum("ak,bk,ki,kj->aibj", ds, ds, w2, w2) / n * inputs[:, None, :, None]
    kernel = hidden + readout[:, None, :, None] * jnp.eye(c, dtype=s.dtype)[None, :, None, :]
    nn = x.shape[0]
    return output_scale**2 * kernel.reshape(nn * c, nn * c)


def infinite_width_kernel(
    x: Any,
    *,
    activation: str = "tanh",
    bias: bool = True,
    bias_std: float = 0.1,
    output_scale: float = 1.0,
    n_outputs: int = 1,
    order: int = 48,
) -> np.ndarray:
    """The infinite-width limit ``K_inf`` of ``one_hidden_layer_kernel`` at initialisation.

    With weights N(0, 1) and biases N(0, bias_std^2) (``helpers.models.mlp_init``: bias_std 0.1),
    the pre-activations ``(h, h')`` at two inputs are jointly Gaussian with covariance
    ``x.x'/d + bias_std^2``, the readout weights satisfy ``E W2_ki W2_kj = delta_ij``, and the
    law of large numbers over the n hidden units gives (Jacot et al. 2018; seed 003)

        K_inf,ij(x, x') = alpha^2 delta_ij [ E s(h) s(h') + [b2] + E s'(h) s'(h') (x.x'/d + [b1]) ].

    The two Gaussian expectations are computed by a tensor Gauss-Hermite rule of ``order^2``
    nodes on the Cholesky factor of each 2 x 2 covariance (NumPy has the rule; no library
    computes these expectations for an arbitrary activation). Smooth activations converge
    exponentially in ``order``; kinked ones (relu) only algebraically.

    Args:
        x: ``(N, d)``.
        activation: a key of ``helpers.models.ACTIVATIONS``.
        bias: whether both layers have biases (``models.mlp_init(bias=...)``).
        bias_std: standard deviation of the first layer's bias at initialisation.
        output_scale: ``alpha``.
        n_outputs: C.
        order: nodes of the one-dimensional Gauss-Hermite rule.

    Returns:
        ``(N*C, N*C)`` float64, flattened like the finite-width kernel.
    """
    act, deriv = _activation(activation)
    x = _checks.array(x, "x", ndim=2, kind="real").astype(np.float64)
    _checks.boolean(bias, "bias")
    bias_std = _checks.real(bias_std, "bias_std", low=0.0)
    output_scale = _checks.real(output_scale, "output_scale")
    c = _checks.integer(n_outputs, "n_outputs", low=1)
    order = _checks.integer(order, "order", low=2, high=400)
    n, d = x.shape
    inputs = x @ x.T / d
    cov = inputs + (bias_std**2 if bias else 0.0)
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)  # probabilists' rule, weight e^{-z^2/2}
    weights = weights / weights.sum()
    z1, z2 = np.meshgrid(nodes, nodes, indexing="ij")
    w = np.outer(weights, weights)
    iu, ju = np.triu_indices(n)
    var_a, var_b, cab = np.diag(cov)[iu], np.diag(cov)[ju], cov[iu, ju]
    sa = np.sqrt(np.maximum(var_a, 0.0))
    sb = np.sqrt(np.maximum(var_b, 0.0))
    rho = np.where(sa * sb > 0, cab / np.where(sa * sb > 0, sa * sb, 1.0), 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    # h = sa z1, h' = sb (rho z1 + sqrt(1 - rho^2) z2): the Cholesky factor of the covariance
    h1 = sa[:, None, None] * z1[None]
    h2 = sb[:, None, None] * (rho[:, None, None] * z1[None] + np.sqrt(1.0 - rho**2)[:, None, None] * z2[None])
    act_np = jax.jit(act)
    deriv_np = jax.jit(deriv)
    e_ss = np.einsum("pij,ij->p", np.asarray(act_np(h1)) * np.asarray(act_np(h2)), w)
    e_dd = np.einsum("pij,ij->p", np.asarray(deriv_np(h1)) * np.asarray(deriv_np(h2)), w)
    readout, gate = np.zeros((n, n)), np.zeros((n, n))
    readout[iu, ju] = readout[ju, iu] = e_ss
    gate[iu, ju] = gate[ju, iu] = e_dd
    scalar = readout + (1.0 if bias else 0.0) + gate * (inputs + (1.0 if bias else 0.0))
    return output_scale**2 * np.kron(scalar, np.eye(c))


# ----------------------------------------------------------------------------------------
# the kernel's motion
# ----------------------------------------------------------------------------------------


def _flat_outputs(f: Callable, params: Any, x: jnp.ndarray):
    theta, unravel = ravel_pytree(params)
    return (lambda t: f(unravel(t), x).reshape(-1)), theta


@partial(jax.jit, static_argnums=0)
def _velocity_impl(f, params, x, r):
    z, theta = _flat_outputs(f, params, x)
    jac_fn = jax.jacrev(z)
    jac = jac_fn(theta)
    direction = -jac.T @ r  # theta' under gradient flow
    jac_dot = jax.jvp(jac_fn, (theta,), (direction,))[1]  # J' = T . theta'
    half = jac_dot @ jac.T
    return half + half.T


def kernel_velocity(f: Callable, params: Any, x: Any, residual: Any) -> np.ndarray:
    """The kernel's velocity ``Theta'`` under gradient flow ``theta' = -J^T r`` (seed 000 §3).

    ``Theta' = J' J^T + J J'^T`` with ``J' = T . theta'`` obtained as one jvp of the Jacobian
    along ``theta' = -J^T r``; equal to ``-sum_b r_b (Xi_abc + Xi_cab)`` without forming ``T``
    or ``Xi``.

    Args:
        f: model ``f(params, x) -> (N, C)``; params: pytree; x: ``(N, ...)``.
        residual: ``r = dL/dz``, shape ``(N, C)`` or ``(N*C,)``.

    Returns:
        ``(N*C, N*C)`` symmetric. For a loss ``L`` and learning rate ``lr``, gradient descent
        moves the kernel by ``lr * Theta'`` per step to first order.
    """
    x, n, c = _model_batch(f, params, x)
    r = _check_residual(residual, n, c)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    return np.asarray(_velocity_impl(f, params, x.astype(dtype), r.astype(dtype)))


def kernel_derivative(kernel_fn: Callable, params: Any, direction: Any, *, step: float | None = None) -> np.ndarray:
    """The derivative of a kernel along a parameter update: ``d/de kernel_fn(theta + e d)`` at 0.

    For an optimiser step ``d = theta_{t+1} - theta_t`` (SGD, Adam, ... : ``train_recording``
    records it) this is the kernel's first-order change over that step; with ``d = -J^T r``
    it is the gradient-flow velocity of ``kernel_velocity``.

    Args:
        kernel_fn: ``kernel_fn(params) -> (D, D)``.
        params: pytree.
        direction: pytree of the structure and leaf shapes of ``params``.
        step: ``None`` for the exact derivative (one ``jax.jvp``; ``kernel_fn`` must be
            written in ``jax.numpy``, e.g. ``lambda p: one_hidden_layer_kernel(p, x)``), or a
            positive ``h`` for the central difference
            ``(kernel_fn(theta + h d) - kernel_fn(theta - h d)) / 2h`` (error ``O(h^2)``),
            which works for any ``kernel_fn``, e.g. one built on ``helpers.ntk.class_mean_entk``.

    Returns:
        ``(D, D)`` NumPy array.
    """
    _checks.function(kernel_fn, "kernel_fn", "kernel_fn(params) -> (D, D)")
    _checks.params_tree(params, "params")
    _check_direction(direction, params)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    direction = jax.tree_util.tree_map(lambda d: jnp.asarray(d, dtype=dtype), direction)
    if step is None:
        primal, tangent = jax.jvp(kernel_fn, (params,), (direction,))
    else:
        h = _checks.real(step, "step", low=0.0, low_open=True)
        shifted = lambda sign: jax.tree_util.tree_map(lambda p, d: p + sign * h * d, params, direction)
        plus, minus = np.asarray(kernel_fn(shifted(1.0))), np.asarray(kernel_fn(shifted(-1.0)))
        primal, tangent = plus, (plus - minus) / (2 * h)
    if np.ndim(tangent) != 2 or np.shape(tangent)[0] != np.shape(tangent)[1]:
        raise ValueError(f"kernel_fn(params) must return a square (D, D) matrix; got shape {np.shape(primal)}")
    return np.asarray(tangent)


@partial(jax.jit, static_argnums=0)
def _xi_impl(f, params, x):
    z, theta = _flat_outputs(f, params, x)
    jac_fn = jax.jacrev(z)
    jac = jac_fn(theta)

    def along(direction):  # (T . direction)_ai = sum_j T_aij direction_j
        return jax.jvp(jac_fn, (theta,), (direction,))[1]

    # tdot[b, a, i] = sum_j T_aij J_bj ; Xi_abc = sum_i tdot[b, a, i] J_ci
    tdot = jax.vmap(along)(jac)
    return jnp.einsum("bai,ci->abc", tdot, jac)


def map_curvature_contraction(f: Callable, params: Any, x: Any) -> np.ndarray:
    """``Xi_abc = sum_ij T_aij J_bj J_ci``, the map curvature double-contracted by Jacobians.

    Computed as O jvps of the Jacobian, one along each row of ``J`` (never forming ``T``).
    Memory is ``O^2 P``: meant for small batches.

    Returns:
        ``(O, O, O)`` with ``O = N*C``; symmetric in its last two indices (seed 000 §3).
    """
    x, _, _ = _model_batch(f, params, x)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    return np.asarray(_xi_impl(f, params, x.astype(dtype)))


def velocity_from_contraction(xi: Any, residual: Any) -> np.ndarray:
    """``Theta'_ac = -sum_b r_b (Xi_abc + Xi_cab)`` (seed 000 §3).

    Args:
        xi: ``(O, O, O)`` from ``map_curvature_contraction``.
        residual: ``(O,)`` (or any shape with O entries, flattened row-major).

    Returns:
        ``(O, O)``.
    """
    xi = _checks.array(xi, "xi", ndim=3, kind="real").astype(np.float64)
    if len(set(xi.shape)) != 1:
        raise ValueError(f"xi must be a cube (O, O, O); got shape {xi.shape}")
    r = _checks.array(residual, "residual", kind="real").astype(np.float64).reshape(-1)
    if r.size != xi.shape[0]:
        raise ValueError(f"residual must have O = {xi.shape[0]} entries to match xi; got {r.size}")
    term = np.einsum("abc,b->ac", xi, r)  # sum_b r_b Xi_abc
    term_swapped = np.einsum("cab,b->ac", xi, r)  # sum_b r_b Xi_cab
    return -(term + term_swapped)


# ----------------------------------------------------------------------------------------
# spectra and perturbation theory
# ----------------------------------------------------------------------------------------


def spectra(kernels: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of one symmetric kernel or a stack of them, eigenvalues in descending order.

    Args:
        kernels: ``(D, D)`` or ``(R, D, D)``.
        k: keep the top k pairs (default all D).

    Returns:
        ``(eigenvalues (..., k), eigenvectors (..., D, k))`` with the leading ``R`` axis if the
        input had one (``numpy.linalg.eigh``, batched).
    """
    arr = _checks.array(kernels, "kernels", ndim=(2, 3), kind="real").astype(np.float64)
    single = arr.ndim == 2
    stack = arr[None] if single else arr
    if stack.shape[1] != stack.shape[2]:
        raise ValueError(f"kernels must be square, (D, D) or (R, D, D); got shape {arr.shape}")
    stack = np.stack([_symmetric(K, f"kernels[{i}]" if not single else "kernels") for i, K in enumerate(stack)])
    k = stack.shape[1] if k is None else _check_k(k, stack.shape[1])
    lam, U = np.linalg.eigh(stack)
    lam, U = lam[:, ::-1][:, :k], U[:, :, ::-1][:, :, :k]
    return (lam[0], U[0]) if single else (lam, U)


def perturbation_rates(kernel: Any, velocity: Any, k: int | None = None, *, min_gap: float = 1e-9) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First-order rates of the top-k eigenpairs of ``kernel`` moving with ``velocity``.

    ``lambda'_mu = u_mu^T V u_mu`` and
    ``u'_mu = sum_{nu != mu} (u_nu^T V u_mu) / (lambda_mu - lambda_nu) u_nu`` (seed 000 §3).

    Args:
        kernel: ``(D, D)`` symmetric ``Theta``.
        velocity: ``(D, D)`` symmetric ``V = Theta'``.
        k: number of leading eigenpairs (default all).
        min_gap: the top-k eigenvalues must be separated from every other eigenvalue by more
            than ``min_gap * lambda_1``; otherwise the rotation rate is undefined and a
            ``ValueError`` is raised.

    Returns:
        ``(eigenvalues (k,), eigenvectors (D, k), eigenvalue_rates (k,), eigenvector_rates (D, k))``,
        eigenvalues in descending order.
    """
    K = _symmetric(kernel, "kernel")
    V = _symmetric(velocity, "velocity")
    if V.shape != K.shape:
        raise ValueError(f"velocity must have the kernel's shape {K.shape}; got {V.shape}")
    k = K.shape[0] if k is None else _check_k(k, K.shape[0])
    min_gap = _checks.real(min_gap, "min_gap", low=0.0)
    lam, U = np.linalg.eigh(K)
    lam, U = lam[::-1], U[:, ::-1]
    Vt = U.T @ V @ U  # V in the eigenbasis
    gaps = lam[:k, None] - lam[None, :]  # (k, D)
    own = np.arange(k)
    off = np.ones_like(gaps, dtype=bool)
    off[own, own] = False
    scale = max(abs(lam[0]), 1e-300)
    if np.any(np.abs(gaps[off]) <= min_gap * scale):
        worst = float(np.abs(gaps[off]).min())
        raise ValueError(
            f"kernel has a (near-)degenerate eigenvalue among its top {k}: smallest gap {worst:.3g} "
            f"<= min_gap * lambda_1 = {min_gap * scale:.3g}; eigenvector rates are undefined there"
        )
    coeff = np.where(off, Vt[:, :k].T / np.where(off, gaps, 1.0), 0.0)  # (k, D): coefficient of u_nu in u'_mu
    return lam[:k], U[:, :k], np.diag(Vt)[:k].copy(), U @ coeff.T


def subspace_rotation_rate(kernel: Any, velocity: Any, k: int) -> float:
    """Speed at which the top-k eigenspace of ``kernel`` turns under ``velocity``.

    ``|| (I - P_k) U_k' ||_F`` with ``P_k`` the projector on the top-k eigenspace: only the
    couplings ``(u_nu^T V u_mu) / (lambda_mu - lambda_nu)`` across the k-th gap (mu <= k < nu)
    enter. Equal to the sum of the principal-angle rates in quadrature (radians per unit time).

    Returns:
        float.
    """
    K = _symmetric(kernel, "kernel")
    V = _symmetric(velocity, "velocity")
    if V.shape != K.shape:
        raise ValueError(f"velocity must have the kernel's shape {K.shape}; got {V.shape}")
    k = _check_k(k, K.shape[0], strict=True)
    lam, U = np.linalg.eigh(K)
    lam, U = lam[::-1], U[:, ::-1]
    gap = lam[:k, None] - lam[None, k:]
    if np.any(gap <= 1e-12 * max(abs(lam[0]), 1e-300)):
        raise ValueError(f"kernel has no gap after its top {k} eigenvalues (lambda_k = lambda_k+1); the top-{k} space is undefined")
    cross = U[:, :k].T @ V @ U[:, k:]  # (k, D-k)
    return float(np.linalg.norm(cross / gap))


def perturbation_ratio(kernel: Any, velocity: Any, k: Any, *, spectrum: Any = None) -> dict:
    """Eigenvalue rate over eigenvector rate of the top-k eigenspace, from first-order theory.

    With ``Vt = U^T V U`` (V in the eigenbasis of the kernel, eigenvalues descending):

    * eigenvalue rate ``a = || (Vt_mumu / lambda_mu)_{mu <= k} ||`` (relative, per unit time);
    * eigenvector rate ``b = || (Vt_numu / (lambda_mu - lambda_nu))_{mu <= k < nu} ||_F``
      (radians per unit time; ``subspace_rotation_rate``);
    * ``ratio = a / b``: the seed's "eigenvalues retune ~10^4 x faster" (seed 000 §3), whose
      inverse is the seed's ``|V_off| / (|V_diag| gap)``.

    Also returned, to see where a ratio comes from: ``diagonal`` ``||(Vt_mumu)_{mu<=k}||``,
    ``off_diagonal`` ``||(Vt_numu)_{mu<=k<nu}||_F`` and ``relative_gap``
    ``(lambda_k - lambda_{k+1}) / lambda_k``.

    Args:
        kernel: ``(D, D)`` symmetric, or ``None`` when ``spectrum`` is given.
        velocity: ``(D, D)`` symmetric ``V`` (e.g. ``kernel_derivative`` along an update).
        k: an int ``1 <= k < D`` or a sequence of them.
        spectrum: optional ``(eigenvalues (D,), eigenvectors (D, D))`` of the kernel in
            descending order (``spectra``), to reuse one eigendecomposition.

    Returns:
        dict of floats (int ``k``) or of ``(len(k),)`` arrays (sequence ``k``).
    """
    V = _symmetric(velocity, "velocity")
    if spectrum is None:
        if kernel is None:
            raise ValueError("kernel must be a (D, D) matrix when spectrum is None; got None")
        lam, U = spectra(kernel)
    else:
        if kernel is not None:
            raise ValueError("give either kernel or spectrum, not both (kernel must be None when spectrum is given)")
        if not isinstance(spectrum, (tuple, list)) or len(spectrum) != 2:
            raise TypeError(f"spectrum must be a pair (eigenvalues (D,), eigenvectors (D, D)); got {_checks.describe(spectrum)}")
        lam = _checks.array(spectrum[0], "spectrum[0]", ndim=1, kind="real").astype(np.float64)
        U = _checks.array(spectrum[1], "spectrum[1]", ndim=2, kind="real").astype(np.float64)
        if U.shape != (lam.size, lam.size):
            raise ValueError(f"spectrum[1] must be (D, D) = ({lam.size}, {lam.size}) eigenvectors; got {U.shape}")
        if np.any(np.diff(lam) > 0):
            raise ValueError("spectrum[0] must be in descending order (as spectra returns it)")
    if V.shape != (lam.size, lam.size):
        raise ValueError(f"velocity must have the kernel's shape {(lam.size, lam.size)}; got {V.shape}")
    ks, single = _check_ks(k, lam.size)
    Vt = U.T @ (V @ U[:, : max(ks)])  # (D, max k): only the columns of the tracked modes
    scale = max(abs(lam[0]), 1e-300)
    out = {name: [] for name in ("eigenvalue_rate", "eigenvector_rate", "ratio", "diagonal", "off_diagonal", "relative_gap")}
    for kk in ks:
        if np.any(lam[:kk] <= 0):
            raise ValueError(f"the top k = {kk} eigenvalues must be positive for a relative eigenvalue rate; got lambda_k = {lam[kk - 1]:.3g}")
        gap = lam[:kk, None] - lam[None, kk:]
        if np.any(gap <= 1e-12 * scale):
            raise ValueError(f"k = {kk}: the kernel has no gap after its top {kk} eigenvalues; the top-{kk} eigenspace is undefined")
        diag = np.diag(Vt[:kk, :kk])
        cross = Vt[kk:, :kk].T  # (k, D-k)
        a = float(np.linalg.norm(diag / lam[:kk]))
        b = float(np.linalg.norm(cross / gap))
        out["eigenvalue_rate"].append(a)
        out["eigenvector_rate"].append(b)
        out["ratio"].append(a / b if b > 0 else np.inf)
        out["diagonal"].append(float(np.linalg.norm(diag)))
        out["off_diagonal"].append(float(np.linalg.norm(cross)))
        out["relative_gap"].append(float((lam[kk - 1] - lam[kk]) / lam[kk - 1]))
    return {key: (v[0] if single else np.array(v)) for key, v in out.items()}


def principal_angles(basis_a: Any, basis_b: Any) -> np.ndarray:
    """Principal angles between the column spans of two matrices (Bjorck & Golub 1973).

    Args:
        basis_a: ``(D, k1)``; basis_b: ``(D, k2)`` (need not be orthonormal).

    Returns:
        ``(min(k1, k2),)`` angles in radians, in *descending* order (as
        ``scipy.linalg.subspace_angles`` returns them).
    """
    a = _checks.array(basis_a, "basis_a", ndim=2, kind="real").astype(np.float64)
    b = _checks.array(basis_b, "basis_b", ndim=2, kind="real").astype(np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"basis_b must have the same D as basis_a (rows {a.shape[0]}); got shapes {a.shape} and {b.shape}")
    for name, m in (("basis_a", a), ("basis_b", b)):
        if np.linalg.matrix_rank(m) < m.shape[1]:
            raise ValueError(f"{name} must have linearly independent columns (rank {m.shape[1]}); got rank {np.linalg.matrix_rank(m)}")
    return scipy.linalg.subspace_angles(a, b)


def _series(eigenvalues: Any, eigenvectors: Any) -> tuple[np.ndarray, np.ndarray]:
    lam = _checks.array(eigenvalues, "eigenvalues", ndim=2, kind="real").astype(np.float64)
    U = _checks.array(eigenvectors, "eigenvectors", ndim=3, kind="real").astype(np.float64)
    if lam.shape[0] < 2:
        raise ValueError(f"eigenvalues must have R >= 2 snapshots along axis 0; got shape {lam.shape}")
    if U.shape[0] != lam.shape[0] or U.shape[2] != lam.shape[1]:
        raise ValueError(f"eigenvectors must have shape (R, D, m) = ({lam.shape[0]}, D, {lam.shape[1]}) to match eigenvalues; got {U.shape}")
    if np.any(np.diff(lam, axis=1) > 1e-12 * np.abs(lam).max()):
        raise ValueError("eigenvalues must be in descending order along axis 1 (as spectra returns them)")
    return lam, U


def timescale_ratio(eigenvalues: Any, eigenvectors: Any, k: Any) -> dict:
    """Eigenvalue path length over eigenvector path length of the top-k eigenspace.

    Between consecutive snapshots ``s, s+1`` the top-k eigenvalues move by
    ``||log lambda_{1..k}(s+1) - log lambda_{1..k}(s)||_2`` and the top-k eigenspace turns by
    ``||angles(U_k(s), U_k(s+1))||_2`` (principal angles, radians). The whole-run ratio is the
    ratio of the *sums* (path lengths), so each interval counts in proportion to how far the
    kernel moved in it, whatever the interval's length: the estimator of seed 000 §3's
    "eigenvectors ~10^4 x slower" that does not depend on how the snapshots were spaced in
    time. (A mean of per-interval rates would let a one-step interval weigh as much as a
    thousand-step one.) Both lengths are lower bounds of the continuous paths; they are
    measured at the same snapshots.

    Args:
        eigenvalues: ``(R, m)`` descending per row (``spectra`` of a stack of kernels).
        eigenvectors: ``(R, D, m)``.
        k: an int ``1 <= k <= m`` or a sequence of them.

    Returns:
        dict with ``ratio`` (path ratio), ``eigenvalue_path``, ``eigenvector_path`` (floats, or
        arrays over ``k``), and the per-interval displacements ``eigenvalue_steps``,
        ``eigenvector_steps`` (``(R-1,)``, or ``(len(k), R-1)``).
    """
    lam, U = _series(eigenvalues, eigenvectors)
    ks, single = _check_ks(k, lam.shape[1], strict=False)
    out = {name: [] for name in ("ratio", "eigenvalue_path", "eigenvector_path", "eigenvalue_steps", "eigenvector_steps")}
    for kk in ks:
        top = lam[:, :kk]
        if np.any(top <= 0):
            raise ValueError(f"the top k = {kk} eigenvalues must be positive at every snapshot (log scale); got min {top.min():.3g}")
        dval = np.linalg.norm(np.diff(np.log(top), axis=0), axis=1)
        dvec = np.array([np.linalg.norm(scipy.linalg.subspace_angles(U[s][:, :kk], U[s + 1][:, :kk])) for s in range(lam.shape[0] - 1)])
        out["eigenvalue_steps"].append(dval)
        out["eigenvector_steps"].append(dvec)
        out["eigenvalue_path"].append(float(dval.sum()))
        out["eigenvector_path"].append(float(dvec.sum()))
        out["ratio"].append(float(dval.sum() / dvec.sum()) if dvec.sum() > 0 else np.inf)
    return {key: (v[0] if single else np.array(v)) for key, v in out.items()}


def spectral_speeds(kernels: Any, times: Any, k: int) -> dict:
    """Eigenvalue speed versus eigenvector (top-k subspace) speed along a kernel trajectory.

    Between consecutive snapshots ``s`` and ``s+1``:

    * eigenvalue speed ``||log lambda_{1..k}(s+1) - log lambda_{1..k}(s)||_2 / dt``
      (relative change per unit time, dimensionless rate);
    * eigenvector speed ``||angles(U_k(s), U_k(s+1))||_2 / dt`` (radians per unit time).

    For a whole-run ratio use ``timescale_ratio`` (path lengths), not a mean of these rates.

    Args:
        kernels: ``(R, D, D)`` symmetric kernels at ``R >= 2`` snapshots.
        times: ``(R,)`` strictly increasing snapshot times (steps).
        k: size of the tracked top eigenspace, ``1 <= k < D``.

    Returns:
        dict with ``times`` (midpoints, ``(R-1,)``), ``eigenvalue_speed``, ``eigenvector_speed``
        and ``ratio`` (each ``(R-1,)``).
    """
    ks = _checks.array(kernels, "kernels", ndim=3, kind="real")
    if ks.shape[1] != ks.shape[2] or ks.shape[0] < 2:
        raise ValueError(f"kernels must be (R, D, D) with R >= 2; got shape {ks.shape}")
    t = _checks.array(times, "times", ndim=1, kind="real").astype(np.float64)
    if t.shape != (ks.shape[0],):
        raise ValueError(f"times must have one entry per kernel, shape ({ks.shape[0]},); got {t.shape}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    k = _check_k(k, ks.shape[1], strict=True)
    lam, U = spectra(ks, k)
    path = timescale_ratio(lam, U, k)
    dt = np.diff(t)
    val, vec = path["eigenvalue_steps"] / dt, path["eigenvector_steps"] / dt
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = val / vec
    return {"times": (t[:-1] + t[1:]) / 2, "eigenvalue_speed": val, "eigenvector_speed": vec, "ratio": ratio}


# ----------------------------------------------------------------------------------------
# comparing kernels
# ----------------------------------------------------------------------------------------


def relative_drift(kernel_0: Any, kernel_1: Any) -> float:
    """``||K_1 - K_0||_F / ||K_0||_F``, the distance of ``kernel_1`` from the reference ``kernel_0``.

    With the kernels at initialisation and after training it is the training drift (1/width
    in the NTK parametrisation: Dyer & Gur-Ari 2019, Huang & Yau 2020); with
    ``kernel_0 = K_inf`` (``infinite_width_kernel``) and the kernel at initialisation it is
    seed 003's distance from the infinite-width limit (1/sqrt(width)).

    Args:
        kernel_0: reference, any shape; kernel_1: the same shape.

    Returns:
        float.
    """
    k0 = _checks.array(kernel_0, "kernel_0", kind="real").astype(np.float64)
    k1 = _checks.array(kernel_1, "kernel_1", kind="real").astype(np.float64)
    _checks.same_shape(k0, k1, "kernel_0", "kernel_1")
    norm = np.linalg.norm(k0)
    if norm == 0:
        raise ValueError("kernel_0 must be nonzero (it is the reference of a relative distance); got all zeros")
    return float(np.linalg.norm(k1 - k0) / norm)


def eigenspace_change(kernel_before: Any, kernel_after: Any, k: int) -> dict:
    """How the top-k eigenpairs moved between two kernels.

    Returns:
        dict with ``angles`` (principal angles of the top-k eigenspaces, descending, radians),
        ``max_angle``, ``eigenvalue_change`` (``||lambda_after - lambda_before|| / ||lambda_before||``
        over the top k) and ``log_eigenvalue_change`` (``max |log(lambda_after / lambda_before)|``).
    """
    kb = _symmetric(kernel_before, "kernel_before")
    ka = _symmetric(kernel_after, "kernel_after")
    _checks.same_shape(kb, ka, "kernel_before", "kernel_after")
    k = _check_k(k, kb.shape[0])
    lb, ub = spectra(kb, k)
    la, ua = spectra(ka, k)
    if np.any(lb <= 0) or np.any(la <= 0):
        raise ValueError(f"k = {k}: the top {k} eigenvalues must be positive to compare them in log scale; got {lb.min():.3g}, {la.min():.3g}")
    angles = scipy.linalg.subspace_angles(ub, ua)
    return {
        "angles": angles,
        "max_angle": float(angles.max()),
        "eigenvalue_change": float(np.linalg.norm(la - lb) / np.linalg.norm(lb)),
        "log_eigenvalue_change": float(np.abs(np.log(la / lb)).max()),
    }


def loglog_slope(widths: Any, values: Any, *, level: float = 0.95) -> dict:
    """Slope of ``log(value)`` against ``log(width)``, fitted per seed, with a confidence interval.

    Each row of ``values`` (one seed) gets its own least-squares slope; the seeds are
    independent draws, so the interval is the Student-t interval of their mean
    (``scipy.stats.t``, ``S - 1`` degrees of freedom).

    Args:
        widths: ``(W,)`` positive, at least 2 distinct.
        values: ``(S, W)`` positive, ``S >= 2`` seeds.
        level: confidence level in (0, 1).

    Returns:
        dict with ``slopes`` (``(S,)``), ``mean``, ``std`` (over seeds, ddof 1), ``ci``
        (``(low, high)``) and ``local`` (``(S, W-1)`` slopes between successive widths).
    """
    w = _checks.array(widths, "widths", ndim=1, kind="real").astype(np.float64)
    v = _checks.array(values, "values", ndim=2, kind="real").astype(np.float64)
    level = _checks.real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    if np.any(w <= 0) or np.unique(w).size < 2:
        raise ValueError(f"widths must be positive with at least 2 distinct values; got {w}")
    if v.shape[1] != w.size:
        raise ValueError(f"values must have shape (S, W) = (S, {w.size}), one column per width; got {v.shape}")
    if v.shape[0] < 2:
        raise ValueError(f"values must hold S >= 2 seeds (rows) for a confidence interval; got shape {v.shape}")
    if np.any(v <= 0):
        raise ValueError("values must be positive (their logarithm is fitted)")
    lw, lv = np.log(w), np.log(v)
    centred = lw - lw.mean()
    slopes = (lv - lv.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)
    stats = confidence_interval(slopes, level=level)
    return {"slopes": slopes, "mean": stats["mean"], "std": stats["std"], "ci": stats["ci"], "local": np.diff(lv, axis=1) / np.diff(lw)}


def confidence_interval(values: Any, *, level: float = 0.95) -> dict:
    """Mean over independent draws (seeds) with its Student-t confidence interval.

    Args:
        values: ``(S,)`` finite, ``S >= 2``.
        level: confidence level in (0, 1).

    Returns:
        dict with ``mean``, ``std`` (ddof 1), ``ci`` (``(low, high)``,
        ``mean -/+ t_{S-1} std / sqrt(S)``, ``scipy.stats.t``), ``min``, ``max`` and ``n``.
    """
    v = _checks.array(values, "values", ndim=1, kind="real").astype(np.float64)
    level = _checks.real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    if v.size < 2:
        raise ValueError(f"values must hold at least 2 draws for a confidence interval; got shape {v.shape}")
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = float(scipy.stats.t.ppf(0.5 + level / 2, df=v.size - 1)) * std / np.sqrt(v.size)
    return {"mean": mean, "std": std, "ci": (mean - half, mean + half), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


# ----------------------------------------------------------------------------------------
# training a batch of models (seeds) at once, and recording
# ----------------------------------------------------------------------------------------


def _batch_size(tree: Any, name: str) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ValueError(f"every leaf of {name} must have the same leading batch axis B; got leading sizes {sorted(s for s in sizes if s is not None)}{' and a scalar leaf' if None in sizes else ''}")
    return sizes.pop()


def _check_batched(loss_fn: Any, params: Any, args: Any) -> tuple[int, Callable]:
    _checks.function(loss_fn, "loss_fn", "loss_fn(params, args) -> scalar")
    _checks.params_tree(params, "params")
    b = _batch_size(params, "params")
    if args is not None:
        _checks.finite_tree(args, "args")
        if _batch_size(args, "args") != b:
            raise ValueError(f"args must have the batch size of params (B = {b}) on every leaf; got {_batch_size(args, 'args')}")
    loss = (lambda p, a: loss_fn(p)) if args is None else loss_fn
    first = jax.tree_util.tree_map(lambda leaf: leaf[0], params)
    first_args = None if args is None else jax.tree_util.tree_map(lambda leaf: leaf[0], args)
    try:
        out = jax.eval_shape(loss, first, first_args)
    except Exception as err:
        raise ValueError(f"params (one batch member) and args must fit loss_fn: it raised {type(err).__name__}: {err}") from err
    if getattr(out, "shape", None) != ():
        raise ValueError(f"loss_fn must return a scalar for one batch member; got {getattr(out, 'shape', type(out).__name__)}")
    return b, loss


def train_recording(loss_fn: Callable, params: Any, optimizer: Any, record_at: Sequence[int], *, args: Any = None) -> dict:
    """Train a batch of models at once with an optax optimiser, recording snapshots.

    Every leaf of ``params`` (and of ``args``) has a leading batch axis B (one entry per seed);
    member b minimises ``loss_fn(params[b], args[b])`` (or ``loss_fn(params[b])`` when ``args``
    is None) by full-batch steps of ``optimizer``. The steps between two snapshots are one
    compiled ``jax.lax.fori_loop`` vmapped over the batch, so B seeds cost about one run of B
    times the width. At every snapshot the parameters and the update the optimiser would
    apply next (``theta_{t+1} - theta_t``; for ``kernel_derivative``) are recorded.

    Args:
        loss_fn: scalar loss of one member.
        params: batched pytree.
        optimizer: an optax ``GradientTransformation``.
        record_at: non-negative step counts (sorted and deduplicated; 0 need not be included).
        args: batched pytree of per-member data, or None.

    Returns:
        dict with ``steps`` (``(R,)``), ``params`` and ``updates`` (lists of R batched pytrees),
        ``loss`` (``(R, B)``), ``final_params`` and ``final_state`` (after the last snapshot).
    """
    b, loss = _check_batched(loss_fn, params, args)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {_checks.describe(optimizer)}")
    steps = _checks.array(record_at, "record_at", ndim=1, kind="int")
    if np.any(steps < 0):
        raise ValueError(f"record_at must hold non-negative step counts; got {steps.min()}")
    steps = np.unique(steps)

    def advance_one(p, s, a, n):
        def body(_, carry):
            q, st = carry
            g = jax.grad(loss)(q, a)
            u, st = optimizer.update(g, st, q)
            return optax.apply_updates(q, u), st

        return jax.lax.fori_loop(0, n, body, (p, s))

    def probe_one(p, s, a):
        value, g = jax.value_and_grad(loss)(p, a)
        u, _ = optimizer.update(g, s, p)
        return value, u

    advance = jax.jit(jax.vmap(advance_one, in_axes=(0, 0, 0, None)))
    probe = jax.jit(jax.vmap(probe_one))
    state = jax.vmap(optimizer.init)(params)
    a = args if args is not None else jnp.zeros((b,))
    out = {"steps": steps, "params": [], "updates": [], "loss": []}
    done = 0
    for point in steps:
        if point > done:
            params, state = advance(params, state, a, int(point - done))
            done = int(point)
        value, update = probe(params, state, a)
        out["params"].append(params)
        out["updates"].append(update)
        out["loss"].append(np.asarray(value))
    out["loss"] = np.stack(out["loss"])
    out["final_params"], out["final_state"] = params, state
    return out


def train_to_loss(loss_fn: Callable, params: Any, lr: Any, *, target_fraction: float, max_steps: int, args: Any = None) -> dict:
    """Gradient descent on a batch of models, each until its loss falls to a fraction of its start.

    Member b takes steps ``theta <- theta - lr[b] grad loss_fn(theta, args[b])`` while
    ``loss > target_fraction * loss(theta_0)`` and fewer than ``max_steps`` steps were taken
    (one ``jax.lax.while_loop``, vmapped: members that are done stay where they stopped).
    Comparing kernels "at a fixed loss" this way removes the snapshot granularity from the
    drift.

    Args:
        loss_fn, params, args: as in ``train_recording``.
        lr: ``(B,)`` positive learning rates (or one float for all).
        target_fraction: in (0, 1).
        max_steps: positive int.

    Returns:
        dict with ``params`` (batched, where each member stopped), ``steps`` (``(B,)`` ints),
        ``reached`` (``(B,)`` bools), ``initial_loss`` and ``final_loss`` (``(B,)``).
    """
    b, loss = _check_batched(loss_fn, params, args)
    lr = _checks.array(lr, "lr", ndim=(0, 1), kind="real").astype(np.float64)
    lr = np.broadcast_to(lr, (b,)) if lr.ndim == 0 else lr
    if lr.shape != (b,) or np.any(lr <= 0):
        raise ValueError(f"lr must be positive, one float or shape (B,) = ({b},); got shape {lr.shape} with min {lr.min():.3g}")
    target_fraction = _checks.real(target_fraction, "target_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    max_steps = _checks.integer(max_steps, "max_steps", low=1)

    def one(p, a, rate):
        value_and_grad = jax.value_and_grad(loss)
        start, g0 = value_and_grad(p, a)
        goal = target_fraction * start

        def cond(carry):
            _, _, value, n = carry
            return (value > goal) & (n < max_steps)

        def body(carry):  # one forward-backward pass per step: the loss and gradient at the new point
            q, g, _, n = carry
            q = jax.tree_util.tree_map(lambda w, gw: w - rate * gw, q, g)
            value, g = value_and_grad(q, a)
            return q, g, value, n + 1

        q, _, value, n = jax.lax.while_loop(cond, body, (p, g0, start, jnp.asarray(0)))
        return q, n, value <= goal, start, value

    a = args if args is not None else jnp.zeros((b,))
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    q, n, ok, start, value = jax.jit(jax.vmap(one))(params, a, jnp.asarray(lr, dtype=dtype))
    return {"params": q, "steps": np.asarray(n), "reached": np.asarray(ok), "initial_loss": np.asarray(start), "final_loss": np.asarray(value)}


def kernel_trajectory(f: Callable, params_list: Sequence[Any], x: Any) -> np.ndarray:
    """Flattened kernels at a list of parameter snapshots (e.g. ``History.params``).

    Returns:
        ``(R, N*C, N*C)``.
    """
    if not isinstance(params_list, (list, tuple)):
        raise TypeError(f"params_list must be a list of parameter pytrees; got {_checks.describe(params_list)}")
    if len(params_list) == 0:
        raise ValueError("params_list must hold at least one parameter snapshot; got an empty list")
    return np.stack([flat_kernel(f, jax.tree_util.tree_map(jnp.asarray, p), x) for p in params_list])


def train_with_kernels(
    f: Callable,
    loss_fn: Callable[[Any], jnp.ndarray],
    params: Any,
    optimizer: Any,
    steps: int,
    x: Any,
    *,
    record_every: int | None = None,
    record_at: Sequence[int] | None = None,
    metrics: dict | None = None,
):
    """Train with ``helpers.train.train`` (optax) and record the flattened eNTK on ``x`` at every snapshot.

    Returns:
        ``(final_params, History, kernels (R, N*C, N*C))`` with ``R = len(History.steps)``.
    """
    _model_batch(f, params, x)
    final, history = _train.train(loss_fn, params, optimizer, steps, record_every=record_every, record_at=record_at, metrics=metrics)
    return final, history, kernel_trajectory(f, history.params, x)


# ----------------------------------------------------------------------------------------
# output curvature and residual dynamics
# ----------------------------------------------------------------------------------------


def softmax_output_hessian(logits: Any) -> np.ndarray:
    """``H_z`` of the summed cross-entropy ``sum_n -log softmax(z_n)[y_n]`` w.r.t. the logits.

    Each example contributes the block ``diag(p_n) - p_n p_n^T`` (seed 000 §3); the blocks sit
    on the diagonal of an ``(N*C, N*C)`` matrix ordered like the flattened kernel. For a loss
    averaged over the N examples divide by N.

    Args:
        logits: ``(N, C)``.

    Returns:
        ``(N*C, N*C)``.
    """
    z = _checks.array(logits, "logits", ndim=2, kind="real").astype(np.float64)
    p = scipy.special.softmax(z, axis=1)
    blocks = [np.diag(pn) - np.outer(pn, pn) for pn in p]
    return scipy.linalg.block_diag(*blocks)


def residual_dynamics(kernel: Any, output_hessian: Any, residual_0: Any, times: Any, *, lr: float = 1.0, discrete: bool = False) -> np.ndarray:
    """Linearised residual dynamics ``r(t) = exp(-lr H_z Theta t) r_0`` (seed 000 §3).

    From ``z' = -Theta r`` and ``r' = H_z z'``. With ``discrete=True`` the gradient-descent
    version ``r_t = (I - lr H_z Theta)^t r_0`` (integer ``t``).

    Args:
        kernel: ``(D, D)`` flattened eNTK; output_hessian: ``(D, D)``; residual_0: ``(D,)``.
        times: ``(T,)``.

    Returns:
        ``(T, D)``.
    """
    K = _checks.square(kernel, "kernel").astype(np.float64)
    H = _checks.square(output_hessian, "output_hessian").astype(np.float64)
    if H.shape != K.shape:
        raise ValueError(f"output_hessian must have the kernel's shape {K.shape}; got {H.shape}")
    r0 = _checks.array(residual_0, "residual_0", kind="real").astype(np.float64).reshape(-1)
    if r0.size != K.shape[0]:
        raise ValueError(f"residual_0 must have D = {K.shape[0]} entries; got {r0.size}")
    t = _checks.array(times, "times", ndim=(0, 1), kind="real").astype(np.float64).reshape(-1)
    lr = _checks.real(lr, "lr")
    _checks.boolean(discrete, "discrete")
    A = lr * H @ K
    if discrete:
        if np.any(t < 0) or np.any(t != np.round(t)):
            raise ValueError(f"times must be non-negative integers (steps) when discrete=True; got {t}")
        step = np.eye(K.shape[0]) - A
        return np.stack([np.linalg.matrix_power(step, int(s)) @ r0 for s in t])
    return np.stack([scipy.linalg.expm(-s * A) @ r0 for s in t])
