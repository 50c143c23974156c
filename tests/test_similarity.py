"""CKA, CCA, effective rank and kernel clustering against closed forms and invariances."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from helpers import similarity as sim


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 6)), rng.standard_normal((40, 4))


def test_cka_invariances(features):
    X, Y = features
    Q = ortho_group.rvs(6, random_state=1)
    base = sim.feature_cka(X, Y)
    assert abs(sim.feature_cka(X @ Q, Y) - base) < 1e-12  # orthogonal transform of the features
    assert abs(sim.feature_cka(3.7 * X, 0.2 * Y) - base) < 1e-12  # isotropic scaling
    assert abs(sim.feature_cka(X + 5.0, Y) - base) < 1e-12  # a shift is removed by centring
    assert abs(sim.cka(X @ X.T, X @ X.T) - 1.0) < 1e-12
    assert 0.0 <= base <= 1.0
    # not invariant to an anisotropic scaling (so the invariance tests can fail)
    assert abs(sim.feature_cka(X * np.arange(1, 7), Y) - base) > 1e-3


def test_cka_known_values():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(30), rng.standard_normal(30)
    r = np.corrcoef(a, b)[0, 1]
    assert abs(sim.feature_cka(a, b) - r**2) < 1e-12  # one feature each: squared Pearson r
    a = a - a.mean()
    c = rng.standard_normal(30)
    c = c - c.mean()
    c = c - (c @ a) / (a @ a) * a  # centred and orthogonal to a
    assert abs(sim.feature_cka(a, c)) < 1e-12


def test_cca_known_values(features):
    X, _ = features
    A = np.random.default_rng(3).standard_normal((6, 6))
    assert np.allclose(sim.cca(X, X @ A), 1.0)  # an invertible linear map: all correlations 1
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    assert abs(sim.cca(a, b)[0] - abs(np.corrcoef(a, b)[0, 1])) < 1e-12
    rho = sim.cca(np.stack([a, b], 1), np.stack([a, rng.standard_normal(50)], 1))
    assert abs(rho[0] - 1.0) < 1e-12 and rho[1] < 0.999


def test_kernel_features_reproduce_centred_kernel(features):
    X, _ = features
    K = X @ X.T
    phi = sim.kernel_features(K, energy=1.0)
    assert phi.shape[1] == 6
    assert np.allclose(phi @ phi.T, sim.centre(K))
    assert abs(sim.mean_cca(K, (X @ np.diag([1, 2, 3, 4, 5, 6.0])) @ X.T, energy=1.0) - 1.0) < 1e-9
    # the fast route of mean_cca equals CCA on the explicit kernel features
    L = np.tanh(X) @ np.tanh(X).T
    direct = np.mean(sim.cca(sim.kernel_features(K, energy=0.9), sim.kernel_features(L, energy=0.9)))
    assert abs(sim.mean_cca(K, L, energy=0.9) - direct) < 1e-10


def test_effective_rank():
    assert abs(sim.effective_rank(np.eye(7)) - 7) < 1e-9
    v = np.arange(1.0, 6.0)
    assert abs(sim.effective_rank(np.outer(v, v)) - 1) < 1e-9
    K = np.diag([1.0, 1.0, 0.0, 0.0])
    assert abs(sim.effective_rank(K, kind="participation") - 2) < 1e-12
    lam = np.array([3.0, 1.0])
    p = lam / lam.sum()
    assert abs(sim.effective_rank(np.diag(lam)) - np.exp(-(p * np.log(p)).sum())) < 1e-12


def test_clustering_recovers_separated_blobs():
    rng = np.random.default_rng(5)
    centres = 6.0 * np.eye(3, 5)
    labels = np.repeat(np.arange(3), 20)
    X = centres[labels] + 0.5 * rng.standard_normal((60, 5))
    found = sim.cluster(X @ X.T, 3, seed=0)
    assert sim.adjusted_rand_index(found, labels) == pytest.approx(1.0)
    coords, mu = sim.diffusion_map(X @ X.T, 2)
    assert coords.shape == (60, 2) and np.all(mu <= 1 + 1e-12)


def test_adjusted_rand_index():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert sim.adjusted_rand_index(a, 5 - a) == 1.0  # renamed labels
    assert sim.adjusted_rand_index(a, [0, 1, 0, 1, 0, 1]) < 0.0
    # hand-computed: contingency [[2,0],[1,1]] for a=[0,0,1,1], b=[0,0,0,1]: ARI = 0
    assert abs(sim.adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1])) < 1e-12


def test_errors():
    with pytest.raises(ValueError, match="square"):
        sim.cka(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="same inputs"):
        sim.cka(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="constant"):
        sim.cka(np.ones((3, 3)), np.eye(3))
    with pytest.raises(ValueError, match="kind"):
        sim.effective_rank(np.eye(2), kind="nuclear")
    with pytest.raises(ValueError, match="NaN"):
        sim.effective_rank(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="n_clusters"):
        sim.cluster(np.eye(4), 1)
    with pytest.raises(ValueError, match="rows"):
        sim.cca(np.ones((3, 2)), np.ones((4, 2)))
