"""Tests of helpers.fourier: torus Laplacians (seed 002 eqs. 19-22), Fourier families, the
two-stage rotation (App. C/D) and the learned k-NN graph."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from helpers import fourier

P = 7
M = P // 2


def _quadratic_form_direct(v, p, da, db):
    """sum_{a,b} (v[a,b] - v[a+da, b+db])**2 computed on the (p, p) grid with np.roll."""
    grid = v.reshape(p, p)
    moved = np.roll(np.roll(grid, -da, axis=0), -db, axis=1)  # moved[a, b] = grid[a+da, b+db]
    return float(((grid - moved) ** 2).sum())


@pytest.mark.parametrize("direction", ["a", "b", "sum", "diff"])
def test_laplacian_quadratic_forms_match_eqs_19_to_22(direction):
    rng = np.random.default_rng(0)
    L = fourier.torus_laplacian(P, direction)
    da, db = fourier.DIRECTIONS[direction]
    for _ in range(5):
        v = rng.standard_normal(P * P)
        assert np.isclose(v @ L @ v, _quadratic_form_direct(v, P, da, db), rtol=1e-12)
    assert np.allclose(L, L.T)
    assert np.allclose(L.sum(axis=1), 0.0)


def test_axis_laplacians_are_kronecker_products_of_the_cycle():
    L1 = fourier.cycle_laplacian(P)
    eye = np.eye(P)
    assert np.allclose(fourier.torus_laplacian(P, "a"), np.kron(L1, eye))
    assert np.allclose(fourier.torus_laplacian(P, "b"), np.kron(eye, L1))
    # L_1 = 2 I - shift - shift^T, with the wrap-around corners
    assert L1[0, P - 1] == -1 and L1[P - 1, 0] == -1 and np.all(np.diag(L1) == 2)


def test_custom_step_equals_named_direction():
    assert np.allclose(fourier.torus_laplacian(P, (1, -1)), fourier.torus_laplacian(P, "diff"))
    assert np.allclose(fourier.torus_laplacian(P, (1, P - 1)), fourier.torus_laplacian(P, "diff"))


def test_families_are_orthonormal_and_mutually_orthogonal():
    fams = {f: fourier.fourier_family(P, f) for f in ("a", "b", "sum", "diff")}
    for fam in fams.values():
        assert fam.shape == (M, 2, P * P)
        flat = fam.reshape(-1, P * P)
        assert np.allclose(flat @ flat.T, np.eye(2 * M), atol=1e-12)
        assert np.allclose(flat.sum(axis=1), 0.0, atol=1e-12)  # orthogonal to the constant
    ab = np.concatenate([fams["a"], fams["b"]]).reshape(-1, P * P)
    sd = np.concatenate([fams["sum"], fams["diff"]]).reshape(-1, P * P)
    assert np.allclose(ab @ ab.T, np.eye(4 * M), atol=1e-12)
    assert np.allclose(sd @ sd.T, np.eye(4 * M), atol=1e-12)
    assert np.allclose(ab @ sd.T, 0.0, atol=1e-12)  # (k,0),(0,k) vs (k,+-k) Fourier modes


@pytest.mark.parametrize("fam, lap, other", [("a", "a", "b"), ("sum", "sum", "diff")])
def test_families_diagonalise_their_laplacian(fam, lap, other):
    L = fourier.torus_laplacian(P, lap)
    for k, pair in enumerate(fourier.fourier_family(P, fam), start=1):
        # one step along a advances a by 1; a step (1, +-1) advances a + b (or a - b) by 2
        advance = 1 if lap in ("a", "b") else 2
        energy = 2 - 2 * np.cos(2 * np.pi * k * advance / P)
        for v in pair:
            assert np.allclose(L @ v, energy * v, atol=1e-12)
    for v in fourier.fourier_family(P, other).reshape(-1, P * P):
        assert np.allclose(L @ v, 0.0, atol=1e-12)  # the other family is flat along this step


def test_family_overlaps_and_score():
    fa = fourier.fourier_family(P, "a")
    basis = fa[:, 0, :].T  # the cosines, one per frequency
    ov = fourier.family_overlaps(basis, fa)
    assert np.allclose(ov, np.eye(M))
    assert fourier.overlap_score(ov) == pytest.approx(1.0)
    # an equal mixture of two frequencies has overlap 1/2 with each
    mix = (fa[0, 0] + fa[1, 1])[:, None]
    ov_mix = fourier.family_overlaps(3.0 * mix, fa)  # normalisation of columns is internal
    assert np.allclose(ov_mix[0, :2], 0.5) and np.allclose(ov_mix[0, 2:], 0.0)
    assert fourier.overlap_score(ov_mix) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "fams, laps", [(("a", "b"), ("a", "b")), (("sum", "diff"), ("sum", "diff"))]
)
@pytest.mark.parametrize("p", [7, 11])
def test_two_stage_rotation_recovers_planted_modes(p, fams, laps):
    m = p // 2
    planted = np.concatenate([fourier.fourier_family(p, f) for f in fams])  # (2m, 2, N)
    basis = planted.reshape(-1, p * p).T  # (N, 4m)
    q = ortho_group.rvs(4 * m, random_state=np.random.default_rng(3))
    scrambled = basis @ q
    before = fourier.overlap_score(fourier.family_overlaps(scrambled, planted))
    L1, L2 = (fourier.torus_laplacian(p, lap) for lap in laps)
    rotated, smooth = fourier.two_stage_rotation(scrambled, L1, L2)
    ov = fourier.family_overlaps(rotated, planted)
    assert before < 0.5
    assert np.allclose(ov.max(axis=1), 1.0, atol=1e-9)
    # every (cos k, sin k) pair is found exactly twice (its cos and its sin)
    assert np.all(np.bincount(ov.argmax(axis=1), minlength=2 * m) == 2)
    # the rotated basis spans the same subspace and is orthonormal
    assert np.allclose(rotated.T @ rotated, np.eye(4 * m), atol=1e-10)
    proj = basis @ basis.T
    assert np.allclose(proj @ rotated, rotated, atol=1e-10)
    # stage 2 sees the family that the first Laplacian leaves flat, sorted by smoothness
    assert np.all(np.diff(smooth[: 2 * m]) >= -1e-10)


def test_rayleigh_ritz_on_full_space_gives_laplacian_spectrum():
    L = fourier.torus_laplacian(5, "a")
    rot, s = fourier.rayleigh_ritz_rotation(np.eye(25), L)
    assert np.allclose(s, np.linalg.eigvalsh(L))
    assert np.allclose(rot.T @ L @ rot, np.diag(s), atol=1e-10)


def test_knn_graph_recovers_a_cycle_from_kernel_rows():
    n = 12
    theta = 2 * np.pi * np.arange(n) / n
    kernel = np.exp(np.cos(theta[:, None] - theta[None, :]))  # rows are rotations of each other
    L = fourier.knn_graph_laplacian(kernel, 2)
    assert np.allclose(L, fourier.cycle_laplacian(n))


def test_knn_graph_respects_the_allowed_mask():
    rows = np.random.default_rng(1).standard_normal((10, 4))
    allowed = np.zeros((10, 10), bool)
    allowed[:5, :5] = allowed[5:, 5:] = True  # two blocks that may not be joined
    L = fourier.knn_graph_laplacian(rows, 2, allowed=allowed)
    assert np.all(L[:5, 5:] == 0) and np.all(np.diag(L) >= 2)


def test_knn_graph_laplacian_is_a_laplacian():
    rows = np.random.default_rng(0).standard_normal((30, 8))
    L = fourier.knn_graph_laplacian(rows, 3)
    assert np.allclose(L, L.T) and np.allclose(L.sum(axis=1), 0.0)
    assert np.linalg.eigvalsh(L).min() > -1e-10
    assert np.all(np.diag(L) >= 3)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="p must be"):
        fourier.torus_laplacian(2, "a")
    with pytest.raises(ValueError, match="direction"):
        fourier.torus_laplacian(5, "north")
    with pytest.raises(ValueError, match="zero step"):
        fourier.torus_laplacian(5, (5, 0))
    with pytest.raises(ValueError, match="odd"):
        fourier.fourier_family(6, "a")
    with pytest.raises(ValueError, match="family"):
        fourier.fourier_family(5, "product")
    with pytest.raises(ValueError, match="family must be"):
        fourier.family_overlaps(np.ones((25, 2)), fourier.fourier_family(7, "a"))
    with pytest.raises(ValueError, match="basis"):
        fourier.family_overlaps(np.ones(25), fourier.fourier_family(5, "a"))
    with pytest.raises(ValueError, match="NaN"):
        fourier.family_overlaps(np.full((25, 2), np.nan), fourier.fourier_family(5, "a"))
    with pytest.raises(ValueError, match="laplacian"):
        fourier.rayleigh_ritz_rotation(np.ones((25, 2)), np.eye(24))
    with pytest.raises(ValueError, match="keep"):
        fourier.two_stage_rotation(np.eye(25)[:, :4], np.eye(25), np.eye(25), keep=5)
    with pytest.raises(ValueError, match="n_neighbors"):
        fourier.knn_graph_laplacian(np.random.default_rng(0).standard_normal((5, 3)), 5)
    rows = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(ValueError, match="allowed"):
        fourier.knn_graph_laplacian(rows, 1, allowed=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="candidate"):
        fourier.knn_graph_laplacian(rows, 2, allowed=np.eye(6, k=1, dtype=bool) | np.eye(6, k=-1, dtype=bool))
    with pytest.raises(ValueError, match="overlaps"):
        fourier.overlap_score(np.ones(3))


# ----------------------------------------------------------------------------------------
# relabelled tori, the permutation control, span shares
# ----------------------------------------------------------------------------------------


def test_relabelled_laplacian_is_the_permuted_lattice_quadratic_form():
    """v^T L v on the relabelled torus = sum over lattice points of squared differences of the
    function placed at (perm_a[a], perm_b[b]), computed on the grid directly."""
    p = 7
    perm_a, perm_b = fourier.random_relabelling(p, seed=4)
    rng = np.random.default_rng(1)
    for direction in ("a", "sum"):
        L = fourier.torus_laplacian(p, direction, relabel=(perm_a, perm_b))
        da, db = fourier.DIRECTIONS[direction]
        for _ in range(3):
            v = rng.standard_normal(p * p)
            lattice = np.zeros((p, p))
            lattice[perm_a[:, None], perm_b[None, :]] = v.reshape(p, p)  # input (a, b) sits at (perm_a[a], perm_b[b])
            assert np.isclose(v @ L @ v, _quadratic_form_direct(lattice.ravel(), p, da, db), rtol=1e-12)
    sparse = fourier.torus_laplacian(p, "diff", relabel=(perm_a, perm_b), sparse=True)
    assert np.allclose(sparse.toarray(), fourier.torus_laplacian(p, "diff", relabel=(perm_a, perm_b)))


def test_relabelled_family_is_the_fourier_family_of_the_new_labels():
    p = 7
    perm_a, perm_b = fourier.random_relabelling(p, seed=2)
    a, b = np.divmod(np.arange(p * p), p)
    fam = fourier.fourier_family(p, "sum", relabel=(perm_a, perm_b))
    k = 3
    expected = np.cos(2 * np.pi * k * (perm_a[a] + perm_b[b]) / p)
    assert np.allclose(fam[k - 1, 0], expected / np.linalg.norm(expected))
    # the relabelled family diagonalises the relabelled Laplacian
    L = fourier.torus_laplacian(p, "sum", relabel=(perm_a, perm_b))
    energy = 2 - 2 * np.cos(2 * np.pi * k * 2 / p)
    assert np.allclose(L @ fam[k - 1, 1], energy * fam[k - 1, 1], atol=1e-12)
    assert np.array_equal(fourier.relabel_index(p), np.arange(p * p))


def test_span_share_is_the_mean_squared_cosine_of_the_principal_angles():
    from scipy.linalg import subspace_angles

    p = 7
    fam = np.concatenate([fourier.fourier_family(p, "a"), fourier.fourier_family(p, "b")])
    span = fam.reshape(-1, p * p).T
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((p * p, 5))
    expected = np.mean(np.cos(subspace_angles(basis, span)) ** 2)
    assert fourier.span_share(basis, fam) == pytest.approx(expected, rel=1e-10)
    inside = span @ rng.standard_normal((span.shape[1], 5))
    assert fourier.span_share(inside, fam) == pytest.approx(1.0)
    # a random k-dim subspace holds dim(span)/N of itself on average
    draws = [fourier.span_share(rng.standard_normal((p * p, 4)), fam) for _ in range(200)]
    assert np.mean(draws) == pytest.approx(span.shape[1] / (p * p), abs=0.03)


@pytest.mark.parametrize("p", [7, 11])
def test_torus_rotation_of_one_operand_functions_scores_1_on_every_relabelling(p):
    """The theorem behind the permutation control: the span of all zero-mean functions of a
    alone and of b alone contains the Fourier pairs of every relabelling, so the rotation by a
    relabelled torus finds them exactly."""
    planted = np.concatenate([fourier.fourier_family(p, f) for f in ("a", "b")]).reshape(-1, p * p).T
    basis = planted @ ortho_group.rvs(planted.shape[1], random_state=np.random.default_rng(0))
    _, _, score = fourier.torus_rotation(basis, p, ("a", "b"))
    shuffled = fourier.permuted_torus_control(basis, p, ("a", "b"), n_perms=3, seed=1)
    assert score == pytest.approx(1.0, abs=1e-9) and np.allclose(shuffled, 1.0, atol=1e-9)
    # the shuffled torus's basis is a different basis: scored against the true families it is mixed
    rotated, _, _ = fourier.torus_rotation(basis, p, ("a", "b"), relabel=fourier.random_relabelling(p, seed=1))
    truth = np.concatenate([fourier.fourier_family(p, f) for f in ("a", "b")])
    assert fourier.overlap_score(fourier.family_overlaps(rotated, truth)) < 0.6


def test_permutation_control_fails_on_the_sum_difference_span():
    """Functions of a + b are not functions of perm_a[a] + perm_b[b]: the control scores low."""
    p = 11
    planted = np.concatenate([fourier.fourier_family(p, f) for f in ("sum", "diff")]).reshape(-1, p * p).T
    _, _, score = fourier.torus_rotation(planted, p, ("sum", "diff"))
    shuffled = fourier.permuted_torus_control(planted, p, ("sum", "diff"), n_perms=3)
    assert score == pytest.approx(1.0, abs=1e-9) and shuffled.max() < 0.3


def test_rotation_refuses_rank_deficient_and_too_wide_bases():
    L = fourier.torus_laplacian(5, "a")
    deficient = np.eye(25)[:, :3] @ np.ones((3, 4))
    with pytest.raises(ValueError, match="full column rank"):
        fourier.rayleigh_ritz_rotation(deficient, L)
    with pytest.raises(ValueError, match="k <= N"):
        fourier.rayleigh_ritz_rotation(np.random.default_rng(0).standard_normal((25, 26)), L)
    # a basis with a near-duplicate column is still full rank and gives vectors inside its span
    basis = np.random.default_rng(1).standard_normal((25, 3))
    basis = np.concatenate([basis, basis[:, :1] + 1e-6 * np.random.default_rng(2).standard_normal((25, 1))], axis=1)
    rotated, _ = fourier.rayleigh_ritz_rotation(basis, L)
    q, _ = np.linalg.qr(basis)
    assert np.allclose(q @ (q.T @ rotated), rotated, atol=1e-8)


def test_sparse_and_dense_laplacians_rotate_alike():
    p = 7
    basis = np.random.default_rng(0).standard_normal((p * p, 6))
    dense = fourier.two_stage_rotation(basis, fourier.torus_laplacian(p, "a"), fourier.torus_laplacian(p, "b"))
    sparse = fourier.two_stage_rotation(basis, fourier.torus_laplacian(p, "a", sparse=True),
                                        fourier.torus_laplacian(p, "b", sparse=True))
    assert np.allclose(dense[1], sparse[1])
    assert np.allclose(np.abs(dense[0].T @ sparse[0]).max(axis=1), 1.0, atol=1e-8)  # same vectors up to sign


# ----------------------------------------------------------------------------------------
# learned priors
# ----------------------------------------------------------------------------------------


def test_graph_edge_shares_on_the_torus_and_on_the_rook_graph():
    p = 7
    torus = fourier.torus_laplacian(p, "a") + fourier.torus_laplacian(p, "b")
    st = fourier.graph_edge_shares(torus, p)
    assert st["edges"] == 2 * p * p and st["common_operand"] == 1.0 and st["torus_step"] == 1.0
    # the rook's graph joins every pair sharing an operand: exactly the chance share of steps
    a, b = np.divmod(np.arange(p * p), p)
    W = ((a[:, None] == a[None, :]) | (b[:, None] == b[None, :])).astype(float)
    np.fill_diagonal(W, 0)
    rook = np.diag(W.sum(1)) - W
    st = fourier.graph_edge_shares(rook, p, n_perms=5)
    assert st["torus_step"] == pytest.approx(st["chance"]) == pytest.approx(4 / (2 * (p - 1)))
    assert st["null_mean"] == pytest.approx(st["chance"]) and st["null_sd"] == pytest.approx(0.0, abs=1e-12)
    # relabelling the torus graph gives the null: far below 1
    st = fourier.graph_edge_shares(torus, p, n_perms=20, seed=0)
    assert st["null_mean"] < 0.5


@pytest.mark.parametrize("anchors", [(0, 1), (2, 6), (5, 3)])
def test_line_graph_of_the_sum_difference_span_is_the_translation_cycle(anchors):
    p = 11
    planted = np.concatenate([fourier.fourier_family(p, f) for f in ("sum", "diff")]).reshape(-1, p * p).T
    basis = planted @ ortho_group.rvs(planted.shape[1], random_state=np.random.default_rng(5))
    step = (anchors[1] - anchors[0]) % p
    expected = np.zeros((p, p))
    for i in range(p):
        expected[i, (i + step) % p] = expected[(i + step) % p, i] = 1
    for axis in ("a", "b"):
        assert np.array_equal(fourier.line_graph(basis, p, axis=axis, anchors=anchors), expected), axis
    # the lifted Laplacians are the torus Laplacians with step `step` instead of 1
    L_a, L_b = fourier.learned_axis_laplacians(basis, p, anchors_a=anchors, anchors_b=anchors)
    assert np.allclose(L_a, fourier.torus_laplacian(p, (step, 0)))
    assert np.allclose(L_b, fourier.torus_laplacian(p, (0, step)))


def test_learned_laplacians_rotate_one_operand_functions_into_the_true_fourier_pairs():
    """The learned prior recovers the true (cos k, sin k) pairs of a and b: a translation cycle
    with any step generates the same eigenspaces as the +-1 cycle (p prime)."""
    p = 11
    sumdiff = np.concatenate([fourier.fourier_family(p, f) for f in ("sum", "diff")]).reshape(-1, p * p).T
    ab = np.concatenate([fourier.fourier_family(p, f) for f in ("a", "b")])
    layer1 = ab.reshape(-1, p * p).T @ ortho_group.rvs(4 * (p // 2), random_state=np.random.default_rng(6))
    L_a, L_b = fourier.learned_axis_laplacians(sumdiff, p, anchors_a=(3, 8), anchors_b=(1, 4), sparse=True)
    rotated, _ = fourier.two_stage_rotation(layer1, L_a, L_b)
    ov = fourier.family_overlaps(rotated, ab)
    assert np.allclose(ov.max(axis=1), 1.0, atol=1e-9)
    assert np.all(np.bincount(ov.argmax(axis=1), minlength=2 * (p // 2)) == 2)
    # from a random subspace the learned graph is not a translation cycle
    noise = np.random.default_rng(7).standard_normal((p * p, sumdiff.shape[1]))
    graph = fourier.line_graph(noise, p, axis="a", anchors=(3, 8))
    i, j = np.nonzero(np.triu(graph))
    assert np.mean(np.isin((j - i) % p, [5, p - 5])) < 0.5
