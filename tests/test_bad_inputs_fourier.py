"""Bad-input table for helpers.fourier (issue 12 item 4): every public function answers bad
input with a TypeError/ValueError that names the argument."""

import numpy as np
import pytest

from helpers import fourier
from tests._badinput import Case, check_coverage, run_case

P = 5
NN = P * P
RNG = np.random.default_rng(0)
BASIS = RNG.standard_normal((NN, 4))
L_A = fourier.torus_laplacian(P, "a")
FAM = fourier.fourier_family(P, "a")
NAN_BASIS = BASIS.copy()
NAN_BASIS[0, 0] = np.nan
DEFICIENT = BASIS[:, :2] @ np.ones((2, 4))  # rank 2 in 4 columns
WIDE = RNG.standard_normal((NN, NN + 1))
ASYM = L_A.copy()
ASYM[0, 1] += 1.0
NAN_L = L_A.copy()
NAN_L[2, 2] = np.nan
GOOD_PERM = (np.arange(P), np.arange(P))
BAD_PERM = (np.array([0, 0, 1, 2, 3]), np.arange(P))
OVERLAPS = fourier.family_overlaps(BASIS, FAM)
ROWS = RNG.standard_normal((10, 3))
CONST_ROWS = ROWS.copy()
CONST_ROWS[3] = 1.0

