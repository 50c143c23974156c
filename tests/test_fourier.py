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
