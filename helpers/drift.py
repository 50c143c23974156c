"""Kernel drift: how the empirical NTK moves during training (seed 000 §1, §3; seed 003).

Notation (seed 000 §0): ``theta`` (P parameters), ``z = f(theta)`` the O = N*C outputs on a
batch, ``J = dz/dtheta`` (O, P), ``Theta = J J^T`` the eNTK, ``r = dL/dz`` the residual,
``H_z = d^2 L / dz^2`` the output Hessian and ``T_aij = d^2 z_a / dtheta_i dtheta_j`` the map
curvature. All kernels here are *flattened* ``(N*C, N*C)`` with row ``n*C + i``, as in
``helpers.ntk.flatten``.

Under gradient flow ``theta' = -J^T r`` (seed 000 §3)

    J'_ai      = -sum_{j,b} T_aij J_bj r_b,
    Xi_abc     = sum_{ij} T_aij J_bj J_ci                          (symmetric in b, c),
    Theta'_ac  = -sum_b r_b (Xi_abc + Xi_cab),

and first-order perturbation theory of ``Theta = sum_mu lambda_mu u_mu u_mu^T`` under
``V = Theta'`` gives

    lambda'_mu = u_mu^T V u_mu,      u'_mu = sum_{nu != mu} (u_nu^T V u_mu) / (lambda_mu - lambda_nu) u_nu.

Neither ``T`` (O x P x P) nor ``Xi`` is needed for the velocity: ``J'`` is one
forward-over-reverse product, the jvp of the Jacobian along the direction ``-J^T r``.

Public functions
----------------
``flat_kernel``            Theta on a batch, ``(N*C, N*C)``, jitted.
``map_curvature_contraction``  Xi ``(O, O, O)`` for small O (jvp of J along each row of J).
``kernel_velocity``        Theta' under gradient flow with residual r (matrix-free in T).
``velocity_from_contraction``  Theta' from Xi and r (the seed's formula, literally).
``perturbation_rates``     lambda' and u' from (Theta, V).
``subspace_rotation_rate`` speed at which the top-k eigenspace leaves itself.
``principal_angles``       between two subspaces (``scipy.linalg.subspace_angles``).
``relative_drift``         ||K1 - K0||_F / ||K0||_F.
``eigenspace_change``      principal angles and relative eigenvalue change of the top k.
``spectral_speeds``        eigenvalue vs eigenvector speeds along a recorded trajectory.
``kernel_trajectory``      flat kernels at a list of parameter snapshots.
``train_with_kernels``     ``helpers.train.train`` plus the kernel at every snapshot.
``softmax_output_hessian`` H_z = diag(p) - p p^T per example, block diagonal.
``residual_dynamics``      r(t) = exp(-lr H_z Theta t) r0 (or its discrete-step version).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special
from jax.flatten_util import ravel_pytree

from . import ntk as _ntk
from . import train as _train

__all__ = [
    "flat_kernel",
    "map_curvature_contraction",
    "kernel_velocity",
    "velocity_from_contraction",
    "perturbation_rates",
    "subspace_rotation_rate",
    "principal_angles",
    "relative_drift",
    "eigenspace_change",
    "spectral_speeds",
    "kernel_trajectory",
    "train_with_kernels",
    "softmax_output_hessian",
    "residual_dynamics",
]


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------


def _output_shape(f: Callable, params: Any, x: Any) -> tuple[jnp.ndarray, int, int]:
    """Validate (f, params, x) with helpers.ntk's checks; return (x, N, C)."""
    x, _, c = _ntk._validate(f, params, x, None)
    return x, int(x.shape[0]), c


def _check_residual(residual: Any, n: int, c: int) -> jnp.ndarray:
    r = np.asarray(residual)
    if r.shape not in ((n, c), (n * c,)):
        raise ValueError(
            f"residual must have shape (N, C) = ({n}, {c}) or (N*C,) = ({n * c},) to match "
            f"f(params, x); got shape {r.shape}"
        )
    _ntk.check_finite(r, "residual")
    return jnp.asarray(r).reshape(n * c)


def _check_square(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (D, D) matrix; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _check_symmetric(a: np.ndarray, name: str) -> np.ndarray:
    scale = max(float(np.abs(a).max()), 1e-300)
    if np.abs(a - a.T).max() > 1e-6 * scale:
        raise ValueError(f"{name} must be symmetric; max |A - A^T| = {np.abs(a - a.T).max():.3g} at scale {scale:.3g}")
    return (a + a.T) / 2


def _check_k(k: Any, dim: int, name: str = "k", *, strict: bool = False) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(k).__name__}")
    upper = dim - 1 if strict else dim
    if not 1 <= k <= upper:
        raise ValueError(f"{name} must satisfy 1 <= {name} <= {upper} for dimension {dim}; got {k}")
    return int(k)


