"""Tests of helpers.modular: data, model, closed-form kernels (seed 002 App. B) and their
expectation at initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import modular, ntk

jax.config.update("jax_enable_x64", True)


def test_make_data_covers_all_pairs_with_a_disjoint_split():
    p = 7
    data = modular.make_data(p, train_fraction=0.6, seed=1)
    assert data.x.shape == (p * p, 2 * p) and data.y.shape == (p * p, p)
    idx = np.arange(p * p)
    assert np.array_equal(data.a, idx // p) and np.array_equal(data.b, idx % p)
    assert np.array_equal(np.argmax(data.x[:, :p], 1), data.a)
    assert np.array_equal(np.argmax(data.x[:, p:], 1), data.b)
    assert np.array_equal(np.argmax(data.y, 1), (data.a + data.b) % p)
    assert np.intersect1d(data.train_idx, data.test_idx).size == 0
    assert np.array_equal(np.union1d(data.train_idx, data.test_idx), idx)
    assert data.train_idx.size == round(0.6 * p * p)


def test_apply_matches_the_formula_neuron_by_neuron():
    p, n = 5, 6
    params = modular.init_params(jax.random.PRNGKey(0), p, n, dtype=jnp.float64)
    x = modular.make_data(p).x
    w1, w2 = np.asarray(params["W1"]), np.asarray(params["W2"])
    expected = np.zeros((p * p, p))
    for k in range(n):
        hidden = x @ w1[k] / np.sqrt(2 * p)
        expected += np.outer(hidden**2, w2[:, k]) / n
    assert np.allclose(modular.apply(params, jnp.asarray(x)), expected, rtol=1e-12)


def _layer_jacobians(params, x):
    """Per-example Jacobians of apply with respect to W1 and to W2: {name: (N, C, P_layer)}."""
    w1, w2 = params["W1"], params["W2"]
    return {
        "W1": ntk.jacobian(lambda w, xx: modular.apply({"W1": w, "W2": w2}, xx), w1, x),
        "W2": ntk.jacobian(lambda w, xx: modular.apply({"W1": w1, "W2": w}, xx), w2, x),
    }


def test_closed_forms_equal_jacobian_contractions():
    """Eqs. (16), (18) with this parametrisation vs J J^T from per-example autodiff Jacobians."""
    p, n = 5, 16
    params = modular.init_params(jax.random.PRNGKey(2), p, n, dtype=jnp.float64)
    x = modular.make_data(p, dtype=np.float64).x[:14]
    jac = _layer_jacobians(params, x)
    x1, x2 = x[:6], x[3:]
    full = modular.closed_form_kernels(params, x1, x2, collapse=None)
    mean = modular.closed_form_kernels(params, x1, x2)
    assert set(full) == set(mean) == {"W1", "W2"}
    for name, j in jac.items():
        reference = np.einsum("aip,bjp->abij", j[:6], j[3:])
        assert full[name].shape == reference.shape == (6, 11, p, p)
        assert np.abs(full[name] - reference).max() < 1e-12 * np.abs(reference).max(), name
        assert np.allclose(mean[name], ntk.class_mean(reference), rtol=1e-12, atol=0), name


def test_closed_forms_equal_the_public_layerwise_entk():
    p, n = 5, 8
    params = modular.init_params(jax.random.PRNGKey(3), p, n, dtype=jnp.float64)
    x = modular.make_data(p, dtype=np.float64).x
    auto = ntk.layerwise_entk(modular.apply, params, x, collapse="class_mean")
    closed = modular.closed_form_kernels(params, x)
    for name in ("W1", "W2"):
        rel = np.abs(closed[name] - auto[name]).max() / np.abs(auto[name]).max()
        assert rel < 1e-10, (name, rel)


def test_expected_kernels_at_init_match_the_average_over_initialisations():
    """Monte Carlo over independent inits: every entry within 5 standard errors of the
    Isserlis expectation."""
    p, n, draws = 5, 256, 24
    x = modular.make_data(p, dtype=np.float64).x
    samples = {"W1": [], "W2": []}
    for s in range(draws):
        params = modular.init_params(jax.random.PRNGKey(100 + s), p, n, dtype=jnp.float64)
        kern = modular.closed_form_kernels(params, x)
        for name in samples:
            samples[name].append(kern[name])
    expected = modular.expected_kernels_at_init(p, n)
    for name, vals in samples.items():
        vals = np.stack(vals)
        stderr = vals.std(axis=0, ddof=1) / np.sqrt(draws)
        exact = stderr == 0  # K1 vanishes identically where x . x' = 0
        assert np.all(vals[:, exact] == 0) and np.all(expected[name][exact] == 0)
        z = np.abs(vals.mean(axis=0) - expected[name])[~exact] / stderr[~exact]
        assert z.max() < 5.0, (name, z.max())


def test_expected_layer1_kernel_has_the_4floor_p_over_2_block():
    """E K1 = (delta_a + delta_b)**2 / (n p**2): eigenvalues (2p + 2), (p + 2) with multiplicity
    2(p - 1) = 4 floor(p/2) for odd p (functions of a alone or b alone), and 2 on the rest."""
    for p in (5, 7):
        n = 3
        lam = np.sort(np.linalg.eigvalsh(modular.expected_kernels_at_init(p, n)["W1"]))[::-1] * n * p**2
        expected = np.concatenate([[2 * p + 2], np.full(4 * (p // 2), p + 2.0), np.full((p - 1) ** 2, 2.0)])
        assert np.allclose(lam, expected)


def test_train_model_records_requested_epochs_and_metrics():
    data = modular.make_data(7, seed=0)
    params, hist = modular.train_model(data, width=16, epochs=12, record_every=None, record_at=[3, 7])
    assert list(hist.steps) == [0, 3, 7, 12]
    for name in ("loss", "train_acc", "test_acc", "test_loss"):
        assert hist.metrics[name].shape == (4,)
    assert len(hist.params) == 4
    assert hist.metrics["loss"][-1] < hist.metrics["loss"][0]
    x_te, y_te = jnp.asarray(data.x[data.test_idx]), jnp.asarray(data.y[data.test_idx])
    assert hist.metrics["test_acc"][-1] == pytest.approx(float(modular.accuracy(params, x_te, y_te)))
    assert hist.metrics["test_loss"][-1] == pytest.approx(float(modular.mse_loss(params, x_te, y_te)), rel=1e-5)


def test_grokking_epoch():
    steps = np.array([0, 10, 20, 30])
    assert modular.grokking_epoch(steps, np.array([0.0, 0.5, 0.95, 1.0])) == 20
    assert modular.grokking_epoch(steps, np.array([0.0, 0.5, 0.6, 0.7])) is None
    assert modular.grokking_epoch(steps, np.array([0.0, 0.5, 0.6, 0.7]), threshold=0.6) == 20
    with pytest.raises(ValueError, match="same shape"):
        modular.grokking_epoch(steps, np.zeros(3))


def test_errors_name_the_argument():
    params = modular.init_params(jax.random.PRNGKey(0), 5, 4)
    x = modular.make_data(5).x
    with pytest.raises(TypeError, match="params"):
        modular.closed_form_kernels({"W1": params["W1"]}, x)
    with pytest.raises(ValueError, match="params"):
        modular.closed_form_kernels({"W1": params["W1"], "W2": params["W2"][:, :3]}, x)
    with pytest.raises(ValueError, match="x1"):
        modular.closed_form_kernels(params, x[:, :7])
    with pytest.raises(ValueError, match="x2"):
        modular.closed_form_kernels(params, x, x[:, :7])
    with pytest.raises(ValueError, match="collapse"):
        modular.closed_form_kernels(params, x, collapse="flat")
    with pytest.raises(ValueError, match="width"):
        modular.expected_kernels_at_init(5, 0)
    with pytest.raises(ValueError, match="p must"):
        modular.make_data(1)


def test_train_runs_matches_train_model_and_apply():
    """The compiled multi-seed loop (one-hot gather, masked mean over all inputs) against the
    shared helpers.train loop on apply: same data, same init, same AdamW, so the same trajectory
    up to float32 summation order."""
    p, n, epochs = 7, 16, 20
    runs = modular.train_runs(p, [3], width=n, epochs=epochs, snapshot_every=5)
    data = modular.make_data(p, seed=3)
    params, hist = modular.train_model(data, width=n, epochs=epochs, seed=3, record_every=5)
    assert list(runs.snapshot_epochs) == list(hist.steps) == [0, 5, 10, 15, 20]
    assert np.array_equal(runs.train_idx[0], data.train_idx)
    for k, epoch in enumerate(hist.steps):
        q = runs.snapshot(0, int(epoch))
        for name in ("W1", "W2"):
            assert np.allclose(q[name], hist.params[k][name], rtol=1e-4, atol=1e-5), (epoch, name)
        for metric in ("loss", "test_loss", "train_acc", "test_acc"):
            assert runs.metrics[metric][0, epoch] == pytest.approx(hist.metrics[metric][k], rel=1e-4, abs=1e-6), (epoch, metric)


def test_train_runs_metrics_are_those_of_the_snapshot_at_every_recorded_epoch():
    p = 7
    runs = modular.train_runs(p, [0, 1], width=8, epochs=6, snapshot_every=3)
    assert runs.metrics["test_acc"].shape == (2, 7) and runs.params["W1"].shape == (2, 3, 8, 2 * p)
    for i, seed in enumerate(runs.seeds):
        data = modular.make_data(p, seed=int(seed))
        xtr, ytr = data.x[data.train_idx], data.y[data.train_idx]
        for epoch in runs.snapshot_epochs:
            q = runs.snapshot(i, int(epoch))
            assert runs.metrics["loss"][i, epoch] == pytest.approx(float(modular.mse_loss(q, xtr, ytr)), rel=1e-5)
            acc = float(modular.accuracy(q, data.x[data.test_idx], data.y[data.test_idx]))
            assert runs.metrics["test_acc"][i, epoch] == pytest.approx(acc)
    # different seeds: different initialisations and splits
    assert not np.allclose(runs.params["W1"][0, 0], runs.params["W1"][1, 0])
    assert not np.array_equal(runs.train_idx[0], runs.train_idx[1])


def test_train_runs_shuffled_targets_are_a_relabelling_of_the_sums():
    p = 7
    runs = modular.train_runs(p, [0], width=8, epochs=2, snapshot_every=1, shuffle_labels=True)
    sums = (np.arange(p * p) // p + np.arange(p * p) % p) % p
    assert runs.shuffled and not np.array_equal(runs.labels[0], sums)
    assert np.array_equal(np.sort(runs.labels[0]), np.sort(sums))
    with pytest.raises(ValueError, match="epoch"):
        runs.snapshot(0, 7)
