"""Curvature of the loss: the Gauss-Newton split of the Hessian and the three matrices H, Theta, C.

For a model ``f(params, x) -> (N, C)`` (outputs ``z``), targets ``y`` and a per-example loss
``ell(z_n, y_n)``, the training loss is ``L = w * sum_n ell(z_n, y_n)`` with ``w = 1/N``
(``reduction="mean"``) or ``w = 1`` (``reduction="sum"``). Writing ``J = dz/dtheta``
(``(N*C, P)``), the residual ``r = grad_z L`` and the output Hessian ``H_z = grad_z^2 L``
(block diagonal, one ``(C, C)`` block per example), the chain rule gives (seed 000 §2)

    grad_theta^2 L  =  J^T H_z J  +  sum_a r_a  d^2 z_a / dtheta dtheta
                    =  Gauss-Newton term  +  residual term  (r . T).

Losses (per example, ``p = softmax(z)``):

* ``"mse"``: ``ell = 0.5 * ||z - y||^2``; residual ``w (z - y)``; output Hessian ``w I``.
* ``"cross_entropy"``: ``ell = -sum_c y_c log p_c`` with ``y`` integer labels ``(N,)`` or
  probability rows ``(N, C)``; residual ``w (p - y)``; output Hessian ``w (diag p - p p^T)``.

The third matrix is the gradient covariance (seed 001 §1): with per-example gradients
``g_n = grad_theta ell_n`` (``(N, P)``),

    C = (1/N) sum_n g_n g_n^T - g_bar g_bar^T,

and a minibatch of ``B`` examples drawn without replacement has gradient covariance
``(N - B) / (B (N - 1)) * C``.

Everything comes dense (``(P, P)``, for small models) and as matrix-free
``scipy.sparse.linalg.LinearOperator`` products built from ``jax.jvp``/``jax.vjp`` (Hessian-vector,
Gauss-Newton-vector, covariance-vector), usable with ``helpers.ntk.top_eigenpairs``.
Parameters are flattened in the order of ``jax.flatten_util.ravel_pytree`` (the order of
``helpers.ntk.jacobian``).

Every public function checks its arguments (``helpers._checks``) and raises ``TypeError`` or
``ValueError`` naming the argument. The per-example routes (``gauss_newton``,
``per_example_gradients``, ``gradient_covariance_operator`` ...) refuse models whose outputs
couple the examples of a batch (batch norm, centring by the batch mean), detected on the first
three examples; the full-batch routes (``loss_hessian``, ``hessian_operator``,
``gauss_newton_operator``) accept them.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.linalg import subspace_angles
from scipy.sparse.linalg import LinearOperator

from . import _checks, _tracing
from .ntk import entk, flatten

__all__ = [
    "LOSSES",
    "REDUCTIONS",
    "pointwise_loss",
    "loss_value",
    "make_loss",
    "residual",
    "output_hessian",
    "loss_hessian",
    "gauss_newton",
    "residual_term",
    "gauss_newton_split",
    "output_space_gauss_newton",
    "per_example_gradients",
    "gradient_second_moment",
    "gradient_covariance",
    "minibatch_factor",
    "loss_gradient_kernel",
    "hessian_operator",
    "gauss_newton_operator",
    "residual_term_operator",
    "gradient_covariance_operator",
    "subspace_overlap",
]

LOSSES = ("mse", "cross_entropy")
REDUCTIONS = ("mean", "sum")


# ----------------------------------------------------------------------------------------
# validation (helpers._checks: every message names the argument, what it got and what it needs)
# ----------------------------------------------------------------------------------------


def _check_options(loss: Any, reduction: Any) -> None:
    _checks.choice(loss, "loss", LOSSES)
    _checks.choice(reduction, "reduction", REDUCTIONS)


def _check_batch(x: Any, name: str = "x") -> jnp.ndarray:
    """A non-empty, finite batch ``(N, ...)``; integer inputs (token ids) keep their dtype."""
    arr = _checks.array(x, name, kind="any")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array (N, ...); got dtype {arr.dtype}")
    if arr.ndim < 1:
        raise ValueError(f"{name} must have a leading batch axis, shape (N, ...); got shape {arr.shape}")
    return jnp.asarray(x) if hasattr(x, "dtype") else jnp.asarray(arr)


def _prepare_targets(targets: Any, n: int, c: int | None, loss: str, dtype) -> np.ndarray | None:
    """Targets as an ``(N, C)`` float array; with ``c=None`` (C not known yet) only checked."""
    t = _checks.array(targets, "targets", kind="any")
    if t.dtype.kind not in "fiub":
        raise TypeError(f"targets must be a numeric array; got dtype {t.dtype}")
    if t.ndim == 0 or t.shape[0] != n:
        raise ValueError(
            f"targets must have one row per example: the batch has N = {n} examples but targets has shape {t.shape}"
        )
    if loss == "cross_entropy" and t.ndim == 1:
        if t.dtype.kind not in "iu":
            raise TypeError(f"targets of shape (N,) are cross-entropy labels and must be integers; got dtype {t.dtype}")
        if t.min() < 0 or (c is not None and t.max() >= c):
            upper = "C" if c is None else str(c)
            raise ValueError(f"targets (class labels) must lie in [0, {upper}); got values in [{t.min()}, {t.max()}]")
        return None if c is None else np.eye(c, dtype=dtype)[t]
    if t.dtype.kind not in "fiu":
        raise TypeError(f"targets must be a real array; got dtype {t.dtype}")
    if t.ndim != 2 or (c is not None and t.shape[1] != c):
        need = f"(N, C) = ({n}, {'C' if c is None else c})" + (" or integer labels (N,)" if loss == "cross_entropy" else "")
        raise ValueError(f"targets for loss {loss!r} must have shape {need}; got {t.shape}")
    if loss == "cross_entropy" and (t.min() < 0 or np.abs(t.sum(axis=1) - 1).max() > 1e-6):
        raise ValueError("targets of shape (N, C) for cross-entropy must be probability rows (>= 0, summing to 1)")
    return None if c is None else np.asarray(t, dtype=dtype)


def _model_output(f: Callable, params: Any, x: jnp.ndarray):
    """Shape and dtype of ``f(params, x)``, or a ValueError naming ``params`` and ``x`` if the call fails."""
    try:
        return jax.eval_shape(f, params, x)
    except Exception as err:  # noqa: BLE001 - re-raised with the arguments named, never swallowed
        raise ValueError(
            f"f(params, x) failed for x of shape {tuple(x.shape)}: params and x must fit the model f "
            f"(a params pytree with the model's structure and shapes); the call raised "
            f"{type(err).__name__}: {err}"
        ) from err


def _check_per_example(f: Callable, params: Any, x: jnp.ndarray, out_dtype) -> None:
    """Refuse models whose outputs couple the examples of a batch (batch norm, batch-mean centring).

    Per-example Jacobians and gradients (``gauss_newton``, ``per_example_gradients`` ...) assume
    that row ``n`` of ``f(params, x)`` depends on ``x[n]`` alone: the probe of
    ``helpers._tracing.check_independent`` (shared with ``helpers.ntk``) tests it.
    """
    traced = _tracing.trace_model(f, params, x)
    _tracing.check_independent(
        traced,
        f,
        params,
        x,
        advice=(
            "Per-example Jacobians and gradients are undefined for it. Use the full-batch routes "
            "instead: loss_hessian, hessian_operator, gauss_newton_operator"
        ),
    )


def _problem(f, params, x, targets, loss, reduction, *, per_example: bool = False):
    """Validate a (model, batch, targets, loss) problem; return ``(x, y (N, C), n, c, dtype)``."""
    _check_options(loss, reduction)
    _checks.function(f, "f")
    _checks.params_tree(params, "params")
    x = _check_batch(x)
    out = _model_output(f, params, x)
    n = int(x.shape[0])
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != n:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"f(params, x) must return outputs of shape (N, C) = ({n}, C); got {got}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"f(params, x) must return floating-point outputs; got dtype {out.dtype}")
    c = int(out.shape[1])
    if c == 0:
        raise ValueError(f"f(params, x) must return at least one output per example; got shape {tuple(out.shape)}")
    dtype = jnp.result_type(out.dtype, *jax.tree_util.tree_leaves(params))
    y = jnp.asarray(_prepare_targets(targets, n, c, loss, dtype))
    if per_example:
        _check_per_example(f, params, x, np.dtype(out.dtype))
    return x, y, n, c, dtype


def _check_outputs(outputs: Any, targets: Any, loss: str, reduction: str):
    _check_options(loss, reduction)
    z = _checks.array(outputs, "outputs", ndim=2, kind="real")
    dtype = z.dtype
    y = _prepare_targets(targets, z.shape[0], z.shape[1], loss, dtype)
    return jnp.asarray(z, dtype=dtype), jnp.asarray(y)


def _jacobian_flat(f: Callable, params: Any, x: jnp.ndarray) -> jnp.ndarray:
    """Per-example Jacobians ``(N, C, P)``, parameters in ``ravel_pytree`` order (reverse mode, vmapped)."""

    def single(p, xi):
        return f(p, xi[None])[0]

    jac = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(params, x)
    n = x.shape[0]
    parts = [leaf.reshape(n, leaf.shape[1], -1) for leaf in jax.tree_util.tree_leaves(jac)]
    return jnp.concatenate(parts, axis=-1)


# ----------------------------------------------------------------------------------------
# the loss as a function of the outputs: value, residual, output Hessian (closed forms)
# ----------------------------------------------------------------------------------------


def _pointwise(z, y, loss):
    if loss == "mse":
        return 0.5 * jnp.sum((z - y) ** 2, axis=-1)
    return -jnp.sum(y * jax.nn.log_softmax(z, axis=-1), axis=-1)


def _weight(n: int, reduction: str) -> float:
    return 1.0 / n if reduction == "mean" else 1.0


def _residual(z, y, loss, w):
    if loss == "mse":
        return w * (z - y)
    return w * (jax.nn.softmax(z, axis=-1) - y)


def _output_hessian(z, loss, w):
    n, c = z.shape
    if loss == "mse":
        return w * jnp.broadcast_to(jnp.eye(c, dtype=z.dtype), (n, c, c))
    p = jax.nn.softmax(z, axis=-1)
    return w * (jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :])


def pointwise_loss(outputs: Any, targets: Any, *, loss: str = "mse") -> np.ndarray:
    """Per-example losses ``ell(z_n, y_n)``.

    Args:
        outputs: ``(N, C)`` model outputs (logits for cross-entropy).
        targets: ``(N, C)``; for cross-entropy also integer labels ``(N,)``.
        loss: ``"mse"`` or ``"cross_entropy"``.

    Returns:
        ``(N,)``.
    """
    z, y = _check_outputs(outputs, targets, loss, "mean")
    return np.asarray(_pointwise(z, y, loss))


def residual(outputs: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> np.ndarray:
    """The residual ``r = grad_z L`` in closed form (seed 000 §0).

    Returns:
        ``(N, C)``: ``w (z - y)`` for MSE, ``w (softmax(z) - y)`` for cross-entropy, with
        ``w = 1/N`` (mean) or 1 (sum).
    """
    z, y = _check_outputs(outputs, targets, loss, reduction)
    return np.asarray(_residual(z, y, loss, _weight(z.shape[0], reduction)))


def output_hessian(outputs: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> np.ndarray:
    """The output Hessian ``H_z = grad_z^2 L`` in closed form, one block per example.

    Returns:
        ``(N, C, C)``: ``w I`` for MSE, ``w (diag p - p p^T)`` with ``p = softmax(z)`` for
        cross-entropy (seed 000 §3 caveat). ``H_z`` is block diagonal across examples.
    """
    z, _ = _check_outputs(outputs, targets, loss, reduction)
    return np.asarray(_output_hessian(z, loss, _weight(z.shape[0], reduction)))


def _loss_flat(flat, unravel, f, x, y, loss, w):
    return w * jnp.sum(_pointwise(f(unravel(flat), x), y, loss))


def loss_value(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> float:
    """The training loss ``L = w sum_n ell(f(params, x_n), y_n)`` (a float)."""
    x, y, n, _, _ = _problem(f, params, x, targets, loss, reduction)
    return float(_loss_jit(f, params, x, y, loss, _weight(n, reduction)))


def make_loss(f: Callable, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> Callable[[Any], jnp.ndarray]:
    """The training loss as a pure, jittable function of the parameters, for ``helpers.train``.

    Args:
        f: model ``f(params, x) -> (N, C)``; x: ``(N, ...)``; targets: ``(N, C)`` (or integer
            labels ``(N,)`` for cross-entropy).

    Returns:
        ``params -> L(params)`` (a scalar ``jnp`` array), ``L = w sum_n ell(f(params, x)_n, y_n)``.
    """
    _check_options(loss, reduction)
    _checks.function(f, "f")
    x = _check_batch(x)
    n = int(x.shape[0])
    _prepare_targets(targets, n, None, loss, None)  # everything that does not need C
    targets = np.asarray(targets)
    w = _weight(n, reduction)

    def loss_fn(params):
        z = f(params, x)  # the class count C is known only once the model has run
        if z.ndim != 2 or z.shape[0] != n:
            raise ValueError(f"f(params, x) must return outputs of shape (N, C) = ({n}, C); got {z.shape}")
        y = jnp.asarray(_prepare_targets(targets, n, z.shape[1], loss, z.dtype))
        return w * jnp.sum(_pointwise(z, y, loss))

    return loss_fn


@partial(jax.jit, static_argnames=("f", "loss"))
def _loss_jit(f, params, x, y, loss, w):
    return w * jnp.sum(_pointwise(f(params, x), y, loss))


# ----------------------------------------------------------------------------------------
# dense curvature matrices (P x P)
# ----------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("f", "loss"))
def _hessian_impl(f, params, x, y, loss, w):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(_loss_flat)(flat, unravel, f, x, y, loss, w)


@partial(jax.jit, static_argnames=("f", "loss"))
def _gauss_newton_impl(f, params, x, y, loss, w):
    jac = _jacobian_flat(f, params, x)  # (N, C, P)
    hz = _output_hessian(f(params, x), loss, w)  # (N, C, C)
    return jnp.einsum("nap,nab,nbq->pq", jac, hz, jac)


@partial(jax.jit, static_argnames=("f", "loss"))
def _residual_term_impl(f, params, x, y, loss, w):
    flat, unravel = ravel_pytree(params)
    r = jax.lax.stop_gradient(_residual(f(params, x), y, loss, w))

    def contracted(theta):  # sum_a r_a z_a(theta), with r held fixed
        return jnp.sum(r * f(unravel(theta), x))

    return jax.hessian(contracted)(flat)


def loss_hessian(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> np.ndarray:
    """The parameter Hessian ``H = grad_theta^2 L`` by automatic differentiation (``jax.hessian``).

    Args:
        f: model ``f(params, x) -> (N, C)``; params: pytree (P numbers); x: ``(N, ...)``;
        targets: ``(N, C)`` (or integer labels ``(N,)`` for cross-entropy).

    Returns:
        ``(P, P)``. Forms P^2 numbers: for large models use ``hessian_operator``.
    """
    x, y, n, _, _ = _problem(f, params, x, targets, loss, reduction)
    return np.asarray(_hessian_impl(f, params, x, y, loss, _weight(n, reduction)))


def gauss_newton(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> np.ndarray:
    """The Gauss-Newton term ``J^T H_z J`` (seed 000 §2), positive semi-definite.

    Returns:
        ``(P, P)``, ``sum_n J_n^T H_n J_n`` with ``J_n`` the ``(C, P)`` Jacobian of example n
        and ``H_n`` its block of the output Hessian.
    """
    x, y, n, _, _ = _problem(f, params, x, targets, loss, reduction, per_example=True)
    return np.asarray(_gauss_newton_impl(f, params, x, y, loss, _weight(n, reduction)))


def residual_term(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> np.ndarray:
    """The residual term ``r . T = sum_a r_a d^2 z_a / dtheta_i dtheta_j`` (seed 000 §2).

    Computed as the Hessian of ``theta -> sum_a r_a z_a(theta)`` with the residual ``r`` held
    fixed at its current value, so the map curvature ``T`` (``(N*C, P, P)``) is never formed.

    Returns:
        ``(P, P)``, symmetric and in general indefinite.
    """
    x, y, n, _, _ = _problem(f, params, x, targets, loss, reduction)
    return np.asarray(_residual_term_impl(f, params, x, y, loss, _weight(n, reduction)))


def gauss_newton_split(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> dict[str, np.ndarray]:
    """All three pieces of ``H = J^T H_z J + r . T``, each ``(P, P)``.

    Returns:
        dict with ``"hessian"`` (``jax.hessian`` of the loss), ``"gauss_newton"`` and
        ``"residual_term"``; the split holds when ``hessian == gauss_newton + residual_term``.
    """
    x, y, n, _, _ = _problem(f, params, x, targets, loss, reduction, per_example=True)
    w = _weight(n, reduction)
    return {
        "hessian": np.asarray(_hessian_impl(f, params, x, y, loss, w)),
        "gauss_newton": np.asarray(_gauss_newton_impl(f, params, x, y, loss, w)),
        "residual_term": np.asarray(_residual_term_impl(f, params, x, y, loss, w)),
    }


def _psd_sqrt_blocks(blocks: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(blocks)
    vals = np.clip(vals, 0.0, None)
    return np.einsum("nij,nj,nkj->nik", vecs, np.sqrt(vals), vecs)


def output_space_gauss_newton(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> np.ndarray:
    """The output-space operator with the nonzero spectrum of ``J^T H_z J``: ``H_z^{1/2} Theta H_z^{1/2}``.

    ``J^T H_z J = (H_z^{1/2} J)^T (H_z^{1/2} J)`` shares its nonzero eigenvalues with
    ``(H_z^{1/2} J)(H_z^{1/2} J)^T = H_z^{1/2} Theta H_z^{1/2}`` (and with the non-symmetric
    ``H_z Theta``). For MSE, ``H_z = w I`` and this is ``w Theta``.

    Returns:
        ``(N*C, N*C)``, rows ``n*C + i`` as in ``helpers.ntk.flatten``.
    """
    x, y, n, c, _ = _problem(f, params, x, targets, loss, reduction, per_example=True)
    theta = flatten(entk(f, params, x))
    hz = np.asarray(_output_hessian(jnp.asarray(f(params, x)), loss, _weight(n, reduction)))
    root = _psd_sqrt_blocks(hz)
    big = np.zeros((n * c, n * c), dtype=theta.dtype)
    for i in range(n):
        big[i * c : (i + 1) * c, i * c : (i + 1) * c] = root[i]
    return big @ theta @ big


# ----------------------------------------------------------------------------------------
# per-example gradients, the gradient covariance C and the loss-gradient kernel G
# ----------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("f", "loss"))
def _per_example_impl(f, params, x, y, loss):
    flat, unravel = ravel_pytree(params)

    def one(xi, yi):
        return jax.grad(lambda t: _pointwise(f(unravel(t), xi[None]), yi[None], loss)[0])(flat)

    return jax.vmap(one)(x, y)


def per_example_gradients(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse") -> np.ndarray:
    """Gradients of each example's own loss, ``g_n = grad_theta ell_n = J_n^T (grad_z ell_n)``.

    Returns:
        ``(N, P)``. Their mean is ``grad L`` for ``reduction="mean"``.
    """
    x, y, _, _, _ = _problem(f, params, x, targets, loss, "mean", per_example=True)
    return np.asarray(_per_example_impl(f, params, x, y, loss))


def _check_gradients(per_example: Any) -> np.ndarray:
    g = _checks.array(per_example, "per_example", ndim=2, kind="real")
    if g.shape[0] < 2:
        raise ValueError(f"per_example needs at least 2 examples (rows) for a covariance; got shape {g.shape}")
    return g


def minibatch_factor(num_examples: int, batch_size: int | None, *, replacement: bool = False) -> float:
    """The factor turning the per-example covariance into the minibatch-gradient covariance.

    The mean gradient of a uniformly drawn batch of ``B`` of ``N`` examples has covariance
    ``factor * C``: ``1/B`` with replacement, ``(N - B) / (B (N - 1))`` without (the
    finite-population correction). ``batch_size=None`` means ``B = 1`` (factor 1).
    """
    num_examples = _checks.integer(num_examples, "num_examples", low=1)
    replacement = _checks.boolean(replacement, "replacement")
    if batch_size is None:
        return 1.0
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an integer or None; got {_checks.describe(batch_size)}")
    if replacement:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        return 1.0 / batch_size
    if num_examples < 2:
        raise ValueError(f"num_examples must be at least 2 without replacement; got {num_examples}")
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must lie in [1, N = {num_examples}] without replacement; got {batch_size}")
    return (num_examples - batch_size) / (batch_size * (num_examples - 1))


def gradient_second_moment(per_example: Any) -> np.ndarray:
    """``(1/N) sum_n g_n g_n^T`` of per-example gradients ``(N, P)`` -> ``(P, P)``."""
    g = _check_gradients(per_example)
    return g.T @ g / g.shape[0]


def gradient_covariance(per_example: Any, *, batch_size: int | None = None, replacement: bool = False) -> np.ndarray:
    """The gradient covariance ``C`` (seed 001 §1): second moment minus the mean outer product.

    Args:
        per_example: ``(N, P)`` per-example gradients (``per_example_gradients``).
        batch_size: ``None`` for the per-example covariance
            ``C = (1/N) sum_n g_n g_n^T - g_bar g_bar^T``; ``B`` for the covariance of the mean
            gradient of a batch of ``B`` drawn uniformly (``minibatch_factor`` times ``C``).
        replacement: whether batches are drawn with replacement.

    Returns:
        ``(P, P)``, positive semi-definite of rank at most ``N - 1``.
    """
    g = _check_gradients(per_example)
    mean = g.mean(axis=0)
    cov = g.T @ g / g.shape[0] - np.outer(mean, mean)
    return minibatch_factor(g.shape[0], batch_size, replacement=replacement) * cov


def loss_gradient_kernel(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse") -> np.ndarray:
    """The loss-gradient kernel ``G_nm = grad ell_n . grad ell_m`` (seed 001 §2), from the eNTK.

    Chain rule through the outputs: ``G_nm = sum_ab rho_na Theta_nm,ab rho_mb`` with
    ``rho_n = grad_z ell_n`` the per-example residual: the output kernel ``Theta`` weighted by the
    residuals on both sides.

    Returns:
        ``(N, N)``; equals ``g g^T`` for ``g = per_example_gradients(...)``.
    """
    x, y, _, _, _ = _problem(f, params, x, targets, loss, "mean", per_example=True)
    theta = entk(f, params, x)  # (N, N, C, C)
    rho = np.asarray(_residual(jnp.asarray(f(params, x)), y, loss, 1.0))
    return np.einsum("na,nmab,mb->nm", rho, theta, rho)


# ----------------------------------------------------------------------------------------
# matrix-free operators (P x P)
# ----------------------------------------------------------------------------------------


def _operator(mv: Callable, dim: int, dtype, tangent_dtype) -> LinearOperator:
    """A ``LinearOperator`` of dtype ``dtype`` (that of the loss) from ``mv`` acting on tangents.

    Vectors enter ``mv`` in the parameters' dtype ``tangent_dtype`` (a tangent must match its
    primal: float32 parameters with float64 inputs would otherwise fail at the first product)
    and leave it in ``dtype``.
    """
    inner = mv
    mv = jax.jit(lambda v: inner(v.astype(tangent_dtype)).astype(dtype))
    batched = jax.jit(jax.vmap(mv, in_axes=1, out_axes=1))

    def matvec(v):
        return np.asarray(mv(jnp.asarray(np.asarray(v, dtype=dtype).reshape(dim))))

    def matmat(V):
        return np.asarray(batched(jnp.asarray(np.asarray(V, dtype=dtype).reshape(dim, -1))))

    return LinearOperator((dim, dim), matvec=matvec, rmatvec=matvec, matmat=matmat, dtype=dtype)


def hessian_operator(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> LinearOperator:
    """``v -> H v`` matrix-free (forward-over-reverse: ``jax.jvp`` of ``jax.grad``), ``(P, P)``."""
    x, y, n, _, dtype = _problem(f, params, x, targets, loss, reduction)
    flat, unravel = ravel_pytree(params)
    w = _weight(n, reduction)
    grad = jax.grad(lambda t: _loss_flat(t, unravel, f, x, y, loss, w))
    return _operator(lambda v: jax.jvp(grad, (flat,), (v,))[1], flat.size, np.dtype(dtype), flat.dtype)


def gauss_newton_operator(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> LinearOperator:
    """``v -> J^T H_z J v`` matrix-free: one ``jax.jvp``, the block output Hessian, one ``jax.vjp``."""
    x, y, n, _, dtype = _problem(f, params, x, targets, loss, reduction)
    flat, unravel = ravel_pytree(params)
    model = lambda t: f(unravel(t), x)
    outputs, pullback = jax.vjp(model, flat)
    hz = _output_hessian(outputs, loss, _weight(n, reduction))

    def mv(v):
        jv = jax.jvp(model, (flat,), (v,))[1]  # (N, C)
        return pullback(jnp.einsum("nab,nb->na", hz, jv))[0]

    return _operator(mv, flat.size, np.dtype(dtype), flat.dtype)


def residual_term_operator(f: Callable, params: Any, x: Any, targets: Any, *, loss: str = "mse", reduction: str = "mean") -> LinearOperator:
    """``v -> (r . T) v`` matrix-free: Hessian-vector product of ``theta -> sum_a r_a z_a(theta)``."""
    x, y, n, _, dtype = _problem(f, params, x, targets, loss, reduction)
    flat, unravel = ravel_pytree(params)
    r = _residual(f(params, x), y, loss, _weight(n, reduction))
    grad = jax.grad(lambda t: jnp.sum(r * f(unravel(t), x)))
    return _operator(lambda v: jax.jvp(grad, (flat,), (v,))[1], flat.size, np.dtype(dtype), flat.dtype)


def gradient_covariance_operator(
    f: Callable,
    params: Any,
    x: Any,
    targets: Any,
    *,
    loss: str = "mse",
    batch_size: int | None = None,
    replacement: bool = False,
) -> LinearOperator:
    """``v -> C v`` matrix-free, never forming the ``(N, P)`` per-example gradients.

    The per-example gradients are the rows of the Jacobian of ``theta -> (ell_1, ..., ell_N)``,
    so ``C v = (1/N) g^T (g v) - g_bar (g_bar . v)`` is one ``jax.jvp`` and one ``jax.vjp``
    (times ``minibatch_factor`` for ``batch_size``).
    """
    x, y, n, _, dtype = _problem(f, params, x, targets, loss, "mean", per_example=True)
    if n < 2:
        raise ValueError(f"x needs at least 2 examples for a covariance; got shape {tuple(x.shape)}")
    factor = minibatch_factor(n, batch_size, replacement=replacement)
    flat, unravel = ravel_pytree(params)
    losses = lambda t: _pointwise(f(unravel(t), x), y, loss)
    _, pullback = jax.vjp(losses, flat)
    loss_dtype = jax.eval_shape(losses, flat).dtype
    mean = pullback(jnp.full((n,), 1.0 / n, dtype=loss_dtype))[0]

    def mv(v):
        gv = jax.jvp(losses, (flat,), (v,))[1]  # (N,)
        return factor * (pullback(gv / n)[0] - mean * jnp.dot(mean, v))

    return _operator(mv, flat.size, np.dtype(dtype), flat.dtype)


# ----------------------------------------------------------------------------------------
# comparing eigenspaces
# ----------------------------------------------------------------------------------------


def subspace_overlap(U: Any, V: Any) -> float:
    """Overlap of the column spans of ``U (D, k1)`` and ``V (D, k2)``, in ``[0, 1]``.

    The mean squared cosine of the ``min(k1, k2)`` principal angles (Bjorck & Golub 1973;
    ``scipy.linalg.subspace_angles``): 1 when one span contains the other, 0 when they are
    orthogonal, about ``max(k1, k2) / D`` for random subspaces.
    """
    U = _checks.array(U, "U", ndim=(1, 2), kind="real")
    V = _checks.array(V, "V", ndim=(1, 2), kind="real")
    U = U[:, None] if U.ndim == 1 else U
    V = V[:, None] if V.ndim == 1 else V
    if U.shape[0] != V.shape[0]:
        raise ValueError(f"V must have the same number of rows D as U ({U.shape[0]}), i.e. (D, k) arrays with the same D; got shapes {U.shape} and {V.shape}")
    for name, A in (("U", U), ("V", V)):
        if A.shape[1] > A.shape[0]:
            raise ValueError(f"{name} must have at most D columns to span a subspace of R^D; got shape {A.shape}")
        s_vals = np.linalg.svd(A, compute_uv=False)
        if s_vals.min() <= A.shape[0] * np.finfo(np.float64).eps * s_vals.max():
            raise ValueError(
                f"{name} must have linearly independent columns (a basis of its span); got shape {A.shape} "
                f"with numerical rank {int(np.sum(s_vals > A.shape[0] * np.finfo(np.float64).eps * s_vals.max()))}"
            )
    angles = subspace_angles(U, V)
    return float(np.mean(np.cos(angles) ** 2))