# ----------------------------------------------------------------------------------------
# kernels, Jacobian motion, Xi
# ----------------------------------------------------------------------------------------


def _flat_outputs(f: Callable, params: Any, x: jnp.ndarray):
    theta, unravel = ravel_pytree(params)
    return (lambda t: f(unravel(t), x).reshape(-1)), theta


def flat_kernel(f: Callable, params: Any, x: Any) -> np.ndarray:
    """The flattened eNTK ``Theta = J J^T`` on a batch: ``helpers.ntk.flatten(helpers.ntk.entk(...))``.

    Args:
        f: model ``f(params, x) -> (N, C)``; params: pytree; x: ``(N, ...)``.

    Returns:
        ``(N*C, N*C)``, row ``n*C + i``.
    """
    return _ntk.flatten(_ntk.entk(f, params, x))


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
    x, n, c = _output_shape(f, params, x)
    r = _check_residual(residual, n, c)
    return np.asarray(_velocity_impl(f, params, x, r.astype(jnp.result_type(*jax.tree_util.tree_leaves(params)))))


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
    x, _, _ = _output_shape(f, params, x)
    return np.asarray(_xi_impl(f, params, x))


def velocity_from_contraction(xi: Any, residual: Any) -> np.ndarray:
    """``Theta'_ac = -sum_b r_b (Xi_abc + Xi_cab)`` (seed 000 §3).

    Args:
        xi: ``(O, O, O)`` from ``map_curvature_contraction``.
        residual: ``(O,)`` (or any shape with O entries, flattened row-major).

    Returns:
        ``(O, O)``.
    """
    xi = np.asarray(xi, dtype=np.float64)
    if xi.ndim != 3 or len(set(xi.shape)) != 1:
        raise ValueError(f"xi must be a cube (O, O, O); got shape {xi.shape}")
    r = np.asarray(residual, dtype=np.float64).reshape(-1)
    if r.size != xi.shape[0]:
        raise ValueError(f"residual must have O = {xi.shape[0]} entries to match xi; got {r.size}")
    term = np.einsum("abc,b->ac", xi, r)  # sum_b r_b Xi_abc
    term_swapped = np.einsum("cab,b->ac", xi, r)  # sum_b r_b Xi_cab
    return -(term + term_swapped)


# ----------------------------------------------------------------------------------------
# perturbation theory
# ----------------------------------------------------------------------------------------


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
    K = _check_symmetric(_check_square(kernel, "kernel"), "kernel")
    V = _check_symmetric(_check_square(velocity, "velocity"), "velocity")
    if V.shape != K.shape:
        raise ValueError(f"velocity must have the kernel's shape {K.shape}; got {V.shape}")
    k = K.shape[0] if k is None else _check_k(k, K.shape[0])
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
    K = _check_symmetric(_check_square(kernel, "kernel"), "kernel")
    V = _check_symmetric(_check_square(velocity, "velocity"), "velocity")
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


# ----------------------------------------------------------------------------------------
# comparing kernels
# ----------------------------------------------------------------------------------------


