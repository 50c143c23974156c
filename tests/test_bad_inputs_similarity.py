"""Bad input to helpers.similarity: every public function answers with a TypeError/ValueError
that names the argument (issue 12, item 4; machinery in tests/_badinput.py)."""

import numpy as np
import pytest

from helpers import similarity as sim

from _badinput import Case, check_coverage, run_case

rng = np.random.default_rng(0)
X = rng.standard_normal((12, 4))
K = X @ X.T  # a valid (12, 12) kernel of rank 4
L = np.tanh(X) @ np.tanh(X).T
K_nan = K.copy()
K_nan[0, 1] = K_nan[1, 0] = np.nan
K_inf = K.copy()
K_inf[2, 2] = np.inf
K_asym = K + np.triu(np.ones_like(K), 1)
K_small = K[:5, :5]
ragged = [[1.0, 2.0], [3.0]]
labels = np.repeat(np.arange(3), 4)

CASES = [
    # centre
    Case(sim.centre, (np.ones((3, 2)),), {}, "K", "not square"),
    Case(sim.centre, (np.ones(4),), {}, "K", "1-d"),
    Case(sim.centre, (K_nan,), {}, "K", "NaN"),
    Case(sim.centre, (np.zeros((0, 0)),), {}, "K", "empty"),
    Case(sim.centre, ("K",), {}, "K", "a string"),
    Case(sim.centre, (ragged,), {}, "K", "ragged list"),
    # cka
    Case(sim.cka, (K, K_small), {}, "L", "different inputs"),
    Case(sim.cka, (np.ones((3, 2)), np.ones((3, 2))), {}, "K", "not square"),
    Case(sim.cka, (K_nan, L), {}, "K", "NaN"),
    Case(sim.cka, (K, K_inf), {}, "L", "inf"),
    Case(sim.cka, (K_asym, L), {}, "K", "not symmetric"),
    Case(sim.cka, (np.ones((5, 5)), np.eye(5)), {}, "K", "constant kernel"),
    Case(sim.cka, (np.eye(5), np.full((5, 5), 2.0)), {}, "L", "constant kernel"),
    Case(sim.cka, (np.ones((1, 1)), np.ones((1, 1))), {}, "K", "one input"),
    Case(sim.cka, (K.astype(complex), L), {}, "K", "complex dtype"),
    Case(sim.cka, (None, L), {}, "K", "None"),
    Case(sim.cka, (K[None], L[None]), {}, "K", "3-d"),
    # feature_cka
    Case(sim.feature_cka, (X, X[:5]), {}, "Y", "different numbers of rows"),
    Case(sim.feature_cka, (np.ones((4, 2)), X[:4]), {}, "X", "constant features"),
    Case(sim.feature_cka, (X[None], X), {}, "X", "3-d"),
    Case(sim.feature_cka, (X, np.full((12, 2), np.nan)), {}, "Y", "NaN"),
    Case(sim.feature_cka, (X[:1], X[:1]), {}, "X", "one input"),
    Case(sim.feature_cka, ({"a": X}, X), {}, "X", "a dict"),
    # kernel_features
    Case(sim.kernel_features, (K,), {"energy": 0.0}, "energy", "energy 0"),
    Case(sim.kernel_features, (K,), {"energy": 1.5}, "energy", "energy > 1"),
    Case(sim.kernel_features, (K,), {"energy": float("nan")}, "energy", "energy NaN"),
    Case(sim.kernel_features, (K,), {"max_rank": 0}, "max_rank", "max_rank 0"),
    Case(sim.kernel_features, (K,), {"max_rank": 2.5}, "max_rank", "max_rank float"),
    Case(sim.kernel_features, (np.full((4, 4), 2.0),), {}, "K", "constant kernel"),
    Case(sim.kernel_features, (K_asym,), {}, "K", "not symmetric"),
    # leading_subspace
    Case(sim.leading_subspace, (K, 5), {}, "dim", "dim above the rank"),
    Case(sim.leading_subspace, (K, 12), {}, "dim", "dim >= N"),
    Case(sim.leading_subspace, (K, 0), {}, "dim", "dim 0"),
    Case(sim.leading_subspace, (K, 2.0), {}, "dim", "dim float"),
    Case(sim.leading_subspace, (K, True), {}, "dim", "dim bool"),
    Case(sim.leading_subspace, (np.eye(6) - 1 / 6, 2), {}, "dim", "degenerate eigenvalues"),
    Case(sim.leading_subspace, (K_nan, 2), {}, "K", "NaN"),
    # cca
    Case(sim.cca, (X, X[:5]), {}, "Y", "different numbers of rows"),
    Case(sim.cca, (np.ones((6, 2)), X[:6]), {}, "X", "constant features"),
    Case(sim.cca, (X, np.full((12, 2), np.inf)), {}, "Y", "inf"),
    Case(sim.cca, (X, X), {"rel_tol": 0.0}, "rel_tol", "rel_tol 0"),
    Case(sim.cca, (X, X), {"rel_tol": "small"}, "rel_tol", "rel_tol string"),
    Case(sim.cca, (X[:, :, None], X), {}, "X", "3-d"),
    Case(sim.cca, (np.zeros((0, 3)), np.zeros((0, 3))), {}, "X", "empty"),
    # mean_cca
    Case(sim.mean_cca, (K, K_small), {}, "L", "different inputs"),
    Case(sim.mean_cca, (K, L), {"dim": 5}, "dim", "dim above the rank of K"),
    Case(sim.mean_cca, (K, L), {"dim": 0}, "dim", "dim 0"),
    Case(sim.mean_cca, (K, L), {"energy": -0.1}, "energy", "energy negative"),
    Case(sim.mean_cca, (K, L), {"max_rank": -1}, "max_rank", "max_rank negative"),
    Case(sim.mean_cca, (K, np.full((12, 12), 1.0)), {}, "L", "constant kernel"),
    Case(sim.mean_cca, (K, K_nan), {}, "L", "NaN"),
    # permutation_null
    Case(sim.permutation_null, (K, L), {"measure": "svcca"}, "measure", "unknown measure"),
    Case(sim.permutation_null, (K, L), {"measure": "cca"}, "dim", "cca without dim"),
    Case(sim.permutation_null, (K, L), {"measure": "cka", "dim": 3}, "dim", "dim with cka"),
    Case(sim.permutation_null, (K, L), {"permutations": 0}, "permutations", "no permutations"),
    Case(sim.permutation_null, (K, L), {"seed": -1}, "seed", "negative seed"),
    Case(sim.permutation_null, (K, L), {"seed": 1.5}, "seed", "float seed"),
    Case(sim.permutation_null, (K, K_small), {}, "L", "different inputs"),
    Case(sim.permutation_null, (np.ones((12, 12)), L), {}, "K", "constant kernel"),
    Case(sim.permutation_null, (K, L), {"measure": "cca", "dim": 6}, "dim", "dim above the rank"),
    # compare_pairs
    Case(sim.compare_pairs, ([K, L], [("K", "L")]), {}, "kernels", "a list of kernels"),
    Case(sim.compare_pairs, ({}, [("K", "L")]), {}, "kernels", "no kernels"),
    Case(sim.compare_pairs, ({"K": K, "S": K_small}, [("K", "S")]), {}, "kernels", "different inputs"),
    Case(sim.compare_pairs, ({"K": K, "L": K_nan}, [("K", "L")]), {}, "kernels['L']", "NaN"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, [("K", "M")]), {}, "pairs", "unknown name"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, [("K",)]), {}, "pairs", "a pair of one"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, []), {}, "pairs", "no pairs"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, "KL"), {}, "pairs", "a string"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, [("K", "L")]), {"dim": 5}, "dim", "dim above the rank"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, [("K", "L")]), {"dim": [2, 0]}, "dim", "dim 0 in a list"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, [("K", "L")]), {"dim": []}, "dim", "empty dim list"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, [("K", "L")]), {"energy": 2.0}, "energy", "energy > 1"),
    Case(sim.compare_pairs, ({"K": K, "L": L}, [("K", "L")]), {"permutations": -1}, "permutations", "negative"),
    Case(sim.compare_pairs, ({"K": K, "C": np.ones((12, 12))}, [("K", "C")]), {}, "kernels['C']", "constant kernel"),
    Case(sim.compare_pairs, ({"K": K, "E": np.eye(12) - 1 / 12}, [("K", "E")]), {"dim": 2}, "dim", "degenerate"),
    # context_overlap
    Case(sim.context_overlap, (K, np.arange(6), 7), {}, "k", "k larger than the subset"),
    Case(sim.context_overlap, (K, np.arange(8), 6), {}, "k", "k above the rank"),
    Case(sim.context_overlap, (K, np.arange(6), 0), {}, "k", "k 0"),
    Case(sim.context_overlap, (K, np.array([0, 1, 12]), 2), {}, "subset", "index out of range"),
    Case(sim.context_overlap, (K, np.array([0, -1, 3]), 2), {}, "subset", "negative index"),
    Case(sim.context_overlap, (K, np.array([0, 1, 1, 3]), 2), {}, "subset", "repeated index"),
    Case(sim.context_overlap, (K, np.array([0.0, 1.0, 2.0]), 2), {}, "subset", "float indices"),
    Case(sim.context_overlap, (K, np.array([], dtype=int), 1), {}, "subset", "empty subset"),
    Case(sim.context_overlap, (K, np.ones((2, 2), dtype=int), 1), {}, "subset", "2-d subset"),
    Case(sim.context_overlap, (K_nan, np.arange(4), 2), {}, "K", "NaN"),
    # context_overlaps
    Case(sim.context_overlaps, (K, np.arange(6), 2), {}, "subsets", "one array instead of a sequence"),
    Case(sim.context_overlaps, (K, [], 2), {}, "subsets", "no subsets"),
    Case(sim.context_overlaps, (K, [np.arange(6), np.arange(3)], 4), {}, "k", "k larger than a subset"),
    Case(sim.context_overlaps, (K, [np.arange(6), np.array([0, 0, 1])], 2), {}, "subsets[1]", "repeated index"),
    Case(sim.context_overlaps, (K, [np.arange(6), np.array([1.5, 2.0])], 1), {}, "subsets[1]", "float indices"),
    Case(sim.context_overlaps, (K, [np.arange(8)], 6), {}, "k", "k above the rank"),
    Case(sim.context_overlaps, (K_inf, [np.arange(8)], 2), {}, "K", "inf"),
    # effective_rank
    Case(sim.effective_rank, (np.zeros((4, 4)),), {}, "K", "zero kernel"),
    Case(sim.effective_rank, (-np.eye(4),), {}, "K", "negative definite"),
    Case(sim.effective_rank, (K,), {"kind": "nuclear"}, "kind", "unknown kind"),
    Case(sim.effective_rank, (K_asym,), {}, "K", "not symmetric"),
    Case(sim.effective_rank, (K_inf,), {}, "K", "inf"),
    Case(sim.effective_rank, (np.ones((3, 4)),), {}, "K", "not square"),
    # diffusion_map
    Case(sim.diffusion_map, (K, 12), {}, "k", "k >= N"),
    Case(sim.diffusion_map, (K, 0), {}, "k", "k 0"),
    Case(sim.diffusion_map, (K, 2), {"epsilon": 0.0}, "epsilon", "epsilon 0"),
    Case(sim.diffusion_map, (K, 2), {"epsilon": -1.0}, "epsilon", "epsilon negative"),
    Case(sim.diffusion_map, (K, 2), {"t": -1}, "t", "negative time"),
    Case(sim.diffusion_map, (K, 2), {"t": 0.5}, "t", "fractional time"),
    Case(sim.diffusion_map, (np.full((5, 5), 2.0), 2), {}, "K", "constant kernel"),
    Case(sim.diffusion_map, (K_nan, 2), {}, "K", "NaN"),
    # cluster
    Case(sim.cluster, (K, 3), {"restarts": 0}, "restarts", "no restarts (returned None)"),
    Case(sim.cluster, (K, 1), {}, "n_clusters", "one cluster"),
    Case(sim.cluster, (K, 13), {}, "n_clusters", "more clusters than inputs"),
    Case(sim.cluster, (K, 3.0), {}, "n_clusters", "float n_clusters"),
    Case(sim.cluster, (K, 3), {"dim": 12}, "dim", "dim >= N"),
    Case(sim.cluster, (K, 3), {"dim": 0}, "dim", "dim 0"),
    Case(sim.cluster, (K, 3), {"seed": "0"}, "seed", "string seed"),
    Case(sim.cluster, (K_asym, 3), {}, "K", "not symmetric"),
    Case(sim.cluster, (np.full((6, 6), 1.0), 2), {}, "K", "constant kernel"),
    # adjusted_rand_index
    Case(sim.adjusted_rand_index, ([0], [0]), {}, "a", "one item (NaN before)"),
    Case(sim.adjusted_rand_index, (labels, labels[:5]), {}, "b", "different lengths"),
    Case(sim.adjusted_rand_index, (labels.reshape(3, 4), labels.reshape(3, 4)), {}, "a", "2-d labels"),
    Case(sim.adjusted_rand_index, (np.array([0.0, np.nan, 1.0]), np.array([0, 1, 1])), {}, "a", "NaN label"),
    Case(sim.adjusted_rand_index, ([], []), {}, "a", "empty"),
    Case(sim.adjusted_rand_index, (labels, ragged), {}, "b", "ragged list"),
    Case(sim.adjusted_rand_index, (labels.astype(complex), labels), {}, "a", "complex labels"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_every_public_function_is_covered():
    check_coverage(sim, CASES)
