"""Toy Models of Superposition (TMS) and the spectra of their flattened eNTK (seed 002 §3).

The model (seed 002 eq. 4; Elhage et al. 2022) is a tied-weight autoencoder

    f(x) = ReLU(W^T W x + b),      W: (m, n),  b: (n,),  m <= n hidden dimensions,

trained on a fixed set of N sparse inputs (each of the n features is 0 with probability S,
else U[0, 1]; every point then normalised to unit L2 norm, the fixed-dataset variant of
Henighan et al. 2023) with the importance-weighted squared error (seed 002 eq. 5)

    L = mean over points and features of  I_i (x_i - f_i(x))^2,    I_i = decay^i.

The analysis tools work on the *flattened* eNTK ``(N*n, N*n)`` (row ``a*n + i`` for point a,
output i, as in ``helpers.ntk.flatten``). Its rank is at most P = m*n + n, so its nonzero
spectrum is that of the P x P *dual* ``J^T D J`` (J the ``(N*n, P)`` Jacobian, D a diagonal
of output weights): if ``J^T D J v = lambda v`` then ``u = D^(1/2) J v / sqrt(lambda)`` is a
unit eigenvector of ``D^(1/2) J J^T D^(1/2)`` with the same eigenvalue. ``D = diag(I_i^beta)``
is the paper's importance rescaling (each Jacobian row of output i multiplied by
``I_i^(beta/2)``). The dual is formed column by column with ``jax.jvp``/``jax.vjp``; the
``N*n`` square kernel never exists.

Parameters are a dict ``{"w": (m, n), "b": (n,)}``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
import scipy.sparse.linalg
from jax.flatten_util import ravel_pytree
from scipy.optimize import linear_sum_assignment

from . import _checks
from . import models as _models
from . import train as _train

__all__ = [
    "importance",
    "make_data",
    "init_params",
    "apply",
    "weighted_mse",
    "train_tms",
    "train_many",
    "represented",
    "closed_form_entk",
    "dual_kernel",
    "closed_form_dual",
    "flattened_eigenpairs",
    "feature_indicator",
    "project_out",
    "alignment",
    "alignment_scores",
    "feature_rayleigh",
    "block_top_eigenvalues",
]


# ----------------------------------------------------------------------------------------
# validation (helpers/_checks.py; shape checks only on traced values inside jit/vmap/jvp)
# ----------------------------------------------------------------------------------------


def _traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_params(params: Any, name: str = "params") -> tuple[int, int]:
    """Return ``(m, n)`` of a TMS parameter dict ``{"w": (m, n), "b": (n,)}``, or raise."""
    if not isinstance(params, dict) or set(params) != {"w", "b"}:
        got = f"a dict with keys {sorted(params)}" if isinstance(params, dict) else _checks.describe(params)
        raise TypeError(f"{name} must be a dict with keys 'w' (m, n) and 'b' (n,); got {got}")
    for leaf in ("w", "b"):
        value = params[leaf]
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise TypeError(f"{name}['{leaf}'] must be an array; got {_checks.describe(value)}")
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise TypeError(f"{name}['{leaf}'] must be a floating-point array (it is differentiated); got dtype {value.dtype}")
    w, b = params["w"], params["b"]
    if len(w.shape) != 2 or 0 in w.shape:
        raise ValueError(f"{name}['w'] must have shape (m, n) with m, n >= 1; got {tuple(w.shape)}")
    m, n = w.shape
    if tuple(b.shape) != (n,):
        raise ValueError(f"{name}['b'] must have shape (n,) = ({n},) to match {name}['w'] {tuple(w.shape)}; got {tuple(b.shape)}")
    for leaf in ("w", "b"):
        if not _traced(params[leaf]):
            _checks.array(params[leaf], f"{name}['{leaf}']", kind="float")
    return int(m), int(n)


def _check_x(x: Any, n: int, name: str = "x") -> jnp.ndarray:
    """An ``(N, n)`` floating-point batch with N >= 1 (finite unless traced)."""
    if _traced(x):
        if len(x.shape) != 2 or x.shape[1] != n or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (N, {n}) with N >= 1; got {tuple(x.shape)}")
        return x
    arr = _checks.array(x, name, ndim=2, kind="float")
    if arr.shape[1] != n:
        raise ValueError(f"{name} must have shape (N, {n}) (n = {n} features, from params['w']); got {arr.shape}")
    return jnp.asarray(x) if isinstance(x, jax.Array) else jnp.asarray(arr)


def _check_weights(weights: Any, c: int, name: str = "output_weights") -> np.ndarray | None:
    """``None`` or ``(c,)`` finite non-negative weights, one per output."""
    if weights is None:
        return None
    weights = _checks.array(weights, name, kind="real")
    if weights.shape != (c,):
        raise ValueError(f"{name} must have shape (C,) = ({c},), one weight per output; got {weights.shape}")
    if np.any(weights < 0):
        raise ValueError(f"{name} must be non-negative (they multiply the kernel rows); got minimum {weights.min():.3g}")
    return weights.astype(np.float64)


def _check_key(key: Any, name: str = "key") -> Any:
    return _checks.rng_key(key, name)


def _check_dtype(dtype: Any) -> Any:
    try:
        ok = jnp.issubdtype(dtype, jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(f"dtype must be a floating-point dtype (e.g. jnp.float32); got {dtype!r}")
    return dtype


# ----------------------------------------------------------------------------------------
# data, model, loss, training
# ----------------------------------------------------------------------------------------


def importance(n_features: int, decay: float = 0.8) -> np.ndarray:
    """Feature importances ``I_i = decay**i`` for ``i = 0..n-1`` (the most important first).

    Returns:
        ``(n_features,)`` float64.
    """
    n_features = _checks.integer(n_features, "n_features", low=1)
    decay = _checks.real(decay, "decay", low=0, low_open=True, high=1)
    return decay ** np.arange(n_features, dtype=np.float64)


def make_data(
    n_points: int,
    n_features: int,
    sparsity: float,
    *,
    key: jax.Array,
    normalize: bool = True,
    dtype=jnp.float32,
) -> jnp.ndarray:
    """A fixed TMS dataset: each entry is 0 with probability ``sparsity``, else U[0, 1].

    With ``normalize`` every point is rescaled to unit L2 norm (Henighan et al. 2023); a point
    whose entries all came out 0 (probability ``sparsity**n_features``) stays the zero vector.

    Args:
        n_points: N.
        n_features: n.
        sparsity: S in [0, 1).
        key: PRNG key (keyword-only).

    Returns:
        ``(N, n)`` inputs.
    """
    n_points = _checks.integer(n_points, "n_points", low=1)
    n_features = _checks.integer(n_features, "n_features", low=1)
    sparsity = _checks.real(sparsity, "sparsity (the probability that a feature is off)", low=0, high=1, high_open=True)
    key = _check_key(key)
    normalize = _checks.boolean(normalize, "normalize")
    dtype = _check_dtype(dtype)
    k_on, k_val = jax.random.split(key)
    on = _models.uniform(k_on, (n_points, n_features)) >= sparsity
    x = jnp.where(on, _models.uniform(k_val, (n_points, n_features), dtype=dtype), 0).astype(dtype)
    if normalize:
        norm = jnp.linalg.norm(x, axis=1, keepdims=True)
        x = x / jnp.where(norm > 0, norm, 1)
    return x


def init_params(n_features: int, n_hidden: int, *, key: jax.Array, dtype=jnp.float32) -> dict:
    """Xavier-normal ``W`` (std ``sqrt(2 / (m + n))``) and ``b = 0``.

    Args:
        n_features: n (inputs = outputs = features).
        n_hidden: m, with ``1 <= m <= n`` (the bottleneck of superposition).
        key: PRNG key (keyword-only).

    Returns:
        ``{"w": (m, n), "b": (n,)}``.
    """
    n_features = _checks.integer(n_features, "n_features", low=1)
    n_hidden = _checks.integer(n_hidden, "n_hidden", low=1)
    key = _check_key(key)
    dtype = _check_dtype(dtype)
    if n_hidden > n_features:
        raise ValueError(
            f"n_hidden (m = {n_hidden}) must not exceed n_features (n = {n_features}): TMS compresses "
            "n features into m <= n hidden dimensions"
        )
    std = np.sqrt(2.0 / (n_hidden + n_features))
    w = (std * _models.normal(key, (n_hidden, n_features), dtype)).astype(dtype)
    return {"w": w, "b": jnp.zeros((n_features,), dtype)}


def apply(params: dict, x: jnp.ndarray) -> jnp.ndarray:
    """``f(x) = ReLU(W^T W x + b)`` (seed 002 eq. 4) on a batch: ``x (N, n) -> (N, n)``.

    Works inside ``jax.jit``/``vmap``/``jvp`` (on traced values only shapes are checked).
    """
    m, n = _check_params(params)
    x = _check_x(x, n)
    w, b = params["w"], params["b"]
    return jax.nn.relu((x @ w.T) @ w + b)


def weighted_mse(params: dict, x: jnp.ndarray, weights: Any) -> jnp.ndarray:
    """Importance-weighted squared error (seed 002 eq. 5), mean over points and features.

    Args:
        params: ``{"w": (m, n), "b": (n,)}``.
        x: ``(N, n)``, also the target.
        weights: ``(n,)`` importances ``I_i``.

    Returns:
        scalar ``mean_{a, i} I_i (x_ai - f_i(x_a))^2``.
    """
    m, n = _check_params(params)
    x = _check_x(x, n)
    if _traced(weights):
        if tuple(weights.shape) != (n,):
            raise ValueError(f"weights must have shape (n,) = ({n},); got {tuple(weights.shape)}")
    else:
        weights = _check_weights(weights, n, "weights")
    return jnp.mean(jnp.asarray(weights, x.dtype) * (x - apply(params, x)) ** 2)


def train_tms(
    x: Any,
    n_hidden: int,
    *,
    key: jax.Array,
    weights: Any,
    steps: int = 5000,
    lr: float = 1e-3,
    record_every: int | None = None,
) -> tuple[dict, Any]:
    """Train a TMS model with full-batch Adam on ``weighted_mse``.

    Args:
        x: ``(N, n)`` the fixed dataset (inputs and targets).
        n_hidden: m.
        key: PRNG key for the initial weights (keyword-only).
        weights: ``(n,)`` importances.
        steps, lr: Adam steps and learning rate (paper: 5000 steps at 1e-3).
        record_every: snapshot interval passed to ``helpers.train.train``.

    Returns:
        ``(params, History)``.
    """
    x = jnp.asarray(_checks.array(x, "x", ndim=2, kind="float"))
    n = x.shape[1]
    weights = jnp.asarray(_check_weights(weights, n, "weights"), dtype=x.dtype)
    steps = _checks.integer(steps, "steps", low=1)
    lr = _checks.real(lr, "lr", low=0, low_open=True)
    params = init_params(n, n_hidden, key=key, dtype=x.dtype)
    return _train.train(lambda p: weighted_mse(p, x, weights), params, optax.adam(lr), steps, record_every=record_every)


def _fit_loss(params: dict, x: jnp.ndarray, weights: jnp.ndarray, gram_first: bool) -> jnp.ndarray:
    """``weighted_mse`` with a choice of contraction order (the same function, other rounding).

    ``(x W^T) W`` costs about ``5 N n m`` multiply-adds per step with its gradient,
    ``x (W^T W)`` about ``2 N n^2 + 2 m n^2``: the second is cheaper once ``m > 0.4 n``.
    """
    w, b = params["w"], params["b"]
    pre = x @ (w.T @ w) if gram_first else (x @ w.T) @ w
    return jnp.mean(weights * (x - jax.nn.relu(pre + b)) ** 2)


def _stacked_loss(params: dict, x: jnp.ndarray, weights: jnp.ndarray, gram_first: bool) -> jnp.ndarray:
    # sum over runs of each run's loss: its gradient is the stack of the per-run gradients
    return jnp.sum(jax.vmap(partial(_fit_loss, gram_first=gram_first), in_axes=(0, 0, None))(params, x, weights))


@partial(jax.jit, static_argnames=("lr", "gram_first"))
def _adam_segment(params, state, x, weights, n_steps, lr, gram_first):
    """``n_steps`` full-batch Adam steps of every run at once (``n_steps`` traced: one compile)."""
    opt = optax.adam(lr)

    def step(_, carry):
        p, s = carry
        grads = jax.grad(_stacked_loss)(p, x, weights, gram_first)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    return jax.lax.fori_loop(0, n_steps, step, (params, state))


_stacked_losses = jax.jit(jax.vmap(weighted_mse, in_axes=(0, 0, None)))


def train_many(x: Any, n_hidden: int, *, keys: Any, weights: Any, steps: int, lr: float = 1e-3, record_at: Any = ()) -> _train.History:
    """Train R TMS models at once (one per dataset and initial key), as ``train_tms`` does each.

    Adam acts on each number separately (its step count is shared), so one Adam on the stacked
    parameters of R runs, driven by the gradient of the summed losses, *is* R independent
    Adam runs; the step loop is one compiled ``jax.lax.fori_loop`` for all of them. The loss is
    ``weighted_mse``, evaluated as ``x (W^T W)`` when that order is cheaper (``m > 0.4 n``
    roughly), which changes only the rounding. Train in float32 for speed (about three times
    faster than float64 here) and cast the weights for a float64 analysis.

    Args:
        x: ``(R, N, n)`` one fixed dataset per run.
        n_hidden: m.
        keys: ``(R,)`` PRNG keys (``jax.random.split``) for the initial weights, one per run.
        weights: ``(n,)`` importances.
        steps: Adam steps; lr: learning rate.
        record_at: further steps (``0 < s < steps``) at which to keep a snapshot.

    Returns:
        ``helpers.train.History`` with ``steps`` the snapshot steps (0 and ``steps`` always),
        ``params`` one dict per snapshot with stacked leaves ``{"w": (R, m, n), "b": (R, n)}``
        and ``metrics["loss"]`` of shape ``(snapshots, R)``.
    """
    x = _checks.array(x, "x", ndim=3, kind="float")
    r, n_pts, n = x.shape
    n_hidden = _checks.integer(n_hidden, "n_hidden", low=1, high=n)
    if not hasattr(keys, "shape") or len(keys.shape) < 1 or keys.shape[0] != r:
        raise ValueError(f"keys must hold one PRNG key per run, shape ({r}, ...) from jax.random.split; got {_checks.describe(keys)}")
    for j in range(r):
        _checks.rng_key(keys[j], f"keys[{j}]")
    weights = _check_weights(weights, n, "weights")
    steps = _checks.integer(steps, "steps", low=1)
    lr = _checks.real(lr, "lr", low=0, low_open=True)
    if isinstance(record_at, (str, bytes)) or not np.iterable(record_at):
        raise TypeError(f"record_at must be a sequence of step counts; got {_checks.describe(record_at)}")
    extra = [_checks.integer(s, "record_at entries", low=1, high=steps) for s in record_at]
    points = np.array(sorted({0, steps, *extra}))
    x = jnp.asarray(x)
    w = jnp.asarray(weights, x.dtype)
    params = jax.vmap(lambda k: init_params(n, n_hidden, key=k, dtype=x.dtype))(keys)
    state = optax.adam(lr).init(params)
    gram_first = 2 * n_pts * n * n + 2 * n_hidden * n * n < 5 * n_pts * n * n_hidden
    history = _train.History(steps=points, metrics={"loss": []})
    done = 0
    for point in points:
        if point > done:
            params, state = _adam_segment(params, state, x, w, int(point - done), lr, gram_first)
            done = int(point)
        history.metrics["loss"].append(np.asarray(_stacked_losses(params, x, w)))
        history.params.append(jax.tree_util.tree_map(np.asarray, params))
    history.metrics["loss"] = np.stack(history.metrics["loss"])
    return history


def represented(params: dict, threshold: float = 0.75) -> np.ndarray:
    """Features the model reconstructs: ``(W^T W)_ii > threshold`` (seed 002 footnote 3).

    Returns:
        ``(n,)`` booleans.
    """
    _check_params(params)
    threshold = _checks.real(threshold, "threshold")
    w = np.asarray(params["w"])
    return np.einsum("ai,ai->i", w, w) > threshold


# ----------------------------------------------------------------------------------------
# the closed-form kernel (seed 002 App. B)
# ----------------------------------------------------------------------------------------


def closed_form_entk(params: dict, x1: Any, x2: Any = None, *, bias: bool = True) -> np.ndarray:
    """The TMS eNTK in closed form (seed 002 App. B eqs. 13-14).

    With ``A = W^T W``, ``h = W x`` and ``g_i(x) = 1[(A x + b)_i > 0]``,

        K_ij(x1, x2) = g_i(x1) g_j(x2) [ A_ij (x1 . x2) + (x1)_j (A x2)_i + (x2)_i (A x1)_j
                                         + delta_ij (h1 . h2) + delta_ij * bias ].

    Eq. (14) of the paper is the ``W`` part; ``bias=True`` adds the bias directions
    (``df_i / db_i' = g_i delta_ii'``), giving the kernel of all parameters.

    Args:
        params: ``{"w": (m, n), "b": (n,)}``.
        x1: ``(N1, n)``; x2: ``(N2, n)`` or ``None`` for ``x1``.

    Returns:
        ``(N1, N2, n, n)``, the layout of ``helpers.ntk.entk``.
    """
    m, n = _check_params(params)
    x1 = _check_x(x1, n, "x1")
    x2 = x1 if x2 is None else _check_x(x2, n, "x2")
    bias = _checks.boolean(bias, "bias")
    w, b = jnp.asarray(params["w"]), jnp.asarray(params["b"])
    a = w.T @ w
    g1 = ((x1 @ a + b) > 0).astype(x1.dtype)
    g2 = ((x2 @ a + b) > 0).astype(x2.dtype)
    ax1, ax2 = x1 @ a, x2 @ a  # (A x)_i (A symmetric)
    dots = x1 @ x2.T  # (N1, N2)
    hidden = (x1 @ w.T) @ (x2 @ w.T).T + (1.0 if bias else 0.0)  # h1 . h2 (+ 1)
    inner = (
        a[None, None] * dots[:, :, None, None]
        + x1[:, None, None, :] * ax2[None, :, :, None]
        + x2[None, :, :, None] * ax1[:, None, None, :]
        + jnp.eye(n, dtype=x1.dtype)[None, None] * hidden[:, :, None, None]
    )
    return np.asarray(g1[:, None, :, None] * g2[None, :, None, :] * inner)


# ----------------------------------------------------------------------------------------
# the dual P x P kernel and the flattened eigenpairs
# ----------------------------------------------------------------------------------------


def _check_model(f: Callable, params: Any, x: Any) -> jnp.ndarray:
    """Check ``f``, ``params`` and the batch ``x`` of a generic model; return ``x`` as an array."""
    _checks.function(f, "f", "f(params, x) -> (N, C)")
    _checks.params_tree(params, "params")
    arr = _checks.array(x, "x", kind="float")
    if arr.ndim < 1:
        raise ValueError(f"x must be a batch (N, ...) with N >= 1; got shape {arr.shape}")
    return jnp.asarray(x) if isinstance(x, jax.Array) else jnp.asarray(arr)


def _model_of_flat(f: Callable, params: Any, x: jnp.ndarray):
    flat, unravel = ravel_pytree(params)
    out = jax.eval_shape(f, params, x)
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"f(params, x) must return (N, C) = ({x.shape[0]}, C); got {got}")
    return flat, (lambda theta: f(unravel(theta), x)), int(out.shape[1])


def dual_kernel(f: Callable, params: Any, x: Any, *, output_weights: Any = None, batch_size: int = 64) -> np.ndarray:
    """The P x P dual ``J^T D J`` of the flattened eNTK ``D^(1/2) J J^T D^(1/2)``.

    Column ``p`` is ``J^T (D (J e_p))``: one ``jax.jvp`` and one ``jax.vjp`` per parameter,
    batched ``batch_size`` at a time; neither the ``(N*C, P)`` Jacobian nor the
    ``(N*C, N*C)`` kernel is formed.

    Args:
        f: model ``f(params, x) -> (N, C)``.
        params: pytree with P numbers in all.
        x: ``(N, ...)`` inputs.
        output_weights: ``(C,)`` non-negative weights ``d_i`` on the outputs (the importance
            rescaling ``d_i = I_i^beta``); ``None`` for all ones.

    Returns:
        ``(P, P)`` symmetric PSD array, parameters ordered as ``ravel_pytree(params)``.
    """
    x = _check_model(f, params, x)
    batch_size = _checks.integer(batch_size, "batch_size", low=1)
    flat, model, c = _model_of_flat(f, params, x)
    weights = _check_weights(output_weights, c)
    d = jnp.ones((c,), flat.dtype) if weights is None else jnp.asarray(weights, flat.dtype)
    _, pullback = jax.vjp(model, flat)

    @jax.jit
    def columns(basis):
        def one(e):
            tangent_out = jax.jvp(model, (flat,), (e,))[1]
            return pullback(tangent_out * d)[0]

        return jax.lax.map(one, basis, batch_size=batch_size)

    p = flat.size
    return np.asarray(columns(jnp.eye(p, dtype=flat.dtype)))


def closed_form_dual(params: dict, x: Any, *, output_weights: Any = None) -> np.ndarray:
    """The dual ``J^T D J`` of the TMS model from the closed-form Jacobian (seed 002 eq. 13).

    Same matrix as ``dual_kernel(apply, params, x, output_weights=...)`` (parameters ordered
    as ``ravel_pytree``: ``b`` then ``W`` row-major), but assembled from per-point sums in
    ``O(N n^3 + m^2 n^3)`` instead of P Jacobian-vector products. With ``e_i = d_i g_i(x)``,
    ``h = W x`` and the Jacobian row ``dW_{a i'} = g_i (W_ai x_i' + delta_ii' h_a)``,
    ``db_i' = g_i delta_ii'``::

        G[W_ai', W_bj'] = sum_x [ (W diag(e) W^T)_ab x_i' x_j' + e_j' W_aj' x_i' h_b
                                  + e_i' h_a W_bi' x_j' + delta_i'j' e_i' h_a h_b ]
        G[W_ai', b_j']  = sum_x [ e_j' W_aj' x_i' + delta_i'j' e_i' h_a ]
        G[b_i', b_j']   = delta_i'j' sum_x e_i'

    Args:
        params: ``{"w": (m, n), "b": (n,)}``.
        x: ``(N, n)``.
        output_weights: ``(n,)`` or ``None``.

    Returns:
        ``(P, P)`` with ``P = n + m*n``.
    """
    m, n = _check_params(params)
    x = np.asarray(_check_x(x, n), np.float64)
    d = np.ones(n) if output_weights is None else _check_weights(output_weights, n)
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    h = x @ w.T  # (N, m)
    e = ((h @ w + b) > 0) * d[None, :]  # (N, n)
    # first term, summed over points before the weights enter: with M_i = sum_x e_i x x^T,
    # t1[a, i', b, j'] = sum_i W_ai W_bi M_i[i', j']  (O(N n^3 + m^2 n^3), not O(N m^2 n^2))
    outer = np.einsum("ni,nj->nij", x, x).reshape(len(x), n * n)
    moments = e.T @ outer  # (n, n*n): row i is M_i flattened
    pairs = np.einsum("ai,bi->abi", w, w).reshape(m * m, n)
    t1 = (pairs @ moments).reshape(m, m, n, n).transpose(0, 2, 1, 3)
    n_pts = len(x)
    # q[i', b, j'] = sum_x x_i' h_b e_j' and t4[i, a, b] = sum_x e_i h_a h_b, as matrix products
    q = (np.einsum("ni,nb->nib", x, h).reshape(n_pts, n * m).T @ e).reshape(n, m, n)
    t2 = w[:, None, None, :] * q[None, :, :, :]  # [a, i', b, j'] = W_aj' q[i', b, j']
    t4 = (e.T @ np.einsum("na,nb->nab", h, h).reshape(n_pts, m * m)).reshape(n, m, m)
    ww = t1 + t2
    ww += t2.transpose(2, 3, 0, 1)
    idx = np.arange(n)
    ww[:, idx, :, idx] += t4  # delta_i'j' block: advanced indices land first -> (n, m, m)
    wb = w[:, None, :] * (x.T @ e)[None, :, :]  # [a, i', j'] = W_aj' sum_x x_i' e_j'
    wb[:, idx, idx] += (e.T @ h).T  # delta_i'j' sum_x e_i' h_a, shape (m, n)
    p = n + m * n
    gram = np.zeros((p, p))
    gram[:n, :n] = np.diag(e.sum(axis=0))
    gram[n:, n:] = ww.reshape(m * n, m * n)
    gram[n:, :n] = wb.reshape(m * n, n)
    gram[:n, n:] = gram[n:, :n].T
    return gram


def flattened_eigenpairs(
    f: Callable,
    params: Any,
    x: Any,
    *,
    k: int,
    output_weights: Any = None,
    batch_size: int = 64,
    gram: Any = None,
    n_values: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The largest eigenvalues and the top ``k`` eigenvectors of the flattened eNTK, via its dual.

    The (weighted) flattened kernel ``K_D = D^(1/2) J J^T D^(1/2)`` of shape ``(N*C, N*C)``
    has the same nonzero eigenvalues as its dual ``G = J^T D J`` (``dual_kernel``). With
    ``G v = lambda v`` the unit eigenvector of ``K_D`` is ``u = D^(1/2) J v / sqrt(lambda)``,
    one ``jax.jvp`` per vector.

    Args:
        f, params, x, output_weights, batch_size: as in ``dual_kernel``.
        gram: a precomputed dual for these ``output_weights`` (e.g. ``closed_form_dual``);
            ``None`` computes it with ``dual_kernel``.
        n_values: how many of the largest eigenvalues to return (``None``: all
            ``min(P, N*C)``); fewer is faster (``scipy.linalg.eigh`` with ``subset_by_index``,
            or Lanczos ``scipy.sparse.linalg.eigsh`` when ``4 * n_values < P``).
        k: number of eigenvectors, ``0 <= k <= min(P, N*C)`` (0: eigenvalues only); the
            k-th eigenvalue must be nonzero.

    Returns:
        ``(eigenvalues (n_values,), eigenvectors (N*C, k))``, eigenvalues descending (tiny
        negative round-off clipped to 0); rows of the eigenvectors ordered ``a*C + i`` as in
        ``helpers.ntk.flatten``.
    """
    k = _checks.integer(k, "k", low=0)
    x = _check_model(f, params, x)
    flat, model, c = _model_of_flat(f, params, x)
    dim = x.shape[0] * c
    weights = _check_weights(output_weights, c)
    if gram is None:
        gram = dual_kernel(f, params, x, output_weights=weights, batch_size=batch_size)
    else:
        gram = _checks.symmetric(gram, "gram").astype(np.float64)
        if gram.shape != (flat.size, flat.size):
            raise ValueError(f"gram must be the (P, P) = ({flat.size}, {flat.size}) dual of params; got {gram.shape}")
    rank_bound = min(gram.shape[0], dim)
    if k > rank_bound:
        raise ValueError(f"k must satisfy 0 <= k <= min(P, N*C) = {rank_bound}; got {k}")
    if n_values is None:
        n_values = rank_bound
    n_values = _checks.integer(n_values, "n_values", low=max(k, 1), high=rank_bound)
    p = gram.shape[0]
    sym = (gram + gram.T) / 2
    if 4 * n_values < p:
        # a few largest eigenpairs of a large dual: Lanczos (ARPACK) beats a full tridiagonalisation
        v0 = np.random.default_rng(0).standard_normal(p)
        lam, vecs = scipy.sparse.linalg.eigsh(sym, k=n_values, which="LA", v0=v0, tol=1e-12)
    else:
        lam, vecs = scipy.linalg.eigh(sym, subset_by_index=[p - n_values, p - 1])
    order = np.argsort(lam)[::-1]
    lam, vecs = np.clip(lam[order], 0.0, None), vecs[:, order]
    if k == 0:
        return lam, np.zeros((dim, 0))
    if lam[k - 1] <= 1e-12 * lam[0]:
        raise ValueError(f"k = {k} exceeds the number of nonzero eigenvalues of the kernel (eigenvalue {k} is {lam[k - 1]:.3g})")
    d = np.ones(c) if weights is None else weights
    root_d = jnp.asarray(np.sqrt(d), flat.dtype)
    u = np.asarray(_push(f, params, x, jnp.asarray(vecs[:, :k].T, flat.dtype), root_d)).T / np.sqrt(lam[:k])[None, :]
    return lam, u


@partial(jax.jit, static_argnums=0)
def _push(f: Callable, params: Any, x: jnp.ndarray, vectors: jnp.ndarray, root_d: jnp.ndarray) -> jnp.ndarray:
    """Rows ``D^(1/2) J v`` (flattened, ``(k, N*C)``) for the rows ``v`` of ``vectors`` (k, P).

    Compiled once per model function and shapes (``f`` is a static argument), so repeated
    calls on new parameters or data of the same shapes reuse the compiled code.
    """
    flat, unravel = ravel_pytree(params)

    def model(theta):
        return f(unravel(theta), x)

    return jax.vmap(lambda v: (jax.jvp(model, (flat,), (v,))[1] * root_d).reshape(-1))(vectors)


# ----------------------------------------------------------------------------------------
# alignment with the ground-truth features
# ----------------------------------------------------------------------------------------


def feature_indicator(x: Any) -> np.ndarray:
    """The expanded feature matrix ``(N*n, n)`` of seed 002 §3.2.

    Column i holds feature i's activation ``x_ai`` in row ``a*n + i`` and zeros elsewhere
    (entries vanish unless the output index matches the feature), matching the rows of the
    flattened kernel. ``feature_indicator(np.ones_like(x))`` is the *block indicator* (ones on
    every row of output i): the control that knows which output an eigenvector lives on and
    nothing about the feature's values.

    Args:
        x: ``(N, n)`` feature activations.

    Returns:
        ``(N*n, n)``.
    """
    x = _checks.array(x, "x", ndim=2, kind="real")
    n_pts, n = x.shape
    return (x[:, :, None] * np.eye(n, dtype=x.dtype)[None]).reshape(n_pts * n, n)


def project_out(indicator: Any, controls: Any) -> np.ndarray:
    """Each column of ``indicator`` minus its projection on the matching columns of ``controls``.

    Column i of the result is ``F_i - Q_i Q_i^T F_i`` with ``Q_i`` an orthonormal basis of the
    columns i of the control matrices (for instance the block indicator and the support
    indicator of feature i). Its alignment with an eigenvector measures what the eigenvector
    carries of feature i beyond what the controls already explain.

    Args:
        indicator: ``(D, n)``, e.g. ``feature_indicator(x)``.
        controls: a sequence of ``(D, n)`` arrays (at least one).

    Returns:
        ``(D, n)`` residual columns (exactly zero where ``F_i`` lies in the span of the controls,
        to ``1e-10`` relative).
    """
    F = _checks.array(indicator, "indicator", ndim=2, kind="real").astype(np.float64)
    if isinstance(controls, np.ndarray) or not isinstance(controls, (list, tuple)) or not controls:
        raise TypeError(f"controls must be a non-empty list of (D, n) arrays; got {_checks.describe(controls)}")
    cs = [_checks.array(c, f"controls[{j}]", ndim=2, kind="real").astype(np.float64) for j, c in enumerate(controls)]
    for j, c in enumerate(cs):
        _checks.same_shape(F, c, "indicator", f"controls[{j}]")
    out = F.copy()
    for i in range(F.shape[1]):
        basis = np.stack([c[:, i] for c in cs], axis=1)
        q, r = np.linalg.qr(basis)
        q = q[:, np.abs(np.diag(r)) > 1e-12 * max(np.abs(r).max(), 1e-300)]  # drop dependent or zero columns
        out[:, i] -= q @ (q.T @ out[:, i])
        if np.linalg.norm(out[:, i]) <= 1e-10 * np.linalg.norm(F[:, i]):
            out[:, i] = 0.0  # inside the span of the controls: round-off only, nothing left
    return out


def alignment(eigenvectors: Any, indicator: Any) -> np.ndarray:
    """Absolute cosine between every feature column and every eigenvector.

    Args:
        eigenvectors: ``(D, k)``, no zero column.
        indicator: ``(D, n)`` from ``feature_indicator`` (or ``project_out``); a column with
            no nonzero entry (a feature never active, or one explained entirely by the
            controls) has no direction and is refused.

    Returns:
        ``(n, k)`` with entry ``|<F_i, u_k>| / (|F_i| |u_k|)``.
    """
    u = _checks.array(eigenvectors, "eigenvectors", ndim=2, kind="real").astype(np.float64)
    F = _checks.array(indicator, "indicator", ndim=2, kind="real").astype(np.float64)
    if u.shape[0] != F.shape[0]:
        raise ValueError(f"indicator (D, n) must share D with eigenvectors {u.shape}; got {F.shape}")
    nu, nf = np.linalg.norm(u, axis=0), np.linalg.norm(F, axis=0)
    if np.any(nu == 0):
        raise ValueError(f"eigenvectors must have no zero column; got {int((nu == 0).sum())} zero column(s)")
    tiny = 1e-12 * max(float(nf.max()), 1e-300)
    if np.any(nf <= tiny):
        bad = np.flatnonzero(nf <= tiny)[:5].tolist()
        raise ValueError(
            f"indicator must have no zero column (a feature with no activation has no direction); got zero columns {bad}"
        )
    return np.abs(F.T @ u) / (nf[:, None] * nu[None, :])


def alignment_scores(cos: Any, *, threshold: float = 0.5) -> dict:
    """How close to 1:1 the feature/eigenvector map is.

    Args:
        cos: ``(n, k)`` from ``alignment`` (features x top eigenvectors).
        threshold: a feature counts as *found* when its best ``|cos|`` exceeds this.

    Returns:
        dict with
        ``best`` ``(n,)`` index of each feature's best eigenvector,
        ``row_max`` ``(n,)`` that ``|cos|``,
        ``mean_row_max`` mean of ``row_max``,
        ``mutual`` ``(n,)`` booleans: feature i and its best eigenvector are each other's
        best match,
        ``mutual_fraction`` their fraction,
        ``found`` number of features with ``row_max > threshold``,
        ``matched_mean`` mean ``|cos|`` of the optimal one-to-one assignment
        (``scipy.optimize.linear_sum_assignment``).
    """
    cos = _checks.array(cos, "cos", ndim=2, kind="real").astype(np.float64)
    if cos.min() < 0 or cos.max() > 1 + 1e-9:
        raise ValueError(f"cos must hold absolute cosines in [0, 1] (from alignment); got range [{cos.min():.3g}, {cos.max():.3g}]")
    threshold = _checks.real(threshold, "threshold", low=0, high=1)
    best = cos.argmax(axis=1)
    back = cos.argmax(axis=0)
    mutual = back[best] == np.arange(cos.shape[0])
    rows, cols = linear_sum_assignment(-cos)
    row_max = cos.max(axis=1)
    return {
        "best": best,
        "row_max": row_max,
        "mean_row_max": float(row_max.mean()),
        "mutual": mutual,
        "mutual_fraction": float(mutual.mean()),
        "found": int((row_max > threshold).sum()),
        "matched_mean": float(cos[rows, cols].sum() / cos.shape[0]),
    }


def feature_rayleigh(params: dict, x: Any, *, output_weights: Any = None, bias: bool = True) -> dict:
    """Rayleigh quotient of each feature column under the (weighted) closed-form kernel.

    For column ``F_i`` of ``feature_indicator(x)`` only the diagonal block ``K_ii`` enters:
    with ``u_a = x_ai g_i(x_a)``, ``s = sum_a u_a x_a`` (n,), and the closed form (App. B)::

        F_i^T K F_i = d_i [ A_ii |s|^2 + 2 s_i (A s)_i + |W s|^2 + bias (sum_a u_a)^2 ],

    divided by ``|F_i|^2 = sum_a x_ai^2``. If the eigenvectors align one-to-one with the
    features, these are their eigenvalues, so sorting them predicts which eigenvector each
    feature lands on. The terms are returned separately to see which one orders the features.

    Returns:
        dict of ``(n,)`` arrays: ``total`` and the four terms ``overlap`` (``A_ii |s|^2``),
        ``cross`` (``2 s_i (A s)_i``), ``hidden`` (``|W s|^2``), ``bias``, each already divided by
        ``|F_i|^2`` and multiplied by ``d_i``.
    """
    m, n = _check_params(params)
    x = np.asarray(_check_x(x, n), np.float64)
    bias = _checks.boolean(bias, "bias")
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    c = n
    d = np.ones(c) if output_weights is None else _check_weights(output_weights, c)
    a = w.T @ w
    g = (x @ a + b) > 0  # (N, n)
    u = x * g  # (N, n): u[a, i]
    s = u.T @ x  # (n_i, n): s[i] = sum_a u_ai x_a
    norm = (x ** 2).sum(axis=0)
    safe = np.where(norm > 0, norm, 1.0)
    terms = {
        "overlap": np.diag(a) * (s ** 2).sum(axis=1),
        "cross": 2 * np.diag(s) * np.diag(s @ a),
        "hidden": ((s @ w.T) ** 2).sum(axis=1),
        "bias": (u.sum(axis=0) ** 2) * (1.0 if bias else 0.0),
    }
    terms = {k: d * v / safe for k, v in terms.items()}
    terms["total"] = sum(terms.values())
    return terms


def block_top_eigenvalues(params: dict, x: Any, *, bias: bool = True) -> np.ndarray:
    """Largest eigenvalue of each diagonal class block ``K_ii(x, x)`` of the closed-form eNTK.

    ``K_ii(x1, x2) = g_i(x1) g_i(x2) [A_ii (x1 . x2) + (x1)_i (A x2)_i + (x2)_i (A x1)_i
    + h1 . h2 + bias]`` (App. B eq. 14 with i = j). If the flattened kernel's eigenvectors lie
    (nearly) inside single class blocks, the eigenvalue carried by feature i under the
    importance rescaling ``d = I^beta`` is about ``d_i`` times this number.

    Args:
        params: ``{"w": (m, n), "b": (n,)}``.
        x: ``(N, n)``.

    Returns:
        ``(n,)`` float64.
    """
    m, n = _check_params(params)
    x = np.asarray(_check_x(x, n), np.float64)
    bias = _checks.boolean(bias, "bias")
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    a = w.T @ w
    ax = x @ a
    g = (ax + b) > 0
    h = x @ w.T
    # K_ii = Z M Z^T on the active points, with features z(x) = [x, x_i, (A x)_i, h, 1] and
    # M = diag(A_ii I_n, [[0, 1], [1, 0]], I_m, bias); its nonzero eigenvalues are those of
    # the small (n + m + 3) square M Z^T Z.
    size = n + m + 3
    out = np.zeros(n)
    for i in range(n):
        on = g[:, i]
        if not on.any():
            continue
        z = np.concatenate([x[on], x[on, i : i + 1], ax[on, i : i + 1], h[on], np.ones((on.sum(), 1))], axis=1)
        metric = np.zeros((size, size))
        metric[:n, :n] = a[i, i] * np.eye(n)
        metric[n, n + 1] = metric[n + 1, n] = 1.0
        metric[n + 2 : n + 2 + m, n + 2 : n + 2 + m] = np.eye(m)
        metric[-1, -1] = 1.0 if bias else 0.0
        out[i] = np.linalg.eigvals(metric @ (z.T @ z)).real.max()
    return out