def principal_angles(basis_a: Any, basis_b: Any) -> np.ndarray:
    """Principal angles between the column spans of two matrices (Bjorck & Golub 1973).

    Args:
        basis_a: ``(D, k1)``; basis_b: ``(D, k2)`` (need not be orthonormal).

    Returns:
        ``(min(k1, k2),)`` angles in radians, in *descending* order (as
        ``scipy.linalg.subspace_angles`` returns them).
    """
    a, b = np.asarray(basis_a, dtype=np.float64), np.asarray(basis_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"basis_a and basis_b must be (D, k) matrices with the same D; got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("basis_a or basis_b contains NaN or inf")
    return scipy.linalg.subspace_angles(a, b)


def relative_drift(kernel_0: Any, kernel_1: Any) -> float:
    """``||K_1 - K_0||_F / ||K_0||_F`` (seed 003: O(1/sqrt(width)) in the NTK parametrisation)."""
    k0, k1 = np.asarray(kernel_0, dtype=np.float64), np.asarray(kernel_1, dtype=np.float64)
    if k0.shape != k1.shape:
        raise ValueError(f"kernel_0 and kernel_1 must have the same shape; got {k0.shape} and {k1.shape}")
    norm = np.linalg.norm(k0)
    if norm == 0:
        raise ValueError("kernel_0 is zero; the relative drift is undefined")
    return float(np.linalg.norm(k1 - k0) / norm)


def _top(kernel: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    lam, U = np.linalg.eigh(kernel)
    return lam[::-1][:k], U[:, ::-1][:, :k]


def eigenspace_change(kernel_before: Any, kernel_after: Any, k: int) -> dict:
    """How the top-k eigenpairs moved between two kernels.

    Returns:
        dict with ``angles`` (principal angles of the top-k eigenspaces, descending, radians),
        ``max_angle``, ``eigenvalue_change`` (``||lambda_after - lambda_before|| / ||lambda_before||``
        over the top k) and ``log_eigenvalue_change`` (``max |log(lambda_after / lambda_before)|``).
    """
    kb = _check_symmetric(_check_square(kernel_before, "kernel_before"), "kernel_before")
    ka = _check_symmetric(_check_square(kernel_after, "kernel_after"), "kernel_after")
    if ka.shape != kb.shape:
        raise ValueError(f"kernel_before and kernel_after must have the same shape; got {kb.shape} and {ka.shape}")
    k = _check_k(k, kb.shape[0])
    lb, ub = _top(kb, k)
    la, ua = _top(ka, k)
    if np.any(lb <= 0) or np.any(la <= 0):
        raise ValueError(f"the top {k} eigenvalues must be positive to compare them in log scale; got {lb.min():.3g}, {la.min():.3g}")
    angles = principal_angles(ub, ua)
    return {
        "angles": angles,
        "max_angle": float(angles.max()),
        "eigenvalue_change": float(np.linalg.norm(la - lb) / np.linalg.norm(lb)),
        "log_eigenvalue_change": float(np.abs(np.log(la / lb)).max()),
    }


def spectral_speeds(kernels: Any, times: Any, k: int) -> dict:
    """Eigenvalue speed versus eigenvector (top-k subspace) speed along a kernel trajectory.

    Between consecutive snapshots ``s`` and ``s+1``:

    * eigenvalue speed ``||log lambda_{1..k}(s+1) - log lambda_{1..k}(s)||_2 / dt``
      (relative change per unit time, dimensionless rate);
    * eigenvector speed ``||angles(U_k(s), U_k(s+1))||_2 / dt`` (radians per unit time).

    Their ratio is the timescale split of seed 000 §3 ("eigenvectors ~10^4 times slower").

    Args:
        kernels: ``(R, D, D)`` symmetric kernels at ``R >= 2`` snapshots.
        times: ``(R,)`` strictly increasing snapshot times (steps).
        k: size of the tracked top eigenspace, ``1 <= k < D``.

    Returns:
        dict with ``times`` (midpoints, ``(R-1,)``), ``eigenvalue_speed``, ``eigenvector_speed``
        and ``ratio`` (each ``(R-1,)``).
    """
    ks = np.asarray(kernels, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if ks.ndim != 3 or ks.shape[1] != ks.shape[2] or ks.shape[0] < 2:
        raise ValueError(f"kernels must be (R, D, D) with R >= 2; got shape {ks.shape}")
    if t.shape != (ks.shape[0],):
        raise ValueError(f"times must have one entry per kernel, shape ({ks.shape[0]},); got {t.shape}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    k = _check_k(k, ks.shape[1], strict=True)
    tops = [_top(_check_symmetric(_check_square(K, "kernels[i]"), "kernels[i]"), k) for K in ks]
    if any(np.any(lam <= 0) for lam, _ in tops):
        raise ValueError(f"the top {k} eigenvalues must be positive at every snapshot")
    dt = np.diff(t)
    val = np.array([np.linalg.norm(np.log(b[0]) - np.log(a[0])) for a, b in zip(tops[:-1], tops[1:])]) / dt
    vec = np.array([np.linalg.norm(principal_angles(a[1], b[1])) for a, b in zip(tops[:-1], tops[1:])]) / dt
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = val / vec
    return {"times": (t[:-1] + t[1:]) / 2, "eigenvalue_speed": val, "eigenvector_speed": vec, "ratio": ratio}


# ----------------------------------------------------------------------------------------
# recording
# ----------------------------------------------------------------------------------------


def kernel_trajectory(f: Callable, params_list: Sequence[Any], x: Any) -> np.ndarray:
    """Flattened kernels at a list of parameter snapshots (e.g. ``History.params``).

    Returns:
        ``(R, N*C, N*C)``.
    """
    if len(params_list) == 0:
        raise ValueError("params_list is empty; need at least one parameter snapshot")
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
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, C); got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contains NaN or inf")
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
    K = _check_square(kernel, "kernel")
    H = _check_square(output_hessian, "output_hessian")
    if H.shape != K.shape:
        raise ValueError(f"output_hessian must have the kernel's shape {K.shape}; got {H.shape}")
    r0 = np.asarray(residual_0, dtype=np.float64).reshape(-1)
    if r0.size != K.shape[0]:
        raise ValueError(f"residual_0 must have D = {K.shape[0]} entries; got {r0.size}")
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    A = lr * H @ K
    if discrete:
        if np.any(t < 0) or np.any(t != np.round(t)):
            raise ValueError("discrete=True needs non-negative integer times (steps)")
        step = np.eye(K.shape[0]) - A
        return np.stack([np.linalg.matrix_power(step, int(s)) @ r0 for s in t])
    return np.stack([scipy.linalg.expm(-s * A) @ r0 for s in t])
