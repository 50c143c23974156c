"""Tests of helpers.ntk against independent computations (float64 throughout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.sparse.linalg import LinearOperator

from helpers import models, ntk

jax.config.update("jax_enable_x64", True)


def small_mlp(seed=0, sizes=(3, 6, 5, 4), activation="tanh"):
    return models.make_mlp(list(sizes), key=jax.random.PRNGKey(seed), activation=activation, dtype=jnp.float64)


def inputs(seed, n, d=3):
    return np.asarray(jax.random.normal(jax.random.PRNGKey(100 + seed), (n, d), jnp.float64))


def dense_jacobian_by_jacfwd(f, params, x):
    """(N*C, P) Jacobian via forward mode on the raveled parameter vector: an independent route."""
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jacfwd(lambda v: f(unravel(v), x).reshape(-1))(flat))


def fd_jacobian(f, params, x, eps=1e-6):
    flat, unravel = ravel_pytree(params)
    flat = np.asarray(flat)
    cols = []
    for mu in range(flat.size):
        e = np.zeros_like(flat)
        e[mu] = eps
        plus = np.asarray(f(unravel(jnp.asarray(flat + e)), x)).reshape(-1)
        minus = np.asarray(f(unravel(jnp.asarray(flat - e)), x)).reshape(-1)
        cols.append((plus - minus) / (2 * eps))
    return np.stack(cols, axis=1)


# -----------------------------------------------------------------------------------------
# the kernel itself
# -----------------------------------------------------------------------------------------


def test_entk_matches_finite_differences():
    f, params = small_mlp(0)
    x = inputs(0, 7)
    J = fd_jacobian(f, params, x)
    K = ntk.flatten(ntk.entk(f, params, x))
    np.testing.assert_allclose(K, J @ J.T, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("method", ["generic", "structured", "auto"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "sin"])
def test_entk_matches_dense_jacobian_product_cross_kernel(activation, method):
    f, params = small_mlp(1, activation=activation)
    x1, x2 = inputs(1, 6), inputs(2, 4)
    J1 = dense_jacobian_by_jacfwd(f, params, x1)
    J2 = dense_jacobian_by_jacfwd(f, params, x2)
    K = ntk.entk(f, params, x1, x2, method=method)
    assert K.shape == (6, 4, 4, 4)
    np.testing.assert_allclose(ntk.flatten(K), J1 @ J2.T, rtol=1e-10, atol=1e-12)
    # the (n, i) -> n*C + i convention of flatten
    assert np.isclose(ntk.flatten(K)[2 * 4 + 1, 3 * 4 + 2], K[2, 3, 1, 2])


def test_jacobian_shape_and_values():
    f, params = small_mlp(2)
    x = inputs(3, 5)
    J = ntk.jacobian(f, params, x)
    P = ravel_pytree(params)[0].size
    assert J.shape == (5, 4, P)
    np.testing.assert_allclose(np.asarray(J).reshape(20, P), dense_jacobian_by_jacfwd(f, params, x), rtol=1e-10, atol=1e-12)


def test_chunking_does_not_change_the_kernel():
    # the generic path's block loop (the structured path has its own chunking tests)
    f, params = small_mlp(3)
    x1, x2 = inputs(4, 11), inputs(5, 9)
    whole = ntk.entk(f, params, x1, x2, method="generic")
    tiny_blocks = ntk.entk(f, params, x1, x2, block_bytes=1, method="generic")  # one example per chunk
    np.testing.assert_allclose(tiny_blocks, whole, rtol=1e-12, atol=1e-13)
    sym_whole = ntk.entk(f, params, x1, method="generic")
    sym_blocks = ntk.entk(f, params, x1, block_bytes=3 * 4 * 8 * 200, method="generic")
    np.testing.assert_allclose(sym_blocks, sym_whole, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(sym_whole, sym_whole.transpose(1, 0, 3, 2), atol=1e-12)


def test_class_mean_entk_and_collapses():
    f, params = small_mlp(4)
    x1, x2 = inputs(6, 8), inputs(7, 5)
    K = ntk.entk(f, params, x1, x2)
    expected = np.mean([K[:, :, c, c] for c in range(4)], axis=0)
    np.testing.assert_allclose(ntk.class_mean(K), expected, rtol=1e-12)
    np.testing.assert_allclose(ntk.class_mean_entk(f, params, x1, x2), expected, rtol=1e-10, atol=1e-12)
    for method in ("generic", "structured"):
        np.testing.assert_allclose(
            ntk.class_mean_entk(f, params, x1, block_bytes=1, method=method),
            ntk.class_mean(ntk.entk(f, params, x1, method="generic")),
            rtol=1e-10,
            atol=1e-12,
        )
    np.testing.assert_allclose(ntk.per_class(K, 2), K[:, :, 2, 2])


# -----------------------------------------------------------------------------------------
# closed forms of seed 002 App. B
# -----------------------------------------------------------------------------------------


def test_tms_closed_form_eq14():
    n_feat, m, N = 7, 3, 6
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    W = jax.random.normal(k1, (m, n_feat), jnp.float64)
    b = 0.3 * jax.random.normal(k2, (n_feat,), jnp.float64)
    x = jax.random.uniform(k3, (N, n_feat), jnp.float64)

    def f(p, x):
        return jax.nn.relu(x @ p["W"].T @ p["W"] + p["b"])

    K = ntk.entk(f, {"W": W, "b": b}, x)
    # eq. (14) is the kernel of W alone; the bias adds g_i(x) g_j(x') delta_ij.
    # K_ij = g_i g_j [ (W^T W)_ij (x.x') + x_j (W^T W x')_i + x'_i (W^T W x)_j + delta_ij (Wx . Wx') ]
    Wn, bn, xn = map(np.asarray, (W, b, x))
    WtW = Wn.T @ Wn
    gate = (xn @ WtW + bn > 0).astype(float)  # (N, n)
    WtWx = xn @ WtW  # row a: W^T W x_a
    Wx = xn @ Wn.T  # (N, m)
    closed = np.zeros((N, N, n_feat, n_feat))
    for a in range(N):
        for c in range(N):
            term = (
                WtW * (xn[a] @ xn[c])
                + np.outer(WtWx[c], xn[a])
                + np.outer(xn[c], WtWx[a])
                + np.eye(n_feat) * (Wx[a] @ Wx[c])
            )
            closed[a, c] = np.outer(gate[a], gate[c]) * (term + np.eye(n_feat))
    np.testing.assert_allclose(K, closed, rtol=1e-10, atol=1e-10)


def test_modular_closed_forms_eq16_eq18():
    from helpers import modular

    p, width = 5, 16
    data = modular.make_data(p, seed=0, dtype=np.float64)
    params = modular.init_params(jax.random.PRNGKey(3), p, width, dtype=jnp.float64)
    x = data.x[:12]
    layers = ntk.layerwise_entk(modular.apply, params, x)
    W1, W2 = np.asarray(params["W1"]), np.asarray(params["W2"])
    h = x @ W1.T / np.sqrt(2 * p)  # (N, width)
    # eq. (16) with this parametrisation's factors: d f_i / d W1_km = (2/n) W2_ik h_k x_m / sqrt(2p)
    k1 = 4.0 / (width**2 * 2 * p) * np.einsum("ik,jk,ak,bk,ab->abij", W2, W2, h, h, x @ x.T)
    # eq. (18): d f_i / d W2_i'k = delta_ii' h_k^2 / n
    k2 = np.einsum("ak,bk->ab", h**2, h**2)[:, :, None, None] * np.eye(p) / width**2
    np.testing.assert_allclose(layers["W1"], k1, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(layers["W2"], k2, rtol=1e-10, atol=1e-14)


# -----------------------------------------------------------------------------------------
# layerwise kernel
# -----------------------------------------------------------------------------------------


def test_layerwise_groups_sum_to_total():
    f, params = small_mlp(5, sizes=(3, 5, 5, 5, 2))
    x1, x2 = inputs(8, 6), inputs(9, 3)
    total = ntk.entk(f, params, x1, x2)
    layers = ntk.layerwise_entk(f, params, x1, x2)
    assert list(layers) == ["layer1", "layer2", "layer3", "layer4"]
    np.testing.assert_allclose(sum(layers.values()), total, rtol=1e-10, atol=1e-12)
    # every layer contributes: no group is silently empty
    assert all(np.abs(k).max() > 0 for k in layers.values())
    # custom groups: a dict of top-level keys, and a label pytree (weights vs biases)
    by_dict = ntk.layerwise_entk(f, params, x1, x2, groups={"early": ["layer1", "layer2"], "late": ["layer3", "layer4"]})
    np.testing.assert_allclose(by_dict["early"], layers["layer1"] + layers["layer2"], rtol=1e-10, atol=1e-12)
    labels = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key, params)
    by_kind = ntk.layerwise_entk(f, params, x1, x2, groups=labels)
    assert set(by_kind) == {"w", "b"}
    np.testing.assert_allclose(by_kind["w"] + by_kind["b"], total, rtol=1e-10, atol=1e-12)
    cm = ntk.layerwise_entk(f, params, x1, groups=None, collapse="class_mean")
    np.testing.assert_allclose(sum(cm.values()), ntk.class_mean(ntk.entk(f, params, x1)), rtol=1e-10, atol=1e-12)


def test_works_on_unusual_pytrees():
    # params as a tuple of a matrix and a list, model with a residual connection and a cosine
    key = jax.random.PRNGKey(11)
    k1, k2, k3 = jax.random.split(key, 3)
    params = (jax.random.normal(k1, (4, 4), jnp.float64), [jax.random.normal(k2, (4, 2), jnp.float64), jnp.ones(2, jnp.float64)])

    def f(p, x):
        w, (v, c) = p
        h = x + jnp.cos(x @ w)
        return h @ v * c

    x = np.asarray(jax.random.normal(k3, (5, 4), jnp.float64))
    J = dense_jacobian_by_jacfwd(f, params, x)
    np.testing.assert_allclose(ntk.flatten(ntk.entk(f, params, x)), J @ J.T, rtol=1e-10, atol=1e-12)
    labels = (("first"), ["second", "second"])
    parts = ntk.layerwise_entk(f, params, x, groups=labels)
    np.testing.assert_allclose(parts["first"] + parts["second"], ntk.entk(f, params, x), rtol=1e-10, atol=1e-12)


# -----------------------------------------------------------------------------------------
# operator and spectra
# -----------------------------------------------------------------------------------------


def test_operator_matches_dense_kernel():
    f, params = small_mlp(6)
    x = inputs(10, 9)
    K = ntk.entk(f, params, x)
    op = ntk.entk_operator(f, params, x)
    assert isinstance(op, LinearOperator) and op.shape == (36, 36)
    rng = np.random.default_rng(0)
    v = rng.standard_normal(36)
    np.testing.assert_allclose(op @ v, ntk.flatten(K) @ v, rtol=1e-10, atol=1e-12)
    V = rng.standard_normal((36, 3))
    np.testing.assert_allclose(op @ V, ntk.flatten(K) @ V, rtol=1e-10, atol=1e-12)
    cm = ntk.entk_operator(f, params, x, collapse="class_mean")
    assert cm.shape == (9, 9)
    np.testing.assert_allclose(cm @ np.eye(9), ntk.class_mean(K), rtol=1e-10, atol=1e-12)


def test_top_eigenpairs_operator_agrees_with_dense():
    f, params = small_mlp(7)
    x = inputs(11, 10)
    Kf = ntk.flatten(ntk.entk(f, params, x))
    vals_d, vecs_d = ntk.top_eigenpairs(Kf, 5)
    vals_o, vecs_o = ntk.top_eigenpairs(ntk.entk_operator(f, params, x), 5)
    assert np.all(np.diff(vals_d) <= 0)
    np.testing.assert_allclose(vals_o, vals_d, rtol=1e-8)
    np.testing.assert_allclose(np.abs(np.sum(vecs_o * vecs_d, axis=0)), 1.0, atol=1e-6)
    np.testing.assert_allclose(Kf @ vecs_d, vecs_d * vals_d, atol=1e-8 * vals_d[0])
    full = np.linalg.eigvalsh(Kf)[::-1]
    np.testing.assert_allclose(vals_d, full[:5], rtol=1e-10)


def test_find_cliffs_on_planted_spectra():
    rng = np.random.default_rng(1)
    # constant mode, a block of 12, a block of 12, then a slowly decaying tail and zeros
    lam = np.concatenate([[100.0], 10 + rng.uniform(0, 1, 12), 1 + rng.uniform(0, 0.1, 12), 0.05 * 0.97 ** np.arange(40), np.zeros(10)])
    lam = np.sort(lam)[::-1]
    assert list(ntk.find_cliffs(lam)) == [1, 13, 25]
    assert list(ntk.find_cliffs(lam, top=3)) == [1, 13, 25]
    assert list(ntk.find_cliffs(lam, top=1)) == [25]  # 1.0 -> 0.05 is the largest drop
    # the drop into the null space is a rank effect, never a cliff
    assert 65 not in ntk.find_cliffs(lam, min_ratio=1.01, prominence=0)
    # a smooth power law has no cliff
    assert ntk.find_cliffs(1.0 / np.arange(1, 200) ** 1.5).size == 0
    ratios = ntk.drop_ratios(lam)
    assert np.isclose(ratios[0], lam[0] / lam[1]) and np.isnan(ratios[-1])


def test_linearized_dynamics_and_kernel_regression():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((6, 6))
    K = A @ A.T + 0.1 * np.eye(6)
    f0, y = rng.standard_normal(6), rng.standard_normal(6)
    lr = 0.5 / np.linalg.eigvalsh(K).max()
    f = f0.copy()
    for _ in range(25):
        f = f - lr * K @ (f - y)
    np.testing.assert_allclose(ntk.linearized_outputs(K, f0, y, [25], lr=lr, discrete=True)[0], f, rtol=1e-10)
    # continuous time: solves df/dt = -lr K (f - y); check the ODE by a small time difference
    t, dt = 3.0, 1e-6
    ft = ntk.linearized_outputs(K, f0, y, [t - dt, t + dt], lr=lr)
    np.testing.assert_allclose((ft[1] - ft[0]) / (2 * dt), -lr * K @ (ntk.linearized_outputs(K, f0, y, [t], lr=lr)[0] - y), rtol=1e-5, atol=1e-8)
    # t -> infinity on the training set: interpolation; off the set: kernel regression (f0 = 0)
    Kxt = rng.standard_normal((3, 6))
    np.testing.assert_allclose(ntk.kernel_regression(K, K, y), y, rtol=1e-10)
    np.testing.assert_allclose(ntk.kernel_regression(Kxt, K, y), Kxt @ np.linalg.solve(K, y), rtol=1e-10)


# -----------------------------------------------------------------------------------------
# bad input
# -----------------------------------------------------------------------------------------


# Bad input of every public function: tests/test_bad_inputs_ntk.py (table-driven).

