"""Tests of helpers.transformer against independent computations: a per-example NumPy
decoder with a causal mask over all three positions, per-example autodiff Jacobians, a plain
optax loop, numpy FFTs for the Fourier quantities and the progress measures."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import fourier, modular, ntk
from helpers import transformer as tf

jax.config.update("jax_enable_x64", True)

SIZES = dict(d_model=8, n_heads=2, d_head=3, d_mlp=10)


def _params(p=5, seed=0, dtype=jnp.float64):
    return tf.init_params(jax.random.PRNGKey(seed), p, dtype=dtype, **SIZES)


def _numpy_decoder(params, tok):
    """Logits at every position of a causal one-layer decoder, one sequence at a time (NumPy)."""
    q = {k: np.asarray(v, np.float64) for k, v in params.items()}
    out = []
    for seq in np.asarray(tok):
        resid = q["embed"][seq] + q["pos"]                                   # (3, d)
        attn_out = np.zeros_like(resid)
        for h in range(q["W_Q"].shape[0]):
            Q, K, V = resid @ q["W_Q"][h], resid @ q["W_K"][h], resid @ q["W_V"][h]
            scores = Q @ K.T / np.sqrt(Q.shape[1])
            scores = np.where(np.tril(np.ones((3, 3))) > 0, scores, -np.inf)   # causal mask
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            attn_out += weights @ V @ q["W_O"][h]
        mid = resid + attn_out
        post = mid + np.maximum(mid @ q["W_in"], 0) @ q["W_out"]
        out.append(post @ q["unembed"])
    return np.stack(out)                                                     # (N, 3, p)


def test_tokens_and_one_hot_inputs_cover_all_pairs():
    p = 5
    tok = tf.tokens(p)
    assert tok.shape == (p * p, 3)
    assert np.array_equal(tok[:, 0] * p + tok[:, 1], np.arange(p * p)) and np.all(tok[:, 2] == p)
    x = tf.one_hot_inputs(p)
    assert x.shape == (p * p, 3, p + 1) and np.array_equal(x.argmax(-1), tok)


def test_apply_is_the_equals_position_of_a_causal_decoder():
    p = 7
    params = _params(p)
    full = _numpy_decoder(params, tf.tokens(p))
    assert np.allclose(tf.apply(params, tf.one_hot_inputs(p, dtype=np.float64)), full[:, 2], rtol=1e-10, atol=1e-12)
    assert np.allclose(tf.apply_tokens(params, tf.tokens(p)), full[:, 2], rtol=1e-10, atol=1e-12)


def test_split_is_the_split_of_modular_make_data():
    for seed in (0, 3):
        assert np.array_equal(tf.split(11, 0.6, seed), modular.make_data(11, train_fraction=0.6, seed=seed).train_idx)


def test_component_kernels_match_per_example_jacobians():
    """ntk.layerwise_entk with COMPONENTS vs J J^T from per-example jax.jacrev (float64)."""
    p = 5
    params = _params(p, seed=1)
    x = tf.one_hot_inputs(p, dtype=np.float64)[::3]
    single = lambda q, xi: tf.apply(q, xi[None])[0]
    jac = jax.vmap(jax.jacrev(single), in_axes=(None, 0))(params, jnp.asarray(x))
    kernels = ntk.layerwise_entk(tf.apply, params, x, groups=tf.COMPONENTS, collapse="class_mean")
    assert set(kernels) == set(tf.COMPONENTS)
    for name, keys in tf.COMPONENTS.items():
        j = jnp.concatenate([jac[k].reshape(x.shape[0], p, -1) for k in keys], axis=-1)
        reference = np.einsum("aip,bip->ab", j, j) / p
        assert np.allclose(kernels[name], reference, rtol=1e-8, atol=1e-10 * np.abs(reference).max()), name


def test_train_runs_matches_a_plain_optax_loop_per_seed():
    """The vmapped, compiled loop equals one optax.adamw loop per seed, written out here."""
    p, epochs, every = 5, 6, 2
    lr, wd, beta2, frac = 3e-3, 1.0, 0.98, 0.6
    runs = tf.train_runs(p, [0, 2], train_fraction=frac, lr=lr, weight_decay=wd, beta2=beta2,
                         epochs=epochs, record_every=every, snapshot_at=[4], **SIZES)
    assert runs.epochs.tolist() == [0, 2, 4, 6] and runs.snapshot_epochs.tolist() == [0, 4, 6]
    tok = tf.tokens(p)
    labels = (tok[:, 0] + tok[:, 1]) % p
    for i, seed in enumerate([0, 2]):
        q = tf.init_params(jax.random.PRNGKey(seed), p, **SIZES)
        idx = tf.split(p, frac, seed)
        test = np.setdiff1d(np.arange(p * p), idx)
        opt = optax.adamw(lr, b1=0.9, b2=beta2, weight_decay=wd)
        state = opt.init(q)
        loss = lambda w: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(tf.apply_tokens(w, tok[idx]), labels[idx]))
        for e in range(epochs + 1):
            if e in (4, 6):
                for k in tf.PARAM_KEYS:
                    assert np.allclose(runs.snapshot(i, e)[k], q[k], rtol=1e-4, atol=1e-6), (seed, e, k)
            if e % every == 0:
                logits = np.asarray(tf.apply_tokens(q, tok), np.float64)
                z = logits - logits.max(1, keepdims=True)
                ce = np.log(np.exp(z).sum(1)) - z[np.arange(p * p), labels]
                r = e // every
                assert np.isclose(runs.metrics["train_loss"][i, r], ce[idx].mean(), rtol=1e-4)
                assert np.isclose(runs.metrics["test_loss"][i, r], ce[test].mean(), rtol=1e-4)
                assert np.isclose(runs.metrics["test_acc"][i, r], np.mean(logits[test].argmax(1) == labels[test]))
            grads = jax.grad(loss)(q)
            updates, state = opt.update(grads, state, q)
            q = optax.apply_updates(q, updates)


def test_embedding_spectrum_finds_planted_frequencies():
    p = 11
    params = _params(p, dtype=jnp.float64)
    s = np.arange(p)
    rng = np.random.default_rng(0)
    emb = np.outer(np.cos(2 * np.pi * 3 * s / p + 0.4), rng.normal(size=8)) + 0.5 * np.outer(np.sin(2 * np.pi * 5 * s / p), rng.normal(size=8))
    params["embed"] = jnp.asarray(np.vstack([emb, rng.normal(size=(1, 8))]))
    power = tf.embedding_spectrum(params)
    assert power.shape == (p // 2 + 1,)
    assert np.isclose(power.sum(), np.sum(emb**2))                       # Parseval over the p token rows
    assert set(np.flatnonzero(power > 1e-9 * power.max())) == {3, 5}
    keys, gap = tf.key_frequencies(power + 1e-6)
    assert keys.tolist() == [3, 5] and gap > 1e3


def test_key_frequencies_takes_the_largest_gap():
    power = np.array([9.0, 1.0, 0.02, 0.5, 0.01, 0.9])
    keys, gap = tf.key_frequencies(power)
    assert keys.tolist() == [1, 3, 5] and np.isclose(gap, 0.5 / 0.02)


def test_torus_frequency_shares_against_numpy_fft():
    p = 9
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    w = 2 * np.pi / p
    tables = np.stack([
        np.cos(w * 2 * a) * np.sin(w * 2 * b) + np.cos(w * 2 * (a - b)),   # frequency 2 only
        np.cos(w * a) + np.cos(w * 3 * b),                                   # half at 1, half at 3
        np.random.default_rng(0).normal(size=(p, p)),
        np.ones((p, p)),
    ], axis=-1)
    shares = tf.torus_frequency_shares(tables)
    assert np.allclose(shares[0], np.eye(p // 2)[1], atol=1e-12)
    assert np.allclose(shares[1, [0, 2]], 0.5) and np.allclose(np.delete(shares[1], [0, 2]), 0, atol=1e-12)
    assert np.allclose(shares[3], 0)
    # independent: |FFT|^2 on the index sets {0, +-k} x {0, +-k}
    F = np.abs(np.fft.fft2(tables[..., 2])) ** 2
    var = F.sum() - F[0, 0]
    for k in range(1, p // 2 + 1):
        idx = [0, k, p - k]
        assert np.isclose(shares[2, k - 1], (F[np.ix_(idx, idx)].sum() - F[0, 0]) / var)


def test_logit_projection_against_numpy_fft():
    p = 7
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(p * p, p))
    keys = np.array([2, 3])
    L = logits.reshape(p, p, p)                                              # [a, b, c]
    F = np.fft.fftn(L)
    keep = np.zeros_like(F, dtype=bool)
    for k in keys:
        for s in (k, p - k):
            keep[s, s, (-s) % p] = True                                      # e^{i w s (a + b - c)}
    restricted = np.real(np.fft.ifftn(np.where(keep, F, 0))).reshape(p * p, p)
    assert np.allclose(tf.logit_projection(logits, p, keys, keep=True), restricted, atol=1e-12)
    F2 = np.fft.fft2(L, axes=(0, 1))
    drop = np.zeros((p, p), dtype=bool)
    for k in keys:
        drop[k, k] = drop[p - k, p - k] = True                               # e^{i w k (a + b)} for every c
    excluded = np.real(np.fft.ifft2(np.where(drop[:, :, None], 0, F2), axes=(0, 1))).reshape(p * p, p)
    assert np.allclose(tf.logit_projection(logits, p, keys, keep=False), excluded, atol=1e-12)


def test_progress_measures_against_direct_cross_entropy():
    p = 7
    params = _params(p, seed=2)
    idx = tf.split(p, 0.5, 0)
    keys = np.array([1, 3])
    pm = tf.progress_measures(params, idx, keys)
    logits = np.asarray(tf.apply_tokens(params, tf.tokens(p)))
    labels = (np.arange(p * p) // p + np.arange(p * p) % p) % p
    logp = jax.nn.log_softmax(jnp.asarray(tf.logit_projection(logits, p, keys, keep=False)))
    assert np.isclose(pm["excluded_loss"], -np.mean(np.asarray(logp)[idx, labels[idx]]))
    logp = jax.nn.log_softmax(jnp.asarray(tf.logit_projection(logits, p, keys, keep=True)))
    assert np.isclose(pm["restricted_loss"], -np.mean(np.asarray(logp)[np.arange(p * p), labels]))
    power = tf.embedding_spectrum(params)
    assert np.isclose(pm["key_power"], power[keys].sum() / power[1:].sum())


def test_symmetric_families_span_the_one_operand_functions():
    p = 9
    sym, anti = tf.symmetric_family(p, "sym"), tf.symmetric_family(p, "anti")
    both = np.concatenate([sym, anti]).reshape(-1, p * p)
    assert np.allclose(both @ both.T, np.eye(both.shape[0]), atol=1e-12)
    ab = np.concatenate([fourier.fourier_family(p, "a"), fourier.fourier_family(p, "b")]).reshape(-1, p * p)
    assert np.allclose(both.T @ both, ab.T @ ab, atol=1e-12)                 # the same projector
    swap = (np.arange(p * p) % p) * p + np.arange(p * p) // p                 # (a, b) -> (b, a)
    assert np.allclose(sym[..., swap], sym) and np.allclose(anti[..., swap], -anti)


@pytest.mark.parametrize("use_perm", [False, True])
def test_frequency_rotation_recovers_planted_modes(use_perm):
    p = 11
    perm = np.random.default_rng(3).permutation(p) if use_perm else None
    relabel = None if perm is None else (perm, perm)
    modes = np.concatenate([
        fourier.fourier_family(p, "sum", relabel=relabel)[[1]].reshape(-1, p * p),   # frequency 2
        tf.symmetric_family(p, "sym", perm=perm)[[4]].reshape(-1, p * p),             # frequency 5
    ]).T
    mixed = modes @ np.linalg.qr(np.random.default_rng(4).normal(size=(4, 4)))[0]
    rotated, content, score = tf.frequency_rotation(mixed, p, perm=perm)
    assert score > 1 - 1e-9
    assert sorted(content.argmax(axis=1) + 1) == [2, 2, 5, 5]
    if use_perm:  # the same subspace read on the true torus is not a set of single-frequency modes
        assert tf.frequency_rotation(mixed, p)[2] < 0.9