CASES = [
    # cycle_laplacian
    Case(fourier.cycle_laplacian, (2,), {}, "p must", "p below 3"),
    Case(fourier.cycle_laplacian, (5.0,), {}, "p must", "float p"),
    Case(fourier.cycle_laplacian, ("5",), {}, "p must", "string p"),
    # torus_laplacian
    Case(fourier.torus_laplacian, (2, "a"), {}, "p must", "p below 3"),
    Case(fourier.torus_laplacian, (P, "north"), {}, "direction", "unknown direction"),
    Case(fourier.torus_laplacian, (P, (P, 0)), {}, "direction", "zero step mod p"),
    Case(fourier.torus_laplacian, (P, (1, 2, 3)), {}, "direction", "three-component step"),
    Case(fourier.torus_laplacian, (P, (1.5, 0)), {}, "direction", "float step"),
    Case(fourier.torus_laplacian, (P, "a"), {"relabel": BAD_PERM}, "relabel", "not a permutation"),
    Case(fourier.torus_laplacian, (P, "a"), {"relabel": (np.arange(P),)}, "relabel", "one permutation"),
    Case(fourier.torus_laplacian, (P, "a"), {"relabel": (np.arange(4), np.arange(P))}, "relabel", "short permutation"),
    Case(fourier.torus_laplacian, (P, "a"), {"sparse": "no"}, "sparse", "string flag"),
    # fourier_family
    Case(fourier.fourier_family, (6, "a"), {}, "p must", "even p"),
    Case(fourier.fourier_family, (2, "a"), {}, "p must", "p below 3"),
    Case(fourier.fourier_family, (P, "product"), {}, "family", "unknown family"),
    Case(fourier.fourier_family, (P, 3), {}, "family", "int family"),
    Case(fourier.fourier_family, (P, "a"), {"relabel": BAD_PERM}, "relabel", "not a permutation"),
    # random_relabelling, relabel_index
    Case(fourier.random_relabelling, (2,), {"seed": 0}, "p must", "p below 3"),
    Case(fourier.random_relabelling, (P,), {"seed": -1}, "seed", "negative seed"),
    Case(fourier.random_relabelling, (P,), {"seed": 1.5}, "seed", "float seed"),
    Case(fourier.relabel_index, (P, BAD_PERM), {}, "relabel", "not a permutation"),
    Case(fourier.relabel_index, (P, np.arange(P)), {}, "relabel", "array instead of a pair"),
    Case(fourier.relabel_index, (2, GOOD_PERM), {}, "p must", "p below 3"),
    # family_overlaps
    Case(fourier.family_overlaps, (BASIS[:, 0], FAM), {}, "basis", "1-D basis"),
    Case(fourier.family_overlaps, (NAN_BASIS, FAM), {}, "basis", "NaN in basis"),
    Case(fourier.family_overlaps, (np.zeros((NN, 2)), FAM), {}, "basis", "zero column"),
    Case(fourier.family_overlaps, (BASIS[:0], FAM), {}, "basis", "empty basis"),
    Case(fourier.family_overlaps, ("basis", FAM), {}, "basis", "string basis"),
    Case(fourier.family_overlaps, (BASIS, FAM[:, 0]), {}, "family", "2-D family"),
    Case(fourier.family_overlaps, (BASIS[:20], FAM), {}, "family", "family of another N"),
    Case(fourier.family_overlaps, (BASIS, FAM * np.nan), {}, "family", "NaN family"),
    # overlap_score
    Case(fourier.overlap_score, (np.ones(3),), {}, "overlaps", "1-D"),
    Case(fourier.overlap_score, (np.full((2, 2), np.nan),), {}, "overlaps", "NaN"),
    Case(fourier.overlap_score, (np.full((2, 2), 1.5),), {}, "overlaps", "above 1"),
    Case(fourier.overlap_score, (np.zeros((0, 3)),), {}, "overlaps", "empty"),
    # span_share
    Case(fourier.span_share, (DEFICIENT, FAM), {}, "basis", "rank-deficient basis"),
    Case(fourier.span_share, (WIDE, FAM), {}, "basis", "more columns than rows"),
    Case(fourier.span_share, (NAN_BASIS, FAM), {}, "basis", "NaN basis"),
    Case(fourier.span_share, (BASIS, 2 * FAM), {}, "family", "non-orthonormal family"),
    Case(fourier.span_share, (BASIS, FAM[:, :, :20]), {}, "family", "family of another N"),
    # rayleigh_ritz_rotation (the known defects: rank-deficient basis, k > N)
    Case(fourier.rayleigh_ritz_rotation, (DEFICIENT, L_A), {}, "basis", "rank-deficient basis"),
    Case(fourier.rayleigh_ritz_rotation, (WIDE, L_A), {}, "basis", "k > N"),
    Case(fourier.rayleigh_ritz_rotation, (np.zeros((NN, 2)), L_A), {}, "basis", "zero basis"),
    Case(fourier.rayleigh_ritz_rotation, (NAN_BASIS, L_A), {}, "basis", "NaN basis"),
    Case(fourier.rayleigh_ritz_rotation, (BASIS, L_A[:-1, :-1]), {}, "laplacian", "wrong size"),
    Case(fourier.rayleigh_ritz_rotation, (BASIS, ASYM), {}, "laplacian", "not symmetric"),
    Case(fourier.rayleigh_ritz_rotation, (BASIS, NAN_L), {}, "laplacian", "NaN laplacian"),
    Case(fourier.rayleigh_ritz_rotation, (BASIS, L_A[0]), {}, "laplacian", "1-D laplacian"),
    # two_stage_rotation
    Case(fourier.two_stage_rotation, (BASIS, L_A, L_A), {"keep": 0}, "keep", "keep 0"),
    Case(fourier.two_stage_rotation, (BASIS, L_A, L_A), {"keep": 5}, "keep", "keep > k"),
    Case(fourier.two_stage_rotation, (BASIS, L_A, L_A), {"keep": 2.5}, "keep", "float keep"),
    Case(fourier.two_stage_rotation, (BASIS, L_A[:-1, :-1], L_A), {}, "first", "wrong size"),
    Case(fourier.two_stage_rotation, (BASIS, L_A, ASYM), {}, "second", "not symmetric"),
    Case(fourier.two_stage_rotation, (DEFICIENT, L_A, L_A), {}, "basis", "rank-deficient basis"),
    # torus_rotation, permuted_torus_control
    Case(fourier.torus_rotation, (BASIS[:20], P), {}, "basis", "rows not p*p"),
    Case(fourier.torus_rotation, (BASIS, P, ("a", "a")), {}, "pair", "same family twice"),
    Case(fourier.torus_rotation, (BASIS, P, ("x", "b")), {}, "pair", "unknown family"),
    Case(fourier.torus_rotation, (BASIS, P, "ab"), {}, "pair", "string pair"),
    Case(fourier.torus_rotation, (BASIS, P), {"relabel": BAD_PERM}, "relabel", "not a permutation"),
    Case(fourier.torus_rotation, (BASIS, P), {"keep": 9}, "keep", "keep > k"),
    Case(fourier.torus_rotation, (BASIS, 4), {}, "p must", "even p"),
    Case(fourier.permuted_torus_control, (BASIS, P), {"n_perms": 0}, "n_perms", "no permutations"),
    Case(fourier.permuted_torus_control, (BASIS, P), {"seed": -2}, "seed", "negative seed"),
    Case(fourier.permuted_torus_control, (BASIS[:20], P), {}, "basis", "rows not p*p"),
    Case(fourier.permuted_torus_control, (DEFICIENT, P), {}, "basis", "rank-deficient basis"),
    # knn_graph_laplacian
    Case(fourier.knn_graph_laplacian, (ROWS[0], 2), {}, "rows", "1-D rows"),
    Case(fourier.knn_graph_laplacian, (ROWS * np.nan, 2), {}, "rows", "NaN rows"),
    Case(fourier.knn_graph_laplacian, (CONST_ROWS, 2), {}, "rows", "constant row"),
    Case(fourier.knn_graph_laplacian, (ROWS, 10), {}, "n_neighbors", "n_neighbors = N"),
    Case(fourier.knn_graph_laplacian, (ROWS, 0), {}, "n_neighbors", "n_neighbors = 0"),
    Case(fourier.knn_graph_laplacian, (ROWS, 2), {"allowed": np.ones((9, 9), bool)}, "allowed", "mask of another size"),
    Case(fourier.knn_graph_laplacian, (ROWS, 2), {"allowed": np.ones((10, 10), int)}, "allowed", "integer mask"),
    Case(fourier.knn_graph_laplacian, (ROWS, 2), {"allowed": np.eye(10, dtype=bool)}, "allowed", "too few candidates"),
    # graph_edge_shares
    Case(fourier.graph_edge_shares, (L_A[:-1, :-1], P), {}, "laplacian", "wrong size"),
    Case(fourier.graph_edge_shares, (ASYM, P), {}, "laplacian", "not symmetric"),
    Case(fourier.graph_edge_shares, (np.eye(NN), P), {}, "laplacian", "no edges"),
    Case(fourier.graph_edge_shares, (L_A, P), {"n_perms": -1}, "n_perms", "negative n_perms"),
    Case(fourier.graph_edge_shares, (L_A, 2), {}, "p must", "p below 3"),
    # line_graph, learned_axis_laplacians
    Case(fourier.line_graph, (BASIS, P), {"axis": "c"}, "axis", "unknown axis"),
    Case(fourier.line_graph, (BASIS, P), {"anchors": (1, 1)}, "anchors", "equal anchors"),
    Case(fourier.line_graph, (BASIS, P), {"anchors": (0, P)}, "anchors", "anchor out of range"),
    Case(fourier.line_graph, (BASIS, P), {"anchors": 3}, "anchors", "scalar anchors"),
    Case(fourier.line_graph, (BASIS, P), {"n_neighbors": 0}, "n_neighbors", "zero neighbours"),
    Case(fourier.line_graph, (BASIS, P), {"n_neighbors": P}, "n_neighbors", "n_neighbors = p"),
    Case(fourier.line_graph, (BASIS[:20], P), {}, "basis", "rows not p*p"),
    Case(fourier.line_graph, (DEFICIENT, P), {}, "basis", "rank-deficient basis"),
    Case(fourier.learned_axis_laplacians, (BASIS, P), {"anchors_a": (2, 2)}, "anchors_a", "equal anchors"),
    Case(fourier.learned_axis_laplacians, (BASIS, P), {"anchors_b": (0, 9)}, "anchors_b", "anchor out of range"),
    Case(fourier.learned_axis_laplacians, (BASIS, P), {"sparse": 1}, "sparse", "int flag"),
    Case(fourier.learned_axis_laplacians, (NAN_BASIS, P), {}, "basis", "NaN basis"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_a_named_argument(case):
    run_case(case)


def test_every_public_function_has_a_case():
    check_coverage(fourier, CASES)
