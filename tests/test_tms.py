"""Tests for helpers.tms: closed forms against autodiff, the dual trick against the dense
kernel, data statistics, alignment scores on constructed cases, and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ntk, tms

jax.config.update("jax_enable_x64", True)

N_FEAT, N_HID, N_PTS = 7, 3, 11


@pytest.fixture(scope="module")
def small():
    """Random weights with a nonzero bias (so that some outputs are off), float64."""
    x = tms.make_data(N_PTS, N_FEAT, 0.4, key=jax.random.PRNGKey(0), dtype=jnp.float64)
    params = tms.init_params(N_FEAT, N_HID, key=jax.random.PRNGKey(1), dtype=jnp.float64)
    params["b"] = 0.1 * jax.random.normal(jax.random.PRNGKey(2), (N_FEAT,), jnp.float64)
    return params, x


def test_closed_form_entk_matches_autodiff(small):
    params, x = small
    x2 = tms.make_data(5, N_FEAT, 0.2, key=jax.random.PRNGKey(3), dtype=jnp.float64)
    k_auto = ntk.entk(tms.apply, params, x, x2)
    k_form = tms.closed_form_entk(params, x, x2)
    assert k_form.shape == (N_PTS, 5, N_FEAT, N_FEAT)
    np.testing.assert_allclose(k_form, k_auto, rtol=0, atol=1e-12 * np.abs(k_auto).max())
    # the paper's eq. (14) is the W part: the layerwise kernel of "w" alone
    k_w = ntk.layerwise_entk(tms.apply, params, x, x2)["w"]
    np.testing.assert_allclose(tms.closed_form_entk(params, x, x2, bias=False), k_w, atol=1e-12 * np.abs(k_w).max())
    # some outputs are off somewhere, so the gating g is exercised
    g = (x @ params["w"].T @ params["w"] + params["b"]) > 0
    assert 0 < g.mean() < 1


def test_closed_form_entk_against_finite_differences(small):
    params, x = small
    # central differences along one weight W_{1,2} give one column of the Jacobian (eq. 13)
    t = {"w": jnp.zeros_like(params["w"]).at[1, 2].set(1.0), "b": jnp.zeros_like(params["b"])}
    eps = 1e-6
    plus = tms.apply({k: params[k] + eps * t[k] for k in params}, x)
    minus = tms.apply({k: params[k] - eps * t[k] for k in params}, x)
    fd = (plus - minus) / (2 * eps)  # (N, n): df_i(x)/dW_{1,2}
    w, b = params["w"], params["b"]
    g = ((x @ w.T @ w + b) > 0).astype(x.dtype)
    h = x @ w.T
    # eq. 13: df_i/dW_{a i'} = g_i (W_ai x_i' + delta_ii' h_a), with a = 1, i' = 2
    eq13 = g * (w[1][None, :] * x[:, 2:3] + (jnp.arange(N_FEAT) == 2)[None, :] * h[:, 1:2])
    np.testing.assert_allclose(fd, eq13, atol=1e-8)


@pytest.mark.parametrize("weights", [None, "importance"])
def test_duals_agree(small, weights):
    params, x = small
    d = None if weights is None else tms.importance(N_FEAT) ** 0.7
    g_auto = tms.dual_kernel(tms.apply, params, x, output_weights=d, batch_size=5)
    g_form = tms.closed_form_dual(params, x, output_weights=d)
    assert g_auto.shape == (N_FEAT + N_HID * N_FEAT,) * 2
    np.testing.assert_allclose(g_form, g_auto, atol=1e-12 * np.abs(g_auto).max())
    # dense reference: J^T D J from the explicit Jacobian
    jac = np.asarray(ntk.jacobian(tms.apply, params, x))  # (N, C, P)
    dd = np.ones(N_FEAT) if d is None else d
    ref = np.einsum("nip,i,niq->pq", jac, dd, jac)
    np.testing.assert_allclose(g_auto, ref, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_flattened_eigenpairs_match_dense_kernel(small, beta):
    params, x = small
    d = tms.importance(N_FEAT) ** beta
    dense = ntk.flatten(ntk.entk(tms.apply, params, x))
    scaled = np.sqrt(np.tile(d, N_PTS))[:, None] * dense * np.sqrt(np.tile(d, N_PTS))[None, :]
    lam_ref, u_ref = np.linalg.eigh(scaled)
    lam_ref, u_ref = lam_ref[::-1], u_ref[:, ::-1]
    k = 6
    lam, u = tms.flattened_eigenpairs(tms.apply, params, x, k=k, output_weights=d)
    nonzero = lam_ref[: lam.size]
    np.testing.assert_allclose(lam, np.clip(nonzero, 0, None), atol=1e-10 * lam_ref[0])
    # eigenvectors: unit norm, eigen-equation of the dense kernel, and equal up to sign
    np.testing.assert_allclose(np.linalg.norm(u, axis=0), 1.0, atol=1e-10)
    np.testing.assert_allclose(scaled @ u, u * lam[:k][None, :], atol=1e-9 * lam_ref[0])
    gaps = np.abs(np.diff(lam_ref[: k + 1])) > 1e-6 * lam_ref[0]
    simple = [j for j in range(k) if gaps[j] and (j == 0 or gaps[j - 1])]
    overlaps = np.abs(np.sum(u[:, simple] * u_ref[:, simple], axis=0))
    np.testing.assert_allclose(overlaps, 1.0, atol=1e-8)
    # the precomputed-gram route and the Lanczos route give the same spectrum
    gram = tms.closed_form_dual(params, x, output_weights=d)
    lam2, _ = tms.flattened_eigenpairs(tms.apply, params, x, k=k, output_weights=d, gram=gram, n_values=k)
    np.testing.assert_allclose(lam2, lam[:k], atol=1e-10 * lam_ref[0])


def test_flattened_eigenpairs_lanczos_path():
    x = tms.make_data(30, 20, 0.5, key=jax.random.PRNGKey(5), dtype=jnp.float64)
    params = tms.init_params(20, 10, key=jax.random.PRNGKey(6), dtype=jnp.float64)
    gram = tms.closed_form_dual(params, x)  # P = 220 > 4 * 10: eigsh path
    lam, u = tms.flattened_eigenpairs(tms.apply, params, x, k=5, gram=gram, n_values=10)
    ref = np.linalg.eigvalsh(gram)[::-1][:10]
    np.testing.assert_allclose(lam, ref, rtol=1e-9)
    assert u.shape == (30 * 20, 5)


def test_block_top_eigenvalues_and_rayleigh(small):
    params, x = small
    k = tms.closed_form_entk(params, x)
    ref = np.array([np.linalg.eigvalsh(k[:, :, i, i])[-1] for i in range(N_FEAT)])
    np.testing.assert_allclose(tms.block_top_eigenvalues(params, x), np.clip(ref, 0, None), atol=1e-10 * ref.max())
    d = tms.importance(N_FEAT) ** 0.4
    F = tms.feature_indicator(np.asarray(x))
    flat = ntk.flatten(k) * np.tile(d, N_PTS)[:, None] ** 0.5 * np.tile(d, N_PTS)[None, :] ** 0.5
    quotient = np.einsum("ri,rs,si->i", F, flat, F) / np.einsum("ri,ri->i", F, F)
    ray = tms.feature_rayleigh(params, x, output_weights=d)
    np.testing.assert_allclose(ray["total"], quotient, rtol=1e-10)
    np.testing.assert_allclose(ray["overlap"] + ray["cross"] + ray["hidden"] + ray["bias"], ray["total"])


def test_make_data_statistics():
    s = 0.7
    x = np.asarray(tms.make_data(4000, 30, s, key=jax.random.PRNGKey(7), normalize=False))
    on = x > 0
    # fraction of nonzero entries ~ 1 - S (binomial standard error ~ 0.0013)
    assert abs(on.mean() - (1 - s)) < 0.01
    # nonzero values are U[0, 1]: mean 1/2, variance 1/12
    assert abs(x[on].mean() - 0.5) < 0.01 and abs(x[on].var() - 1 / 12) < 0.005
    xn = np.asarray(tms.make_data(500, 30, s, key=jax.random.PRNGKey(7)))
    norms = np.linalg.norm(xn, axis=1)
    assert np.allclose(norms[norms > 0], 1.0)
    # same key, same data; normalisation only rescales rows
    np.testing.assert_allclose(xn[:500] * np.linalg.norm(x[:500], axis=1, keepdims=True), x[:500], atol=1e-6)


def test_importance_and_model():
    np.testing.assert_allclose(tms.importance(4, 0.8), [1, 0.8, 0.64, 0.512])
    params = tms.init_params(50, 10, key=jax.random.PRNGKey(0), dtype=jnp.float64)
    assert params["w"].shape == (10, 50) and np.all(params["b"] == 0)
    assert abs(np.std(np.asarray(params["w"])) - np.sqrt(2 / 60)) < 0.02
    x = tms.make_data(8, 50, 0.5, key=jax.random.PRNGKey(1), dtype=jnp.float64)
    out = tms.apply(params, x)
    np.testing.assert_allclose(out, np.maximum(np.asarray(x) @ np.asarray(params["w"]).T @ np.asarray(params["w"]), 0))
    loss = tms.weighted_mse(params, x, tms.importance(50))
    ref = np.mean(tms.importance(50) * (np.asarray(x) - np.asarray(out)) ** 2)
    assert np.isclose(float(loss), ref)


def test_training_reduces_loss():
    x = tms.make_data(100, 8, 0.5, key=jax.random.PRNGKey(2))
    params, hist = tms.train_tms(x, 3, key=jax.random.PRNGKey(3), weights=tms.importance(8), steps=300, lr=1e-2)
    assert hist.metrics["loss"][-1] < 0.5 * hist.metrics["loss"][0]
    assert tms.represented(params).dtype == bool


def test_alignment_scores_on_constructed_case():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(6, 4))
    F = tms.feature_indicator(x)
    assert F.shape == (24, 4)
    np.testing.assert_allclose(F.reshape(6, 4, 4)[:, np.arange(4), np.arange(4)], x)
    # eigenvectors equal to the normalised feature columns, permuted: a perfect 1:1 match
    perm = np.array([2, 0, 3, 1])
    u = F[:, perm] / np.linalg.norm(F[:, perm], axis=0)
    cos = tms.alignment(u, F)
    np.testing.assert_allclose(cos[perm, np.arange(4)], 1.0)
    sc = tms.alignment_scores(cos)
    assert sc["mutual_fraction"] == 1.0 and sc["found"] == 4
    np.testing.assert_array_equal(sc["best"][perm], np.arange(4))
    # two features sharing one eigenvector: only one of them is a mutual match
    u2 = np.stack([u[:, 0] + u[:, 1], u[:, 2], u[:, 3]], axis=1)
    sc2 = tms.alignment_scores(tms.alignment(u2, F))
    assert sc2["mutual_fraction"] == 0.75


@pytest.mark.parametrize("n_hidden", [2, 4])  # 2: order (x W^T) W; 4 > 0.4 n: order x (W^T W)
def test_train_many_is_independent_adam_runs(n_hidden):
    """Stacked training equals one helpers.train run per dataset and key (Adam is elementwise)."""
    keys = jax.random.split(jax.random.PRNGKey(11), 2)
    xs = jnp.stack([tms.make_data(40, 9, s, key=k, dtype=jnp.float64) for k, s in zip(keys, (0.2, 0.9))])
    init_keys = jax.random.split(jax.random.PRNGKey(12), 2)
    w = tms.importance(9)
    hist = tms.train_many(xs, n_hidden, keys=init_keys, weights=w, steps=120, lr=1e-2, record_at=[40])
    assert list(hist.steps) == [0, 40, 120] and hist.metrics["loss"].shape == (3, 2)
    for r in range(2):
        ref, ref_hist = tms.train_tms(xs[r], n_hidden, key=init_keys[r], weights=w, steps=120, lr=1e-2, record_every=40)
        np.testing.assert_allclose(hist.params[-1]["w"][r], ref["w"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(hist.params[-1]["b"][r], ref["b"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(hist.params[1]["w"][r], ref_hist.params[1]["w"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(hist.metrics["loss"][:, r], ref_hist.metrics["loss"][[0, 1, 3]], rtol=1e-9)
    # the runs differ (datasets and initial weights are not shared)
    assert np.abs(hist.params[-1]["w"][0] - hist.params[-1]["w"][1]).max() > 1e-3


def test_project_out_against_least_squares():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(8, 5)) * (rng.uniform(size=(8, 5)) > 0.4)
    x[0] = 0.3  # every feature active at least once
    F = tms.feature_indicator(x)
    B = tms.feature_indicator(np.ones_like(x))
    S = tms.feature_indicator((x != 0).astype(float))
    R = tms.project_out(F, [B, S])
    for i in range(5):
        basis = np.stack([B[:, i], S[:, i]], axis=1)
        coef, *_ = np.linalg.lstsq(basis, F[:, i], rcond=None)
        np.testing.assert_allclose(R[:, i], F[:, i] - basis @ coef, atol=1e-12)
        # on the rows of output i the residual is the feature centred within and off its support
        on = x[:, i] != 0
        rows = np.arange(8) * 5 + i
        np.testing.assert_allclose(R[rows[on], i], x[on, i] - x[on, i].mean(), atol=1e-12)
        np.testing.assert_allclose(R[rows[~on], i], 0.0, atol=1e-12)
    # a column inside the span of the controls is left with nothing, and alignment refuses it
    R2 = tms.project_out(B, [B])
    np.testing.assert_allclose(R2, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="indicator"):
        tms.alignment(np.eye(40)[:, :3], R2)


def test_alignment_is_the_cosine():
    rng = np.random.default_rng(4)
    u, F = rng.standard_normal((30, 4)), rng.standard_normal((30, 3))
    cos = tms.alignment(u, F)
    for i in range(3):
        for k in range(4):
            ref = abs(np.dot(F[:, i], u[:, k])) / np.sqrt(np.dot(F[:, i], F[:, i]) * np.dot(u[:, k], u[:, k]))
            assert abs(cos[i, k] - ref) < 1e-12


def test_eigenvalues_only():
    x = tms.make_data(10, 6, 0.3, key=jax.random.PRNGKey(8), dtype=jnp.float64)
    params = tms.init_params(6, 2, key=jax.random.PRNGKey(9), dtype=jnp.float64)
    lam, u = tms.flattened_eigenpairs(tms.apply, params, x, k=0, n_values=5)
    assert u.shape == (60, 0)
    ref = np.linalg.eigvalsh(ntk.flatten(ntk.entk(tms.apply, params, x)))[::-1][:5]
    np.testing.assert_allclose(lam, ref, atol=1e-10 * ref[0])
