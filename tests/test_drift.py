"""Tests of helpers.drift against finite differences, closed forms and dense references (float64)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from helpers import drift, models, ntk


@pytest.fixture(scope="module")
def small_mlp():
    f, params = models.make_mlp([3, 7, 5, 2], key=jax.random.PRNGKey(0), activation="tanh", dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3), jnp.float64)
    r = jax.random.normal(jax.random.PRNGKey(2), (4, 2), jnp.float64)
    return f, params, x, r


def _shift(params, direction, h):
    theta, unravel = ravel_pytree(params)
    return unravel(theta + h * direction)


def _gradient_flow_direction(f, params, x, r):
    theta, unravel = ravel_pytree(params)
    jac = jax.jacrev(lambda t: f(unravel(t), x).reshape(-1))(theta)
    return -jac.T @ r.reshape(-1)


def test_flat_kernel_matches_dense_jacobian(small_mlp):
    f, params, x, _ = small_mlp
    theta, unravel = ravel_pytree(params)
    jac = jax.jacfwd(lambda t: f(unravel(t), x).reshape(-1))(theta)  # forward mode: an independent route
    np.testing.assert_allclose(drift.flat_kernel(f, params, x), np.asarray(jac @ jac.T), rtol=1e-10, atol=1e-12)


def test_kernel_velocity_matches_central_difference(small_mlp):
    f, params, x, r = small_mlp
    v = drift.kernel_velocity(f, params, x, r)
    direction = _gradient_flow_direction(f, params, x, r)
    errors = []
    for h in (1e-3, 1e-4):
        fd = (drift.flat_kernel(f, _shift(params, direction, h), x) - drift.flat_kernel(f, _shift(params, direction, -h), x)) / (2 * h)
        errors.append(np.linalg.norm(fd - v) / np.linalg.norm(v))
    assert errors[1] < 1e-6
    # second-order convergence: 10x smaller step, ~100x smaller error
    assert 50 < errors[0] / errors[1] < 200


def test_xi_symmetry_and_seed_formula(small_mlp):
    f, params, x, r = small_mlp
    xi = drift.map_curvature_contraction(f, params, x)
    assert xi.shape == (8, 8, 8)
    np.testing.assert_allclose(xi, xi.transpose(0, 2, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(drift.velocity_from_contraction(xi, r), drift.kernel_velocity(f, params, x, r), rtol=1e-10, atol=1e-12)


def test_xi_against_dense_map_curvature():
    f, params = models.make_mlp([2, 3, 2], key=jax.random.PRNGKey(7), activation="tanh", dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(8), (3, 2), jnp.float64)
    theta, unravel = ravel_pytree(params)
    z = lambda t: f(unravel(t), x).reshape(-1)
    T = jax.hessian(z)(theta)  # (O, P, P)
    J = jax.jacrev(z)(theta)
    dense = np.einsum("aij,bj,ci->abc", T, J, J)
    np.testing.assert_allclose(drift.map_curvature_contraction(f, params, x), dense, rtol=1e-10, atol=1e-10)


def test_linear_model_kernel_is_static():
    w = {"w": jax.random.normal(jax.random.PRNGKey(3), (3, 2), jnp.float64)}
    f = lambda p, x: x @ p["w"]
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 3), jnp.float64)
    r = jnp.ones((5, 2))
    assert np.abs(drift.kernel_velocity(f, w, x, r)).max() == 0.0
    assert np.abs(drift.map_curvature_contraction(f, w, x)).max() == 0.0


def test_deep_linear_closed_form():
    # f(x) = x W1 W2: Theta = (X W1 W1^T X^T) (x) I + (X X^T) (x) (W2^T W2), row n*C + i
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(5), 4)
    d, h, c, n = 3, 4, 2, 5
    params = {"W1": jax.random.normal(k1, (d, h), jnp.float64), "W2": jax.random.normal(k2, (h, c), jnp.float64)}
    f = lambda p, x: x @ p["W1"] @ p["W2"]
    X = np.asarray(jax.random.normal(k3, (n, d), jnp.float64))
    R = np.asarray(jax.random.normal(k4, (n, c), jnp.float64))
    W1, W2 = np.asarray(params["W1"]), np.asarray(params["W2"])
    theta_closed = np.kron(X @ W1 @ W1.T @ X.T, np.eye(c)) + np.kron(X @ X.T, W2.T @ W2)
    np.testing.assert_allclose(drift.flat_kernel(f, params, X), theta_closed, rtol=1e-12, atol=1e-12)
    # gradient flow on L with dL/dz = R: W1' = -X^T R W2^T, W2' = -W1^T X^T R
    W1d, W2d = -X.T @ R @ W2.T, -W1.T @ X.T @ R
    v_closed = np.kron(X @ (W1d @ W1.T + W1 @ W1d.T) @ X.T, np.eye(c)) + np.kron(X @ X.T, W2d.T @ W2 + W2.T @ W2d)
    np.testing.assert_allclose(drift.kernel_velocity(f, params, X, R), v_closed, rtol=1e-10, atol=1e-10)


def _random_spd(rng, d, spread=3.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.exp(np.linspace(spread, 0, d))
    return q @ np.diag(lam) @ q.T


def test_perturbation_rates_match_eigendecomposition_differences():
    rng = np.random.default_rng(0)
    K = _random_spd(rng, 6)
    V = rng.standard_normal((6, 6))
    V = V + V.T
    lam, U, lam_dot, U_dot = drift.perturbation_rates(K, V, k=3)
    h = 1e-6
    lp, Up = np.linalg.eigh(K + h * V)
    lm, Um = np.linalg.eigh(K - h * V)
    lp, Up, lm, Um = lp[::-1][:3], Up[:, ::-1][:, :3], lm[::-1][:3], Um[:, ::-1][:, :3]
    Up *= np.sign(np.sum(Up * U, axis=0))
    Um *= np.sign(np.sum(Um * U, axis=0))
    np.testing.assert_allclose(lam_dot, (lp - lm) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(U_dot, (Up - Um) / (2 * h), rtol=1e-5, atol=1e-7)


def test_subspace_rotation_rate_matches_principal_angles():
    rng = np.random.default_rng(1)
    K = _random_spd(rng, 7)
    V = rng.standard_normal((7, 7))
    V = V + V.T
    rate = drift.subspace_rotation_rate(K, V, 3)
    h = 1e-6
    _, U0 = np.linalg.eigh(K)
    _, U1 = np.linalg.eigh(K + h * V)
    angles = drift.principal_angles(U0[:, -3:], U1[:, -3:])
    assert rate == pytest.approx(np.linalg.norm(angles) / h, rel=1e-4)


def test_degenerate_kernel_raises():
    with pytest.raises(ValueError, match="degenerate"):
        drift.perturbation_rates(np.diag([2.0, 2.0, 1.0]), np.eye(3), k=1)
    with pytest.raises(ValueError, match="no gap"):
        drift.subspace_rotation_rate(np.diag([2.0, 1.0, 1.0]), np.eye(3), 2)


def test_principal_angles_known_case():
    a = 0.3
    u = np.array([[1.0], [0.0], [0.0]])
    v = np.array([[np.cos(a)], [np.sin(a)], [0.0]])
    assert drift.principal_angles(u, v)[0] == pytest.approx(a, rel=1e-12)
    plane = np.eye(3)[:, :2]
    np.testing.assert_allclose(drift.principal_angles(plane, plane @ np.array([[1.0, 2.0], [3.0, -1.0]])), 0.0, atol=1e-7)


def test_eigenspace_change_pure_rescaling():
    rng = np.random.default_rng(2)
    K = _random_spd(rng, 5)
    out = drift.eigenspace_change(K, 2.0 * K, 3)
    assert out["max_angle"] < 1e-7
    assert out["eigenvalue_change"] == pytest.approx(1.0)
    assert out["log_eigenvalue_change"] == pytest.approx(np.log(2.0))
    assert drift.relative_drift(K, 2.0 * K) == pytest.approx(1.0)


def test_spectral_speeds_on_pure_eigenvalue_motion_and_pure_rotation():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    lam0 = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    times = np.array([0.0, 0.5, 1.5])
    grow = np.stack([q @ np.diag(lam0 * np.exp(t)) @ q.T for t in times])
    out = drift.spectral_speeds(grow, times, 2)
    np.testing.assert_allclose(out["eigenvalue_speed"], np.sqrt(2.0), rtol=1e-10)
    assert np.all(out["eigenvector_speed"] < 1e-7)
    # rotate the plane (e1, e5) at unit angular speed: eigenvalues fixed, top-1 space turns
    def rot(t):
        g = np.eye(5)
        g[0, 0] = g[4, 4] = np.cos(t)
        g[0, 4], g[4, 0] = -np.sin(t), np.sin(t)
        return g
    spin = np.stack([rot(t) @ np.diag(lam0) @ rot(t).T for t in times])
    out = drift.spectral_speeds(spin, times, 1)
    np.testing.assert_allclose(out["eigenvector_speed"], 1.0, rtol=1e-8)
    assert np.all(out["eigenvalue_speed"] < 1e-10)


def test_softmax_output_hessian_matches_autodiff():
    logits = jax.random.normal(jax.random.PRNGKey(6), (3, 4), jnp.float64)
    labels = jnp.array([0, 2, 1])
    loss = lambda z: -jnp.sum(jax.nn.log_softmax(z.reshape(3, 4))[jnp.arange(3), labels])
    dense = jax.hessian(loss)(logits.reshape(-1))
    np.testing.assert_allclose(drift.softmax_output_hessian(logits), dense, rtol=1e-12, atol=1e-14)


def test_residual_dynamics_exact_for_linear_model():
    # linear model + squared error: gradient descent residuals follow (I - lr K)^t r0 exactly
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6, 3))
    y = rng.standard_normal(6)
    w = rng.standard_normal(3)
    K, lr = X @ X.T, 0.05
    r, rs = X @ w - y, []
    for _ in range(5):
        rs.append(r.copy())
        w = w - lr * X.T @ r
        r = X @ w - y
    pred = drift.residual_dynamics(K, np.eye(6), rs[0], np.arange(5), lr=lr, discrete=True)
    np.testing.assert_allclose(pred, np.array(rs), rtol=1e-12, atol=1e-12)
    cont = drift.residual_dynamics(K, np.eye(6), rs[0], [0.0, 4.0], lr=1e-3)
    np.testing.assert_allclose(cont[1], drift.residual_dynamics(K, np.eye(6), rs[0], [4000], lr=1e-6, discrete=True)[0], rtol=1e-3)


def test_train_with_kernels_records_the_kernel(small_mlp):
    f, params, x, _ = small_mlp
    y = jnp.zeros((4, 2))
    loss = lambda p: 0.5 * jnp.sum((f(p, x) - y) ** 2)
    final, hist, kernels = drift.train_with_kernels(f, loss, params, optax.sgd(0.01), 6, x, record_every=3)
    assert list(hist.steps) == [0, 3, 6]
    assert kernels.shape == (3, 8, 8)
    np.testing.assert_allclose(kernels[0], drift.flat_kernel(f, params, x), rtol=1e-12)
    np.testing.assert_allclose(kernels[-1], drift.flat_kernel(f, final, x), rtol=1e-12)


def test_bad_inputs_raise(small_mlp):
    f, params, x, r = small_mlp
    with pytest.raises(ValueError, match="residual must have shape"):
        drift.kernel_velocity(f, params, x, r[:3])
    with pytest.raises(ValueError, match="residual"):
        drift.kernel_velocity(f, params, x, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="square"):
        drift.perturbation_rates(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        drift.perturbation_rates(np.array([[1.0, 2.0], [0.0, 1.0]]), np.eye(2))
    with pytest.raises(ValueError, match="k must satisfy"):
        drift.subspace_rotation_rate(np.eye(3), np.eye(3), 3)
    with pytest.raises(TypeError, match="k must be an integer"):
        drift.eigenspace_change(np.eye(3), np.eye(3), 1.5)
    with pytest.raises(ValueError, match="same D"):
        drift.principal_angles(np.ones((3, 1)), np.ones((4, 1)))
    with pytest.raises(ValueError, match="strictly increasing"):
        drift.spectral_speeds(np.stack([np.eye(3)] * 2), [1.0, 1.0], 1)
    with pytest.raises(ValueError, match="xi must be a cube"):
        drift.velocity_from_contraction(np.ones((2, 3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="logits"):
        drift.softmax_output_hessian(np.ones(3))
    with pytest.raises(ValueError, match="output_hessian"):
        drift.residual_dynamics(np.eye(3), np.eye(2), np.ones(3), [1.0])
    with pytest.raises(ValueError, match="params_list is empty"):
        drift.kernel_trajectory(f, [], x)
