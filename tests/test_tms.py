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


def test_bad_settings_raise():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="n_hidden"):
        tms.init_params(5, 6, key=key)
    for s in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="sparsity"):
            tms.make_data(10, 5, s, key=key)
    with pytest.raises(ValueError, match="n_points"):
        tms.make_data(0, 5, 0.5, key=key)
    with pytest.raises(ValueError, match="decay"):
        tms.importance(5, 1.5)
    params = tms.init_params(5, 2, key=key, dtype=jnp.float64)
    x = tms.make_data(4, 5, 0.5, key=key, dtype=jnp.float64)
    with pytest.raises(ValueError, match="x1"):
        tms.closed_form_entk(params, x[:, :4])
    with pytest.raises(TypeError, match="params"):
        tms.closed_form_entk({"w": params["w"]}, x)
    with pytest.raises(ValueError, match=r"params\['b'\]"):
        tms.closed_form_dual({"w": params["w"], "b": params["b"][:3]}, x)
    with pytest.raises(ValueError, match="output_weights"):
        tms.dual_kernel(tms.apply, params, x, output_weights=np.ones(4))
    with pytest.raises(ValueError, match="output_weights"):
        tms.closed_form_dual(params, x, output_weights=-np.ones(5))
    with pytest.raises(ValueError, match="k must"):
        tms.flattened_eigenpairs(tms.apply, params, x, k=0)
    with pytest.raises(ValueError, match="gram"):
        tms.flattened_eigenpairs(tms.apply, params, x, k=1, gram=np.eye(3))
    with pytest.raises(ValueError, match="NaN|non-finite"):
        tms.closed_form_entk(params, x.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="share D"):
        tms.alignment(np.ones((6, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="weights"):
        tms.train_tms(x, 2, key=key, weights=np.ones(3), steps=1)
