"""Tests of helpers.drift against finite differences, closed forms and dense references (float64)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from jax.flatten_util import ravel_pytree

from helpers import drift, models, ntk
from helpers.train import train


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
    with pytest.raises(ValueError, match="k must be <= 2"):
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
    with pytest.raises(ValueError, match="params_list must hold at least one"):
        drift.kernel_trajectory(f, [], x)


# ----------------------------------------------------------------------------------------
# closed-form and infinite-width kernels
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation, bias, c, scale", [("tanh", True, 1, 1.0), ("tanh", True, 3, 0.3), ("relu", False, 2, 1.0), ("sin", True, 1, 2.0)])
def test_one_hidden_layer_kernel_matches_autodiff(activation, bias, c, scale):
    f, params = models.make_mlp([3, 9, c], key=jax.random.PRNGKey(11), activation=activation, bias=bias, output_scale=scale, dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(12), (6, 3), jnp.float64)
    theta, unravel = ravel_pytree(params)
    jac = jax.jacfwd(lambda t: f(unravel(t), x).reshape(-1))(theta)  # forward mode, dense: an independent route
    closed = drift.one_hidden_layer_kernel(params, x, activation=activation, output_scale=scale)
    np.testing.assert_allclose(np.asarray(closed), np.asarray(jac @ jac.T), rtol=1e-10, atol=1e-12)


def test_one_hidden_layer_kernel_vmaps_over_seeds():
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(3)])
    batch = jax.vmap(lambda k: models.mlp_init(k, [2, 7, 1], dtype=jnp.float64))(keys)
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 2), jnp.float64)
    stacked = jax.jit(jax.vmap(lambda p: drift.one_hidden_layer_kernel(p, x)))(batch)
    for i in range(3):
        single = jax.tree_util.tree_map(lambda a: a[i], batch)
        np.testing.assert_allclose(np.asarray(stacked[i]), np.asarray(drift.one_hidden_layer_kernel(single, x)), rtol=1e-12)


def test_infinite_width_kernel_sine_closed_form():
    # sin activation: E sin(u) sin(v) = exp(-(s11 + s22)/2) sinh(s12), E cos(u) cos(v) = exp(-(s11 + s22)/2) cosh(s12)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (7, 3), jnp.float64))
    for bias, bias_std in [(False, 0.0), (True, 0.3)]:
        cov = x @ x.T / 3 + (bias_std**2 if bias else 0.0)
        d = np.diag(cov)
        damp = np.exp(-(d[:, None] + d[None, :]) / 2)
        expected = damp * np.sinh(cov) + damp * np.cosh(cov) * (x @ x.T / 3 + (1.0 if bias else 0.0)) + (1.0 if bias else 0.0)
        got = drift.infinite_width_kernel(x, activation="sin", bias=bias, bias_std=bias_std, output_scale=0.5, n_outputs=2)
        np.testing.assert_allclose(got, 0.25 * np.kron(expected, np.eye(2)), rtol=1e-10, atol=1e-12)


def test_infinite_width_kernel_relu_arccosine():
    # relu, no bias (Cho & Saul 2009): E relu(u) relu(v) = s1 s2 (sin t + (pi - t) cos t) / (2 pi), E step(u) step(v) = (pi - t) / (2 pi)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (6, 2), jnp.float64))
    g = x @ x.T / 2
    s = np.sqrt(np.diag(g))
    t = np.arccos(np.clip(g / np.outer(s, s), -1, 1))
    expected = np.outer(s, s) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi) + (np.pi - t) / (2 * np.pi) * g
    got = drift.infinite_width_kernel(x, activation="relu", bias=False, order=200)
    # a kinked integrand: Gauss-Hermite converges only algebraically
    np.testing.assert_allclose(got, expected, rtol=5e-3, atol=5e-3)


def test_infinite_width_kernel_is_the_mean_of_wide_networks():
    x = jax.random.normal(jax.random.PRNGKey(6), (5, 2), jnp.float64)
    k_inf = drift.infinite_width_kernel(np.asarray(x))
    keys = jnp.stack([jax.random.PRNGKey(100 + s) for s in range(16)])
    batch = jax.vmap(lambda k: models.mlp_init(k, [2, 4096, 1], dtype=jnp.float64))(keys)
    draws = np.asarray(jax.vmap(lambda p: drift.one_hidden_layer_kernel(p, x))(batch))
    single = np.mean([np.linalg.norm(d - k_inf) for d in draws])
    # E K_0 = K_inf exactly: the mean of 16 draws is ~4x closer than one draw; a wrong K_inf would not be
    assert np.linalg.norm(draws.mean(axis=0) - k_inf) < 0.5 * single
    assert single / np.linalg.norm(k_inf) < 0.1


# ----------------------------------------------------------------------------------------
# kernel derivative, perturbation ratio, timescale ratio
# ----------------------------------------------------------------------------------------


def test_kernel_derivative_jvp_central_difference_and_gradient_flow(small_mlp):
    f, params, x, r = small_mlp
    direction = jax.tree_util.tree_map(lambda a: jnp.asarray(a), _unravel_like(params, _gradient_flow_direction(f, params, x, r)))
    theta, unravel = ravel_pytree(params)
    jac_kernel = lambda p: (lambda j: j @ j.T)(jax.jacrev(lambda t: f(unravel(t), x).reshape(-1))(ravel_pytree(p)[0]))
    exact = drift.kernel_derivative(jac_kernel, params, direction)
    numeric = drift.kernel_derivative(lambda p: drift.flat_kernel(f, p, x), params, direction, step=1e-4)
    # gradient flow: the same as kernel_velocity (a different implementation: jvp of the Jacobian)
    np.testing.assert_allclose(exact, drift.kernel_velocity(f, params, x, r), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(numeric, exact, rtol=1e-6, atol=1e-8)


def _unravel_like(params, flat):
    return ravel_pytree(params)[1](flat)


def test_perturbation_ratio_against_rates_and_small_steps():
    rng = np.random.default_rng(7)
    K = _random_spd(rng, 8)
    V = rng.standard_normal((8, 8))
    V = V + V.T
    out = drift.perturbation_ratio(K, V, [1, 3])
    for j, k in enumerate([1, 3]):
        lam, U, lam_dot, U_dot = drift.perturbation_rates(K, V, k=k)
        a = np.linalg.norm(lam_dot / lam)
        b = np.linalg.norm(U_dot - U @ (U.T @ U_dot))  # (I - P_k) U'
        assert out["ratio"][j] == pytest.approx(a / b, rel=1e-10)
        # a small step of V: log-eigenvalue change over eigenspace angle -> the same ratio
        h = 1e-6
        lam2, U2 = drift.spectra(np.stack([K, K + h * V]), k)
        assert drift.timescale_ratio(lam2, U2, k)["ratio"] == pytest.approx(out["ratio"][j], rel=1e-4)
    spec = drift.spectra(K)
    again = drift.perturbation_ratio(None, V, 3, spectrum=spec)
    assert again["ratio"] == pytest.approx(out["ratio"][1], rel=1e-12)
    # a velocity diagonal in the eigenbasis turns nothing
    lam, U = spec
    assert drift.perturbation_ratio(K, U @ np.diag(np.arange(1.0, 9.0)) @ U.T, 2)["ratio"] > 1e12


def test_timescale_ratio_weights_intervals_by_length():
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    lam0 = np.array([5.0, 4.0, 3.0, 2.0, 1.0])

    def rot(t):
        g = np.eye(5)
        g[0, 0] = g[4, 4] = np.cos(t)
        g[0, 4], g[4, 0] = -np.sin(t), np.sin(t)
        return g

    # eigenvalues grow as exp(s), the top eigenvector turns at angle s / 2: path ratio sqrt(1) / (1/2) = 2 for k = 1
    kernel = lambda s: q @ rot(s / 2) @ np.diag(lam0 * np.exp(s)) @ rot(s / 2).T @ q.T
    coarse = drift.spectra(np.stack([kernel(s) for s in [0.0, 0.01, 0.8]]), 1)
    fine = drift.spectra(np.stack([kernel(s) for s in np.linspace(0.0, 0.8, 9)]), 1)
    for lam, U in (coarse, fine):
        assert drift.timescale_ratio(lam, U, 1)["ratio"] == pytest.approx(2.0, rel=1e-8)
    # the per-interval rates of the coarse record differ in weight; their plain mean is not the estimator
    out = drift.timescale_ratio(*coarse, 1)
    assert out["eigenvalue_path"] == pytest.approx(0.8, rel=1e-8)
    assert out["eigenvector_path"] == pytest.approx(0.4, rel=1e-8)


def test_loglog_slope_and_interval_against_scipy():
    rng = np.random.default_rng(9)
    widths = np.array([16.0, 64.0, 256.0, 1024.0])
    values = np.exp(rng.standard_normal((5, 1)) + np.outer(-0.7 + 0.1 * rng.standard_normal(5), np.log(widths)) + 0.05 * rng.standard_normal((5, 4)))
    fit = drift.loglog_slope(widths, values, level=0.9)
    slopes = [scipy.stats.linregress(np.log(widths), np.log(v)).slope for v in values]
    np.testing.assert_allclose(fit["slopes"], slopes, rtol=1e-12)
    low, high = scipy.stats.t.interval(0.9, df=4, loc=np.mean(slopes), scale=scipy.stats.sem(slopes))
    assert fit["ci"] == pytest.approx((low, high), rel=1e-10)
    np.testing.assert_allclose(fit["local"], np.diff(np.log(values), axis=1) / np.diff(np.log(widths)), rtol=1e-12)
    exact = drift.loglog_slope(widths, np.stack([widths**-0.5, 3 * widths**-0.5]))
    assert exact["mean"] == pytest.approx(-0.5, abs=1e-12) and exact["std"] == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------
# batched training
# ----------------------------------------------------------------------------------------


def test_train_recording_matches_one_run_per_member():
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (3, 4)])
    batch = jax.vmap(lambda k: models.mlp_init(k, [2, 6, 1], dtype=jnp.float64))(keys)
    x = jax.random.normal(jax.random.PRNGKey(9), (5, 2), jnp.float64)
    targets = jax.random.normal(jax.random.PRNGKey(10), (2, 5, 1), jnp.float64)
    loss = lambda p, t: jnp.mean((models.mlp_apply(p, x) - t) ** 2)
    opt = optax.adam(0.05)
    rec = drift.train_recording(loss, batch, opt, [0, 3, 7], args=targets)
    assert list(rec["steps"]) == [0, 3, 7]
    for i in range(2):
        single = jax.tree_util.tree_map(lambda a: a[i], batch)
        _, hist = train(lambda p: loss(p, targets[i]), single, opt, 8, record_at=[3, 7])
        for j, step in enumerate([0, 3, 7]):
            k = list(hist.steps).index(step)
            for a, b in zip(jax.tree_util.tree_leaves(rec["params"][j]), jax.tree_util.tree_leaves(hist.params[k])):
                np.testing.assert_allclose(np.asarray(a[i]), b, rtol=1e-10, atol=1e-12)
        # the recorded update is the step from 7 to 8
        moved = jax.tree_util.tree_map(lambda p, u: p[i] + u[i], rec["params"][-1], rec["updates"][-1])
        for a, b in zip(jax.tree_util.tree_leaves(moved), jax.tree_util.tree_leaves(hist.params[-1])):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-12)


def test_train_to_loss_stops_at_the_first_step_below_target():
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (5, 6, 7)])
    batch = jax.vmap(lambda k: models.mlp_init(k, [2, 8, 1], dtype=jnp.float64))(keys)
    x = jax.random.normal(jax.random.PRNGKey(11), (6, 2), jnp.float64)
    y = jnp.sin(x[:, :1])
    loss = lambda p, a: 0.5 * jnp.mean((a * models.mlp_apply(p, x) - y) ** 2)
    alphas = jnp.array([1.0, 0.5, 1.0])
    out = drift.train_to_loss(loss, batch, [0.5, 0.5, 0.3], target_fraction=0.3, max_steps=400, args=alphas)
    loss_jit, grad_jit = jax.jit(loss), jax.jit(jax.grad(loss))
    for i, rate in enumerate([0.5, 0.5, 0.3]):
        p = jax.tree_util.tree_map(lambda a: a[i], batch)
        start = float(loss_jit(p, alphas[i]))
        n = 0
        while float(loss_jit(p, alphas[i])) > 0.3 * start and n < 400:  # a plain Python loop: the reference
            p = jax.tree_util.tree_map(lambda w, g: w - rate * g, p, grad_jit(p, alphas[i]))
            n += 1
        assert out["steps"][i] == n and out["reached"][i]
        for a, b in zip(jax.tree_util.tree_leaves(out["params"]), jax.tree_util.tree_leaves(p)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-10, atol=1e-12)
