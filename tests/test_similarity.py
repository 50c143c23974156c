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


def _centred_eigh(K):
    """Eigenpairs of H K H with an explicit centring matrix H, descending (independent of the helper)."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    lam, U = np.linalg.eigh(H @ K @ H)
    return lam[::-1], U[:, ::-1]


@pytest.fixture
def kernels():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 12)) * np.linspace(3, 0.5, 12)
    Y = np.tanh(X @ rng.standard_normal((12, 9)))
    return X @ X.T, Y @ Y.T


def test_leading_subspace_against_explicit_centring(kernels):
    K, _ = kernels
    U = sim.leading_subspace(K, 5)
    _, V = _centred_eigh(K)
    assert np.allclose(U.T @ U, np.eye(5), atol=1e-12)
    assert np.allclose(U @ U.T, V[:, :5] @ V[:, :5].T, atol=1e-10)  # same projector


def test_mean_cca_at_equal_dimension_against_principal_angles(kernels):
    from scipy.linalg import subspace_angles

    K, L = kernels
    _, U = _centred_eigh(K)
    _, V = _centred_eigh(L)
    for d in (1, 4, 8):
        expected = np.mean(np.cos(subspace_angles(U[:, :d], V[:, :d])))
        assert abs(sim.mean_cca(K, L, dim=d) - expected) < 1e-10


def test_mean_cca_unequal_dimensions_bias():
    # Two unrelated kernels: the energy rule keeps many directions of the flat-spectrum one and
    # few of the steep one, and the mean correlation of a small subspace with a large one is
    # far above that of two subspaces of the small dimension.
    rng = np.random.default_rng(7)
    A = rng.standard_normal((120, 3)) * [10.0, 8.0, 6.0]
    B = rng.standard_normal((120, 80))
    K, L = A @ A.T, B @ B.T
    assert sim.mean_cca(K, L, energy=0.99) > sim.mean_cca(K, L, dim=3) + 0.2


def test_leading_subspace_refuses_undetermined_subspaces():
    rng = np.random.default_rng(8)
    Q, _ = np.linalg.qr(rng.standard_normal((30, 6)))
    Q -= Q.mean(axis=0)
    Q, _ = np.linalg.qr(Q)  # centred orthonormal columns
    K = Q @ Q.T  # six equal eigenvalues
    with pytest.raises(ValueError, match="degenerate"):
        sim.leading_subspace(K, 3)
    with pytest.raises(ValueError, match="positive eigenvalues"):
        sim.leading_subspace(K, 7)
    assert sim.leading_subspace(K, 6).shape == (30, 6)
    # float32 round-off does not hide the degeneracy
    with pytest.raises(ValueError, match="degenerate"):
        sim.mean_cca(K.astype(np.float32), K.astype(np.float32), dim=2)


def test_permutation_null_against_relabelled_kernels(kernels):
    K, L = kernels
    null_cka = sim.permutation_null(K, L, measure="cka", permutations=5, seed=3)
    null_cca = sim.permutation_null(K, L, measure="cca", dim=4, permutations=5, seed=3)
    rng = np.random.default_rng(3)
    perms = [rng.permutation(K.shape[0]) for _ in range(5)]
    for i, perm in enumerate(perms):
        Lp = L[np.ix_(perm, perm)]
        assert abs(null_cka[i] - sim.cka(K, Lp)) < 1e-12
    rng = np.random.default_rng(3)
    perms = [rng.permutation(K.shape[0]) for _ in range(5)]
    for i, perm in enumerate(perms):
        # recomputed from the eigen-decomposition of the relabelled kernel
        assert abs(null_cca[i] - sim.mean_cca(K, L[np.ix_(perm, perm)], dim=4)) < 1e-9
    # the null sits far below the similarity of related kernels
    assert sim.cka(K, L) > null_cka.max() and sim.mean_cca(K, L, dim=4) > null_cca.max()


def test_permutation_null_cca_matches_random_subspace_theory():
    # For a fixed d-dim subspace and a uniformly random one in the (N-1)-dim centred space,
    # E[sum of squared canonical correlations] = d^2 / (N - 1). With rank-d kernels whose
    # eigenvectors are random, relabelling gives (nearly) uniform subspaces.
    rng = np.random.default_rng(9)
    n, d = 200, 5
    A, B = rng.standard_normal((n, d)) * [5, 4, 3, 2, 1], rng.standard_normal((n, d)) * [5, 4, 3, 2, 1]
    null = sim.permutation_null(A @ A.T, B @ B.T, measure="cca", dim=d, permutations=400, seed=0)
    # mean cosine lies between the mean of squares (Jensen, cos <= 1) and its square root
    expected_sq = d / (n - 1)  # per correlation
    assert expected_sq * 0.8 < np.mean(null) < np.sqrt(expected_sq) * 1.05


def test_context_overlap_against_explicit_features():
    from scipy.linalg import subspace_angles

    rng = np.random.default_rng(10)
    Phi = rng.standard_normal((40, 15)) * np.linspace(2, 0.2, 15)
    Phi[:20] += rng.standard_normal(15) * 2.0  # the first 20 inputs share a direction
    K = Phi @ Phi.T
    S = np.arange(20)
    k = 4
    # top-k right singular vectors (parameter-space directions) of Phi_S and of Phi
    Vs = np.linalg.svd(Phi[S], full_matrices=False)[2][:k].T
    Va = np.linalg.svd(Phi, full_matrices=False)[2][:k].T
    expected = np.sort(np.cos(subspace_angles(Vs, Va)))[::-1]
    assert np.allclose(sim.context_overlap(K, S, k), expected, atol=1e-10)
    assert np.allclose(sim.context_overlap(K, np.arange(40), k), 1.0)
    with pytest.raises(ValueError, match="k must be"):
        sim.context_overlap(K, S, 21)
    many = sim.context_overlaps(K, [S, np.arange(10, 40), np.arange(40)], k)
    assert np.allclose(many[0], sim.context_overlap(K, S, k)) and np.allclose(many[2], 1.0)
    assert np.allclose(many[1], sim.context_overlap(K, np.arange(10, 40), k))


def test_fixed_silent_results():
    with pytest.raises(ValueError, match="restarts"):
        sim.cluster(np.eye(5) + 1.0, 2, restarts=0)  # returned None before
    with pytest.raises(ValueError, match="a must"):
        sim.adjusted_rand_index([0], [0])  # NaN before
    with pytest.raises(ValueError, match="K must vary"):
        sim.cka(np.ones((4, 4)) * 3.0 + 1e-17 * np.eye(4), np.eye(4))  # round-off only
    # eigenvalues at float32 round-off do not count towards the effective rank
    v = np.arange(1.0, 9.0)
    K = np.outer(v, v).astype(np.float32)
    assert abs(sim.effective_rank(K) - 1.0) < 1e-6


def test_compare_pairs_equals_pair_by_pair(kernels):
    K, L = kernels
    M = K + 0.5 * L
    ks = {"K": K, "L": L, "M": M}
    pairs = [("K", "L"), ("L", "M"), ("K", "M")]
    out = sim.compare_pairs(ks, pairs, dim=[2, 5], energy=0.9, permutations=4, seed=7)
    single = sim.compare_pairs(ks, pairs, dim=5, permutations=4, seed=7)
    for j, (a, b) in enumerate(pairs):
        assert abs(out["cka"][j] - sim.cka(ks[a], ks[b])) < 1e-12
        assert abs(out["cca_energy"][j] - sim.mean_cca(ks[a], ks[b], energy=0.9)) < 1e-10
        assert tuple(out["kept"][j]) == tuple(sim.kernel_features(ks[n], energy=0.9).shape[1] for n in (a, b))
        for k, d in enumerate([2, 5]):
            assert abs(out["cca"][j, k] - sim.mean_cca(ks[a], ks[b], dim=d)) < 1e-10
            null = sim.permutation_null(ks[a], ks[b], measure="cca", dim=d, permutations=4, seed=7 + j)
            assert np.allclose(out["cca_null"][j, k], null, atol=1e-10)
        assert np.allclose(out["cka_null"][j], sim.permutation_null(ks[a], ks[b], permutations=4, seed=7 + j), atol=1e-12)
        assert abs(single["cca"][j] - out["cca"][j, 1]) < 1e-10
        assert np.allclose(single["cca_null"][j], out["cca_null"][j, 1], atol=1e-10)
    assert set(sim.compare_pairs(ks, pairs)) == {"cka"}
